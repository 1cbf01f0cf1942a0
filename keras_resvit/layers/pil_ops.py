"""PIL's `ImageOps.autocontrast`, `ImageOps.equalize` and `ImageFilter.SMOOTH` on batches of
channels-last float32 images on PIL's 0-255 scale, with the ops of `b`, a layer's `self.backend`
(TensorFlow inside `tf.data`, whatever the Keras backend). `RandAugment` builds on them.

Example:
>>> from keras_resvit.layers.pil_ops import auto_contrast
>>> import keras
>>> import numpy as np
>>> from keras_resvit.layers import RandAugment
>>> b = RandAugment().backend
>>> x = np.array([[[[10.0], [20.0]], [[20.0], [30.0]]]], "float32")
>>> keras.ops.convert_to_numpy(auto_contrast(b, x))[..., 0].tolist()
[[[0.0, 127.5], [127.5, 255.0]]]
"""

from keras_resvit.base.backend import count_values

SMOOTH = 13.0  # PIL's ImageFilter.SMOOTH: [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13


def auto_contrast(b, x):
    """Each image's channels stretched to 0-255 (a channel with one value kept, as PIL)."""
    low = b.numpy.min(x, axis=(1, 2), keepdims=True)
    high = b.numpy.max(x, axis=(1, 2), keepdims=True)
    spread = b.numpy.where(high > low, high - low, 255.0)
    low = b.numpy.where(high > low, low, 0.0)
    return b.numpy.clip((x - low) * (255.0 / spread), 0.0, 255.0)


def equalize(b, x):
    """PIL's `ImageOps.equalize` per image and channel: with `step` = (pixels - the count of
    the highest level present) // 255, level i -> (step // 2 + pixels below i) // step."""
    shape = b.core.shape(x)
    rows = shape[0] * shape[3]
    levels = b.cast(b.numpy.clip(b.numpy.floor(x), 0.0, 255.0), "int32")
    row = b.numpy.reshape(b.numpy.arange(rows, dtype="int32"), (-1, 1, 1, shape[3]))
    keys = levels + row * 256
    flat = b.numpy.reshape(keys, (-1,))
    counts = b.numpy.reshape(count_values(b, flat, rows * 256), (-1, 256))
    bins = b.numpy.arange(256, dtype="int32")
    top = b.numpy.max(b.numpy.where(counts > 0, bins, -1), axis=-1, keepdims=True)
    last = b.numpy.sum(b.numpy.where(bins == top, counts, 0), axis=-1, keepdims=True)
    total = b.numpy.sum(counts, axis=-1, keepdims=True)
    step = b.numpy.floor_divide(total - last, 255)
    below = b.numpy.cumsum(counts, axis=-1) - counts
    table = b.numpy.floor_divide(b.numpy.floor_divide(step, 2) + below, b.numpy.maximum(step, 1))
    flat_image = b.numpy.sum(b.cast(counts > 0, "int32"), axis=-1, keepdims=True) <= 1
    table = b.numpy.where(flat_image | (step == 0), bins, b.numpy.minimum(table, 255))
    return b.cast(b.numpy.take(b.numpy.reshape(table, (-1,)), keys), "float32")


def smooth(b, x):
    """PIL's 3x3 SMOOTH filter, rounded to whole levels, with the one-pixel border kept (the
    degenerate image of `ImageEnhance.Sharpness`)."""
    shape = b.core.shape(x)
    height, width = shape[1], shape[2]
    padded = b.numpy.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    total = 4.0 * x
    for i in range(3):
        for j in range(3):
            total = total + padded[:, i : i + height, j : j + width, :]
    smoothed = b.numpy.round(total / SMOOTH)
    rows = b.numpy.arange(height)
    cols = b.numpy.arange(width)
    inside = b.numpy.logical_and(
        b.numpy.reshape((rows > 0) & (rows < height - 1), (1, -1, 1, 1)),
        b.numpy.reshape((cols > 0) & (cols < width - 1), (1, 1, -1, 1)),
    )
    return b.numpy.where(inside, smoothed, x)
