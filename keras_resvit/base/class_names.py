"""Class names, carried inside model files and beside them.

Class names travel inside the files as well as in a `<name>.classes.json` side file, as a JSON
list under one name, `CLASS_NAMES_KEY`:
- a `.keras` file: a key of its `metadata.json`, which Keras writes and never reads back (an
  extra zip entry would make Keras extract the whole archive on every load). Keras' own
  `model.save` does not write it; `model_files.save_model` does.
- a TF Lite file: a named entry of the flatbuffer's `metadata` list whose buffer holds the
  JSON, as TensorFlow's converter stores its own `CONVERSION_METADATA`.
- an ONNX file: an entry of the model's `metadata_props`.
- a model in memory: `load_model` attaches its file's names (`model_class_names`), and
  `save_model` and `kr.export` write a model's names into their files. A model built from
  another (`kr.replace_head`, `keras.models.clone_model`) starts without; `kr.resize_vit`
  keeps them.

The side file (`model.keras` -> `model.classes.json`, written by `export` and `train`) is plain
JSON, readable and editable by hand, and read first; the names inside the file are used where
there is none (a file saved or exported from a model in memory, copied alone).
"""

import json
import mmap
import os
import reprlib
import struct
import zipfile
from pathlib import Path

from keras_resvit.base.files import (
    as_path,
    atomic_path,
    check_keras_file,
    first_line,
    name_list_problem,
    read_json,
)
from keras_resvit.base.validation import check_model

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

CLASS_NAMES_SUFFIX = ".classes.json"


def checked_class_names(names, model=None, classes=None) -> list:
    """`names` as a list of str, when it is a sequence of strings (a list, a tuple or a 1-D
    NumPy array) with one name per class: `classes`, or else each of the outputs of `model`
    where it gives (batch, classes).

    Raises:
        ValueError: not a non-empty sequence of strings, or another count than the classes.
    """
    sequence = isinstance(names, (list, tuple)) or getattr(names, "ndim", None) == 1
    listed = [str(name) if isinstance(name, str) else name for name in names] if sequence else []
    if not listed or name_list_problem(listed):
        raise ValueError(
            f"class_names={reprlib.repr(names)} must be a list of strings, one name per class "
            "(e.g. ['cat', 'dog'])."
        )
    shape = None if model is None else model.output_shape
    if classes is None and isinstance(shape, tuple) and len(shape) == 2:
        classes = shape[-1]
    if classes is not None and classes != len(listed):
        raise ValueError(
            f"class_names list {len(listed)} classes but the model has {classes} outputs; "
            "pass one name per output."
        )
    return listed


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
    >>> from keras_resvit.base.class_names import set_class_names, model_class_names
    >>> import keras_resvit as kr
    >>> model = kr.create_model("resnet20", num_classes=2)
    >>> set_class_names(model, ["cat", "dog"])
    >>> model_class_names(model)
    ['cat', 'dog']
    """
    check_model("model", model)
    names = None if class_names is None else tuple(checked_class_names(class_names, model))
    # Past Keras' and TensorFlow's attribute tracking: names are no state of theirs, and
    # must not become a tracked wrapper inside a SavedModel.
    object.__setattr__(model, _MODEL_ATTRIBUTE, names)


def embedded_class_names(path, argument: str = "model") -> list | None:
    """The class names inside a `.keras`, `.tflite` or `.onnx` file, or None when it has none.

    Args:
        path: the file.
        argument: the caller's argument name, for messages.

    Raises:
        ValueError: the file is not a readable `.keras` / TF Lite / ONNX file, or the names inside
            are not a JSON list of strings.
    """
    path = as_path(argument, path)
    if path.suffix.lower() == ".keras":
        check_keras_file(argument, path)
        with zipfile.ZipFile(path) as archive:
            if KERAS_METADATA not in archive.namelist():
                return None  # not a Keras archive: loading it says so
            metadata = _json_or_none(archive.read(KERAS_METADATA))
        # Keras never reads its metadata back: one that is no JSON object holds no names.
        text = metadata.get(CLASS_NAMES_KEY) if isinstance(metadata, dict) else None
        names = text
    elif path.suffix.lower() == ".tflite":  # as export writes them: ".TFLITE" too
        text = tflite_metadata(path, argument).get(CLASS_NAMES_KEY)
        names = None if text is None else _json_or_none(text)
    elif path.suffix.lower() == ".onnx":
        text = _onnx_metadata(path, argument).get(CLASS_NAMES_KEY)
        names = None if text is None else _json_or_none(text)
    else:
        return None
    if text is not None and name_list_problem(names):
        raise ValueError(
            f"the class names inside {argument}={str(path)!r} are corrupt (not a JSON list of "
            "strings); save or export the model again."
        )
    return names


def _onnx_metadata(path, argument):
    """`{key: value}` of an ONNX file's `metadata_props` (onnxruntime reads them)."""
    from keras_resvit.base.onnx_runtime import onnx_session

    try:
        session = onnx_session(path)
    except ImportError:
        raise
    except Exception as error:  # onnxruntime's own errors: not an ONNX model it can load
        raise ValueError(
            f"{argument}={str(path)!r} is not a readable ONNX file ({first_line(error)[:200]}); "
            "export the model again."
        ) from None
    return dict(session.get_modelmeta().custom_metadata_map)


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


def add_tflite_metadata(path, entries: dict) -> bool:
    """Adds the named metadata `entries` ({name: bytes}) to a TF Lite file, rewriting `path`
    in place: callers pass a temporary file.

    The flatbuffer is unpacked and packed again with TensorFlow's schema, as TensorFlow's
    converter adds its own metadata; like the converter, it leaves a file whose weights lie
    after the flatbuffer (over 2 GB) as it is.

    Returns:
        Whether the entries were written.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    if _TFLITE_BUFFER_LOCATION in tflite_metadata(path, "path"):
        return False
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(Path(path).read_bytes()))
    added = []
    for name, data in entries.items():
        buffer = schema.BufferT()
        buffer.data = data
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = name, len(model.buffers) - 1
        added.append(entry)
    model.metadata = [*(model.metadata or []), *added]
    Path(path).write_bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return True


def _model_path(model_path) -> Path:
    """`model_path` as a Path ("~" expanded), or ValueError unless it names a file."""
    path = as_path("model_path", model_path)
    if not path.name:
        raise ValueError(f"model_path={str(model_path)!r} names no file; pass a model file.")
    return path


# The model files whose suffix the side file's name drops; a SavedModel folder keeps its whole
# name, dots included ("resnet.v1" and "resnet.v2" are two models).
_MODEL_FILE_SUFFIXES = (".keras", ".tflite", ".onnx")


def class_names_path(model_path) -> Path:
    """Where the class names of `model_path` live: `model.keras` -> `model.classes.json`, a
    SavedModel folder `resnet.v1` -> `resnet.v1.classes.json`."""
    path = _model_path(model_path)
    name = path.stem if path.suffix.lower() in _MODEL_FILE_SUFFIXES else path.name
    return path.with_name(name + CLASS_NAMES_SUFFIX)


def write_class_names(model_path, class_names) -> Path:
    """Writes `class_names` (a list of strings) beside the model file (or SavedModel folder)
    `model_path`, as `<name>.classes.json`; returns the JSON path. A file already there is
    replaced only when it holds a list of class names, as this function writes.

    Raises:
        FileNotFoundError: nothing at `model_path`.
        ValueError: `class_names` is not a list of strings, or the file beside the model is
            not a list of class names (it is left as it is).
    """
    names = checked_class_names(class_names)
    path = _model_path(model_path)
    if not path.exists():
        raise FileNotFoundError(
            f"model_path={str(path)!r} does not exist; class names are written beside a "
            "model file: save the model first."
        )
    target = class_names_path(path)
    if target.is_symlink() or target.exists():
        try:
            problem = name_list_problem(json.loads(target.read_text()))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            problem = f"not JSON: {first_line(error)}"
        if problem is not None:
            raise ValueError(
                f"{str(target)!r} is not replaced: it is not a list of class names ({problem}). "
                "Move that file away, or save the model under another name."
            )
    with atomic_path(target) as tmp:
        Path(tmp).write_text(json.dumps(names, indent=1))
    return target


def read_class_names(model_path) -> list | None:
    """The class names of a model file: its side file `<name>.classes.json` when there is
    one, else the names inside the `.keras` / `.tflite` file itself, else None.

    Raises:
        FileNotFoundError: no model file (nor folder) at `model_path`.
        ValueError: the side file is unreadable, not JSON, or not a list of strings (naming
            it), or the model file or the names inside it are corrupt.
    """
    path = as_path("model_path", model_path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model_path={str(path)!r} does not exist; pass a model file.")
    names = side_file_class_names(path)
    return embedded_class_names(path) if names is None else names


def side_file_class_names(model_path) -> list | None:
    """The class names in the side file beside `model_path`, or None when there is none.

    Raises:
        ValueError: the file is unreadable, not JSON, or not a list of strings (naming it).
    """
    path = class_names_path(model_path)
    if not os.path.exists(path):  # False, not an error, for a name over the filesystem's limit
        return None
    return read_json(
        path,
        name_list_problem,
        "class names",
        "it must hold a JSON list of class names (strings): fix it or delete it.",
    )


def check_class_names(names, outputs: int, model_path=None) -> list | None:
    """`names` unless their count differs from the model's `outputs` (a side file left from
    another model would label every prediction wrongly): then one ValueError naming the side
    file of `model_path` (or the file itself, when the names are inside it), or the
    `class_names` argument when there is no path."""
    if names is None or len(names) == outputs:
        return names
    side_file = None if model_path is None else class_names_path(model_path)
    if model_path is None:
        what, remedy = "class_names", "pass one name per output"
    elif side_file.exists():
        what = f"class names {str(side_file)!r}"
        remedy = "it belongs to another model: fix or delete it"
    else:
        what = f"the class names inside {str(model_path)!r}"
        remedy = "save or export the model again with its own names"
    raise ValueError(
        f"{what} list {len(names)} classes but the model has {outputs} outputs; {remedy}."
    )
