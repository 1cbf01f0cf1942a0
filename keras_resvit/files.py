"""Files the package writes and reads: atomic writes, checked output paths, safe model loads.

A crash mid-write never leaves a truncated file at the target path, and a `.keras` file is
loaded in Keras' safe mode unless the caller explicitly opts out.
"""

import contextlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import keras

from keras_resvit.models.common import deep_graph


def check_output_path(argument: str, path, *, folder: bool = False) -> Path:
    """Checks, before any work, that a file (or a `folder`) can be written at `path`.

    Args:
        argument: the caller's argument name, for the message.
        path: the file or folder to write; missing parent folders are fine.
        folder: whether `path` is a folder (a SavedModel, a training run) rather than a file.

    Returns:
        `path` as a `Path`.

    Raises:
        ValueError: `path` is a folder where a file is expected (or the reverse), a parent is
            a file, or the nearest existing parent is not writable.

    Example:
    >>> check_output_path("path", "/tmp/model.tflite")
    PosixPath('/tmp/model.tflite')
    """
    path = Path(path)
    if not folder and path.is_dir():
        raise ValueError(f"{argument}={str(path)!r} is a folder; expected a file path.")
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"{argument}={str(path)!r} exists and is not a folder.")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        problem = f"{str(parent)!r} is a file, not a folder"
    elif not os.access(parent, os.W_OK | os.X_OK):
        problem = f"the folder {str(parent)!r} is not writable"
    else:
        return path
    raise ValueError(f"{argument}={str(path)!r} cannot be written: {problem}.")


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path` (same suffix); renames it onto `path` on success.

    The temporary file lives in the same folder, so the final `os.replace` is an atomic rename
    on the same filesystem. On an exception (or a kill) `path` keeps its previous content; on
    an exception the temporary file is removed.

    Raises:
        ValueError: `path` cannot be written (see `check_output_path`).

    Example:
    >>> with atomic_path("/tmp/model.keras") as tmp:
    ...     model.save(tmp)  # doctest: +SKIP
    """
    path = check_output_path("path", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep every suffix: Keras checks for ".keras" and ".weights.h5".
    suffix = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffix)]
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.tmp", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_model(model, path) -> Path:
    """`model.save` through a temporary file, so an interrupted save keeps the old file."""
    with atomic_path(path) as tmp:
        model.save(tmp)
    return Path(path)


def write_json(path, data) -> Path:
    """Writes `data` as indented JSON through a temporary file (see `atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    return Path(path)


def check_keras_file(argument: str, path) -> Path:
    """Checks that `path` is an existing `.keras` zip archive, before Keras reads it.

    Raises:
        FileNotFoundError: `path` is not a file.
        ValueError: another suffix, or not a zip archive (truncated or corrupt).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{argument}={str(path)!r} is not a file; expected a .keras file.")
    if path.suffix != ".keras":
        raise ValueError(
            f"{argument}={str(path)!r} has suffix {path.suffix!r}; expected a .keras file."
        )
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{argument}={str(path)!r} is not a readable .keras file: a .keras file is a zip "
            "archive and this one is truncated or corrupt. Save the model again."
        )
    return path


def load_model(path, *, safe_mode: bool = True) -> keras.Model:
    """Loads a `.keras` file, in safe mode by default, also for very deep nets (ResNet-1202).

    Safe mode refuses files whose config holds Python code (a `Lambda` layer's function):
    loading such a file runs that code, so a file from an untrusted source could do anything
    on this machine. Pass `safe_mode=False` only for files you trust.

    Args:
        path: a `.keras` file.
        safe_mode: refuse files that need unsafe deserialization (e.g. Lambda layers).

    Returns:
        The `keras.Model`.

    Raises:
        FileNotFoundError: `path` is not a file.
        ValueError: not a `.keras` zip archive, a file that needs unsafe deserialization (with
            `safe_mode=True`), or a file Keras cannot rebuild (e.g. unknown custom layers).

    Example:
    >>> import keras_resvit as kr
    >>> model = kr.load_model("runs/digits/last.keras")  # doctest: +SKIP
    """
    check_keras_file("path", path)
    try:
        with deep_graph():
            return keras.saving.load_model(path, safe_mode=safe_mode)
    except Exception as error:  # noqa: BLE001 - zip, HDF5 and config errors alike
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if safe_mode and "safe_mode" in str(error):
            raise ValueError(
                f"path={str(path)!r} was refused: it holds Python code (e.g. a Lambda layer) "
                "that would run while loading, so a file from an untrusted source could execute "
                "anything on this machine. If you trust its source, load it with "
                "kr.load_model(path, safe_mode=False)."
            ) from error
        raise ValueError(
            f"path={str(path)!r} cannot be loaded as a Keras model: {first}"
        ) from error
