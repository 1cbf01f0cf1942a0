"""Layers the ResNet builders need that Keras does not have."""

import keras
from keras import ops


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
        super().__init__(**kwargs)
        self.filters = filters
        self.stride = stride

    def call(self, inputs):
        x = inputs
        if self.stride > 1:
            x = x[:, :: self.stride, :: self.stride, :]
        extra = self.filters - inputs.shape[-1]
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "stride": self.stride}


@keras.saving.register_keras_serializable(package="keras_resvit")
class StdConv2D(keras.layers.Conv2D):
    """Conv2D with weight standardization (Qiao et al. 2019), as used by BiT.

    Each output filter's kernel is standardized to zero mean and unit variance over its
    (height, width, input-channel) axes before the convolution; with GroupNorm this replaces
    BatchNorm's batch-size dependence (Kolesnikov et al., BiT).

    Args:
        epsilon: added to the variance for numerical stability.
        **kwargs: arguments of `keras.layers.Conv2D`.
    """

    def __init__(self, *args, epsilon=1e-8, **kwargs):
        super().__init__(*args, **kwargs)
        self.epsilon = epsilon

    def convolution_op(self, inputs, kernel):
        kernel = ops.convert_to_tensor(kernel)
        mean, variance = ops.moments(kernel, axes=(0, 1, 2), keepdims=True)
        kernel = (kernel - mean) * ops.rsqrt(variance + self.epsilon)
        return super().convolution_op(inputs, kernel)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
