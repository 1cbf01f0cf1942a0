"""`keras.layers.RandAugment` with an equalization that stays fast inside `tf.data` under JAX.

Keras 3.15's `Equalization` picks its histogram code by the global backend, not by the backend
the layer runs on: inside `tf.data` under JAX it builds a 256-step unrolled TensorFlow graph,
which takes ~30 s to trace and makes RandAugment ~7x slower per image. The histogram below
(sort, then count by binary search) has static shapes, so it traces quickly and runs on every
backend, under `jit` too.
"""

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
    """`keras.layers.RandAugment` (Cubuk et al. 2020) using the `Equalization` above.

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
