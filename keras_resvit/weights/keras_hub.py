"""keras-hub's `ViTBackbone` into our ViT (without classifier, every token out).

keras-hub's ViT has the same pieces as ours under other names (`vit_encoder/
transformer_block_1/mha/query/kernel` is our `encoder_block1_attention/query/kernel`), so the
arrays are copied as they are; only the position embeddings gain a batch axis. keras-hub is
not imported: the backbone is read through its config and variable paths.
"""

import re

import keras

from keras_resvit.models.vit import LN_EPSILON, build_vit
from keras_resvit.weights.common import assign_weights

_EMBEDDING = "vit_patching_and_embedding"
_BLOCK = r"vit_encoder/transformer_block_(\d+)"
_RENAMES = (
    (rf"{_EMBEDDING}/class_token$", "class_token/token"),
    (rf"{_EMBEDDING}/patch_embedding/(\w+)$", r"patch_embedding/\1"),
    (rf"{_EMBEDDING}/position_embedding/embeddings$", "position_embedding/embeddings"),
    (rf"{_BLOCK}/ln_(\d)/(\w+)$", r"encoder_block\1_norm\2/\3"),
    (rf"{_BLOCK}/mha/(\w+)/(\w+)$", r"encoder_block\1_attention/\2/\3"),
    (rf"{_BLOCK}/mlp/dense_(\d)/(\w+)$", r"encoder_block\1_mlp_dense\2/\3"),
    (r"vit_encoder/ln/(\w+)$", r"encoder_norm/\1"),
)
# keras-hub options our ViT has no counterpart for, with the value ours implies.
_FIXED = {
    "use_class_token": True,
    "use_mha_bias": True,
    "use_mlp_bias": True,
    "use_patch_bias": True,
    "layer_norm_epsilon": LN_EPSILON,
    "data_format": "channels_last",
}


def _our_path(path):
    for pattern, replacement in _RENAMES:
        if re.match(pattern, path):
            return re.sub(pattern, replacement, path)
    raise ValueError(f"keras-hub variable {path!r} has no counterpart in our ViT.")


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
    config = backbone.get_config()
    for option, value in _FIXED.items():
        if config.get(option, value) != value:
            raise ValueError(
                f"backbone has {option}={config[option]!r}; our ViT supports only "
                f"{option}={value!r}."
            )
    patch = config["patch_size"]
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    model = build_vit(
        None,
        image_size=tuple(config["image_shape"][:2]),
        include_top=False,
        pooling=None,
        preprocessing=preprocessing,
        hidden_size=config["hidden_dim"],
        num_layers=config["num_layers"],
        num_heads=config["num_heads"],
        mlp_dim=config["mlp_dim"],
        patch_size=patch,
        name=f"vit_from_{backbone.name}",
    )
    values = {}
    for variable in backbone.weights:
        array = keras.ops.convert_to_numpy(variable)
        path = _our_path(variable.path)
        values[path] = array[None] if path == "position_embedding/embeddings" else array
    return assign_weights(model, values, f"keras-hub backbone {backbone.name!r}")
