"""Atomic file writes: a crash mid-write never leaves a truncated file at the target path."""

import contextlib
import os
import tempfile
from pathlib import Path


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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
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
