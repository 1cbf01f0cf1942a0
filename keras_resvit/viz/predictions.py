"""A grid of images, each titled with the model's top-k classes and their probabilities."""

from pathlib import Path

import keras
import numpy as np

from keras_resvit.base.validation import check_int
from keras_resvit.models.common import (
    check_classifier,
    probabilities,
    score_activation,
)
from keras_resvit.viz.figures import (
    check_class_names,
    check_images,
    check_plot_model,
    check_png_path,
    image_grid,
    label,
    save_png,
    show_image,
)


def plot_predictions(model: keras.Model, images, path, *, top_k: int = 3, class_names=None) -> Path:
    """Writes a PNG of the images side by side, each with its `top_k` classes and their
    probabilities (the softmax of a model of logits; as `kr.predict` scores).

    Args:
        model: a classifier (any model here with `include_top=True`, or loaded from one).
        images: raw 0-255 pixels, (N, H, W, C) at the model's input size.
        path: the `.png` file to write (atomically); an existing file is replaced only if it
            is a figure keras_resvit wrote.
        top_k: classes listed per image, best first.
        class_names: names for the class indices (e.g. from the model's `.classes.json`): a
            list of strings, one per class.

    Returns:
        The path written.

    Raises:
        ValueError: `model` is not a classifier (one score per class), `top_k` is not a
            positive int, images of the wrong shape or with NaN pixels, `path` is not a `.png`
            file, or `class_names` is not one string per class.

    Example:
    >>> from keras_resvit.viz.predictions import plot_predictions
    >>> import keras_resvit as kr
    >>> (x, _), _ = kr.data.load_digits()
    >>> plot_predictions(kr.create_model("resnet20"), x[:8], "predictions.png")
    PosixPath('predictions.png')
    """
    check_plot_model(model)
    check_classifier(model, "plot_predictions ranks one score per class")
    activation = score_activation(model)
    path = check_png_path(path)
    check_int("top_k", top_k)
    names = check_class_names(class_names, model.output_shape[-1])
    images = check_images(model, images)
    scores = keras.ops.convert_to_numpy(model.predict(images, verbose=0))
    scores = probabilities(scores, activation, model.name)
    figure, axes = image_grid(len(images), title_lines=min(top_k, scores.shape[-1]))
    for ax, image, row in zip(axes, images, scores, strict=True):
        best = np.argsort(-row, kind="stable")[:top_k]
        lines = [f"{label(i, names)}: {row[i]:.3f}" for i in best]
        show_image(ax, image, title="\n".join(lines))
    return save_png(figure, path)
