"""Which converter reads a weights file, and registry models built around one.

The format is read from the file (suffix, then content): `.npz` original ViT checkpoints, BiT
checkpoints or timm state dicts, `.safetensors`/`.pth`/`.pt`/`.bin` timm/torchvision state dicts,
keras.applications' published `.h5` files (the legacy HDF5 layout), and our own `.keras` and
`.weights.h5` files. A format may fix build arguments the registry name leaves open (e.g.
keras.applications' ResNet50 is v1 with caffe preprocessing), so `build_with_weights` builds
with those before filling the model.
"""

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import h5py
import keras
import numpy as np

from keras_resvit.base.files import as_path
from keras_resvit.base.model_files import check_keras_file
from keras_resvit.models.common import replace_head
from keras_resvit.models.vit_config import builds_any_size, image_size_pair
from keras_resvit.models.vit_resize import resize_vit
from keras_resvit.weights.bit_npz import (
    BIT_ARGUMENTS,
    ROOT,
    bit_architecture,
    load_bit_npz,
    read_bit_npz,
)
from keras_resvit.weights.common import NPZ_ERRORS, npz_problem
from keras_resvit.weights.keras_applications import LAYOUTS, from_keras_applications
from keras_resvit.weights.keras_files import check_architecture, keras_file_layout
from keras_resvit.weights.keras_hub import (
    BACKBONES,
    backbone_arguments,
    fill_from_backbone,
    load_preset,
    preset_class_name,
)
from keras_resvit.weights.state_dicts import SUFFIXES, read_state_dict
from keras_resvit.weights.timm import load_timm, resnet_arguments
from keras_resvit.weights.timm_layout import known_family, state_dict_family
from keras_resvit.weights.timm_vit import vit_arguments
from keras_resvit.weights.vit_npz import load_vit_npz, npz_architecture, read_npz

VALID = (
    ".npz (original ViT or BiT checkpoint, or timm state dict), .safetensors/.pth/.pt/.bin "
    "(timm or torchvision state dict), .h5 (keras.applications ResNet weights), .keras or "
    ".weights.h5 (a keras_resvit model), or a keras-hub preset folder (ViTBackbone, "
    "ResNetBackbone)"
)
# Build arguments a format's weights carry (the rest stays the registry entry's).
_HEAD = ("pooling", "representation_size", "num_classes")
# A ViT checkpoint's grid of position embeddings also fixes the resolution it was trained at.
_VIT = (*_HEAD, "image_size")


def _h5_layer_names(path):
    """Layer names of a legacy (Keras 2) HDF5 weights file, None for Keras 3's layout."""
    with h5py.File(path, "r") as file:
        group = file.get("model_weights", file)
        if "layer_names" not in group.attrs:
            # Keras 3 names layers by class; keras.applications' convs have biases, ours not.
            has_bias = file.get("layers/conv2d/vars/1") is not None
            return [] if has_bias else None
        return [_text(n) for n in group.attrs["layer_names"]]


def _h5_classes(path):
    """The classes of a keras.applications HDF5 file's classifier (its last layer with weights,
    a Dense kernel), None for a file without one ("notop")."""
    with h5py.File(path, "r") as file:
        group = file.get("model_weights", file)
        if "layer_names" in group.attrs:  # Keras 2: the layers in order, each its weights
            last = group[_text(group.attrs["layer_names"][-1])]
            names = [_text(n) for n in last.attrs.get("weight_names", [])]
            kernel = last[names[0]] if names else None
        else:  # Keras 3: layers named by class
            kernel = file.get("layers/dense/vars/0")
        return int(kernel.shape[-1]) if kernel is not None and kernel.ndim == 2 else None


def _text(name):
    return name.decode() if isinstance(name, bytes) else name


# Convolutions of keras.applications' ResNet50/101/152 (and their V2), by depth.
_KERAS_APPLICATIONS_CONVS = {53: 50, 104: 101, 155: 152}


def _keras3_architecture(path):
    """The architecture ("ResNet50", "ResNet101V2"...) of keras.applications weights saved by
    Keras 3 (`model.save_weights("x.weights.h5")`, layers named by class), else None.

    The depth follows from the number of convolutions; V2 has fewer batch norms than convs
    (3 per block and one after the last, none after its stem), v1 one per conv.
    """
    with h5py.File(path, "r") as file:
        names = list(file["layers"].keys()) if "layers" in file else []
    convs = sum(n == "conv2d" or n.startswith("conv2d_") for n in names)
    norms = sum(n.startswith("batch_normalization") for n in names)
    depth = _KERAS_APPLICATIONS_CONVS.get(convs)
    return depth and f"ResNet{depth}{'' if norms == convs else 'V2'}"


def weights_format(path) -> str:
    """ "vit_npz", "bit_npz", "timm", "keras_applications" or "keras" for a weights file.

    Raises:
        FileNotFoundError: `path` is not a file.
        ValueError: `path` is not a str or path, or no converter reads it.
    """
    path = as_path("weights", path)
    if path.is_dir():
        if preset_class_name(path) in BACKBONES:
            return "keras_hub"
        raise ValueError(
            f"weights={str(path)!r} is a folder but not a keras-hub preset of one of "
            f"{list(BACKBONES)} (a config.json naming it); expected {VALID}."
        )
    if not path.is_file():
        raise FileNotFoundError(f"weights={str(path)!r} is not a file; expected {VALID}.")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                keys = set(archive.files)
        except NPZ_ERRORS as error:
            raise ValueError(
                f"weights={str(path)!r} is not a readable .npz: {npz_problem(error)}"
            ) from error
        if "embedding/kernel" in keys:
            return "vit_npz"
        if any(key.startswith("resnet/root_block/") for key in keys):
            return "bit_npz"
        if state_dict_family(dict.fromkeys(keys)):
            return "timm"
        raise ValueError(
            f"weights={str(path)!r} holds neither an original ViT checkpoint ('embedding/kernel', "
            f"...), a BiT checkpoint ({ROOT!r}, ...) nor a timm state dict; found keys "
            f"{sorted(keys)[:5]}. Valid: {VALID}."
        )
    if suffix in SUFFIXES:
        return "timm"
    if suffix == ".keras":
        check_keras_file("weights", path)
        return "keras"
    if suffix == ".h5":
        try:
            names = _h5_layer_names(path)
        except OSError as error:
            raise ValueError(
                f"weights={str(path)!r} is not a readable HDF5 file: {error}"
            ) from error
        if names is None or (not names and not _keras3_architecture(path)):
            return "keras"
        if names and not _keras_applications_architecture(path):
            raise ValueError(_legacy_h5_problem(path))
        return "keras_applications"
    raise ValueError(f"weights={str(path)!r} has suffix {suffix!r}; expected {VALID}.")


def _legacy_h5_problem(path) -> str:
    """Why a legacy (Keras 2 layout) HDF5 file that is not a keras.applications ResNet is not
    read, and what to pass instead."""
    with h5py.File(path, "r") as file:
        whole = "model_weights" in file or "model_config" in file.attrs
    what = (
        "a whole Keras model saved in the legacy HDF5 format (model.save('x.h5'))"
        if whole
        else "weights saved in the legacy HDF5 format"
    )
    return (
        f"weights={str(path)!r} is {what}, which is read only for keras.applications "
        "ResNet50/101/152(V2) files (layers named like 'conv2_block1_1_conv'); save the model "
        "as .keras (model.save('x.keras')) or its weights as .weights.h5 "
        "(model.save_weights('x.weights.h5')), and pass that file."
    )


def _keras_applications_architecture(path):
    path = Path(path)
    names = _h5_layer_names(path)
    stages = [n for n in names if re.fullmatch(r"conv4_block\d+_1_conv", n)]
    if names:
        depth = {6: 50, 23: 101, 36: 152}.get(len(stages))
        return depth and f"ResNet{depth}{'V2' if 'post_bn' in names else ''}"
    return _keras3_architecture(path)


def _bit_layout(path, family, arguments):
    """A BiT checkpoint fixes its head and [-1, 1] inputs; the model must be a BiT ResNet."""
    found = bit_architecture(read_bit_npz(path))
    if family == "resnet" and any(arguments.get(k) != v for k, v in BIT_ARGUMENTS.items()):
        needs = ", ".join(f"{key}={value!r}" for key, value in BIT_ARGUMENTS.items())
        raise ValueError(
            f"weights={str(path)!r} holds a BiT ResNet-{found['depth']}x{found['width']}, "
            f"which needs {needs}; use a bit_* registry name (e.g. "
            f"'bit_r{found['depth']}x{found['width']}')."
        )
    layout = {"preprocessing": "inception"}
    if found["include_top"]:
        layout["num_classes"] = found["num_classes"]
    return layout


def _layout(fmt, path, family, arguments):
    """Build arguments the weights fix, or ValueError when they need another family."""
    if fmt == "keras":  # a .weights.h5 file holds no layer configs
        keras_file = Path(path).suffix.lower() == ".keras"
        return keras_file_layout(path, family) if keras_file else {}
    if fmt == "keras_hub":
        config = json.loads((path / "config.json").read_text())
        needed, found = backbone_arguments(config["class_name"], config["config"])
        # The preset fixes a ViT's resolution; its architecture must be the model's, as
        # `fill_from_backbone` checks, never replace it under the registry name.
        layout = {"image_size": found["image_size"]} if needed == "vit" else {}
    elif fmt == "keras_applications":
        architecture = _keras_applications_architecture(path)
        version = "v2" if architecture and architecture.endswith("V2") else "v1"
        requested = arguments.get("version", "v1.5")
        if family == "resnet" and (requested == "v2") != (version == "v2"):
            raise ValueError(
                f"weights={str(path)!r} holds keras.applications {architecture} weights, which "
                f"do not fit version={requested!r}; use a registry name of the same version."
            )
        needed, layout = "resnet", {"version": version, **LAYOUTS[version]}
        classes = _h5_classes(path)
        if classes is not None:
            layout["num_classes"] = classes
    elif fmt == "bit_npz":
        needed, layout = "resnet", _bit_layout(path, family, arguments)
    elif fmt == "vit_npz":
        needed, found = "vit", npz_architecture(read_npz(path))
        layout = {k: found[k] for k in _VIT if found["include_top"] or k != "num_classes"}
    else:
        state_dict = read_state_dict(path)
        needed = known_family(state_dict, f"weights={str(path)!r}")
        found = (resnet_arguments if needed == "resnet" else vit_arguments)(state_dict)
        layout = {k: found[k] for k in (_VIT if needed == "vit" else _HEAD) if k in found}
        if not found["include_top"]:
            layout.pop("num_classes")
    if needed != family:
        raise ValueError(
            f"weights={str(path)!r} holds {needed} weights ({fmt}); they do not fit a {family} "
            "model."
        )
    return layout


def _fill(fmt, model, path):
    if fmt == "keras_hub":
        return fill_from_backbone(model, load_preset(path))
    if fmt == "bit_npz":
        return load_bit_npz(path, model=model)
    if fmt == "vit_npz":
        return load_vit_npz(path, model=model)
    if fmt == "timm":
        return load_timm(path, model=model)
    if fmt == "keras_applications":
        return from_keras_applications(
            path,
            architecture=_keras_applications_architecture(path),
            input_shape=model.input_shape[1:],
            model=model,
        )
    try:
        _load_keras_weights(model, Path(path))
    except ValueError as error:
        # Keras lists every object; its first sentences name the layer and the shapes.
        summary = str(error).split("Target variable")[0].split("List of objects")[0].strip()
        raise ValueError(summary) from error
    if Path(path).suffix.lower() == ".keras":  # the shapes fit: does the computation?
        check_architecture(model, path)
    return model


def _load_keras_weights(model, path):
    """`model.load_weights(path)`; a Keras 3 weights file whose name lacks `.weights.h5`
    (Keras would read it with its legacy HDF5 loader) is read through a link so named."""
    if path.suffix != ".h5" or path.name.endswith(".weights.h5"):  # as Keras checks
        model.load_weights(path)
        return
    with tempfile.TemporaryDirectory() as folder:
        link = Path(folder) / "model.weights.h5"
        try:
            os.symlink(path.resolve(), link)
        except OSError:  # no links on this filesystem: a copy reads the same
            shutil.copyfile(path, link)
        model.load_weights(link)


def build_with_weights(builder, family, defaults, overrides, weights, name_of=None) -> keras.Model:
    """`builder(**defaults, **overrides)` filled from the file `weights`.

    Build arguments the weights fix (keras.applications' v1 layout and preprocessing, a
    checkpoint's head, a `.keras` file's preprocessing and ViT resolution) go between the
    registry entry's `defaults` and the user's `overrides`. `name_of`, where given, names the
    model from those arguments (a dict of them, the user's overrides included).

    Raises:
        FileNotFoundError: `weights` is not a file.
        ValueError: no converter reads it, or the weights do not fit the model (naming the
            layer and the expected and found shapes, or for a `.keras` file the layers that
            compute otherwise).
    """
    weights = as_path("weights", weights)
    fmt = weights_format(weights)
    layout = _layout(fmt, weights, family, {**defaults, **overrides})
    _refuse_conflicts(overrides, layout, weights, fmt)
    if name_of is not None:
        defaults = {**defaults, "name": name_of(layout)}
    # A ViT of another (or any) input size keeps the checkpoint's grid of position embeddings:
    # built at the checkpoint's size (in the layout), filled, then resized.
    size = overrides.get("image_size", layout.get("image_size"))
    resized = family in ("vit", "hybrid_vit") and "image_size" in overrides
    resized = resized and (builds_any_size(size) or _other_size(size, layout.get("image_size")))
    # Other classes than the weights' classifier: built with theirs, filled, then a new head
    # (as timm's and keras-hub's `num_classes` give), every other weight loaded.
    classes = overrides.get("num_classes")
    new_head = classes is not None and layout.get("num_classes") not in (None, classes)
    new_head = new_head and {**defaults, **layout, **overrides}.get("include_top", True)
    dropped = {"image_size"} if resized else set()
    dropped |= {"num_classes"} if new_head else set()
    overrides = {k: v for k, v in overrides.items() if k not in dropped}
    model = builder(**{**defaults, **layout, **overrides})
    try:
        model = _fill(fmt, model, weights)
    except ValueError as error:
        raise ValueError(
            f"weights={str(weights)!r} ({fmt}) does not fit model {model.name!r}: {error}"
        ) from error
    if new_head:
        model = replace_head(model, classes)
    if not resized:
        return model
    return resize_vit(model, (None, None) if builds_any_size(size) else size)


def _refuse_conflicts(overrides, layout, weights, fmt):
    """A user's build argument that the weights fix otherwise (a v1 net's `version`, a ViT's
    `pooling`, ...) would build a model they fill without error, that computes other outputs.
    The input size is resized to; a head's classes meet the weights' shapes; `preprocessing`
    is the user's to choose (to fine-tune behind another one)."""
    free = ("image_size", "num_classes", "preprocessing")
    for key, value in overrides.items():
        if key in layout and key not in free and value != layout[key]:
            raise ValueError(
                f"{key}={value!r} does not fit weights={str(weights)!r} ({fmt}), which were "
                f"trained with {key}={layout[key]!r}: they would load, and compute other "
                f"outputs. Drop {key}= (or pass {key}={layout[key]!r})."
            )


def _other_size(size, fixed) -> bool:
    """Whether an `image_size` override differs from the size a file fixes (None: none)."""
    return fixed is not None and image_size_pair(size) != image_size_pair(fixed)
