"""Intermediate features of every family, found by the names the builders give their layers.

The one place that knows which layers hold a model's features, used by Grad-CAM, attention
rollout and few-shot evaluation, and by users who want a backbone for detection or
segmentation, or features to probe:

- ResNets (every version, CIFAR nets, BiT, SE; the hybrid's backbone): each residual block ends
  in `stage{s}_block{b}_out` (v1, v1.5: the ReLU after the addition) or `stage{s}_block{b}_add`
  (pre-activation nets, whose blocks end in the addition); the last feature map of a
  pre-activation net is its closing norm-ReLU, `post_relu`. `feature_pyramid` gives each
  stage's last output by its stride, as keras-hub's `pyramid_outputs` ("P2": stride 4, ...
  "P5": stride 32 for ImageNet nets).
- ViTs (and the hybrid's encoder): encoder block `i` (from 1) ends in
  `encoder_block{i}_mlp_add`, all tokens: the class token (if any), the register tokens (if
  any, `num_registers`), then the patch tokens row by row, as timm's `forward_intermediates`
  with its prefix tokens; `attention_layers` gives each block's LayerNorm and attention.
- Every classifier: `representation_model`, the classifier's input (pooled features).

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

import math
import re

import keras

from keras_resvit.base.validation import check_model

RESNET_BLOCK = re.compile(r"stage(\d+)_block(\d+)_(out|add)")
VIT_BLOCK = re.compile(r"encoder_block(\d+)_mlp_add")
ATTENTION = re.compile(r"encoder_block(\d+)_attention")
PRE_ACTIVATION_OUTPUT = "post_relu"


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
        ValueError: `model` is not a Keras model, or has neither kind of block.
    """
    check_model("model", model)
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
            `["encoder_block6", "encoder_block12"]`; default all of them.

    Returns:
        A `keras.Model` whose output is a dict: key -> (N, H, W, C) feature maps of residual
        blocks, (N, tokens, width) token sequences of encoder blocks (class token, register
        tokens, then the patches row by row; only the final output drops the registers).

    Raises:
        ValueError: a key that `model` does not have (the valid ones are named).
    """
    layers = feature_layers(model)
    features = list(layers) if features is None else features
    if isinstance(features, str) or not features:
        raise ValueError(f"features={features!r} must be a non-empty list of names.")
    unknown = [key for key in features if key not in layers]
    if unknown:
        raise ValueError(
            f"features={unknown!r} are not features of model {model.name!r}; valid: "
            f"{_abbreviated(list(layers))}."
        )
    outputs = {key: model.get_layer(layers[key]).output for key in features}
    return keras.Model(model.input, outputs, name=f"{model.name}_intermediates")


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


def feature_pyramid(model: keras.Model) -> keras.Model:
    """A ResNet's stage outputs keyed by their stride, as keras-hub's `pyramid_outputs`: "P{k}"
    is the feature map of stride 2**k ("P2" ... "P5" for an ImageNet ResNet, "P0" ... "P2" for
    a CIFAR one), for detection and segmentation heads.

    Raises:
        ValueError: `model` has no ResNet stages, or an input of undefined size.
    """
    check_model("model", model)
    stages = stage_outputs(model)
    if not stages:
        raise ValueError(
            f"model={model.name!r} has no ResNet stages; feature_pyramid needs a ResNet (or a "
            "hybrid's backbone). For ViT tokens use intermediate_model."
        )
    height = model.input_shape[1]
    if height is None:
        raise ValueError(
            f"model={model.name!r} takes images of any size; build it with a fixed input_shape "
            "to name its pyramid levels by stride."
        )
    outputs = {}
    for name in stages.values():
        output = model.get_layer(name).output
        outputs[f"P{round(math.log2(height / output.shape[1]))}"] = output
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
        ValueError: `model` is not a Keras model or has no layer named `layer`.
    """
    check_model("model", model)
    names = [entry.name for entry in model.layers]
    if layer is not None:
        if layer not in names:
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
