"""Export to TF Lite, SavedModel and ONNX, checked against the Keras model's outputs.

Keras' own `model.export` converts to SavedModel and TF Lite; ONNX goes through tf2onnx from the
SavedModel's frozen serving function (Keras' `format="onnx"` keeps the Normalization layers'
constants as extra graph inputs). Conversion needs the TensorFlow backend, so under another
backend the model goes through a `.keras` file into a TensorFlow-backend subprocess and the
user never switches backends by hand. The check runs in the calling process against the
user's own model, so a JAX-trained model is compared with its JAX outputs. Class names go
into TF Lite and ONNX files themselves (see `keras_resvit.base.class_names`) and into the side file
beside every artifact.
"""

import contextlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import keras
import numpy as np

from keras_resvit.artifacts import RUNNERS, without_tf_lite_notice
from keras_resvit.base.backend import backend, patch_tf2onnx
from keras_resvit.base.class_names import (
    CLASS_NAMES_KEY,
    add_tflite_class_names,
    check_class_names,
    checked_class_names,
    class_names_path,
    model_class_names,
    read_class_names,
    side_file_class_names,
    write_class_names,
)
from keras_resvit.base.files import atomic_path, check_output_path, scratch_folder
from keras_resvit.base.lazy import tf
from keras_resvit.base.model_files import check_keras_file, load_model
from keras_resvit.base.output_folders import atomic_folder, check_replaceable_folder
from keras_resvit.data.checks import check_pixels
from keras_resvit.data.image_files import load_images
from keras_resvit.models.common import is_vit

FORMATS = ("tflite", "saved_model", "onnx")
QUANTIZATIONS = (None, "float16", "dynamic", "int8")
SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx"}
# What a SavedModel folder holds (Keras' `model.export` writes the first four): an export
# replaces a folder only when it holds nothing else, so a user's files are never deleted.
SAVED_MODEL_ENTRIES = ("saved_model.pb", "variables", "assets", "fingerprint.pb")
SAVED_MODEL_OPTIONAL = ("saved_model.pbtxt", "keras_metadata.pb")
# `check_replaceable_folder` / `atomic_folder` arguments: kind, allowed names, required names.
SAVED_MODEL = ("SavedModel", SAVED_MODEL_ENTRIES + SAVED_MODEL_OPTIONAL, ("saved_model.pb",))
# Files a SavedModel path must not look like: the user meant a file format.
FILE_SUFFIXES = (".tflite", ".onnx", ".keras", ".h5", ".pb", ".json")
# Check criteria: max abs difference of outputs (probabilities) for float artifacts, top-1
# agreement for integer weights, whose probabilities move by more than round-off.
TOLERANCES = {None: 1e-4, "float16": 1e-2}
MIN_TOP1_AGREEMENT = 0.95
CALIBRATION_SAMPLES = 128
# A ViT's full-integer export keeps its attention core in float32: the two matmuls between
# activations (queries x keys, attention x values) and the softmax between them; convolutions,
# Dense layers, LayerNorms, GELUs and residual adds stay int8. One int8 scale per tensor resolves
# attention logits and weights coarsely, and TF Lite's default CPU delegate (XNNPACK, TF 2.21)
# miscomputes int8 BATCH_MATMUL between two activations (relative error 0.4-0.7; the reference
# kernel 0.02). Small ViTs trained on digits: top-1 agreement 90-98% all-int8, 98% with this.
VIT_INT8_FLOAT_OPS = ("BATCH_MATMUL", "SOFTMAX")
# Random images for a check without representative data. With representative data the check
# runs on all of it: on 32 images a 95% criterion passes one miss and fails two, so a model
# whose true agreement is 97% would fail one check in four.
CHECK_SAMPLES = 32
ONNX_OPSET = 17
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def _validate(format, quantization, representative_data, path):
    if format not in FORMATS:
        raise ValueError(f"format={format!r} is not supported; valid: {list(FORMATS)}.")
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"quantization={quantization!r} is not supported; valid: {list(QUANTIZATIONS)}."
        )
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
    if suffix and path.suffix != suffix:
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
    if format == "onnx":
        missing = [m for m in ("tf2onnx", "onnx") if importlib.util.find_spec(m) is None]
        if missing:
            raise ImportError(
                f"format='onnx' needs {missing}; install with `pip install keras-resvit[onnx]`."
            )


def format_from_path(path) -> str:
    """The export format a path names: ".tflite", ".onnx", or a folder (SavedModel).

    Raises:
        ValueError: any other suffix.
    """
    suffix = Path(path).suffix.lower()
    formats = {value: key for key, value in SUFFIXES.items()}
    if suffix in formats:
        return formats[suffix]
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


def _input_size(model):
    if isinstance(model.output_shape, list) or len(model.inputs) != 1:
        raise ValueError(
            f"model {model.name!r} has {len(model.inputs)} input(s) and "
            f"{len(model.outputs)} output(s); export takes a model with one image input and "
            "one output."
        )
    shape = tuple(model.input_shape[1:])
    if any(d is None for d in shape):
        raise ValueError(f"model input_shape={shape} must be fixed to export; rebuild with sizes.")
    return shape


def representative_images(data, model, count: int = CALIBRATION_SAMPLES) -> np.ndarray:
    """Up to `count` float32 images at the model's input size from any data source.

    Args:
        data: a folder of image files (searched recursively), a `kr.data.load_dataset`
            source ("digits", `(images, labels)` arrays; its "test" split, not augmented), a
            `tf.data.Dataset` of images or `(images, labels)` (batched or not), or an array
            of images.
        model: the model whose input size the images are resized to.
        count: how many images to take.

    Returns:
        An array `(n, height, width, channels)` of raw 0-255 pixels.
    """
    from keras_resvit import data as kr_data

    height, width, channels = _input_size(model)
    if isinstance(data, (str, Path)) and Path(data).is_file():
        raise ValueError(
            f"representative_data={str(data)!r} is a file; pass a folder of images, 'digits', "
            "(images, labels) arrays, an image array or a tf.data.Dataset."
        )
    if isinstance(data, np.ndarray):
        images = data
    elif isinstance(data, (str, Path)) and Path(data).is_dir():
        files = sorted(p for p in Path(data).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"representative_data={str(data)!r} holds no image files.")
        # Evenly spaced files, so that every class folder contributes.
        picks = np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int)
        images = load_images([files[i] for i in sorted(set(picks))], (height, width))
    else:
        if not isinstance(data, tf.data.Dataset):
            data = kr_data.load_dataset(data, "test", image_size=height, batch_size=32)
        batches, total = [], 0
        for element in data:
            batch = np.asarray(element[0] if isinstance(element, (tuple, list)) else element)
            batch = batch[None] if batch.ndim == 3 else batch
            batches.append(batch)
            total += len(batch)
            if total >= count:
                break
        images = np.concatenate(batches) if batches else np.zeros((0, height, width, channels))
    if images.ndim != 4 or len(images) == 0 or images.shape[-1] != channels:
        raise ValueError(
            f"representative_data gave images of shape {images.shape}; expected at least one "
            f"image with {channels} channels."
        )
    images = images[:count].astype("float32")
    # Calibrating on [0, 1] images would quantize for the wrong range, and the check, which
    # runs on these images, would not see it.
    check_pixels("representative_data images", images, scaled_is_error=True)
    if images.shape[1:3] != (height, width):
        images = tf.image.resize(images, (height, width)).numpy()
    return images


def _tflite_options(quantization, calibration):
    if quantization is None:
        return {}
    options = {"optimizations": [tf.lite.Optimize.DEFAULT]}
    if quantization == "float16":
        options["target_spec"] = {"supported_types": [tf.float16]}
    elif quantization == "int8":
        # Full-integer kernels; the float32 input and output keep the float model's interface.
        options["target_spec"] = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]}
        options["representative_dataset"] = lambda: ([image[None]] for image in calibration)
    return options


def _int8_with_float_ops(model, calibration, float_ops, scratch):
    """Full-integer TF Lite bytes with the TF Lite op types `float_ops` kept in float32.

    Selective quantization needs the converter itself, which Keras' LiteRT export keeps
    inside; it is built from the SavedModel that Keras writes (into `scratch`) for the same
    serving function.
    """
    options = _tflite_options("int8", calibration)
    saved = str(Path(scratch) / "saved_model")
    model.export(saved, format="tf_saved_model", verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(saved)
    converter.optimizations = options["optimizations"]
    converter.representative_dataset = options["representative_dataset"]
    converter.target_spec.supported_ops = options["target_spec"]["supported_ops"]
    debug = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(float_ops))
    with without_tf_lite_notice():  # the debugger runs a `tf.lite.Interpreter`
        quantizer = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_options=debug
        )
        return quantizer.get_nondebug_quantized_model()


def _convert(model, target, format, quantization, calibration, scratch, class_names):
    """Writes the artifact to `target` (TensorFlow backend only), with `class_names` (a list
    or None) inside a TF Lite or ONNX file; intermediate files go to the folder `scratch`."""
    if format == "tflite" and quantization == "int8" and is_vit(model):
        tflite = _int8_with_float_ops(model, calibration, VIT_INT8_FLOAT_OPS, scratch)
        Path(target).write_bytes(tflite)
    elif format == "tflite":
        options = _tflite_options(quantization, calibration)
        model.export(str(target), format="litert", verbose=False, **options)
    elif format == "saved_model":
        model.export(str(target), format="tf_saved_model", verbose=False)
    else:
        _convert_onnx(model, target, scratch, class_names)
    if format == "tflite" and class_names is not None:
        add_tflite_class_names(target, class_names)


def _not_a_deprecation_notice(record) -> bool:
    return "is deprecated and will be removed" not in record.getMessage()


@contextlib.contextmanager
def _quiet_tf2onnx():
    """Silences, for the conversion only, TensorFlow's notices that the TF1 functions tf2onnx
    calls are deprecated, and NumPy's `np.object` FutureWarning from Keras' tf2onnx patch: a
    user of this package has nothing to change."""
    logger = logging.getLogger("tensorflow")
    logger.addFilter(_not_a_deprecation_notice)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "In the future `np.object`", FutureWarning)
            yield
    finally:
        logger.removeFilter(_not_a_deprecation_notice)


def _convert_onnx(model, target, scratch, class_names):
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    saved = str(Path(scratch) / "saved_model")
    model.export(saved, format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(saved)
    with _quiet_tf2onnx():
        patch_tf2onnx()  # tf2onnx still uses NumPy 1 aliases; Keras ships this patch.
        # Freezing inlines variables and captured constants, so the only input is the image.
        frozen = convert_variables_to_constants_v2(loaded.signatures["serving_default"])
        proto, _ = tf2onnx.convert.from_graph_def(
            frozen.graph.as_graph_def(),
            input_names=[t.name for t in frozen.inputs],
            output_names=[t.name for t in frozen.outputs],
            opset=ONNX_OPSET,
            custom_op_handlers={"Erfc": (_erfc_as_one_minus_erf, [])},
        )
    if class_names is not None:
        proto.metadata_props.add(key=CLASS_NAMES_KEY, value=json.dumps(class_names))
    Path(target).write_bytes(proto.SerializeToString())


def _erfc_as_one_minus_erf(ctx, node, name, args):
    """tf2onnx has no Erfc (TensorFlow's exact GELU uses it): rewrite it as 1 - Erf(x)."""
    from tf2onnx import utils

    node.type = "Erf"
    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.array(1, dtype=dtype))
    ctx.insert_new_node_on_output(
        "Sub", node.output[0], name=utils.make_name(name), inputs=[one.output[0], node.output[0]]
    )


def _check(model, artifact, format, quantization, calibration):
    """Runs the artifact on sample images; returns the figures or raises RuntimeError."""
    if format == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        return {"checked": False, "reason": "onnxruntime is not installed"}
    if calibration is not None:
        images = calibration
    else:
        shape = _input_size(model)
        images = np.random.default_rng(0).uniform(0, 255, (CHECK_SAMPLES, *shape))
        images = images.astype("float32")
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    actual = RUNNERS[format](artifact, images)
    difference = float(np.abs(actual - expected).max())
    agreement = float(np.mean(actual.argmax(-1) == expected.argmax(-1)))
    figures = {
        "checked": True,
        "samples": len(images),
        "max_abs_difference": difference,
        "top1_agreement": agreement,
    }
    if quantization in TOLERANCES:
        passed = difference < TOLERANCES[quantization]
        criterion = f"max abs difference < {TOLERANCES[quantization]:.0e}"
    else:
        passed = agreement >= MIN_TOP1_AGREEMENT
        criterion = f"top-1 agreement >= {MIN_TOP1_AGREEMENT:.0%}"
    if not passed:
        raise RuntimeError(
            f"{format} export (quantization={quantization}) fails its check ({criterion}): max "
            f"abs difference {difference:.2e}, top-1 agreement {agreement:.1%} on "
            f"{len(images)} sample images."
        )
    return {**figures, "criterion": criterion}


def _check_side_file(path, class_names):
    """The class names already beside `path` must be this export's: `<name>.classes.json`
    is shared by every artifact called `<name>`, so another model's names there (or stale
    ones, where this model has none) would label this artifact's predictions wrongly."""
    existing = side_file_class_names(path)
    if existing is None or existing == class_names:
        return
    ours = "none" if class_names is None else class_names[:5]
    raise ValueError(
        f"{str(class_names_path(path))!r} lists the classes {existing[:5]} but the exported "
        f"model has {ours}; it belongs to another model (e.g. {path.stem}.keras): export to "
        "another path, pass class_names=, or delete that file if it is stale."
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
    format: str = "tflite",
    quantization: str | None = None,
    representative_data=None,
    check: bool = True,
    class_names: list | None = None,
    verbose: bool = False,
) -> dict:
    """Exports a model (or a `.keras` file) and checks the artifact against Keras.

    Args:
        model_or_path: a `keras.Model` or the path of a `.keras` file (loaded in safe mode).
        path: output file (`.tflite`, `.onnx`) or folder (SavedModel). An existing file is
            replaced; an existing folder only when it is empty or an earlier SavedModel (its
            replacement is one atomic swap), never when it holds anything else.
        format: "tflite", "saved_model" or "onnx" (needs the `onnx` extra).
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
            float32, < 1e-2 for float16; top-1 agreement >= 95% for "dynamic" and "int8".
        class_names: names of the classes, written into a TF Lite or ONNX file (metadata
            `"keras_resvit.class_names"`, see `keras_resvit.base.class_names`) and beside the
            artifact (`<name>.classes.json`); default those of the source `.keras` file (its side
            file, else the names inside it), or those a model in memory carries
            (`kr.load_model` attaches a file's names).
        verbose: print `export_summary(result)`, one line.

    Returns:
        `{"path", "format", "quantization", "class_names", "checked", ...figures}`.

    Raises:
        ValueError: an invalid argument or an unreadable `.keras` file.
        RuntimeError: the artifact fails its check (with the figures) or conversion failed.
        In every failing case nothing is left at `path` (an older file or SavedModel there is
        kept), and no temporary file is left beside it.

    Example:
    >>> import keras_resvit as kr
    >>> kr.export(kr.create_model("resnet20"), "/tmp/resnet20.tflite")  # doctest: +SKIP
    """
    path = Path(path)
    _validate(format, quantization, representative_data, path)
    if class_names is not None:
        class_names = checked_class_names(class_names)
    model = _load(model_or_path)
    _input_size(model)  # a fixed input size, checked before any conversion work
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
    path.parent.mkdir(parents=True, exist_ok=True)
    # Intermediate files go beside the target, not into the system temp folder: the next
    # export to `path` removes what a killed one left.
    with _staged(path, format) as tmp, scratch_folder(path) as scratch:
        job = (tmp, format, quantization, calibration, scratch, class_names)
        if backend() == "tensorflow":
            _convert(model, *job)
        else:
            _convert_in_subprocess(model_or_path, *job)
        figures = {"checked": False}
        if check:
            figures = _check(model, tmp, format, quantization, calibration)
    if class_names is not None:
        write_class_names(path, class_names)
    result = {
        "path": str(path),
        "format": format,
        "quantization": quantization,
        "class_names": class_names,
        **figures,
    }
    if verbose:
        print(export_summary(result))
    return result


def export_summary(result: dict) -> str:
    """One line for people about what `export` returned.

    Example:
    >>> export_summary({"path": "m.tflite", "format": "tflite", "quantization": None,
    ...                 "class_names": None, "checked": False})
    'exported m.tflite (tflite, float32): not checked'
    """
    kind = f"{result['format']}, {result['quantization'] or 'float32'}"
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


if __name__ == "__main__":
    source, target, fmt, quant, images, scratch, names, parent = json.loads(sys.argv[1])
    _exit_with_parent(parent)
    calibration = np.load(images, allow_pickle=False) if images else None
    _convert(load_model(source), Path(target), fmt, quant, calibration, scratch, names)
