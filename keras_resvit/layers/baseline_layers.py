"""Layers the baselines (`models.baselines`) need that Keras lacks: AlexNet's LRN."""

import keras
from keras import ops

from keras_resvit.base.validation import check_number


@keras.saving.register_keras_serializable(package="keras_resvit")
class LocalResponseNormalization(keras.layers.Layer):
    """Local response normalization across channels (Krizhevsky et al. 2012, Section 3.3).

    Each activation is divided by the energy of its `size` neighbouring channels at the same
    pixel: b_i = a_i / (bias + alpha * sum_{j=i-size//2}^{i+size//2} a_j^2)^beta, the sum cut
    at the first and last channel. As in the paper (and `tf.nn.local_response_normalization`,
    with `depth_radius = size // 2`), alpha multiplies the plain sum; Caffe divides it by
    `size` first. Channels last; the squares are summed in float32 so that ReLU outputs in
    the hundreds do not overflow float16 under mixed precision.

    Args:
        size: the paper's n, the number of channels summed over; a positive odd int.
        bias: the paper's k (> 0).
        alpha: the paper's alpha (>= 0).
        beta: the paper's beta (>= 0).
        **kwargs: arguments of `keras.layers.Layer` (name, dtype, ...).

    Raises:
        ValueError: for an invalid argument, naming it and the valid values.

    Example:
    >>> import keras
    >>> from keras_resvit.layers import LocalResponseNormalization
    >>> tuple(LocalResponseNormalization()(keras.ops.ones((1, 4, 4, 8))).shape)
    (1, 4, 4, 8)
    """

    def __init__(self, size=5, bias=2.0, alpha=1e-4, beta=0.75, **kwargs):
        if not isinstance(size, int) or isinstance(size, bool) or size < 1 or size % 2 == 0:
            raise ValueError(f"size={size!r} must be a positive odd int (the paper's n = 5).")
        check_number("bias", bias, 0)
        check_number("alpha", alpha, 0, include_low=True)
        check_number("beta", beta, 0, include_low=True)
        super().__init__(**kwargs)
        self.size = size
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        half, channels = self.size // 2, inputs.shape[-1]
        pad = [[0, 0]] * (len(inputs.shape) - 1) + [[half, half]]
        squares = ops.pad(ops.square(x), pad)
        energy = squares[..., :channels]
        for offset in range(1, self.size):
            energy = energy + squares[..., offset : offset + channels]
        outputs = x * ops.power(self.bias + self.alpha * energy, -self.beta)
        return ops.cast(outputs, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "size": self.size,
            "bias": self.bias,
            "alpha": self.alpha,
            "beta": self.beta,
        }
