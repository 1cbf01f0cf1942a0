"""RandAugment (Cubuk et al. 2020) with the operations and magnitudes the papers trained with.

DeiT (Touvron et al. 2021) and ResNet strikes back (Wightman et al. 2021) train with timm's
`rand-m9-mstd0.5-inc1` / `rand-m7-mstd0.5-inc1`: each image gets `num_ops` operations drawn with
replacement from fifteen, each applied with probability 0.5, each at a magnitude drawn from a
normal distribution around `magnitude` (standard deviation 0.5, clipped to [0, 10]), with a
random sign. With `f = magnitude / 10` the operations are (PIL's, on the 0-255 scale):

| operation | increasing (inc1, default) | not increasing (Google's TPU code) |
|---|---|---|
| auto_contrast, equalize, invert | no magnitude | no magnitude |
| rotate | +-30f degrees | +-30f degrees |
| posterize | keep 4 - int(4f) bits | keep int(4f) bits |
| solarize | invert pixels >= 256 - int(256f) | invert pixels >= int(256f) |
| solarize_add | add int(110f) to pixels < 128 | same |
| color, contrast, brightness, sharpness | blend factor max(0.1, 1 +- 0.9f) | 0.1 + 1.8f |
| shear_x, shear_y | +-0.3f | same |
| translate_x, translate_y | +-0.45f of the image side | same |

Areas moved in from outside the image get the ImageNet mean colour, timm's fill (its grey level
on images that are not RGB). The blends are
PIL's `ImageEnhance` towards greyscale (colour), the mean grey level (contrast), black
(brightness) and PIL's 3x3 SMOOTH filter with the border kept (sharpness); equalize is PIL's
`ImageOps.equalize`. Images are float: no operation rounds to whole levels as PIL's uint8
images do (<= 1 level apart), and geometric operations interpolate bilinearly (timm draws
bilinear or bicubic; Keras' affine transform has no bicubic).
"""

import functools
import math

import keras

from keras_resvit.base.backend import image_preprocessing_layer, in_tf_graph
from keras_resvit.base.validation import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_value_range,
    refuse_arguments,
)
from keras_resvit.layers.pil_ops import auto_contrast, equalize, smooth
from keras_resvit.layers.three_augment import blend, luma

# timm's `_RAND_INCREASING_TRANSFORMS` (and `_RAND_TRANSFORMS`), in its order.
OPERATIONS = (
    "auto_contrast", "equalize", "invert", "rotate", "posterize", "solarize", "solarize_add",
    "color", "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x",
    "translate_y",
)  # fmt: skip
LEVELS = 10.0  # timm's `_LEVEL_DENOM`: magnitude 10 is each operation's strongest
# Google's definitions (`increasing=False`) go on growing above 10: AugReg (Steiner et al. 2022)
# trains at 10, 15 and 20; beyond ~22 a translation moves the whole image out.
GOOGLE_LEVELS = 20.0
IMAGENET_FILL = (124, 116, 104)  # round(255 * ImageNet mean): timm's `img_mean`
IMAGENET_GREY = 117  # PIL's "L" of IMAGENET_FILL: the fill of images that are not RGB


@keras.saving.register_keras_serializable(package="keras_resvit")
class RandAugment(image_preprocessing_layer()):
    """RandAugment with timm's operations and magnitudes (`rand-m{magnitude}-mstd{std}-inc1`).

    Each call draws `num_ops` operations (with replacement, from `OPERATIONS`), whether each
    runs (`prob`), its magnitude (normal around `magnitude`, `magnitude_std`; uniform in
    `[0, magnitude]` for an infinite std, timm's `mstd101`; clipped to `[0, magnitude_max]`)
    and its sign. Only the chosen operations are computed (the backend's `switch`). A batch
    shares one draw, as in Keras' layers; the package's pipelines apply it to each image.

    Args:
        num_ops: operations per image (the papers: 2).
        magnitude: 0 to `magnitude_max` (DeiT: 9, ResNet strikes back A1/A2: 7, A3: 6).
        magnitude_std: standard deviation of the magnitude (the papers: 0.5); 0 keeps it
            fixed, `math.inf` draws it uniformly from `[0, magnitude]`.
        magnitude_max: upper clip of the drawn magnitude (timm: 10), at most 10 (timm's
            increasing operations turn over above it: posterize would keep < 0 bits) or, with
            `increasing=False`, at most 20 (AugReg's strongest).
        prob: probability that each drawn operation runs (timm: 0.5).
        increasing: timm's "inc1" set, whose every operation is stronger at a higher
            magnitude; False gives Google's TPU definitions (see the module).
        fill_value: colour of the areas moved in from outside, on `value_range`: one number
            (any channel count) or three for RGB images (default: the ImageNet mean colour,
            its grey level on images that are not RGB).
        interpolation: "bilinear" or "nearest", for rotation, shear and translation.
        value_range: the images' pixel range; the output is clipped to it.
        seed: seed of the random draws.
        data_format: "channels_last" or "channels_first".

    Example:
    >>> from keras_resvit.layers.rand_augment import RandAugment
    >>> import numpy as np
    >>> layer = RandAugment(num_ops=2, magnitude=9, magnitude_std=0.5, seed=0)
    >>> tuple(layer(np.zeros((8, 8, 3), "float32")).shape)
    (8, 8, 3)
    """

    _USE_BASE_FACTOR = False

    def __init__(
        self,
        num_ops=2,
        magnitude=9.0,
        magnitude_std=0.5,
        magnitude_max=LEVELS,
        prob=0.5,
        increasing=True,
        fill_value=None,
        interpolation="bilinear",
        value_range=(0, 255),
        seed=None,
        data_format=None,
        **kwargs,
    ):
        refuse_arguments(
            "RandAugment", kwargs, ("bounding_box_format",), "it transforms images only"
        )
        super().__init__(data_format=data_format, **kwargs)
        check_int("RandAugment: num_ops", num_ops, 0)
        check_bool("RandAugment: increasing", increasing)
        check_number(
            "RandAugment: magnitude_max", magnitude_max, 0,
            LEVELS if increasing else GOOGLE_LEVELS, include_high=True,
        )  # fmt: skip
        check_number("RandAugment: magnitude", magnitude, 0, include_low=True)
        if magnitude > magnitude_max:
            raise ValueError(
                f"RandAugment: magnitude={magnitude!r} must be a number in [0, magnitude_max] "
                f"= [0, {magnitude_max}] (10 is each operation's strongest; raise magnitude_max "
                "up to 20 with increasing=False for Google's definitions)."
            )
        if magnitude_std != math.inf:
            check_number("RandAugment: magnitude_std", magnitude_std, 0, include_low=True)
        check_number("RandAugment: prob", prob, 0, 1, include_low=True, include_high=True)
        check_choice("RandAugment: interpolation", interpolation, ("bilinear", "nearest"))
        self.value_range = check_value_range("RandAugment", value_range)
        self.fill_value = _check_fill(fill_value, self.value_range)
        self.num_ops = num_ops
        self.magnitude = float(magnitude)
        self.magnitude_std = float(magnitude_std)
        self.magnitude_max = float(magnitude_max)
        self.prob = float(prob)
        self.increasing = increasing
        self.interpolation = interpolation
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)
        # One function per operation, made once (JAX caches traced `switch` branches by
        # function); the last one, for operations that do not run, returns the images.
        self._branches = tuple(functools.partial(self._apply, op) for op in OPERATIONS) + (
            self._identity,
        )

    def get_random_transformation(self, data, training=True, seed=None):
        if not training or not self.num_ops:
            return None
        b = self.backend
        seed = self._get_seed_generator(b._backend) if seed is None else seed
        shape = (self.num_ops,)
        operations = b.random.randint(shape, 0, len(OPERATIONS), seed=seed)
        runs = b.random.uniform(shape, seed=seed) < self.prob
        if self.magnitude_std == math.inf:
            magnitudes = b.random.uniform(shape, 0.0, self.magnitude, seed=seed)
        elif self.magnitude_std > 0:
            magnitudes = b.random.normal(
                shape, mean=self.magnitude, stddev=self.magnitude_std, seed=seed
            )
        else:
            magnitudes = b.numpy.full(shape, self.magnitude, "float32")
        signs = b.numpy.where(b.random.uniform(shape, seed=seed) < 0.5, -1.0, 1.0)
        return {
            "operations": b.numpy.where(runs, operations, len(OPERATIONS)),
            "magnitudes": b.numpy.clip(magnitudes, 0.0, self.magnitude_max),
            "signs": signs,
        }

    def transform_images(self, images, transformation, training=True):
        images = self.backend.cast(images, self.compute_dtype)
        if not training or transformation is None:
            return images
        b = self.backend
        x = self._to_levels(images)
        for step in range(self.num_ops):
            x = b.core.switch(
                transformation["operations"][step], self._branches, x,
                transformation["magnitudes"][step], transformation["signs"][step],
            )  # fmt: skip
        return self._from_levels(x)

    def transform_labels(self, labels, transformation, training=True):
        return labels  # no operation moves an image's class

    def apply_operation(self, images, operation, magnitude, negate=False):
        """`images` (one image or a batch, on `value_range`) after one operation at a fixed
        magnitude (0 to `magnitude_max`; `negate` for the opposite direction), as the random
        draws would apply it; inside `tf.data` with TensorFlow ops, as the layer's call."""
        check_choice("RandAugment.apply_operation: operation", operation, OPERATIONS)
        check_number(
            "RandAugment.apply_operation: magnitude", magnitude, 0, self.magnitude_max,
            include_low=True, include_high=True,
        )  # fmt: skip
        if in_tf_graph():
            self.backend.set_backend("tensorflow")
        try:
            b = self.backend
            images = b.cast(images, self.compute_dtype)
            single = len(images.shape) == 3
            levels = self._to_levels(b.numpy.expand_dims(images, 0) if single else images)
            sign = b.cast(-1.0 if negate else 1.0, "float32")
            x = self._from_levels(
                self._apply(operation, levels, b.cast(magnitude, "float32"), sign)
            )
            return x[0] if single else x
        finally:
            self.backend.reset()

    def _to_levels(self, images):
        # Channels-last float32 on PIL's 0-255 scale.
        b = self.backend
        if self.data_format == "channels_first":
            images = b.numpy.transpose(images, (0, 2, 3, 1))
        self._fill_levels(images.shape[-1])  # a fill of the wrong channel count: whatever runs
        low, high = self.value_range
        return (b.cast(images, "float32") - low) * (255.0 / (high - low))

    def _from_levels(self, x):
        b = self.backend
        low, high = self.value_range
        x = b.numpy.clip(x, 0.0, 255.0) * ((high - low) / 255.0) + low
        x = b.numpy.clip(x, low, high)
        if self.data_format == "channels_first":
            x = b.numpy.transpose(x, (0, 3, 1, 2))
        return b.cast(x, self.compute_dtype)

    def _identity(self, x, magnitude, sign):
        return x

    def _apply(self, operation, x, magnitude, sign):
        return getattr(self, f"_{operation}")(x, magnitude / LEVELS, sign)

    # Operations: `x` channels-last float32 levels 0-255, `f` the magnitude / 10, `sign` +-1.

    def _auto_contrast(self, x, f, sign):
        return auto_contrast(self.backend, x)

    def _equalize(self, x, f, sign):
        return equalize(self.backend, x)

    def _invert(self, x, f, sign):
        return 255.0 - x

    def _posterize(self, x, f, sign):
        b = self.backend
        bits = b.numpy.floor(4.0 * f)
        bits = 4.0 - bits if self.increasing else bits
        width = b.numpy.power(2.0, 8.0 - bits)
        return b.numpy.floor(b.numpy.floor(x) / width) * width

    def _solarize(self, x, f, sign):
        b = self.backend
        threshold = b.numpy.floor(256.0 * f)
        threshold = 256.0 - threshold if self.increasing else threshold
        return b.numpy.where(x >= threshold, 255.0 - x, x)

    def _solarize_add(self, x, f, sign):
        b = self.backend
        added = b.numpy.minimum(x + b.numpy.floor(110.0 * f), 255.0)
        return b.numpy.where(x < 128.0, added, x)

    def _enhance(self, degenerate, x, f, sign):
        # PIL's ImageEnhance: blend from the degenerate image, factor 1 = unchanged.
        b = self.backend
        timm = self.increasing  # 1 +- 0.9f (at least 0.1); Google's: 0.1 + 1.8f
        factor = b.numpy.maximum(1.0 + sign * 0.9 * f, 0.1) if timm else 1.8 * f + 0.1
        return blend(b, x, degenerate, factor, 0.0, 255.0)

    def _grey(self, x):
        if x.shape[-1] != 3:
            return self.backend.numpy.mean(x, axis=-1, keepdims=True)
        return luma(self.backend, x)

    def _color(self, x, f, sign):
        return self._enhance(self._grey(x), x, f, sign)

    def _contrast(self, x, f, sign):
        b = self.backend
        mean = b.numpy.round(b.numpy.mean(self._grey(x), axis=(1, 2, 3), keepdims=True))
        return self._enhance(mean, x, f, sign)

    def _brightness(self, x, f, sign):
        return self._enhance(0.0, x, f, sign)

    def _sharpness(self, x, f, sign):
        return self._enhance(smooth(self.backend, x), x, f, sign)

    def _rotate(self, x, f, sign):
        # PIL's `Image.rotate(degrees)`, counter-clockwise about the centre.
        b = self.backend
        radians = -sign * 30.0 * f * (math.pi / 180.0)
        cos, sin = b.numpy.cos(radians), b.numpy.sin(radians)
        height, width = self._size(x)
        cx, cy = width / 2.0, height / 2.0
        return self._affine(
            x, cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy
        )

    def _shear_x(self, x, f, sign):
        return self._affine(x, 1.0, sign * 0.3 * f, 0.0, 0.0, 1.0, 0.0)

    def _shear_y(self, x, f, sign):
        return self._affine(x, 1.0, 0.0, 0.0, sign * 0.3 * f, 1.0, 0.0)

    def _translate_x(self, x, f, sign):
        width = self._size(x)[1]
        return self._affine(x, 1.0, 0.0, sign * 0.45 * f * width, 0.0, 1.0, 0.0)

    def _translate_y(self, x, f, sign):
        height = self._size(x)[0]
        return self._affine(x, 1.0, 0.0, 0.0, 0.0, 1.0, sign * 0.45 * f * height)

    def _size(self, x):
        shape = self.backend.core.shape(x)
        return self.backend.cast(shape[1], "float32"), self.backend.cast(shape[2], "float32")

    def _affine(self, x, a, b_, c, d, e, f):
        """PIL's AFFINE transform data (output pixel centre (x + 0.5, y + 0.5) reads the input
        at (a x + b y + c, d x + e y + f)) applied with Keras' `affine_transform`, whose pixel
        centres are whole numbers; the fill colour is exact per channel."""
        b = self.backend
        values = [b.cast(v, "float32") for v in (a, b_, c, d, e, f)]
        a, b_, c, d, e, f = values
        zero = b.cast(0.0, "float32")
        transform = b.numpy.stack(
            [a, b_, c + 0.5 * (a + b_ - 1.0), d, e, f + 0.5 * (d + e - 1.0), zero, zero]
        )
        transform = b.numpy.tile(b.numpy.expand_dims(transform, 0), (b.core.shape(x)[0], 1))
        fill = b.convert_to_tensor(self._fill_levels(x.shape[-1]), "float32")
        moved = b.image.affine_transform(
            x - fill, transform, interpolation=self.interpolation, fill_mode="constant",
            fill_value=0, data_format="channels_last",
        )  # fmt: skip
        return moved + fill

    def _fill_levels(self, channels):
        if self.fill_value is None:
            return IMAGENET_FILL if channels in (3, None) else [IMAGENET_GREY]
        if len(self.fill_value) not in (1, channels or 3):
            raise ValueError(
                f"RandAugment: fill_value={self.fill_value!r} holds one value per channel of "
                f"3-channel (RGB) images, but the images have {channels} channels; pass a "
                "single number for any count, or None (the ImageNet mean colour, its grey "
                "level on images that are not RGB)."
            )
        low, high = self.value_range
        return [(v - low) * 255.0 / (high - low) for v in self.fill_value]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.pop("factor", None)
        config.pop("bounding_box_format", None)
        return {
            **config,
            "num_ops": self.num_ops,
            "magnitude": self.magnitude,
            "magnitude_std": self.magnitude_std,
            "magnitude_max": self.magnitude_max,
            "prob": self.prob,
            "increasing": self.increasing,
            "fill_value": self.fill_value,
            "interpolation": self.interpolation,
            "value_range": self.value_range,
            "seed": self.seed,
            "data_format": self.data_format,
        }


def _check_fill(fill_value, value_range):
    if fill_value is None:
        return None
    values = fill_value if isinstance(fill_value, (tuple, list)) else [fill_value]
    low, high = value_range
    if len(values) not in (1, 3) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and low <= v <= high for v in values
    ):
        raise ValueError(
            f"RandAugment: fill_value={fill_value!r} must be one number or three (RGB) within "
            f"value_range {value_range}, or None for the ImageNet mean colour."
        )
    return [float(v) for v in values]
