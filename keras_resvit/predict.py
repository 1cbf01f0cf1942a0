"""Top-k predictions of a `.keras` or `.tflite` model on image files, with class names.

A model file carries its class names inside itself (see `keras_resvit.files`) and in a small
JSON list beside it: `model.keras` -> `model.classes.json` (`export` writes both). The side
file, plain JSON, is readable and editable by hand and read first; the names inside the file
are used where there is none (a file saved or exported from a model in memory, copied alone).
"""

import json
from pathlib import Path

import numpy as np

from keras_resvit.data.image_files import oversized
from keras_resvit.files import atomic_path, embedded_class_names, name_list_problem, read_json
from keras_resvit.lazy import tf

CLASS_NAMES_SUFFIX = ".classes.json"


def class_names_path(model_path) -> Path:
    """Where the class names of `model_path` live: `model.keras` -> `model.classes.json`."""
    path = Path(model_path)
    return path.with_name(path.stem + CLASS_NAMES_SUFFIX)


def write_class_names(model_path, class_names) -> Path:
    """Writes `class_names` (a list of strings) beside `model_path`; returns the JSON path."""
    names = list(class_names)
    if not all(isinstance(name, str) for name in names):
        raise ValueError(f"class_names={names!r} must be a list of strings.")
    target = class_names_path(model_path)
    with atomic_path(target) as tmp:
        Path(tmp).write_text(json.dumps(names, indent=1))
    return target


def read_class_names(model_path) -> list | None:
    """The class names of a model file: its side file `<name>.classes.json` when there is
    one, else the names inside the `.keras` / `.tflite` file itself, else None.

    Raises:
        ValueError: the side file is unreadable, not JSON, or not a list of strings (naming
            it), or the model file or the names inside it are corrupt.
    """
    names = side_file_class_names(model_path)
    return embedded_class_names(model_path) if names is None else names


def side_file_class_names(model_path) -> list | None:
    """The class names in the side file beside `model_path`, or None when there is none.

    Raises:
        ValueError: the file is unreadable, not JSON, or not a list of strings (naming it).
    """
    path = class_names_path(model_path)
    if not path.exists():
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


def load_images(paths, size, channels: int = 3) -> np.ndarray:
    """Decodes image files (PNG, JPEG, BMP, GIF) to float32 0-255 pixels at `size` (h, w),
    with `channels` channels (3: RGB, 1: grey; a model's input decides).

    Each file's size is read from its header first: an image over
    `image_files.MAX_IMAGE_PIXELS` is refused before it is decoded, and decoded pixels are
    resized before they become float32.

    Raises:
        FileNotFoundError: a path is not a file.
        ValueError: a file is not a decodable image, or too large.
    """
    images = []
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"image {str(path)!r} is not a file.")
        too_large = oversized(path)
        if too_large:
            raise ValueError(f"image {str(path)!r} has {too_large}; it is not decoded.")
        try:
            image = tf.io.decode_image(
                tf.io.read_file(str(path)), channels=channels, expand_animations=False
            )
        except tf.errors.InvalidArgumentError as error:
            # TensorFlow prefixes its message with the op that raised it: keep the reason.
            reason = error.message.split("}}")[-1].strip()
            raise ValueError(f"image {str(path)!r} cannot be decoded: {reason}") from None
        images.append(tf.image.resize(image, size).numpy())
    return np.stack(images)


def _scores(model_path, paths):
    if model_path.suffix == ".tflite":
        from keras_resvit.export import RUNNERS, tflite_interpreter

        interpreter = tflite_interpreter(model_path)
        shape = interpreter.get_input_details()[0]["shape"]
        if len(interpreter.get_output_details()[0]["shape"]) != 2:
            raise ValueError(
                f"model={str(model_path)!r} does not output one score per class (its output "
                f"shape is {list(interpreter.get_output_details()[0]['shape'])})."
            )
        images = load_images(paths, tuple(shape[1:3]), channels=int(shape[3]))
        return RUNNERS["tflite"](model_path, images)
    if model_path.suffix == ".keras":
        import keras

        from keras_resvit.files import load_model
        from keras_resvit.models.common import check_classifier

        model = load_model(model_path)
        check_classifier(model, "predict ranks classes")
        size, channels = tuple(model.input_shape[1:3]), model.input_shape[-1]
        images = load_images(paths, size, channels=channels)
        return keras.ops.convert_to_numpy(model.predict(images, verbose=0))
    raise ValueError(f"model={str(model_path)!r} must be a .keras or .tflite file.")


def predict(model_path, image_paths, *, top_k: int = 5) -> list:
    """The `top_k` classes of each image, with names when the model carries them.

    Args:
        model_path: a `.keras` or `.tflite` file.
        image_paths: image files; each is resized to the model's input size.
        top_k: classes per image.

    Returns:
        One list per image of `{"index", "name", "score"}` dicts, best first (`name` is None
        without class names).

    Raises:
        FileNotFoundError: `model_path` or an image is not a file.
        ValueError: a bad `top_k` or `image_paths`, a model file that is not a readable
            `.keras` / `.tflite`, an image that cannot be decoded, or class names whose count
            is not the model's.

    Example:
    >>> predict("runs/digits/model.tflite", ["seven.png"], top_k=1)  # doctest: +SKIP
    [[{'index': 7, 'name': '7', 'score': 0.98}]]
    """
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"top_k={top_k!r} must be a positive int.")
    if isinstance(image_paths, (str, Path)) or not image_paths:
        raise ValueError(f"image_paths={image_paths!r} must be a non-empty list of image files.")
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"model={str(model_path)!r} is not a file.")
    names = read_class_names(model_path)
    all_scores = _scores(model_path, image_paths)
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
