"""Grad-CAM (Selvaraju et al. 2017): where a convolutional net looks for a class.

The class score's gradient with respect to a feature map, averaged over space, weights the
map's channels; the ReLU of the weighted sum, upsampled to the input, is the heatmap. The
score is the classifier's logit (before softmax): a confident softmax saturates and its
gradient vanishes.
"""

from pathlib import Path

import keras
import numpy as np

from keras_resvit.base.backend import gradient
from keras_resvit.models.common import classifier_layer, functional_model, is_vit
from keras_resvit.models.features import stage_outputs
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


def _classifier(model):
    check_plot_model(model)
    if is_vit(model):
        raise ValueError(
            f"model={model.name!r} is a ViT, which has no convolutional feature map for Grad-CAM; "
            "use keras_resvit.viz.attention_rollout (keras-resvit plot attention)."
        )
    return classifier_layer(model, "Grad-CAM needs a classifier")


def _split(model, layer):
    """(model up to the feature map, head from it to the classifier's input, classifier)."""
    classifier = _classifier(model)
    # A Sequential's own `input` is undefined even when built on a keras.Input; the
    # functional model of its layers has one.
    graph = functional_model(model, "Grad-CAM")
    outputs = list(stage_outputs(model).values())
    if layer is None:
        if not outputs:
            raise ValueError(
                f"model={model.name!r} has no ResNet block outputs; pass layer=NAME, a layer "
                "whose output is the (N, H, W, C) feature map to explain."
            )
        layer = outputs[-1]
    if layer not in [x.name for x in model.layers]:
        raise ValueError(
            f"layer={layer!r} is not a layer of model {model.name!r}; block outputs such as "
            f"{outputs[-3:]} are valid."
        )
    feature = model.get_layer(layer).output
    if len(feature.shape) != 4:
        raise ValueError(
            f"layer={layer!r} outputs shape {tuple(feature.shape)}; Grad-CAM needs a "
            "(N, H, W, C) feature map."
        )
    try:
        head = keras.Model(feature, classifier.input)
    except ValueError:
        # Inside a residual block the later layers also read the shortcut, which the
        # feature map alone does not determine.
        raise ValueError(
            f"layer={layer!r} does not determine the classifier's input on its own (it is "
            f"inside a residual block); use a block output such as {outputs[-3:]}."
        ) from None
    return keras.Model(graph.input, feature), head, classifier


def _check_class_index(class_index, count, num_classes):
    """None, or one class per image from a shared int or one int per image."""
    if class_index is None:
        return None
    indices = np.asarray(class_index)
    valid = indices.ndim in (0, 1) and np.issubdtype(indices.dtype, np.integer)
    valid = valid and (indices.ndim == 0 or len(indices) == count)
    if not valid or indices.min() < 0 or indices.max() >= num_classes:
        raise ValueError(
            f"class_index={class_index!r} must be None (the predicted class), an int in "
            f"[0, {num_classes}) or {count} such ints (one per image)."
        )
    return np.broadcast_to(indices, (count,))


def _grad_cam(model, images, class_index, layer):
    """(heatmaps, the class each explains); see `grad_cam`."""
    features_model, head, classifier = _split(model, layer)
    if getattr(classifier.dtype_policy, "quantization_mode", None):
        raise ValueError(
            f"model={model.name!r} has a quantized classifier "
            f"({classifier.dtype_policy.quantization_mode}), whose kernel holds integers "
            "without their scales: Grad-CAM's class scores would be wrong. Explain the model "
            "before model.quantize(...)."
        )
    images = check_images(model, images)
    classes = _check_class_index(class_index, len(images), classifier.units)
    # Scores, gradients and the weighted sum in float32 whatever the model computes in: under
    # mixed precision the feature map is float16/bfloat16 and the classifier float32, which
    # TensorFlow does not promote, and half-precision gradients lose the small channel weights.
    features = keras.ops.cast(features_model(images, training=False), "float32")

    def logits(feature_map):
        pooled = keras.ops.cast(head(feature_map, training=False), "float32")
        scores = keras.ops.matmul(pooled, keras.ops.cast(classifier.kernel, "float32"))
        if classifier.bias is None:
            return scores
        return scores + keras.ops.cast(classifier.bias, "float32")

    if classes is None:
        classes = np.argmax(keras.ops.convert_to_numpy(logits(features)), axis=-1)
    one_hot = keras.ops.one_hot(classes, classifier.units, dtype="float32")
    # Images do not interact (BatchNorm runs in inference mode), so the gradient of the
    # summed scores holds each image's own gradient.
    grads = gradient(lambda f: keras.ops.sum(logits(f) * one_hot), features)
    weights = keras.ops.mean(grads, axis=(1, 2), keepdims=True)
    cam = keras.ops.relu(keras.ops.sum(weights * features, axis=-1, keepdims=True))
    cam = keras.ops.image.resize(cam, images.shape[1:3], interpolation="bilinear")
    cam = keras.ops.convert_to_numpy(cam)[..., 0]
    peak = cam.max(axis=(1, 2), keepdims=True)
    heatmaps = np.where(peak > 0, cam / np.maximum(peak, 1e-12), 0.0)
    return heatmaps.astype("float32"), classes


def grad_cam(model: keras.Model, images, class_index=None, layer: str | None = None) -> np.ndarray:
    """Grad-CAM heatmaps of a convolutional classifier, at the input resolution.

    Args:
        model: a classifier with a Dense layer named "predictions" (any ResNet built here with
            `include_top=True`, or loaded from one; or a functional model, or a Sequential on
            a keras.Input, of your own); not a ViT.
        images: raw 0-255 pixels, (N, H, W, C) at the model's input size.
        class_index: the class to explain: None (each image's predicted class), an int, or one
            int per image.
        layer: the feature map to explain; default the last ResNet block's output
            (`stage3_block3_out` in resnet20, `post_relu` in v2 nets). Another block output
            gives a finer, less class-specific map.

    Returns:
        float32 (N, H, W) heatmaps in [0, 1], each scaled to peak at 1 (all zeros where no
        location raises the score).

    Raises:
        ValueError: not a `keras.Model`, a ViT or a model without a "predictions" classifier,
            an unknown layer or one inside a residual block, images of the wrong shape or with
            NaN pixels, or a bad `class_index`.

    Example:
    >>> import numpy as np
    >>> from keras_resvit.viz.gradcam import grad_cam
    >>> import keras_resvit as kr
    >>> model = kr.build_resnet(20, stem="cifar")
    >>> grad_cam(model, np.zeros((2, 32, 32, 3))).shape
    (2, 32, 32)
    """
    return _grad_cam(model, images, class_index, layer)[0]


def plot_grad_cam(
    model: keras.Model,
    images,
    path,
    *,
    class_index=None,
    layer: str | None = None,
    class_names=None,
) -> Path:
    """Writes a PNG of each image with its Grad-CAM heatmap overlaid, titled by the class.

    Args:
        model: a convolutional classifier (see `grad_cam`).
        images: raw 0-255 pixels, (N, H, W, C).
        path: the `.png` file to write (atomically); an existing file is replaced only if it
            is a figure keras_resvit wrote.
        class_index: see `grad_cam`.
        layer: see `grad_cam`.
        class_names: names for the class indices in the titles: a list of strings, one per
            class of the classifier.

    Returns:
        The path written.

    Raises:
        ValueError: as `grad_cam`, `path` is not a `.png` file, or `class_names` is not one
            string per class.

    Example:
    >>> from keras_resvit.viz.gradcam import plot_grad_cam
    >>> import keras_resvit as kr
    >>> (images, _), _ = kr.data.load_digits()
    >>> plot_grad_cam(kr.create_model("resnet20"), images[:4], "gradcam.png")
    PosixPath('gradcam.png')
    """
    path = check_png_path(path)
    names = check_class_names(class_names, _classifier(model).units)
    heatmaps, classes = _grad_cam(model, images, class_index, layer)
    images = np.asarray(images)
    figure, axes = image_grid(len(images))
    for ax, image, heatmap, index in zip(axes, images, heatmaps, classes, strict=True):
        show_image(ax, image, heatmap, label(index, names))
    return save_png(figure, path)
