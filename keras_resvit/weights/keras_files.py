"""Our own `.keras` files as `create_model` weights: what the file's recorded model fixes.

A `.keras` file records its model's layers, so it says more than its weights' shapes: the
preprocessing and a ViT's resolution the weights were trained with (build arguments the file
fixes unless the caller overrides them), and every layer that computes without weights or
with weights of the same shapes (a residual `Add`, a stride, the classifier's activation,
the pooling). A model that differs there would load the weights silently and compute
something else (plain-20 from ResNet-20, v1 from v1.5, softmax from logits), so
`check_architecture` compares the two graphs layer by layer.
"""

import inspect
import json
import re
import zipfile

import keras

from keras_resvit.layers.normalization import NORMALIZATION_PRESETS, preprocessing_layers

# Layers that compute nothing at inference (dropout, stochastic depth, token dropping), and the
# preprocessing, which the caller may override: skipped, their inputs passed on.
_PASSED = ("Dropout", "DropPath", "DropTokens", "SpatialDropout2D", "GaussianDropout")
# Config entries that leave what a layer computes from its weights unchanged: names, dtypes,
# initializers (e.g. `zero_init_residual`, LayerScale's initial value), and the input size,
# which a ResNet may change and a ViT's weights fix.
# Attention dropout (a `MultiHeadSelfAttention`'s `dropout`) is training-only too.
_UNCOMPARED = (
    "name",
    "trainable",
    "dtype",
    "seed",
    "batch_shape",
    "grid_size",
    "init_value",
    "dropout",
    "dynamic_size",  # the input size, as batch_shape
    "lora_rank",  # Keras saves a LoRA layer's kernel with its update merged
    "lora_alpha",
)
# Layers whose inputs follow the input size: a ViT's position embeddings also read the patch
# grid when the model takes any size.
_SIZED = ("PositionEmbedding",)
_UNCOMPARED_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
# The build argument a differing layer's name points to, for the message.
_ARGUMENTS = (
    (r"_add$|_out$", "plain"),
    (r"_shortcut", "shortcut"),
    (r"_conv\d(_pad)?$", "version"),
    (r"_(bn|gn|norm)\d*$", "norm"),
    (r"pool", "pooling"),
    (r"^predictions$", "classifier_activation"),
)


def _layers(path) -> list:
    """The serialized layers of the model in our `.keras` file `path`, [] for no functional
    model."""
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("config.json"))["config"].get("layers", [])


def comparable_config(layer):
    """A serialized layer's config without its name, dtype and trainable flag, as JSON reads
    it back (tuples as lists)."""
    skipped = ("name", "dtype", "trainable")
    return json.loads(json.dumps({k: v for k, v in layer["config"].items() if k not in skipped}))


def _preprocessing(path, layers):
    """The preprocessing preset (`layers.normalization.NORMALIZATION_PRESETS`) of the model in
    `path`, read from its serialized `layers` named "preprocessing...", compared with each
    preset's.

    Raises:
        ValueError: those layers are no preset's.
    """
    found = [
        (x["class_name"], comparable_config(x))
        for x in layers
        if str(x.get("config", {}).get("name", "")).startswith("preprocessing")
    ]
    for preset in NORMALIZATION_PRESETS:
        ours = [keras.saving.serialize_keras_object(x) for x in preprocessing_layers(preset)]
        if found == [(x["class_name"], comparable_config(x)) for x in ours]:
            return preset
    raise ValueError(
        f"weights={str(path)!r} holds a model whose preprocessing layers "
        f"{[name for name, _ in found]} are none of the presets "
        f"{list(NORMALIZATION_PRESETS)}; load the whole model with kr.load_model instead."
    )


def keras_file_layout(path, family: str) -> dict:
    """Build arguments our `.keras` file `path` fixes: its preprocessing, its classifier's
    number of classes, and a ViT's image size (its position embeddings' grid), when the
    file's input size is fixed."""
    layers = _layers(path)
    layout = {"preprocessing": _preprocessing(path, layers)}
    head = [x["config"] for x in layers if x.get("config", {}).get("name") == "predictions"]
    if head and isinstance(head[0].get("units"), int):
        layout["num_classes"] = head[0]["units"]
    if family in ("vit", "hybrid_vit"):
        size = _vit_size(layers)
        if size is not None:
            layout["image_size"] = size
    return layout


def _vit_size(layers):
    """The input size a ViT file's position embeddings were trained for: its fixed input size,
    or for a model of any size, its grid of embeddings times the patch size (None where the
    file says neither)."""
    by_class = {x["class_name"]: x.get("config", {}) for x in layers}
    shape = by_class.get("InputLayer", {}).get("batch_shape") or [None] * 4
    height, width = shape[1:3]
    if height is None or width is None:
        grid = by_class.get("PositionEmbedding", {}).get("grid_size")
        strides = by_class.get("PatchEmbedding", {}).get("strides")
        if not grid or not strides:
            return None
        height, width = (g * s for g, s in zip(grid, strides, strict=True))
    return height if height == width else (height, width)


def _sources(node):
    """The names of the layers whose outputs a serialized call (its args) reads."""
    if isinstance(node, dict):
        history = node.get("config", {}).get("keras_history")
        if node.get("class_name") == "__keras_tensor__" and history:
            return [history[0]]
        return [name for value in node.values() for name in _sources(value)]
    if isinstance(node, list):
        return [name for value in node for name in _sources(value)]
    return []


def _graph(layers) -> dict:
    """`{layer name: (class, config compared, input layer names)}` of serialized functional
    layers (in their topological order), the `_PASSED` layers skipped."""
    graph, passed = {}, {}
    # Keras marks an object shared between layers (e.g. an activation) with an id per save.
    unshared = lambda entry: {k: v for k, v in entry.items() if k != "shared_object_id"}  # noqa: E731
    for layer in json.loads(json.dumps(layers), object_hook=unshared):
        name = layer["config"]["name"]
        inputs = []
        for source in _sources(layer.get("inbound_nodes", [])):
            inputs += passed.get(source, [source])
        if layer["class_name"] in _PASSED or name.startswith("preprocessing"):
            passed[name] = inputs
            continue
        config = {
            key: value
            for key, value in layer["config"].items()
            if key not in _UNCOMPARED and not key.endswith(_UNCOMPARED_SUFFIXES)
        }
        graph[name] = (layer["class_name"], config, inputs)
    return graph


_UNKNOWN = object()
_LITERALS = (bool, int, float, str, type(None))


def _config_defaults(model) -> dict:
    """`{layer name: {argument: default}}` of `model`'s layers: their constructors' defaults
    that are plain values (which a config holds as they are)."""
    defaults = {}
    for layer in model.layers:
        try:
            parameters = inspect.signature(type(layer).__init__).parameters.values()
        except (TypeError, ValueError):
            continue
        defaults[layer.name] = {
            p.name: p.default for p in parameters if isinstance(p.default, _LITERALS)
        }
    return defaults


def _differences(found: dict, built: dict, defaults: dict) -> tuple:
    """What differs between the file's graph and the model's, and the names of the layers
    that differ in kind or config or are only in one (the build arguments' traces);
    `defaults` (`_config_defaults`) gives the value of a config key a layer leaves out."""
    differences, names = [], []
    for where, graph, other in (("the file", found, built), ("the model", built, found)):
        only = [name for name in graph if name not in other]
        if only:
            more = " ..." if len(only) > 3 else ""
            differences.append(f"layers only in {where}: {only[:3]}{more}")
            names += only
    for name in (name for name in found if name in built):
        (kind, config, inputs), (other_kind, other_config, other_inputs) = found[name], built[name]
        said = [f"is a {kind} in the file, a {other_kind} here"] if kind != other_kind else []
        for key in sorted(set(config) & set(other_config)):
            value, other = config[key], other_config[key]
            if value != other:
                said.append(f"has {key}={value!r} in the file, {other!r} here")
        # A key on one side only: an option that a layer writes only where it is not at its
        # default (a ViT attention's qk_norm), or one added since the file was saved. The
        # other side has the layer's default; an unknown default is no difference.
        for key in sorted(set(config) ^ set(other_config)):
            value = config.get(key, other_config.get(key))
            default = defaults.get(name, {}).get(key, _UNKNOWN)
            if default is not _UNKNOWN and value != default:
                mine, other = ("in the file", "here") if key in config else ("here", "in the file")
                said.append(f"has {key}={value!r} {mine}, its default {default!r} {other}")
        names += [name] if said else []
        if inputs != other_inputs and kind not in _SIZED:
            said.append(f"reads {inputs} in the file, {other_inputs} here")
        differences += [f"layer {name!r} {what}" for what in said]
    return differences, names


def check_architecture(model: keras.Model, path) -> None:
    """The model recorded in our `.keras` file `path` must compute what `model` computes,
    layer for layer, apart from training-only layers, initializers and the input size.

    Raises:
        ValueError: naming the first differing layers, what differs, and the build arguments
            that make such layers.
    """
    layers = _layers(path)
    if not layers:  # not a functional model: its weights' shapes are all there is to compare
        return
    built = _graph(model.get_config()["layers"])
    differences, names = _differences(_graph(layers), built, _config_defaults(model))
    if not differences:
        return
    more = f" (and {len(differences) - 3} more)" if len(differences) > 3 else ""
    arguments = []
    for name in names:
        for pattern, argument in _ARGUMENTS:
            if re.search(pattern, name) and argument not in arguments:
                arguments.append(argument)
    hint = f" (they differ in {', '.join(arguments)})" if arguments else ""
    raise ValueError(
        f"the file records a model of another architecture: {'; '.join(differences[:3])}"
        f"{more}. The weights would load with the same shapes but give other outputs. Build "
        f"the model with the file's arguments{hint}, or load the whole model with "
        "kr.load_model."
    )
