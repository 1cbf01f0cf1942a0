"""Position embeddings of the Vision Transformer: learned (the paper) or fixed 2-D sine-cosine,
for a grid fixed at build time or, with `dynamic_size=True`, for the grid of each input."""

import keras
import numpy as np
from keras import ops

from keras_resvit.base.backend import jit_compiles_any_size, resize_images
from keras_resvit.base.validation import check_bool, check_choice, check_int

POSITION_EMBEDDINGS = ("learned", "sincos2d")


def _frequencies(dim, temperature):
    quarter = dim // 4
    return 1.0 / temperature ** (np.arange(quarter) / max(quarter - 1, 1))


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
    omega = _frequencies(dim, temperature)
    x = np.outer(x.ravel(), omega)
    y = np.outer(y.ravel(), omega)
    return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1).astype("float32")


def sincos_2d_tensor(height, width, dim, temperature=10_000.0):
    """`sincos_2d((height, width), dim)` computed with `keras.ops`, for a grid known only when
    the model runs (sizes may be tensors inside a TensorFlow graph)."""
    omega = ops.convert_to_tensor(_frequencies(dim, temperature).astype("float32"))[None]
    y = ops.reshape(ops.repeat(ops.cast(ops.arange(height), "float32"), width), (-1, 1)) * omega
    x = ops.reshape(ops.tile(ops.cast(ops.arange(width), "float32"), [height]), (-1, 1)) * omega
    return ops.concatenate([ops.sin(x), ops.cos(x), ops.sin(y), ops.cos(y)], axis=1)


@keras.saving.register_keras_serializable(package="keras_resvit")
class PositionEmbedding(keras.layers.Layer):
    """Adds position embeddings to `num_prefix_tokens` prefix tokens followed by a patch grid.

    "learned" embeddings are one trainable `(1, prefix + grid_h * grid_w, dim)` weight (the
    paper's 1-D learned embeddings); "sincos2d" embeddings are fixed, have no weights and give
    the prefix tokens no position. The grid size is part of the config, so a model can be
    rebuilt at another resolution (see `keras_resvit.resize_vit`).

    With `dynamic_size=True` the layer is called on `[tokens, patch_map]`, the patch map
    `(batch, h, w, dim)` giving the grid of this input: learned embeddings are stored for
    `grid_size` and resampled to `(h, w)` on every call, bicubically with antialiasing as
    `keras_resvit.models.vit_resize.resample_position_embeddings` does (so the model at any
    size computes what `resize_vit` makes for that size; timm's `dynamic_img_size`);
    sine-cosine embeddings are computed for `(h, w)`.

    Args:
        grid_size: (height, width) of the patch grid (with `dynamic_size`, of the stored
            embeddings).
        num_prefix_tokens: tokens before the grid (1 for the class token, else 0).
        kind: "learned" or "sincos2d".
        initializer: initializer of the learned embeddings.
        dynamic_size: follow each input's grid (see above).
    """

    def __init__(
        self,
        grid_size,
        num_prefix_tokens=1,
        kind="learned",
        initializer=None,
        dynamic_size=False,
        **kwargs,
    ):
        check_bool("PositionEmbedding: dynamic_size", dynamic_size)
        check_choice("PositionEmbedding: kind", kind, POSITION_EMBEDDINGS)
        check_int("PositionEmbedding: num_prefix_tokens", num_prefix_tokens, minimum=0)
        if not (
            isinstance(grid_size, (tuple, list))
            and len(grid_size) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in grid_size)
        ):
            raise ValueError(
                f"PositionEmbedding: grid_size={grid_size!r} is not valid; expected (rows, "
                "columns) of the patch grid, two positive ints."
            )
        super().__init__(**kwargs)
        self.grid_size = tuple(grid_size)
        self.num_prefix_tokens = num_prefix_tokens
        self.kind = kind
        self.dynamic_size = dynamic_size
        if dynamic_size and not jit_compiles_any_size():
            self.supports_jit = False  # see `jit_compiles_any_size`
        # The reference ViT draws position embeddings from N(0, 0.02).
        self.initializer = keras.initializers.get(
            initializer or keras.initializers.RandomNormal(stddev=0.02)
        )

    @property
    def num_tokens(self):
        return self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]

    def build(self, input_shape):
        if self.dynamic_size:
            self._check_dynamic_inputs(input_shape)
        # Only the width comes from the input: the token count comes from the config, so a
        # layer rebuilt from an edited config gets the new grid's shape.
        shape = tuple(input_shape[0] if self.dynamic_size else input_shape)
        dim = shape[-1]
        tokens = shape[1] if len(shape) == 3 else -1
        if tokens not in (None, self.num_tokens) and not self.dynamic_size or len(shape) != 3:
            raise ValueError(
                f"PositionEmbedding: inputs of shape {shape} do not match grid_size="
                f"{self.grid_size} and num_prefix_tokens={self.num_prefix_tokens}; expected "
                f"tokens (batch, {self.num_tokens}, dim)."
            )
        if self.kind == "sincos2d" and dim % 4:
            raise ValueError(
                f"PositionEmbedding: kind='sincos2d' needs a width divisible by 4; the inputs "
                f"have {dim}."
            )
        if self.kind == "learned":
            self.embeddings = self.add_weight(
                shape=(1, self.num_tokens, dim), initializer=self.initializer, name="embeddings"
            )
        else:
            grid = sincos_2d(self.grid_size, dim)
            prefix = np.zeros((self.num_prefix_tokens, dim), "float32")
            self.embeddings = np.concatenate([prefix, grid])[None]

    def _check_dynamic_inputs(self, input_shape):
        """`[tokens, patch_map]`: two shapes, a 4-D patch map and, where both are known, as
        many tokens as its grid gives."""
        pair = (
            isinstance(input_shape, (tuple, list))
            and len(input_shape) == 2
            and all(isinstance(shape, (tuple, list)) for shape in input_shape)
        )
        if not pair or len(input_shape[1]) != 4:
            raise ValueError(
                "PositionEmbedding: dynamic_size=True takes [tokens, patch_map]: the tokens "
                "(batch, tokens, dim) and the patch map (batch, h, w, dim) that gives their grid; "
                f"got inputs of shape {input_shape}."
            )
        tokens = input_shape[0][1] if len(input_shape[0]) == 3 else None  # else refused later
        height, width = input_shape[1][1:3]
        if None in (tokens, height, width):  # sizes known only when the model runs
            return
        if tokens != self.num_prefix_tokens + height * width:
            raise ValueError(
                f"PositionEmbedding: {tokens} tokens do not match the {height}x{width} patch map "
                f"and num_prefix_tokens={self.num_prefix_tokens}; expected "
                f"{self.num_prefix_tokens + height * width} tokens."
            )

    def call(self, inputs):
        if not self.dynamic_size:
            return inputs + ops.cast(self.embeddings, inputs.dtype)
        tokens, patch_map = inputs
        height, width = ops.shape(patch_map)[1], ops.shape(patch_map)[2]
        return tokens + ops.cast(self._embeddings_for(height, width), tokens.dtype)

    def _embeddings_for(self, height, width):
        dim = self.embeddings.shape[-1]
        if self.kind == "sincos2d":
            grid = sincos_2d_tensor(height, width, dim)
            prefix = ops.zeros((self.num_prefix_tokens, dim), grid.dtype)
            return ops.concatenate([prefix, grid], axis=0)[None]
        embeddings = ops.convert_to_tensor(self.embeddings)
        prefix = embeddings[:, : self.num_prefix_tokens]
        grid = embeddings[:, self.num_prefix_tokens :]
        same = (
            isinstance(height, int) and isinstance(width, int) and (height, width) == self.grid_size
        )
        if not same:  # sizes that are tensors (TensorFlow graphs) always resample
            grid = ops.reshape(grid, (1, *self.grid_size, dim))
            grid = resize_images(grid, (height, width), "bicubic", antialias=True)
            grid = ops.reshape(ops.cast(grid, embeddings.dtype), (1, -1, dim))
        return ops.concatenate([prefix, grid], axis=1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0] if self.dynamic_size else input_shape)

    def get_config(self):
        config = {
            **super().get_config(),
            "grid_size": self.grid_size,
            "num_prefix_tokens": self.num_prefix_tokens,
            "kind": self.kind,
            "initializer": keras.initializers.serialize(self.initializer),
        }
        if self.dynamic_size:  # files of fixed-size models keep their config
            config["dynamic_size"] = True
        return config
