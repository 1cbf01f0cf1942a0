"""Layers the Vision Transformer builders need that Keras does not have."""

import functools

import keras
import numpy as np
from keras import ops

from keras_resvit.base.backend import fast_path, keras_mask
from keras_resvit.layers.lora_layers import ProjectionSettings

POSITION_EMBEDDINGS = ("learned", "sincos2d")


@keras.saving.register_keras_serializable(package="keras_resvit")
class ClassToken(keras.layers.Layer):
    """Prepends a learnable [class] token to a sequence of patch tokens (Dosovitskiy et al.).

    Input `(batch, tokens, dim)`, output `(batch, 1 + tokens, dim)`. The token starts at zero,
    as in the reference implementation.
    """

    def build(self, input_shape):
        self.token = self.add_weight(
            shape=(1, 1, input_shape[-1]), initializer="zeros", name="token"
        )

    def call(self, inputs):
        token = ops.cast(self.token, inputs.dtype)
        token = ops.broadcast_to(token, (ops.shape(inputs)[0], 1, inputs.shape[-1]))
        return ops.concatenate([token, inputs], axis=1)

    def compute_output_shape(self, input_shape):
        tokens = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], tokens, input_shape[2])


@keras.saving.register_keras_serializable(package="keras_resvit")
class TokenPooling(keras.layers.Layer):
    """Returns the first token of a sequence: the class token, the paper's image representation.

    Input `(batch, tokens, dim)`, output `(batch, dim)`.
    """

    def call(self, inputs):
        return inputs[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


def sincos_2d(grid_size, dim, temperature=10_000.0):
    """Fixed 2-D sine-cosine position embeddings, `(grid_h * grid_w, dim)` float32.

    A quarter of the channels each carry sin(x), cos(x), sin(y), cos(y) at geometrically spaced
    frequencies, as in big_vision's `posemb_sincos_2d` (the "plain ViT" baselines).

    Args:
        grid_size: (height, width) of the patch grid.
        dim: embedding size, a multiple of 4.
        temperature: longest wavelength.

    Returns:
        A NumPy array of shape `(grid_h * grid_w, dim)`.
    """
    y, x = np.mgrid[: grid_size[0], : grid_size[1]]
    quarter = dim // 4
    omega = 1.0 / temperature ** (np.arange(quarter) / max(quarter - 1, 1))
    x = np.outer(x.ravel(), omega)
    y = np.outer(y.ravel(), omega)
    return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1).astype("float32")


@keras.saving.register_keras_serializable(package="keras_resvit")
class PositionEmbedding(keras.layers.Layer):
    """Adds position embeddings to `num_prefix_tokens` prefix tokens followed by a patch grid.

    "learned" embeddings are one trainable `(1, prefix + grid_h * grid_w, dim)` weight (the
    paper's 1-D learned embeddings); "sincos2d" embeddings are fixed, have no weights and give
    the prefix tokens no position. The grid size is part of the config, so a model can be
    rebuilt at another resolution (see `keras_resvit.resize_vit`).

    Args:
        grid_size: (height, width) of the patch grid.
        num_prefix_tokens: tokens before the grid (1 for the class token, else 0).
        kind: "learned" or "sincos2d".
        initializer: initializer of the learned embeddings.
    """

    def __init__(self, grid_size, num_prefix_tokens=1, kind="learned", initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.grid_size = tuple(grid_size)
        self.num_prefix_tokens = num_prefix_tokens
        self.kind = kind
        # The reference ViT draws position embeddings from N(0, 0.02).
        self.initializer = keras.initializers.get(
            initializer or keras.initializers.RandomNormal(stddev=0.02)
        )

    @property
    def num_tokens(self):
        return self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]

    def build(self, input_shape):
        # Only the width comes from the input: the token count comes from the config, so a
        # layer rebuilt from an edited config gets the new grid's shape.
        dim = input_shape[-1]
        if self.kind == "learned":
            self.embeddings = self.add_weight(
                shape=(1, self.num_tokens, dim), initializer=self.initializer, name="embeddings"
            )
        else:
            grid = sincos_2d(self.grid_size, dim)
            prefix = np.zeros((self.num_prefix_tokens, dim), "float32")
            self.embeddings = np.concatenate([prefix, grid])[None]

    def call(self, inputs):
        return inputs + ops.cast(self.embeddings, inputs.dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "grid_size": self.grid_size,
            "num_prefix_tokens": self.num_prefix_tokens,
            "kind": self.kind,
            "initializer": keras.initializers.serialize(self.initializer),
        }


@keras.saving.register_keras_serializable(package="keras_resvit")
class DropPath(keras.layers.Layer):
    """Stochastic depth (Huang et al. 2016): drops a whole residual branch per example.

    During training each example's branch is zeroed with probability `rate` and the kept ones
    are scaled by `1 / (1 - rate)`, so inference needs no rescaling.

    Args:
        rate: drop probability in [0, 1).
        seed: optional random seed.
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        keep = 1.0 - self.rate
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        uniform = keras.random.uniform(shape, seed=self.seed_generator, dtype=inputs.dtype)
        mask = ops.cast(uniform < keep, inputs.dtype)
        return inputs * mask / keep

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_resvit")
class MultiHeadSelfAttention(ProjectionSettings, keras.layers.MultiHeadAttention):
    """`keras.layers.MultiHeadAttention` whose unmasked self-attention runs as plain matmuls.

    Same arguments, weights, config and results as the Keras layer, so weight converters and
    attention maps treat it as one. For `layer(x, x)` on TensorFlow or JAX without masks,
    scores or custom axes, the query/key/value and output projections are 2-D matmuls over
    all tokens and attention is computed heads-first, `(batch, heads, tokens, head_dim)`.
    Keras' per-head einsums broadcast the kernel over the batch on TensorFlow, so their weight
    gradients are a batched matmul and a sum; on JAX's CPU backend its tokens-first attention
    (`dot_product_attention` on `(batch, tokens, heads, head_dim)`) is slower than
    heads-first, and on a GPU `dot_product_attention`'s cuDNN kernel rejects ViT's 197 tokens
    when training. ViTs train faster with it on both backends, CPU and GPU
    (figures in `benchmarks/NOTES.md`, "Fast paths"). Every other call (masks, scores,
    cross-attention, other backends) is the Keras layer's. `enable_lora` and quantized
    projections are saved and reloaded (`keras_resvit.layers.lora_layers`).

    Example:
    >>> import keras
    >>> from keras_resvit.layers import MultiHeadSelfAttention
    >>> x = keras.ops.ones((2, 5, 16))
    >>> tuple(MultiHeadSelfAttention(num_heads=4, key_dim=4)(x, x).shape)
    (2, 5, 16)
    """

    def call(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
        use_causal_mask=False,
    ):
        masks = (
            query_mask,
            value_mask,
            key_mask,
            attention_mask,
            keras_mask(query),
        )
        if (
            value is not query
            or (key is not None and key is not value)
            or any(mask is not None for mask in masks)
            or return_attention_scores
            or use_causal_mask
            or not self._matmul_path(query)
        ):
            return super().call(
                query,
                value,
                key=key,
                query_mask=query_mask,
                value_mask=value_mask,
                key_mask=key_mask,
                attention_mask=attention_mask,
                return_attention_scores=return_attention_scores,
                training=training,
                use_causal_mask=use_causal_mask,
            )
        return self._self_attention(query, training)

    def _matmul_path(self, query):
        """Whether this layer's configuration is the plain one the matmul path computes."""
        denses = (self._query_dense, self._key_dense, self._value_dense, self._output_dense)
        return (
            fast_path("matmul_attention")
            and len(query.shape) == 3
            and query.shape[1] is not None
            and self._use_bias
            and self._output_shape is None
            and tuple(self._attention_axes or (1,)) == (1,)
            and not getattr(self, "_use_gate", False)
            and getattr(self, "_sliding_window", None) is None
            and all(getattr(dense, "quantization_mode", None) is None for dense in denses)
        )

    def _self_attention(self, x, training):
        tokens, dim = x.shape[1], x.shape[2]
        heads = self._num_heads
        flat = ops.reshape(x, (-1, dim))

        def project(dense, scale=1.0):
            kernel = ops.reshape(dense.kernel, (dim, -1))
            bias = ops.reshape(dense.bias, (-1,))
            if scale != 1.0:
                # Scaling the (dim, heads * head_dim) kernel is cheaper than scaling the scores.
                kernel, bias = kernel * scale, bias * scale
            y = ops.matmul(flat, kernel) + bias
            return ops.reshape(y, (-1, tokens, heads, y.shape[-1] // heads))

        query = ops.transpose(project(self._query_dense, self._inverse_sqrt_key_dim), (0, 2, 1, 3))
        key = ops.transpose(project(self._key_dense), (0, 2, 3, 1))
        value = ops.transpose(project(self._value_dense), (0, 2, 1, 3))
        scores = ops.matmul(query, key)
        # Softmax in float32 under mixed precision, as Keras' dot_product_attention does.
        probs = ops.cast(ops.softmax(ops.cast(scores, "float32"), axis=-1), value.dtype)
        probs = self._dropout_layer(probs, training=training)
        out = ops.reshape(
            ops.transpose(ops.matmul(probs, value), (0, 2, 1, 3)), (-1, heads * value.shape[-1])
        )
        kernel = ops.reshape(self._output_dense.kernel, (out.shape[-1], -1))
        out = ops.matmul(out, kernel) + self._output_dense.bias
        return ops.reshape(out, (-1, tokens, out.shape[-1]))


@keras.saving.register_keras_serializable(package="keras_resvit", name="gelu")
def gelu(x):
    """The exact GELU, `x * Phi(x)`, as `keras.activations.gelu(x, approximate=False)`.

    The activation of every ViT MLP. On TensorFlow the forward pass is TensorFlow's GELU
    op, which the TF Lite converter maps to its own, and the backward pass is one
    XLA-compiled element-wise kernel (`tf.function(jit_compile=True)`, in float32) in a
    custom gradient, where TensorFlow differentiates its GELU with about ten element-wise
    ops over the hidden activations (faster: figures in `benchmarks/NOTES.md`, "Fast paths").
    Other backends compile the whole step with XLA already and run Keras' GELU.

    Example:
    >>> import keras
    >>> from keras_resvit.layers import gelu
    >>> round(float(gelu(keras.ops.convert_to_tensor(1.0))), 4)
    0.8413
    """
    if not fast_path("exact_gelu"):
        return keras.activations.gelu(x, approximate=False)
    import tensorflow as tf

    @tf.custom_gradient
    def activation(x):
        def grad(upstream):
            return _tf_gelu_gradient()(x, upstream)

        return tf.nn.gelu(x, approximate=False), grad

    return activation(tf.convert_to_tensor(x))


@functools.cache
def _tf_gelu_gradient():
    import tensorflow as tf

    @tf.function(jit_compile=True)
    def backward(x, upstream):
        z = tf.cast(x, "float32")
        cdf = 0.5 + 0.5 * tf.math.erf(z * SQRT_HALF)
        pdf = INV_SQRT_2PI * tf.exp(-0.5 * z * z)
        return tf.cast(tf.cast(upstream, "float32") * (cdf + z * pdf), upstream.dtype)

    return backward


SQRT_HALF = 0.7071067811865476
INV_SQRT_2PI = 0.3989422804014327


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
