"""keras-hub backbones and preset folders, both ways: `ViTBackbone` and `ResNetBackbone`.

keras-hub's ViT and ResNet (v1.5, not pre-activation) have the same pieces as ours under other
names (`vit_encoder/transformer_block_1/mha/query/kernel` is our
`encoder_block1_attention/query/kernel`, `stack2_block0_1_conv/kernel` our
`stage3_block1_conv1/kernel`), so the arrays are copied as they are; only the ViT's position
embeddings gain or lose a batch axis. A keras-hub backbone takes normalized images; ours take
raw 0-255 pixels and normalize inside, so `ours(x) == backbone(normalize(x))`.

keras-hub is imported only to read or write a preset folder (the `hub` extra).
"""

import json
import re
from pathlib import Path

import keras

from keras_resvit.base.output_folders import atomic_folder, check_replaceable_folder
from keras_resvit.base.validation import check_model
from keras_resvit.models.common import is_vit
from keras_resvit.models.vit import LN_EPSILON, build_vit
from keras_resvit.weights.common import assign_weights, check_bottleneck_stride

BACKBONES = ("ViTBackbone", "ResNetBackbone")
# A preset folder as `Backbone.save_to_preset` writes it (larger weights come in shards).
PRESET = (
    "keras-hub preset",
    ("config.json", "metadata.json", "model.weights.h5"),
    ("config.json",),
)
_EMBEDDING = "vit_patching_and_embedding"
_BLOCK = r"vit_encoder/transformer_block_(\d+)"
_VIT_RENAMES = (
    (rf"{_EMBEDDING}/class_token$", "class_token/token"),
    (rf"{_EMBEDDING}/patch_embedding/(\w+)$", r"patch_embedding/\1"),
    (rf"{_EMBEDDING}/position_embedding/embeddings$", "position_embedding/embeddings"),
    (rf"{_BLOCK}/ln_(\d)/(\w+)$", r"encoder_block\1_norm\2/\3"),
    (rf"{_BLOCK}/mha/(\w+)/(\w+)$", r"encoder_block\1_attention/\2/\3"),
    (rf"{_BLOCK}/mlp/dense_(\d)/(\w+)$", r"encoder_block\1_mlp_dense\2/\3"),
    (r"vit_encoder/ln/(\w+)$", r"encoder_norm/\1"),
)
# keras-hub ViT options our ViT has no counterpart for, with the value ours implies.
_VIT_FIXED = {
    "use_class_token": True,
    "use_mha_bias": True,
    "use_mlp_bias": True,
    "use_patch_bias": True,
    "layer_norm_epsilon": LN_EPSILON,
    "data_format": "channels_last",
}
# `build_vit` options and the values keras-hub's ViTBackbone can hold: it always has a class
# token and learned position embeddings, and none of the later options.
_VIT_HOLDS = {
    "pooling": ("token", None),
    "position_embedding": ("learned",),
    "num_registers": (0,),
    "layer_scale_init": (None,),
    "qk_norm": (False,),
    "fc_norm": (False,),
}
_RESNET_FIXED = {"input_conv_filters": [64], "input_conv_kernel_sizes": [7]}
# keras-hub's blocks per stage -> our depth, for its two block types.
_RESNET_DEPTHS = {
    ("basic_block", (2, 2, 2, 2)): 18,
    ("basic_block", (3, 4, 6, 3)): 34,
    ("bottleneck_block", (3, 4, 6, 3)): 50,
    ("bottleneck_block", (3, 4, 23, 3)): 101,
    ("bottleneck_block", (3, 8, 36, 3)): 152,
}
_RESNET_PATH = re.compile(r"stack(\d+)_block(\d+)_([0-3])_(conv|bn)/(\w+)$")


def _check_fixed(config, fixed, what):
    for option, value in fixed.items():
        if config.get(option, value) != value:
            raise ValueError(
                f"keras-hub {what} has {option}={config[option]!r}; ours supports only "
                f"{option}={value!r}."
            )


def _vit_path(path):
    for pattern, replacement in _VIT_RENAMES:
        if re.match(pattern, path):
            return re.sub(pattern, replacement, path)
    raise ValueError(f"keras-hub variable {path!r} has no counterpart in our ViT.")


def _resnet_path(path):
    """Our name of a keras-hub ResNet variable (`stack0_block0_0_bn/gamma` ->
    `stage1_block1_shortcut_bn/gamma`)."""
    stem = re.match(r"conv1_(conv|bn)/(\w+)$", path)
    if stem:
        return f"stem_{stem[1]}/{stem[2]}"
    match = _RESNET_PATH.match(path)
    if match is None:
        raise ValueError(f"keras-hub variable {path!r} has no counterpart in our ResNet.")
    stack, block, index, kind, variable = match.groups()
    layer = f"shortcut_{kind}" if index == "0" else f"{kind}{index}"
    return f"stage{int(stack) + 1}_block{int(block) + 1}_{layer}/{variable}"


def backbone_arguments(class_name: str, config: dict) -> tuple:
    """`(family, build arguments)` of our model with the architecture of a keras-hub backbone.

    Raises:
        ValueError: another backbone, or an option ours does not have.
    """
    if class_name == "ViTBackbone":
        _check_fixed(config, _VIT_FIXED, "ViTBackbone")
        patch = config["patch_size"]
        return "vit", {
            "image_size": tuple(config["image_shape"][:2]),
            "patch_size": patch[0] if isinstance(patch, (tuple, list)) else patch,
            "hidden_size": config["hidden_dim"],
            "num_layers": config["num_layers"],
            "num_heads": config["num_heads"],
            "mlp_dim": config["mlp_dim"],
        }
    if class_name == "ResNetBackbone":
        _check_fixed(config, {**_RESNET_FIXED, "use_pre_activation": False}, "ResNetBackbone")
        key = (config["block_type"], tuple(config["stackwise_num_blocks"]))
        if key not in _RESNET_DEPTHS or list(config["stackwise_num_filters"]) != [
            64,
            128,
            256,
            512,
        ]:
            raise ValueError(
                f"keras-hub ResNetBackbone with {key[0]} blocks {list(key[1])} and filters "
                f"{config['stackwise_num_filters']} is not a ResNet-18/34/50/101/152."
            )
        return "resnet", {"depth": _RESNET_DEPTHS[key], "version": "v1.5"}
    raise ValueError(f"keras-hub {class_name} is not one of {list(BACKBONES)}.")


def backbone_values(backbone) -> dict:
    """`{our variable path: array}` of a keras-hub ViT or ResNet backbone's weights."""
    vit = type(backbone).__name__ == "ViTBackbone"
    values = {}
    for variable in backbone.weights:
        array = keras.ops.convert_to_numpy(variable)
        path = (_vit_path if vit else _resnet_path)(variable.path)
        values[path] = array[None] if path == "position_embedding/embeddings" else array
    return values


def _keras_hub():
    try:
        import keras_hub
    except ImportError as error:
        raise ImportError(
            "keras-hub presets need the keras-hub package: pip install 'keras-resvit[hub]'."
        ) from error
    return keras_hub


def preset_class_name(folder) -> str | None:
    """The backbone class a keras-hub preset folder holds, or None for any other folder."""
    config = Path(folder) / "config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text()).get("class_name")
    except (ValueError, AttributeError):
        return None


def load_preset(folder):
    """`keras_hub.models.Backbone.from_preset(folder)`, refusing backbones ours cannot take."""
    class_name = preset_class_name(folder)
    if class_name not in BACKBONES:
        raise ValueError(
            f"weights={str(folder)!r} is a folder but not a keras-hub preset of one of "
            f"{list(BACKBONES)} (its config.json names {class_name!r})."
        )
    return _keras_hub().models.Backbone.from_preset(str(folder))


def fill_from_backbone(model, backbone) -> keras.Model:
    """Copies a keras-hub backbone's weights into `model` (ours, of the same architecture);
    a classifier of ours (`predictions`, `pre_logits`) keeps its own weights.

    Raises:
        ValueError: `model` has another architecture: other shapes (naming the layer), or a
            v1 ResNet (its bottlenecks stride their 1x1, keras-hub's their 3x3).
    """
    source = f"keras-hub {type(backbone).__name__} {backbone.name!r}"
    if type(backbone).__name__ == "ResNetBackbone":  # v1.5 (see the module docstring)
        check_bottleneck_stride(model, "v1.5", source)
    return assign_weights(model, backbone_values(backbone), source, ("predictions", "pre_logits"))


def from_keras_hub_vit(backbone, *, preprocessing: str | None = "inception") -> keras.Model:
    """Converts a keras-hub `ViTBackbone` into our ViT with the same outputs.

    The result is `build_vit(..., include_top=False, pooling=None)`: it returns every token
    after the final LayerNorm (class token first), as the backbone does, but takes raw 0-255
    pixels and normalizes inside. keras-hub's presets feed [-1, 1] images ("inception"); pass
    the preset that matches the backbone's image converter.

    Args:
        backbone: a `keras_hub.models.ViTBackbone` (any preset's config: class token, biases,
            LayerNorm epsilon 1e-6, channels-last).
        preprocessing: normalization preset inside our model.

    Returns:
        A `keras.Model`; `ours(x) == backbone(normalized x)`.

    Raises:
        ValueError: not a ViTBackbone, or a config option our ViT does not have.

    Example:
    >>> from keras_resvit.weights.keras_hub import from_keras_hub_vit
    >>> import numpy as np
    >>> import keras_hub
    >>> backbone = keras_hub.models.ViTBackbone(  # or .from_preset("vit_base_patch16_224_imagenet")
    ...     image_shape=(32, 32, 3), patch_size=8, num_layers=1, num_heads=2, hidden_dim=16,
    ...     mlp_dim=32)
    >>> model = from_keras_hub_vit(backbone)
    >>> x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    >>> ours, theirs = model(x), backbone(x / 127.5 - 1)
    >>> bool(np.allclose(ours, theirs, atol=1e-4))
    True
    """
    if type(backbone).__name__ != "ViTBackbone":
        raise ValueError(
            f"backbone of type {type(backbone).__name__} is not a keras_hub.models.ViTBackbone."
        )
    _, arguments = backbone_arguments("ViTBackbone", backbone.get_config())
    model = build_vit(
        None,
        include_top=False,
        pooling=None,
        preprocessing=preprocessing,
        name=f"vit_from_{backbone.name}",
        **arguments,
    )
    return fill_from_backbone(model, backbone)


def _vit_options(layers) -> dict:
    """The `build_vit` options that `_VIT_HOLDS` lists, read from our ViT's `{name: layer}`."""
    pools = {"token_pool": "token", "gap_pool": "gap", "map_probe": "map"}
    registers = layers.get("register_tokens")
    scale = layers.get("encoder_block1_attention_layer_scale")
    return {
        "pooling": next((pooling for name, pooling in pools.items() if name in layers), None),
        "position_embedding": layers["position_embedding"].kind,
        "num_registers": 0 if registers is None else registers.num_registers,
        "layer_scale_init": None if scale is None else scale.init_value,
        "qk_norm": bool(layers["encoder_block1_attention"].qk_norm),
        "fc_norm": "fc_norm" in layers,
    }


def _check_vit_options(model, layers):
    """A ViT with an option keras-hub's ViTBackbone cannot hold: one ValueError naming it."""
    for option, value in _vit_options(layers).items():
        valid = _VIT_HOLDS[option]
        if value not in valid:
            raise ValueError(
                f"model={model.name!r} has {option}={value!r}, which keras-hub's ViTBackbone "
                f"cannot hold; it holds only {option}={' or '.join(map(repr, valid))} (a class "
                "token and learned position embeddings; no registers, LayerScale, QK-norm or "
                "fc_norm)."
            )


def _hub_config(model) -> tuple:
    """The keras-hub backbone class and config with `model`'s architecture, or ValueError."""
    config = {layer.name: layer for layer in model.layers}
    if is_vit(model):
        _check_vit_options(model, config)
        attention = config["encoder_block1_attention"]
        blocks = sum(name.endswith("_attention") for name in config)
        kernel = config["patch_embedding"].kernel
        return "ViTBackbone", {
            "image_shape": tuple(model.input_shape[1:]),
            "patch_size": int(kernel.shape[0]),
            "num_layers": blocks,
            "num_heads": attention.num_heads,
            "hidden_dim": int(kernel.shape[-1]),
            "mlp_dim": int(config["encoder_block1_mlp_dense1"].kernel.shape[-1]),
        }
    blocks = tuple(
        sum(name.startswith(f"stage{stage}_block") and name.endswith("_conv1") for name in config)
        for stage in (1, 2, 3, 4)
    )
    block_type = "bottleneck_block" if "stage1_block1_conv3" in config else "basic_block"
    # v1.5: a bottleneck strides in its 3x3; no pre-activation (v2) or GroupNorm (BiT); the
    # 7x7 stem and strided projections (not ResNet-D's deep stem and average-pool shortcuts).
    v15 = block_type == "basic_block" or config["stage2_block1_conv1"].strides == (1, 1)
    resnet_d = any(name.endswith("_shortcut_avg_pool") for name in config)
    plain_stem = "stem_bn" in config and "stem_conv" in config
    if (block_type, blocks) in _RESNET_DEPTHS and v15 and plain_stem and not resnet_d:
        return "ResNetBackbone", {
            **_RESNET_FIXED,
            "stackwise_num_filters": [64, 128, 256, 512],
            "stackwise_num_blocks": list(blocks),
            "stackwise_num_strides": [1, 2, 2, 2],
            "block_type": block_type,
            "use_pre_activation": False,
            "image_shape": tuple(model.input_shape[1:]),
        }
    raise ValueError(
        f"model={model.name!r} is neither a ViT nor a ResNet-18/34/50/101/152 (v1.5, 7x7 stem, "
        "strided projections) that keras-hub's ViTBackbone or ResNetBackbone can hold."
    )


def to_keras_hub(model: keras.Model):
    """A keras-hub `ViTBackbone` or `ResNetBackbone` holding `model`'s weights (its classifier
    and normalization left out: the backbone takes normalized images, as keras-hub's do).

    Raises:
        ValueError: `model` is not a `keras.Model`, or has no keras-hub counterpart (see
            `backbone_arguments`).
        ImportError: keras-hub is not installed.
    """
    check_model("model", model)
    class_name, config = _hub_config(model)
    backbone = getattr(_keras_hub().models, class_name)(**config)
    ours = {variable.path: variable for variable in model.weights}
    rename = _vit_path if class_name == "ViTBackbone" else _resnet_path
    paths = {variable.path: rename(variable.path) for variable in backbone.weights}
    left_out = sorted(
        path
        for path in set(ours) - set(paths.values())
        if not path.startswith(("predictions", "pre_logits", "preprocessing"))
    )
    if left_out:  # e.g. squeeze-and-excitation gates: keras-hub's backbone has none
        raise ValueError(
            f"model={model.name!r} has weights keras-hub's {class_name} has no place for: "
            f"{left_out[:5]}{' ...' if len(left_out) > 5 else ''}."
        )
    arrays = {}
    for variable in backbone.weights:
        path = paths[variable.path]
        array = keras.ops.convert_to_numpy(ours[path])
        array = array[0] if path == "position_embedding/embeddings" else array
        if tuple(array.shape) != tuple(variable.shape):  # e.g. a width multiplier
            raise ValueError(
                f"model={model.name!r} has {path} of shape {tuple(array.shape)}, where "
                f"keras-hub's {class_name} of the same configuration has "
                f"{tuple(variable.shape)}: keras-hub builds no such {class_name} (e.g. of "
                "other widths); only the papers' architectures convert."
            )
        arrays[variable.path] = array
    for variable in backbone.weights:
        variable.assign(arrays[variable.path])
    return backbone


def _is_preset_file(path: Path) -> bool:
    """Whether `path` is a preset's config.json naming a backbone of `BACKBONES` (as
    `save_to_preset` writes it) or its metadata.json."""
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):  # a folder, unreadable, not UTF-8 or not JSON
        return False
    if not isinstance(content, dict):
        return False
    if path.name == "metadata.json":
        return "keras_hub_version" in content
    class_name = content.get("class_name")
    return (
        class_name in BACKBONES
        and content.get("registered_name") == f"keras_hub>{class_name}"
        and isinstance(content.get("config"), dict)
    )


def _check_earlier_preset(folder):
    """`folder` must be missing, empty or an earlier preset: its files are read, not only
    named, so a user's own config.json is never taken for a preset's.

    Raises:
        ValueError: naming the folder and the first file that is not a preset's.
    """
    path = check_replaceable_folder("folder", folder, *PRESET)
    for name in ("config.json", "metadata.json"):
        if (path / name).exists() and not _is_preset_file(path / name):
            raise ValueError(
                f"folder={str(folder)!r} holds {name}, which is not the {name} of a keras-hub "
                f"preset of one of {list(BACKBONES)}; saving a preset there would replace it. "
                "A preset replaces only an earlier preset: choose a new or empty folder."
            )


def save_keras_hub_preset(model: keras.Model, folder) -> Path:
    """Writes `model` as a keras-hub preset folder that `keras_hub.models.Backbone.from_preset`
    loads (see `to_keras_hub`); written whole or not at all, replacing only an earlier preset
    (a folder whose config.json and metadata.json are a keras-hub ViT or ResNet preset's).

    Returns:
        The folder's path.

    Raises:
        ValueError: `model` is not a `keras.Model` or has no keras-hub counterpart, or
            `folder` holds other files
            (a config.json or metadata.json of its own included).
        ImportError: keras-hub is not installed.

    Example:
    >>> from keras_resvit.weights.keras_hub import save_keras_hub_preset, preset_class_name
    >>> import keras_resvit as kr
    >>> model = kr.build_vit("Ti/16", image_size=32, patch_size=8)
    >>> save_keras_hub_preset(model, "vit_preset")
    PosixPath('vit_preset')
    >>> preset_class_name("vit_preset")
    'ViTBackbone'
    """
    backbone = to_keras_hub(model)
    _check_earlier_preset(folder)
    with atomic_folder("folder", folder, *PRESET) as tmp:
        backbone.save_to_preset(str(tmp))
        _check_earlier_preset(folder)  # again, just before the swap
    return Path(folder)
