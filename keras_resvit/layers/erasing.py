"""Random erasing as DeiT and timm apply it (Zhong et al. 2020; timm's
`RandomErasing(mode="pixel")`): an erased box holds per-pixel Gaussian noise of the
normalized images, i.e. the dataset's mean plus its standard deviation times N(0, 1) in
pixels, not Keras' `RandomErasing` fill (N(0, 1) times the range's top, clipped: about half
the erased pixels black and a sixth white); its box is timm's too (an area and a log-uniform
aspect ratio, not Keras' two independent sides)."""

import math

import keras

from keras_resvit.base.validation import check_value_range
from keras_resvit.layers.keras_rand_augment import probability_range
from keras_resvit.layers.normalization import IMAGENET_MEAN, IMAGENET_STD

ATTEMPTS = 10  # timm's draws of a box before it gives up on the image
LOG_ASPECT = (math.log(0.3), math.log(1 / 0.3))  # timm's height / width range, log-uniform


@keras.saving.register_keras_serializable(package="keras_resvit")
class NoiseErasing(keras.layers.RandomErasing):
    """`keras.layers.RandomErasing` with timm's box and fill: one box per erased image, whose
    area is a fraction of the image's drawn uniformly from `scale` and whose height / width
    ratio is log-uniform in [0.3, 1 / 0.3] (sides rounded to whole pixels; up to 10 draws
    until a box fits inside the image, none erased if none does), at a uniformly drawn
    position; it holds `mean + std * N(0, 1)` per pixel and channel, clipped to
    `value_range`: timm's "pixel" mode on images normalized by `mean` and `std`. (Keras' own
    layer draws each side's fraction independently, sqrt of a draw from `scale`.)

    Args:
        factor: the probability of erasing each image (one number p: exactly p, not Keras'
            draw from [0, p]), or a pair (low, high) to draw it from.
        scale: the range of the box's area as a fraction of the image's (default
            (0.02, 1/3), timm's).
        mean, std: the per-channel pixel mean and standard deviation (ImageNet's, 0-255).
        value_range: the images' pixel range.
        seed, data_format: as `keras.layers.RandomErasing`.

    Example:
    >>> from keras_resvit.layers.erasing import NoiseErasing
    >>> import numpy as np
    >>> layer = NoiseErasing(1.0, seed=0)
    >>> tuple(layer(np.full((2, 8, 8, 3), 128.0), training=True).shape)
    (2, 8, 8, 3)
    """

    def __init__(
        self,
        factor=1.0,
        scale=(0.02, 1 / 3),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        value_range=(0, 255),
        seed=None,
        data_format=None,
        **kwargs,
    ):
        factor = probability_range("NoiseErasing", factor)
        check_value_range("NoiseErasing", value_range)
        for name, values in (("mean", mean), ("std", std)):
            if not (
                isinstance(values, (tuple, list))
                and len(values) == 3
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
                and all(v >= 0 for v in values)
            ):
                raise ValueError(
                    f"NoiseErasing: {name}={values!r} must be three (RGB) numbers >= 0, on the "
                    "pixel scale of value_range."
                )
        super().__init__(
            factor=factor, scale=scale, value_range=value_range, seed=seed,
            data_format=data_format, **kwargs,
        )  # fmt: skip
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    def get_random_transformation(self, data, training=True, seed=None):
        if not training:
            return None
        images = data["images"] if isinstance(data, dict) else data
        shape = self.backend.shape(images)
        batch = 1 if len(shape) == 3 else shape[0]
        ops, random = self.backend.numpy, self.backend.random
        dtype = self.compute_dtype
        height = self.backend.cast(shape[self.height_axis], dtype)
        width = self.backend.cast(shape[self.width_axis], dtype)
        seed = seed or self._get_seed_generator(self.backend._backend)

        draws = (batch, ATTEMPTS)
        area = random.uniform(draws, *self.scale, dtype=dtype, seed=seed) * height * width
        aspect = ops.exp(random.uniform(draws, *LOG_ASPECT, dtype=dtype, seed=seed))
        box_h = ops.round(ops.sqrt(area * aspect))
        box_w = ops.round(ops.sqrt(area / aspect))
        fits = ops.logical_and(box_h < height, box_w < width)
        # Each image's first draw that fits (timm tries them in turn).
        first = ops.expand_dims(ops.argmax(self.backend.cast(fits, "int32"), axis=1), 1)
        box_h = ops.take_along_axis(box_h, first, axis=1)[:, 0]
        box_w = ops.take_along_axis(box_w, first, axis=1)[:, 0]
        # Whole-pixel corners, each position equally likely.
        top = ops.floor(random.uniform((batch,), dtype=dtype, seed=seed) * (height - box_h + 1))
        left = ops.floor(random.uniform((batch,), dtype=dtype, seed=seed) * (width - box_w + 1))
        masks = self._generate_batch_mask(shape, (left, left + box_w, top, top + box_h))

        probability = random.uniform((batch,), *self.factor, seed=seed)
        chance = random.uniform((batch,), 0.0, 1.0, seed=seed)
        apply = ops.logical_and(chance < probability, ops.any(fits, axis=1))
        return {
            "apply_erasing": apply,
            "batch_masks": masks,
            "fill_value": self._get_fill_value(images, shape, seed),
        }

    def _get_fill_value(self, images, images_shape, seed):
        noise = self.backend.random.normal(images_shape, dtype=self.compute_dtype, seed=seed)
        axis = -1 if self.data_format == "channels_last" else -3
        shape = [1] * len(images_shape)
        shape[axis] = 3
        mean = self.backend.numpy.reshape(self.backend.convert_to_tensor(self.mean), shape)
        std = self.backend.numpy.reshape(self.backend.convert_to_tensor(self.std), shape)
        fill = mean + std * noise
        return self.backend.numpy.clip(fill, self.value_range[0], self.value_range[1])

    def get_config(self):
        config = super().get_config()
        config.pop("fill_value", None)
        return {**config, "mean": self.mean, "std": self.std}
