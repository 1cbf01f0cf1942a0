"""Folders the package writes into: never a user's files overwritten, never two writers.

- A folder artifact (a SavedModel) replaces only an earlier artifact of its kind, in one atomic
  swap (`atomic_folder`): a failure or kill at any point leaves the old folder or the new one.
- A run folder (`output_folder`) is locked against a second run and records, in
  `.keras-resvit.json`, the names the package wrote there, each just before it is written; a
  run refuses to write over a file of the same name that the package did not write, and a
  lock or record file that the package did not write.
"""

import contextlib
import ctypes
import errno
import fnmatch
import json
import os
import re
import stat
import sys
import threading
from pathlib import Path

from keras_resvit.base.files import (
    WRITE_HOOKS,
    check_output_path,
    make_folders,
    remove_path,
    remove_stale_temporaries,
    temporary_sibling,
    write_json,
)

# The record of what the package wrote into an output folder: a JSON list of names.
MANIFEST = ".keras-resvit.json"
LOCK = ".keras-resvit.lock"
# What a lock file of the package holds: nothing yet, or its holder's process id.
LOCK_TEXT = re.compile(rb"(\d+\n)?")
_RENAME_EXCHANGE = 2  # renameat2(2) flag: swap two paths atomically (Linux >= 3.15)
_AT_FDCWD = -100


def _foreign_contents(path: Path, contents) -> list:
    """What the sub-folders named in `contents` ({name: file-name patterns}) hold beyond
    those patterns, as "name/file" paths."""
    foreign = []
    for name, patterns in (contents or {}).items():
        folder = path / name
        if folder.is_dir() and not folder.is_symlink():
            for entry in sorted(folder.rglob("*")):
                inner = entry.relative_to(folder).as_posix()
                if not any(fnmatch.fnmatchcase(inner, pattern) for pattern in patterns):
                    foreign.append(f"{name}/{inner}")
    return foreign


def check_replaceable_folder(
    argument: str, path, kind: str, entries, required, contents=None
) -> Path:
    """Checks that a folder written at `path` would replace nothing but an earlier `kind`.

    Args:
        argument: the caller's argument name, for the message.
        path: the folder to write.
        kind: what the folder is, for the message ("SavedModel").
        entries: the names a `kind` folder may hold.
        required: names an existing `kind` folder must hold.
        contents: for sub-folders among `entries`, the file-name patterns they may hold
            ({"assets": ()}: none; a user's vocabulary there is not the export's).

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
        others += _foreign_contents(path, contents) if not others else []
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
        remove_path(tmp)  # the previous folder (or a link to it), now at the temporary name
        return
    # Two renames; a kill between them leaves the old folder at `backup`, which the next
    # write to `path` renames back (remove_stale_temporaries).
    backup = temporary_sibling(path, "old")
    os.rename(path, backup)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(backup, path)
        raise
    remove_path(backup)


@contextlib.contextmanager
def atomic_folder(argument: str, path, kind: str, entries, required, contents=None):
    """Yields a temporary folder path beside `path` (not created: the writer makes it);
    swaps it in for `path` when the block succeeds.

    The folder at `path` may only be missing, empty or an earlier `kind` (see
    `check_replaceable_folder`, checked before and again just before the swap). The swap is
    one atomic `renameat2(RENAME_EXCHANGE)` on Linux, so a failure or kill at any point leaves
    either the old folder or the new one at `path`, never a mix and never nothing.

    Raises:
        ValueError: `path` holds something other than an earlier `kind`.
    """
    path = check_replaceable_folder(argument, path, kind, entries, required, contents)
    if path.is_symlink():  # swap at the link's target, which stays linked
        path = path.resolve()
    make_folders(argument, path.parent)
    remove_stale_temporaries(path)
    tmp = temporary_sibling(path, "tmp")
    try:
        yield tmp
        check_replaceable_folder(argument, path, kind, entries, required, contents)
        _replace_folder(tmp, path)
    finally:
        if tmp.exists():
            remove_path(tmp)


def _manifest(argument: str, folder: Path) -> list:
    """The names the package's record in `folder` lists (none without a record).

    Raises:
        ValueError: the record is a link, or not a JSON list of file names: not a record the
            package wrote, so not one it may replace.
    """
    path = folder / MANIFEST
    if not os.path.lexists(path):
        return []
    try:
        names = None if path.is_symlink() else json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        names = None
    plain = isinstance(names, list) and all(
        isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name
        for name in names
    )
    if not plain:
        raise ValueError(
            f"{argument}={str(folder)!r} holds {MANIFEST}, which is not the record keras_resvit "
            "keeps there (a JSON list of the names it wrote); it is not replaced. Move it away, "
            f"or pass another {argument}."
        )
    return names


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
        try:
            # Never through a link: the lock file is truncated and written.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as error:
            if error.errno not in (errno.ELOOP, errno.EISDIR):
                raise
            fd = None
        if fd is None or not stat.S_ISREG(os.fstat(fd).st_mode):
            if fd is not None:
                os.close(fd)
            raise ValueError(
                f"{argument}={str(folder)!r} holds {LOCK}, which is not a file keras_resvit "
                "wrote (a link or a folder); remove it, or pass another folder."
            )
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
            # Left by a killed run, or new; a file of other content is not ours to truncate.
            if LOCK_TEXT.fullmatch(os.pread(fd, 32, 0)):
                break
            os.close(fd)
            raise ValueError(
                f"{argument}={str(folder)!r} holds {LOCK}, which is not a lock keras_resvit "
                "wrote (it holds other text); it is not replaced. Move it away, or pass another "
                f"{argument}."
            )
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def abandoned(folder: Path) -> bool:
    """Whether `folder` is a run folder that the package wrote (it holds the record) and no
    living process holds: its writer was killed before it could remove it. False where
    locks are not available (a folder in use could not be told from an abandoned one)."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir() or not (folder / MANIFEST).is_file():
        return False
    try:
        import fcntl  # noqa: F401 - only where `_lock` really locks
    except ImportError:
        return False
    try:
        with _lock("folder", folder):
            return True
    except (ValueError, OSError):
        return False


class OutputFolder:
    """A locked folder that a run writes `names` into (see `output_folder`)."""

    def __init__(self, path: Path, names, owned):
        self.path = path
        self.names = tuple(names)
        self.owned = set(owned)
        # Missing when the run locked the folder: what appears there since is the run's.
        self.missing = {name for name in self.names if not os.path.lexists(path / name)}
        self.writing = False
        self._root = path.resolve()
        self._mutex = threading.Lock()  # callbacks may write from another thread

    def start_writing(self):
        """Call it once the run has passed its checks, before it writes: from then on, each
        of `names` that the package writes (through `files.atomic_path`) is recorded as the
        package's just before anything is created there (`claim`)."""
        if not self.writing:
            self.writing = True
            WRITE_HOOKS.append(self.claim)

    def claim(self, path):
        """Records the name of `names` that `path` is, or lies in, as the package's, before
        `path` is written; with it, each of `names` missing when the run began that has
        appeared since (a folder a library writes itself, such as tensorboard/). A run killed
        at any point thus leaves claims only on names it began to write."""
        try:
            name = Path(path).resolve().relative_to(self._root).parts[0]
        except (ValueError, IndexError):
            return  # outside the folder
        if name == MANIFEST:
            return
        with self._mutex:
            self._record(self.owned | self._appeared() | ({name} & set(self.names)))

    def _appeared(self):
        return {name for name in self.missing if os.path.lexists(self.path / name)}

    def finish(self):
        """Stops recording, and keeps in the record only names that exist in the folder: a
        name the run did not write (or removed) is the user's to use again."""
        if self.writing:
            WRITE_HOOKS.remove(self.claim)
            self.writing = False
            self.owned |= self._appeared()
        self._record({name for name in self.owned if os.path.lexists(self.path / name)})

    def _record(self, names):
        if not names:
            (self.path / MANIFEST).unlink(missing_ok=True)
        elif names != self.owned or not (self.path / MANIFEST).exists():
            write_json(self.path / MANIFEST, sorted(names))
        self.owned = set(names)


@contextlib.contextmanager
def output_folder(argument: str, folder, names):
    """Opens a run folder for writing `names` in it: locked, and owned by the package.

    The folder is created if needed and locked against a second run (another process gets
    one clear ValueError; a killed holder's lock is released by the kernel). Each of `names`
    (files or sub-folders the run writes) must be missing or written there by the package
    before, as its record (`.keras-resvit.json`) says; otherwise nothing is touched and a
    ValueError names the user's files. Once the run starts writing
    (`OutputFolder.start_writing`), each name is recorded just before the package writes it
    (`OutputFolder.claim`); when the run ends, the record keeps only the names that exist.
    The folders this call created are removed again if the run leaves them empty (it failed
    before writing); a folder that existed before is kept, empty or not.

    Yields:
        An `OutputFolder`.

    Raises:
        ValueError: the folder cannot be written, is in use, or holds files of the same names
            that the package did not write, or a lock or record file it did not write.
    """
    folder = check_output_path(argument, folder, folder=True)
    created = [folder, *folder.parents]
    created = created[: next(i for i, path in enumerate(created) if path.exists())]
    make_folders(argument, folder)
    try:
        with _opened(argument, folder, names) as output:
            yield output
    finally:
        # A run that failed before writing leaves no empty folder of its own making.
        for path in created:
            with contextlib.suppress(OSError):  # not empty (or gone): kept
                path.rmdir()


@contextlib.contextmanager
def _opened(argument, folder, names):
    """`output_folder` in an existing `folder`."""
    with _lock(argument, folder):
        owned = _manifest(argument, folder)
        foreign = [name for name in names if (folder / name).exists() and name not in owned]
        if foreign:
            raise ValueError(
                f"{argument}={str(folder)!r} holds {', '.join(foreign)}, which keras_resvit did "
                "not write and a run in this folder writes or replaces (whichever of its "
                "options this one uses); pass a new or empty folder."
            )
        # A run writes and deletes only real files and folders: never through a link.
        links = [name for name in names if (folder / name).is_symlink()]
        if links:
            raise ValueError(
                f"{argument}={str(folder)!r} holds {', '.join(links)} as link(s); keras_resvit "
                "never writes or deletes through a link in a run folder. Replace the link by "
                "its folder, or link the whole run folder instead."
            )
        output = OutputFolder(folder, names, owned)
        try:
            yield output
        finally:
            output.finish()
