"""`keras-resvit` console script: parse arguments, call the public API, print.

This module parses (with `keras_resvit.cli_parser`) and reports; `keras_resvit.cli_commands`
holds what each command does and is imported only once a command runs, so `--help` answers
without loading the package or Keras. Unless `--verbose` (or `--debug`), the libraries'
start-up logs are silenced before TensorFlow loads, and warnings print as one line.
"""

import contextlib
import os
import re
import sys
import threading
import warnings

from keras_resvit.cli_parser import build_parser

# Python loggers of the libraries, quieted to errors unless --verbose (AutoGraph's
# "could not transform" notices, JAX's platform fallbacks).
LIBRARY_LOGGERS = ("tensorflow", "jax", "absl")
# C++ notices printed straight to stderr whatever TF_CPP_MIN_LOG_LEVEL says: absl's lines from
# before its logging starts ("I0000 00:00:1796.. 1234 port.cc:153] oneDNN custom operations
# are on", CUDA drivers not found), the TF Lite interpreter's delegate notice and its
# quantizer's settings ("fully_quantize: 0, inference_type: 6, ...").
NOTICE = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog|[IWE]\d{4} [\d:.]+ +\d+ \S+:\d+\]"
    rb"|INFO: Created TensorFlow Lite|To enable the following instructions|fully_quantize: \d"
)


def _run(args):
    """Calls the command's function (`args.run`) in `keras_resvit.cli_commands`, imported
    only now: parsing, `--help` included, needs none of the package."""
    from keras_resvit import cli_commands

    getattr(cli_commands, args.run)(args)


@contextlib.contextmanager
def _notices_dropped():
    """Passes on, line by line, what is written to file descriptor 2 in the block (C++ logs
    too), except the libraries' start-up notices (`NOTICE`)."""
    sys.stderr.flush()
    stderr = os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)

    def forward():
        with os.fdopen(read, "rb") as lines:
            for line in lines:
                if not NOTICE.match(line):
                    os.write(stderr, line)

    thread = threading.Thread(target=forward, daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(stderr, 2)  # closes the pipe's write end: the thread reads to its end
        thread.join(timeout=10)
        if not thread.is_alive():  # else a child process holds the pipe: leave its fd open
            os.close(stderr)


def _quiet():
    """Quiets the libraries' logs before they load, unless the user set
    TF_CPP_MIN_LOG_LEVEL: TensorFlow's and XLA's C++ logs to fatal errors (level 3, inherited
    by the export's subprocess), their Python loggers to errors; returns the context that
    drops the start-up notices no level governs (`_notices_dropped`)."""
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    # JAX sets "1" when it loads and finds the variable unset: not the user's choice.
    if level is not None and not (level == "1" and "jax" in sys.modules):
        return contextlib.nullcontext()
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import logging

    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    return _notices_dropped()


@contextlib.contextmanager
def _one_line_warnings(command):
    """Warnings print as `keras-resvit COMMAND: warning: ...` in the block. (Formatting, not
    showing: warnings that a caller records, as pytest does, stay recorded.)"""
    default = warnings.formatwarning

    def one_line(message, category, filename, lineno, line=None):
        return f"keras-resvit {command}: warning: {_one_line(message)}\n"

    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = default


def main(argv=None) -> int:
    """Entry point; returns the exit code (2: bad usage or input, 1: runtime failure, 130:
    interrupted by Ctrl-C)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # usage errors (2) and --help (0) return like any other command
        return exit.code or 0
    verbose = args.verbose or args.debug
    try:
        # Progress, results and one-line errors only: the libraries' logs would bury the one
        # line an error prints.
        if verbose:
            _run(args)
        else:
            with _quiet(), _one_line_warnings(args.command):
                _run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        again = "; run the same command again to resume" if args.command == "train" else ""
        print(f"keras-resvit {args.command}: interrupted{again}", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as error:
        if args.debug:
            raise
        print(f"keras-resvit {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - one line for users, traceback with --debug
        if args.debug:
            raise
        message = f"{type(error).__name__}: {_one_line(error)}"
        print(f"keras-resvit {args.command}: {message}", file=sys.stderr)
        return 1
    return 0


def _one_line(error):
    return " ".join(str(error).split())


if __name__ == "__main__":
    sys.exit(main())
