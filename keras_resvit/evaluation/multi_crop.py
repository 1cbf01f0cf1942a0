"""The ResNet paper's two tests (He et al. 2016, Section 3.4): 10-crop (`multi_crop_predict`,
`multi_crop_evaluate`) and fully-convolutional multi-scale (`fully_convolutional_predict`)."""

import keras
import numpy as np

from keras_resvit.base.class_names import model_class_names
from keras_resvit.base.model_files import deep_graph
from keras_resvit.base.validation import (
    check_bool,
    check_choice,
    check_finite_scores,
    check_int,
    check_model,
)
from keras_resvit.data.checks import check_class_names_match, check_pixels, check_unaugmented
from keras_resvit.data.image_files import MAX_IMAGE_PIXELS
from keras_resvit.data.transforms import resize_shorter_side, shorter_side_size, ten_crop
from keras_resvit.models.common import (
    check_classifier,
    is_vit,
    probabilities,
    score_activation,
)

# He et al. (2016), Section 3.4, the multi-scale test of Table 4's best single-model results:
# shorter side in {224, 256, 384, 480, 640}.
RESNET_SCALES = (224, 256, 384, 480, 640)
CROPS = ("center", "ten")


def _int_tuple(value):
    """`value` (an int or a sequence of ints) as a tuple of ints, or None when it is neither."""
    many = isinstance(value, (tuple, list, range)) or np.ndim(value) == 1
    values = tuple(value) if many else (value,)
    if values and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return tuple(int(v) for v in values)
    return None


def _check_scales(scales, minimum: int, what: str):
    """`scales` as a tuple of ints >= `minimum`, or one clear ValueError."""
    values = _int_tuple(scales)
    if values is None or min(values) < minimum:
        raise ValueError(
            f"scales={scales!r} is not valid; valid: {what} or a non-empty sequence of them "
            f"(the shorter side after resizing), e.g. RESNET_SCALES {RESNET_SCALES}."
        )
    return values


def _check_model(model):
    """`model` must be a `keras.Model` with one image input and one output."""
    check_model("model", model)
    if len(model.inputs) != 1 or len(model.input_shape) != 4 or len(model.outputs) != 1:
        raise ValueError(
            f"model={model.name!r} takes inputs {model.input_shape} and gives outputs "
            f"{model.output_shape}; valid: one image input (batch, height, width, channels) "
            "and one output."
        )


def _check_images(argument: str, images, channels: int, warned=None):
    """`images` as a float32 array (N, H, W, `channels`) of finite pixels, or ValueError;
    `warned`: see `check_pixels`."""
    try:
        array = np.asarray(images, "float32")
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{argument} of type {type(images).__name__} are not valid; valid: an array "
            f"(N, H, W, {channels}) of raw 0-255 pixels, all images of one size."
        ) from error
    if array.ndim == 4 and array.shape[-1] != channels:
        raise ValueError(
            f"{argument} of shape {array.shape} have {array.shape[-1]} channels, but the model "
            f"takes {channels}; valid: (N, H, W, {channels})."
        )
    if array.ndim != 4 or 0 in array.shape:
        raise ValueError(
            f"{argument} of shape {array.shape} are not valid; valid: a 4-D batch "
            f"(N, H, W, {channels}) with N, H, W >= 1, all images of one size (one image x "
            "is the batch x[None])."
        )
    check_pixels(argument, array, warned=warned)
    return array


def _check_multi_crop(model, scales, crops, batch_size):
    """The crop size and scales (a tuple) of the 10-crop test, or one clear ValueError."""
    _check_model(model)
    shape = model.input_shape
    if shape[1] is None or shape[1] != shape[2]:
        raise ValueError(
            f"model={model.name!r} takes inputs {shape}; valid: a fixed square input size (the "
            "crop size). "
            + (
                "Fix a ViT's size with kr.resize_vit(model, image_size=...)."
                if is_vit(model)
                else "fully_convolutional_predict scores a model of any input size."
            )
        )
    check_choice("crops", crops, CROPS)
    scales = _check_scales(scales, shape[1], f"an int >= the crop size {shape[1]}")
    check_int("batch_size", batch_size)
    return shape[1], scales


def multi_crop_predict(model, images, *, scales=(256,), crops: str = "ten", batch_size=32):
    """Averages the model's scores over crops and scales (He et al. 2016, Section 3.4).

    Each batch is resized so that its shorter side is each of `scales`; the model scores the
    `crops` ("ten": corners, center and flips; "center": one) at its input size, and the
    scores are averaged as probabilities: softmax outputs, or the softmax of a logits model's
    outputs (`classifier_activation=None`), so both rank classes alike.

    Args:
        model: a `keras.Model` with a fixed square input size (the crop size) and one output.
        images: raw 0-255 pixels (N, H, W, C), N >= 1, all of one size, C the model's channels.
        scales: shorter-side sizes, an int or a sequence of ints, each >= the model's input
            size; e.g. `RESNET_SCALES`.
        crops: "ten" or "center".
        batch_size: images per model call, a positive int.

    Returns:
        NumPy array (N, num_classes) of averaged probabilities (of a model without a
        classifier, `include_top=False`: its averaged outputs).

    Raises:
        ValueError: for an invalid argument, NaN or infinite pixels, or a classifier whose
            activation gives neither probabilities nor logits (a tanh).

    Example:
    >>> from keras_resvit.evaluation.multi_crop import multi_crop_predict
    >>> import keras_resvit as kr, numpy as np
    >>> model = kr.create_model("resnet20")
    >>> multi_crop_predict(model, np.zeros((2, 40, 40, 3)), scales=(36, 40)).shape
    (2, 10)
    """
    crop_size, scales = _check_multi_crop(model, scales, crops, batch_size)
    images = _check_images("images", images, model.input_shape[-1])
    return _crop_scores(model, images, crop_size, scales, crops, batch_size)


def _crop_scores(model, images, crop_size, scales, crops, batch_size):
    """`multi_crop_predict` on checked arguments."""

    def views(resized):
        crops_of = ten_crop(resized, crop_size)
        return crops_of if crops == "ten" else crops_of[4:5]

    def score(view):
        return keras.ops.convert_to_numpy(model(view, training=False))

    scores = _average_scores(model, images, scales, views, score, batch_size)
    return _checked_scores(model, scores, "images")


def _average_scores(model, images, scales, views, score, batch_size):
    """The mean of the probabilities of `score(view)` (`model`'s outputs) over every view
    (`views(resized)`) of each batch of `images` resized to each of `scales` (shorter side).
    A logits model's outputs go through a softmax first: the paper averages softmax scores,
    and a mean of logits would rank classes otherwise than the same model ending in softmax.
    The outputs of a model that does not end in a classifier (features) are averaged as they
    are."""
    activation = score_activation(model)

    def convert(scores):
        return scores if activation is None else probabilities(scores, activation, model.name)

    outputs = []
    for start in range(0, len(images), batch_size):
        _check_resized_size(images[start : start + batch_size].shape, scales)
        batch = keras.ops.convert_to_tensor(images[start : start + batch_size])
        scores = [
            np.asarray(convert(score(view)), "float64")
            for scale in scales
            for view in views(resize_shorter_side(batch, scale))
        ]
        outputs.append(np.mean(scores, axis=0))
    return np.concatenate(outputs).astype("float32")


def _check_resized_size(shape, scales):
    """A batch of `shape` resized to the largest of `scales` must stay within
    `MAX_IMAGE_PIXELS` pixels (a mistyped scale would exhaust the memory in the backend)."""
    count, height, width = shape[:3]
    resized = shorter_side_size(height, width, max(scales))
    pixels = count * resized[0] * resized[1]
    if pixels > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"scales={scales!r}: shorter side {max(scales)} makes {count} {height}x{width} "
            f"image(s) {resized[0]}x{resized[1]}, {pixels:,} pixels, over the limit of "
            f"{MAX_IMAGE_PIXELS:,} (keras_resvit.data.image_files.MAX_IMAGE_PIXELS); valid: "
            "smaller scales (the ResNet paper's reach 640), or a smaller batch_size."
        )


def _checked_scores(model, scores, what):
    check_finite_scores(model.name, scores, what)
    return scores


def _is_batch(item) -> bool:
    """Whether `item` is an (images, labels) pair rather than a batch of images."""
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        return False
    try:
        return np.ndim(item[0]) == 4
    except ValueError:  # a ragged pair of arrays
        return False


def _batches(data):
    """`data` as an iterator of batches: one (images, labels) pair (a tuple or a list of
    two), or an iterable of such pairs."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and not _is_batch(data[0]):
        return iter([data])
    if not isinstance(data, (str, bytes, np.ndarray, dict)):
        try:
            return iter(data)
        except TypeError:
            pass
    raise ValueError(
        f"data of type {type(data).__name__} is not valid; valid: (images, labels) arrays, or "
        "an iterable of such batches (a tf.data.Dataset)."
    )


def _check_labels(number, labels, count, classes):
    """A batch's labels as an int64 array (count,) in [0, classes), or one clear ValueError."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) != count:
        raise ValueError(
            f"data batch {number} has {count} images and labels of shape {labels.shape}; "
            f"expected one integer label in [0, {classes}) per image, shape ({count},) (for "
            "one-hot labels, pass labels.argmax(-1))."
        )
    kind = labels.dtype.kind
    finite = kind == "f" and np.isfinite(labels).all()
    if not (kind in "iu" or (finite and (labels == np.round(labels)).all())):
        raise ValueError(
            f"data batch {number} has labels {labels[:8]} of dtype {labels.dtype}; expected "
            f"integer class indices in [0, {classes})."
        )
    bad = np.flatnonzero((labels < 0) | (labels >= classes))
    if len(bad):
        raise ValueError(
            f"data batch {number} has {count} images and labels {labels[:8]}; label "
            f"{labels[bad[0]]} (image {bad[0]}) is out of range: expected one integer label in "
            f"[0, {classes}) per image."
        )
    return labels.astype("int64")


def multi_crop_evaluate(
    model, data, *, scales=(256,), crops="ten", top_k=None, batch_size=32
) -> dict:
    """Top-k accuracies of `multi_crop_predict` over a dataset or `(images, labels)` arrays.

    Args:
        model: a `keras.Model` with a fixed square input size and one output
            (batch, num_classes).
        data: `(images, labels)` arrays (a tuple or a list of two), or an iterable of such
            batches (a `tf.data.Dataset` of raw, uncropped images with integer labels), at
            least one image in all.
        scales: shorter-side sizes (see `multi_crop_predict`).
        crops: "ten" or "center".
        top_k: the k of each reported accuracy, an int or a sequence of ints in
            [1, num_classes]; None: (1, 5), or (1,) for a model of 5 classes or fewer.
        batch_size: images per model call, a positive int (a dataset's batches are split
            into calls of at most this many images).

    Returns:
        `{"top1": ..., "top5": ...}`, one accuracy per k.

    Raises:
        ValueError: for an invalid argument, a model that does not end in a classifier
            (`include_top=False`), no images, a batch with NaN pixels, or a batch without one
            integer label in [0, num_classes) per image.

    Example:
    >>> from keras_resvit.evaluation.multi_crop import multi_crop_evaluate
    >>> import keras_resvit as kr, numpy as np
    >>> model = kr.create_model("resnet20")
    >>> data = (np.zeros((4, 32, 32, 3)), np.arange(4))
    >>> sorted(multi_crop_evaluate(model, data, scales=(32,), crops="center"))
    ['top1', 'top5']
    """
    crop_size, scales = _check_multi_crop(model, scales, crops, batch_size)
    check_classifier(model, "multi_crop_evaluate ranks one score per class")
    check_unaugmented("data", data, "the accuracies")
    classes = model.output_shape[-1]
    ks = _int_tuple(top_k) if top_k is not None else tuple(k for k in (1, 5) if k <= classes)
    if ks is None or not 1 <= min(ks) <= max(ks) <= classes:
        raise ValueError(
            f"top_k={top_k!r} is not valid; valid: an int or a non-empty sequence of ints in "
            f"[1, {classes}] (the model has {classes} classes)."
        )
    # A dataset of other classes (or of a folder that lacks one) would be scored silently.
    model_names = model_class_names(model)
    check_class_names_match("data", getattr(data, "class_names", None), model_names, "the model")
    hits = dict.fromkeys(ks, 0)
    count = 0
    warned = set()  # one warning for the read, not one per batch
    for number, batch in enumerate(_batches(data), 1):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(
                f"data batch {number} of type {type(batch).__name__} is not valid; valid: an "
                "(images, labels) pair."
            )
        images = _check_images(
            f"data batch {number} images", batch[0], model.input_shape[-1], warned
        )
        labels = _check_labels(number, batch[1], len(images), classes)
        scores = _crop_scores(model, images, crop_size, scales, crops, batch_size)
        ranked = np.argsort(-scores, axis=-1)
        for k in hits:
            hits[k] += int((ranked[:, :k] == labels[:, None]).any(axis=-1).sum())
        count += len(labels)
    if not count:
        raise ValueError(
            f"data of type {type(data).__name__} holds no batches; valid: (images, labels) "
            "arrays or an iterable of such batches, with at least one image."
        )
    return {f"top{k}": hits[k] / count for k in hits}


def _check_fully_convolutional(model, images, scales, flip, batch_size):
    """The validated images (float32 array) and scales (tuple), or one clear ValueError."""
    _check_model(model)
    if is_vit(model):
        raise ValueError(
            f"model={model.name!r} is a ViT: its position embeddings fix the number of tokens, "
            "so it has no fully-convolutional form; use multi_crop_predict (crops at the "
            "model's input size) instead."
        )
    array = _check_images("images", images, model.input_shape[-1])
    # Smaller images leave the net less than its output stride (32 for an ImageNet ResNet),
    # or less than the size it was built for: a mistyped scale (1 for 100) scores a few pixels.
    sizes = [d for d in model.input_shape[1:3] if d is not None]
    least = min([32, *sizes])
    scales = _check_scales(scales, least, f"an int >= {least}")
    check_bool("flip", flip)
    check_int("batch_size", batch_size)
    return array, scales


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

    def clone(layer):  # a model inside (a wrapped classifier) takes any size too
        if isinstance(layer, keras.Model):
            return _any_size(layer)
        return layer.__class__.from_config(layer.get_config())

    try:
        with deep_graph():
            sized = keras.models.clone_model(model, input_tensors=inputs, clone_function=clone)
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
        scales: shorter-side sizes, an int or a sequence of ints, each >= 32 (or >= the
            model's input size where that is below 32).
        flip: also score each resized image's horizontal flip.
        batch_size: images per model call.

    Returns:
        NumPy array (N, num_classes) of averaged probabilities (a logits model's outputs
        through a softmax, as in `multi_crop_predict`).

    Raises:
        ValueError: for an invalid argument, a model that needs a fixed input size, or a
            classifier whose activation gives neither probabilities nor logits.

    Example:
    >>> from keras_resvit.evaluation.multi_crop import fully_convolutional_predict
    >>> import keras_resvit as kr, numpy as np
    >>> model = kr.create_model("resnet20")
    >>> fully_convolutional_predict(model, np.zeros((2, 40, 48, 3)), scales=(32, 40)).shape
    (2, 10)
    """
    images, scales = _check_fully_convolutional(model, images, scales, flip, batch_size)
    sized = _any_size(model)

    def views(resized):
        return (resized, keras.ops.flip(resized, axis=2)) if flip else (resized,)

    scores = _average_scores(model, images, scales, views, sized.predict_on_batch, batch_size)
    return _checked_scores(model, scores, "images")
