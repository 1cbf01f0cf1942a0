"""`keras.layers.RandAugment` that runs only the chosen operations, with a fast equalization.

Keras' magnitudes are not the papers': the recipes use `keras_resvit.layers.RandAugment`;
`KerasRandAugment` keeps Keras' layer, faster, for users who want its behaviour.

Keras 3.15's `RandAugment` computes all eleven operations for each of its `num_ops` steps and
keeps one with `where`: 22 image transforms per call for 2 kept. Branching with the backend's
`switch` (`tf.switch_case` inside `tf.data`, whatever the Keras backend) runs only the chosen
one, which makes the `deit` and `vit` presets several times faster. Inside `tf.data` each chosen
operation also draws its random settings inside its branch, instead of drawing them for all
eleven operations at every step.

Keras 3.15's `Equalization` picks its histogram code by the global backend, not by the backend
the layer runs on: inside `tf.data` under JAX it builds a 256-step unrolled TensorFlow graph,
which takes ~30 s to trace and makes RandAugment ~7x slower per image. The equalization below
(one scatter-add histogram for all channels) has static shapes, so it traces quickly and runs on
every backend, under `jit` too.
"""

import functools

import keras

from keras_resvit.base.backend import fast_path, in_tf_graph
from keras_resvit.base.validation import check_choice, check_int, check_number, check_value_range


@keras.saving.register_keras_serializable(package="keras_resvit")
class Equalization(keras.layers.Equalization):
    """`keras.layers.Equalization` computed for all channels at once (same output).

    Keras equalizes channel by channel with ~30 small ops each; here the channels share one
    scatter-add histogram (static shapes, so it also runs under `jit`), one cumulative sum and
    one table lookup. Like Keras', a batch shares one histogram per channel.

    Example:
    >>> from keras_resvit.layers.keras_rand_augment import Equalization
    >>> import numpy as np
    >>> tuple(Equalization()(np.zeros((8, 8, 3), "float32")).shape)
    (8, 8, 3)
    """

    def __init__(self, value_range=(0, 255), bins=256, **kwargs):
        check_value_range("Equalization", value_range)
        check_int("Equalization: bins", bins, minimum=2)
        super().__init__(value_range=value_range, bins=bins, **kwargs)

    def transform_images(self, images, transformation, training=True):
        if (
            not training
            or self.data_format == "channels_first"
            or not fast_path("batched_equalization")
        ):
            return super().transform_images(images, transformation, training=training)
        b = self.backend
        bins, channels = self.bins, images.shape[-1]
        low, high = self.value_range
        pixels = (b.cast(images, "float32") - low) * (255.0 / (high - low))
        indices = b.numpy.clip(b.cast(pixels * ((bins - 1) / 255.0), "int32"), 0, bins - 1)
        # Channel c counts in bins [c * bins, (c + 1) * bins) of one histogram.
        keys = b.numpy.reshape(indices, [-1, channels]) + b.numpy.arange(channels) * bins
        # A scatter-add has a static output shape (bincount's is data-dependent under JAX).
        histogram = b.core.scatter(
            b.numpy.reshape(keys, [-1, 1]),
            b.numpy.ones_like(b.numpy.reshape(keys, [-1])),
            (channels * bins,),
        )
        histogram = b.numpy.reshape(histogram, [channels, bins])
        cdf = b.numpy.cumsum(histogram, axis=-1)
        total = cdf[:, -1:]
        cdf_min = b.numpy.min(b.numpy.where(cdf > 0, cdf, total), axis=-1, keepdims=True)
        spread = b.numpy.maximum(total - cdf_min, 1)
        table = b.cast(cdf - cdf_min, "float32") * 255.0 / b.cast(spread, "float32")
        table = b.numpy.clip(b.numpy.round(table), 0, 255)
        equalized = b.numpy.reshape(
            b.numpy.take(b.numpy.reshape(table, [-1]), keys), b.core.shape(pixels)
        )
        # A channel with a single value is left as it is.
        flat = b.numpy.count_nonzero(histogram, axis=-1) <= 1
        out = b.numpy.where(flat, pixels, equalized) * ((high - low) / 255.0) + low
        return b.cast(out, self.compute_dtype)


@keras.saving.register_keras_serializable(package="keras_resvit")
class KerasRandAugment(keras.layers.RandAugment):
    """`keras.layers.RandAugment` (Cubuk et al. 2020) that transforms with the chosen ops only.

    Same operations, magnitudes and random draws as Keras' layer (`num_ops` indices per call,
    shared by a batch), and the `Equalization` above; the output is clipped to `value_range`.

    Keras' magnitudes are not the paper's (nor timm's, which the DeiT and RSB recipes used):
    each op draws its strength uniformly from `[0, factor]` on its own Keras scale, mostly in
    one direction. At `factor=0.9` (the `deit` preset) the drawn transformations span: rotation
    2-323 degrees (paper / timm at magnitude 9: +-27), translation 0-90% of the image, one
    direction (+-40.5%), shear +-0.9 (+-0.27), brightness +2 to +229 levels added (a factor
    1 +- 0.81), contrast x1.0-1.9 (1 +- 0.81), colour and sharpness blends of 0-0.9 towards
    grey / blur (1 +- 0.81). Training with it is stronger than the papers' recipes, which
    `keras_resvit.layers.RandAugment` follows.

    Args: those of `keras.layers.RandAugment`: `value_range` (low, high) with low < high,
    `num_ops` >= 0, `factor` a number in [0, 1] (strengths drawn from [0, factor]) or a pair
    (low, high) with 0 <= low <= high <= 1, `interpolation` "bilinear" or "nearest", `seed`,
    `data_format`.

    Example:
    >>> from keras_resvit.layers.keras_rand_augment import KerasRandAugment
    >>> import numpy as np
    >>> layer = KerasRandAugment(value_range=(0, 255), num_ops=2, factor=0.9, seed=0)
    >>> tuple(layer(np.zeros((8, 8, 3), "float32")).shape)
    (8, 8, 3)
    """

    def __init__(
        self,
        value_range=(0, 255),
        num_ops=2,
        factor=0.5,
        interpolation="bilinear",
        seed=None,
        data_format=None,
        **kwargs,
    ):
        name = type(self).__name__
        check_value_range(name, value_range)
        check_int(f"{name}: num_ops", num_ops, minimum=0)
        check_unit_factor(name, factor)
        # Keras' layer raises NotImplementedError for another interpolation, at the first call.
        check_choice(f"{name}: interpolation", interpolation, ("bilinear", "nearest"))
        super().__init__(
            value_range=value_range, num_ops=num_ops, factor=factor, interpolation=interpolation,
            seed=seed, data_format=data_format, **kwargs,
        )  # fmt: skip
        self.equalization = Equalization(value_range=self.value_range, data_format=self.data_format)
        # One function per op, made once: JAX caches traced `switch` branches by function.
        self._branches = tuple(
            functools.partial(self._apply, name) for name in self._AUGMENT_LAYERS
        )
        self._drawing_branches = tuple(
            functools.partial(self._draw_and_apply, name) for name in self._AUGMENT_LAYERS
        )

    def get_random_transformation(self, data, training=True, seed=None):
        # Keras moves the operations to TensorFlow inside `tf.data` and never back, so an eager
        # call under JAX after a pipeline was traced failed; they follow this layer instead.
        for name in self._AUGMENT_LAYERS:
            getattr(self, name).backend.set_backend(self.backend.name)
        # Inside `tf.data` (a TensorFlow graph whatever the backend) stateful random draws can
        # run inside `switch_case` branches; JAX's `switch` cannot update the seed state, and
        # boxes/masks (dict inputs) need every op's draw. Keras' layers test the same helper.
        if training and in_tf_graph() and not isinstance(data, dict):
            indices = self.backend.random.randint(
                (self.num_ops,),
                0,
                len(self._AUGMENT_LAYERS),
                seed=self._get_seed_generator(self.backend._backend),
            )
            return {"layer_idxes": indices}
        return super().get_random_transformation(data, training=training, seed=seed)

    def transform_images(self, images, transformation, training=True):
        images = self.backend.cast(images, self.compute_dtype)
        if not training:
            return images
        for step in range(self.num_ops):
            index = transformation["layer_idxes"][step]
            if "transforms" in transformation:
                images = self.backend.core.switch(
                    index, self._branches, images, transformation["transforms"]
                )
            else:
                images = self.backend.core.switch(index, self._drawing_branches, images)
        # The range is the contract of every preset (a deit preset once gave 255.00002).
        return self.backend.numpy.clip(images, *self.value_range)

    def _apply(self, name, images, transforms):
        # Every branch must return the input's dtype for `switch`.
        out = getattr(self, name).transform_images(images, transforms[name])
        return self.backend.cast(out, self.compute_dtype)

    def _draw_and_apply(self, name, images):
        layer = getattr(self, name)
        seed = self._get_seed_generator(self.backend._backend)
        transform = layer.get_random_transformation(images, training=True, seed=seed)
        return self._apply(name, images, {name: transform})


def check_unit_factor(layer, factor):
    """`factor` of a Keras image layer bounded by [0, 1]: a number in [0, 1] or a pair (low,
    high) with 0 <= low <= high <= 1 (Keras' own check lets NaN through and sorts a pair)."""
    pair = isinstance(factor, (tuple, list))
    values = tuple(factor) if pair else (factor,)
    try:
        for value in values:
            check_number("factor", value, 0, 1, include_low=True, include_high=True)
        valid = len(values) == (2 if pair else 1) and values[0] <= values[-1]
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(
            f"{layer}: factor={factor!r} must be a number in [0, 1] or a pair (low, high) with "
            "0 <= low <= high <= 1."
        )


def probability_range(layer, factor):
    """`factor` of a Keras layer that draws each image's probability from a range (blur,
    erasing), checked (`check_unit_factor`): one number p as (p, p), the probability p itself
    (Keras would draw it from [0, p]); a pair as it is."""
    check_unit_factor(layer, factor)
    return tuple(factor) if isinstance(factor, (tuple, list)) else (factor, factor)
