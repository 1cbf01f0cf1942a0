"""The ResNet family: He et al. (2015) v1/v1.5, pre-activation v2, BiT, SE-ResNet and the
later options (ResNet-D, zero-initialized residual branches, stochastic depth).

The blocks are small functions over standard Keras layers (`keras_resvit.models.resnet_blocks`);
`build_resnet` validates its arguments once and adds the input, the stem, the stages and the
head. Layer names are stable and hierarchical (`stage2_block1_conv1`,
`stage2_block1_shortcut_conv`, `predictions`) because weight converters, Grad-CAM and users
address layers by name.
"""

import math

import keras

from keras_resvit.base.model_files import deep_graph
from keras_resvit.base.validation import check_bool, check_choice, check_rate, numpy_hint
from keras_resvit.models.common import (
    check_head_arguments,
    check_input_shape,
    classifier_head,
    image_inputs,
    pooled_features,
    with_dtype,
)
from keras_resvit.models.resnet_blocks import BlockConfig, norm_relu, resnet_stages, resnet_stem

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
# The pre-activation paper's CIFAR nets of bottlenecks (He et al. 2016, Table 2).
CIFAR_BOTTLENECK_DEPTHS = (164, 1001)
EXPANSION = {"basic": 1, "bottleneck": 4}

STEMS = ("imagenet", "cifar", "deep")
BLOCKS = ("basic", "bottleneck")
VERSIONS = ("v1.5", "v1", "v2")
SHORTCUTS = ("A", "B", "C", "D")
NORMS = ("batch", "group")
DOWNSAMPLES = ("first", "last")


def _stage_plan(depth, stem, block):
    """Returns (block, blocks per stage, base filters) for a depth, or raises ValueError."""
    if not isinstance(depth, int) or isinstance(depth, bool):
        raise ValueError(f"depth={depth!r} must be an int{numpy_hint(depth)}.")
    if stem != "cifar":
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
    fits = {b: depth > 2 and (depth - 2) % (3 * k) == 0 for b, k in LAYERS_PER_BLOCK.items()}
    if block is None:
        # He et al. 2015's 6n+2 nets of basic blocks; the pre-activation paper's ResNet-164
        # and -1001 (He et al. 2016), like any depth only 9n+2 fits, of bottlenecks.
        paper = depth in CIFAR_BOTTLENECK_DEPTHS or not fits["basic"]
        block = "bottleneck" if paper and fits["bottleneck"] else "basic"
    per_stage = 3 * LAYERS_PER_BLOCK[block]
    n, rest = divmod(depth - 2, per_stage)
    if rest or n < 1:
        rule = f"{per_stage}n+2"
        valid = ", ".join(str(per_stage * k + 2) for k in (1, 2, 3, 5, 9, 18))
        other = "bottleneck" if block == "basic" else "basic"
        hint = f"; or pass block={other!r}" if fits[other] else ""
        raise ValueError(
            f"depth={depth} is not a CIFAR ResNet depth for {block!r} blocks: it must be "
            f"{rule} with n >= 1 (e.g. {valid}){hint}."
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
        raise ValueError(
            f"width={width!r} must be a positive number (e.g. 1, 2, 3, 4){numpy_hint(width)}."
        )
    if se_ratio is not None and (
        not isinstance(se_ratio, (int, float))
        or isinstance(se_ratio, bool)
        or not 0 < se_ratio <= 1
    ):
        raise ValueError(
            f"se_ratio={se_ratio!r} must be in (0, 1], e.g. 1/16, or None{numpy_hint(se_ratio)}."
        )


def _check_residual_options(plain, version, weight_standardization, zero_init_residual, drop_path):
    """Validates the options that act on the residual branches."""
    check_bool("zero_init_residual", zero_init_residual)
    check_rate("drop_path", drop_path)
    if plain and (zero_init_residual or drop_path):
        argument = "zero_init_residual=True" if zero_init_residual else f"drop_path={drop_path!r}"
        raise ValueError(
            f"{argument} has no meaning with plain=True: a plain net has no residual branch "
            "(its blocks would output zeros or be dropped whole)."
        )
    if zero_init_residual and version == "v2" and weight_standardization:
        # A pre-activation branch ends in its convolution, which zero_init_residual zeroes; a
        # standardized kernel of zeros has no variance to standardize by.
        raise ValueError(
            "zero_init_residual=True with version='v2' and weight_standardization=True is not "
            "valid: the branch ends in a weight-standardized conv, whose zero kernel cannot be "
            "standardized; use version='v1.5' or weight_standardization=False."
        )


def _resnet_body(x, stem, block, blocks_per_stage, filters, cfg, drop_path):
    """Stem, stages and, for pre-activation nets, the final norm-ReLU."""
    x = resnet_stem(x, stem, filters[0], cfg)
    x = resnet_stages(x, block, blocks_per_stage, filters, cfg, drop_path=drop_path)
    if cfg.version == "v2":
        x = norm_relu(x, "post", cfg)
    return x


@with_dtype
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
    zero_init_residual: bool = False,
    drop_path: float = 0.0,
    name: str | None = None,
) -> keras.Model:
    """Builds a ResNet as a Keras functional model that takes raw 0-255 pixels.

    Args:
        depth: ImageNet nets: 18, 34 (basic blocks), 50, 101, 152, 200 (bottleneck). CIFAR nets
            (`stem="cifar"`): 6n+2 with basic blocks (20, 32, 44, 56, 110, 1202) or 9n+2 with
            bottleneck blocks (164, 1001 as in the pre-activation paper: these two, and a depth
            only 9n+2 fits, take bottlenecks unless `block` says otherwise).
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
        stem: "imagenet" (7x7/2 conv + 3x3/2 max pool, 4 stages), "deep" (three 3x3 convs,
            the first of stride 2, of half, half and all the first stage's width, then the
            max pool: ResNet-C of He et al. 2019, "Bag of Tricks", timm's `resnet50d` stem) or
            "cifar" (3x3 conv, 3 stages of 16/32/64 filters).
        block: "basic" or "bottleneck"; default from the depth.
        version: "v1.5" (stride on the bottleneck's 3x3, torchvision/timm), "v1" (stride on
            its first 1x1: the paper and keras.applications) or "v2" (pre-activation).
        shortcut: "A" (zero-padding, parameter-free), "B" (projection when the shape
            changes), "C" (all projections) or "D" (where the shape changes, a 2x2 average
            pool of the block's stride, then a stride-1 projection: ResNet-D of He et al.
            2019, timm's `avg_down`; the same parameters as "B"); default "A" for CIFAR nets,
            "B" otherwise.
        plain: remove every shortcut (the paper's plain baselines).
        width: multiplier on every stage's filters (BiT's x1, x2, x3, x4).
        se_ratio: squeeze-and-excitation reduction as a fraction (1/16 in SE-ResNet); None
            for none.
        norm: "batch" (BatchNorm) or "group" (GroupNorm, 32 groups, as in BiT; a layer of
            channels 32 does not divide takes gcd(32, channels) groups: 16 on a CIFAR net's 16
            channels, 1 (a LayerNorm) on an odd count that a fractional `width` gives).
        weight_standardization: standardize every conv kernel (BiT).
        downsample: "first" (each stage after the first starts with a stride-2 block: the
            paper) or "last" (each stage but the last ends with one, its identity shortcut
            subsampled with shortcuts A and B, projected with C and D: keras.applications'
            ResNetV2 layout, for its weights).
        stem_bias: give the stem conv a bias (keras.applications' ResNetV2 has one; it cannot
            be folded into a later BatchNorm because the max-pool's zero padding follows it).
        zero_init_residual: start every residual branch at zero, so each block starts as its
            shortcut (Goyal et al. 2017, "Accurate, Large Minibatch SGD"): the
            scale (gamma) of the branch's last normalization starts at 0, as torchvision's
            `zero_init_residual` and timm's `zero_init_last` do. A pre-activation (v2) branch
            ends in its last convolution, whose kernel starts at 0 instead (timm's ResNetV2).
        drop_path: stochastic depth (Huang et al. 2016): the largest rate at which a block's
            residual branch is dropped per example in training, reached at the last block;
            block `i` of `n` gets `drop_path * i / (n - 1)` (timm's linear rule). Inference
            is unchanged.
        dtype: the layers' Keras dtype policy: None (the global one), "float32",
            "mixed_bfloat16" / "mixed_float16" (float32 weights, 16-bit computations; the
            classifier's outputs stay float32) or "bfloat16" / "float16" (16-bit weights), or
            a `keras.DTypePolicy` of one; saved with the model.
        name: model name; default: the registry name of these arguments ("resnet50v2",
            "bit_r50x1", "resnet20"), "_x{width}" added for another width (`resnet_name`).

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: for an invalid argument; the message names it and the valid values.

    Example:
    >>> import keras_resvit as kr
    >>> model = kr.build_resnet(20, stem="cifar")
    >>> model.output_shape
    (None, 10)
    >>> model = kr.build_resnet(20, stem="cifar", shortcut="D", zero_init_residual=True,
    ...                         drop_path=0.1)
    >>> model.get_layer("stage3_block3_drop_path").rate
    0.1
    """
    check_choice("stem", stem, STEMS)
    check_choice("block", block, (None, *BLOCKS))
    check_choice("version", version, VERSIONS)
    check_choice("shortcut", shortcut, (None, *SHORTCUTS))
    check_choice("norm", norm, NORMS)
    check_choice("downsample", downsample, DOWNSAMPLES)
    block, blocks_per_stage, base_filters = _stage_plan(depth, stem, block)
    _check_options(plain, shortcut, width, se_ratio, weight_standardization, stem_bias)
    _check_residual_options(plain, version, weight_standardization, zero_init_residual, drop_path)
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
        zero_init_residual=zero_init_residual,
    )
    if base_filters[0] * width < 1:
        raise ValueError(
            f"width={width!r} leaves the first stage {base_filters[0] * width:.2g} filters, fewer "
            f"than one; pass width >= {1 / base_filters[0]:.4g} (1/{base_filters[0]})."
        )
    inputs, x = image_inputs(input_shape, preprocessing)
    filters = [max(1, round(f * width)) for f in base_filters]
    x = _resnet_body(x, stem, block, blocks_per_stage, filters, cfg, drop_path)
    if include_top:
        x = classifier_head(x, num_classes, pooling, classifier_activation)
    else:
        x = pooled_features(x, pooling)
    name = name or resnet_name(depth, stem, cfg, width)
    with deep_graph(recursion_limit=30 * sum(blocks_per_stage)):
        return keras.Model(inputs, x, name=name)


def resnet_name(depth, stem, cfg, width) -> str:
    """The registry's name of a ResNet of these arguments ("resnet50v2", "se_resnet50",
    "resnet50d", "bit_r50x1", "plain20"), with "_x{width}" where no registry name has its
    width: a model is named by what it is, whichever name or arguments built it."""
    v2, times = cfg.version == "v2", f"{width:g}".replace(".", "_")  # "0_5": no dot in names
    if v2 and cfg.norm == "group" and cfg.weight_standardization and not cfg.plain:
        return f"bit_r{depth}x{times}"
    name = f"{'plain' if cfg.plain else 'resnet'}{depth}"
    name += "d" if stem == "deep" and cfg.shortcut == "D" else ""
    name += cfg.version if cfg.version in ("v1", "v2") else ""  # "v1.5": the default
    name = f"se_{name}" if cfg.se_ratio else name
    return name if width == 1 else f"{name}_x{times}"
