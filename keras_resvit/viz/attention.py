"""Attention rollout (Abnar & Zuidema 2020): which patches a ViT's output draws on.

Each block's attention, averaged over heads, plus the identity for the residual connection
and renormalised to rows of 1, says how much of every token each token carries into the next
layer; multiplying these matrices through all blocks traces the output tokens back to the
input patches. The class token's row (the mean patch row for `pooling="gap"` or `"map"`) is
the map; register tokens take part in the product but are left out of the map.
"""

from pathlib import Path

import keras
import numpy as np

from keras_resvit.base.validation import check_choice, check_rate
from keras_resvit.layers.vit_layers import ClassToken, PositionEmbedding
from keras_resvit.models.common import is_vit
from keras_resvit.models.features import attention_layers
from keras_resvit.models.vit_resize import token_grid
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

HEAD_FUSIONS = {"mean": np.mean, "max": np.max, "min": np.min}


def _check_arguments(model, images, discard_ratio, head_fusion):
    check_plot_model(model)
    if not is_vit(model):
        raise ValueError(
            f"model={model.name!r} is not a ViT (it has no PositionEmbedding layer); attention "
            "rollout needs a model built by build_vit or build_hybrid_vit. For a ResNet use "
            "keras_resvit.viz.grad_cam (keras-resvit plot gradcam)."
        )
    check_choice("head_fusion", head_fusion, HEAD_FUSIONS)
    check_rate("discard_ratio", discard_ratio)
    return check_images(model, images)


def rollout_matrices(
    model: keras.Model, images, discard_ratio: float = 0.0, head_fusion: str = "mean"
) -> np.ndarray:
    """The attention rollout matrices: how much each output token draws on each input token.

    Args:
        model: a ViT built by `build_vit` or `build_hybrid_vit` (or loaded from one).
        images: raw 0-255 pixels, (N, H, W, C) at the model's input size.
        discard_ratio: share of each token's weakest attention weights set to zero in every
            block before the identity is added (sharper maps; 0 is the paper's rollout); a
            share that rounds down to no weight of a row is refused.
        head_fusion: how heads combine: "mean" (the paper), "max" or "min".

    Returns:
        float64 (N, T, T) row-stochastic matrices over the T tokens (class token first).

    Raises:
        ValueError: a model that is not a ViT (or not a `keras.Model`), images of the wrong
            shape or with NaN pixels, or a bad `discard_ratio` or `head_fusion`.

    Example:
    >>> import numpy as np
    >>> from keras_resvit.viz.attention import rollout_matrices
    >>> import keras_resvit as kr
    >>> model = kr.build_vit("Ti/16", image_size=32, num_classes=10)
    >>> rollout_matrices(model, np.zeros((1, 32, 32, 3))).shape
    (1, 5, 5)
    """
    images = _check_arguments(model, images, discard_ratio, head_fusion)
    blocks = attention_layers(model)
    # The attention layers run again on their blocks' normalised inputs, asking for the
    # scores; the model itself stays as built (no layer, node or weight changes).
    normalised = keras.Model(model.input, {norm.name: norm.output for norm, _ in blocks})
    inputs = normalised(images, training=False)
    rollout = None
    for norm, attention in blocks:
        x = inputs[norm.name]
        _, scores = attention(x, x, return_attention_scores=True, training=False)
        # float64 before the heads are fused: a mixed-precision model's scores are float16 or
        # bfloat16, in which numpy would also sum them.
        scores = keras.ops.convert_to_numpy(scores).astype("float64")
        fused = HEAD_FUSIONS[head_fusion](scores, axis=1)
        if discard_ratio:
            drop = int(fused.shape[-1] * discard_ratio)
            if not drop:  # else accepted for nothing
                raise ValueError(
                    f"discard_ratio={discard_ratio!r} of {fused.shape[-1]} tokens discards no "
                    f"weight; valid: 0 (none) or at least 1/{fused.shape[-1]} (one token)."
                )
            weakest = np.argsort(fused, axis=-1)[..., :drop]
            np.put_along_axis(fused, weakest, 0.0, axis=-1)
        # The residual connection carries each token through unchanged: A = W + I, rows to 1.
        fused += np.eye(fused.shape[-1])
        fused /= fused.sum(axis=-1, keepdims=True)
        rollout = fused if rollout is None else fused @ rollout
    return rollout


def attention_rollout(
    model: keras.Model, images, discard_ratio: float = 0.0, head_fusion: str = "mean"
) -> np.ndarray:
    """Attention rollout maps of a ViT over its patch grid.

    Args:
        model: a ViT built by `build_vit` or `build_hybrid_vit` (or loaded from one).
        images: raw 0-255 pixels, (N, H, W, C) at the model's input size.
        discard_ratio: see `rollout_matrices`.
        head_fusion: see `rollout_matrices`.

    Returns:
        float64 (N, grid_h, grid_w): the class token's rollout row over the patches (with
        `pooling="gap"`, the mean of the patch tokens' rows); non-negative, summing to at
        most 1 (the rest is on the class token itself).

    Raises:
        ValueError: as `rollout_matrices`.

    Example:
    >>> import numpy as np
    >>> from keras_resvit.viz.attention import attention_rollout
    >>> import keras_resvit as kr
    >>> model = kr.build_vit("Ti/16", image_size=32, num_classes=10)
    >>> attention_rollout(model, np.zeros((2, 32, 32, 3))).shape
    (2, 2, 2)
    """
    rollout = rollout_matrices(model, images, discard_ratio, head_fusion)
    layer = next(layer for layer in model.layers if isinstance(layer, PositionEmbedding))
    grid = token_grid(model, *np.shape(images)[1:3]) if layer.dynamic_size else layer.grid_size
    # Tokens before the patches: the class token and any register tokens.
    prefix = rollout.shape[-1] - grid[0] * grid[1]
    if any(isinstance(layer, ClassToken) for layer in model.layers):
        rows = rollout[:, 0, prefix:]
    else:
        rows = rollout[:, prefix:, prefix:].mean(axis=1)
    return rows.reshape(len(rows), *grid)


def plot_attention(
    model: keras.Model,
    images,
    path,
    *,
    discard_ratio: float = 0.0,
    head_fusion: str = "mean",
    class_names=None,
) -> Path:
    """Writes a PNG of each image with its attention rollout overlaid, titled by the
    predicted class when the model has a classifier.

    Args:
        model: a ViT (see `attention_rollout`).
        images: raw 0-255 pixels, (N, H, W, C).
        path: the `.png` file to write (atomically); an existing file is replaced only if it
            is a figure keras_resvit wrote.
        discard_ratio: see `rollout_matrices`.
        head_fusion: see `rollout_matrices`.
        class_names: names for the class indices in the titles: a list of strings, one per
            class of the model's classifier.

    Returns:
        The path written.

    Raises:
        ValueError: as `rollout_matrices`, `path` is not a `.png` file, or `class_names` is
            not one string per class (or given for a model without a classifier).

    Example:
    >>> from keras_resvit.viz.attention import plot_attention
    >>> import keras_resvit as kr
    >>> (images, _), _ = kr.data.load_digits()
    >>> vit = kr.build_vit("Ti/16", image_size=32, num_classes=10)
    >>> plot_attention(vit, images[:4], "attention.png")
    PosixPath('attention.png')
    """
    path = check_png_path(path)
    images = _check_arguments(model, images, discard_ratio, head_fusion)
    classifier = "predictions" in [layer.name for layer in model.layers]
    if class_names is not None and not classifier:
        raise ValueError(
            f"class_names name the classes the titles predict, but model {model.name!r} has "
            'no classifier (a "predictions" layer): its figure has no titles; drop them.'
        )
    names = check_class_names(class_names, model.output_shape[-1] if classifier else None)
    maps = attention_rollout(model, images, discard_ratio, head_fusion)
    titles = [None] * len(images)
    if classifier:
        scores = keras.ops.convert_to_numpy(model(images, training=False))
        titles = [label(index, names) for index in np.argmax(scores, axis=-1)]
    # Each map scaled to peak at 1, so the colours compare patches within an image.
    maps = maps / np.maximum(maps.max(axis=(1, 2), keepdims=True), 1e-12)
    figure, axes = image_grid(len(images))
    for ax, image, heatmap, title in zip(axes, images, maps, titles, strict=True):
        show_image(ax, image, heatmap, title)
    return save_png(figure, path)
