"""Dataset sources as `tf.data` pipelines of raw 0-255 RGB pixels and integer labels.

`tf.data` serves every backend: Keras' `fit` consumes it under TensorFlow, JAX and PyTorch.
"""

import numpy as np
import tensorflow as tf

SOURCES = ("digits", "(images, labels) arrays")
SPLITS = ("train", "test")


def load_digits(image_size: int = 32, test_fraction: float = 0.2, seed: int = 0):
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 images), needing no network.

    The 0-16 grey levels are scaled to 0-255, upsampled bilinearly to `image_size` and
    repeated to three channels so that every model's RGB preprocessing applies.

    Args:
        image_size: output height and width (>= 8).
        test_fraction: share of the images held out, stratified by class.
        seed: seed of the train/test split.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: float32 images (N, size, size, 3) in
        [0, 255] and int32 labels 0-9.

    Example:
    >>> (x, y), _ = load_digits()
    >>> x.shape[1:], int(y.max())
    ((32, 32, 3), 9)
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size={image_size!r} must be an int >= 8 (digits are 8x8).")
    digits = sklearn_digits()
    images = digits.images.astype("float32")[..., None] * (255.0 / 16.0)
    images = tf.image.resize(images, (image_size, image_size), method="bilinear").numpy()
    images = np.clip(np.repeat(images, 3, axis=-1), 0.0, 255.0)
    labels = digits.target.astype("int32")
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    return (x_train, y_train), (x_test, y_test)


def _arrays(source, split, image_size):
    if isinstance(source, str):
        if source != "digits":
            raise ValueError(f"source={source!r} is not a known source; valid: {list(SOURCES)}.")
        train, test = load_digits(image_size or 32)
        return train if split == "train" else test
    if not (isinstance(source, (tuple, list)) and len(source) == 2):
        raise ValueError(
            f"source of type {type(source).__name__} is not valid; pass one of {list(SOURCES)}."
        )
    images, labels = (np.asarray(a) for a in source)
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(
            f"source arrays have shapes {images.shape} and {labels.shape}; expected images "
            "(N, height, width, channels) and N labels."
        )
    return images.astype("float32"), labels


def load_dataset(
    source="digits",
    split: str = "train",
    *,
    image_size: int | None = None,
    batch_size: int = 32,
    shuffle: bool | None = None,
    seed: int = 0,
) -> tf.data.Dataset:
    """A batched, prefetched `tf.data.Dataset` of (images, labels).

    Args:
        source: "digits" (embedded, no network) or an `(images, labels)` pair of arrays.
        split: "train" (shuffled by default) or "test".
        image_size: output size for "digits"; arrays are used as they are.
        batch_size: examples per batch.
        shuffle: shuffle every epoch; default True for "train".
        seed: shuffle seed.

    Returns:
        A `tf.data.Dataset` yielding float32 images in [0, 255] and int32 labels.

    Example:
    >>> ds = load_dataset("digits", "test", batch_size=8)
    >>> tuple(next(iter(ds))[0].shape)
    (8, 32, 32, 3)
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not valid; expected one of {list(SPLITS)}.")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive int.")
    images, labels = _arrays(source, split, image_size)
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if split == "train" if shuffle is None else shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
