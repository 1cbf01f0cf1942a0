"""`create_model(name, weights=...)`: a registered model, built fresh or from a weights file.

The registry (`models.registry`) holds names and builder arguments; the converters
(`weights`) read other formats into our models; this module puts the two together, as timm's
`_factory` sits above its `_registry` and `_builder`.
"""

import inspect

import keras

from keras_resvit.base.class_names import embedded_class_names, set_class_names
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
            layout, a checkpoint's number of classes, a ViT checkpoint's resolution (its grid
            of position embeddings), the preprocessing) apply unless overridden: another
            `image_size` resizes the position embeddings (`resize_vit`), another
            `num_classes` gives a new classifier (`replace_head`), every other weight loaded;
            a `.keras` file's class names come with its classifier. The architecture
            is always the name's (with the overrides): weights of another one are refused,
            including those of the same shapes that compute otherwise (a `.keras` file of
            other layers, torchvision/timm/keras-hub v1.5 weights for a v1 ResNet).
        **overrides: builder arguments, e.g. `num_classes=10, input_shape=(64, 64, 3)`.

    Returns:
        A `keras.Model` named `name`; or, where an override or the weights change an
        argument the name stands for, named by what it is, as its builder names it: the
        registry name of that architecture (`create_model("resnet20", depth=32)`:
        "resnet32"; "se_resnet50", `se_ratio=None`: "resnet50"; "resnet50" with
        keras.applications' v1 weights: "resnet50v1"), else a name of its arguments
        ("resnet20", `depth=8`: "resnet8"; "vit_ti16", `num_layers=2`: "vit_d192_l2_16").

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
    defaults = {"name": _model_name(name, spec, overrides), **spec.kwargs}
    if weights is None:
        return builder(spec.family)(**{**defaults, **overrides})
    named = named_weights(name, weights)
    if named is None:
        path, names = weights, None
    else:
        defaults.update(named.build_arguments(spec.family))
        path, names = fetch(named), class_names_of(named)
    fixed = named.build_arguments(spec.family) if named else {}

    def name_of(layout):  # the weights' layout counts as overrides (a v1 file: "resnet50v1")
        return _model_name(name, spec, {**fixed, **layout, **overrides})

    model = build_with_weights(
        builder(spec.family), spec.family, defaults, overrides, path, name_of=name_of
    )
    if named is None:
        names = embedded_class_names(path, "weights")  # a `.keras` file's
    # A new classifier (num_classes= other than the weights') has no names.
    if names is not None and model.output_shape[-1] == len(names):
        set_class_names(model, names)
    return model


# The arguments a family's builder names its models by (`models.resnet.resnet_name`,
# `models.vit_config.vit_size_name`, ...): each registry name is its builder's name.
_VIT_NAMING = ("variant", "patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim")
_NAMING_ARGUMENTS = {
    "resnet": (
        *("depth", "plain", "version", "stem", "shortcut"),
        *("se_ratio", "width", "norm", "weight_standardization"),
    ),
    "vit": _VIT_NAMING,
    "hybrid_vit": ("backbone", *_VIT_NAMING),
    "vgg": ("depth",),
    "alexnet": ("layout",),
    "efficientnetv2": ("variant",),
}


def _model_name(name, spec, overrides):
    """`name`, unless `overrides` change an argument the family's builder names its models by
    (`_NAMING_ARGUMENTS`): then None, for the builder to name the model by what it is, which
    for a registered architecture is its registry name."""
    parameters = inspect.signature(builder(spec.family)).parameters
    for key in _NAMING_ARGUMENTS.get(spec.family, ()):
        given = spec.kwargs.get(key, getattr(parameters.get(key), "default", None))
        if key in overrides and overrides[key] != given:
            return None
    return name
