"""Named weights' files: downloaded once with `keras.utils.get_file`, verified, cached.

The cache is `$KERAS_RESVIT_HOME/models` when `KERAS_RESVIT_HOME` is set, else Keras' own
`~/.keras/models` (or `$KERAS_HOME/models`), in a `keras_resvit` sub-folder; each file is named
`<model>.<tag><suffix>`. A file is checked against the hash its publisher lists where there is
one; otherwise the SHA-256 of its first download is recorded beside it (`<file>.sha256`) and
checked on every later load. A cached file that fails its check (a partial or corrupt copy) is
fetched again, never loaded; a download that fails its check is never cached.

`KERAS_RESVIT_WEIGHTS_MIRROR` redirects every download to a mirror that keeps the sources'
host and path: with `KERAS_RESVIT_WEIGHTS_MIRROR=http://mirror:8000`,
`https://storage.googleapis.com/vit_models/x.npz` is fetched from
`http://mirror:8000/storage.googleapis.com/vit_models/x.npz` (the layout `wget -x` writes).
"""

import hashlib
import os
import urllib.parse
from pathlib import Path

from keras_resvit.base.files import atomic_path, write_text

HOME_VARIABLE = "KERAS_RESVIT_HOME"
MIRROR_VARIABLE = "KERAS_RESVIT_WEIGHTS_MIRROR"
HASH_SUFFIX = ".sha256"
_CHUNK = 1 << 20


class WeightsDownloadError(OSError):
    """A named weights file could not be downloaded, or the download failed its hash check."""


def _home() -> tuple:
    """`(the environment variable that sets the cache's home, or None, the home)`."""
    for variable in (HOME_VARIABLE, "KERAS_HOME"):
        if os.environ.get(variable):
            return variable, os.environ[variable]
    return None, "~/.keras"


def cache_folder() -> Path:
    """Where named weights are cached (see the module's docstring)."""
    return Path(_home()[1]).expanduser() / "models" / "keras_resvit"


def _check_cache_folder():
    """Checks, before any download, that the cache folder can be written; the error names the
    setting that put the cache there.

    Raises:
        ValueError: a file where the cache's home or one of its folders should be, or the
            nearest existing folder is not writable.
    """
    folder = cache_folder()
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if not existing.is_dir():
        problem = f"{str(existing)!r} is a file, not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"the folder {str(existing)!r} is not writable"
    else:
        return
    variable, home = _home()
    setting = f"{variable}={home!r}" if variable else f"the default home {home!r}"
    raise ValueError(
        f"{setting} cannot hold the weights cache {str(folder)!r}: {problem}. Set "
        f"{HOME_VARIABLE} to a writable folder, or pass weights= the path of a local file."
    )


def source_url(url: str) -> str:
    """`url`, or its copy on the mirror `KERAS_RESVIT_WEIGHTS_MIRROR` names.

    Example:
    >>> import os
    >>> from keras_resvit.weights.download import MIRROR_VARIABLE, source_url
    >>> os.environ[MIRROR_VARIABLE] = "http://127.0.0.1:8000/"
    >>> source_url("https://storage.googleapis.com/vit_models/imagenet21k/ViT-B_16.npz")
    'http://127.0.0.1:8000/storage.googleapis.com/vit_models/imagenet21k/ViT-B_16.npz'
    >>> del os.environ[MIRROR_VARIABLE]
    """
    mirror = os.environ.get(MIRROR_VARIABLE, "").strip()
    if not mirror:
        return url
    parts = urllib.parse.urlsplit(url)
    return f"{mirror.rstrip('/')}/{parts.netloc}{parts.path}"


def file_digest(path, algorithm: str = "sha256") -> str:
    """The hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _matches(path, entry) -> tuple[bool, str]:
    """Whether `path` holds `entry`'s file, and the digest that says so or not."""
    if entry.hash_algorithm == "sha256_prefix":  # torchvision: the file name carries it
        digest = file_digest(path)
        return digest.startswith(entry.hash), digest
    digest = file_digest(path, entry.hash_algorithm)
    return digest == entry.hash, digest


def _cached(path: Path, entry) -> bool:
    """Whether the cache holds a verified copy; a copy that fails its check is reported."""
    if not path.is_file():
        return False
    recorded = path.with_name(path.name + HASH_SUFFIX)
    if entry.hash is not None:
        good, _ = _matches(path, entry)
    elif recorded.is_file():
        good = recorded.read_text().split()[:1] == [file_digest(path)]
    else:
        good = False  # a download interrupted before its hash was recorded
    if not good:
        print(f"{path} is incomplete or corrupt (its hash differs); downloading it again.")
    return good


def _download_error(entry, url, path, why):
    return WeightsDownloadError(
        f"weights={entry.tag!r} of {entry.model!r}: could not download {url} ({why}); cache "
        f"path {path}. Download the file elsewhere and pass its path, "
        f"create_model({entry.model!r}, weights='/path/to/{Path(entry.url).name}') (on the "
        f"command line {entry.model}:/path/to/{Path(entry.url).name}), or point "
        f"{MIRROR_VARIABLE} at a mirror."
    )


def fetch(entry) -> Path:
    """The local path of a named weights file (`catalog.NamedWeights`), downloading it once.

    Raises:
        ValueError: the cache folder cannot be written (before any download).
        WeightsDownloadError: the download failed (offline, server error, truncated) or its
            hash differs from the published one; nothing is cached then.
    """
    path = cache_folder() / entry.file_name
    if _cached(path, entry):
        return path
    _check_cache_folder()
    url = source_url(entry.url)
    recorded = path.with_name(path.name + HASH_SUFFIX)
    # The cache's folders this call makes: a failed download removes them again (if empty).
    created = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    try:
        _download(entry, url, path, recorded)
    except BaseException:
        for folder in created:  # the innermost first
            try:
                folder.rmdir()
            except OSError:  # not empty (another process's download), or gone
                break
        raise
    return path


def _download(entry, url, path, recorded):
    """Downloads `entry` from `url` to `path` (then `recorded`, its hash), verified, through
    a temporary file."""
    import keras

    with atomic_path(path) as tmp:
        try:  # a fresh download into the temporary file, then verified, then renamed
            written = keras.utils.get_file(
                Path(tmp).name, url, cache_dir=str(path.parent), cache_subdir="",
                force_download=True,
            )  # fmt: skip
        except Exception as error:  # noqa: BLE001 - get_file raises plain Exception
            raise _download_error(entry, url, path, " ".join(str(error).split())) from None
        # get_file falls back to /tmp/.keras for a folder it cannot write: not our file then.
        if Path(written).resolve() != Path(tmp).resolve() or not os.path.getsize(tmp):
            raise _download_error(entry, url, path, f"nothing was written to {tmp}")
        if entry.hash is not None:
            good, digest = _matches(tmp, entry)
            if not good:
                raise WeightsDownloadError(
                    f"weights={entry.tag!r} of {entry.model!r}: the file downloaded from {url} "
                    f"has {entry.hash_algorithm} {digest}, but its publisher lists "
                    f"{entry.hash}; nothing was cached. The download is corrupt or the file "
                    "changed at its source: try again, or pass a file you trust by its path."
                )
        # The recorded hash is written first: a kill before the rename leaves no file it
        # could vouch for.
        write_text(recorded, f"{file_digest(tmp)}  {path.name}\n")
