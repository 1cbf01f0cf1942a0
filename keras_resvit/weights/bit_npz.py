"""Big Transfer checkpoints (google-research/big_transfer `.npz`) into our BiT ResNets.

BiT-S/BiT-M are pre-activation ResNets with GroupNorm(32) and weight-standardized convs
(Kolesnikov et al. 2020), which `build_resnet` makes with the `bit_r*` registry arguments. The
checkpoints are flat `.npz` archives of the TF variables, read by big_transfer's own loaders
(`bit_pytorch/models.py` `load_from`, `bit_jax/tf2jax.py`): `resnet/root_block/...`,
`resnet/block{1-4}/unit{01..}/{a,b,c}/{group_norm,standardized_conv2d}/...`, a projection
`a/proj/standardized_conv2d/kernel` on each block's first unit, the final
`resnet/group_norm/...` and the classifier as a 1x1 conv `resnet/head/conv2d/...`. Conv
kernels are HWIO as Keras' are, so only the head is reshaped; the depth and width are read
from the shapes.
"""

import re
from pathlib import Path

import keras

from keras_resvit.models.registry import get_spec
from keras_resvit.models.resnet import IMAGENET_DEPTHS, build_resnet
from keras_resvit.weights.common import (
    assign_weights,
    check_target,
    read_npz_arrays,
    refuse_build_arguments,
)

ROOT = "resnet/root_block/standardized_conv2d/kernel"
HEAD = "resnet/head/conv2d"
# Units per block -> depth, for the bottleneck nets BiT releases (He et al. 2015, Table 1).
_DEPTHS = {units: depth for depth, (kind, units) in IMAGENET_DEPTHS.items() if kind == "bottleneck"}
# A unit's modules (BiT's names, inside `resnet/block{s}/unit{b}/`) -> our layer suffixes.
_UNIT_MODULES = {
    "a/group_norm": "bn0",
    "a/standardized_conv2d": "conv1",
    "a/proj/standardized_conv2d": "shortcut_conv",
    "b/group_norm": "bn1",
    "b/standardized_conv2d": "conv2",
    "c/group_norm": "bn2",
    "c/standardized_conv2d": "conv3",
}
_UNIT_KEY = re.compile(r"resnet/block(\d+)/unit(\d+)/(.+)/(kernel|gamma|beta)$")
# What makes our ResNet BiT's: the `bit_r*` registry entries' arguments but depth and width.
BIT_ARGUMENTS = {
    key: value
    for key, value in get_spec("bit_r50x1").kwargs.items()
    if key not in ("depth", "width", "preprocessing")
}
_OTHER_LAYERS = {
    "resnet/root_block/standardized_conv2d": "stem_conv",
    "resnet/group_norm": "post_bn",
}


def read_bit_npz(path) -> dict:
    """The arrays of a BiT `.npz` (no pickle), keys as big_transfer's loaders read them.

    Some published files number their conv scopes (`standardized_conv2d_3/`); they are read as
    `standardized_conv2d/`, as big_vision's BiT loader (`maybe_convert_big_transfer_format`) does.

    Raises:
        FileNotFoundError: `path` is not a file.
        ValueError: it is not a readable `.npz`, or not a BiT checkpoint.
    """
    path = Path(path)
    arrays = read_npz_arrays(
        path,
        "a BiT .npz",
        lambda key: re.sub(r"/standardized_conv2d_\d+/", "/standardized_conv2d/", key),
    )
    if ROOT not in arrays:
        raise ValueError(
            f"path={path.name!r} is not a BiT checkpoint: it lacks {ROOT!r} "
            f"(google-research/big_transfer key layout); found keys {sorted(arrays)[:3]}."
        )
    return arrays


def bit_architecture(arrays: dict) -> dict:
    """`build_resnet`'s depth, width and head for a checkpoint, read from its shapes.

    Raises:
        ValueError: the units per block are not those of a BiT ResNet-50/101/152/200.
    """
    units = {}
    for match in filter(None, map(_UNIT_KEY.match, arrays)):
        units.setdefault(int(match[1]), set()).add(int(match[2]))
    per_block = tuple(len(units.get(block, ())) for block in range(1, 5))
    if per_block not in _DEPTHS or len(units) != 4:
        raise ValueError(
            f"the checkpoint's blocks have {per_block} units; a BiT ResNet has "
            f"{sorted(_DEPTHS)} (depths {sorted(_DEPTHS.values())})."
        )
    width = arrays[ROOT].shape[-1] / 64
    head = arrays.get(f"{HEAD}/kernel")
    return {
        "depth": _DEPTHS[per_block],
        "width": int(width) if width.is_integer() else width,
        "include_top": head is not None,
        "num_classes": 1000 if head is None else int(head.shape[-1]),
    }


def _target(key: str) -> str | None:
    """Our variable path for a checkpoint key (the head aside), None for an unknown key."""
    match = _UNIT_KEY.match(key)
    if match and match[3] in _UNIT_MODULES:
        block, unit, module, parameter = int(match[1]), int(match[2]), match[3], match[4]
        return f"stage{block}_block{unit}_{_UNIT_MODULES[module]}/{parameter}"
    module, _, parameter = key.rpartition("/")
    return f"{_OTHER_LAYERS[module]}/{parameter}" if module in _OTHER_LAYERS else None


def bit_values(arrays: dict, model: keras.Model, source: str) -> dict:
    """Our `{variable path: array}` for `model` from a checkpoint's arrays.

    Raises:
        ValueError: a key has no place in `model`, or its shape differs from our layer's
            (naming the key, our layer and both shapes).
    """
    variables = {variable.path: variable for variable in model.weights}
    has_head = any(layer.name == "predictions" for layer in model.layers)
    values = {}
    for key, array in arrays.items():
        if key.startswith(f"{HEAD}/"):
            if not has_head:
                continue  # a feature extractor drops the checkpoint's classifier
            parameter = key.rsplit("/", 1)[1]
            # The 1x1 conv classifier (1, 1, features, classes) is our dense layer.
            target = f"predictions/{parameter}"
            if parameter == "kernel" and array.ndim == 4 and array.shape[:2] == (1, 1):
                array = array[0, 0]
        else:
            target = _target(key)
        if target not in variables:
            where = f"it has no variable {target!r}" if target else "BiT has no such array"
            raise ValueError(
                f"{source} does not fit model {model.name!r}: key {key!r} of shape "
                f"{array.shape} has no place in it ({where}); the weights belong to another "
                "architecture."
            )
        expected = tuple(variables[target].shape)
        if expected != array.shape:
            raise ValueError(
                f"{source} does not fit model {model.name!r}: key {key!r} has shape "
                f"{tuple(arrays[key].shape)}, but our layer {target.rsplit('/', 1)[0]!r} "
                f"expects {target!r} of shape {expected}; the weights belong to another "
                "architecture (or other build arguments)."
            )
        values[target] = array
    return values


def load_bit_npz(
    path,
    *,
    input_shape: tuple | None = None,
    model: keras.Model | None = None,
    classifier_activation: str | None = "softmax",
    preprocessing: str | None = "inception",
) -> keras.Model:
    """Loads a BiT `.npz` checkpoint (BiT-S, BiT-M and their fine-tunes) into our BiT ResNet.

    Args:
        path: a `.npz` with the google-research/big_transfer key layout.
        input_shape: the built model's (height, width, channels); default (224, 224, 3).
            ResNets take any size: the ImageNet fine-tunes were trained at 480 px.
        model: fill this model of ours instead of building one (its own head is kept; a
            checkpoint head of another size raises). The build arguments below cannot be
            combined with it.
        classifier_activation: activation of the built model's classifier.
        preprocessing: normalization inside the built model; BiT expects [-1, 1] inputs
            ("inception").

    Returns:
        A `keras.Model` taking raw 0-255 pixels, named as the registry names BiT models
        (`bit_r{depth}x{width}`, e.g. "bit_r50x1"); from a checkpoint without head, one that
        returns BiT's pre-logits (the average of the last GroupNorm-ReLU map).

    Raises:
        ValueError: the file is not a BiT checkpoint, `model` is not a ResNet of ours or
            comes with build arguments, or the checkpoint does not fit `model` (naming the key,
            our layer and both shapes).

    Example:
    >>> # A checkpoint downloaded from BiT's bucket (storage.googleapis.com/bit_models/):
    >>> from keras_resvit.weights.bit_npz import load_bit_npz
    >>> model = load_bit_npz("BiT-M-R50x1.npz", input_shape=(480, 480, 3))  # doctest: +SKIP
    """
    if model is not None:
        check_target(model, False, "a BiT checkpoint")
        refuse_build_arguments(
            {
                "input_shape": input_shape,
                "classifier_activation": classifier_activation,
                "preprocessing": preprocessing,
            },
            {"input_shape": None, "classifier_activation": "softmax", "preprocessing": "inception"},
        )
    arrays = read_bit_npz(path)
    if model is None:
        found = bit_architecture(arrays)
        name = f"bit_r{found['depth']}x{found['width']}"
        model = build_resnet(
            **BIT_ARGUMENTS,
            depth=found["depth"],
            width=found["width"],
            input_shape=input_shape,
            num_classes=found["num_classes"],
            include_top=found["include_top"],
            # Without its head, a checkpoint gives BiT's pre-logits (GroupNorm, ReLU, average).
            pooling=None if found["include_top"] else "avg",
            classifier_activation=classifier_activation,
            preprocessing=preprocessing,
            name=name.replace(".", "_"),
        )
    source = f"BiT checkpoint {Path(path).name!r}"
    optional = () if f"{HEAD}/kernel" in arrays else ("predictions/",)
    return assign_weights(model, bit_values(arrays, model, source), source, optional)
