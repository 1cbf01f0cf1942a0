"""Atomic file writes: a crash mid-write never leaves a truncated file at the target path."""

import contextlib
import os
import tempfile
from pathlib import Path

import keras

from keras_resvit.models.common import deep_graph


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path` (same suffix); renames it onto `path` on success.

    On an exception the temporary file is removed and `path` keeps its previous content.

    Example:
    >>> with atomic_path("/tmp/model.keras") as tmp:
    ...     model.save(tmp)  # doctest: +SKIP
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"path={str(path)!r} is a directory; expected a file path.")
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


def load_model(path, *, safe_mode: bool = True) -> keras.Model:
    """Loads a `.keras` file, in safe mode by default, also for very deep nets (ResNet-1202).

    Args:
        path: a `.keras` file.
        safe_mode: refuse files that need unsafe deserialization (e.g. Lambda layers).

    Raises:
        FileNotFoundError: `path` is not a file.

    Example:
    >>> import keras_resvit as kr
    >>> model = kr.load_model("runs/digits/last.keras")  # doctest: +SKIP
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"path={str(path)!r} is not a file; expected a .keras file.")
    with deep_graph():
        return keras.saving.load_model(path, safe_mode=safe_mode)
