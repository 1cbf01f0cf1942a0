"""Files the package writes and reads: atomic writes, checked JSON, safe model loads.

Two promises hold for every file the package writes:
- a crash or kill mid-write never leaves a truncated file at the target path: each file is
  written to a temporary sibling and renamed onto the target (`atomic_path`);
- written files and folders get the modes a plain `open()` / `mkdir()` gives under the user's
  umask.

Temporaries are named `.<name>.tmp-<host>-<pid>-<token><suffix>`. A process killed mid-write
leaves one behind; the next write to the same target removes it (its process is gone), so
stale temporaries never pile up. A `.keras` file is loaded in Keras' safe mode unless the
caller explicitly opts out. Folders the package writes into are `output_folders`' concern.

Class names travel inside the files as well as in the `<name>.classes.json` side file (see
`keras_resvit.predict`), as a JSON list under one name, `CLASS_NAMES_KEY`:
- a `.keras` file: a key of its `metadata.json`, which Keras writes and never reads back (an
  extra zip entry would make Keras extract the whole archive on every load). Keras' own
  `model.save` does not write it; `save_model` does.
- a TF Lite file: a named entry of the flatbuffer's `metadata` list whose buffer holds the
  JSON, as TensorFlow's converter stores its own `CONVERSION_METADATA`.
- an ONNX file: an entry of the model's `metadata_props`.
- a model in memory: `load_model` attaches its file's names (`model_class_names`), and
  `save_model` and `kr.export` write a model's names into their files. A model built from
  another (`kr.replace_head`, `kr.resize_vit`, `keras.models.clone_model`) starts without.
"""

import contextlib
import csv
import functools
import hashlib
import json
import mmap
import os
import re
import secrets
import shutil
import socket
import stat
import struct
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
        ValueError: `path` is a folder where a file is expected (or the reverse), a broken
            link, a read-only file, a parent is a file, or the nearest existing parent is not
            writable.

    Example:
    >>> check_output_path("path", "/tmp/model.tflite")
    PosixPath('/tmp/model.tflite')
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise ValueError(
            f"{argument}={str(path)!r} is a link to {os.readlink(path)!r}, which does not exist."
        )
    if not folder and path.is_dir():
        raise ValueError(f"{argument}={str(path)!r} is a folder; expected a file path.")
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"{argument}={str(path)!r} exists and is not a folder.")
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
    # Keep every suffix: Keras checks for ".keras" and ".weights.h5".
    suffix = "".join(path.suffixes)
    return path.name[: len(path.name) - len(suffix)], suffix


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
    >>> with atomic_path("/tmp/model.keras") as tmp:
    ...     model.save(tmp)  # doctest: +SKIP
    """
    path = check_output_path("path", path)
    if path.is_symlink():
        path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
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


@contextlib.contextmanager
def scratch_folder(path):
    """A working folder beside `path` for intermediate files of its writer, removed after.

    It sits on the target's filesystem rather than in the system temp folder, and a killed
    writer's scratch folder is removed by the next write to `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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


def save_model(model, path, *, class_names: list | None = None) -> Path:
    """`model.save` through a temporary file, so an interrupted save keeps the old file.

    Args:
        model: the model.
        path: the `.keras` file.
        class_names: names of the classes, written into the file (see the module docstring);
            default the names the model carries (`model_class_names`), if any.

    Raises:
        ValueError: `class_names` is not a list of strings, one per output.

    Example:
    >>> save_model(model, "/tmp/model.keras", class_names=["cat", "dog"])  # doctest: +SKIP
    """
    names = model_class_names(model) if class_names is None else class_names
    if names is not None:
        names = checked_class_names(names, model)
    with atomic_path(path) as tmp:
        if names is None:
            model.save(tmp)
        else:
            # Keras writes the archive; a copy of it with the names in its metadata becomes
            # the file, every other entry streamed unchanged.
            with scratch_folder(path) as scratch:
                saved = scratch / "model.keras"
                model.save(saved)
                _copy_keras_archive(saved, tmp, {CLASS_NAMES_KEY: names})
    return Path(path)


def _copy_keras_archive(source, target, metadata: dict):
    """Copies a `.keras` zip archive, with `metadata` added to its `metadata.json`."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for entry in old.infolist():
            info = zipfile.ZipInfo(entry.filename, entry.date_time)
            info.compress_type, info.external_attr = entry.compress_type, entry.external_attr
            if entry.filename == KERAS_METADATA:
                new.writestr(info, json.dumps({**json.loads(old.read(entry)), **metadata}))
                continue
            large = entry.file_size >= zipfile.ZIP64_LIMIT
            with old.open(entry) as src, new.open(info, "w", force_zip64=large) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


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


def first_line(error, after: str = "") -> str:
    """The first line of an exception's message (of its last part after `after`, when given),
    or its type's name when it has no message: one line for a one-line error."""
    text = str(error).strip()
    if after:
        text = text.rsplit(after, 1)[-1].strip()
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
        The `keras.Model`, carrying the class names inside the file (`model_class_names`).

    Raises:
        FileNotFoundError: `path` is not a file.
        ValueError: not a `.keras` zip archive, a file that needs unsafe deserialization (with
            `safe_mode=True`), a file naming callables Keras refuses to import, a file
            Keras cannot rebuild, or corrupt class names inside it.

    Example:
    >>> import keras_resvit as kr
    >>> model = kr.load_model("runs/digits/last.keras")  # doctest: +SKIP
    """
    check_keras_file("path", path)
    try:
        with deep_graph():
            model = keras.saving.load_model(
                path, safe_mode=safe_mode, custom_objects=custom_objects
            )
    except Exception as error:  # noqa: BLE001 - zip, HDF5 and config errors alike
        # Keras nests each failing object's error into its parent's: keep the innermost.
        cause = first_line(error, after="Exception encountered:")
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
    names = embedded_class_names(path, "path")
    try:
        set_class_names(model, names)
    except ValueError as error:
        raise ValueError(
            f"path={str(path)!r} holds class names that do not fit its model "
            f"({first_line(error)}); save the model again with its own names."
        ) from None
    return model


# Class names inside files and models (see the module docstring).
CLASS_NAMES_KEY = "keras_resvit.class_names"
KERAS_METADATA = "metadata.json"
_MODEL_ATTRIBUTE = "_keras_resvit_class_names"
# TF Lite's schema.fbs: the fields of the tables the metadata reader walks.
_MODEL_BUFFERS, _MODEL_METADATA = 4, 6
_METADATA_NAME, _METADATA_BUFFER = 0, 1
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 0, 1, 2
# The converter's mark of a file whose weights lie after the flatbuffer (over 2 GB).
_TFLITE_BUFFER_LOCATION = "buffer_location"


def checked_class_names(names, model=None) -> list:
    """`names` as a list, when it is a list of strings with one name per output of `model`.

    Raises:
        ValueError: not a list of strings, or another count than the model's outputs.
    """
    if isinstance(names, (str, bytes)) or name_list_problem(list(names)):
        raise ValueError(f"class_names={names!r} must be a list of strings.")
    names = list(names)
    shape = None if model is None else model.output_shape
    if isinstance(shape, tuple) and len(shape) == 2 and shape[-1] != len(names):
        raise ValueError(
            f"class_names list {len(names)} classes but the model has {shape[-1]} outputs; "
            "pass one name per output."
        )
    return names


def model_class_names(model) -> list | None:
    """The class names a model carries in memory, or None (see `set_class_names`)."""
    names = getattr(model, _MODEL_ATTRIBUTE, None)
    return None if names is None else list(names)


def set_class_names(model, class_names: list | None) -> None:
    """Attaches class names to a model in memory (None removes them): `save_model` and
    `kr.export` write them into their files.

    Raises:
        ValueError: not a list of strings, or not one name per output.

    Example:
    >>> set_class_names(model, ["cat", "dog"])  # doctest: +SKIP
    """
    names = None if class_names is None else tuple(checked_class_names(class_names, model))
    # Past Keras' and TensorFlow's attribute tracking: names are no state of theirs, and
    # must not become a tracked wrapper inside a SavedModel.
    object.__setattr__(model, _MODEL_ATTRIBUTE, names)


def embedded_class_names(path, argument: str = "model") -> list | None:
    """The class names inside a `.keras` or `.tflite` file, or None when it has none.

    Args:
        path: the file.
        argument: the caller's argument name, for messages.

    Raises:
        ValueError: the file is not a readable `.keras` / TF Lite file, or the names inside
            are not a JSON list of strings.
    """
    path = Path(path)
    if path.suffix == ".keras":
        check_keras_file(argument, path)
        with zipfile.ZipFile(path) as archive:
            if KERAS_METADATA not in archive.namelist():
                return None  # not a Keras archive: loading it says so
            metadata = _json_or_none(archive.read(KERAS_METADATA))
        # Keras never reads its metadata back: one that is no JSON object holds no names.
        text = metadata.get(CLASS_NAMES_KEY) if isinstance(metadata, dict) else None
        names = text
    elif path.suffix == ".tflite":
        text = tflite_metadata(path, argument).get(CLASS_NAMES_KEY)
        names = None if text is None else _json_or_none(text)
    else:
        return None
    if text is not None and name_list_problem(names):
        raise ValueError(
            f"the class names inside {argument}={str(path)!r} are corrupt (not a JSON list of "
            "strings); save or export the model again."
        )
    return names


def _json_or_none(text):
    try:
        return json.loads(text)
    except ValueError:
        return None


def tflite_metadata(path, argument: str = "model") -> dict:
    """`{name: bytes}` of the named metadata entries of a TF Lite file.

    A small reader of TF Lite's flatbuffer (schema.fbs) that needs neither TensorFlow nor
    LiteRT: `Model.metadata` (field 6) lists `Metadata {name, buffer}` entries, each naming
    an entry of `Model.buffers` (field 4), a `Buffer {data}` (in files over 2 GB,
    `{offset, size}` of bytes after the flatbuffer). The file is mapped, not read whole.

    Raises:
        ValueError: `path` is not a readable TF Lite file (naming `argument`).
    """
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _read_tflite_metadata(data)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{argument}={str(path)!r} is not a readable TF Lite file (truncated or corrupt): "
            f"{first_line(error)}"
        ) from None


def _read_tflite_metadata(data) -> dict:
    def read(fmt, pos):
        if not 0 <= pos <= len(data) - struct.calcsize(fmt):
            raise ValueError(f"an offset ({pos}) points outside the file")
        return struct.unpack_from(fmt, data, pos)[0]

    def field(table, index):  # where a table's field is stored, or None when absent
        vtable = table - read("<i", table)
        if read("<H", vtable) <= 4 + 2 * index:
            return None
        offset = read("<H", vtable + 4 + 2 * index)
        return table + offset if offset else None

    def target(pos):  # an offset counts from where it is stored
        return pos + read("<I", pos)

    def vector(pos):  # (where the elements of the vector referenced at `pos` start, count)
        start = target(pos)
        return start + 4, read("<I", start)

    def span(start, length):
        if start + length > len(data):
            raise ValueError("a vector or buffer runs past the end of the file")
        return bytes(data[start : start + length])

    if data[4:8] != b"TFL3":
        raise ValueError("it lacks TF Lite's file identifier TFL3")
    model = target(0)
    entries, buffers = field(model, _MODEL_METADATA), field(model, _MODEL_BUFFERS)
    if entries is None:
        return {}
    first, count = vector(entries)
    first_buffer, buffer_count = vector(buffers) if buffers else (0, 0)
    metadata = {}
    for i in range(count):
        entry = target(first + 4 * i)
        name, index = field(entry, _METADATA_NAME), field(entry, _METADATA_BUFFER)
        index = read("<I", index) if index else 0
        if name is None or index >= buffer_count:
            raise ValueError(f"metadata entry {i} has no name or names no buffer")
        buffer = target(first_buffer + 4 * index)
        data_field = field(buffer, _BUFFER_DATA)
        if data_field is not None:
            value = span(*vector(data_field))
        else:  # the bytes lie after the flatbuffer
            offset, size = field(buffer, _BUFFER_OFFSET), field(buffer, _BUFFER_SIZE)
            value = span(read("<Q", offset), read("<Q", size)) if offset and size else b""
        metadata[span(*vector(name)).decode()] = value
    return metadata


def add_tflite_class_names(path, class_names: list) -> bool:
    """Writes `class_names` into a TF Lite file as the metadata entry `CLASS_NAMES_KEY` (the
    JSON list), rewriting `path` in place: callers pass a temporary file.

    The flatbuffer is unpacked and packed again with TensorFlow's schema, as TensorFlow's
    converter adds its own metadata; like the converter, it leaves a file whose weights lie
    after the flatbuffer (over 2 GB) as it is: its names live in the side file only.

    Returns:
        Whether the names were written.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    if _TFLITE_BUFFER_LOCATION in tflite_metadata(path, "path"):
        return False
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(Path(path).read_bytes()))
    buffer = schema.BufferT()
    buffer.data = json.dumps(list(class_names)).encode()
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = CLASS_NAMES_KEY, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    Path(path).write_bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return True
