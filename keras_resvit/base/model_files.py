"""`.keras` files: saved atomically with their class names, loaded safely.

A `.keras` file is loaded in Keras' safe mode unless the caller explicitly opts out, and very
deep graphs (ResNet-1202) build and load under a raised recursion limit (`deep_graph`).
"""

import contextlib
import json
import re
import shutil
import sys
import zipfile
from pathlib import Path

import keras

from keras_resvit.base.class_names import (
    CLASS_NAMES_KEY,
    KERAS_METADATA,
    checked_class_names,
    embedded_class_names,
    model_class_names,
    set_class_names,
)
from keras_resvit.base.files import (
    atomic_path,
    check_keras_file,
    check_output_path,
    first_line,
    scratch_folder,
)
from keras_resvit.base.validation import check_bool, check_model


@contextlib.contextmanager
def deep_graph(recursion_limit=20_000):
    """Raises Python's recursion limit while Keras maps a very deep functional graph.

    Keras walks the layer graph recursively when it builds or loads a functional model;
    ResNet-1202 has ~3,600 layers, past Python's default limit of 1,000 frames.
    """
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(max(previous, recursion_limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)


def save_model(model, path, *, class_names: list | None = None) -> Path:
    """`model.save` through a temporary file, so an interrupted save keeps the old file.

    Args:
        model: the model.
        path: the `.keras` file.
        class_names: names of the classes, written into the file (see the module docstring);
            default the names the model carries (`model_class_names`), if any.

    Raises:
        ValueError: `model` is not a `keras.Model`, `path` does not end in `.keras` or is an
            existing file that is not a `.keras` archive (it is kept), or `class_names` is not
            a list of strings, one per output.

    Example:
    >>> from keras_resvit.base.model_files import save_model, model_class_names
    >>> import keras_resvit as kr
    >>> model = kr.create_model("resnet20", num_classes=2)
    >>> save_model(model, "model.keras", class_names=["cat", "dog"])
    PosixPath('model.keras')
    >>> model_class_names(kr.load_model("model.keras"))
    ['cat', 'dog']
    """
    check_model("model", model)
    path = check_output_path("path", path)
    if path.suffix != ".keras":
        raise ValueError(
            f"path={str(path)!r} has suffix {path.suffix!r}; save_model writes a .keras file "
            "(model.save_weights writes .weights.h5, kr.export TF Lite, ONNX and SavedModels)."
        )
    if path.is_file() and not _is_keras_archive(path):
        raise ValueError(
            f"path={str(path)!r} exists and is not a .keras file (a zip archive of Keras' "
            "config.json and metadata.json); save_model replaces only a .keras file: move "
            "that file, or choose another path."
        )
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


def _is_keras_archive(path) -> bool:
    """Whether `path` is a zip archive holding what `model.save` writes first (any other zip,
    a user's, named `.keras` is not replaced)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return {"config.json", "metadata.json"} <= set(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


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


# What Keras' deserializer says when it will not import an object a config names.
_REFUSED = ("Could not locate", "Non-modeling APIs are disallowed", "not a KerasSaveable")


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
    >>> from keras_resvit.base.model_files import load_model
    >>> import keras_resvit as kr
    >>> kr.create_model("resnet20").save("resnet20.keras")
    >>> load_model("resnet20.keras").count_params()  # or a run's: "runs/digits/last.keras"
    271098
    """
    path = check_keras_file("path", path)
    check_bool("safe_mode", safe_mode)
    if custom_objects is not None and not isinstance(custom_objects, dict):
        raise ValueError(
            f"custom_objects={custom_objects!r} is not valid; valid: a dict "
            "{name: function or class} of the objects the file names, or None."
        )
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
