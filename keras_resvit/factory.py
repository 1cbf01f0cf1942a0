"""`create_model(name, weights=...)`: a registered model, built fresh or from a weights file.

The registry (`models.registry`) holds names and builder arguments; the converters
(`weights`) read other formats into our models; this module puts the two together, as timm's
`_factory` sits above its `_registry` and `_builder`.
"""

import keras

from keras_resvit.base.class_names import set_class_names
from keras_resvit.models.registry import builder, check_overrides, get_spec
from keras_resvit.weights import build_with_weights
from keras_resvit.weights.catalog import class_names_of, named_weights
from keras_resvit.weights.download import fetch


def create_model(name: str, weights=None, **overrides) -> keras.Model:
    """Builds a registered model; keyword overrides replace the entry's arguments.

    Args:
        name: a registry name, e.g. "resnet50", "resnet20", "bit_r50x1".
        weights: None (fresh initialization); the name of published weights
            (`kr.list_weights(name)`, e.g. "imagenet"), downloaded once, verified and cached
            (`keras_resvit.weights.download`), with their class names; or a weights file, its
            converter picked from the file: `.npz` (original ViT, BiT or timm),
            `.safetensors`/`.pth` (timm/torchvision), keras.applications `.h5`, or our own
            `.keras`/`.weights.h5`. Build arguments the weights fix (keras.applications' v1
            layout, a checkpoint's number of classes, resolution and preprocessing, a `.keras`
            file's preprocessing and ViT resolution) apply unless overridden; the architecture
            is always the name's (with the overrides): weights of another one are refused,
            including those of the same shapes that compute otherwise (a `.keras` file of
            other layers, torchvision/timm/keras-hub v1.5 weights for a v1 ResNet).
        **overrides: builder arguments, e.g. `num_classes=10, input_shape=(64, 64, 3)`.

    Returns:
        A `keras.Model` named `name`.

    Raises:
        ValueError: unknown name (with the closest names), an invalid override, or weights
            of another format or architecture (naming the layer and shapes, or the layers
            and arguments that compute otherwise).
        FileNotFoundError: `weights` is neither a file nor a name of published weights.
        WeightsDownloadError: published weights could not be downloaded, or the download
            failed its hash check (the message says how to pass a local file instead).

    Example:
    >>> import keras_resvit as kr
    >>> kr.create_model("resnet20").count_params() > 0
    True
    """
    spec = get_spec(name)
    check_overrides(spec.family, overrides)
    defaults = {"name": name, **spec.kwargs}
    if weights is None:
        return builder(spec.family)(**{**defaults, **overrides})
    named = named_weights(name, weights)
    if named is None:
        return build_with_weights(builder(spec.family), spec.family, defaults, overrides, weights)
    defaults.update(named.build_arguments(spec.family))
    path = fetch(named)
    model = build_with_weights(builder(spec.family), spec.family, defaults, overrides, path)
    names = class_names_of(named)
    if names is not None and model.output_shape[-1] == len(names):
        set_class_names(model, names)
    return model
