"""A grid of images, each titled with the model's top-k classes and scores."""

from pathlib import Path

import keras
import numpy as np

from keras_resvit.base.validation import check_int
from keras_resvit.viz.figures import (
    check_images,
    check_png_path,
    image_grid,
    label,
    save_png,
    show_image,
)


def plot_predictions(model: keras.Model, images, path, *, top_k: int = 3, class_names=None) -> Path:
    """Writes a PNG of the images side by side, each with its `top_k` classes and scores.

    Args:
        model: a classifier (any model here with `include_top=True`, or loaded from one).
        images: raw 0-255 pixels, (N, H, W, C) at the model's input size.
        path: the `.png` file to write (atomically).
        top_k: classes listed per image, best first.
        class_names: names for the class indices (e.g. from the model's `.classes.json`).

    Returns:
        The path written.

    Raises:
        ValueError: `top_k` is not a positive int, images of the wrong shape, or `path` is not
            a `.png` file.

    Example:
    >>> import keras_resvit as kr
    >>> (x, _), _ = kr.data.load_digits()
    >>> plot_predictions(kr.create_model("resnet20"), x[:8], "predictions.png")
    PosixPath('predictions.png')
    """
    path = check_png_path(path)
    check_int("top_k", top_k)
    images = check_images(model, images)
    scores = keras.ops.convert_to_numpy(model.predict(images, verbose=0))
    if scores.ndim != 2:
        raise ValueError(
            f"model={model.name!r} outputs shape {scores.shape}; plot_predictions needs a "
            "classifier with (N, classes) outputs."
        )
    figure, axes = image_grid(len(images), title_lines=min(top_k, scores.shape[-1]))
    for ax, image, row in zip(axes, images, scores, strict=True):
        best = np.argsort(-row, kind="stable")[:top_k]
        lines = [f"{label(i, class_names)}: {row[i]:.3f}" for i in best]
        show_image(ax, image, title="\n".join(lines))
    return save_png(figure, path)
