"""Layers the Vision Transformer builders need that Keras does not have."""

import functools

import keras
from keras import ops

from keras_resvit.base.backend import (
    check_grid_at_run_time,
    fast_path,
    fused_attention_enabled,
    keras_mask,
)
from keras_resvit.base.validation import check_bool, check_rate

# The LayerNorm of the ViTs lives in its own module; these names are read from here too.
from keras_resvit.layers.layer_norm import (
    ClosedFormLayerNormalization as ClosedFormLayerNormalization,
)
from keras_resvit.layers.layer_norm import FusedLayerNormalization as FusedLayerNormalization
from keras_resvit.layers.lora_layers import ProjectionSettings

# Position embeddings live in their own module; these names are read from here too.
from keras_resvit.layers.position_embedding import POSITION_EMBEDDINGS as POSITION_EMBEDDINGS
from keras_resvit.layers.position_embedding import PositionEmbedding as PositionEmbedding
from keras_resvit.layers.position_embedding import sincos_2d as sincos_2d
from keras_resvit.layers.vit_option_layers import check_tokens


@keras.saving.register_keras_serializable(package="keras_resvit")
class PatchEmbedding(keras.layers.Conv2D):
    """`keras.layers.Conv2D` over non-overlapping patches (kernel size = strides = the patch
    size, "valid" padding) that refuses an input whose height or width is not a multiple of
    the patch size, where a convolution would drop the last rows or columns silently.

    A ViT of a fixed size checks its size when it is built; this check serves a ViT of any
    input size (`image_size=None`), at each size it is called with. Where a TensorFlow graph is
    traced for sizes unknown until it runs, the graph checks them and fails with
    `InvalidArgumentError` (under XLA, at the node named
    `height_and_width_must_be_multiples_of_the_patch_size`). The weights and config are
    Conv2D's.

    Example:
    >>> from keras_resvit.layers.vit_layers import PatchEmbedding
    >>> import numpy as np
    >>> layer = PatchEmbedding(8, 4, strides=4)
    >>> tuple(layer(np.zeros((1, 8, 12, 3), "float32")).shape)
    (1, 2, 3, 8)
    """

    def call(self, inputs):
        height, width = inputs.shape[1:3]
        rows, columns = self.strides
        if (height is not None and height % rows) or (width is not None and width % columns):
            raise ValueError(self._refusal(height, width))
        if height is None or width is None:  # a TensorFlow graph for the sizes it has seen
            inputs = check_grid_at_run_time(
                inputs, rows, columns, self._refusal(),
                name="height_and_width_must_be_multiples_of_the_patch_size",
            )  # fmt: skip
        return super().call(inputs)

    def _refusal(self, height=None, width=None):
        rows, columns = self.strides
        size = "these images" if height is None else f"images of {height}x{width} pixels"
        return (
            f"{self.name}: {size} do not divide into "
            f"{rows}x{columns} patches, and the last rows or columns would be dropped; "
            f"valid: a height that is a multiple of {rows} and a width a multiple of "
            f"{columns} (resize or crop the images first)."
        )


@keras.saving.register_keras_serializable(package="keras_resvit")
class ClassToken(keras.layers.Layer):
    """Prepends a learnable [class] token to a sequence of patch tokens (Dosovitskiy et al.).

    Input `(batch, tokens, dim)`, output `(batch, 1 + tokens, dim)`. The token starts at zero,
    as in the reference implementation.
    """

    def build(self, input_shape):
        check_tokens(self, input_shape, needed=0)
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

    def build(self, input_shape):
        check_tokens(self, input_shape)

    def call(self, inputs):
        return inputs[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


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
        check_rate("DropPath: rate", rate)
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
    cross-attention, other backends) is the Keras layer's.
    `keras_resvit.base.backend.set_fused_attention(True)` computes the attention itself with
    `keras.ops.dot_product_attention` (cuDNN/flash or splash kernels where the backend has them
    for the shapes; measured slower at ViT's 197 tokens). `enable_lora` and quantized
    projections are saved and reloaded (`keras_resvit.layers.lora_layers`).

    `qk_norm=True` adds QK-norm (Dehghani et al. 2023, ViT-22B; timm's `qk_norm`): queries and
    keys are layer-normalized over each head's channels (one learned scale and bias of size
    `key_dim`, shared by the heads) before their dot product, which bounds the attention
    logits and keeps large or long-trained ViTs stable. Both paths apply it.

    Example:
    >>> import keras
    >>> from keras_resvit.layers import MultiHeadSelfAttention
    >>> x = keras.ops.ones((2, 5, 16))
    >>> tuple(MultiHeadSelfAttention(num_heads=4, key_dim=4)(x, x).shape)
    (2, 5, 16)
    """

    def __init__(self, *args, qk_norm=False, **kwargs):
        check_bool(f"{type(self).__name__}: qk_norm", qk_norm)
        super().__init__(*args, **kwargs)
        self.qk_norm = qk_norm

    def build(self, query_shape, value_shape, key_shape=None):
        check_tokens(self, query_shape)
        super().build(query_shape, value_shape, key_shape)
        if self.qk_norm:
            # The reference's LayerNorm epsilon, over the last axis of (..., heads, key_dim).
            heads = (self._num_heads, self._key_dim)
            self._query_norm = ClosedFormLayerNormalization(
                epsilon=1e-6, dtype=self.dtype_policy, name="query_norm"
            )
            self._query_norm.build((*query_shape[:-1], *heads))
            self._key_norm = ClosedFormLayerNormalization(
                epsilon=1e-6, dtype=self.dtype_policy, name="key_norm"
            )
            self._key_norm.build((*(key_shape or value_shape)[:-1], *heads))

    def get_config(self):
        config = super().get_config()
        if self.qk_norm:
            config["qk_norm"] = True
        return config

    def _compute_attention(self, query, key, value, *args, **kwargs):
        # The Keras path: `query` and `key` are projected, (batch, tokens, heads, key_dim).
        if self.qk_norm:
            query, key = self._query_norm(query), self._key_norm(key)
        return super()._compute_attention(query, key, value, *args, **kwargs)

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

        if self.qk_norm:
            # The scale applies to the normalized queries, so it cannot go into the kernel.
            query = self._query_norm(project(self._query_dense)) * self._inverse_sqrt_key_dim
            key = self._key_norm(project(self._key_dense))
        else:
            query = project(self._query_dense, self._inverse_sqrt_key_dim)
            key = project(self._key_dense)
        if fused_attention_enabled() and not (training and self._dropout):
            # (batch, tokens, heads, head_dim), the queries already scaled.
            value = project(self._value_dense)
            out = ops.dot_product_attention(query, key, value, scale=1.0)
            out = ops.reshape(out, (-1, heads * value.shape[-1]))
        else:
            query = ops.transpose(query, (0, 2, 1, 3))
            key = ops.transpose(key, (0, 2, 3, 1))
            value = ops.transpose(project(self._value_dense), (0, 2, 1, 3))
            scores = ops.matmul(query, key)
            # Softmax in float32 under mixed precision, as Keras' dot_product_attention does.
            probs = ops.cast(ops.softmax(ops.cast(scores, "float32"), axis=-1), value.dtype)
            probs = self._dropout_layer(probs, training=training)
            out = ops.transpose(ops.matmul(probs, value), (0, 2, 1, 3))
            out = ops.reshape(out, (-1, heads * value.shape[-1]))
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
