"""The ResNet family: He et al. (2015) v1/v1.5, pre-activation v2, BiT and SE-ResNet.

Blocks are small functions `(x, filters, stride, name, cfg) -> x` over standard Keras layers;
`build_resnet` adds the stem, the stages and the head. Layer names are stable and
hierarchical (`stage2_block1_conv1`, `stage2_block1_shortcut_conv`, `predictions`) because
weight converters, Grad-CAM and users address layers by name.
"""

import math
from dataclasses import dataclass

import keras

from keras_resvit.base.model_files import deep_graph
from keras_resvit.base.validation import check_bool, check_choice
from keras_resvit.layers.resnet_layers import (
    FusedBatchNormalization,
    PointwiseConv2D,
    SlicedMaxPooling2D,
    StdConv2D,
    ZeroPadShortcut,
)
from keras_resvit.layers.squeeze_excite import squeeze_excite
from keras_resvit.models.common import (
    check_head_arguments,
    check_input_shape,
    classifier_head,
    image_inputs,
    pooled_features,
)

# He et al. (2015), Table 1: block type and blocks per stage of the ImageNet nets.
IMAGENET_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}
IMAGENET_FILTERS = (64, 128, 256, 512)
# Section 4.2: CIFAR nets have 3 stages of 16/32/64 filters on 32/16/8 maps.
CIFAR_FILTERS = (16, 32, 64)
# Layers per block, which sets the depth rule: 6n+2 for basic, 9n+2 for bottleneck blocks.
LAYERS_PER_BLOCK = {"basic": 2, "bottleneck": 3}
EXPANSION = {"basic": 1, "bottleneck": 4}

STEMS = ("imagenet", "cifar")
BLOCKS = ("basic", "bottleneck")
VERSIONS = ("v1.5", "v1", "v2")
SHORTCUTS = ("A", "B", "C")
NORMS = ("batch", "group")
DOWNSAMPLES = ("first", "last")

# torchvision's BatchNorm defaults (Keras' momentum 0.9 == PyTorch's 0.1).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
GN_GROUPS = 32


@dataclass(frozen=True)
class BlockConfig:
    """Options every block needs, resolved once by `build_resnet`."""

    version: str
    shortcut: str
    plain: bool
    se_ratio: float | None
    norm: str
    weight_standardization: bool
    downsample: str = "first"
    stem_bias: bool = False


def _conv(x, filters, kernel, stride, name, cfg, use_bias=False):
    # Strided convs pad explicitly and symmetrically (as PyTorch does) so that weights
    # imported from torchvision/timm give the same outputs as there.
    padding = "same"
    if stride > 1 and kernel > 1:
        x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    if cfg.weight_standardization:
        conv = StdConv2D
    else:
        conv = PointwiseConv2D if kernel == 1 else keras.layers.Conv2D
    return conv(
        filters,
        kernel,
        strides=stride,
        padding=padding,
        use_bias=use_bias,
        kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal"),
        name=name,
    )(x)


def _norm(x, name, cfg):
    if cfg.norm == "group":
        groups = math.gcd(GN_GROUPS, x.shape[-1])
        return keras.layers.GroupNormalization(groups, epsilon=BN_EPSILON, name=name)(x)
    return FusedBatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def _norm_relu(x, name, cfg, suffix=""):
    x = _norm(x, f"{name}_bn{suffix}", cfg)
    return keras.layers.ReLU(name=f"{name}_relu{suffix}")(x)


def _shortcut(x, preact, filters, stride, name, cfg):
    """The identity path of a block; `preact` is the pre-activated input (v2) or `x` (v1)."""
    changes_shape = stride != 1 or x.shape[-1] != filters
    if cfg.downsample == "last" and stride != 1 and x.shape[-1] == filters:
        # keras.applications' ResNetV2 subsamples the identity (a 1x1 strided max-pool).
        return SlicedMaxPooling2D(1, strides=stride, name=f"{name}_shortcut_pool")(x)
    if cfg.shortcut == "A" and changes_shape:
        return ZeroPadShortcut(filters, stride, name=f"{name}_shortcut_pad")(x)
    if cfg.shortcut == "C" or (cfg.shortcut == "B" and changes_shape):
        s = _conv(preact, filters, 1, stride, f"{name}_shortcut_conv", cfg)
        return s if cfg.version == "v2" else _norm(s, f"{name}_shortcut_bn", cfg)
    return x


def _merge(x, residual, name, cfg):
    if cfg.se_ratio:
        # Hu et al.: the gates rescale the residual branch before the addition.
        residual = squeeze_excite(residual, cfg.se_ratio, name=name)
    if not cfg.plain:
        residual = keras.layers.Add(name=f"{name}_add")([x, residual])
    # Pre-activation blocks leave the sum un-activated; the next block's norm-ReLU follows.
    if cfg.version == "v2":
        return residual
    return keras.layers.ReLU(name=f"{name}_out")(residual)


def basic_block(x, filters, stride, name, cfg):
    """Two 3x3 convs (ResNet-18/34 and the CIFAR nets)."""
    preact = _norm_relu(x, name, cfg, "0") if cfg.version == "v2" else x
    shortcut = None if cfg.plain else _shortcut(x, preact, filters, stride, name, cfg)
    y = _conv(preact, filters, 3, stride, f"{name}_conv1", cfg)
    y = _norm_relu(y, name, cfg, "1")
    y = _conv(y, filters, 3, 1, f"{name}_conv2", cfg)
    if cfg.version != "v2":
        y = _norm(y, f"{name}_bn2", cfg)
    return _merge(shortcut, y, name, cfg)


def bottleneck_block(x, filters, stride, name, cfg):
    """1x1 reduce, 3x3, 1x1 expand by 4 (ResNet-50/101/152).

    v1 strides the first 1x1 (paper, keras.applications); v1.5 and v2 stride the 3x3.
    """
    preact = _norm_relu(x, name, cfg, "0") if cfg.version == "v2" else x
    shortcut = None if cfg.plain else _shortcut(x, preact, filters * 4, stride, name, cfg)
    stride_1x1 = stride if cfg.version == "v1" else 1
    y = _conv(preact, filters, 1, stride_1x1, f"{name}_conv1", cfg)
    y = _norm_relu(y, name, cfg, "1")
    y = _conv(y, filters, 3, stride // stride_1x1, f"{name}_conv2", cfg)
    y = _norm_relu(y, name, cfg, "2")
    y = _conv(y, filters * 4, 1, 1, f"{name}_conv3", cfg)
    if cfg.version != "v2":
        y = _norm(y, f"{name}_bn3", cfg)
    return _merge(shortcut, y, name, cfg)


BLOCK_FUNCTIONS = {"basic": basic_block, "bottleneck": bottleneck_block}


def resnet_stem(x, stem, filters, cfg):
    """The ImageNet stem (7x7/2 conv + 3x3/2 max pool) or the CIFAR stem (one 3x3 conv);
    pre-activation nets leave the norm-ReLU to their first block."""
    if stem == "cifar":
        x = _conv(x, filters, 3, 1, "stem_conv", cfg)
    else:
        x = _conv(x, filters, 7, 2, "stem_conv", cfg, use_bias=cfg.stem_bias)
    if cfg.version != "v2":
        x = _norm_relu(x, "stem", cfg)
    if stem == "imagenet":
        x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
        x = SlicedMaxPooling2D(3, strides=2, name="stem_pool")(x)
    return x


def resnet_stages(x, block, blocks_per_stage, filters, cfg, first_stride=1):
    """Stacks the stages; stage `s` starts with a stride-2 block except the first.

    With `cfg.downsample == "last"` the stride-2 moves to the last block of the previous stage
    instead (same total downsampling), as in keras.applications' ResNetV2.
    """
    block_fn = BLOCK_FUNCTIONS[block]
    stages = len(blocks_per_stage)
    for s, (num_blocks, f) in enumerate(zip(blocks_per_stage, filters, strict=True), start=1):
        for b in range(1, num_blocks + 1):
            if cfg.downsample == "last":
                stride = 2 if b == num_blocks and s < stages else 1
            else:
                stride = (first_stride if s == 1 else 2) if b == 1 else 1
            x = block_fn(x, f, stride, f"stage{s}_block{b}", cfg)
    return x


def _stage_plan(depth, stem, block):
    """Returns (block, blocks per stage, base filters) for a depth, or raises ValueError."""
    if not isinstance(depth, int) or isinstance(depth, bool):
        raise ValueError(f"depth={depth!r} must be an int.")
    if stem == "imagenet":
        if depth not in IMAGENET_DEPTHS:
            hint = ' (a CIFAR net? pass stem="cifar")' if (depth - 2) % 6 == 0 else ""
            raise ValueError(
                f"depth={depth} is not an ImageNet ResNet depth; valid: "
                f"{sorted(IMAGENET_DEPTHS)}{hint}."
            )
        table_block, blocks = IMAGENET_DEPTHS[depth]
        if block not in (None, table_block):
            raise ValueError(
                f"block={block!r} does not match depth={depth}, which uses {table_block!r} blocks."
            )
        return table_block, blocks, IMAGENET_FILTERS
    block = block or "basic"
    per_stage = 3 * LAYERS_PER_BLOCK[block]
    n, rest = divmod(depth - 2, per_stage)
    if rest or n < 1:
        rule = f"{per_stage}n+2"
        valid = ", ".join(str(per_stage * k + 2) for k in (1, 2, 3, 5, 9, 18))
        raise ValueError(
            f"depth={depth} is not a CIFAR ResNet depth for {block!r} blocks: it must be "
            f"{rule} with n >= 1 (e.g. {valid})."
        )
    return block, (n, n, n), CIFAR_FILTERS


def _check_options(plain, shortcut, width, se_ratio, weight_standardization, stem_bias):
    """Validates `build_resnet`'s block options that are not choices from a list."""
    for argument, flag in (
        ("plain", plain),
        ("weight_standardization", weight_standardization),
        ("stem_bias", stem_bias),
    ):
        check_bool(argument, flag)
    if plain and shortcut is not None:
        raise ValueError(f"shortcut={shortcut!r} has no meaning with plain=True (no shortcuts).")
    # Hand-written rather than `check_number`: the messages give the papers' values.
    if not isinstance(width, (int, float)) or isinstance(width, bool) or not 0 < width < math.inf:
        raise ValueError(f"width={width!r} must be a positive number (e.g. 1, 2, 3, 4).")
    if se_ratio is not None and (
        not isinstance(se_ratio, (int, float))
        or isinstance(se_ratio, bool)
        or not 0 < se_ratio <= 1
    ):
        raise ValueError(f"se_ratio={se_ratio!r} must be in (0, 1], e.g. 1/16, or None.")


def _resnet_body(x, stem, block, blocks_per_stage, filters, cfg):
    """Stem, stages and, for pre-activation nets, the final norm-ReLU."""
    x = resnet_stem(x, stem, filters[0], cfg)
    x = resnet_stages(x, block, blocks_per_stage, filters, cfg)
    if cfg.version == "v2":
        x = _norm_relu(x, "post", cfg)
    return x


def build_resnet(
    depth: int = 50,
    *,
    input_shape: tuple | None = None,
    num_classes: int | None = None,
    include_top: bool = True,
    pooling: str | None = None,
    classifier_activation: str | None = "softmax",
    preprocessing: str | None = "auto",
    stem: str = "imagenet",
    block: str | None = None,
    version: str = "v1.5",
    shortcut: str | None = None,
    plain: bool = False,
    width: float = 1,
    se_ratio: float | None = None,
    norm: str = "batch",
    weight_standardization: bool = False,
    downsample: str = "first",
    stem_bias: bool = False,
    name: str | None = None,
) -> keras.Model:
    """Builds a ResNet as a Keras functional model that takes raw 0-255 pixels.

    Args:
        depth: ImageNet nets: 18, 34 (basic blocks), 50, 101, 152, 200 (bottleneck). CIFAR nets
            (`stem="cifar"`): 6n+2 with basic blocks (20, 32, 44, 56, 110, 1202) or 9n+2 with
            bottleneck blocks (164, 1001 as in the pre-activation paper).
        input_shape: (height, width, channels); default (224, 224, 3) for the ImageNet stem and
            (32, 32, 3) for the CIFAR stem. Height and width may be None.
        num_classes: classifier size; default 1000 (ImageNet stem) or 10 (CIFAR stem).
        include_top: add global pooling and the dense classifier. Without it the model returns
            the last feature map, or the pooled vector when `pooling` is given.
        pooling: None, "avg" or "max"; with `include_top` the head's pooling ("avg" if None).
        classifier_activation: activation of the classifier; None returns logits.
        preprocessing: normalization preset inside the model ("imagenet", "inception",
            "cifar", "caffe", "pixel_mean" or None); "auto" picks "imagenet" or "cifar" by
            stem. "pixel_mean" is the paper's: the mean image of the training data subtracted
            (`kr.train` computes it; see `layers.PixelMean`).
        stem: "imagenet" (7x7/2 conv + 3x3/2 max pool, 4 stages) or "cifar" (3x3 conv, 3
            stages of 16/32/64 filters).
        block: "basic" or "bottleneck"; default from the depth.
        version: "v1.5" (stride on the bottleneck's 3x3, torchvision/timm), "v1" (stride on
            its first 1x1: the paper and keras.applications) or "v2" (pre-activation).
        shortcut: "A" (zero-padding, parameter-free), "B" (projection when the shape
            changes) or "C" (all projections); default "A" for CIFAR nets, "B" otherwise.
        plain: remove every shortcut (the paper's plain baselines).
        width: multiplier on every stage's filters (BiT's x1, x2, x3, x4).
        se_ratio: squeeze-and-excitation reduction as a fraction (1/16 in SE-ResNet); None
            for none.
        norm: "batch" (BatchNorm) or "group" (GroupNorm, 32 groups, as in BiT).
        weight_standardization: standardize every conv kernel (BiT).
        downsample: "first" (each stage after the first starts with a stride-2 block: the
            paper) or "last" (each stage but the last ends with one, its identity shortcut
            subsampled: keras.applications' ResNetV2 layout, for its weights).
        stem_bias: give the stem conv a bias (keras.applications' ResNetV2 has one; it cannot
            be folded into a later BatchNorm because the max-pool's zero padding follows it).
        name: model name.

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: for an invalid argument; the message names it and the valid values.

    Example:
    >>> import keras_resvit as kr
    >>> model = kr.build_resnet(20, stem="cifar")
    >>> model.output_shape
    (None, 10)
    """
    check_choice("stem", stem, STEMS)
    check_choice("block", block, (None, *BLOCKS))
    check_choice("version", version, VERSIONS)
    check_choice("shortcut", shortcut, (None, *SHORTCUTS))
    check_choice("norm", norm, NORMS)
    check_choice("downsample", downsample, DOWNSAMPLES)
    block, blocks_per_stage, base_filters = _stage_plan(depth, stem, block)
    _check_options(plain, shortcut, width, se_ratio, weight_standardization, stem_bias)
    cifar = stem == "cifar"
    if input_shape is None:
        input_shape = (32, 32, 3) if cifar else (224, 224, 3)
    if num_classes is None:
        num_classes = 10 if cifar else 1000
    check_head_arguments(include_top, num_classes, pooling, classifier_activation)
    if preprocessing == "auto":
        preprocessing = "cifar" if cifar else "imagenet"
    downsampling = 2 ** (len(base_filters) - 1) * (1 if cifar else 4)
    check_input_shape(
        input_shape,
        downsampling,
        preprocessing,
        min_reason=f"the net downsamples {downsampling}x, so ",
    )
    cfg = BlockConfig(
        version=version,
        shortcut=shortcut or ("A" if cifar else "B"),
        plain=plain,
        se_ratio=se_ratio,
        norm=norm,
        weight_standardization=weight_standardization,
        downsample=downsample,
        stem_bias=stem_bias,
    )
    inputs, x = image_inputs(input_shape, preprocessing)
    filters = [max(1, round(f * width)) for f in base_filters]
    x = _resnet_body(x, stem, block, blocks_per_stage, filters, cfg)
    if include_top:
        x = classifier_head(x, num_classes, pooling, classifier_activation)
    else:
        x = pooled_features(x, pooling)
    default_name = f"{'plain' if plain else 'resnet'}{depth}"
    with deep_graph(recursion_limit=30 * sum(blocks_per_stage)):
        return keras.Model(inputs, x, name=name or default_name)
