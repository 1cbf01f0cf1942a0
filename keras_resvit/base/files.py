"""Files the package writes and reads: atomic writes, checked JSON and CSV, checked paths.

Two promises hold for every file the package writes:
- a crash or kill mid-write never leaves a truncated file at the target path: each file is
  written to a temporary sibling and renamed onto the target (`atomic_path`);
- written files and folders get the modes a plain `open()` / `mkdir()` gives under the user's
  umask.

Temporaries are named `.<name>.tmp-<host>-<pid>-<token><suffix>`. A process killed mid-write
leaves one behind; the next write to the same target removes it (its process is gone), so
stale temporaries never pile up. Folders the package writes into are `output_folders`'
concern; model files and the class names inside them, `model_files` and `class_names`'.
"""

import contextlib
import csv
import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import stat
import zipfile
from pathlib import Path


def as_path(argument: str, path) -> Path:
    """`path` (a str or `os.PathLike`) as a `Path`, a leading "~" expanded as a shell would.

    Raises:
        ValueError: `path` is neither, or an empty str (which would name the current folder).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(
            f"{argument}={path!r} is not a path; pass a str or pathlib.Path "
            f"(got {type(path).__name__})."
        )
    if isinstance(path, str) and not path.strip():
        raise ValueError(f'{argument}={path!r} is empty; pass a path ("." for the current folder).')
    if "\0" in os.fspath(path):
        raise ValueError(
            f"{argument}={os.fspath(path)!r} holds a NUL character, which no path can hold."
        )
    return Path(path).expanduser()


def check_output_path(argument: str, path, *, folder: bool = False) -> Path:
    """Checks, before any work, that a file (or a `folder`) can be written at `path`.

    Args:
        argument: the caller's argument name, for the message.
        path: the file or folder to write (str or `os.PathLike`; "~" is expanded); missing
            parent folders are fine.
        folder: whether `path` is a folder (a SavedModel, a training run) rather than a file.

    Returns:
        `path` as a `Path`, "~" expanded: the path to write.

    Raises:
        ValueError: `path` is not a str or path; a folder where a file is expected (or the
            reverse), a broken link, a read-only file or folder, a parent is a file, or the
            nearest existing parent is not writable.

    Example:
    >>> from keras_resvit.base.files import check_output_path
    >>> check_output_path("path", "/tmp/model.tflite")
    PosixPath('/tmp/model.tflite')
    """
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else ""
    path = as_path(argument, path)
    if not folder and text.endswith(("/", os.sep)):  # Path() would drop the "/"
        raise ValueError(f"{argument}={text!r} ends with a '/', naming a folder; expected a file.")
    _check_name_lengths(argument, path)
    if path.is_symlink() and not path.exists():
        raise ValueError(
            f"{argument}={str(path)!r} is a link to {os.readlink(path)!r}, which does not exist."
        )
    if not folder and path.is_dir():
        raise ValueError(f"{argument}={str(path)!r} is a folder; expected a file path.")
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"{argument}={str(path)!r} exists and is not a folder.")
    if folder and path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(
            f"{argument}={str(path)!r} is a folder that is not writable; pass a folder you can "
            "write to (or a new one)."
        )
    if not folder and path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{argument}={str(path)!r} is read-only; it is not replaced.")
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


def _check_name_lengths(argument: str, path: Path) -> None:
    """Each name `path` adds to its nearest existing folder must fit that filesystem's limit
    (255 bytes where it does not say): a longer one is one ValueError, not an OSError."""
    parent = path.parent
    while not os.path.exists(parent):  # False, not an error, for a name too long itself
        parent = parent.parent
    try:
        longest = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        longest = 255
    for name in path.parts[len(parent.parts) :]:
        if len(os.fsencode(name)) > longest:
            raise ValueError(
                f"{argument}={str(path)!r} cannot be written: the name {name[:40]!r}... is "
                f"{len(os.fsencode(name))} bytes, over this filesystem's limit of {longest}."
            )


@functools.cache
def _host() -> str:
    """This host and process namespace as 8 hex digits: only a temporary tagged with them
    has a process id that `_process_alive` can check (containers sharing a hostname do not
    share process ids)."""
    name = socket.gethostname()
    with contextlib.suppress(OSError):
        name += f":{os.stat('/proc/self/ns/pid').st_ino}"
    return hashlib.sha1(name.encode()).hexdigest()[:8]


def _stem_and_suffix(path: Path):
    """The name's stem for a temporary sibling's name, and every suffix (Keras checks for
    ".keras" and ".weights.h5"). A long stem becomes its hash, so that the sibling's name,
    about 30 bytes longer, stays within the filesystem's limit where `path`'s own does."""
    suffix = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffix)]
    if len(os.fsencode(stem)) > 120:
        stem = hashlib.sha1(os.fsencode(stem)).hexdigest()[:16]
    return stem, suffix


def temporary_sibling(path: Path, kind: str) -> Path:
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


def remove_path(path: Path):
    """Deletes a file, a link or a folder tree."""
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
            remove_path(entry)


# Called with each path `atomic_path` is about to write, before anything is created there: a
# run folder being written (`output_folders.OutputFolder`) records the name as the package's
# first, so that a run killed at any point claims no file it did not begin to write.
WRITE_HOOKS = []


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path` (same suffix); renames it onto `path` on success.

    The temporary file lives in the same folder, so the final `os.replace` is an atomic rename
    on the same filesystem. It gets the mode `open()` would give: an existing file's own mode,
    else 0666 less the umask; the rename keeps it. A link at `path` is written through, as
    `open()` would. On an exception `path` keeps its previous content and the temporary file
    is removed; after a kill, the next write to `path` removes it.

    Raises:
        ValueError: `path` cannot be written (see `check_output_path`).

    Example:
    >>> from pathlib import Path
    >>> from keras_resvit.base.files import atomic_path
    >>> with atomic_path("notes.txt") as tmp:
    ...     _ = Path(tmp).write_text("written whole, or not at all")
    >>> Path("notes.txt").read_text()
    'written whole, or not at all'
    """
    path = check_output_path("path", path)
    for hook in tuple(WRITE_HOOKS):
        hook(path)
    if path.is_symlink():
        path = path.resolve()
    make_folders("path", path.parent)
    remove_stale_temporaries(path)
    tmp = temporary_sibling(path, "tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    if path.exists():
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
    try:
        yield str(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def make_folders(argument: str, folder) -> Path:
    """Creates `folder` and its missing parents; a folder that cannot be made (a read-only or
    virtual filesystem, a name too long) is one ValueError naming `argument`, not an OSError."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or error
        raise ValueError(
            f"{argument}: the folder {str(folder)!r} cannot be created ({reason}); pass a path "
            "in a folder you can write."
        ) from None
    return folder


@contextlib.contextmanager
def scratch_folder(path):
    """A working folder beside `path` for intermediate files of its writer, removed after.

    It sits on the target's filesystem rather than in the system temp folder, and a killed
    writer's scratch folder is removed by the next write to `path`.
    """
    path = Path(path)
    make_folders("path", path.parent)
    tmp = temporary_sibling(path, "tmp")
    tmp.mkdir()
    try:
        yield tmp
    finally:
        remove_path(tmp)


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
        problem = f"not JSON: {first_line(error)}"
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


def write_json(path, data) -> Path:
    """Writes `data` as indented JSON through a temporary file (see `atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    return Path(path)


def write_text(path, text: str) -> Path:
    """Writes `text` (UTF-8) through a temporary file (see `atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def write_csv(path, rows) -> Path:
    """Writes `rows` (dicts) as CSV through a temporary file (see `atomic_path`); the columns
    are every key, in order of first appearance."""
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def first_line(error, after: str = "") -> str:
    """The first line of an exception's message (of its last part after `after`, when given),
    or its type's name when it has no message: one line for a one-line error."""
    text = str(error).strip()
    if after:
        text = text.rsplit(after, 1)[-1].strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_keras_file(argument: str, path) -> Path:
    """Checks that `path` is an existing `.keras` zip archive, before Keras reads it.

    Raises:
        FileNotFoundError: `path` is not a file.
        ValueError: not a path, another suffix, or not a zip archive (truncated or corrupt).
    """
    path = as_path(argument, path)
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
