"""Sources held in memory: scikit-learn's bundled digits, and (images, labels) arrays checked
as pixels and class indices."""

import hashlib

import keras
import numpy as np

from keras_resvit.base.processes import host_cpu
from keras_resvit.base.validation import check_seed
from keras_resvit.data.checks import check_class_indices, check_pixels


def load_digits(image_size: int = 32, test_fraction: float = 0.2, seed: int = 0):
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 images), needing no network.

    The 0-16 grey levels are scaled to 0-255, upsampled bilinearly to `image_size` and
    repeated to three channels so that every model's RGB preprocessing applies. The upsampling
    is the backend's (`keras.ops.image.resize`, no antialiasing; no TensorFlow needed): the
    same pixels on TensorFlow and JAX at the default 32 (at other sizes JAX rounds differently,
    by ~1e-4 of a level).

    Args:
        image_size: output height and width (>= 8).
        test_fraction: share of the images held out, stratified by class.
        seed: seed of the train/test split.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: float32 images (N, size, size, 3) in
        [0, 255] and int32 labels 0-9.

    Example:
    >>> from keras_resvit.data.in_memory import load_digits
    >>> (x, y), _ = load_digits()
    >>> x.shape[1:], int(y.max())
    ((32, 32, 3), 9)
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size={image_size!r} must be an int >= 8 (digits are 8x8).")
    # Each split holds every one of the 10 classes: 10 of the 1,797 images at least.
    if not isinstance(test_fraction, float) or not 0.006 <= test_fraction <= 0.994:
        raise ValueError(
            f"test_fraction={test_fraction!r} must be a float in [0.006, 0.994]: each split "
            "holds at least one of the 1,797 images per class."
        )
    check_seed(seed)
    digits = sklearn_digits()
    images = digits.images.astype("float32")[..., None] * (255.0 / 16.0)
    with host_cpu():
        images = keras.ops.image.resize(images, (image_size, image_size), antialias=False)
        images = keras.ops.convert_to_numpy(images)
    images = np.clip(np.repeat(images, 3, axis=-1), 0.0, 255.0)
    labels = digits.target.astype("int32")
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    return (x_train, y_train), (x_test, y_test)


def as_arrays(images, labels, argument="source"):
    """`images` and `labels` (of `argument`) as NumPy arrays, labels of shape (N, 1) (as
    `keras.datasets.cifar10` gives them) as (N,); or one clear ValueError where either is a
    sequence of arrays of different shapes (which NumPy cannot stack)."""
    try:
        images = np.asarray(images)
    except ValueError as error:
        raise ValueError(
            f"{argument} images are arrays of different shapes, which make no (N, height, "
            "width, channels) array; resize them to one size, or write them to an image folder and "
            "load it with image_size=... (each image is resized when read)."
        ) from error
    try:
        labels = np.asarray(labels)
    except ValueError as error:
        raise ValueError(
            f"{argument} labels are sequences of different lengths; expected N integer class "
            "indices, one per image."
        ) from error
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    return images, labels


def checked_arrays(images, labels):
    """(float32 images, int32 labels) of a pair of arrays: images (N, height, width, channels)
    of finite real pixels and N class indices 0, 1, 2, ..., N >= 1."""
    images, labels = as_arrays(images, labels)
    if images.ndim != 4 or len(images) != len(labels) or labels.ndim != 1 or not len(images):
        raise ValueError(
            f"source arrays have shapes {images.shape} and {labels.shape}; expected images "
            "(N, height, width, channels) and N integer labels, N >= 1 (one-hot labels: "
            "labels.argmax(-1); grey images: add a channel axis, x[..., None])."
        )
    if images.shape[1] in (1, 3) and images.shape[3] not in (1, 3, 4):
        raise ValueError(
            f"source images have shape {images.shape}: channels first, it seems (Keras, and "
            "the models here, take channels last); pass images.transpose(0, 2, 3, 1) of shape "
            f"{(images.shape[0], *images.shape[2:], images.shape[1])}."
        )
    if not np.issubdtype(images.dtype, np.number) or np.issubdtype(
        images.dtype, np.complexfloating
    ):
        raise ValueError(
            f"source images have dtype {images.dtype}; expected real pixel values (0-255)."
        )
    check_class_indices("source labels", labels)
    labels = labels.astype("int32")
    images = images.astype("float32")
    check_pixels("source images", images)
    return images, labels


def digest(*arrays) -> str:
    """A short hash of the arrays' bytes (read in place, not copied)."""
    hashed = hashlib.blake2b(digest_size=8)
    for array in arrays:
        hashed.update(np.ascontiguousarray(array).data)
    return hashed.hexdigest()
