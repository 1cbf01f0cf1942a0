"""Hybrid ResNet + ViT (Dosovitskiy et al. 2021, Section 3.1): CNN features as patches.

A BiT-style ResNet (GroupNorm + weight-standardized convolutions, post-activation bottlenecks
as in the paper's code) turns the image into a feature map that the ViT embeds with patch
size 1. The paper (Section 4.1, Model Variants) varies the sequence length in two ways: (i) take
the output of stage 4 of a regular ResNet-50 (32x downsampling, backbone "r50_stage4"), or (ii)
remove stage 4 and put its blocks into stage 3 (16x downsampling, 4x the sequence, backbone
"r50"). The ResNet pieces are those of `keras_resvit.models.resnet`, so the layer names match
(`stem_conv`, `stage3_block9_conv3`); the transformer's are those of `build_vit`.
"""

import keras

from keras_resvit.base.validation import check_choice
from keras_resvit.models.common import with_dtype
from keras_resvit.models.resnet import IMAGENET_FILTERS, BlockConfig, resnet_stages, resnet_stem
from keras_resvit.models.vit import check_vit_head, vit_model
from keras_resvit.models.vit_config import vit_config, vit_size_name

# Blocks per stage. "r50": ResNet-50's (3, 4, 6, 3) with stage 4's three blocks moved into
# stage 3, option (ii); "r50_stage4": the regular ResNet-50, its stage-4 output, option (i).
BACKBONES = {"r50": (3, 4, 9), "r50_stage4": (3, 4, 6, 3)}
# The `build_vit` arguments a hybrid passes on (`**vit_options`).
VIT_OPTIONS = (
    "position_embedding",
    "representation_size",
    "dropout",
    "attention_dropout",
    "drop_path",
    "hidden_size",
    "num_layers",
    "num_heads",
    "mlp_dim",
    "patch_size",
    "num_registers",
    "layer_scale_init",
    "qk_norm",
    "fc_norm",
)
# The reference hybrid uses post-activation bottlenecks (stride on the 3x3) with GroupNorm and
# weight standardization, i.e. ResNet v1.5 with BiT's normalization.
_BACKBONE_BLOCKS = BlockConfig(
    version="v1.5",
    shortcut="B",
    plain=False,
    se_ratio=None,
    norm="group",
    weight_standardization=True,
)


def backbone_stride(blocks_per_stage) -> int:
    """Total downsampling of the backbone: 4x in the stem, 2x in every stage after the first."""
    return 4 * 2 ** (len(blocks_per_stage) - 1)


def resnet_features(x, blocks_per_stage):
    """The hybrid's CNN: ResNet stem and bottleneck stages (16x or 32x downsampling)."""
    filters = IMAGENET_FILTERS[: len(blocks_per_stage)]
    x = resnet_stem(x, "imagenet", filters[0], _BACKBONE_BLOCKS)
    return resnet_stages(x, "bottleneck", blocks_per_stage, filters, _BACKBONE_BLOCKS)


@with_dtype
def build_hybrid_vit(
    backbone: str = "r50",
    variant: str | None = "B/16",
    *,
    image_size: int | tuple | None = 224,
    num_classes: int = 1000,
    include_top: bool = True,
    pooling: str | None = "token",
    classifier_activation: str | None = "softmax",
    preprocessing: str | None = "inception",
    name: str | None = None,
    **vit_options,
) -> keras.Model:
    """Builds a hybrid ResNet + Vision Transformer that takes raw 0-255 pixels.

    Args:
        backbone: the CNN; "r50" (ResNet-50 with stage 4's blocks moved into stage 3: blocks
            (3, 4, 9), 16x downsampling) or "r50_stage4" (the regular ResNet-50 up to its
            stage 4: blocks (3, 4, 6, 3), 32x downsampling, a 4x shorter sequence).
        variant: ViT size and overall patch size, e.g. "B/16"; the patch size counts input
            pixels (the paper's hybrid naming: the total downsampling), so "/16" embeds the
            16x-downsampled map of "r50" with 1x1 patches and "/32" that of "r50_stage4".
        image_size: input height and width, divisible by the patch size; None: any such size
            (see `build_vit`).
        num_classes: classifier size.
        include_top: add the classifier (see `build_vit`).
        pooling: "token", "gap", "map" or None (see `build_vit`).
        classifier_activation: activation of the classifier; None returns logits.
        preprocessing: normalization preset inside the model ("inception": [-1, 1]).
        dtype: the layers' Keras dtype policy: None (the global one), "float32",
            "mixed_bfloat16" / "mixed_float16" (float32 weights, 16-bit computations; the
            classifier's outputs stay float32) or "bfloat16" / "float16" (16-bit weights), or
            a `keras.DTypePolicy` of one; saved with the model.
        name: model name; default like "r50_vit_b16".
        **vit_options: any other `build_vit` argument (`VIT_OPTIONS`): position_embedding,
            representation_size, dropout, attention_dropout, drop_path, hidden_size,
            num_layers, num_heads, mlp_dim, patch_size, num_registers, layer_scale_init,
            qk_norm, fc_norm.

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: for an invalid argument; the message names it and the valid values.

    Example:
    >>> import keras_resvit as kr
    >>> model = kr.build_hybrid_vit("r50", "Ti/16", image_size=32, num_classes=10)
    >>> model.output_shape
    (None, 10)
    >>> kr.build_hybrid_vit("r50_stage4", "Ti/32", image_size=64).output_shape
    (None, 1000)
    """
    unknown = sorted(set(vit_options) - set(VIT_OPTIONS))
    if unknown:
        raise TypeError(
            f"build_hybrid_vit() got an unexpected keyword argument {unknown[0]!r}; its "
            f"other build_vit arguments are {list(VIT_OPTIONS)}."
        )
    check_choice("backbone", backbone, BACKBONES)
    check_vit_head(include_top, num_classes, pooling, classifier_activation, preprocessing)
    stride = backbone_stride(BACKBONES[backbone])
    cfg = vit_config(variant, image_size=image_size, pooling=pooling, stride=stride, **vit_options)
    size = vit_size_name(variant, cfg)
    head = (include_top, num_classes, classifier_activation)
    return vit_model(
        cfg,
        lambda x: resnet_features(x, BACKBONES[backbone]),
        head,
        preprocessing,
        name or f"{backbone}_vit_{size}{cfg.patch_size}",
    )


build_hybrid_vit.keyword_options = VIT_OPTIONS  # for `create_model`'s override check
