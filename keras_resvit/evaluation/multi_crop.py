"""The ResNet paper's two tests (He et al. 2016, Section 3.4): 10-crop (`multi_crop_predict`,
`multi_crop_evaluate`) and fully-convolutional multi-scale (`fully_convolutional_predict`)."""

import keras
import numpy as np

from keras_resvit.base.model_files import deep_graph
from keras_resvit.base.validation import check_bool, check_model
from keras_resvit.data.checks import check_pixels
from keras_resvit.data.transforms import resize_shorter_side, ten_crop
from keras_resvit.models.common import is_vit

# He et al. (2016), Section 3.4, the multi-scale test of Table 4's best single-model results:
# shorter side in {224, 256, 384, 480, 640}.
RESNET_SCALES = (224, 256, 384, 480, 640)
CROPS = ("center", "ten")


def _check_multi_crop(scales, crops, crop_size):
    if crops not in CROPS:
        raise ValueError(f"crops={crops!r} is not valid; valid: {list(CROPS)}.")
    scales = (scales,) if isinstance(scales, int) else tuple(scales)
    if not scales or not all(isinstance(s, int) and s >= crop_size for s in scales):
        raise ValueError(f"scales={scales!r} is not valid; pass ints >= the crop size {crop_size}.")
    return scales


def multi_crop_predict(model, images, *, scales=(256,), crops: str = "ten", batch_size=32):
    """Averages the model's scores over crops and scales (He et al. 2016, Section 3.4).

    Each batch is resized so that its shorter side is each of `scales`; the model scores the
    `crops` ("ten": corners, center and flips; "center": one) at its input size, and the
    scores (softmax outputs) are averaged.

    Args:
        model: a `keras.Model` with a fixed square input size.
        images: raw 0-255 pixels (N, H, W, C), all of one size.
        scales: shorter-side sizes, each >= the model's input size; e.g. `RESNET_SCALES`.
        crops: "ten" or "center".
        batch_size: images per model call.

    Returns:
        NumPy array (N, num_classes) of averaged scores.

    Example:
    >>> import keras_resvit as kr, numpy as np
    >>> model = kr.create_model("resnet20")
    >>> multi_crop_predict(model, np.zeros((2, 40, 40, 3)), scales=(36, 40)).shape
    (2, 10)
    """
    crop_size = model.input_shape[1]
    scales = _check_multi_crop(scales, crops, crop_size)
    images = np.asarray(images, "float32")

    def views(resized):
        crops_of = ten_crop(resized, crop_size)
        return crops_of if crops == "ten" else crops_of[4:5]

    def score(view):
        return keras.ops.convert_to_numpy(model(view, training=False))

    return _average_scores(images, scales, views, score, batch_size)


def _average_scores(images, scales, views, score, batch_size):
    """The mean of `score(view)` over every view (`views(resized)`) of each batch of `images`
    resized to each of `scales` (shorter side)."""
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = keras.ops.convert_to_tensor(images[start : start + batch_size])
        scores = [
            np.asarray(score(view), "float64")
            for scale in scales
            for view in views(resize_shorter_side(batch, scale))
        ]
        outputs.append(np.mean(scores, axis=0))
    return np.concatenate(outputs).astype("float32")


def multi_crop_evaluate(model, data, *, scales=(256,), crops="ten", top_k=(1, 5)) -> dict:
    """Top-k accuracies of `multi_crop_predict` over a dataset or `(images, labels)` arrays.

    Args:
        model: a `keras.Model` with a fixed square input size.
        data: `(images, labels)` arrays, or an iterable of such batches (a `tf.data.Dataset`
            of raw, uncropped images with integer labels).
        scales: shorter-side sizes (see `multi_crop_predict`).
        crops: "ten" or "center".
        top_k: the k of each reported accuracy.

    Returns:
        `{"top1": ..., "top5": ...}` for the requested k.

    Raises:
        ValueError: a batch with NaN pixels, or without one valid label per image.

    Example:
    >>> import keras_resvit as kr, numpy as np
    >>> model = kr.create_model("resnet20")
    >>> data = (np.zeros((4, 32, 32, 3)), np.arange(4))
    >>> sorted(multi_crop_evaluate(model, data, scales=(32,), crops="center"))
    ['top1', 'top5']
    """
    batches = [data] if isinstance(data, tuple) else data
    hits = {k: 0 for k in top_k}
    count = 0
    for number, (images, labels) in enumerate(batches, 1):
        images, labels = np.asarray(images), np.asarray(labels).reshape(-1)
        check_pixels(f"data batch {number} images", images)
        classes = model.output_shape[-1]
        if len(labels) != len(images) or not np.all((labels >= 0) & (labels < classes)):
            raise ValueError(
                f"data batch {number} has {len(images)} images and labels {labels[:8]}; "
                f"expected one integer label in [0, {classes}) per image."
            )
        scores = multi_crop_predict(model, images, scales=scales, crops=crops)
        ranked = np.argsort(-scores, axis=-1)
        for k in top_k:
            hits[k] += int((ranked[:, :k] == labels[:, None]).any(axis=-1).sum())
        count += len(labels)
    return {f"top{k}": hits[k] / max(count, 1) for k in top_k}


def _check_fully_convolutional(model, images, scales, flip, batch_size):
    """The validated images (float32 array) and scales (tuple), or one clear ValueError."""
    check_model("model", model)
    if is_vit(model):
        raise ValueError(
            f"model={model.name!r} is a ViT: its position embeddings fix the number of tokens, "
            "so it has no fully-convolutional form; use multi_crop_predict (crops at the "
            "model's input size) instead."
        )
    if len(model.inputs) != 1 or len(model.input_shape) != 4:
        raise ValueError(
            f"model={model.name!r} takes inputs {model.input_shape}; valid: one image input "
            "(batch, height, width, channels)."
        )
    channels = model.input_shape[-1]
    try:
        array = np.asarray(images, "float32")
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"images of type {type(images).__name__} are not valid; valid: an array "
            f"(N, H, W, {channels}) of raw 0-255 pixels, all images of one size."
        ) from error
    if array.ndim != 4 or array.shape[-1] != channels or not len(array):
        raise ValueError(
            f"images of shape {array.shape} are not valid; valid: (N, H, W, {channels}) with "
            "N >= 1, all images of one size."
        )
    check_pixels("images", array)
    values = tuple(scales) if isinstance(scales, (tuple, list)) else (scales,)
    integers = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
    if not values or not integers or min(values) < 1:
        raise ValueError(
            f"scales={scales!r} is not valid; valid: a positive int or a sequence of them (the "
            f"shorter side after resizing), e.g. RESNET_SCALES {RESNET_SCALES}."
        )
    check_bool("flip", flip)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is not valid; valid: a positive int.")
    return array, tuple(int(v) for v in values)


def _any_size(model):
    """`model` on an input of any height and width, its weights kept, or ValueError.

    A ResNet's convolutions and global average pooling fit any size, so cloning its layers onto
    a (None, None, C) input gives the fully-convolutional form; a layer that needs the size
    (Flatten before a Dense) fails to build or changes the output shape.
    """
    channels = model.input_shape[-1]
    # The new input in the model's own input structure (a functional model's may be a list).
    structure = model.inputs if isinstance(model, keras.Sequential) else model.input
    inputs = keras.tree.map_structure(
        lambda t: keras.Input((None, None, channels), dtype=t.dtype, name=t.name), structure
    )
    try:
        with deep_graph():
            sized = keras.models.clone_model(model, input_tensors=inputs)
    except (ValueError, TypeError) as error:
        sized, why = None, str(error).strip().splitlines()[0]
    else:
        why = f"on other sizes its output shape is {sized.output_shape}"
    if sized is None or sized.output_shape != model.output_shape:
        raise ValueError(
            f"model={model.name!r} has no fully-convolutional form ({why}); valid: a "
            "convolutional net ending in global pooling, such as a ResNet. Use "
            "multi_crop_predict for a model of one input size."
        )
    sized.set_weights(model.get_weights())
    return sized


def fully_convolutional_predict(
    model: keras.Model,
    images,
    *,
    scales=RESNET_SCALES,
    flip: bool = True,
    batch_size: int = 32,
) -> np.ndarray:
    """Averages a convolutional net's scores over whole images at several scales.

    He et al. (2016), Section 3.4: "for best results, we adopt the fully-convolutional form
    [...] and average the scores at multiple scales (images are resized such that the shorter
    side is in {224, 256, 384, 480, 640})" (Table 4). The model, built for one input size, is
    cloned onto an input of any size with the same weights; each image is resized (shape kept)
    so that its shorter side is each scale and scored whole, and with `flip` its left-right
    mirror too, as in the fully-convolutional test of VGG that the paper follows. Every view
    counts the same in the average. `multi_crop_predict` is the 10-crop test.

    Args:
        model: a convolutional `keras.Model` ending in global pooling and a classifier (every
            ResNet here); a ViT is refused.
        images: raw 0-255 pixels (N, H, W, C), all of one size.
        scales: shorter-side sizes, an int or a sequence of positive ints.
        flip: also score each resized image's horizontal flip.
        batch_size: images per model call.

    Returns:
        NumPy array (N, num_classes) of averaged scores (softmax outputs for a softmax model).

    Raises:
        ValueError: for an invalid argument, or a model that needs a fixed input size.

    Example:
    >>> import keras_resvit as kr, numpy as np
    >>> model = kr.create_model("resnet20")
    >>> fully_convolutional_predict(model, np.zeros((2, 40, 48, 3)), scales=(32, 40)).shape
    (2, 10)
    """
    images, scales = _check_fully_convolutional(model, images, scales, flip, batch_size)
    sized = _any_size(model)

    def views(resized):
        return (resized, keras.ops.flip(resized, axis=2)) if flip else (resized,)

    return _average_scores(images, scales, views, sized.predict_on_batch, batch_size)
