"""Intermediate features of every family, found by the names the builders give their layers.

The one place that knows which layers hold a model's features, used by Grad-CAM, attention
rollout and few-shot evaluation, and by users who want a backbone for detection or
segmentation, or features to probe:

- ResNets (every version, CIFAR nets, BiT, SE; the hybrid's backbone): each residual block ends
  in `stage{s}_block{b}_out` (v1, v1.5: the ReLU after the addition) or `stage{s}_block{b}_add`
  (pre-activation nets, whose blocks end in the addition); the last feature map of a
  pre-activation net is its closing norm-ReLU, `post_relu`. `feature_pyramid` gives each
  stage's last output by its stride, as keras-hub's `pyramid_outputs` ("P2": stride 4, ...
  "P5": stride 32 for ImageNet nets); the strides are the layers' (`stem_*` and each block's
  strided conv or pool), so they hold for any input size.
- ViTs (and the hybrid's encoder): encoder block `i` (from 1) ends in
  `encoder_block{i}_mlp_add`, all tokens: the class token (if any), the register tokens (if
  any, `num_registers`), then the patch tokens row by row, as timm's `forward_intermediates`
  with its prefix tokens; `attention_layers` gives each block's LayerNorm and attention.
- Every classifier: `representation_model`, the classifier's input (pooled features).

>>> from keras_resvit.models.features import feature_pyramid, intermediate_model
>>> import numpy as np
>>> import keras_resvit as kr
>>> pyramid = feature_pyramid(kr.create_model("resnet20"))
>>> {key: tuple(x.shape) for key, x in pyramid(np.zeros((1, 32, 32, 3))).items()}
{'P0': (1, 32, 32, 16), 'P1': (1, 16, 16, 32), 'P2': (1, 8, 8, 64)}
>>> vit = kr.build_vit("Ti/16", image_size=32, num_classes=10)
>>> tokens = intermediate_model(vit, ["encoder_block6", "encoder_block12"])
>>> {key: tuple(x.shape) for key, x in tokens(np.zeros((2, 32, 32, 3))).items()}
{'encoder_block6': (2, 5, 192), 'encoder_block12': (2, 5, 192)}
"""

import re
from collections.abc import Iterable

import keras

from keras_resvit.base.validation import check_model

RESNET_BLOCK = re.compile(r"stage(\d+)_block(\d+)_(out|add)")
BLOCK_LAYER = re.compile(r"(stage\d+_block\d+)_")
VIT_BLOCK = re.compile(r"encoder_block(\d+)_mlp_add")
ATTENTION = re.compile(r"encoder_block(\d+)_attention")
PRE_ACTIVATION_OUTPUT = "post_relu"


def _check_graph(model):
    """`model` must be a Keras model with a graph of layer calls to read features from."""
    check_model("model", model)
    if not hasattr(model, "input_shape"):
        raise ValueError(
            f"model={model.name!r} has no defined input (an unbuilt Sequential or a subclassed "
            "model), so no features can be read from its layers; pass a functional model "
            "(e.g. kr.create_model(name)) or a Sequential that starts with a keras.Input."
        )


def _resnet_blocks(model):
    """{"stage{s}_block{b}": layer name} of the residual blocks, in order."""
    found = {}
    for layer in model.layers:
        match = RESNET_BLOCK.fullmatch(layer.name)
        if match:
            key = (int(match.group(1)), int(match.group(2)))
            # A v1 block has both: its output is the ReLU after the addition.
            if key not in found or match.group(3) == "out":
                found[key] = layer.name
    return {f"stage{s}_block{b}": found[s, b] for s, b in sorted(found)}


def _vit_blocks(model):
    found = sorted(
        (int(match.group(1)), layer.name)
        for layer in model.layers
        if (match := VIT_BLOCK.fullmatch(layer.name))
    )
    return {f"encoder_block{i}": name for i, name in found}


def feature_layers(model: keras.Model) -> dict:
    """The layers whose outputs are `model`'s intermediate features, in order: residual blocks
    (`"stage{s}_block{b}"`) and encoder blocks (`"encoder_block{i}"`) -> layer names.

    Raises:
        ValueError: `model` is not a Keras model with a defined input, or has neither kind of
            block.
    """
    _check_graph(model)
    layers = {**_resnet_blocks(model), **_vit_blocks(model)}
    if not layers:
        raise ValueError(
            f"model={model.name!r} has no ResNet or ViT blocks (layers named "
            "stage{s}_block{b}_out or encoder_block{i}_mlp_add); build it with kr.build_resnet, "
            "kr.build_vit or kr.create_model."
        )
    return layers


def intermediate_model(model: keras.Model, features: list | None = None) -> keras.Model:
    """A model from `model`'s input to a dict of intermediate features, sharing its layers.

    Args:
        model: a ResNet, ViT or hybrid of this package (built or loaded).
        features: keys of `feature_layers(model)`, e.g. `["stage4_block3"]` or
            `["encoder_block6", "encoder_block12"]` (a list, or any other iterable of names);
            default all of them.

    Returns:
        A `keras.Model` whose output is a dict: key -> (N, H, W, C) feature maps of residual
        blocks, (N, tokens, width) token sequences of encoder blocks (class token, register
        tokens, then the patches row by row; only the final output drops the registers).

    Raises:
        ValueError: `features` is not a non-empty iterable of names (a single name is not: pass
            `[name]`), or names a key that `model` does not have (the valid ones are named).
    """
    layers = feature_layers(model)
    features = list(layers) if features is None else _names(features, layers)
    unknown = [key for key in features if key not in layers]
    if unknown:
        raise ValueError(
            f"features={unknown!r} are not features of model {model.name!r}; valid: "
            f"{_abbreviated(list(layers))}."
        )
    outputs = {key: model.get_layer(layers[key]).output for key in features}
    return keras.Model(model.input, outputs, name=f"{model.name}_intermediates")


def _names(features, layers):
    """`features` as a list, read once (a generator can be read only once), or a ValueError."""
    names = None
    if isinstance(features, Iterable) and not isinstance(features, str):
        names = list(features)
    if not names or not all(isinstance(name, str) for name in names):
        example = [features] if isinstance(features, str) else list(layers)[-1:]
        raise ValueError(
            f"features={features if names is None else names!r} must be a non-empty list of "
            f"feature names, e.g. {example!r}; valid: {_abbreviated(list(layers))}."
        )
    return names


def _abbreviated(names):
    return names if len(names) <= 6 else [*names[:3], "...", *names[-3:]]


def stage_outputs(model: keras.Model) -> dict:
    """{"stage{s}": layer name} of each ResNet stage's last block (of a pre-activation net's
    last stage: its closing norm-ReLU, `post_relu`)."""
    blocks = _resnet_blocks(model)
    stages = {}
    for key, name in blocks.items():
        stages[key.split("_")[0]] = name  # the last block of a stage wins
    if stages and PRE_ACTIVATION_OUTPUT in [layer.name for layer in model.layers]:
        stages[list(stages)[-1]] = PRE_ACTIVATION_OUTPUT
    return stages


def _block_strides(model):
    """{"stage{s}_block{b}": its output's stride}: the product of the stem's strides (its layers
    run one after the other) and of each block's largest so far (a strided shortcut runs beside
    the block's strided conv, not after it)."""
    stride, largest = 1, {}
    for layer in model.layers:
        strides = getattr(layer, "strides", None)  # convolutions and poolings
        layer_stride = strides[0] if strides else 1
        if layer.name.startswith("stem_"):
            stride *= layer_stride
        elif match := BLOCK_LAYER.match(layer.name):
            largest[match.group(1)] = max(largest.get(match.group(1), 1), layer_stride)
    strides = {}
    for key in _resnet_blocks(model):
        stride *= largest[key]
        strides[key] = stride
    return strides


def feature_pyramid(model: keras.Model) -> keras.Model:
    """A ResNet's stage outputs keyed by their stride, as keras-hub's `pyramid_outputs`: "P{k}"
    is the feature map of stride 2**k ("P2" ... "P5" for an ImageNet ResNet, "P0" ... "P2" for
    a CIFAR one), for detection and segmentation heads.

    The strides are the layers' (not ratios of map sizes, which an odd input size rounds: a
    40x40 ResNet-18 has 10, 5, 3 and 2 pixel maps), so every input size, fixed or not, gives
    each stage its level. Each level is the last residual block at its stride, as FPN's C_k
    (Lin et al. 2017, Section 3: "the output of the last layer of each stage"): a stage's
    output, or, in nets whose stride-2 block ends a stage (`downsample="last"`,
    keras.applications' ResNetV2), the block before it.

    Raises:
        ValueError: `model` is not a Keras model with a defined input, or has no ResNet
            stages.

    Example:
    >>> from keras_resvit.models.features import feature_pyramid
    >>> import keras_resvit as kr
    >>> model = kr.build_resnet(18, input_shape=(40, 40, 3), num_classes=3)
    >>> {key: x.shape[1] for key, x in feature_pyramid(model).output.items()}
    {'P2': 10, 'P3': 5, 'P4': 3, 'P5': 2}
    """
    _check_graph(model)
    blocks = _resnet_blocks(model)
    if not blocks:
        raise ValueError(
            f"model={model.name!r} has no ResNet stages; feature_pyramid needs a ResNet (or a "
            "hybrid's backbone). For ViT tokens use intermediate_model."
        )
    levels = {}
    for key, stride in _block_strides(model).items():
        levels[f"P{int(stride).bit_length() - 1}"] = blocks[key]  # the last block at a stride wins
    if PRE_ACTIVATION_OUTPUT in [layer.name for layer in model.layers]:
        levels[list(levels)[-1]] = PRE_ACTIVATION_OUTPUT
    outputs = {key: model.get_layer(name).output for key, name in levels.items()}
    return keras.Model(model.input, outputs, name=f"{model.name}_pyramid")


def last_feature_map(model: keras.Model) -> str | None:
    """The name of a ResNet's last (N, H, W, C) feature map, the one Grad-CAM explains by
    default; None for models without residual blocks."""
    stages = stage_outputs(model)
    return list(stages.values())[-1] if stages else None


def attention_layers(model: keras.Model) -> list:
    """[(block's pre-attention LayerNorm, its attention layer)] of a ViT, first block first."""
    found = sorted(
        (int(match.group(1)), layer)
        for layer in model.layers
        if isinstance(layer, keras.layers.MultiHeadAttention)
        and (match := ATTENTION.fullmatch(layer.name))
    )
    return [(model.get_layer(f"encoder_block{i}_norm1"), layer) for i, layer in found]


def representation_model(model: keras.Model, layer: str | None = None) -> keras.Model:
    """The frozen representation of a model: its classifier's input, or a named layer's output.

    Args:
        model: a functional model, e.g. from `kr.create_model` or `kr.load_model`.
        layer: name of the layer whose output is the representation; default the input of the
            "predictions" classifier (ResNet average pool, ViT class token or pre-logits, VGG
            fc2), or the model's output when it has no classifier.

    Returns:
        A `keras.Model` sharing `model`'s layers.

    Raises:
        ValueError: `model` is not a Keras model, has no defined input (an unbuilt Sequential,
            a subclassed model) or has no layer named `layer`.
    """
    _check_graph(model)
    names = [entry.name for entry in model.layers]
    if layer is not None:
        if not isinstance(layer, str) or layer not in names:
            raise ValueError(
                f"layer={layer!r} is not a layer of model {model.name!r}; its last layers are "
                f"{names[-4:]}."
            )
        output = model.get_layer(layer).output
    elif "predictions" in names:
        output = model.get_layer("predictions").input
    else:
        output = model.output
    return keras.Model(model.inputs, output, name=f"{model.name}_features")
