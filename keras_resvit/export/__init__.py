"""Export to TF Lite, SavedModel and ONNX, checked against the Keras model's outputs.

Keras' own `model.export` converts to SavedModel and TF Lite; ONNX goes through tf2onnx from the
SavedModel's frozen serving function (Keras' `format="onnx"` keeps the Normalization layers'
constants as extra graph inputs). Conversion needs the TensorFlow backend, so under another
backend the model goes through a `.keras` file into a TensorFlow-backend subprocess and the
user never switches backends by hand. The check runs in the calling process against the
user's own model, so a JAX-trained model is compared with its JAX outputs. Class names go
into TF Lite and ONNX files themselves (see `keras_resvit.base.class_names`) and into the side file
beside every artifact.

`keras_resvit.export.converters` holds the TensorFlow-backend converters (TF Lite with its
quantizations, ONNX), `keras_resvit.export.check` the calibration images and the check against
Keras; `python -m keras_resvit.export` is the conversion subprocess (`__main__.py`).
"""

import contextlib
import difflib
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import keras
import numpy as np

from keras_resvit.base.backend import backend
from keras_resvit.base.class_names import (
    CLASS_NAMES_SUFFIX,
    check_class_names,
    checked_class_names,
    class_names_path,
    model_class_names,
    read_class_names,
    side_file_class_names,
    write_class_names,
)
from keras_resvit.base.files import (
    as_path,
    atomic_path,
    check_output_path,
    make_folders,
    scratch_folder,
)
from keras_resvit.base.model_files import check_keras_file
from keras_resvit.base.output_folders import atomic_folder, check_replaceable_folder
from keras_resvit.base.validation import check_bool, check_choice
from keras_resvit.export.check import (
    TOLERANCES,
    check_artifact,
    input_size,
    representative_images,
)
from keras_resvit.export.converters import (
    VIT_INT8_FLOAT_OPS,
    convert_onnx,
    int8_with_float_ops,
    tflite_options,
)
from keras_resvit.export.ownership import SAVED_MODEL_MARK, check_owned, mark
from keras_resvit.files import load_model
from keras_resvit.models.common import (
    check_pixel_means,
    classifier_activation,
    is_vit,
    leaf_layers,
    low_precision,
)

__all__ = [
    "FORMATS",
    "QUANTIZATIONS",
    "TOLERANCES",
    "VIT_INT8_FLOAT_OPS",
    "export",
    "export_summary",
    "float32_model",
    "format_from_path",
    "low_precision",
    "representative_images",
]

FORMATS = ("tflite", "saved_model", "onnx")
QUANTIZATIONS = (None, "float16", "dynamic", "int8")
SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx"}
# What a SavedModel folder holds (Keras' `model.export` writes the first four): an export
# replaces a folder only when it holds nothing else, so a user's files are never deleted.
SAVED_MODEL_ENTRIES = ("saved_model.pb", "variables", "assets", "fingerprint.pb")
SAVED_MODEL_OPTIONAL = ("saved_model.pbtxt", "keras_metadata.pb", SAVED_MODEL_MARK)
# `check_replaceable_folder` / `atomic_folder` arguments: kind, allowed names, required names
# (TensorFlow writes both into every SavedModel; a user's lone saved_model.pb is no export),
# and the files its sub-folders may hold (an image model's export has no assets: a user's
# vocabulary there is not an export's).
SAVED_MODEL = (
    "SavedModel",
    SAVED_MODEL_ENTRIES + SAVED_MODEL_OPTIONAL,
    ("saved_model.pb", "variables"),
    {"variables": ("variables.index", "variables.data-*"), "assets": ()},
)
# Files a SavedModel path must not look like: the user meant a file format.
FILE_SUFFIXES = (
    ".tflite", ".onnx", ".keras", ".h5", ".pb", ".json", ".txt", ".csv", ".zip", ".tar",
    ".gz", ".npz", ".npy", ".pt", ".pth", ".bin", ".safetensors", ".png", ".jpg", ".jpeg",
)  # fmt: skip


def _check_name(path):
    """Refuses a path whose name is only a suffix (".tflite"): Python reads it as a name
    without suffix, so it would become a SavedModel folder so named."""
    if path.name.lower() in (*SUFFIXES.values(), *FILE_SUFFIXES):
        raise ValueError(
            f"path={str(path)!r} has no name before its suffix {path.name!r}; valid: a named "
            "file (e.g. 'model.tflite', 'model.onnx'), or a folder for a SavedModel."
        )


def _validate(format, quantization, representative_data, path, overwrite):
    check_choice("format", format, FORMATS)
    check_choice("quantization", quantization, QUANTIZATIONS)
    if quantization is not None and format != "tflite":
        raise ValueError(
            f"quantization={quantization!r} needs format='tflite'; {format} exports float32."
        )
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            'quantization="int8" needs representative_data (e.g. "digits", an image folder, '
            "(images, labels) arrays or a tf.data dataset) to calibrate activation ranges."
        )
    suffix = SUFFIXES.get(format)
    if suffix and path.suffix.lower() != suffix:
        raise ValueError(f"path={str(path)!r} must end with {suffix!r} for format={format!r}.")
    if format == "saved_model":
        if path.suffix.lower() in FILE_SUFFIXES:
            raise ValueError(
                f"path={str(path)!r} names a {path.suffix} file, but format='saved_model' "
                "writes a folder; pass a folder path, or the format of that file."
            )
        check_replaceable_folder("path", path, *SAVED_MODEL)
    else:
        check_output_path("path", path)
        _check_replaceable_file(path, format)
    check_owned(path, format, overwrite)
    if format == "onnx":
        missing = [m for m in ("tf2onnx", "onnx") if importlib.util.find_spec(m) is None]
        if missing:
            raise ImportError(
                f"format='onnx' needs {missing}; install with `pip install keras-resvit[onnx]`."
            )


# The first bytes of what `export` writes: a TF Lite flatbuffer names its schema at bytes 4-8;
# an ONNX model (a protobuf) opens with its field 1, `ir_version`, a varint (tag 0x08).
_MAGIC = {"tflite": (4, b"TFL3"), "onnx": (0, b"\x08")}


def _check_replaceable_file(path, format):
    """ValueError when `path` holds a non-empty file that is not of `format`, or links to a
    file without `format`'s suffix: a file `export` did not write, which it does not replace."""
    target = path.resolve() if path.is_symlink() else path
    if target.suffix.lower() != SUFFIXES[format]:
        raise ValueError(
            f"path={str(path)!r} is a link to {str(target)!r}, not a {SUFFIXES[format]} file; "
            "export does not write through it: remove the link, or choose another path."
        )
    if not path.is_file() or path.stat().st_size == 0:
        return
    offset, magic = _MAGIC[format]
    with open(path, "rb") as f:
        head = f.read(offset + len(magic))
    if head[offset:] != magic:
        raise ValueError(
            f"path={str(path)!r} exists and is not a {SUFFIXES[format]} file; export replaces "
            "only a file of the format it writes: move that file, or choose another path."
        )


def format_from_path(path) -> str:
    """The export format a path names: ".tflite", ".onnx", or a folder (SavedModel).

    Raises:
        ValueError: another file's suffix (".keras", ...), a near miss of a valid one
            (".tflit"), or a name that is only a suffix (".tflite").
    """
    _check_name(Path(path))
    suffix = Path(path).suffix.lower()
    formats = {value: key for key, value in SUFFIXES.items()}
    if suffix in formats:
        return formats[suffix]
    near = difflib.get_close_matches(suffix, formats, n=1, cutoff=0.8)
    if near:  # a misspelt file suffix, not a folder name with a dot in it
        raise ValueError(
            f"path={str(path)!r} ends with {suffix!r}; did you mean {near[0]!r}? Valid: a "
            ".tflite or .onnx file, or a folder for a SavedModel."
        )
    if suffix in FILE_SUFFIXES:
        raise ValueError(
            f"path={str(path)!r}: cannot export to a {suffix} file; valid: a .tflite or .onnx "
            "file, or a folder for a SavedModel."
        )
    return "saved_model"


def _load(model_or_path):
    if isinstance(model_or_path, keras.Model):
        return model_or_path
    if not isinstance(model_or_path, (str, os.PathLike)):
        raise ValueError(
            f"model_or_path of type {type(model_or_path).__name__} is not valid; pass a "
            "keras.Model or the path of a .keras file."
        )
    return load_model(check_keras_file("model_or_path", model_or_path))


def _check_keras_quantization(model, format):
    """Refuses a model quantized by `model.quantize` where the converter cannot read its
    layers: any mode for TF Lite (whose converter rejects Keras' int8 matmuls, or float8
    types), float8 for ONNX. A SavedModel takes them all."""
    modes = {getattr(x.dtype_policy, "quantization_mode", None) for x in leaf_layers(model)}
    modes = sorted(m for m in modes if m is not None and (format == "tflite" or m == "float8"))
    if not modes or format == "saved_model":
        return
    advice = "export the float model (before model.quantize)"
    if format == "tflite":
        advice += ' with quantization="int8", "dynamic" or "float16": TF Lite quantizes it'
    raise ValueError(
        f"model {model.name!r} is quantized by model.quantize ({', '.join(modes)}), which "
        f"format={format!r} cannot convert; {advice}."
    )


def _float32_policies(config):
    """`config` (a model's, nested) with every low-precision `DTypePolicy` made float32."""
    if isinstance(config, list):
        return [_float32_policies(item) for item in config]
    if not isinstance(config, dict):
        return config
    if config.get("class_name") == "DTypePolicy" and config.get("module") == "keras":
        return {**config, "config": {**config["config"], "name": "float32"}}
    return {key: _float32_policies(value) for key, value in config.items()}


def float32_model(model):
    """`model` where every layer computes in float32; else (`low_precision`) a copy of it
    that does, with its weights (a mixed policy keeps them in float32 already). TF Lite
    cannot run bfloat16 without its Flex delegate and ONNX has no bfloat16 tensors, so a
    model trained in mixed precision exports as the float32 model of its weights."""
    if low_precision(model) is None:
        return model
    copy = type(model).from_config(_float32_policies(model.get_config()))
    copy.set_weights(model.get_weights())
    return copy


def _convert(model, target, format, quantization, calibration, scratch, class_names):
    """Writes the artifact of `float32_model(model)` to `target` (TensorFlow backend only),
    with `class_names` (a list or None) inside a TF Lite or ONNX file; intermediate files go
    to the folder `scratch`."""
    model = float32_model(model)
    if format == "tflite" and quantization == "int8" and is_vit(model):
        tflite = int8_with_float_ops(model, calibration, VIT_INT8_FLOAT_OPS, scratch)
        Path(target).write_bytes(tflite)
    elif format == "tflite":
        options = tflite_options(quantization, calibration)
        # Keras' exporter takes only a lower-case ".tflite" (the user's may be ".TFLITE").
        written = Path(scratch) / "model.tflite"
        model.export(str(written), format="litert", verbose=False, **options)
        Path(target).write_bytes(written.read_bytes())  # keeps the target's mode
    elif format == "saved_model":
        model.export(str(target), format="tf_saved_model", verbose=False)
    else:
        convert_onnx(model, target, scratch, class_names)
    # A TF Lite file's class names go in with the mark.
    mark(target, format, class_names, classifier_activation(model))


def _check_side_file(path, class_names):
    """The class names already beside `path` must be this export's: `<name>.classes.json`
    is shared by every artifact called `<name>`, so another model's names there (or stale
    ones, where this model has none) would label this artifact's predictions wrongly."""
    if class_names is not None:  # it can be written (before the work of exporting)
        check_output_path("path", class_names_path(path))
    existing = side_file_class_names(path)
    if existing is None or existing == class_names:
        return
    ours = "none" if class_names is None else class_names[:5]
    side = class_names_path(path)
    owner = side.name.removesuffix(CLASS_NAMES_SUFFIX) + ".keras"
    raise ValueError(
        f"{str(side)!r} lists the classes {existing[:5]} but the exported model has {ours}; "
        f"it belongs to another model (e.g. {owner}): export to a path of another name "
        "(the class names go beside it), or delete that file if it is stale."
    )


@contextlib.contextmanager
def _staged(path, format):
    """A temporary sibling of `path` that replaces it only when the block succeeds; a
    SavedModel folder replaces only an earlier SavedModel, in one atomic swap."""
    if format != "saved_model":
        with atomic_path(path) as tmp:
            yield Path(tmp)
        return
    with atomic_folder("path", path, *SAVED_MODEL) as tmp:
        yield tmp


def export(
    model_or_path,
    path,
    *,
    format: str | None = None,
    quantization: str | None = None,
    representative_data=None,
    check: bool = True,
    class_names: list | None = None,
    overwrite: bool = False,
    verbose: bool = False,
) -> dict:
    """Exports a model (or a `.keras` file) and checks the artifact against Keras.

    Args:
        model_or_path: a `keras.Model` or the path of a `.keras` file (loaded in safe mode).
            A model quantized by `model.quantize` exports as a SavedModel (int8 and int4 also
            to ONNX); for TF Lite, export the float model with `quantization`.
        path: output file (`.tflite`, `.onnx`) or folder (SavedModel). An artifact this
            package exported there is replaced (a folder in one atomic swap); one it did not
            (no mark of `export` inside, see `keras_resvit.export.ownership`) only with
            `overwrite`; a file of another kind, or a folder holding anything but a
            SavedModel, never. A link to a file is written through, its class names beside
            the file it points to.
        format: "tflite", "saved_model" or "onnx" (needs the `onnx` extra); default (None):
            the one `path` names (`format_from_path`: ".tflite", ".onnx", else a SavedModel
            folder), as the command line's `keras-resvit export`.
        quantization: TF Lite only: None (float32), "float16" (float16 weights), "dynamic"
            (int8 weights, float activations) or "int8" (int8 weights and activations with
            float32 input and output; needs `representative_data`). A ViT's int8 export keeps
            its attention core in float32 (the TF Lite ops `VIT_INT8_FLOAT_OPS`: the
            query-key and attention-value matmuls and the softmax); its convolutions, Dense
            layers, LayerNorms and GELUs run in int8.
        representative_data: calibration images: any `kr.data` source ("digits", a folder,
            `(images, labels)`), a `tf.data.Dataset` or an image array. The check also runs
            on them (all of them, up to 128) when given.
        check: run the artifact (TF Lite interpreter, `tf.saved_model.load`, onnxruntime when
            installed) and compare with Keras: max abs difference of outputs < 1e-4 for
            float32, < 1e-2 for float16 (times the largest |output| where it is above 1:
            logits, features); top-1 agreement >= 95% for "dynamic" and "int8". Outputs
            that are the same constant for every image (a zero-initialized classifier) check
            nothing: the result says `"checked": False` with the reason, and a warning.
        class_names: names of the classes, written into a TF Lite or ONNX file (metadata
            `"keras_resvit.class_names"`, see `keras_resvit.base.class_names`) and beside the
            artifact (`<name>.classes.json`); default those of the source `.keras` file (its side
            file, else the names inside it), or those a model in memory carries
            (`kr.load_model` attaches a file's names).
        overwrite: replace a model file or SavedModel at `path` that this package did not
            export.
        verbose: print `export_summary(result)`, one line.

    Returns:
        `{"path", "format", "quantization", "class_names", "checked", ...figures}`, and
        `"model_precision"` (e.g. "mixed_bfloat16") for a model whose layers compute in
        less than float32: TF Lite and ONNX cannot run bfloat16 (TF Lite without its Flex
        delegate), so every format exports the float32 computation of its weights (float32
        under a mixed policy already), checked against that; the model itself, in its own
        precision, differs from it by its rounding (about 1e-2 for bfloat16).

    Raises:
        ValueError: an invalid argument or an unreadable `.keras` file.
        RuntimeError: the artifact fails its check (with the figures) or conversion failed.
        In every failing case nothing is left at `path` (an older file or SavedModel there is
        kept), and no temporary file is left beside it.

    Example:
    >>> import keras_resvit as kr
    >>> result = kr.export(kr.create_model("resnet20"), "resnet20.tflite")
    >>> result["format"], result["checked"]
    ('tflite', True)
    >>> import os
    >>> os.path.getsize("resnet20.tflite") > 1_000_000  # 0.27 M float32 parameters
    True
    """
    folder_named = isinstance(path, str) and path.endswith(("/", os.sep))
    path = as_path("path", path)
    if format is None:
        format = format_from_path(path)  # which refuses a name that is only a suffix
    else:
        _check_name(path)
    if folder_named and format != "saved_model":
        raise ValueError(
            f"path={str(path) + '/'!r} ends with a slash, which names a folder, but "
            f"format={format!r} writes a file; drop the slash, or export a SavedModel."
        )
    check_bool("overwrite", overwrite)
    _validate(format, quantization, representative_data, path, overwrite)
    if format != "saved_model" and path.is_symlink():
        # Written through (as `open()` would): its class names go beside the file itself,
        # whose predictions read them there.
        path = path.resolve()
    check_bool("check", check)
    if representative_data is not None and quantization != "int8" and not check:
        raise ValueError(
            "representative_data is read by int8 calibration and by the check; with "
            f"quantization={quantization!r} and check=False nothing would read it: drop it, "
            'or pass quantization="int8" or check=True.'
        )
    check_bool("verbose", verbose)
    if class_names is not None:
        class_names = checked_class_names(class_names)
    model = _load(model_or_path)
    check_pixel_means(model)
    input_size(model)  # a fixed input size, checked before any conversion work
    _check_keras_quantization(model, format)
    calibration = None
    if representative_data is not None:
        calibration = representative_images(representative_data, model)
    side_file = None
    if class_names is None and isinstance(model_or_path, keras.Model):
        class_names = model_class_names(model)
    elif class_names is None:
        side_file = model_or_path
        class_names = read_class_names(model_or_path)
    check_class_names(class_names, model.output_shape[-1], side_file)
    _check_side_file(path, class_names)
    make_folders("path", path.parent)
    # Intermediate files go beside the target, not into the system temp folder: the next
    # export to `path` removes what a killed one left.
    precision = low_precision(model)
    exported = float32_model(model)  # what the artifact computes, and the check's reference
    with _staged(path, format) as tmp, scratch_folder(path) as scratch:
        job = (tmp, format, quantization, calibration, scratch, class_names)
        if backend() == "tensorflow":
            _convert(exported, *job)
        else:
            source = model_or_path if exported is model else exported
            _convert_in_subprocess(source, *job)
        figures = {"checked": False}
        if check:
            figures = check_artifact(exported, tmp, format, quantization, calibration)
    if class_names is not None:
        write_class_names(path, class_names)
    result = {
        "path": str(path),
        "format": format,
        "quantization": quantization,
        "class_names": class_names,
        **figures,
    }
    if precision is not None:
        result["model_precision"] = precision
    if verbose:
        print(export_summary(result))
    return result


def export_summary(result: dict) -> str:
    """One line for people about what `export` returned.

    Example:
    >>> from keras_resvit.export import export_summary
    >>> export_summary({"path": "m.tflite", "format": "tflite", "quantization": None,
    ...                 "class_names": None, "checked": False})
    'exported m.tflite (tflite, float32): not checked'
    """
    kind = f"{result['format']}, {result['quantization'] or 'float32'}"
    if result.get("model_precision"):
        kind += f" from a {result['model_precision']} model"
    if result.get("class_names"):
        kind += f", {len(result['class_names'])} class names"
    if not result["checked"]:
        reason = f" ({result['reason']})" if result.get("reason") else ""
        return f"exported {result['path']} ({kind}): not checked{reason}"
    return (
        f"exported {result['path']} ({kind}): checked on {result['samples']} images, max abs "
        f"difference {result['max_abs_difference']:.1e}, top-1 agreement "
        f"{result['top1_agreement']:.1%}"
    )


def _convert_in_subprocess(
    model_or_path, target, format, quantization, calibration, scratch, class_names
):
    """Converts in a TensorFlow-backend child process, which exits when this one dies."""
    source = model_or_path
    if isinstance(model_or_path, keras.Model):
        source = Path(scratch) / "model.keras"
        model_or_path.save(source)
    images = None
    if calibration is not None:
        images = str(Path(scratch) / "calibration.npy")
        np.save(images, calibration, allow_pickle=False)
    job = [
        str(source),
        str(target),
        format,
        quantization,
        images,
        str(scratch),
        class_names,
        os.getpid(),
    ]
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    command = [sys.executable, "-m", "keras_resvit.export", json.dumps(job)]
    # On an exception here (Ctrl-C included) `run` kills the child before re-raising.
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["(no output)"]
        raise RuntimeError(f"TensorFlow-backend conversion failed: {lines[-1]}")


def _exit_with_parent(parent: int, interval: float = 0.5):
    """Ends this process once `parent` has died (it is re-parented): a conversion whose
    caller was killed must not go on writing."""

    def watch():
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
