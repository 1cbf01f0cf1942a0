"""Crop layers the papers' recipes need and Keras lacks: Inception crop, ResNet scale
augmentation, CIFAR pad-and-crop, and the evaluation resize + center crop.

Each subclasses a `keras.layers` crop layer, so it uses `self.backend`: inside `tf.data` it runs
TensorFlow ops whatever the Keras backend, and outside it runs `keras.ops` of the backend.
Applied to a batch, one box is drawn for the whole batch (as `keras.layers.RandomCrop` does);
`tf.data` pipelines map them over single images, so each image gets its own box.
"""

import math

import keras

from keras_resvit.base.validation import (
    check_bool,
    check_channels_last,
    check_choice,
    check_int,
    check_seed,
    refuse_arguments,
)

ATTEMPTS = 10  # torchvision / big_vision: draw 10 boxes, keep the first that fits.
# The interpolations keras.ops.image.resize takes on every backend (torch lacks lanczos).
INTERPOLATIONS = ("bilinear", "nearest", "bicubic")


def _check_size(height, width, layer):
    for arg, value in (("height", height), ("width", width)):
        check_int(f"{layer}: {arg}", value)


def _check_range(name, value, low, layer):
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )
        or not low < value[0] <= value[1]
    ):
        raise ValueError(
            f"{layer}: {name}={value!r} must be a pair (min, max) of finite numbers with "
            f"{low} < min <= max."
        )
    return tuple(float(v) for v in value)


def _check_seed(seed):
    # Keras takes any int on TensorFlow but only [0, 2**32) on JAX, and fails there only when
    # the layer first draws.
    if seed is not None:
        check_seed(seed)


class _CropAndResize(keras.layers.RandomCrop):
    """Crops one box per call and resizes it to (height, width); subclasses draw the box."""

    def __init__(
        self,
        height,
        width,
        interpolation="bilinear",
        antialias=False,
        seed=None,
        data_format=None,
        **kwargs,
    ):
        _check_size(height, width, type(self).__name__)
        check_bool(f"{type(self).__name__}: antialias", antialias)
        check_choice(f"{type(self).__name__}: interpolation", interpolation, INTERPOLATIONS)
        data_format = check_channels_last(data_format, type(self).__name__)
        _check_seed(seed)
        super().__init__(height, width, seed=seed, data_format=data_format, **kwargs)
        self.interpolation = interpolation
        self.antialias = antialias

    def _sample_box(self, height, width, seed):
        raise NotImplementedError

    def _center_box(self, height, width):
        # Largest centered window with the output's aspect ratio (RandomCrop's inference box).
        b = self.backend
        height, width = b.cast(height, "float32"), b.cast(width, "float32")
        crop_h = b.numpy.minimum(height, width * self.height / self.width)
        crop_w = b.numpy.minimum(width, height * self.width / self.height)
        return (height - crop_h) / 2, (width - crop_w) / 2, crop_h, crop_w

    def get_random_transformation(self, data, training=True, seed=None):
        images = data["images"] if isinstance(data, dict) else data
        shape = self.backend.core.shape(images)
        if len(shape) not in (3, 4):  # checked by RandomCrop.call only after this draw
            raise ValueError(
                f"{type(self).__name__}: images of shape {tuple(images.shape)} are not valid; "
                "valid: one image (height, width, channels) or a batch (batch, height, width, "
                "channels)."
            )
        height, width = shape[-3], shape[-2]
        if training:
            seed = self._get_seed_generator(self.backend._backend) if seed is None else seed
            box = self._sample_box(height, width, seed)
        else:
            box = self._center_box(height, width)
        return tuple(self.backend.cast(self.backend.numpy.round(v), "int32") for v in box)

    def transform_images(self, images, transformation, training=True):
        top, left, crop_h, crop_w = transformation
        images = self.backend.cast(images, self.compute_dtype)
        images = images[..., top : top + crop_h, left : left + crop_w, :]
        images = self.backend.image.resize(
            images,
            (self.height, self.width),
            interpolation=self.interpolation,
            antialias=self.antialias,
        )
        return self.backend.cast(images, self.compute_dtype)

    def transform_bounding_boxes(self, bounding_boxes, transformation, training=True):
        raise NotImplementedError(f"{type(self).__name__} does not transform bounding boxes.")

    def get_config(self):
        config = super().get_config()
        config.update({"interpolation": self.interpolation, "antialias": self.antialias})
        return config


def _offset(b, room, seed):
    """A box's offset drawn uniformly from the whole numbers 0 .. `room` (the image's size less
    the box's, a float), as torchvision's `randint(0, room + 1)`: flush with either edge
    included."""
    draw = b.numpy.floor(b.random.uniform((), 0.0, 1.0, seed=seed) * (room + 1.0))
    return b.numpy.minimum(draw, room)  # a float32 draw just below 1 can round up to 1


@keras.saving.register_keras_serializable(package="keras_resvit")
class RandomResizedCrop(_CropAndResize):
    """Inception-style crop: a random box of random area and aspect ratio, resized.

    Szegedy et al. (2015), "Going deeper with convolutions": the box covers a fraction of the
    image area drawn uniformly from `scale` and has an aspect ratio drawn log-uniformly from
    `ratio`. Ten boxes are drawn and the first that fits is kept; if none fits, the largest
    centered box with a ratio inside `ratio` is used (the torchvision / big_vision rule).
    At inference the largest centered box with the output's aspect ratio is used.

    Args:
        height: output height.
        width: output width.
        scale: (min, max) fraction of the image area covered by the box.
        ratio: (min, max) width / height of the box.
        interpolation: resize interpolation ("bilinear", "nearest", "bicubic", ...).
        antialias: antialias when the box is shrunk (slower; off as in big_vision).
        seed: random seed.

    Example:
    >>> from keras_resvit.layers.crops import RandomResizedCrop
    >>> import numpy as np
    >>> crop = RandomResizedCrop(32, 32, seed=1)
    >>> tuple(crop(np.zeros((48, 64, 3), "float32")).shape)
    (32, 32, 3)
    """

    def __init__(self, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), **kwargs):
        super().__init__(height, width, **kwargs)
        self.scale = _check_range("scale", scale, 0.0, "RandomResizedCrop")
        if self.scale[1] > 1.0:
            raise ValueError(f"RandomResizedCrop: scale={scale!r} must lie in (0, 1].")
        self.ratio = _check_range("ratio", ratio, 0.0, "RandomResizedCrop")

    def _sample_box(self, height, width, seed):
        b = self.backend
        height, width = b.cast(height, "float32"), b.cast(width, "float32")
        area = height * width * b.random.uniform((ATTEMPTS,), *self.scale, seed=seed)
        log_ratio = b.random.uniform(
            (ATTEMPTS,), math.log(self.ratio[0]), math.log(self.ratio[1]), seed=seed
        )
        aspect = b.numpy.exp(log_ratio)
        crop_w = b.numpy.round(b.numpy.sqrt(area * aspect))
        crop_h = b.numpy.round(b.numpy.sqrt(area / aspect))
        # torchvision keeps a box only if 0 < w <= width and 0 < h <= height: a small area of
        # an extreme ratio rounds to 0 pixels on one side.
        fits = b.numpy.logical_and(
            b.numpy.logical_and(crop_w >= 1, crop_w <= width),
            b.numpy.logical_and(crop_h >= 1, crop_h <= height),
        )
        # Fallback: the whole image, narrowed to the nearest ratio inside the range (at least
        # one pixel: a 1-pixel-high image narrowed to a ratio below 0.5 would round to 0).
        image_ratio = width / height
        fallback_w = b.numpy.where(
            image_ratio > self.ratio[1],
            b.numpy.maximum(1.0, b.numpy.round(height * self.ratio[1])),
            width,
        )
        fallback_h = b.numpy.where(
            image_ratio < self.ratio[0],
            b.numpy.maximum(1.0, b.numpy.round(width / self.ratio[0])),
            height,
        )
        first = b.numpy.argmax(b.cast(fits, "int32"))
        found = b.numpy.any(fits)
        crop_h = b.numpy.where(found, b.numpy.take(crop_h, first), fallback_h)
        crop_w = b.numpy.where(found, b.numpy.take(crop_w, first), fallback_w)
        # A box that fits is placed at random; the fallback is centered (torchvision).
        top = b.numpy.where(
            found, _offset(b, height - crop_h, seed), b.numpy.floor((height - crop_h) / 2)
        )
        left = b.numpy.where(
            found, _offset(b, width - crop_w, seed), b.numpy.floor((width - crop_w) / 2)
        )
        return top, left, crop_h, crop_w

    def get_config(self):
        config = super().get_config()
        config.update({"scale": list(self.scale), "ratio": list(self.ratio)})
        return config


@keras.saving.register_keras_serializable(package="keras_resvit")
class RandomScaleCrop(_CropAndResize):
    """ResNet scale augmentation: shorter side resized to a random S, then a random crop.

    He et al. (2016), Section 3.4: the shorter side is sampled in [256, 480] and a 224x224
    crop is taken. Cropping the matching box of the original image and resizing only the box
    gives the same pixels (up to interpolation) at a fraction of the cost.

    Args:
        height: output height (224 in the paper).
        width: output width.
        scale_range: (min, max) shorter side S, in output pixels; min must be >= the output.
        interpolation: resize interpolation.
        antialias: antialias when the box is shrunk.
        seed: random seed.

    Example:
    >>> from keras_resvit.layers.crops import RandomScaleCrop
    >>> import numpy as np
    >>> crop = RandomScaleCrop(224, 224, scale_range=(256, 480), seed=1)
    >>> tuple(crop(np.zeros((300, 400, 3), "float32")).shape)
    (224, 224, 3)
    """

    def __init__(self, height, width, scale_range=(256, 480), **kwargs):
        super().__init__(height, width, **kwargs)
        self.scale_range = _check_range("scale_range", scale_range, 0.0, "RandomScaleCrop")
        if self.scale_range[0] < max(height, width):
            raise ValueError(
                f"RandomScaleCrop: scale_range={scale_range!r} must start at or above the "
                f"output size {max(height, width)}."
            )

    def _sample_box(self, height, width, seed):
        b = self.backend
        height, width = b.cast(height, "float32"), b.cast(width, "float32")
        shorter = b.numpy.minimum(height, width)
        pixels_per_output = shorter / b.random.uniform((), *self.scale_range, seed=seed)
        # At least one pixel: a shorter side S far above the image's rounds the box to 0.
        crop_h = b.numpy.clip(b.numpy.round(self.height * pixels_per_output), 1.0, height)
        crop_w = b.numpy.clip(b.numpy.round(self.width * pixels_per_output), 1.0, width)
        top, left = _offset(b, height - crop_h, seed), _offset(b, width - crop_w, seed)
        return top, left, crop_h, crop_w

    def get_config(self):
        config = super().get_config()
        config["scale_range"] = list(self.scale_range)
        return config


@keras.saving.register_keras_serializable(package="keras_resvit")
class RandomPadCrop(keras.layers.RandomCrop):
    """CIFAR augmentation: pad each side by `padding`, then a random crop of the input size.

    He et al. (2016), Section 4.2: 4 pixels padded on each side and a random 32x32 crop, i.e. a
    uniform integer shift in [-4, 4] along each axis. Identity at inference. The paper pads
    images whose mean has been subtracted with zeros, i.e. with the mean colour; our pipelines
    carry raw pixels (the model normalizes), so `fill_value` gives that colour.

    Args:
        padding: pixels added on each side.
        fill_value: the padding's pixel value: a number, for any number of channels, or
            one per channel (e.g. the dataset's mean colour on the images' scale), for
            images of that many channels; 0 pads black.
        seed: random seed.
        data_format: "channels_last" (the only one supported) or None for Keras' setting.

    Raises:
        ValueError: for one fill value per channel and images of another channel count.

    Example:
    >>> from keras_resvit.layers.crops import RandomPadCrop
    >>> import numpy as np
    >>> tuple(RandomPadCrop(4, seed=1)(np.ones((32, 32, 3), "float32")).shape)
    (32, 32, 3)
    """

    def __init__(self, padding=4, fill_value=0.0, seed=None, data_format=None, **kwargs):
        check_int("RandomPadCrop: padding", padding, 0)
        data_format = check_channels_last(data_format, "RandomPadCrop")
        _check_seed(seed)
        values = fill_value if isinstance(fill_value, (tuple, list)) else [fill_value]
        if not values or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in values
        ):
            raise ValueError(
                f"RandomPadCrop: fill_value={fill_value!r} must be a finite number or one per "
                "channel, e.g. (125.3, 123.0, 113.9)."
            )
        refuse_arguments(
            "RandomPadCrop", kwargs, ("height", "width"),
            "its output has the input's size: pass padding (the shift, 4 in the paper)",
        )  # fmt: skip
        super().__init__(1, 1, seed=seed, data_format=data_format, **kwargs)
        self.padding = padding
        self.fill_value = [float(v) for v in values] if len(values) > 1 else float(values[0])

    def get_random_transformation(self, data, training=True, seed=None):
        if not training:
            return None
        seed = self._get_seed_generator(self.backend._backend) if seed is None else seed
        shift = self.backend.random.uniform((2,), 0.0, 2.0 * self.padding + 1.0, seed=seed)
        return self.backend.cast(self.backend.numpy.floor(shift), "int32")

    def transform_images(self, images, transformation, training=True):
        channels = images.shape[-1]
        if isinstance(self.fill_value, list) and channels not in (None, len(self.fill_value)):
            raise ValueError(
                f"RandomPadCrop: fill_value={self.fill_value!r} holds one value per channel "
                f"of {len(self.fill_value)}-channel images, but the images have {channels} "
                "channels; pass one value per channel, or a single number for any count."
            )
        images = self.backend.cast(images, self.compute_dtype)
        if not training or transformation is None or self.padding == 0:
            return images
        p = self.padding
        shape = self.backend.core.shape(images)
        pad = [(0, 0)] * (len(shape) - 3) + [(p, p), (p, p), (0, 0)]
        fill = self.backend.cast(self.backend.convert_to_tensor(self.fill_value), images.dtype)
        padded = self.backend.numpy.pad(images - fill, pad) + fill
        top, left = transformation[0], transformation[1]
        return padded[..., top : top + shape[-3], left : left + shape[-2], :]

    def transform_bounding_boxes(self, bounding_boxes, transformation, training=True):
        raise NotImplementedError("RandomPadCrop does not transform bounding boxes.")

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        for key in ("height", "width"):
            config.pop(key)
        config["padding"] = self.padding
        config["fill_value"] = self.fill_value
        return config


@keras.saving.register_keras_serializable(package="keras_resvit")
class ResizeCenterCrop(keras.layers.CenterCrop):
    """Evaluation transform: resize the shorter side to size / crop_ratio, then center crop.

    With crop_ratio 0.875 a 224 crop comes from a 256 shorter side, the standard ImageNet
    evaluation (He et al. 2016 use 224 crops of 256-resized images for single-crop results).

    Args:
        height: output height.
        width: output width.
        crop_ratio: share of the resized shorter side kept by the crop, in (0, 1].
        interpolation: resize interpolation.
        antialias: antialias when shrinking (on: evaluation can afford it).
        data_format: "channels_last" (the only one supported) or None for Keras' setting.

    Example:
    >>> from keras_resvit.layers.crops import ResizeCenterCrop
    >>> import numpy as np
    >>> tuple(ResizeCenterCrop(224, 224)(np.zeros((300, 400, 3), "float32")).shape)
    (224, 224, 3)
    """

    def __init__(
        self,
        height,
        width,
        crop_ratio=0.875,
        interpolation="bilinear",
        antialias=True,
        data_format=None,
        **kwargs,
    ):
        _check_size(height, width, "ResizeCenterCrop")
        data_format = check_channels_last(data_format, "ResizeCenterCrop")
        number = isinstance(crop_ratio, (int, float)) and not isinstance(crop_ratio, bool)
        if not number or not 0.0 < crop_ratio <= 1.0:
            raise ValueError(f"ResizeCenterCrop: crop_ratio={crop_ratio!r} must lie in (0, 1].")
        check_bool("ResizeCenterCrop: antialias", antialias)
        check_choice("ResizeCenterCrop: interpolation", interpolation, INTERPOLATIONS)
        super().__init__(height, width, data_format=data_format, **kwargs)
        self.crop_ratio = float(crop_ratio)
        self.interpolation = interpolation
        self.antialias = antialias
        self.resize_to = round(max(height, width) / self.crop_ratio)

    def transform_images(self, images, transformation=None, training=True):
        b = self.backend
        images = b.cast(images, self.compute_dtype)
        shape = b.core.shape(images)
        height, width = b.cast(shape[-3], "float32"), b.cast(shape[-2], "float32")
        factor = self.resize_to / b.numpy.minimum(height, width)
        new_h = b.cast(b.numpy.round(height * factor), "int32")
        new_w = b.cast(b.numpy.round(width * factor), "int32")
        images = b.image.resize(
            images, (new_h, new_w), interpolation=self.interpolation, antialias=self.antialias
        )
        top, left = (new_h - self.height) // 2, (new_w - self.width) // 2
        images = images[..., top : top + self.height, left : left + self.width, :]
        return b.cast(images, self.compute_dtype)

    def transform_bounding_boxes(self, bounding_boxes, transformation, training=True):
        raise NotImplementedError("ResizeCenterCrop does not transform bounding boxes.")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "crop_ratio": self.crop_ratio,
                "interpolation": self.interpolation,
                "antialias": self.antialias,
            }
        )
        return config
