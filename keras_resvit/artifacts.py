"""Running exported artifacts (TF Lite, SavedModel, ONNX) on images: the one place that
`export` (to check an artifact against its Keras model) and `predict` both use.

TF Lite files run on LiteRT's interpreter (`ai_edge_litert`) where it is installed, else on
TensorFlow's; ONNX files on onnxruntime's CPU provider; SavedModels through `tf.saved_model`.
"""

import contextlib
import warnings

import numpy as np

from keras_resvit.base.files import first_line
from keras_resvit.base.lazy import tf
from keras_resvit.base.onnx_runtime import onnx_session


def _quantized(tensor):
    """(scale, zero point) of an integer TF Lite tensor, or None for a float one."""
    scale, zero = tensor["quantization"]
    return (scale, zero) if np.issubdtype(tensor["dtype"], np.integer) and scale else None


@contextlib.contextmanager
def without_tf_lite_notice():
    """Silences TensorFlow's notice, at each `tf.lite.Interpreter`, that the interpreter
    moves to LiteRT: a user of this package has nothing to change."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"\s*Warning: tf.lite.Interpreter is deprecated")
        yield


def tflite_interpreter(path):
    """A TF Lite interpreter for `path`: LiteRT's (`ai_edge_litert`) where it is installed,
    else TensorFlow's `tf.lite.Interpreter` without its notice that it moves to LiteRT.

    Raises:
        ValueError: `path` is not a readable TF Lite file.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = None  # noqa: N806 - the class, when LiteRT is installed
    with without_tf_lite_notice():
        try:
            return (Interpreter or tf.lite.Interpreter)(model_path=str(path))
        except ValueError as error:
            raise ValueError(
                f"model={str(path)!r} is not a readable TF Lite file (truncated or corrupt): "
                f"{first_line(error)}"
            ) from None


def _takes_shape(details, shape):
    """Whether a TF Lite input of `details` takes `shape`: its signature has it, or -1."""
    signature = details["shape_signature"]
    return len(signature) == len(shape) and all(
        s in (-1, d) for s, d in zip(signature, shape, strict=True)
    )


def run_tflite(path, images):
    """Runs a TF Lite file image by image; integer inputs and outputs (a fully quantized
    model from another tool) are quantized and dequantized with their tensors' scales."""
    interpreter = tflite_interpreter(path)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    to_int, from_int = _quantized(inp), _quantized(out)
    outputs = []
    for image in images:
        x = image[None]
        if tuple(inp["shape"]) != x.shape and _takes_shape(inp, x.shape):
            # A file of any input size (-1 in its signature) takes each image at its size.
            interpreter.resize_tensor_input(inp["index"], x.shape)
            interpreter.allocate_tensors()
            inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        if to_int:
            limits = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / to_int[0] + to_int[1]), limits.min, limits.max)
        interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])[0].astype("float32")
        outputs.append((y - from_int[1]) * from_int[0] if from_int else y)
    return np.stack(outputs)


def run_saved_model(path, images):
    loaded = tf.saved_model.load(str(path))  # keep a reference: its variables live in it
    return np.asarray(loaded.serve(tf.constant(images)))


def run_onnx(path, images):
    session = onnx_session(path)
    return session.run(None, {session.get_inputs()[0].name: images})[0]


# Format -> function(path, images) -> outputs, a NumPy array with one row per image.
RUNNERS = {"tflite": run_tflite, "saved_model": run_saved_model, "onnx": run_onnx}
