"""Weight import: published weights by name (`catalog`, `download`), and the converters of
keras.applications ResNets, keras-hub ViTs, original ViT and BiT checkpoints and timm /
torchvision state dicts.

Every converter returns one of our models whose outputs match the source's (on raw 0-255
pixels; normalization is inside our models) and raises ValueError naming the layer and shapes
when the weights belong to another architecture.
"""

import keras

from keras_resvit.base.files import as_path
from keras_resvit.weights.bit_npz import load_bit_npz
from keras_resvit.weights.catalog import (
    CATALOG,
    NamedWeights,
    list_weights,
    register_weights,
    weights_info,
)
from keras_resvit.weights.download import WeightsDownloadError, cache_folder
from keras_resvit.weights.formats import build_with_weights, weights_format
from keras_resvit.weights.keras_applications import from_keras_applications
from keras_resvit.weights.keras_hub import from_keras_hub_vit, save_keras_hub_preset, to_keras_hub
from keras_resvit.weights.state_dicts import SUFFIXES, read_state_dict
from keras_resvit.weights.timm import load_timm
from keras_resvit.weights.vit_npz import load_vit_npz


def load_weights(path, **kwargs) -> keras.Model:
    """Builds our model from a weights file, picking the converter by its format.

    `.npz`: an original ViT checkpoint (`load_vit_npz`), a BiT checkpoint (`load_bit_npz`) or a
    timm state dict; `.safetensors`/`.pth`/`.pt`/`.bin`: a timm/torchvision state dict
    (`load_timm`); `.h5`: keras.applications ResNet weights (`from_keras_applications`).
    Keyword arguments go to the converter. To fill a registry model instead, use
    `create_model(name, weights=path)`.

    Example:
    >>> from keras_resvit.weights import load_weights
    >>> import keras
    >>> source = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
    >>> source.save("resnet50.h5")  # as keras' own resnet50_weights_tf_dim_ordering_tf_kernels.h5
    >>> load_weights("resnet50.h5", architecture="ResNet50", input_shape=(64, 64, 3)).name
    'resnet50v1'
    >>> # An original ViT checkpoint, downloaded from the ViT authors' bucket:
    >>> model = load_weights("ViT-B_16.npz", image_size=384)  # doctest: +SKIP
    """
    path = as_path("path", path)
    suffix = path.suffix.lower()
    if suffix in SUFFIXES:
        fmt = weights_format(path)
        if fmt == "vit_npz":
            return load_vit_npz(path, **kwargs)
        if fmt == "bit_npz":
            return load_bit_npz(path, **kwargs)
        return load_timm(path, **kwargs)
    if suffix == ".h5":
        return from_keras_applications(path, **kwargs)
    raise ValueError(
        f"path={str(path)!r} has suffix {suffix!r}; expected .npz (original ViT, BiT or timm), "
        ".safetensors/.pth/.pt/.bin (timm/torchvision) or .h5 (keras.applications ResNet)."
    )


__all__ = [
    "CATALOG",
    "NamedWeights",
    "WeightsDownloadError",
    "build_with_weights",
    "cache_folder",
    "from_keras_applications",
    "from_keras_hub_vit",
    "load_bit_npz",
    "load_timm",
    "load_vit_npz",
    "list_weights",
    "load_weights",
    "read_state_dict",
    "register_weights",
    "save_keras_hub_preset",
    "to_keras_hub",
    "weights_format",
    "weights_info",
]
