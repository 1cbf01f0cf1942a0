"""The configuration of a Vision Transformer: the papers' variants ("Ti" to "H"), a variant
string such as "B/16" decoded once (`decode_variant`), and every architectural choice
resolved and validated once into a `ViTConfig` (`vit_config`), which `keras_resvit.models.vit`
builds.
"""

import difflib
from dataclasses import dataclass

from keras_resvit.base.validation import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_rate,
    numpy_hint,
)
from keras_resvit.layers.vit_layers import POSITION_EMBEDDINGS

# Dosovitskiy et al., Table 1 (B, L, H) and Touvron et al. / Steiner et al. (Ti, S):
# hidden size D, layers, heads, MLP size.
VARIANTS = {
    "Ti": {"hidden_size": 192, "num_layers": 12, "num_heads": 3, "mlp_dim": 768},
    "S": {"hidden_size": 384, "num_layers": 12, "num_heads": 6, "mlp_dim": 1536},
    "B": {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "mlp_dim": 3072},
    "L": {"hidden_size": 1024, "num_layers": 24, "num_heads": 16, "mlp_dim": 4096},
    "H": {"hidden_size": 1280, "num_layers": 32, "num_heads": 16, "mlp_dim": 5120},
}
PATCH_SIZES = (8, 14, 16, 32)
ARCHITECTURE = ("hidden_size", "num_layers", "num_heads", "mlp_dim", "patch_size")


@dataclass(frozen=True)
class ViTConfig:
    """Every architectural choice of a ViT, resolved and validated once by `vit_config`."""

    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    patch_size: int
    image_size: tuple
    stride: int
    pooling: str | None
    position_embedding: str
    representation_size: int | None
    dropout: float
    attention_dropout: float
    drop_path: float
    num_registers: int = 0
    layer_scale_init: float | None = None
    qk_norm: bool = False
    fc_norm: bool = False  # the final LayerNorm on the pooled feature instead of every token
    dynamic_size: bool = False  # any input size; `image_size` is then the embeddings' grid's

    @property
    def grid_size(self):
        return (self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size)


def decode_variant(variant: str | None) -> dict:
    """Decodes "B/16" into `{"hidden_size": 768, ..., "patch_size": 16}`; "B" has no patch size.

    Raises:
        ValueError: for an unknown model size or a malformed patch size, with close matches.
    """
    if variant is None:
        return {}
    size, _, patch = str(variant).partition("/")
    if size in VARIANTS and (not patch or (patch.isascii() and patch.isdigit() and int(patch) > 0)):
        return {**VARIANTS[size], **({"patch_size": int(patch)} if patch else {})}
    known = [f"{v}/{p}" for v in VARIANTS for p in PATCH_SIZES]
    lower = {k.lower(): k for k in known}  # "b/16": 'B/16' first
    close = difflib.get_close_matches(str(variant).lower(), lower, n=3, cutoff=0.5)
    close = [lower[c] for c in close]
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"variant={variant!r} is not a ViT variant; expected a size from {list(VARIANTS)} and "
        f"a patch size, e.g. 'B/16' (patch sizes {list(PATCH_SIZES)} are the usual ones).{hint}"
    )


def vit_size_name(variant, cfg) -> str:
    """The size in a ViT's name: the variant's letters where `cfg` keeps its widths and depth
    ("b": "vit_b16", also "vit_b32" for another patch size), else its own width and depth
    ("d32_l2_": "vit_d32_l2_4")."""
    widths = ("hidden_size", "num_layers", "num_heads", "mlp_dim")
    if variant and all(decode_variant(variant)[k] == getattr(cfg, k) for k in widths):
        return variant.split("/")[0].lower()
    return f"d{cfg.hidden_size}_l{cfg.num_layers}_"


# With image_size=None, the learned position embeddings are stored for the grid of a 224-pixel
# image (the paper's pre-training resolution, timm's default `img_size`) and resampled to the
# grid of each input.
DYNAMIC_BASE = 224


def any_size(image_size) -> bool:
    """Whether `image_size` is `(None, None)`: a ViT of any input size."""
    return (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(side is None for side in image_size)
    )


def builds_any_size(image_size) -> bool:
    """Whether a build argument `image_size` asks for any input size: None or `(None, None)`."""
    return image_size is None or any_size(image_size)


def image_size_pair(image_size, argument: str = "image_size"):
    """An int or (height, width) as a (height, width) tuple, or ValueError naming `argument`."""
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(
            f"{argument}={image_size!r} must be an int or (height, width){numpy_hint(image_size)}."
        )
    positive = all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    if size is image_size and not positive:  # a pair: its sides named together
        hint = numpy_hint(image_size) or (
            "; a ViT of any input size takes image_size=None (build_vit) or (None, None)"
            if argument == "image_size"
            else ""
        )
        raise ValueError(
            f"{argument}={tuple(image_size)!r} must be two positive ints (height, width){hint}."
        )
    for side in size:
        check_int(argument, side)
    return tuple(size)


def vit_config(
    variant,
    *,
    image_size=224,
    pooling="token",
    position_embedding="learned",
    representation_size=None,
    dropout=0.0,
    attention_dropout=0.0,
    drop_path=0.0,
    hidden_size=None,
    num_layers=None,
    num_heads=None,
    mlp_dim=None,
    patch_size=None,
    num_registers=0,
    layer_scale_init=None,
    qk_norm=False,
    fc_norm=False,
    stride=1,
) -> ViTConfig:
    """Resolves a variant string plus explicit overrides into a validated `ViTConfig`.

    `stride` is the downsampling of a CNN backbone before the patch embedding (hybrids); the
    patch size always counts input pixels per token side.
    """
    given = (hidden_size, num_layers, num_heads, mlp_dim, patch_size)
    overrides = {k: v for k, v in zip(ARCHITECTURE, given, strict=True) if v is not None}
    arch = {**decode_variant(variant), **overrides}
    missing = [k for k in ARCHITECTURE if k not in arch]
    if missing:
        raise ValueError(
            f"variant={variant!r} leaves {missing} unset; pass a variant such as 'B/16' or "
            "every one of hidden_size, num_layers, num_heads, mlp_dim and patch_size."
        )
    for argument in ARCHITECTURE:
        check_int(argument, arch[argument])
    if arch["hidden_size"] % arch["num_heads"]:
        raise ValueError(
            f"hidden_size={arch['hidden_size']} is not divisible by num_heads="
            f"{arch['num_heads']}; each head needs hidden_size / num_heads channels."
        )
    patch = arch["patch_size"]
    if patch % stride:
        raise ValueError(
            f"patch_size={patch} must be a multiple of the backbone's downsampling {stride}."
        )
    dynamic = builds_any_size(image_size)
    base = patch * max(1, DYNAMIC_BASE // patch)
    size = (base, base) if dynamic else image_size_pair(image_size)
    if size[0] % patch or size[1] % patch:
        raise ValueError(
            f"image_size={image_size!r} is not divisible by patch_size={patch}; use a multiple "
            f"of {patch}, e.g. {patch * max(1, round(size[0] / patch))}."
        )
    check_choice("position_embedding", position_embedding, POSITION_EMBEDDINGS)
    if position_embedding == "sincos2d" and arch["hidden_size"] % 4:
        raise ValueError(
            f"hidden_size={arch['hidden_size']} must be a multiple of 4 for "
            'position_embedding="sincos2d" (sin and cos of x and y).'
        )
    check_int("representation_size", representation_size, none_ok=True)
    if representation_size and pooling is None:
        raise ValueError(
            f"representation_size={representation_size} needs a pooled feature; "
            'use pooling="token", "gap" or "map".'
        )
    for argument, rate in (
        ("dropout", dropout),
        ("attention_dropout", attention_dropout),
        ("drop_path", drop_path),
    ):
        check_rate(argument, rate)
    if drop_path and arch["num_layers"] == 1:
        raise ValueError(
            f"drop_path={drop_path} has no effect with num_layers=1: the rates rise linearly "
            "from 0 at the first block (timm's rule), and the only block is the first; use "
            "drop_path=0.0 or more blocks."
        )
    check_int("num_registers", num_registers, minimum=0)
    check_number("layer_scale_init", layer_scale_init, 0, none_ok=True)
    check_bool("qk_norm", qk_norm)
    check_bool("fc_norm", fc_norm)
    if fc_norm and pooling is None:
        raise ValueError(
            "fc_norm=True normalizes the pooled feature, but pooling=None pools nothing; use "
            'pooling="token", "gap" or "map", or fc_norm=False.'
        )
    return ViTConfig(
        **arch,
        image_size=size,
        stride=stride,
        pooling=pooling,
        position_embedding=position_embedding,
        representation_size=representation_size,
        dropout=dropout,
        attention_dropout=attention_dropout,
        drop_path=drop_path,
        num_registers=num_registers,
        layer_scale_init=layer_scale_init,
        qk_norm=qk_norm,
        fc_norm=fc_norm,
        dynamic_size=dynamic,
    )
