"""`keras.layers.RandAugment` that runs only the chosen operations, with a fast equalization.

Keras 3.15's `RandAugment` computes all eleven operations for each of its `num_ops` steps and
keeps one with `where`: 22 image transforms per call for 2 kept. Branching with the backend's
`switch` (`tf.switch_case` inside `tf.data`, whatever the Keras backend) runs only the chosen
one, which makes the `deit` and `vit` presets several times faster.

Keras 3.15's `Equalization` picks its histogram code by the global backend, not by the backend
the layer runs on: inside `tf.data` under JAX it builds a 256-step unrolled TensorFlow graph,
which takes ~30 s to trace and makes RandAugment ~7x slower per image. The histogram below
(sort, then count by binary search) has static shapes, so it traces quickly and runs on every
backend, under `jit` too.
"""

import functools

import keras


@keras.saving.register_keras_serializable(package="keras_resvit")
class Equalization(keras.layers.Equalization):
    """`keras.layers.Equalization` with a sort-based histogram (same output).

    Example:
    >>> import numpy as np
    >>> tuple(Equalization()(np.zeros((8, 8, 3), "float32")).shape)
    (8, 8, 3)
    """

    def _custom_histogram_fixed_width(self, values, value_range, nbins):
        b = self.backend
        low, high = value_range
        scaled = (b.cast(values, "float32") - low) * (nbins - 1) / (high - low)
        indices = b.numpy.clip(b.cast(scaled, "int32"), 0, nbins - 1)
        ordered = b.numpy.sort(b.numpy.reshape(indices, [-1]))
        # Bin i holds the entries in [first >= i, first >= i + 1).
        edges = b.numpy.searchsorted(ordered, b.numpy.arange(nbins + 1, dtype="int32"))
        return b.cast(edges[1:] - edges[:-1], "int32")


@keras.saving.register_keras_serializable(package="keras_resvit")
class RandAugment(keras.layers.RandAugment):
    """`keras.layers.RandAugment` (Cubuk et al. 2020) that transforms with the chosen ops only.

    Same operations, magnitudes and random draws as Keras' layer (`num_ops` indices per call,
    shared by a batch), and the `Equalization` above.

    Args: those of `keras.layers.RandAugment`.

    Example:
    >>> import numpy as np
    >>> layer = RandAugment(value_range=(0, 255), num_ops=2, factor=0.9, seed=0)
    >>> tuple(layer(np.zeros((8, 8, 3), "float32")).shape)
    (8, 8, 3)
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.equalization = Equalization(value_range=self.value_range, data_format=self.data_format)
        # One function per op, made once: JAX caches traced `switch` branches by function.
        self._branches = tuple(
            functools.partial(self._apply, name) for name in self._AUGMENT_LAYERS
        )

    def get_random_transformation(self, data, training=True, seed=None):
        # Keras moves the operations to TensorFlow inside `tf.data` and never back, so an eager
        # call under JAX after a pipeline was traced failed; they follow this layer instead.
        for name in self._AUGMENT_LAYERS:
            getattr(self, name).backend.set_backend(self.backend.name)
        return super().get_random_transformation(data, training=training, seed=seed)

    def transform_images(self, images, transformation, training=True):
        images = self.backend.cast(images, self.compute_dtype)
        if not training:
            return images
        for step in range(self.num_ops):
            index = transformation["layer_idxes"][step]
            images = self.backend.core.switch(
                index, self._branches, images, transformation["transforms"]
            )
        return images

    def _apply(self, name, images, transforms):
        # Every branch must return the input's dtype for `switch`.
        out = getattr(self, name).transform_images(images, transforms[name])
        return self.backend.cast(out, self.compute_dtype)
