"""Top-k predictions of a model on image files, with class names: a `.keras`, `.tflite` or
`.onnx` file (the last on onnxruntime), a model in memory, or a registry name with published
weights ("resnet50:imagenet").

A model file carries its class names inside itself and in a small JSON list beside it (see
`keras_resvit.base.class_names`): the side file is read first, the names inside the file where
there is none.
"""

import os
import reprlib
from pathlib import Path

import numpy as np

from keras_resvit.base.class_names import (
    check_class_names,
    model_class_names,
    read_class_names,
    tflite_metadata,
)
from keras_resvit.base.validation import check_finite_scores, check_int
from keras_resvit.data.image_files import load_images
from keras_resvit.data.transforms import check_crop_ratio
from keras_resvit.export.ownership import marked_activation
from keras_resvit.models.common import check_score_activation, probabilities

# A model file's last operation where it is an activation (TF Lite's and ONNX's names), as
# Keras names it; operations that only move or convert the values are looked through.
_ACTIVATION_OPS = {"SOFTMAX": "softmax", "LOGISTIC": "sigmoid", "LOG_SOFTMAX": "log_softmax"}
_ACTIVATION_OPS |= {"TANH": "tanh", "RELU": "relu", "RELU6": "relu6", "ELU": "elu"}
_ACTIVATION_OPS |= {"GELU": "gelu", "HARD_SWISH": "hard_swish", "LEAKY_RELU": "leaky_relu"}
_ACTIVATION_OPS |= {"Softmax": "softmax", "Sigmoid": "sigmoid", "LogSoftmax": "log_softmax"}
_ACTIVATION_OPS |= {"Tanh": "tanh", "Relu": "relu", "Elu": "elu", "Selu": "selu"}
_ACTIVATION_OPS |= {"Gelu": "gelu", "Softplus": "softplus", "HardSwish": "hard_swish"}
_ACTIVATION_OPS |= {"LeakyRelu": "leaky_relu", "HardSigmoid": "hard_sigmoid"}
_PASS_THROUGH_OPS = {"DEQUANTIZE", "QUANTIZE", "RESHAPE", "CAST", "SQUEEZE", "Identity", "Cast"}
_PASS_THROUGH_OPS |= {"Reshape", "Squeeze", "DequantizeLinear", "QuantizeLinear"}


def _last_activation(producers, name):
    """The activation that the graph's output `name` comes out of (looking through
    `_PASS_THROUGH_OPS`): "softmax", "sigmoid", ... (`_ACTIVATION_OPS`), or "linear" for any
    other operation; `producers` maps each output to (operation, inputs)."""
    for _ in range(len(producers)):
        op, inputs = producers.get(name, (None, ()))
        if op not in _PASS_THROUGH_OPS or not inputs:
            return _ACTIVATION_OPS.get(op, "linear")
        name = inputs[0]
    return "linear"


def _tflite_activation(interpreter, model_path):
    """The classifier activation `export`'s mark records, else the last operation's (a relu
    or tanh that the converter fused into the last layer is not seen there)."""
    marked = marked_activation(tflite_metadata(model_path))
    if marked is not None:
        return marked
    ops = interpreter._get_ops_details()  # the one reader of a TF Lite file's operations
    producers = {
        int(out): (op["op_name"], [int(i) for i in op["inputs"]])
        for op in ops
        for out in op["outputs"]
    }
    return _last_activation(producers, int(interpreter.get_output_details()[0]["index"]))


def _onnx_activation(model_path):
    try:
        import onnx
    except ImportError as error:
        raise ImportError(
            "reading an ONNX file needs onnx; install it with `pip install keras-resvit[onnx]`."
        ) from error

    proto = onnx.load(str(model_path), load_external_data=False)
    marked = marked_activation({p.key: p.value for p in proto.metadata_props})
    if marked is not None:
        return marked
    graph = proto.graph
    producers = {
        out: (node.op_type, list(node.input)) for node in graph.node for out in node.output
    }
    return _last_activation(producers, graph.output[0].name)


def _batches(paths, size):
    """The image files in one batch, or one at a time for a model (or file) of any input size,
    which scores each image at its own size."""
    return [paths] if None not in size else [[path] for path in paths]


def _onnx_scores(model_path, paths, crop_ratio):
    """Scores of an ONNX file on onnxruntime's CPU provider, checked as a TF Lite file's."""
    from keras_resvit.base.onnx_runtime import onnx_session

    activation = _onnx_activation(model_path)
    check_score_activation(activation, str(model_path))
    session = onnx_session(model_path)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1 or inputs[0].type != "tensor(float)":
        raise ValueError(
            f"model={str(model_path)!r} takes {len(inputs)} inputs ("
            f"{', '.join(i.type for i in inputs)}) and gives {len(outputs)} outputs; predict "
            "runs a classifier of one float image input and one output."
        )
    (image,), (output,) = inputs, outputs
    if len(output.shape) != 2:
        raise ValueError(
            f"model={str(model_path)!r} does not output one score per class (its output "
            f"shape is {list(output.shape)})."
        )
    shape = image.shape  # a name (a string) or None where the file takes any size
    if len(shape) != 4 or shape[3] not in (1, 3):
        raise ValueError(
            f"model={str(model_path)!r} takes input of shape {list(shape)}; predict reads "
            "images for a (batch, height, width, 1 or 3 channels) input."
        )
    size = tuple(d if isinstance(d, int) and d > 0 else None for d in shape[1:3])
    scores = np.concatenate(
        [
            session.run(None, {image.name: load_images(b, size, shape[3], crop_ratio)})[0]
            for b in _batches(paths, size)
        ]
    )
    return probabilities(scores, activation, str(model_path))


def _scores(model_path, paths, crop_ratio):
    suffix = model_path.suffix.lower()  # as export writes them: ".TFLITE" too
    if suffix == ".onnx":
        return _onnx_scores(model_path, paths, crop_ratio)
    if suffix == ".tflite":
        from keras_resvit.artifacts import run_tflite, tflite_interpreter

        interpreter = tflite_interpreter(model_path)
        activation = _tflite_activation(interpreter, model_path)
        check_score_activation(activation, str(model_path))
        # The signature keeps -1 where the file takes any size; "shape" shows 1 there.
        signature = interpreter.get_input_details()[0]["shape_signature"]
        if len(interpreter.get_output_details()[0]["shape"]) != 2:
            raise ValueError(
                f"model={str(model_path)!r} does not output one score per class (its output "
                f"shape is {list(interpreter.get_output_details()[0]['shape'])})."
            )
        if len(signature) != 4 or signature[3] not in (1, 3):
            raise ValueError(
                f"model={str(model_path)!r} takes input of shape {list(signature)}; predict "
                "reads images for a (batch, height, width, 1 or 3 channels) input."
            )
        size = tuple(int(d) if d > 0 else None for d in signature[1:3])
        channels = int(signature[3])
        scores = np.concatenate(
            [
                run_tflite(model_path, load_images(b, size, channels, crop_ratio))
                for b in _batches(paths, size)
            ]
        )
        return probabilities(scores, activation, str(model_path))
    if suffix == ".keras":
        from keras_resvit.files import load_model

        return _model_scores(load_model(model_path), paths, crop_ratio)
    raise ValueError(
        f"model={str(model_path)!r} must be a .keras, .tflite or .onnx file, or NAME:WEIGHTS (e.g. "
        "resnet50:imagenet)."
    )


def _model_scores(model, paths, crop_ratio):
    import keras

    from keras_resvit.models.common import check_classifier, score_activation

    check_classifier(model, "predict ranks classes")
    activation = score_activation(model)
    size, channels = tuple(model.input_shape[1:3]), model.input_shape[-1]
    batches = _batches(paths, size)
    images = (load_images(b, size, channels, crop_ratio) for b in batches)
    scores = [model.predict(x, verbose=0) for x in images]
    scores = np.concatenate([keras.ops.convert_to_numpy(s) for s in scores])
    return probabilities(scores, activation, model.name)


def _named_model(text):
    """The model "NAME:WEIGHTS" names (a registry name and its published weights), or None."""
    name, _, weights = text.partition(":")
    from keras_resvit.models.registry import REGISTRY

    if not weights or name not in REGISTRY:
        return None
    from keras_resvit.factory import create_model

    return create_model(name, weights=weights)


def _scores_and_names(model, paths, crop_ratio):
    """The scores of `model` (a file, a model or NAME:WEIGHTS), its class names and its file."""
    import keras

    if isinstance(model, keras.Model):
        return _model_scores(model, paths, crop_ratio), model_class_names(model), None
    if not isinstance(model, (str, os.PathLike)):
        raise ValueError(
            f"model of type {type(model).__name__} is not valid; pass a keras.Model, the path "
            "of a .keras, .tflite or .onnx file, or NAME:WEIGHTS (e.g. resnet50:imagenet)."
        )
    if Path(model).is_dir():
        raise ValueError(
            f"model={str(model)!r} is a folder (a SavedModel?); predict reads a .keras, "
            ".tflite or .onnx file: export one with kr.export (keras-resvit export)."
        )
    named = None if Path(model).is_file() else _named_model(str(model))
    if named is not None:
        return _model_scores(named, paths, crop_ratio), model_class_names(named), None
    model_path = Path(model)
    if not model_path.is_file():
        raise FileNotFoundError(
            f"model={str(model)!r} is not a file, nor NAME:WEIGHTS of a registry name (e.g. "
            "resnet50:imagenet; `keras-resvit list --weights` lists them)."
        )
    names = read_class_names(model_path)
    return _scores(model_path, paths, crop_ratio), names, model_path


def predict(model, image_paths, *, top_k: int = 5, crop_ratio: float | None = None) -> list:
    """The `top_k` classes of each image, with names when the model carries them.

    Args:
        model: a `.keras`, `.tflite` or `.onnx` file (onnxruntime: the `onnx` extra), a
            `keras.Model`, or "NAME:WEIGHTS": a registry name and the name of its published
            weights (`kr.list_weights`), downloaded once.
        image_paths: image files (JPEG, PNG, GIF, BMP); each is read as evaluation reads it
            at the model's input size (`kr.data.load_dataset`: a photo's shorter side resized
            to 1 / 0.875 of it, then the center crop; an image about that size or smaller
            resized whole, keeping its aspect, then the center crop); a model of any input
            size scores each at its own size.
        top_k: classes per image; a model of fewer classes ranks all of them (the default
            5 serves any model).
        crop_ratio: the center crop's share of the resized shorter side for every image, in
            [0.25, 1], as `load_dataset(crop_ratio=...)`; 1.0 resizes each image whole, as
            a model trained with a whole-image preset (`augment="resnet_cifar"`) was
            evaluated. Default: the evaluation view above.

    Returns:
        One list per image of `{"index", "name", "score"}` dicts, best first (`name` is None
        without class names). A score is the class's probability: the model's output where
        it ends in a softmax (or a sigmoid, one probability per class), the exponential of
        a log-softmax, else the softmax of its outputs (a model of logits, such as one
        trained with `recipe="deit3"`; in a `.tflite` or `.onnx` file, one whose last
        operation is no activation).

    Raises:
        FileNotFoundError: `model` or an image is not a file.
        ValueError: a bad `top_k`, `crop_ratio`, `image_paths` or `model` (of another type,
            a folder), a model file that is not a readable `.keras` / `.tflite` / `.onnx`, a
            model ending in an activation whose outputs are neither probabilities nor logits
            (a tanh), an image that cannot be decoded, or class names whose count is not the
            model's.

    Example:
    >>> from keras_resvit.predict import predict
    >>> import numpy as np
    >>> from PIL import Image
    >>> import keras_resvit as kr
    >>> (x, y), _ = kr.data.load_digits()
    >>> Image.fromarray(x[y == 7][0].astype("uint8")).save("seven.png")
    >>> model = kr.create_model("resnet20")  # or a trained one: "runs/digits/model.tflite"
    >>> kr.files.save_model(model, "digits.keras", class_names=[str(i) for i in range(10)])
    PosixPath('digits.keras')
    >>> (top,) = predict("digits.keras", ["seven.png"], top_k=1)
    >>> sorted(top[0]), top[0]["name"] == str(top[0]["index"])
    (['index', 'name', 'score'], True)
    """
    check_int("top_k", top_k)
    if crop_ratio is not None:
        check_crop_ratio(crop_ratio)
    paths = None
    if not isinstance(image_paths, (str, os.PathLike)) and hasattr(image_paths, "__iter__"):
        paths = list(image_paths)
    if not paths or not all(isinstance(p, (str, os.PathLike)) for p in paths):
        shown = reprlib.repr(image_paths)
        raise ValueError(
            f"image_paths={shown} must be a non-empty list of image files (str or "
            "pathlib.Path); for arrays of pixels, call model.predict(images)."
        )
    image_paths = paths
    all_scores, names, model_path = _scores_and_names(model, image_paths, crop_ratio)
    check_finite_scores(str(model_path or getattr(model, "name", model)), all_scores)
    check_class_names(names, all_scores.shape[-1], model_path)
    results = []
    for scores in all_scores:
        best = np.argsort(-scores, kind="stable")[:top_k]
        results.append(
            [
                {
                    "index": int(i),
                    "name": names[i] if names and i < len(names) else None,
                    "score": float(scores[i]),
                }
                for i in best
            ]
        )
    return results
