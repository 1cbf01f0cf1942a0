"""Which artifacts `export` wrote: the mark it leaves in each, and the rule that an existing
model file or SavedModel without it (a user's own conversion) is replaced only on request.

The mark: a TF Lite metadata entry and an ONNX `metadata_props` entry named `EXPORT_MARK`,
and a `SAVED_MODEL_MARK` file inside a SavedModel folder (TensorFlow's loader reads only its
own files). A TF Lite file over 2 GB, whose weights lie after the flatbuffer, takes no
metadata (see `base.class_names.add_tflite_metadata`): it is replaced only on request too.
"""

import importlib.metadata
import json
from pathlib import Path

from keras_resvit.base.class_names import CLASS_NAMES_KEY, add_tflite_metadata, tflite_metadata
from keras_resvit.base.files import write_text

EXPORT_MARK = "keras_resvit.export"
SAVED_MODEL_MARK = "keras_resvit.export.json"


def mark_value(activation=None) -> str:
    """The mark's content: the package and its version (its installed distribution's), and
    the classifier activation of the exported model (`models.common.classifier_activation`:
    TF Lite's converter fuses a relu or tanh into the last layer's operation, where `predict`
    would no longer see it)."""
    try:
        version = importlib.metadata.version("keras-resvit")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        version = None
    content = {"exported_by": "keras_resvit", "version": version}
    return json.dumps(content | {"classifier_activation": activation})


def marked_activation(metadata: dict) -> str | None:
    """The classifier activation the mark among a model file's `metadata` entries records;
    None where it records none (no mark, a mark before this field, a model of features)."""
    try:
        value = json.loads(metadata.get(EXPORT_MARK) or "null")
    except ValueError:
        return None
    activation = value.get("classifier_activation") if isinstance(value, dict) else None
    return activation if isinstance(activation, str) else None


def mark(target, format, class_names=None, activation=None) -> None:
    """Marks the artifact at `target` (a temporary file or folder) as written by `export`
    from a model of classifier `activation`; a TF Lite file takes `class_names` (a list or
    None) in the same rewrite (it unpacks and packs the whole flatbuffer)."""
    if format == "tflite":
        entries = {EXPORT_MARK: mark_value(activation).encode()}
        if class_names is not None:
            entries[CLASS_NAMES_KEY] = json.dumps(list(class_names)).encode()
        add_tflite_metadata(target, entries)
    elif format == "saved_model":
        write_text(Path(target) / SAVED_MODEL_MARK, mark_value(activation))
    # ONNX: the converter adds it to the model's metadata_props (`converters.convert_onnx`).


def exported_here(path, format) -> bool:
    """Whether the existing artifact at `path` carries `export`'s mark."""
    path = Path(path)
    if format == "saved_model":
        return (path / SAVED_MODEL_MARK).is_file()
    if format == "tflite":
        try:
            return EXPORT_MARK in tflite_metadata(path, "path")
        except ValueError:
            return False
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - onnx's decode errors: no model of ours
        return False
    return any(entry.key == EXPORT_MARK for entry in model.metadata_props)


def check_owned(path, format, overwrite: bool) -> None:
    """Refuses to replace an artifact at `path` that `export` did not write, unless
    `overwrite`; an empty file or folder, or none, holds nothing to lose."""
    path = Path(path)
    if overwrite or not path.exists():
        return
    empty = not any(path.iterdir()) if path.is_dir() else path.stat().st_size == 0
    if empty or exported_here(path, format):
        return
    kind = "SavedModel" if format == "saved_model" else f"{path.suffix} file"
    raise ValueError(
        f"path={str(path)!r} holds a {kind} that keras_resvit did not export (a model of "
        "your own, or one exported before exports were marked); export replaces it only "
        "with overwrite=True (keras-resvit export --overwrite), else choose another path."
    )
