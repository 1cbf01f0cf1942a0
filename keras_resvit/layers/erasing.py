"""Random erasing as DeiT and timm apply it (Zhong et al. 2020; timm's
`RandomErasing(mode="pixel")`): an erased box holds per-pixel Gaussian noise of the
normalized images, i.e. the dataset's mean plus its standard deviation times N(0, 1) in
pixels, not Keras' `RandomErasing` fill (N(0, 1) times the range's top, clipped: about half
the erased pixels black and a sixth white)."""

import keras

from keras_resvit.base.validation import check_value_range
from keras_resvit.layers.keras_rand_augment import probability_range
from keras_resvit.layers.normalization import IMAGENET_MEAN, IMAGENET_STD


@keras.saving.register_keras_serializable(package="keras_resvit")
class NoiseErasing(keras.layers.RandomErasing):
    """`keras.layers.RandomErasing` whose boxes hold `mean + std * N(0, 1)` per pixel and
    channel, clipped to `value_range`: timm's "pixel" mode on images normalized by `mean` and
    `std`. The box is Keras': each side a fraction sqrt(u) of the image's, u drawn from
    `scale` (timm draws the area from `scale` and a log-uniform aspect ratio in [0.3, 3.3]).

    Args:
        factor: the probability of erasing each image (one number p: exactly p, not Keras'
            draw from [0, p]), or a pair (low, high) to draw it from.
        scale: as `keras.layers.RandomErasing` (default (0.02, 1/3), timm's area range).
        mean, std: the per-channel pixel mean and standard deviation (ImageNet's, 0-255).
        value_range: the images' pixel range.
        seed, data_format: as `keras.layers.RandomErasing`.

    Example:
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
