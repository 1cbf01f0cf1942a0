"""The Vision Transformer (Dosovitskiy et al. 2021) and its resolution change.

An image is cut into patches by a convolution with kernel = stride = patch size; a [class]
token is prepended, position embeddings are added, and pre-LayerNorm Transformer blocks
(`MultiHeadSelfAttention` and `ClosedFormLayerNormalization`, faster versions of the Keras layers;
GELU MLP; residuals) follow. Layer names are stable and hierarchical (`patch_embedding`,
`encoder_block3_attention`, `encoder_block3_mlp_dense1`, `encoder_norm`, `pre_logits`,
`predictions`) because weight converters and users address layers by name. The refinements
that came after the paper are options, off by default (so each paper model keeps its exact
parameter count): register tokens, LayerScale, QK-norm and attention pooling (`build_vit`'s
`num_registers`, `layer_scale_init`, `qk_norm`, `pooling="map"`). `resize_vit` and
`resample_position_embeddings` sit next to the model they serve; the variants and the
resolved configuration (`vit_config`) are in `keras_resvit.models.vit_config`.
"""

import dataclasses

import keras

from keras_resvit.layers.normalization import preprocessing_layers
from keras_resvit.layers.vit_layers import (
    ClassToken,
    ClosedFormLayerNormalization,
    DropPath,
    MultiHeadSelfAttention,
    PatchEmbedding,
    PositionEmbedding,
    TokenPooling,
    gelu,
)
from keras_resvit.layers.vit_option_layers import (
    DropTokens,
    LayerScale,
    ProbeToken,
    RegisterTokens,
)
from keras_resvit.models.common import (
    check_head_arguments,
    image_inputs,
    predictions_layer,
    with_dtype,
)

# The variants table and its decoder are read from here too (weight converters, recipes).
from keras_resvit.models.vit_config import VARIANTS as VARIANTS
from keras_resvit.models.vit_config import decode_variant as decode_variant
from keras_resvit.models.vit_config import vit_config, vit_size_name
from keras_resvit.models.vit_resize import pi_resize_kernel as pi_resize_kernel
from keras_resvit.models.vit_resize import (
    resample_position_embeddings as resample_position_embeddings,
)
from keras_resvit.models.vit_resize import resize_vit as resize_vit

POOLINGS = ("token", "gap", "map", None)
# The reference implementation's LayerNorm epsilon (Keras' default is 1e-3).
LN_EPSILON = 1e-6


def _dropout(x, rate, name):
    return keras.layers.Dropout(rate, name=name)(x) if rate else x


def _residual(x, branch, drop_rate, name, layer_scale_init=None):
    if layer_scale_init is not None:
        branch = LayerScale(layer_scale_init, name=f"{name}_layer_scale")(branch)
    if drop_rate:
        branch = DropPath(drop_rate, name=f"{name}_drop_path")(branch)
    return keras.layers.Add(name=f"{name}_add")([x, branch])


def mlp_block(x, cfg, name):
    """Dense -> GELU -> Dense, with dropout after each (the Transformer's position-wise MLP)."""
    x = keras.layers.Dense(cfg.mlp_dim, activation=gelu, name=f"{name}_dense1")(x)
    x = _dropout(x, cfg.dropout, f"{name}_dropout1")
    x = keras.layers.Dense(cfg.hidden_size, name=f"{name}_dense2")(x)
    return _dropout(x, cfg.dropout, f"{name}_dropout2")


def encoder_block(x, cfg, drop_rate, name):
    """Pre-LayerNorm Transformer block: x + MHA(LN(x)), then x + MLP(LN(x)); with
    `cfg.layer_scale_init` each branch is scaled per channel first (LayerScale)."""
    y = ClosedFormLayerNormalization(epsilon=LN_EPSILON, name=f"{name}_norm1")(x)
    y = MultiHeadSelfAttention(
        cfg.num_heads,
        cfg.hidden_size // cfg.num_heads,
        dropout=cfg.attention_dropout,
        qk_norm=cfg.qk_norm,
        name=f"{name}_attention",
    )(y, y)
    y = _dropout(y, cfg.dropout, f"{name}_attention_dropout")
    x = _residual(x, y, drop_rate, f"{name}_attention", cfg.layer_scale_init)
    y = ClosedFormLayerNormalization(epsilon=LN_EPSILON, name=f"{name}_norm2")(x)
    y = mlp_block(y, cfg, f"{name}_mlp")
    return _residual(x, y, drop_rate, f"{name}_mlp", cfg.layer_scale_init)


def drop_path_rates(drop_path, num_layers):
    """Stochastic depth rising linearly from 0 (first block) to `drop_path` (last block)."""
    return [drop_path * i / max(num_layers - 1, 1) for i in range(num_layers)]


def num_class_tokens(cfg):
    """1 when the model has a class token: "token" pooling and every token (None) returned;
    "gap" averages the patch tokens and "map" pools with its own probe, as in big_vision."""
    return 1 if cfg.pooling in ("token", None) else 0


def embed_patches(x, cfg):
    """Feature map -> patch tokens (+ class token) + position embeddings (+ registers)."""
    patch = cfg.patch_size // cfg.stride
    x = PatchEmbedding(
        cfg.hidden_size, patch, strides=patch, padding="valid", name="patch_embedding"
    )(x)
    patch_map = x
    x = keras.layers.Reshape((-1, cfg.hidden_size), name="patch_embedding_flatten")(x)
    prefix = num_class_tokens(cfg)
    if prefix:
        x = ClassToken(name="class_token")(x)
    position = PositionEmbedding(
        cfg.grid_size,
        prefix,
        kind=cfg.position_embedding,
        dynamic_size=cfg.dynamic_size,
        name="position_embedding",
    )
    # A model of any input size reads the grid of each input from the patch map.
    x = position([x, patch_map]) if cfg.dynamic_size else position(x)
    if cfg.num_registers:
        x = RegisterTokens(cfg.num_registers, prefix, name="register_tokens")(x)
    return _dropout(x, cfg.dropout, "embedding_dropout")


def encoder(x, cfg):
    """The stack of encoder blocks and the final LayerNorm (on the pooled feature instead
    with `cfg.fc_norm`); register tokens end here."""
    for i, rate in enumerate(drop_path_rates(cfg.drop_path, cfg.num_layers), start=1):
        x = encoder_block(x, cfg, rate, f"encoder_block{i}")
    if not cfg.fc_norm:
        x = ClosedFormLayerNormalization(epsilon=LN_EPSILON, name="encoder_norm")(x)
    if cfg.num_registers:
        x = DropTokens(num_class_tokens(cfg), cfg.num_registers, name="register_drop")(x)
    return x


def encoder_tokens(model: keras.Model):
    """The encoder's output tensor in a model built by `build_vit` / `build_hybrid_vit`: the
    class token (if any), then the patch tokens, registers removed; normalized unless the
    model normalizes the pooled feature (`fc_norm`)."""
    names = {layer.name for layer in model.layers}
    for name in ("register_drop", "encoder_norm"):
        if name in names:
            return model.get_layer(name).output
    # fc_norm without registers: what the pooling reads.
    pooling = next(n for n in ("token_pool", "gap_pool", "map_probe") if n in names)
    return model.get_layer(pooling).input


def map_head(x, cfg):
    """Multihead attention pooling (Zhai et al. 2022, "Scaling Vision Transformers"; big_vision's
    `MAPHead`, SigLIP's head): a learned probe token attends over the tokens with the model's
    heads, then probe + MLP(LN(probe))."""
    probe = ProbeToken(name="map_probe")(x)
    y = keras.layers.MultiHeadAttention(
        cfg.num_heads, cfg.hidden_size // cfg.num_heads, name="map_attention"
    )(probe, x)
    z = ClosedFormLayerNormalization(epsilon=LN_EPSILON, name="map_norm")(y)
    # big_vision's MAPHead builds its MlpBlock without dropout.
    z = mlp_block(z, dataclasses.replace(cfg, dropout=0.0), "map_mlp")
    y = keras.layers.Add(name="map_add")([y, z])
    return TokenPooling(name="map_pool")(y)


def pool_and_classify(x, cfg, include_top, num_classes, classifier_activation):
    """Token, mean or attention pooling, optional pre-logits (dense + tanh), the classifier."""
    if cfg.pooling == "token":
        x = TokenPooling(name="token_pool")(x)
    elif cfg.pooling == "gap":
        x = keras.layers.GlobalAveragePooling1D(name="gap_pool")(x)
    elif cfg.pooling == "map":
        x = map_head(x, cfg)
    if cfg.fc_norm:
        x = ClosedFormLayerNormalization(epsilon=LN_EPSILON, name="fc_norm")(x)
    if cfg.representation_size:
        x = keras.layers.Dense(cfg.representation_size, activation="tanh", name="pre_logits")(x)
    if include_top:
        # Zero-initialized as in the paper's fine-tuning head (and big_vision's default).
        x = predictions_layer(num_classes, classifier_activation, "zeros")(x)
    return x


def vit_model(cfg, features, head, preprocessing, name):
    """Builds the functional model: preprocessing, optional CNN features, encoder, head.

    Args:
        cfg: a `ViTConfig`.
        features: None, or a function mapping the normalized images to a feature map whose
            downsampling is `cfg.stride` (the hybrid's ResNet).
        head: (include_top, num_classes, classifier_activation).
        preprocessing: normalization preset of `keras_resvit.layers.normalization`.
        name: model name.
    """
    size = (None, None) if cfg.dynamic_size else cfg.image_size
    if cfg.dynamic_size and preprocessing == "pixel_mean":
        raise ValueError(
            "image_size=None: preprocessing='pixel_mean' subtracts a mean image of one size; "
            "pass a fixed image_size, or another preprocessing (e.g. 'inception')."
        )
    inputs, x = image_inputs((*size, 3), preprocessing)
    if features is not None:
        x = features(x)
    x = encoder(embed_patches(x, cfg), cfg)
    x = pool_and_classify(x, cfg, *head)
    return keras.Model(inputs, x, name=name)


def check_vit_head(include_top, num_classes, pooling, classifier_activation, preprocessing):
    """Validates the head and preprocessing arguments of the ViT builders."""
    check_head_arguments(include_top, num_classes, pooling, classifier_activation, POOLINGS)
    if include_top and pooling is None:
        raise ValueError(
            'pooling=None returns every token, so it needs include_top=False; use "token", '
            '"gap" or "map" for a classifier.'
        )
    preprocessing_layers(preprocessing)


@with_dtype
def build_vit(
    variant: str | None = "B/16",
    *,
    image_size: int | tuple | None = 224,
    num_classes: int = 1000,
    include_top: bool = True,
    pooling: str | None = "token",
    position_embedding: str = "learned",
    representation_size: int | None = None,
    dropout: float = 0.0,
    attention_dropout: float = 0.0,
    drop_path: float = 0.0,
    classifier_activation: str | None = "softmax",
    preprocessing: str | None = "inception",
    hidden_size: int | None = None,
    num_layers: int | None = None,
    num_heads: int | None = None,
    mlp_dim: int | None = None,
    patch_size: int | None = None,
    num_registers: int = 0,
    layer_scale_init: float | None = None,
    qk_norm: bool = False,
    fc_norm: bool = False,
    name: str | None = None,
) -> keras.Model:
    """Builds a Vision Transformer that takes raw 0-255 pixels.

    Args:
        variant: "Ti", "S", "B", "L" or "H" with a patch size, e.g. "B/16"; None when every
            architecture argument below is given.
        image_size: input height and width (an int or a tuple), divisible by the patch size;
            None: any size divisible by the patch size, each input's grid getting the
            position embeddings resampled to it as `resize_vit` would (timm's
            `dynamic_img_size`); the learned embeddings are stored for a 224-pixel image.
        num_classes: classifier size.
        include_top: add the classifier. Without it the model returns the pooled feature, or
            every token (class token first; registers removed) when `pooling=None`.
        pooling: "token" (the class token, as in the paper), "gap" (mean of the patch tokens;
            no class token), "map" (multihead attention pooling: a learned probe token
            attends over the patch tokens, then LayerNorm and an MLP with a residual, as
            big_vision's MAPHead; Zhai et al. 2022, "Scaling Vision Transformers", and SigLIP,
            Zhai et al. 2023; no class token) or None (all tokens; only with
            `include_top=False`).
        position_embedding: "learned" (the paper) or "sincos2d" (fixed, no weights).
        representation_size: width of the pre-training pre-logits layer (dense + tanh); None
            for the fine-tuning layout (a single linear classifier).
        dropout: dropout after the embeddings, the attention and each MLP layer.
        attention_dropout: dropout on the attention weights.
        drop_path: stochastic depth of the last block; rates rise linearly from 0.
        classifier_activation: activation of the classifier; None returns logits.
        preprocessing: normalization preset inside the model ("inception": [-1, 1]).
        hidden_size: overrides the variant's width D.
        num_layers: overrides the variant's depth.
        num_heads: overrides the variant's attention heads.
        mlp_dim: overrides the variant's MLP size.
        patch_size: overrides the variant's patch size.
        num_registers: register tokens ("Vision Transformers Need Registers", Darcet et al.
            2024): learned tokens after the class token, without position embeddings
            (timm's `reg_tokens` with `no_embed_class`), removed after the encoder. 0: none.
        layer_scale_init: LayerScale (Touvron et al. 2021, "Going deeper with Image
            Transformers" (CaiT); DeiT III): a learned per-channel scale on the attention and
            MLP branch of every block, starting at this value (e.g. 1e-5, timm's
            `init_values`); None: no scale.
        qk_norm: QK-norm (Dehghani et al. 2023, "Scaling Vision Transformers to 22 Billion
            Parameters"): LayerNorm over each head's channels on the queries and keys
            (timm's `qk_norm`).
        fc_norm: the final LayerNorm on the pooled feature instead of on every token (timm's
            `fc_norm`, its default with average pooling: MAE and BEiT fine-tuning, He et al.
            2022); the same parameters. Needs a pooling.
        dtype: the layers' Keras dtype policy: None (the global one), "float32",
            "mixed_bfloat16" / "mixed_float16" (float32 weights, 16-bit computations; the
            classifier's outputs stay float32) or "bfloat16" / "float16" (16-bit weights), or
            a `keras.DTypePolicy` of one; saved with the model.
        name: model name; default like "vit_b16", or for widths or a depth other than the
            variant's, like "vit_d192_l2_16" (`vit_size_name`).

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: for an invalid argument; the message names it and the valid values.

    Example:
    >>> import keras_resvit as kr
    >>> model = kr.build_vit("Ti/16", image_size=32, num_classes=10)
    >>> model.output_shape
    (None, 10)
    >>> kr.build_vit("Ti/16", image_size=32, pooling="map", num_registers=4,
    ...              layer_scale_init=1e-5, qk_norm=True).output_shape
    (None, 1000)
    """
    check_vit_head(include_top, num_classes, pooling, classifier_activation, preprocessing)
    cfg = vit_config(
        variant,
        image_size=image_size,
        pooling=pooling,
        position_embedding=position_embedding,
        representation_size=representation_size,
        dropout=dropout,
        attention_dropout=attention_dropout,
        drop_path=drop_path,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        mlp_dim=mlp_dim,
        patch_size=patch_size,
        num_registers=num_registers,
        layer_scale_init=layer_scale_init,
        qk_norm=qk_norm,
        fc_norm=fc_norm,
    )
    head = (include_top, num_classes, classifier_activation)
    name = name or f"vit_{vit_size_name(variant, cfg)}{cfg.patch_size}"
    return vit_model(cfg, None, head, preprocessing, name)
