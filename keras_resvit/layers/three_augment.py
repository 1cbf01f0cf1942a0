"""DeiT III's 3-Augment (Touvron et al. 2022, "DeiT III: Revenge of the ViT", Section 3.2) and
the torchvision colour jitter that follows it.

3-Augment gives each image exactly one of three of Keras' own layers, chosen uniformly: full
grayscale (`keras.layers.RandomGrayscale`), solarization at mid-range
(`keras.layers.Solarization` at a fixed threshold, PIL's `ImageOps.solarize(image, 128)`) or a
Gaussian blur of
standard deviation in [0.1, 2] (`keras.layers.RandomGaussianBlur`, with one standard deviation
for both axes, as PIL's `GaussianBlur(radius)`). For one image only the chosen one is computed,
as in this package's `KerasRandAugment`, and the layers run inside `tf.data` whatever the
backend.
"""

import keras

from keras_resvit.base.validation import check_number, check_value_range, refuse_arguments
from keras_resvit.layers.keras_rand_augment import KerasRandAugment, probability_range

# Kernel taps of the blur: +-3 standard deviations of the largest one (2.0).
BLUR_KERNEL_SIZE = 13
BLUR_SIGMA = (0.1, 2.0)


@keras.saving.register_keras_serializable(package="keras_resvit")
class IsotropicGaussianBlur(keras.layers.RandomGaussianBlur):
    """`keras.layers.RandomGaussianBlur` with one standard deviation for both axes, and the
    border reflected rather than zero.

    Keras' layer draws the horizontal and vertical standard deviations independently and pads
    with zeros (a dark frame as wide as half the kernel); the blurs of DINO and DeiT III
    (PIL's `GaussianBlur(radius)`) are isotropic and extend the image at its edges.

    Args:
        factor: the probability of blurring each image, in [0, 1] (1: every image); a pair
            (low, high), 0 <= low <= high <= 1, draws that probability from [low, high] for
            each image, as Keras' layer (which draws it from [0, p] for one number p: it
            blurred half the images at its default 1.0).
        kernel_size: the kernel's taps, a positive odd int (or a pair of them), at most
            2 * image side - 1: the border is reflected (a `ValueError` otherwise).
        sigma: the standard deviation, drawn uniformly from a pair (min, max) with
            0 <= min <= max, or from [0, sigma] for one number (Keras' rule); unlike Keras'
            layer, values above 1 are taken (DeiT III draws from [0.1, 2]). One is drawn per
            call: the blurred images of a batch share it, as in Keras' layer.
        value_range: the images' pixel range, (low, high) with low < high; the result is
            clipped to it.
        data_format, seed: as `keras.layers.RandomGaussianBlur`.

    Example:
    >>> from keras_resvit.layers.three_augment import IsotropicGaussianBlur
    >>> import numpy as np
    >>> layer = IsotropicGaussianBlur(kernel_size=5, sigma=(0.1, 2.0), seed=0)
    >>> tuple(layer(np.zeros((8, 8, 3), "float32")).shape)
    (8, 8, 3)
    """

    def __init__(self, factor=1.0, kernel_size=3, sigma=1.0, value_range=(0, 255), **kwargs):
        factor = probability_range("IsotropicGaussianBlur", factor)
        check_value_range("IsotropicGaussianBlur", value_range)
        sizes = tuple(kernel_size) if isinstance(kernel_size, (tuple, list)) else (kernel_size,)
        if not (
            len(sizes) in (1, 2)
            and all(isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in sizes)
            and all(k % 2 for k in sizes)
        ):
            raise ValueError(
                f"IsotropicGaussianBlur: kernel_size={kernel_size!r} must be a positive odd "
                f"int (or a pair of them), e.g. {BLUR_KERNEL_SIZE}."
            )
        sigmas = tuple(sigma) if isinstance(sigma, (tuple, list)) else (0, sigma)
        message = (
            f"IsotropicGaussianBlur: sigma={sigma!r} must be a number >= 0 or a pair (min, max) "
            f"with 0 <= min <= max, e.g. {BLUR_SIGMA}."
        )
        try:
            for value in sigmas:
                check_number("sigma", value, 0, include_low=True)
        except ValueError:
            raise ValueError(message) from None
        if len(sigmas) != 2 or sigmas[0] > sigmas[1]:
            raise ValueError(message)
        # Keras' layer takes standard deviations only within [0, 1]; the range is set after.
        super().__init__(
            factor=factor, kernel_size=kernel_size, sigma=1.0, value_range=value_range, **kwargs
        )
        self.sigma = tuple(float(v) for v in sigmas)

    def get_random_transformation(self, data, training=True, seed=None):
        transformation = super().get_random_transformation(data, training=training, seed=seed)
        if transformation is not None:
            sigma = transformation["blur_factor"][:1]
            transformation["blur_factor"] = self.backend.numpy.concatenate([sigma, sigma])
        return transformation

    def transform_images(self, images, transformation=None, training=True):
        if not training or transformation is None:
            return super().transform_images(images, transformation, training=training)
        b, p = self.backend, self.kernel_size[0] // 2
        q = self.kernel_size[1] // 2
        first = self.data_format == "channels_first"
        sizes = images.shape[-2:] if first else images.shape[-3:-1]
        if any(side is not None and half >= side for half, side in zip((p, q), sizes, strict=True)):
            # Reflecting the border needs half the kernel < the side (torch's reflect padding
            # refuses the same); shrinking the kernel instead would change the blur silently.
            raise ValueError(
                f"IsotropicGaussianBlur: kernel_size={self.kernel_size!r} is too large for "
                f"images of {sizes[0]}x{sizes[1]} pixels: the border is reflected, so each "
                "kernel side must be at most 2 * image side - 1 "
                f"({2 * sizes[0] - 1}x{2 * sizes[1] - 1} here); pass a smaller kernel_size."
            )
        spatial = [[0, 0], [p, p], [q, q]] if first else [[p, p], [q, q], [0, 0]]
        padding = ([[0, 0]] if len(images.shape) == 4 else []) + spatial
        padded = b.numpy.pad(images, padding, mode="reflect")
        blurred = super().transform_images(padded, transformation, training=training)
        height, width = (2, 3) if self.data_format == "channels_first" else (1, 2)
        if len(images.shape) == 3:
            height, width = height - 1, width - 1
        index = [slice(None)] * len(images.shape)
        index[height] = slice(p, -p if p else None)
        index[width] = slice(q, -q if q else None)
        return blurred[tuple(index)]


@keras.saving.register_keras_serializable(package="keras_resvit")
class ThresholdSolarization(keras.layers.Solarization):
    """`keras.layers.Solarization` at one fixed threshold: pixels above it are inverted.

    PIL's `ImageOps.solarize(image, 128)`, DeiT III's solarization, at `threshold=127.5` on the
    0-255 scale. Keras 3.15's layer draws its threshold from `[threshold_factor[0],
    threshold_factor[1] * 255]`, so even an equal pair gives a random threshold.

    Args:
        threshold: the threshold on the 0-255 scale.
        value_range, seed, data_format: as `keras.layers.Solarization`.

    Example:
    >>> from keras_resvit.layers.three_augment import ThresholdSolarization
    >>> import numpy as np
    >>> layer = ThresholdSolarization()
    >>> np.asarray(layer(np.array([[[100.0, 200.0, 128.0]]]), training=True)).tolist()
    [[[100.0, 55.0, 127.0]]]
    """

    def __init__(self, threshold=127.5, value_range=(0, 255), seed=None, **kwargs):
        refuse_arguments(
            "ThresholdSolarization", kwargs, ("addition_factor", "threshold_factor"),
            "it inverts the pixels above one fixed threshold: pass threshold (0-255, e.g. 127.5)",
        )  # fmt: skip
        check_value_range("ThresholdSolarization", value_range)
        super().__init__(value_range=value_range, seed=seed, **kwargs)
        check_number("ThresholdSolarization: threshold", threshold, 0, 255, include_low=True)
        self.threshold = float(threshold)

    def get_random_transformation(self, data, training=True, seed=None):
        if not training:
            return None
        images = data["images"] if isinstance(data, dict) else data
        shape = self.backend.shape(images)
        factor_shape = (shape[0], 1, 1, 1) if len(shape) == 4 else (1, 1, 1)
        return {
            "additions": self.backend.numpy.zeros(factor_shape, self.compute_dtype),
            "thresholds": self.backend.numpy.full(factor_shape, self.threshold, self.compute_dtype),
        }

    def get_config(self):
        config = super().get_config()
        for key in ("addition_factor", "threshold_factor"):
            config.pop(key, None)
        return {**config, "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="keras_resvit")
class ThreeAugment(KerasRandAugment):
    """3-Augment: one of grayscale, solarization or Gaussian blur per image, uniformly.

    Each image of a batch draws its own operation; a batch then computes all three and keeps
    each image's own (the blurred images of a batch share one standard deviation, as in Keras'
    blur). The package's presets call it on each image before batching, where only the chosen
    operation is computed.

    Args:
        value_range: the images' pixel range.
        seed: seed of the random draws.
        data_format: "channels_last" or "channels_first".

    Example:
    >>> from keras_resvit.layers.three_augment import ThreeAugment
    >>> import numpy as np
    >>> layer = ThreeAugment(seed=0)
    >>> tuple(layer(np.zeros((8, 8, 3), "float32")).shape)
    (8, 8, 3)
    """

    _AUGMENT_LAYERS = ("random_grayscale", "solarization", "gaussian_blur")

    def __init__(self, value_range=(0, 255), seed=None, data_format=None, **kwargs):
        refuse_arguments(
            "ThreeAugment", kwargs, ("num_ops", "factor", "interpolation"),
            "it applies exactly one of its three operations per image, at DeiT III's fixed "
            "strengths (RandAugment or KerasRandAugment take these)",
        )  # fmt: skip
        super().__init__(
            value_range=value_range, num_ops=1, factor=1.0, seed=seed, data_format=data_format,
            **kwargs,
        )  # fmt: skip
        self.random_grayscale = keras.layers.RandomGrayscale(
            factor=1.0, seed=seed, data_format=data_format
        )
        self.solarization = ThresholdSolarization(
            value_range=value_range, seed=seed, data_format=data_format
        )
        self.gaussian_blur = IsotropicGaussianBlur(
            factor=(1.0, 1.0), kernel_size=BLUR_KERNEL_SIZE, sigma=BLUR_SIGMA,
            value_range=value_range, seed=seed, data_format=data_format,
        )  # fmt: skip

    def get_random_transformation(self, data, training=True, seed=None):
        transformation = super().get_random_transformation(data, training=training, seed=seed)
        images = data["images"] if isinstance(data, dict) else data
        if transformation is not None and len(images.shape) == 4 and images.shape[0] != 1:
            # DeiT III picks per image; Keras' RandAugment draws one choice for the batch.
            transformation["choices"] = self.backend.random.randint(
                self.backend.core.shape(images)[:1],
                0,
                len(self._AUGMENT_LAYERS),
                seed=self._get_seed_generator(self.backend._backend),
            )
        return transformation

    def transform_images(self, images, transformation, training=True):
        if not training or "choices" not in transformation:
            return super().transform_images(images, transformation, training=training)
        images = self.backend.cast(images, self.compute_dtype)
        choices = self.backend.numpy.reshape(transformation["choices"], (-1, 1, 1, 1))
        out = images
        for index, name in enumerate(self._AUGMENT_LAYERS):
            if "transforms" in transformation:
                transformed = self._apply(name, images, transformation["transforms"])
            else:
                transformed = self._draw_and_apply(name, images)
            out = self.backend.numpy.where(choices == index, transformed, out)
        return self.backend.numpy.clip(out, *self.value_range)

    def get_config(self):
        config = super().get_config()
        for key in ("num_ops", "factor", "interpolation"):
            config.pop(key, None)
        return config


@keras.saving.register_keras_serializable(package="keras_resvit")
class ColorJitter(keras.layers.RandomBrightness):
    """torchvision's `ColorJitter(brightness, contrast, saturation)` (no hue), per image.

    Brightness blends each image with black, the low end of `value_range` (`low + (x - low) *
    f`: torchvision's `x * f` on 0-1 or 0-255 images), by a factor f from [max(0, 1 - b),
    1 + b]; contrast blends each image with the mean of its grayscale by a factor from
    [max(0, 1 - c), 1 + c]; saturation blends it with its grayscale by a factor from
    [max(0, 1 - s), 1 + s]; each step clips to `value_range`. As torchvision, each image
    applies the three in its own random order. (Keras' `RandomBrightness` adds to the pixels,
    its `RandomContrast` uses each channel's mean, and its `RandomColorJitter` keeps one
    order.)

    Args:
        brightness, contrast, saturation: the jitter strengths, >= 0 (DeiT III: 0.3 each).
        value_range: the images' pixel range.
        seed: seed of the random draws.
        data_format: "channels_last" or "channels_first"; images have 3 (RGB) or 1 channel.

    Example:
    >>> from keras_resvit.layers.three_augment import ColorJitter
    >>> import numpy as np
    >>> layer = ColorJitter(0.3, 0.3, 0.3, seed=0)
    >>> tuple(layer(np.full((2, 4, 4, 3), 128.0), training=True).shape)
    (2, 4, 4, 3)
    """

    def __init__(
        self,
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
        value_range=(0, 255),
        seed=None,
        **kwargs,
    ):
        refuse_arguments(
            "ColorJitter", kwargs, ("factor",),
            "pass brightness, contrast and saturation (torchvision's strengths, e.g. 0.3)",
        )  # fmt: skip
        check_value_range("ColorJitter", value_range)
        super().__init__(factor=0.0, value_range=value_range, seed=seed, **kwargs)
        for name, value in (
            ("brightness", brightness),
            ("contrast", contrast),
            ("saturation", saturation),
        ):
            check_number(f"ColorJitter: {name}", value, 0, include_low=True)
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.saturation = float(saturation)

    def get_random_transformation(self, data, training=True, seed=None):
        images = data["images"] if isinstance(data, dict) else data
        shape = self.backend.shape(images)
        batch = 1 if len(shape) == 3 else shape[0]
        if seed is None:
            seed = self._get_seed_generator(self.backend._backend)
        factors = {}
        for name in ("brightness", "contrast", "saturation"):
            strength = getattr(self, name) if training else 0.0
            # torchvision's `_check_input(..., clip_first_on_zero=True)`: a factor never < 0.
            factors[name] = self.backend.random.uniform(
                (batch, 1, 1, 1), max(0.0, 1.0 - strength), 1.0 + strength, seed=seed
            )
        # torchvision's `torch.randperm(4)` per call, here per image: the ranks of 3 draws.
        draws = self.backend.random.uniform((batch, 3), seed=seed)
        factors["order"] = self.backend.numpy.argsort(draws, axis=-1)
        return factors

    def transform_images(self, images, transformation, training=True):
        b = self.backend
        images = b.cast(images, self.compute_dtype)
        if not training:
            return images
        rank3 = len(images.shape) == 3
        x = images[None] if rank3 else images
        first = self.data_format == "channels_first"
        x = b.numpy.transpose(x, (0, 2, 3, 1)) if first else x
        if x.shape[-1] not in (1, 3, None):  # torchvision's `_assert_channels(img, [1, 3])`
            raise ValueError(
                f"ColorJitter: images of {x.shape[-1]} channels ({self.data_format}) are not "
                "valid; it jitters RGB (3 channels) or grey (1 channel) images."
            )
        low, high = self.value_range
        factors = [transformation[name] for name in ("brightness", "contrast", "saturation")]
        order = b.cast(transformation["order"], "int32")
        for step in range(3):
            op = b.numpy.reshape(order[:, step], (-1, 1, 1, 1))
            x = b.numpy.where(
                op == 0,
                blend(b, x, low, factors[0], low, high),
                # On one channel the luma is the channel itself (its weights sum to 1).
                b.numpy.where(
                    op == 1,
                    blend(b, x, b.numpy.mean(luma(b, x), axis=(1, 2, 3), keepdims=True),
                          factors[1], low, high),
                    blend(b, x, luma(b, x), factors[2], low, high),
                ),
            )  # fmt: skip
        x = b.cast(b.numpy.transpose(x, (0, 3, 1, 2)) if first else x, self.compute_dtype)
        return x[0] if rank3 else x

    def get_config(self):
        config = super().get_config()
        config.pop("factor", None)
        return {
            **config,
            "brightness": self.brightness,
            "contrast": self.contrast,
            "saturation": self.saturation,
        }


def luma(b, x):
    """ITU-R 601 luma, as torchvision's `rgb_to_grayscale` and PIL's "L": (N, H, W, 1)."""
    weights = b.convert_to_tensor([0.299, 0.587, 0.114], dtype=x.dtype)
    return b.numpy.sum(x * weights, axis=-1, keepdims=True)


def blend(b, x, other, factor, low, high):
    """torchvision's `_blend` (PIL's `Image.blend` from `other`): factor * x +
    (1 - factor) * other, clipped."""
    return b.numpy.clip(factor * x + (1.0 - factor) * other, low, high)
