"""The baselines the ResNet and ViT papers compare with: VGG, AlexNet and EfficientNetV2.

VGG (Simonyan & Zisserman 2015) and AlexNet (Krizhevsky et al. 2012, in torchvision's
single-tower layout or the paper's two-tower one) are built here from standard layers, with
keras.applications' layer names (`block1_conv1`, `fc1`, `fc2`, `predictions`) so that weights
convert by name.
EfficientNetV2 (Tan & Le 2021) comes from keras.applications with `weights=None`, behind the
same arguments. Every model takes raw 0-255 pixels and normalizes inside.
"""

import keras

from keras_resvit.base.validation import check_choice, check_rate
from keras_resvit.layers.baseline_layers import LocalResponseNormalization
from keras_resvit.layers.normalization import preprocessing_layers
from keras_resvit.layers.resnet_layers import SlicedMaxPooling2D
from keras_resvit.models.common import (
    check_head_arguments,
    check_input_shape,
    image_inputs,
    pooled_features,
    predictions_layer,
    with_dtype,
)

# Simonyan & Zisserman, Table 1: convolutions per block (configurations A, B, D, E); the
# blocks have 64, 128, 256, 512 and 512 filters, each followed by a 2x2 max-pool.
VGG_DEPTHS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
VGG_FILTERS = (64, 128, 256, 512, 512)
# The width of both hidden fully connected layers (VGG and AlexNet).
FC_UNITS = 4096
# torchvision's AlexNet: (filters, kernel, stride, max-pool after); conv1 pads 2 pixels, the
# others pad "same". The last max-pool is followed by an adaptive 6x6 average pool.
ALEXNET_CONVS = (
    (64, 11, 4, True),
    (192, 5, 1, True),
    (384, 3, 1, False),
    (256, 3, 1, False),
    (256, 3, 1, True),
)
ALEXNET_POOL = (6, 6)
# The smallest inputs that leave a 1x1 map for the last max-pool, and (with the classifier) a
# map of at least 6x6 for the adaptive pool, which averages but never upsamples.
ALEXNET_MIN_SIZE = 63
ALEXNET_MIN_SIZE_WITH_TOP = 223
# Krizhevsky et al. (2012), Section 3.5 and Figure 2: (filters, kernel, stride, groups,
# response-normalized and max-pooled after). The two groups are the two GPUs' towers: conv2,
# conv4 and conv5 see only their own tower's maps; conv3 and the fully connected layers see
# both. conv1's kernels are split between the GPUs too, but each half sees the whole image.
ALEXNET_PAPER_CONVS = (
    (96, 11, 4, 1, True),
    (256, 5, 1, 2, True),
    (384, 3, 1, 1, False),
    (384, 3, 1, 2, False),
    (256, 3, 1, 2, False),
)
# Section 3.3: local response normalization with k = 2, n = 5, alpha = 1e-4, beta = 0.75, here
# over all of a layer's channels at once, as in Caffe's single-GPU reference AlexNet (on two
# GPUs each tower normalized its own half).
ALEXNET_LRN = {"size": 5, "bias": 2.0, "alpha": 1e-4, "beta": 0.75}
# The paper says 224x224 inputs, but its 55x55 first maps (and so its 6x6x256 last ones and
# 60,965,224 parameters) need 227: (227 - 11) / 4 + 1 = 55.
ALEXNET_PAPER_SIZE = 227
# The smallest input that leaves a 1x1 map after pool5.
ALEXNET_PAPER_MIN_SIZE = 67
ALEXNET_LAYOUTS = ("torchvision", "paper")
EFFICIENTNETV2 = {
    "s": keras.applications.EfficientNetV2S,
    "m": keras.applications.EfficientNetV2M,
    "l": keras.applications.EfficientNetV2L,
}
# keras.applications' default resolutions: the paper's evaluation sizes (Table 7).
EFFICIENTNETV2_SIZES = {"s": 384, "m": 480, "l": 480}


def _check_input_shape(input_shape, min_size, preprocessing, include_top):
    flattens = "the classifier flattens the feature map (include_top=True)"
    fixed_reason = flattens if include_top else ""
    check_input_shape(input_shape, min_size, preprocessing, fixed_reason=fixed_reason)


def _check_dropout(dropout, include_top):
    """The head's dropout rate, refused when `include_top=False` leaves out the fully
    connected layers it would act in (the paper's 0.5, the default, passes)."""
    check_rate("dropout", dropout)
    if not include_top and dropout != 0.5:
        raise ValueError(
            f"dropout={dropout} acts in the fully connected head, which include_top=False "
            "leaves out; drop the argument, or build with include_top=True."
        )


def _fully_connected_head(x, num_classes, classifier_activation, dropout):
    """Flatten, two ReLU layers of 4096 units with dropout, and the classifier."""
    x = keras.layers.Flatten(name="flatten")(x)
    for i in (1, 2):
        x = keras.layers.Dense(FC_UNITS, activation="relu", name=f"fc{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
    return predictions_layer(num_classes, classifier_activation)(x)


@with_dtype
def build_vgg(
    depth: int = 16,
    *,
    input_shape: tuple | None = None,
    num_classes: int = 1000,
    include_top: bool = True,
    pooling: str | None = None,
    classifier_activation: str | None = "softmax",
    preprocessing: str | None = "caffe",
    dropout: float = 0.5,
    name: str | None = None,
) -> keras.Model:
    """Builds a VGG net (Simonyan & Zisserman 2015) that takes raw 0-255 pixels.

    Layer names are keras.applications' (`block1_conv1` ... `block5_pool`, `flatten`, `fc1`,
    `fc2`, `predictions`), so its VGG weights load by name; dropout layers carry no weights.

    Args:
        depth: 11, 13, 16 or 19 weight layers (the paper's configurations A, B, D, E).
        input_shape: (height, width, channels), default (224, 224, 3); height and width at
            least 32 (five 2x2 max-pools), fixed when `include_top`.
        num_classes: classifier size.
        include_top: add the fully connected head (flatten, fc1, fc2, predictions). Without it
            the model returns the last feature map, or its pooled vector with `pooling`.
        pooling: None, "avg" or "max": global pooling of the features when not `include_top`.
        classifier_activation: activation of the classifier; None returns logits.
        preprocessing: normalization preset inside the model; "caffe" (BGR, ImageNet mean
            subtracted) is what keras.applications' VGG weights expect.
        dropout: dropout after fc1 and fc2 (0.5 in the paper).
        dtype: the layers' Keras dtype policy: None (the global one), "float32",
            "mixed_bfloat16" / "mixed_float16" (float32 weights, 16-bit computations; the
            classifier's outputs stay float32) or "bfloat16" / "float16" (16-bit weights), or
            a `keras.DTypePolicy` of one; saved with the model.
        name: model name; default like "vgg16".

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: for an invalid argument; the message names it and the valid values.

    Example:
    >>> import keras_resvit as kr
    >>> kr.build_vgg(16).count_params()
    138357544
    """
    check_choice("depth", depth, tuple(VGG_DEPTHS))
    check_head_arguments(include_top, num_classes, pooling, classifier_activation, top_pools=False)
    preprocessing_layers(preprocessing)
    _check_dropout(dropout, include_top)
    input_shape = (224, 224, 3) if input_shape is None else input_shape
    _check_input_shape(input_shape, 32, preprocessing, include_top)
    inputs, x = image_inputs(input_shape, preprocessing)
    for block, (convs, filters) in enumerate(
        zip(VGG_DEPTHS[depth], VGG_FILTERS, strict=True), start=1
    ):
        for i in range(1, convs + 1):
            x = keras.layers.Conv2D(
                filters, 3, padding="same", activation="relu", name=f"block{block}_conv{i}"
            )(x)
        x = SlicedMaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
    if include_top:
        x = _fully_connected_head(x, num_classes, classifier_activation, dropout)
    else:
        x = pooled_features(x, pooling)
    return keras.Model(inputs, x, name=name or f"vgg{depth}")


def _alexnet_torchvision(x, include_top, num_classes, classifier_activation, dropout):
    for i, (filters, kernel, stride, pool) in enumerate(ALEXNET_CONVS, start=1):
        if stride > 1:
            # torchvision pads conv1 by 2 on every side; "same" would pad asymmetrically.
            x = keras.layers.ZeroPadding2D(2, name=f"conv{i}_pad")(x)
        padding = "valid" if stride > 1 else "same"
        x = keras.layers.Conv2D(
            filters, kernel, strides=stride, padding=padding, activation="relu", name=f"conv{i}"
        )(x)
        if pool:
            x = SlicedMaxPooling2D(3, strides=2, name=f"pool{i}")(x)
    if not include_top:
        return x
    x = keras.layers.AdaptiveAveragePooling2D(ALEXNET_POOL, name="adaptive_pool")(x)
    # torchvision puts dropout before each hidden fully connected layer.
    x = keras.layers.Flatten(name="flatten")(x)
    for i in (1, 2):
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
        x = keras.layers.Dense(FC_UNITS, activation="relu", name=f"fc{i}")(x)
    return predictions_layer(num_classes, classifier_activation)(x)


def _alexnet_paper(x, include_top, num_classes, classifier_activation, dropout):
    for i, (filters, kernel, stride, groups, normalize) in enumerate(ALEXNET_PAPER_CONVS, 1):
        x = keras.layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding="valid" if stride > 1 else "same",
            groups=groups,
            activation="relu",
            name=f"conv{i}",
        )(x)
        if normalize:
            x = LocalResponseNormalization(**ALEXNET_LRN, name=f"norm{i}")(x)
        if normalize or i == len(ALEXNET_PAPER_CONVS):
            # Section 3.4: overlapping pooling, 3x3 windows at stride 2.
            x = SlicedMaxPooling2D(3, strides=2, name=f"pool{i}")(x)
    if not include_top:
        return x
    # Section 4.2: dropout on the outputs of the two hidden fully connected layers.
    return _fully_connected_head(x, num_classes, classifier_activation, dropout)


@with_dtype
def build_alexnet(
    *,
    layout: str = "torchvision",
    input_shape: tuple | None = None,
    num_classes: int = 1000,
    include_top: bool = True,
    pooling: str | None = None,
    classifier_activation: str | None = "softmax",
    preprocessing: str | None = "imagenet",
    dropout: float = 0.5,
    name: str | None = None,
) -> keras.Model:
    """Builds AlexNet (Krizhevsky et al. 2012), in torchvision's layout or the paper's.

    "torchvision": one tower of five convolutions of 64, 192, 384, 256 and 256 filters
    (11x11/4, 5x5, then 3x3), max-pools of 3x3/2 after the first, second and fifth, an
    adaptive 6x6 average pool (the identity at 224 px), then dropout, fc1 (4096), dropout, fc2
    (4096) and the classifier: 61,100,840 parameters for 1000 classes. Layers are named
    `conv1`...`conv5`, `pool1`, `pool2`, `pool5`, `adaptive_pool`, `flatten`, `fc1`, `fc2`,
    `predictions`.

    "paper": the published two-GPU net on 227x227 images. conv1 96 11x11/4, then local
    response normalization (`norm1`) and an overlapping 3x3/2 max-pool; conv2 256 5x5 in two
    groups (the towers), `norm2`, max-pool; conv3 384 3x3 over both towers; conv4 384 and
    conv5 256 3x3 in two groups; max-pool; fc1 and fc2 of 4096 with dropout after each; the
    classifier: 60,965,224 parameters for 1000 classes. The classifier flattens the last map,
    6x6 at 227 px, so other input sizes change fc1's size.

    Args:
        layout: "torchvision" or "paper".
        input_shape: (height, width, channels); default (224, 224, 3) for "torchvision" and
            (227, 227, 3) for "paper". Height and width at least 63 ("torchvision") or 67
            ("paper"); with `include_top` fixed, and at least 223 for "torchvision" (its
            classifier takes a 6x6 map).
        num_classes: classifier size.
        include_top: add the fully connected head. Without it the model returns the last
            feature map (after `pool5`), or its pooled vector with `pooling`.
        pooling: None, "avg" or "max": global pooling of the features when not `include_top`.
        classifier_activation: activation of the classifier; None returns logits.
        preprocessing: normalization preset inside the model (torchvision's "imagenet"; the
            paper subtracted the mean training image).
        dropout: dropout rate of the two hidden fully connected layers (0.5 in the paper).
        dtype: the layers' Keras dtype policy: None (the global one), "float32",
            "mixed_bfloat16" / "mixed_float16" (float32 weights, 16-bit computations; the
            classifier's outputs stay float32) or "bfloat16" / "float16" (16-bit weights), or
            a `keras.DTypePolicy` of one; saved with the model.
        name: model name; default "alexnet" ("torchvision") or "alexnet_paper".

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: for an invalid argument; the message names it and the valid values.

    Example:
    >>> import keras_resvit as kr
    >>> kr.build_alexnet().count_params()
    61100840
    >>> kr.build_alexnet(layout="paper").count_params()
    60965224
    """
    check_choice("layout", layout, ALEXNET_LAYOUTS)
    check_head_arguments(include_top, num_classes, pooling, classifier_activation, top_pools=False)
    preprocessing_layers(preprocessing)
    _check_dropout(dropout, include_top)
    paper = layout == "paper"
    if input_shape is None:
        input_shape = (ALEXNET_PAPER_SIZE if paper else 224,) * 2 + (3,)
    if paper:
        min_size = ALEXNET_PAPER_MIN_SIZE
    else:
        min_size = ALEXNET_MIN_SIZE_WITH_TOP if include_top else ALEXNET_MIN_SIZE
    _check_input_shape(input_shape, min_size, preprocessing, include_top)
    inputs, x = image_inputs(input_shape, preprocessing)
    features = _alexnet_paper if paper else _alexnet_torchvision
    x = features(x, include_top, num_classes, classifier_activation, dropout)
    if not include_top:
        x = pooled_features(x, pooling)
    return keras.Model(inputs, x, name=name or ("alexnet_paper" if paper else "alexnet"))


@with_dtype
def build_efficientnetv2(
    variant: str = "s",
    *,
    input_shape: tuple | None = None,
    num_classes: int = 1000,
    include_top: bool = True,
    pooling: str | None = None,
    classifier_activation: str | None = "softmax",
    preprocessing: str | None = "auto",
    name: str | None = None,
) -> keras.Model:
    """Builds EfficientNetV2-S, -M or -L (Tan & Le 2021) from keras.applications, untrained.

    The model is keras.applications' own graph (its layer names, `avg_pool`, `top_dropout`,
    `predictions`), flat, with our input named "images" and our model name, so
    `keras_resvit.replace_head`, `count_macs` and the training loop treat it like every model.

    Args:
        variant: "s", "m" or "l".
        input_shape: (height, width, channels); default keras.applications' (and the paper's
            evaluation) size: 384 (s) or 480 (m, l). Height and width at least 32.
        num_classes: classifier size.
        include_top: add pooling, dropout and the classifier.
        pooling: None, "avg" or "max": global pooling of the features when not `include_top`.
        classifier_activation: activation of the classifier; None returns logits.
        preprocessing: "auto" keeps keras.applications' own rescaling layer (raw 0-255 pixels
            are mapped to [-1, 1) by x / 128 - 1, what its ImageNet weights expect); a preset
            of `keras_resvit.layers.normalization` replaces it.
        dtype: the layers' Keras dtype policy: None (the global one), "float32",
            "mixed_bfloat16" / "mixed_float16" (float32 weights, 16-bit computations; the
            classifier's outputs stay float32) or "bfloat16" / "float16" (16-bit weights), or
            a `keras.DTypePolicy` of one; saved with the model.
        name: model name; default like "efficientnetv2_s".

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: for an invalid argument; the message names it and the valid values.

    Example:
    >>> import keras_resvit as kr
    >>> kr.build_efficientnetv2("s", input_shape=(64, 64, 3), num_classes=10).output_shape
    (None, 10)
    """
    check_choice("variant", variant, tuple(EFFICIENTNETV2))
    check_head_arguments(include_top, num_classes, pooling, classifier_activation, top_pools=False)
    own = preprocessing == "auto"
    if not own:
        preprocessing_layers(preprocessing)
    if input_shape is None:
        input_shape = (EFFICIENTNETV2_SIZES[variant],) * 2 + (3,)
    _check_input_shape(input_shape, 32, None if own else preprocessing, include_top=False)
    inputs, x = image_inputs(input_shape, None if own else preprocessing)
    model = EFFICIENTNETV2[variant](
        include_top=include_top,
        weights=None,
        input_tensor=x,
        pooling=pooling,
        classes=num_classes,
        classifier_activation=classifier_activation,
        include_preprocessing=own,
        name=f"efficientnetv2-{variant}",
    )
    outputs = model.output
    if include_top and keras.config.dtype_policy().name.startswith("mixed"):
        # keras.applications' classifier computes in the policy's 16 bits; ours in float32,
        # as every builder's here (same layer, name and initializers).
        head = model.get_layer("predictions")
        outputs = keras.layers.Dense.from_config(head.get_config() | {"dtype": "float32"})(
            head.input
        )
    return keras.Model(inputs, outputs, name=name or f"efficientnetv2_{variant}")
