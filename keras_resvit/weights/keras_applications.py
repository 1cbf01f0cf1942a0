"""keras.applications ResNet50/101/152 (v1) and ResNet50V2/101V2/152V2 into our ResNets.

keras.applications' convolutions carry biases; ours do not, because a BatchNorm follows them.
A bias `b` before a BatchNorm folds exactly into its moving mean (mean - b). In the V2 nets the
biases of each block's last conv and of its projection shortcut are added to the residual
stream instead; they ride along the identity shortcuts and fold into the next BatchNorm that
reads the stream (the next block's pre-activation, or `post_bn`). Only the V2 stem's bias
cannot fold (a zero-padded max-pool follows it), so our V2 target keeps one (`stem_bias`).
keras.applications' BatchNorm epsilon (1.001e-5) differs from ours (1e-5); the difference
moves into the moving variance, so outputs agree to float32 round-off.
"""

import itertools
import os
import re
import warnings
from pathlib import Path

import keras

from keras_resvit.models.common import leaf_layers
from keras_resvit.models.resnet import IMAGENET_DEPTHS, build_resnet
from keras_resvit.models.resnet_blocks import BN_EPSILON
from keras_resvit.weights.common import assign_weights, fold_into_batchnorm
from keras_resvit.weights.keras_files import comparable_config

ARCHITECTURES = {
    "ResNet50": (50, "v1"),
    "ResNet101": (101, "v1"),
    "ResNet152": (152, "v1"),
    "ResNet50V2": (50, "v2"),
    "ResNet101V2": (101, "v2"),
    "ResNet152V2": (152, "v2"),
}
DEPTHS = (50, 101, 152)
# Our build arguments that reproduce each keras.applications family (see the module docstring).
LAYOUTS = {
    "v1": {"preprocessing": "caffe"},
    "v2": {"preprocessing": "inception", "downsample": "last", "stem_bias": True},
}
_BLOCK_LAYER = re.compile(r"conv(\d)_block(\d+)_(\d|preact)_(conv|bn)$")


def _numpy(variable):
    return keras.ops.convert_to_numpy(variable)


def _architecture_from_layers(source):
    """(depth, version) from keras.applications' layer names, or ValueError."""
    blocks = {}
    for layer in source.layers:
        match = _BLOCK_LAYER.match(layer.name)
        if match:
            stage, block = int(match[1]), int(match[2])
            blocks[stage] = max(blocks.get(stage, 0), block)
    per_stage = tuple(blocks[s] for s in sorted(blocks))
    depth = next((d for d in DEPTHS if IMAGENET_DEPTHS[d][1] == per_stage), None)
    if depth is None:
        raise ValueError(
            f"source model {source.name!r} is not a keras.applications ResNet50/101/152(V2): "
            f"found blocks per stage {per_stage}; expected one of "
            f"{[IMAGENET_DEPTHS[d][1] for d in DEPTHS]} with layers named like "
            "'conv2_block1_1_conv'."
        )
    names = {layer.name for layer in source.layers}
    return depth, "v2" if "post_bn" in names else "v1"


def _batchnorm(values, layer, target, shift=0.0):
    values[f"{target}/gamma"] = _numpy(layer.gamma)
    values[f"{target}/beta"] = _numpy(layer.beta)
    fold_into_batchnorm(target, _numpy(layer.moving_mean), shift, values)
    # var' + eps_ours == var + eps_source keeps every normalized value the same.
    values[f"{target}/moving_variance"] = _numpy(layer.moving_variance) + (
        layer.epsilon - BN_EPSILON
    )


def _computation(model):
    """What a ResNet's weights cannot tell: which layers stride (v1 / v1.5, where a V2 net
    downsamples) and its preprocessing layers' configs."""
    strided = [
        layer.name
        for layer in leaf_layers(model)
        if tuple(getattr(layer, "strides", None) or (1, 1)) != (1, 1)
    ]
    serialized = [
        keras.saving.serialize_keras_object(layer)
        for layer in model.layers
        if layer.name.startswith("preprocessing")
    ]
    preprocessing = [(x["class_name"], comparable_config(x)) for x in serialized]
    return strided, preprocessing


def _check_target(model, depth, version, source_name):
    """`model` (a user's target) must compute as the keras.applications net `source_name`:
    its layers of the same shapes can stride elsewhere (v1.5, a V2 net downsampling in its
    first block), and then load silently with other outputs (ValueError); another
    preprocessing than the weights' is warned about."""
    layout = LAYOUTS[version]
    reference = build_resnet(
        depth, input_shape=model.input_shape[1:], version=version, include_top=False, **layout
    )
    weighted = [{x.name for x in leaf_layers(m) if x.weights} for m in (model, reference)]
    if not weighted[1] <= weighted[0]:
        return  # another architecture, which `assign_weights` names
    (strided, preprocessing), (expected, expected_preprocessing) = map(
        _computation, (model, reference)
    )
    arguments = ", ".join(f"{k}={v!r}" for k, v in {"version": version, **layout}.items())
    if strided == expected:
        if preprocessing != expected_preprocessing:  # a choice (to fine-tune), not an error
            warnings.warn(
                f"model={model.name!r} does not normalize its inputs as {source_name}'s "
                f"weights expect (preprocessing={layout['preprocessing']!r}): its outputs "
                "differ from the source's until fine-tuned.",
                stacklevel=3,
            )
        return
    ours, theirs = next((a, b) for a, b in itertools.zip_longest(strided, expected) if a != b)
    differs = f"it strides {ours!r} where the weights' net strides {theirs!r}"
    raise ValueError(
        f"model={model.name!r} is not built as {source_name} ({differs}); the weights would "
        f"load with other outputs. Build it with kr.build_resnet({depth}, {arguments}) or "
        "leave model= out."
    )


def _target_name(stage, block, index, kind):
    """Our name of keras.applications' `conv{stage}_block{block}_{index}_{kind}`."""
    prefix = f"stage{int(stage) - 1}_block{block}"
    if index == "0":
        return f"{prefix}_shortcut_{kind}"
    if index == "preact":
        return f"{prefix}_bn0"
    return f"{prefix}_{kind}{index}"


def _v1_values(source):
    layers = {layer.name: layer for layer in source.layers}
    values = {}
    for name, layer in layers.items():
        match = _BLOCK_LAYER.match(name)
        if name == "conv1_conv" or (match and match[4] == "conv"):
            if name == "conv1_conv":
                conv_target, bn_target = "stem_conv", "stem_bn"
            else:
                conv_target = _target_name(*match.groups())
                bn_target = _target_name(*match.groups()[:3], "bn")
            bn = layers[name[: -len("conv")] + "bn"]
            values[f"{conv_target}/kernel"] = _numpy(layer.kernel)
            _batchnorm(values, bn, bn_target, shift=_numpy(layer.bias))
    return values


def _v2_values(source):
    layers = {layer.name: layer for layer in source.layers}
    values = {
        "stem_conv/kernel": _numpy(layers["conv1_conv"].kernel),
        "stem_conv/bias": _numpy(layers["conv1_conv"].bias),
    }
    blocks = sorted({(int(m[1]), int(m[2])) for m in map(_BLOCK_LAYER.match, layers) if m})
    stream_bias = 0.0
    for stage, block in blocks:
        prefix = f"conv{stage}_block{block}"
        # The pre-activation BatchNorm reads the stream: fold the biases it carries.
        preact = _target_name(stage, block, "preact", "")
        _batchnorm(values, layers[f"{prefix}_preact_bn"], preact, shift=stream_bias)
        for index in ("1", "2"):
            conv = layers[f"{prefix}_{index}_conv"]
            values[f"{_target_name(stage, block, index, 'conv')}/kernel"] = _numpy(conv.kernel)
            bn = _target_name(stage, block, index, "bn")
            _batchnorm(values, layers[f"{prefix}_{index}_bn"], bn)
        last = layers[f"{prefix}_3_conv"]
        values[f"{_target_name(stage, block, '3', 'conv')}/kernel"] = _numpy(last.kernel)
        if f"{prefix}_0_conv" in layers:
            shortcut = layers[f"{prefix}_0_conv"]
            values[f"{_target_name(stage, block, '0', 'conv')}/kernel"] = _numpy(shortcut.kernel)
            # A projection shortcut replaces the stream, and the bias it carried.
            stream_bias = _numpy(shortcut.bias) + _numpy(last.bias)
        else:
            stream_bias = stream_bias + _numpy(last.bias)
    _batchnorm(values, layers["post_bn"], "post_bn", shift=stream_bias)
    return values


def _load_source(source, architecture, input_shape, classes):
    """A keras.applications model from a model object or a weights file."""
    if isinstance(source, keras.Model):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(
            f"source={source!r} is not valid; pass a keras.applications ResNet (a keras.Model) "
            f"or the path of its weights file (a str or pathlib.Path; got {type(source).__name__})."
        )
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"source={str(source)!r} is neither a keras.Model nor a file.")
    if architecture is None:
        match = re.search(r"resnet(50|101|152)(v2)?", path.name.lower())
        if not match:
            raise ValueError(
                f"source={path.name!r}: cannot tell the architecture from the file name; pass "
                f"architecture= one of {list(ARCHITECTURES)}."
            )
        architecture = f"ResNet{match[1]}{'V2' if match[2] else ''}"
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"architecture={architecture!r} is not valid; expected one of {list(ARCHITECTURES)}."
        )
    builder = getattr(keras.applications, architecture)
    include_top = "notop" not in path.name.lower()
    try:
        return builder(
            weights=str(path),
            include_top=include_top,
            input_shape=input_shape,
            classes=classes if include_top else 1000,
        )
    except (ValueError, OSError, KeyError) as error:
        raise ValueError(
            f"source={path.name!r} does not hold keras.applications {architecture} weights "
            f"(include_top={include_top}): {error}"
        ) from error


def from_keras_applications(
    source,
    *,
    architecture: str | None = None,
    input_shape: tuple | None = None,
    model: keras.Model | None = None,
) -> keras.Model:
    """Converts a keras.applications ResNet (v1 or V2) into our ResNet, outputs unchanged.

    The result takes raw 0-255 RGB pixels: v1 nets get `preprocessing="caffe"` (BGR, mean
    subtracted, as keras.applications' `resnet.preprocess_input`), V2 nets
    `preprocessing="inception"` ([-1, 1], as `resnet_v2.preprocess_input`). So
    `ours(x) == source(preprocess_input(x))`.

    Args:
        source: a `keras.applications.ResNet50/101/152(V2)` model (any weights, with or
            without top), or the path of one of their weights files (`.h5`).
        architecture: e.g. "ResNet50V2", needed for a weights file whose name does not say
            (keras' own file names do).
        input_shape: our model's input shape; default the source's (224x224 if unknown).
        model: fill this model of ours instead of building one; its architecture must match,
            and so must what the weights' shapes do not say: which convs stride (v1, where a
            V2 net downsamples). Another preprocessing than the weights' (see Returns) is
            warned about.

    Returns:
        A `keras.Model` from `build_resnet(depth, version="v1", preprocessing="caffe")`, or
        `build_resnet(depth, version="v2", preprocessing="inception", downsample="last",
        stem_bias=True)` for V2 sources.

    Raises:
        ValueError: the source is neither a model nor a path, not one of these ResNets, or
            its weights do not fit (or `model` computes otherwise, see `model`).

    Example:
    >>> from keras_resvit.weights.keras_applications import from_keras_applications
    >>> import keras
    >>> import numpy as np
    >>> source = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
    >>> model = from_keras_applications(source)
    >>> x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    >>> caffe = keras.applications.resnet.preprocess_input(x.copy())
    >>> bool(np.allclose(model(x), source(caffe), atol=1e-5))
    True
    """
    # A weights file does not say its number of classes: take the target model's.
    heads = [
        layer.units for layer in (model.layers if model else []) if layer.name == "predictions"
    ]
    source = _load_source(source, architecture, input_shape, heads[0] if heads else 1000)
    depth, version = _architecture_from_layers(source)
    names = {layer.name for layer in source.layers}
    include_top = "predictions" in names
    pooling = "avg" if "avg_pool" in names else "max" if "max_pool" in names else None
    head = {"include_top": include_top, "pooling": pooling}
    if include_top:
        predictions = source.get_layer("predictions")
        head["num_classes"] = predictions.units
        head["classifier_activation"] = keras.activations.serialize(predictions.activation)
    if input_shape is None:
        shape = tuple(source.input_shape[1:])
        input_shape = shape if None not in shape else (224, 224, 3)
    values = _v1_values(source) if version == "v1" else _v2_values(source)
    if model is not None:
        _check_target(model, depth, version, f"keras.applications model {source.name!r}")
    else:
        layout = LAYOUTS[version]
        model = build_resnet(depth, input_shape=input_shape, version=version, **layout, **head)
    # A feature extractor drops the source's classifier; a source without one leaves ours.
    if include_top and any(layer.name == "predictions" for layer in model.layers):
        dense = source.get_layer("predictions")
        values["predictions/kernel"] = _numpy(dense.kernel)
        values["predictions/bias"] = _numpy(dense.bias)
    optional = () if include_top else ("predictions/",)
    return assign_weights(model, values, f"keras.applications model {source.name!r}", optional)
