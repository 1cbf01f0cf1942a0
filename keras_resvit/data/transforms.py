"""Image transforms of evaluation pipelines: the evaluation resize-and-center-crop, its crop
ratio, shorter-side resizing and the ten crops of a multi-crop test; the transforms
`load_dataset` applies to each example (`pipeline_transforms`).

The multi-crop and multi-scale tests that use them are in `keras_resvit.evaluation`.
"""

import keras

from keras_resvit.base.backend import dtype_policy
from keras_resvit.base.lazy import tf
from keras_resvit.base.validation import check_int, check_number
from keras_resvit.layers.crops import ResizeCenterCrop

CROP_RATIO = 0.875  # 224 / 256: the standard ImageNet evaluation crop.
# The smallest crop ratio a loader takes: below it, the resize before the crop
# (`image_size / crop_ratio`) grows without bound (1e-6 asks for terapixel images).
MIN_CROP_RATIO = 0.25
# Augmentation presets whose training views are whole images (resized to the output, then
# padded and cropped back): their evaluation resizes whole images too, whatever their size.
WHOLE_IMAGE_PRESETS = ("resnet_cifar",)


def check_crop_ratio(crop_ratio, none_ok: bool = False) -> None:
    """`crop_ratio` must be an evaluation crop ratio: a number in [MIN_CROP_RATIO, 1]."""
    check_number(
        "crop_ratio",
        crop_ratio,
        MIN_CROP_RATIO,
        1,
        include_low=True,
        include_high=True,
        none_ok=none_ok,
    )


@dtype_policy("float32")  # pixels in float32 whatever a global mixed policy says
def evaluation_transform(image_size: int, crop_ratio: float = CROP_RATIO) -> ResizeCenterCrop:
    """Resize the shorter side to `image_size / crop_ratio`, then center crop `image_size`.

    The layer runs inside `tf.data` under any backend, and eagerly on arrays.

    Args:
        image_size: output height and width.
        crop_ratio: share of the resized shorter side kept, in (0, 1]; 1.0 keeps all of it.

    Returns:
        A `ResizeCenterCrop` layer.

    Example:
    >>> import numpy as np
    >>> from keras_resvit.data.transforms import evaluation_transform
    >>> tuple(evaluation_transform(224)(np.zeros((375, 500, 3), "float32")).shape)
    (224, 224, 3)
    """
    return ResizeCenterCrop(image_size, image_size, crop_ratio=crop_ratio)


def evaluation_crop_ratio(shorter_side: float, image_size: int) -> float:
    """The evaluation crop ratio for images whose shorter side is `shorter_side` pixels.

    Photos much larger than the output (shorter side >= `image_size / CROP_RATIO`: 256 for
    224, so ImageNet's 375x500 photos) get the standard 0.875 center crop, which matches the
    zoom of scale and Inception-style training crops. Images about the output size or smaller
    (CIFAR's 32x32 at 32, or upsampled to 224 for fine-tuning) are resized whole (1.0), as
    training saw them: a 0.875 crop would zoom them 1.14x against training.

    Args:
        shorter_side: the images' typical shorter side, in pixels.
        image_size: output height and width.

    Returns:
        `CROP_RATIO` (0.875) or 1.0, for `evaluation_transform`.

    Example:
    >>> from keras_resvit.data.transforms import evaluation_crop_ratio
    >>> evaluation_crop_ratio(375, 224), evaluation_crop_ratio(32, 32)
    (0.875, 1.0)
    """
    check_number("shorter_side", shorter_side, 0)
    check_int("image_size", image_size)
    return CROP_RATIO if shorter_side >= image_size / CROP_RATIO else 1.0


def _batch(argument, images):
    """`images` as a tensor, or one ValueError unless it is a batch (N, H, W, C)."""
    images = keras.ops.convert_to_tensor(images)
    if len(images.shape) != 4:
        raise ValueError(
            f"{argument} of shape {tuple(images.shape)} are not a batch; expected (N, height, "
            "width, channels) (one image x is the batch x[None])."
        )
    return images


def resize_shorter_side(images, size: int, antialias: bool = True):
    """Bilinear resize of a batch (N, H, W, C) so that its shorter side is `size`."""
    images = _batch("images", images)
    check_int("size", size)
    new_size = shorter_side_size(images.shape[1], images.shape[2], size)
    return keras.ops.image.resize(images, new_size, antialias=antialias)


def shorter_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) of a `height` x `width` image resized so that its shorter side is
    `size`, its aspect kept.

    Raises:
        ValueError: unless `height`, `width` and `size` are positive ints.
    """
    for argument, value in (("height", height), ("width", width), ("size", size)):
        check_int(argument, value)
    factor = size / min(height, width)
    return max(1, round(height * factor)), max(1, round(width * factor))


def ten_crop(images, crop_size: int):
    """The four corner crops, the center crop and their horizontal flips (Krizhevsky et al.).

    Args:
        images: a batch (N, H, W, C) with H, W >= `crop_size`.
        crop_size: side of the square crops.

    Returns:
        A list of 10 tensors (N, crop_size, crop_size, C): top-left, top-right, bottom-left,
        bottom-right, center, then the same five flipped left-right.

    Example:
    >>> from keras_resvit.data.transforms import ten_crop
    >>> import numpy as np
    >>> crops = ten_crop(np.zeros((2, 256, 320, 3), "float32"), 224)
    >>> len(crops), tuple(crops[0].shape)
    (10, (2, 224, 224, 3))
    """
    images = _batch("images", images)
    check_int("crop_size", crop_size)
    height, width = images.shape[1], images.shape[2]
    if min(height, width) < crop_size:
        raise ValueError(
            f"crop_size={crop_size} is larger than the images ({height}x{width}); valid: "
            f"<= {min(height, width)}."
        )
    corners = [
        (0, 0),
        (0, width - crop_size),
        (height - crop_size, 0),
        (height - crop_size, width - crop_size),
        ((height - crop_size) // 2, (width - crop_size) // 2),
    ]
    crops = [images[:, t : t + crop_size, s : s + crop_size, :] for t, s in corners]
    return crops + [keras.ops.flip(crop, axis=2) for crop in crops]


def output_size(image_size, fixed, source):
    """`image_size`, or the source's own fixed size when it is None (`source`: its name in
    messages)."""
    if image_size is not None:
        return image_size
    if fixed is None:
        raise ValueError(
            f"image_size=None is not valid for source={source}, whose images were not read "
            "at one size (they vary in size, or cache=False left them unread); pass a "
            "positive int."
        )
    if fixed[0] != fixed[1]:
        # Their height would be the output's side: a center crop of it, of part of each image.
        raise ValueError(
            f"image_size=None is not valid for source={source}, whose images are "
            f"{fixed[0]}x{fixed[1]}, not square; pass image_size=<int>: the output's side "
            "(the shorter side is resized to it, then the central square kept)."
        )
    return int(fixed[0])


def evaluation_ratio(crop_ratio, augmented, resized, augment, shorter_side, image_size):
    """The crop ratio of the evaluation transform: `crop_ratio` when given; 1.0 (whole images)
    for the statistics of augmented training images, which the presets see whole, as
    unaugmented ones, and for whole-image presets; else from the images' typical size."""
    if crop_ratio is None and not augmented and resized and augment not in WHOLE_IMAGE_PRESETS:
        return evaluation_crop_ratio(shorter_side(), image_size)
    return crop_ratio or 1.0


def pipeline_transforms(read, layer, image_size, augment, crop_ratio):
    """(training transform, evaluation transform) of (pixels, label) to (float32 `image_size`
    image, label): `layer` (None: the evaluation transform), and the evaluation transform
    (`evaluation_ratio`), also what statistics of the images read."""
    resized = read.fixed is None or tuple(read.fixed) != (image_size, image_size)
    ratio = evaluation_ratio(
        crop_ratio, layer is not None, resized, augment, read.shorter_side, image_size
    )
    # Images of the output size pass as they are, unless a crop was asked for.
    resize = evaluation_transform(image_size, ratio) if resized or ratio != 1.0 else None

    def plain(x, y):
        return (tf.cast(x, "float32") if resize is None else resize(x)), y

    return (plain if layer is None else lambda x, y: (layer(x), y)), plain
