"""The ResNet building blocks: stems, residual blocks and stages over standard Keras layers.

Blocks are small functions `(x, filters, stride, name, cfg) -> x`; `resnet_stem` and
`resnet_stages` assemble them, and `keras_resvit.models.resnet.build_resnet` adds the input and
the head. Layer names are stable and hierarchical (`stage2_block1_conv1`,
`stage2_block1_shortcut_conv`) because weight converters, Grad-CAM and users address layers by
name.
"""

import dataclasses
import math
from dataclasses import dataclass

import keras

from keras_resvit.layers.resnet_layers import (
    FusedBatchNormalization,
    PointwiseConv2D,
    SlicedMaxPooling2D,
    StdConv2D,
    ZeroPadShortcut,
)
from keras_resvit.layers.squeeze_excite import squeeze_excite
from keras_resvit.layers.vit_layers import DropPath

# torchvision's BatchNorm defaults (Keras' momentum 0.9 == PyTorch's 0.1).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
GN_GROUPS = 32


@dataclass(frozen=True)
class BlockConfig:
    """Options every block needs, resolved once by `build_resnet`.

    `drop_path` is the stochastic-depth rate of the block at hand (`resnet_stages` sets each
    block's from the net's largest); `zero_init_residual` starts every residual branch at zero.
    """

    version: str
    shortcut: str
    plain: bool
    se_ratio: float | None
    norm: str
    weight_standardization: bool
    downsample: str = "first"
    stem_bias: bool = False
    zero_init_residual: bool = False
    drop_path: float = 0.0


def _conv(x, filters, kernel, stride, name, cfg, use_bias=False, zero=False):
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
    initializer = keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")
    return conv(
        filters,
        kernel,
        strides=stride,
        padding=padding,
        use_bias=use_bias,
        kernel_initializer="zeros" if zero else initializer,
        name=name,
    )(x)


def _norm(x, name, cfg, zero=False):
    gamma = "zeros" if zero else "ones"
    if cfg.norm == "group":
        groups = math.gcd(GN_GROUPS, x.shape[-1])
        return keras.layers.GroupNormalization(
            groups, epsilon=BN_EPSILON, gamma_initializer=gamma, name=name
        )(x)
    return FusedBatchNormalization(
        epsilon=BN_EPSILON, momentum=BN_MOMENTUM, gamma_initializer=gamma, name=name
    )(x)


def norm_relu(x, name, cfg, suffix=""):
    """The block's normalization then ReLU, named `{name}_bn{suffix}` and `{name}_relu{suffix}`."""
    x = _norm(x, f"{name}_bn{suffix}", cfg)
    return keras.layers.ReLU(name=f"{name}_relu{suffix}")(x)


def _shortcut(x, preact, filters, stride, name, cfg):
    """The identity path of a block; `preact` is the pre-activated input (v2) or `x` (v1)."""
    changes_shape = stride != 1 or x.shape[-1] != filters
    subsampled = stride != 1 and x.shape[-1] == filters and cfg.shortcut in ("A", "B")
    if cfg.downsample == "last" and subsampled:
        # keras.applications' ResNetV2 subsamples the identity (a 1x1 strided max-pool);
        # options C and D project (D after its average pool) wherever the size changes.
        return SlicedMaxPooling2D(1, strides=stride, name=f"{name}_shortcut_pool")(x)
    if cfg.shortcut == "A" and changes_shape:
        return ZeroPadShortcut(filters, stride, name=f"{name}_shortcut_pad")(x)
    if cfg.shortcut == "D" and changes_shape:
        # He et al. (2019), "Bag of Tricks", ResNet-D: a strided 1x1 projection reads a quarter
        # of the pixels; a 2x2 average pool first, then a stride-1 projection, reads them all.
        # "same" padding is timm's avg_down (ceil_mode=True, count_include_pad=False): an odd
        # size keeps its last row and column, averaged over the pixels the window holds.
        if stride > 1:
            preact = keras.layers.AveragePooling2D(
                2, strides=stride, padding="same", name=f"{name}_shortcut_avg_pool"
            )(preact)
        return _projection(preact, filters, 1, name, cfg)
    if cfg.shortcut == "C" or (cfg.shortcut == "B" and changes_shape):
        return _projection(preact, filters, stride, name, cfg)
    return x


def _projection(x, filters, stride, name, cfg):
    s = _conv(x, filters, 1, stride, f"{name}_shortcut_conv", cfg)
    return s if cfg.version == "v2" else _norm(s, f"{name}_shortcut_bn", cfg)


def _merge(x, residual, name, cfg):
    if cfg.se_ratio:
        # Hu et al.: the gates rescale the residual branch before the addition.
        residual = squeeze_excite(residual, cfg.se_ratio, name=name)
    if cfg.drop_path:
        # Stochastic depth (Huang et al. 2016): in training, each example's residual branch
        # is dropped with this block's rate (kept ones scaled up), as timm's ResNets do.
        residual = DropPath(cfg.drop_path, name=f"{name}_drop_path")(residual)
    if not cfg.plain:
        residual = keras.layers.Add(name=f"{name}_add")([x, residual])
    # Pre-activation blocks leave the sum un-activated; the next block's norm-ReLU follows.
    if cfg.version == "v2":
        return residual
    return keras.layers.ReLU(name=f"{name}_out")(residual)


def _branch_end(y, name, cfg):
    """The residual branch's last normalization (v1, v1.5); `zero_init_residual` (Goyal et al.
    2017) starts its scale at zero. A pre-activation branch ends in its convolution, which
    `zero_init_residual` zeroes instead (see `build_resnet`)."""
    if cfg.version == "v2":
        return y
    return _norm(y, name, cfg, zero=cfg.zero_init_residual)


def basic_block(x, filters, stride, name, cfg):
    """Two 3x3 convs (ResNet-18/34 and the CIFAR nets)."""
    preact = norm_relu(x, name, cfg, "0") if cfg.version == "v2" else x
    shortcut = None if cfg.plain else _shortcut(x, preact, filters, stride, name, cfg)
    y = _conv(preact, filters, 3, stride, f"{name}_conv1", cfg)
    y = norm_relu(y, name, cfg, "1")
    zero = cfg.zero_init_residual and cfg.version == "v2"
    y = _conv(y, filters, 3, 1, f"{name}_conv2", cfg, zero=zero)
    return _merge(shortcut, _branch_end(y, f"{name}_bn2", cfg), name, cfg)


def bottleneck_block(x, filters, stride, name, cfg):
    """1x1 reduce, 3x3, 1x1 expand by 4 (ResNet-50/101/152).

    v1 strides the first 1x1 (paper, keras.applications); v1.5 and v2 stride the 3x3.
    """
    preact = norm_relu(x, name, cfg, "0") if cfg.version == "v2" else x
    shortcut = None if cfg.plain else _shortcut(x, preact, filters * 4, stride, name, cfg)
    stride_1x1 = stride if cfg.version == "v1" else 1
    y = _conv(preact, filters, 1, stride_1x1, f"{name}_conv1", cfg)
    y = norm_relu(y, name, cfg, "1")
    y = _conv(y, filters, 3, stride // stride_1x1, f"{name}_conv2", cfg)
    y = norm_relu(y, name, cfg, "2")
    zero = cfg.zero_init_residual and cfg.version == "v2"
    y = _conv(y, filters * 4, 1, 1, f"{name}_conv3", cfg, zero=zero)
    return _merge(shortcut, _branch_end(y, f"{name}_bn3", cfg), name, cfg)


BLOCK_FUNCTIONS = {"basic": basic_block, "bottleneck": bottleneck_block}


def resnet_stem(x, stem, filters, cfg):
    """The ImageNet stem (7x7/2 conv + 3x3/2 max pool), the deep stem (three 3x3 convs + the
    max pool) or the CIFAR stem (one 3x3 conv); pre-activation nets leave the norm-ReLU after
    the last conv to their first block."""
    if stem == "cifar":
        x = _conv(x, filters, 3, 1, "stem_conv", cfg, use_bias=cfg.stem_bias)
    elif stem == "deep":
        # He et al. (2019), ResNet-C: three 3x3 convs, the first strided, in place of the 7x7;
        # half the first stage's width, half, then all of it (timm's resnet50d: 32, 32, 64).
        half = max(1, filters // 2)
        x = _conv(x, half, 3, 2, "stem_conv1", cfg)
        x = norm_relu(x, "stem", cfg, "1")
        x = _conv(x, half, 3, 1, "stem_conv2", cfg)
        x = norm_relu(x, "stem", cfg, "2")
        x = _conv(x, filters, 3, 1, "stem_conv3", cfg, use_bias=cfg.stem_bias)
    else:
        x = _conv(x, filters, 7, 2, "stem_conv", cfg, use_bias=cfg.stem_bias)
    if cfg.version != "v2":
        x = norm_relu(x, "stem", cfg)
    if stem != "cifar":
        x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
        x = SlicedMaxPooling2D(3, strides=2, name="stem_pool")(x)
    return x


def resnet_stages(x, block, blocks_per_stage, filters, cfg, first_stride=1, drop_path=0.0):
    """Stacks the stages; stage `s` starts with a stride-2 block except the first.

    With `cfg.downsample == "last"` the stride-2 moves to the last block of the previous stage
    instead (same total downsampling), as in keras.applications' ResNetV2. `drop_path` is the
    largest stochastic-depth rate: block `i` of `n` gets `drop_path * i / (n - 1)`, from 0 at
    the first block to `drop_path` at the last (timm's linear rule, Huang et al. 2016).
    """
    block_fn = BLOCK_FUNCTIONS[block]
    stages = len(blocks_per_stage)
    total, index = sum(blocks_per_stage), 0
    for s, (num_blocks, f) in enumerate(zip(blocks_per_stage, filters, strict=True), start=1):
        for b in range(1, num_blocks + 1):
            if cfg.downsample == "last":
                stride = 2 if b == num_blocks and s < stages else 1
            else:
                stride = (first_stride if s == 1 else 2) if b == 1 else 1
            rate = drop_path * index / max(total - 1, 1)
            block_cfg = dataclasses.replace(cfg, drop_path=rate)
            x = block_fn(x, f, stride, f"stage{s}_block{b}", block_cfg)
            index += 1
    return x
