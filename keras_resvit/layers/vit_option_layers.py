"""Layers of the ViT options that came after the 2021 paper: register tokens (Darcet et al.
2024), LayerScale (Touvron et al. 2021, CaiT) and the learned probe of attention pooling
(big_vision's MAP head, Zhai et al. 2022). Each is small, serializable and runs on every
backend and in TF Lite (concatenation, slicing and products only)."""

import keras
from keras import ops

from keras_resvit.base.validation import check_int, check_number


def check_tokens(layer, input_shape, needed=1, what=None):
    """`input_shape` must be tokens (batch, tokens, dim), with at least `needed` tokens
    (`what`: the argument that needs them, for the message)."""
    tokens = input_shape[1] if len(input_shape) == 3 else -1
    if len(input_shape) != 3 or (tokens is not None and tokens < needed):
        least = f" with at least {what}={needed} tokens" if what else ""
        raise ValueError(
            f"{type(layer).__name__}: inputs of shape {tuple(input_shape)} are not valid; "
            f"expected tokens (batch, tokens, dim){least}."
        )


@keras.saving.register_keras_serializable(package="keras_resvit")
class RegisterTokens(keras.layers.Layer):
    """Inserts `num_registers` learned tokens after the first `num_prefix_tokens` tokens.

    "Vision Transformers Need Registers" (Darcet et al. 2024): extra tokens that take part in
    attention and are discarded at the output give the model somewhere to keep global
    scratch information, instead of overwriting low-information patch tokens (the high-norm
    artifacts of large ViTs). They come after the class token, as in timm's `reg_token`, and
    are inserted after the position embeddings, so they have no position (the paper's
    DINOv2 code; timm's `no_embed_class`).

    Input `(batch, tokens, dim)`, output `(batch, tokens + num_registers, dim)`.

    Args:
        num_registers: number of register tokens, a positive int.
        num_prefix_tokens: tokens before the registers (1 after a class token, else 0).
        initializer: initializer of the registers; default N(0, 1e-6), as timm and DINOv2 (a
            constant would give every register the same gradient forever).

    Example:
    >>> import keras
    >>> from keras_resvit.layers import RegisterTokens
    >>> tuple(RegisterTokens(4, 1)(keras.ops.ones((2, 17, 8))).shape)
    (2, 21, 8)
    """

    def __init__(self, num_registers, num_prefix_tokens=0, initializer=None, **kwargs):
        check_int("RegisterTokens: num_registers", num_registers)
        check_int("RegisterTokens: num_prefix_tokens", num_prefix_tokens, minimum=0)
        super().__init__(**kwargs)
        self.num_registers = num_registers
        self.num_prefix_tokens = num_prefix_tokens
        self.initializer = keras.initializers.get(
            initializer or keras.initializers.RandomNormal(stddev=1e-6)
        )

    def build(self, input_shape):
        check_tokens(self, input_shape, self.num_prefix_tokens, "num_prefix_tokens")
        self.tokens = self.add_weight(
            shape=(1, self.num_registers, input_shape[-1]),
            initializer=self.initializer,
            name="tokens",
        )

    def call(self, inputs):
        tokens = ops.cast(self.tokens, inputs.dtype)
        tokens = ops.broadcast_to(
            tokens, (ops.shape(inputs)[0], self.num_registers, inputs.shape[-1])
        )
        split = self.num_prefix_tokens
        # No empty slice: TF Lite's XNNPack delegate cannot prepare zero-sized tensors.
        parts = [inputs[:, :split], tokens, inputs[:, split:]] if split else [tokens, inputs]
        return ops.concatenate(parts, axis=1)

    def compute_output_shape(self, input_shape):
        tokens = None if input_shape[1] is None else input_shape[1] + self.num_registers
        return (input_shape[0], tokens, input_shape[2])

    def get_config(self):
        return {
            **super().get_config(),
            "num_registers": self.num_registers,
            "num_prefix_tokens": self.num_prefix_tokens,
            "initializer": keras.initializers.serialize(self.initializer),
        }


@keras.saving.register_keras_serializable(package="keras_resvit")
class DropTokens(keras.layers.Layer):
    """Removes `num_tokens` tokens starting at index `start` (the registers, after the encoder).

    Input `(batch, tokens, dim)`, output `(batch, tokens - num_tokens, dim)`.

    Args:
        start: index of the first token removed.
        num_tokens: how many consecutive tokens are removed.
    """

    def __init__(self, start, num_tokens, **kwargs):
        check_int("DropTokens: start", start, minimum=0)
        check_int("DropTokens: num_tokens", num_tokens)
        super().__init__(**kwargs)
        self.start = start
        self.num_tokens = num_tokens

    def build(self, input_shape):
        check_tokens(self, input_shape, self.start + self.num_tokens, "start + num_tokens")

    def call(self, inputs):
        end = self.start + self.num_tokens
        if not self.start:
            return inputs[:, end:]
        return ops.concatenate([inputs[:, : self.start], inputs[:, end:]], axis=1)

    def compute_output_shape(self, input_shape):
        tokens = None if input_shape[1] is None else input_shape[1] - self.num_tokens
        return (input_shape[0], tokens, input_shape[2])

    def get_config(self):
        return {**super().get_config(), "start": self.start, "num_tokens": self.num_tokens}


@keras.saving.register_keras_serializable(package="keras_resvit")
class LayerScale(keras.layers.Layer):
    """Multiplies each channel by a learned scale that starts at `init_value`.

    "Going deeper with Image Transformers" (Touvron et al. 2021, CaiT, Section 2): a residual
    branch scaled by a diagonal matrix initialised near zero starts close to the identity,
    which lets deep ViTs train; DeiT III (Touvron et al. 2022) uses it in every block. timm's
    `init_values`.

    Args:
        init_value: the initial scale of every channel, e.g. 1e-5 (DeiT III) or 0.1.

    Example:
    >>> import keras
    >>> from keras_resvit.layers import LayerScale
    >>> keras.ops.convert_to_numpy(LayerScale(0.5)(keras.ops.ones((1, 2, 3))))[0, 0].tolist()
    [0.5, 0.5, 0.5]
    """

    def __init__(self, init_value, **kwargs):
        check_number("LayerScale: init_value", init_value)
        super().__init__(**kwargs)
        self.init_value = init_value

    def build(self, input_shape):
        self.gamma = self.add_weight(
            shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(self.init_value),
            name="gamma",
        )

    def call(self, inputs):
        return inputs * ops.cast(self.gamma, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "init_value": self.init_value}


@keras.saving.register_keras_serializable(package="keras_resvit")
class ProbeToken(keras.layers.Layer):
    """A learned query token for attention pooling: `(batch, tokens, dim)` -> `(batch, 1, dim)`.

    The probe of big_vision's `MAPHead` (multihead attention pooling, used by SigLIP): one
    learned token that attends over the encoder's tokens. Xavier-uniform, as big_vision's.
    """

    def build(self, input_shape):
        self.probe = self.add_weight(
            shape=(1, 1, input_shape[-1]), initializer="glorot_uniform", name="probe"
        )

    def call(self, inputs):
        probe = ops.cast(self.probe, inputs.dtype)
        return ops.broadcast_to(probe, (ops.shape(inputs)[0], 1, inputs.shape[-1]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, input_shape[2])
