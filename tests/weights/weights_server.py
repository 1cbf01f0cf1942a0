"""A local HTTP server standing in for the weights' hosts, reached through the mirror variable.

Files are served under `/<host>/<path>` of their catalog URL (the mirror's layout); a path can
be made to fail (`errors`: a status code) or to stop short of its Content-Length
(`truncated`). `requests` counts the GET requests per path.
"""

import collections
import contextlib
import http.server
import threading
import urllib.parse


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the standard library's name
        server = self.server
        path = urllib.parse.urlsplit(self.path).path
        server.requests[path] += 1
        if path in server.errors:
            self.send_error(server.errors[path])
            return
        if path not in server.files:
            self.send_error(404)
            return
        body = server.files[path]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # A truncated download: the headers promise the whole file, half of it comes.
        self.wfile.write(body[: len(body) // 2] if path in server.truncated else body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def weights_server():
    """Yields the running server: `.url`, `.files`, `.errors`, `.truncated`, `.requests`."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.files, server.errors, server.truncated = {}, {}, set()
    server.requests = collections.Counter()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def mirror_path(url: str) -> str:
    """The path under which the mirror serves `url`."""
    parts = urllib.parse.urlsplit(url)
    return f"/{parts.netloc}{parts.path}"
