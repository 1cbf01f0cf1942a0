"""Files the package writes and reads: atomic writes, owned output folders, safe model loads.

Three promises hold for every file the package writes:
- a crash or kill mid-write never leaves a truncated file at the target path: each file is
  written to a temporary sibling and renamed onto the target (`atomic_path`), and a folder
  (a SavedModel) is swapped in whole (`atomic_folder`);
- written files and folders get the modes a plain `open()` / `mkdir()` gives under the user's
  umask;
- nothing the package did not create is deleted or overwritten: a folder export replaces only
  an earlier export of the same kind, and a run folder (`output_folder`) refuses to overwrite
  files that the package did not write there.

Temporaries are named `.<name>.tmp-<host>-<pid>-<token><suffix>`. A process killed mid-write
leaves one behind; the next write to the same target removes it (its process is gone), so
stale temporaries never pile up. A `.keras` file is loaded in Keras' safe mode unless the
caller explicitly opts out.
"""

import contextlib
import ctypes
import errno
import json
import os
import re
import secrets
import shutil
import socket
import sys
import zipfile
from pathlib import Path

import keras

from keras_resvit.models.common import deep_graph

# The record of what the package wrote into an output folder: a JSON list of names.
MANIFEST = ".keras-resvit.json"
LOCK = ".keras-resvit.lock"
_RENAME_EXCHANGE = 2  # renameat2(2) flag: swap two paths atomically (Linux >= 3.15)
_AT_FDCWD = -100


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


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:16] or "host"


def _stem_and_suffix(path: Path):
    # Keep every suffix: Keras checks for ".keras" and ".weights.h5".
    suffix = "".join(path.suffixes)
    return path.name[: len(path.name) - len(suffix)], suffix


def _sibling(path: Path, kind: str) -> Path:
    """A new temporary (`kind` "tmp") or backup ("old") name beside `path`, tagged with this
    host and process so that a later write can tell a dead writer's leftovers."""
    stem, suffix = _stem_and_suffix(path)
    token = secrets.token_hex(4)
    return path.with_name(f".{stem}.{kind}-{_host()}-{os.getpid()}-{token}{suffix}")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":
        return True  # another thread of this process, or no cheap check: keep it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # e.g. another user's process
    return True


def _remove(path: Path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries(path) -> None:
    """Removes what writers of `path` on this host left when they were killed.

    A temporary whose process is gone is deleted; a backup of an interrupted folder swap
    (`atomic_folder`) is renamed back onto `path` when `path` is missing, so a kill between
    the two renames of the fallback swap never loses the previous folder.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return
    stem, suffix = _stem_and_suffix(path)
    pattern = re.compile(
        rf"\.{re.escape(stem)}\.(tmp|old)-{re.escape(_host())}-(\d+)-[0-9a-f]{{8}}"
        rf"{re.escape(suffix)}"
    )
    for entry in sorted(path.parent.iterdir()):
        match = pattern.fullmatch(entry.name)
        if match is None or _process_alive(int(match[2])):
            continue
        if match[1] == "old" and not path.exists():
            os.replace(entry, path)
        else:
            _remove(entry)


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path` (same suffix); renames it onto `path` on success.

    The temporary file lives in the same folder, so the final `os.replace` is an atomic rename
    on the same filesystem. It is created with the mode `open()` would give (0666 less the
    umask), which the rename keeps. On an exception `path` keeps its previous content and the
    temporary file is removed; after a kill, the next write to `path` removes it.

    Raises:
        ValueError: `path` cannot be written (see `check_output_path`).

    Example:
    >>> with atomic_path("/tmp/model.keras") as tmp:
    ...     model.save(tmp)  # doctest: +SKIP
    """
    path = check_output_path("path", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = _sibling(path, "tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield str(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_replaceable_folder(argument: str, path, kind: str, entries, required) -> Path:
    """Checks that a folder written at `path` would replace nothing but an earlier `kind`.

    Args:
        argument: the caller's argument name, for the message.
        path: the folder to write.
        kind: what the folder is, for the message ("SavedModel").
        entries: the names a `kind` folder may hold.
        required: names an existing `kind` folder must hold.

    Returns:
        `path` as a `Path`.

    Raises:
        ValueError: `path` is the current folder (or holds it), or holds anything other than
            an earlier `kind`.
    """
    path = check_output_path(argument, path, folder=True)
    if not path.exists():
        return path
    names = sorted(entry.name for entry in path.iterdir())
    if Path.cwd().resolve().is_relative_to(path.resolve()):
        problem = "is the current folder or holds it"
    elif not names:
        return path
    else:
        others = [name for name in names if name not in entries]
        missing = [name for name in required if name not in names]
        if not others and not missing:
            return path
        shown = ", ".join(others[:5] or missing) + (" ..." if len(others) > 5 else "")
        problem = (
            f"exists and is not an earlier {kind} ({'it holds' if others else 'it lacks'} {shown})"
        )
    raise ValueError(
        f"{argument}={str(path)!r} {problem}; writing a {kind} there would delete it. An export "
        f"replaces only an earlier {kind}: choose a new or empty folder."
    )


def _exchange(a: Path, b: Path) -> bool:
    """Swaps two paths in one atomic step (Linux renameat2); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False  # e.g. a filesystem without RENAME_EXCHANGE
    raise OSError(code, os.strerror(code), str(b))


def _replace_folder(tmp: Path, path: Path):
    """Puts the finished folder `tmp` at `path`; the old `path`, if any, ends up deleted."""
    if not path.exists():
        os.rename(tmp, path)
        return
    if _exchange(tmp, path):
        shutil.rmtree(tmp)  # the previous folder, now at the temporary name
        return
    # Two renames; a kill between them leaves the old folder at `backup`, which the next
    # write to `path` renames back (remove_stale_temporaries).
    backup = _sibling(path, "old")
    os.rename(path, backup)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(backup, path)
        raise
    shutil.rmtree(backup)


@contextlib.contextmanager
def atomic_folder(argument: str, path, kind: str, entries, required):
    """Yields a temporary folder path beside `path` (not created: the writer makes it);
    swaps it in for `path` when the block succeeds.

    The folder at `path` may only be missing, empty or an earlier `kind` (see
    `check_replaceable_folder`, checked before and again just before the swap). The swap is
    one atomic `renameat2(RENAME_EXCHANGE)` on Linux, so a failure or kill at any point leaves
    either the old folder or the new one at `path`, never a mix and never nothing.

    Raises:
        ValueError: `path` holds something other than an earlier `kind`.
    """
    path = check_replaceable_folder(argument, path, kind, entries, required)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = _sibling(path, "tmp")
    try:
        yield tmp
        check_replaceable_folder(argument, path, kind, entries, required)
        _replace_folder(tmp, path)
    finally:
        if tmp.exists():
            _remove(tmp)


@contextlib.contextmanager
def scratch_folder(path):
    """A working folder beside `path` for intermediate files of its writer, removed after.

    It sits on the target's filesystem rather than in the system temp folder, and a killed
    writer's scratch folder is removed by the next write to `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    tmp.mkdir()
    try:
        yield tmp
    finally:
        _remove(tmp)


def read_json(path, check, what: str, remedy: str):
    """The JSON value in `path`, checked: one ValueError naming the file, the problem and the
    remedy when it is unreadable, not JSON, or `check(value)` returns a problem.

    Args:
        path: the file.
        check: `value -> None` when the value is as expected, else a short problem.
        what: what the file is, for the message ("class names").
        remedy: what the user can do, for the message.
    """
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        text = str(error).strip()
        problem = f"not JSON: {text.splitlines()[0] if text else type(error).__name__}"
    else:
        problem = check(value)
        if problem is None:
            return value
    raise ValueError(f"{what} {str(path)!r} is unreadable or corrupt ({problem}); {remedy}")


def name_list_problem(value):
    """None when `value` is a list of strings (a JSON list of names), else the problem."""
    if isinstance(value, list) and all(isinstance(name, str) for name in value):
        return None
    return "not a JSON list of strings"


def _manifest(folder: Path) -> list:
    path = folder / MANIFEST
    if not path.exists():
        return []
    return read_json(
        path,
        name_list_problem,
        "the list of files keras_resvit wrote",
        "delete it only if keras_resvit wrote nothing else in that folder.",
    )


def owned_outputs(folder) -> set:
    """The names in `folder` that the package wrote there (its manifest)."""
    return set(_manifest(Path(folder)))


@contextlib.contextmanager
def _lock(argument: str, folder: Path):
    """An exclusive `flock` on `folder`; the kernel releases it when the holder dies."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): runs are not guarded against each other
        yield
        return
    path = folder / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ValueError(
                f"{argument}={str(folder)!r} is in use by another run (process {holder}); "
                f"wait for it to end, or pass another {argument}."
            ) from None
        # The previous holder may have unlinked the file after we opened it: lock the file
        # that is at the path now.
        if path.exists() and os.stat(path).st_ino == os.fstat(fd).st_ino:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


@contextlib.contextmanager
def output_folder(argument: str, folder, names):
    """Opens a run folder for writing `names` in it: locked, and owned by the package.

    The folder is created if needed and locked against a second run (another process gets
    one clear ValueError; a killed holder's lock is released by the kernel). Each of `names`
    (files or sub-folders the run writes) must be missing or written there by the package
    before, as its manifest (`.keras-resvit.json`) records; otherwise nothing is touched and
    a ValueError names the user's files. `names` are added to the manifest.

    Yields:
        The folder as a `Path`.

    Raises:
        ValueError: the folder cannot be written, is in use, or holds files of the same names
            that the package did not write.
    """
    folder = check_output_path(argument, folder, folder=True)
    folder.mkdir(parents=True, exist_ok=True)
    with _lock(argument, folder):
        owned = _manifest(folder)
        foreign = [name for name in names if (folder / name).exists() and name not in owned]
        if foreign:
            raise ValueError(
                f"{argument}={str(folder)!r} holds {', '.join(foreign)}, which keras_resvit did "
                "not write and this run would overwrite; pass a new or empty folder."
            )
        if any(name not in owned for name in names):
            write_json(folder / MANIFEST, sorted(set(owned) | set(names)))
        yield folder


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


# What Keras' deserializer says when it will not import an object a config names.
_REFUSED = ("Could not locate", "Non-modeling APIs are disallowed", "not a KerasSaveable")


def _innermost(error) -> str:
    """The last "Exception encountered:" cause Keras nests into a deserialization error."""
    text = str(error).strip()
    text = text.rsplit("Exception encountered:", 1)[-1].strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_model(path, *, safe_mode: bool = True, custom_objects: dict | None = None):
    """Loads a `.keras` file, in safe mode by default, also for very deep nets (ResNet-1202).

    Safe mode refuses files whose config holds Python code (a `Lambda` layer's function):
    loading such a file runs that code, so a file from an untrusted source could do anything
    on this machine. Pass `safe_mode=False` only for files you trust. A config that names a
    function or class Keras does not know (e.g. `os.system`) is never imported; a trusted
    file's own functions are passed in `custom_objects`.

    Args:
        path: a `.keras` file.
        safe_mode: refuse files that need unsafe deserialization (e.g. Lambda layers).
        custom_objects: `{name: function or class}` for custom objects the file names.

    Returns:
        The `keras.Model`.

    Raises:
        FileNotFoundError: `path` is not a file.
        ValueError: not a `.keras` zip archive, a file that needs unsafe deserialization (with
            `safe_mode=True`), a file naming callables Keras refuses to import, or a file
            Keras cannot rebuild.

    Example:
    >>> import keras_resvit as kr
    >>> model = kr.load_model("runs/digits/last.keras")  # doctest: +SKIP
    """
    check_keras_file("path", path)
    try:
        with deep_graph():
            return keras.saving.load_model(path, safe_mode=safe_mode, custom_objects=custom_objects)
    except Exception as error:  # noqa: BLE001 - zip, HDF5 and config errors alike
        cause = _innermost(error)
        if safe_mode and "safe_mode" in str(error):
            raise ValueError(
                f"path={str(path)!r} was refused as unsafe: it holds Python code (e.g. a Lambda "
                "layer) that would run while loading, so a file from an untrusted source could "
                "execute anything on this machine. If you trust its source, load it with "
                "kr.load_model(path, safe_mode=False)."
            ) from error
        if any(marker in cause for marker in _REFUSED):
            name = re.search(r"'([^']+)'", cause)
            named = f" {name[1]!r}" if name else ""
            raise ValueError(
                f"path={str(path)!r} was refused as unsafe: its config names{named}, a "
                "function or class that is neither part of Keras nor registered, and loading "
                "never imports arbitrary code. If you trust the file and have its code, pass "
                "it: kr.load_model(path, custom_objects={...}), or register it with "
                f"@keras.saving.register_keras_serializable(). Keras said: {cause[:300]}"
            ) from error
        raise ValueError(
            f"path={str(path)!r} cannot be loaded as a Keras model: {cause[:500]}"
        ) from error
