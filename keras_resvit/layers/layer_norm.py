"""Layer normalization with a closed-form TensorFlow gradient: the LayerNorm of every ViT."""

import keras
from keras import ops

from keras_resvit.base.backend import fast_path


def _tf_layer_norm(x, gamma, beta, epsilon):
    """Layer normalization over the last axis with its gradient in closed form (TensorFlow)."""
    import tensorflow as tf

    @tf.custom_gradient
    def normalize(x, gamma, beta):
        channels = x.shape[-1]
        flat = tf.reshape(x, [-1, channels])
        mean, variance = tf.nn.moments(flat, axes=[-1], keepdims=True)
        inverse = tf.math.rsqrt(variance + epsilon)
        normalized = (flat - mean) * inverse

        def grad(upstream):
            upstream = tf.reshape(upstream, [-1, channels])
            scaled = upstream * gamma
            dx = inverse * (
                scaled
                - tf.reduce_mean(scaled, axis=-1, keepdims=True)
                - normalized * tf.reduce_mean(scaled * normalized, axis=-1, keepdims=True)
            )
            dgamma = tf.reduce_sum(upstream * normalized, axis=0)
            return tf.reshape(dx, tf.shape(x)), dgamma, tf.reduce_sum(upstream, axis=0)

        return tf.reshape(normalized * gamma + beta, tf.shape(x)), grad

    return normalize(x, gamma, beta)


@keras.saving.register_keras_serializable(package="keras_resvit")
class ClosedFormLayerNormalization(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization` whose TensorFlow backward pass is one closed-form step.

    Same arguments, weights, config and results as the Keras layer. On TensorFlow, for the
    last axis with both `center` and `scale` (a Transformer's LayerNorm), the gradient is
    `rstd * (g - mean(g) - x_hat * mean(g * x_hat))` with `g = dy * gamma`, computed in float32,
    instead of TensorFlow differentiating the moments op by op (faster: figures in
    `benchmarks/NOTES.md`, "Fast paths"). Other backends (XLA fuses the autodiff graph itself)
    and other configurations run Keras' call.

    Example:
    >>> import keras
    >>> from keras_resvit.layers import ClosedFormLayerNormalization
    >>> tuple(ClosedFormLayerNormalization()(keras.ops.ones((2, 5, 8))).shape)
    (2, 5, 8)
    """

    def call(self, inputs):
        axis = self.axis if isinstance(self.axis, int) else tuple(self.axis)
        last = len(inputs.shape) - 1
        if (
            not fast_path("fused_layer_norm")
            or axis not in (-1, last, (-1,), (last,))
            or self.rms_scaling
            or not (self.center and self.scale)
        ):
            return super().call(inputs)
        import tensorflow as tf

        outputs = _tf_layer_norm(
            tf.cast(inputs, "float32"),
            tf.cast(self.gamma, "float32"),
            tf.cast(self.beta, "float32"),
            self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)


@keras.saving.register_keras_serializable(package="keras_resvit")
class FusedLayerNormalization(ClosedFormLayerNormalization):
    """The former name of `ClosedFormLayerNormalization` (it fuses nothing): `.keras` files
    saved under it still load; new code uses the new name (`kr.layers.FusedLayerNormalization`
    warns)."""
