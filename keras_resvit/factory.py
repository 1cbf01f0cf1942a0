"""`create_model(name, weights=...)`: a registered model, built fresh or from a weights file.

The registry (`models.registry`) holds names and builder arguments; the converters
(`weights`) read other formats into our models; this module puts the two together, as timm's
`_factory` sits above its `_registry` and `_builder`.
"""

import re

import keras

from keras_resvit.base.class_names import embedded_class_names, set_class_names
from keras_resvit.models.registry import REGISTRY, builder, check_overrides, get_spec
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
        A `keras.Model` named `name`; or, where an override changes what the name fixes,
        named by what it is: the registry name of that architecture
        (`create_model("resnet20", depth=32)`: "resnet32"), else `name` with the new depth
        (`depth=8`: "resnet8"); a ViT of another patch size or widths as `build_vit` names
        it ("vit_ti16", patch_size=8: "vit_ti8").

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
    model = build_with_weights(builder(spec.family), spec.family, defaults, overrides, path)
    if named is None:
        names = embedded_class_names(path, "weights")  # a `.keras` file's
    # A new classifier (num_classes= other than the weights') has no names.
    if names is not None and model.output_shape[-1] == len(names):
        set_class_names(model, names)
    return model


# Arguments a family's builder names its model by, beside its registry arguments.
_NAMED_BY_BUILDER = {"vit": {"patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim"}}


def _model_name(name, spec, overrides):
    """`name`, unless `overrides` change an argument that tells the family's registry names
    apart (depth, version, plain, variant...; not the preprocessing): then the registry name
    of the same family and arguments; else `name` with the depth in it replaced by the new
    one ("resnet20", depth=8: "resnet8"), else `name`; None where the builder names the
    model by an overridden argument (a ViT's patch size or widths)."""
    if set(overrides) & _NAMED_BY_BUILDER.get(spec.family, set()):
        return None  # the builder names the model by what it is ("vit_ti8", "vit_d192_16")
    family = [s for s in REGISTRY.values() if s.family == spec.family]
    naming = {k for s in family for k in s.kwargs if k != "preprocessing"}
    wanted = {**spec.kwargs, **{k: v for k, v in overrides.items() if k in naming}}
    wanted = {k: v for k, v in wanted.items() if not (k == "plain" and v is False)}
    if wanted == spec.kwargs:
        return name
    same = [n for n, s in REGISTRY.items() if s.family == spec.family and s.kwargs == wanted]
    if same:
        return same[0]
    depth, new = spec.kwargs.get("depth"), wanted.get("depth")
    renamed, found = re.subn(rf"(?<!\d){depth}(?!\d)", str(new), name, count=1)
    return renamed if found and isinstance(new, int) and new != depth else name
