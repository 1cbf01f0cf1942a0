"""Hybrid ResNet + ViT (Dosovitskiy et al. 2021, Section 3.1): CNN features as patches.

A BiT-style ResNet (GroupNorm + weight-standardized convolutions, post-activation bottlenecks
as in the paper's code) with stage 4 removed and its blocks moved into stage 3 turns the image
into a 16x-downsampled feature map; the ViT embeds that map with patch size 1 ("R50+ViT-B/16").
The ResNet pieces are those of `keras_resvit.models.resnet`, so the layer names match
(`stem_conv`, `stage3_block9_conv3`); the transformer's are those of `build_vit`.
"""

import keras

from keras_resvit.models.common import check_choice
from keras_resvit.models.resnet import IMAGENET_FILTERS, BlockConfig, resnet_stages, resnet_stem
from keras_resvit.models.vit import check_vit_head, vit_config, vit_model

# Blocks per stage: ResNet-50's (3, 4, 6, 3) with stage 4's three blocks moved into stage 3.
BACKBONES = {"r50": (3, 4, 9)}
# The stem downsamples 4x and stages 2 and 3 each 2x.
BACKBONE_STRIDE = 16
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


def resnet_features(x, blocks_per_stage):
    """The hybrid's CNN: ResNet stem and three bottleneck stages, 16x downsampling."""
    filters = IMAGENET_FILTERS[: len(blocks_per_stage)]
    x = resnet_stem(x, "imagenet", filters[0], _BACKBONE_BLOCKS)
    return resnet_stages(x, "bottleneck", blocks_per_stage, filters, _BACKBONE_BLOCKS)


def build_hybrid_vit(
    backbone: str = "r50",
    variant: str | None = "B/16",
    *,
    image_size: int | tuple = 224,
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
        backbone: the CNN; "r50" (ResNet-50 with blocks (3, 4, 9), 16x downsampling).
        variant: ViT size and overall patch size, e.g. "B/16"; the patch size counts input
            pixels, so "/16" embeds the 16x-downsampled map with 1x1 patches.
        image_size: input height and width, divisible by the patch size.
        num_classes: classifier size.
        include_top: add the classifier (see `build_vit`).
        pooling: "token", "gap" or None (see `build_vit`).
        classifier_activation: activation of the classifier; None returns logits.
        preprocessing: normalization preset inside the model ("inception": [-1, 1]).
        name: model name; default like "r50_vit_b16".
        **vit_options: any other `build_vit` argument: position_embedding,
            representation_size, dropout, attention_dropout, drop_path, hidden_size,
            num_layers, num_heads, mlp_dim, patch_size.

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: for an invalid argument; the message names it and the valid values.

    Example:
    >>> import keras_resvit as kr
    >>> model = kr.build_hybrid_vit("r50", "Ti/16", image_size=32, num_classes=10)
    >>> model.output_shape
    (None, 10)
    """
    check_choice("backbone", backbone, BACKBONES)
    check_vit_head(include_top, num_classes, pooling, classifier_activation, preprocessing)
    cfg = vit_config(
        variant, image_size=image_size, pooling=pooling, stride=BACKBONE_STRIDE, **vit_options
    )
    size = variant.split("/")[0].lower() if variant else f"d{cfg.hidden_size}"
    head = (include_top, num_classes, classifier_activation)
    return vit_model(
        cfg,
        lambda x: resnet_features(x, BACKBONES[backbone]),
        head,
        preprocessing,
        name or f"{backbone}_vit_{size}{cfg.patch_size}",
    )
