"""Top-k predictions of a `.keras` or `.tflite` model on image files, with class names.

A model carries its class names in a small JSON list beside it: `model.keras` ->
`model.classes.json` (`export` copies it next to the artifact). Plain JSON keeps it readable,
safe to load and independent of the backend and the file format.
"""

import json
from pathlib import Path

import numpy as np

from keras_resvit.data.image_files import oversized
from keras_resvit.files import atomic_path, first_line, name_list_problem, read_json
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
    """The class names beside `model_path`, or None when it has none.

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


def load_images(paths, size) -> np.ndarray:
    """Decodes image files (PNG, JPEG, BMP, GIF) to float32 RGB 0-255 at `size` (h, w).

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
                tf.io.read_file(str(path)), channels=3, expand_animations=False
            )
        except tf.errors.InvalidArgumentError as error:
            raise ValueError(f"image {str(path)!r} cannot be decoded: {error.message}") from None
        images.append(tf.image.resize(image, size).numpy())
    return np.stack(images)


def _scores(model_path, paths):
    if model_path.suffix == ".tflite":
        from keras_resvit.export import RUNNERS

        try:
            interpreter = tf.lite.Interpreter(model_path=str(model_path))
        except ValueError as error:
            raise ValueError(
                f"model={str(model_path)!r} is not a readable TF Lite file (truncated or "
                f"corrupt): {first_line(error)}"
            ) from None
        size = tuple(interpreter.get_input_details()[0]["shape"][1:3])
        return RUNNERS["tflite"](model_path, load_images(paths, size))
    if model_path.suffix == ".keras":
        import keras

        from keras_resvit.files import load_model

        model = load_model(model_path)
        images = load_images(paths, tuple(model.input_shape[1:3]))
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
            `.keras` / `.tflite`, or an image that cannot be decoded.

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
    results = []
    for scores in _scores(model_path, image_paths):
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
