"""Layers the ResNet builders need that Keras does not have."""

import keras
from keras import ops

from keras_resvit.base.backend import fast_path
from keras_resvit.base.validation import check_int, check_number


@keras.saving.register_keras_serializable(package="keras_resvit")
class ZeroPadShortcut(keras.layers.Layer):
    """Option-A shortcut of He et al. (2015): subsample, then zero-pad the new channels.

    Parameter-free identity shortcut used when a residual block changes shape (the paper's
    CIFAR nets). The extra channels are split evenly between both ends, as in the common
    reference implementations.

    Args:
        filters: number of output channels (>= input channels).
        stride: spatial subsampling factor.
    """

    def __init__(self, filters, stride=1, **kwargs):
        check_int("ZeroPadShortcut: filters", filters)
        check_int("ZeroPadShortcut: stride", stride)
        super().__init__(**kwargs)
        self.filters = filters
        self.stride = stride

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] > self.filters:
            raise ValueError(
                f"ZeroPadShortcut: filters={self.filters} is not valid for inputs of shape "
                f"{tuple(input_shape)}; expected images (batch, height, width, channels) with "
                f"at most {self.filters} channels (it pads, never drops, channels)."
            )

    def call(self, inputs):
        x = inputs
        if self.stride > 1:
            x = x[:, :: self.stride, :: self.stride, :]
        extra = self.filters - inputs.shape[-1]
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "stride": self.stride}


def _pointwise_as_matmul(layer):
    """Whether the Conv2D `layer` runs as a matmul: a 1x1 kernel without dilation or groups,
    channels last, on JAX's CPU backend, where XLA's 1x1 convolutions are slower than the same
    matmuls (figures in `benchmarks/NOTES.md`, "Fast paths"). TensorFlow's oneDNN convolutions
    need no such path."""
    if tuple(layer.kernel_size) != (1, 1) or tuple(layer.dilation_rate) != (1, 1):
        return False
    return (
        layer.groups == 1 and layer.data_format == "channels_last" and fast_path("pointwise_matmul")
    )


@keras.saving.register_keras_serializable(package="keras_resvit")
class PointwiseConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` whose 1x1 convolutions are matmuls where that is faster.

    Same arguments, weights, config and results as the Keras layer. A 1x1 kernel (a ResNet
    bottleneck's first and last convolutions, its projection shortcuts) is a matmul over the
    channels of every pixel, strided ones after subsampling; on JAX's CPU backend it is
    computed that way (faster: `benchmarks/NOTES.md`, "Fast paths"), elsewhere by the
    backend's convolution.

    Example:
    >>> import keras
    >>> from keras_resvit.layers import PointwiseConv2D
    >>> tuple(PointwiseConv2D(8, 1, strides=2)(keras.ops.ones((1, 5, 5, 4))).shape)
    (1, 3, 3, 8)
    """

    def convolution_op(self, inputs, kernel):
        if not _pointwise_as_matmul(self):
            return super().convolution_op(inputs, kernel)
        if tuple(self.strides) != (1, 1):
            # A 1x1 window at stride s reads pixels 0, s, 2s, ... with "same" or "valid".
            inputs = inputs[:, :: self.strides[0], :: self.strides[1], :]
        # A 2-D matmul over the pixels: its kernel gradient then contracts the leading axis
        # of both operands, which XLA does in place. From the 4-D form XLA first copied each
        # upstream gradient into a (channels, pixels) layout, a third of a ResNet-50 step.
        shape = ops.shape(inputs)
        flat = ops.reshape(inputs, (-1, shape[-1]))
        outputs = ops.matmul(flat, ops.reshape(kernel, kernel.shape[2:]))
        return ops.reshape(outputs, (*shape[:-1], kernel.shape[-1]))


@keras.saving.register_keras_serializable(package="keras_resvit")
class SlicedMaxPooling2D(keras.layers.MaxPooling2D):
    """`keras.layers.MaxPooling2D` whose gradient is cheap on JAX's CPU backend.

    Same arguments, config and results as the Keras layer, gradient included: each window
    passes its gradient to its first maximum (in row-major window order), as XLA's
    select-and-scatter does. XLA's CPU backend expands that select-and-scatter into a
    reduce-window over four int32 index tensors of the input's size and a scatter; for the
    ResNet stem's 3x3/2 pool on a batch of 16 that took 165 ms, a twentieth of a ResNet-50
    step. Here, on JAX's CPU backend with "valid" padding and channels last, the forward
    pass also records which of the window's positions held the maximum (one int8 per
    output), and the backward pass routes the gradient with one strided pad per window
    position, all element-wise: 69 ms. Everywhere else it is the Keras layer.

    Example:
    >>> import keras
    >>> from keras_resvit.layers import SlicedMaxPooling2D
    >>> tuple(SlicedMaxPooling2D(3, strides=2)(keras.ops.ones((1, 9, 9, 4))).shape)
    (1, 4, 4, 4)
    """

    def _sliced(self, inputs):
        return (
            fast_path("sliced_max_pool")
            and self.padding == "valid"
            and self.data_format == "channels_last"
            and len(inputs.shape) == 4
        )

    def call(self, inputs):
        if not self._sliced(inputs):
            return super().call(inputs)
        return _sliced_max_pool(inputs, tuple(self.pool_size), tuple(self.strides))


def _sliced_max_pool(x, pool_size, strides):
    """Max pooling ("valid", NHWC) with the first-maximum gradient, on JAX."""
    import jax
    from jax import lax

    (kh, kw), (sh, sw) = pool_size, strides
    window = (1, kh, kw, 1)
    stride = (1, sh, sw, 1)

    def forward(x):
        init = jax.numpy.array(-jax.numpy.inf, x.dtype)
        return lax.reduce_window(x, init, lax.max, window, stride, "VALID")

    def positions(shape, out_shape):
        ho, wo = out_shape[1:3]
        for i in range(kh):
            for j in range(kw):
                rows = (i, shape[1] - i - (sh * (ho - 1) + 1), sh - 1)
                cols = (j, shape[2] - j - (sw * (wo - 1) + 1), sw - 1)
                yield i, j, rows, cols

    @jax.custom_vjp
    def pool(x):
        return forward(x)

    def pool_forward(x):
        y = forward(x)
        index_dtype = "int8" if kh * kw < 128 else "int32"
        first = jax.numpy.full(y.shape, -1, index_dtype)
        ho, wo = y.shape[1:3]
        for n, (i, j, _, _) in enumerate(positions(x.shape, y.shape)):
            window_value = x[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]
            first = jax.numpy.where((first < 0) & (window_value == y), n, first)
        return y, (first, x.shape)

    def pool_backward(residuals, grad):
        first, shape = residuals
        zero = jax.numpy.zeros((), grad.dtype)
        dx = jax.numpy.zeros(shape, grad.dtype)
        for n, (_, _, rows, cols) in enumerate(positions(shape, grad.shape)):
            routed = jax.numpy.where(first == n, grad, zero)
            dx = dx + lax.pad(routed, zero, [(0, 0, 0), rows, cols, (0, 0, 0)])
        return (dx,)

    pool.defvjp(pool_forward, pool_backward)
    return pool(x)


@keras.saving.register_keras_serializable(package="keras_resvit")
class StdConv2D(PointwiseConv2D):
    """Conv2D with weight standardization (Qiao et al. 2019), as used by BiT.

    Each output filter's kernel is standardized to zero mean and unit variance over its
    (height, width, input-channel) axes before the convolution; with GroupNorm this replaces
    BatchNorm's batch-size dependence (Kolesnikov et al., BiT).

    Args:
        epsilon: added to the variance for numerical stability; 1e-10 as in BiT's released
            code (`big_transfer`), which its checkpoints were trained with.
        **kwargs: arguments of `keras.layers.Conv2D`.

    A 1x1 kernel is computed as `PointwiseConv2D` does.
    """

    def __init__(self, *args, epsilon=1e-10, **kwargs):
        check_number("StdConv2D: epsilon", epsilon, 0)
        super().__init__(*args, **kwargs)
        self.epsilon = epsilon

    def convolution_op(self, inputs, kernel):
        kernel = ops.convert_to_tensor(kernel)
        mean, variance = ops.moments(kernel, axes=(0, 1, 2), keepdims=True)
        kernel = (kernel - mean) * ops.rsqrt(variance + self.epsilon)
        return super().convolution_op(inputs, kernel)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="keras_resvit")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` that runs TensorFlow's fused kernel on that backend.

    Same arguments, weights, config and results as the Keras layer (the batch variance is
    the biased one, as there). On the TensorFlow backend a 4-D input is normalized by one
    `FusedBatchNormV3` op (oneDNN on CPU, cuDNN on GPU) instead of a chain of element-wise
    ops, so forward and backward each read the activations once (faster: figures in
    `benchmarks/NOTES.md`, "Fast paths"). Other backends, other ranks, masks,
    renormalization and synchronized statistics use the Keras
    implementation.

    Example:
    >>> import keras
    >>> from keras_resvit.layers import FusedBatchNormalization
    >>> x = keras.random.normal((8, 4, 4, 16))
    >>> tuple(FusedBatchNormalization()(x, training=True).shape)
    (8, 4, 4, 16)
    """

    def _fused_data_format(self, inputs, mask):
        if not fast_path("fused_batch_norm") or len(inputs.shape) != 4 or mask is not None:
            return None
        if self.renorm or getattr(self, "synchronized", False):
            return None
        return {-1: "NHWC", 3: "NHWC", 1: "NCHW"}.get(self.axis)

    def call(self, inputs, training=None, mask=None):
        data_format = self._fused_data_format(inputs, mask)
        if data_format is None:
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.cast(inputs, "float32")
        channels = x.shape[self.axis]
        scale = tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels])
        offset = tf.cast(self.beta, "float32") if self.center else tf.zeros([channels])
        moving_mean = tf.cast(self.moving_mean, "float32")
        moving_variance = tf.cast(self.moving_variance, "float32")
        is_training = bool(training and self.trainable)
        outputs = tf.raw_ops.FusedBatchNormV3(
            x=x,
            scale=scale,
            offset=offset,
            mean=moving_mean if not is_training else tf.zeros([0]),
            variance=moving_variance if not is_training else tf.zeros([0]),
            epsilon=self.epsilon,
            data_format=data_format,
            is_training=is_training,
        )
        if is_training:
            mean, variance = outputs.batch_mean, outputs.batch_variance
            # The kernel returns the Bessel-corrected variance; Keras keeps the biased one.
            count = tf.cast(tf.size(x) // channels, "float32")
            variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
            self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                moving_variance * self.momentum + variance * (1.0 - self.momentum)
            )
        return tf.cast(outputs.y, self.compute_dtype)
