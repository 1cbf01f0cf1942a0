"""Pieces every builder shares: the raw-pixel input, argument checks, the classifier head and
head replacement."""

import functools
import inspect

import keras
import numpy as np

from keras_resvit.base.backend import dtype_policy
from keras_resvit.base.validation import (
    check_bool,
    check_choice,
    check_model,
    check_num_classes,
    numpy_hint,
)
from keras_resvit.layers.normalization import RGB_PRESETS, PixelMean, preprocessing_layers
from keras_resvit.layers.vit_layers import PositionEmbedding

POOLINGS = (None, "avg", "max")
# The builders' `dtype`: a Keras dtype policy name (or a `keras.DTypePolicy` of one).
DTYPES = ("float32", "mixed_float16", "mixed_bfloat16", "float16", "bfloat16")


def checked_dtype(dtype):
    """The dtype policy name of a builder's `dtype` (None stays None).

    Raises:
        ValueError: not one of `DTYPES`, nor a `keras.DTypePolicy` of one.
    """
    if dtype is None:
        return None
    name = dtype.name if isinstance(dtype, keras.DTypePolicy) else dtype
    if not isinstance(name, str) or name not in DTYPES:
        raise ValueError(
            f"dtype={dtype!r} is not valid; expected None (the global policy), one of "
            f"{list(DTYPES)} or a keras.DTypePolicy of one."
        )
    return name


def with_dtype(builder):
    """`builder` with the keyword-only `dtype` (before `name`): the model is built under
    that global dtype policy (None: the current one), which each layer keeps in its config,
    so a `.keras` file reloads with it."""
    signature = inspect.signature(builder)
    parameters = list(signature.parameters.values())
    dtype = inspect.Parameter("dtype", inspect.Parameter.KEYWORD_ONLY, default=None)
    before_name = [p.name for p in parameters].index("name")
    parameters.insert(before_name, dtype)

    @functools.wraps(builder)
    def build(*args, dtype=None, **kwargs):
        policy = checked_dtype(dtype)
        if policy is None:
            return builder(*args, **kwargs)
        with dtype_policy(policy):
            return builder(*args, **kwargs)

    build.__signature__ = signature.replace(parameters=parameters)
    return build


def image_inputs(input_shape, preprocessing):
    """The model's input of raw 0-255 pixels, named "images", and the tensor the normalization
    preset `preprocessing` (`keras_resvit.layers.normalization`) makes of it.

    Returns:
        `(inputs, x)`: the `keras.Input` and the normalized tensor (`inputs` itself for None).

    Raises:
        ValueError: an unknown preset.
    """
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = inputs
    for layer in preprocessing_layers(preprocessing):
        x = layer(x)
    return inputs, x


def check_input_shape(input_shape, min_size, preprocessing, *, min_reason="", fixed_reason=""):
    """Validates a builder's `input_shape` (height, width, channels), or one ValueError.

    Args:
        input_shape: the argument; None height and width are allowed unless `fixed_reason`.
        min_size: the smallest height and width the net takes, and `min_reason` why.
        preprocessing: the normalization preset (RGB presets need 3 channels, "pixel_mean"
            a fixed size).
        fixed_reason: why height and width must be ints ("" allows None).
    """
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        raise ValueError(
            f"input_shape={input_shape!r} must be (height, width, channels), e.g. (224, 224, 3)."
        )
    hint = numpy_hint(tuple(input_shape))
    if hint:
        raise ValueError(f"input_shape={input_shape!r} is not valid{hint}.")
    shape = tuple(input_shape)
    *spatial, channels = shape
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise ValueError(
            f"input_shape={shape!r} has channels={channels!r}; expected a positive int, e.g. 3 "
            "for RGB."
        )
    if preprocessing == "pixel_mean":
        fixed_reason = "preprocessing='pixel_mean' subtracts a mean image"
    first = spatial[0]
    if type(first) is int and first in (1, 3, 4) and first < min_size <= channels:
        # (3, 224, 224), too small as it stands: channels first, which the models do not take.
        raise ValueError(
            f"input_shape={shape!r} reads as channels first; the models take channels last: "
            f"input_shape={(*shape[1:], first)!r}."
        )
    for size in spatial:
        if size is None and fixed_reason:
            raise ValueError(
                f"input_shape={shape!r}: {fixed_reason}, so height and width must be fixed ints."
            )
        if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
            raise ValueError(f"input_shape={shape!r} must hold int (or None) height and width.")
        if size is not None and size < min_size:
            raise ValueError(
                f"input_shape={shape!r} is too small: {min_reason}height and width must be >= "
                f"{min_size}{'' if fixed_reason else ' (or None)'}."
            )
    if preprocessing in RGB_PRESETS and channels != 3:
        raise ValueError(
            f"input_shape={shape!r} has {channels} channels but preprocessing={preprocessing!r} "
            'needs 3 (RGB); use preprocessing=None or "inception" for other channel counts.'
        )


def classifier_head(x, num_classes, pooling, classifier_activation):
    """Global pooling + dense classifier named "predictions" (kept float32 under mixed
    precision, so the softmax is computed in full precision)."""
    layers = keras.layers
    pool = layers.GlobalMaxPooling2D if pooling == "max" else layers.GlobalAveragePooling2D
    x = pool(name=f"{pooling or 'avg'}_pool")(x)
    return predictions_layer(num_classes, classifier_activation)(x)


def pooled_features(x, pooling):
    """Without the classifier: the feature map, or its global average / max ("avg_pool",
    "max_pool")."""
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def predictions_layer(num_classes, classifier_activation, kernel_initializer="glorot_uniform"):
    """The dense classifier named "predictions", kept float32 under mixed precision."""
    mixed = keras.config.dtype_policy().name.startswith("mixed")
    return keras.layers.Dense(
        num_classes,
        activation=classifier_activation,
        kernel_initializer=kernel_initializer,
        dtype="float32" if mixed else None,
        name="predictions",
    )


def check_head_arguments(
    include_top, num_classes, pooling, classifier_activation, poolings=POOLINGS, *, top_pools=True
):
    """Validates the keras.applications-style head arguments shared by every builder; ViTs pass
    their own `poolings`. A builder whose classifier ignores `pooling` (one that flattens the
    feature map) passes `top_pools=False`, so a `pooling` given with the top is refused rather
    than ignored."""
    check_choice("pooling", pooling, poolings)
    check_bool("include_top", include_top)
    if include_top and not top_pools and pooling is not None:
        raise ValueError(
            f"pooling={pooling!r} applies only with include_top=False: this model's classifier "
            "has its own fixed head; pass pooling=None, or include_top=False for pooled features."
        )
    if include_top:
        check_num_classes("num_classes", num_classes)
    if classifier_activation is not None:
        try:
            keras.activations.get(classifier_activation)
        except (ValueError, TypeError) as error:
            names = ["softmax", "sigmoid", "linear", None]
            raise ValueError(
                f"classifier_activation={classifier_activation!r} is not a Keras activation; "
                f"e.g. {names}."
            ) from error


def layer_config(config, name):
    """The config dict of the layer called `name` inside a functional model's config."""
    return next(entry["config"] for entry in config["layers"] if entry["name"] == name)


def functional_model(model, needs: str):
    """`model` as a functional model, whose config rebuilds it: `model` itself, or for a
    Sequential built on an input the functional model of its layers; one ValueError for a
    model without a graph of layers (subclassed, or a Sequential never built). `needs` says
    who requires it ("replace_head")."""
    check_model("model", model)
    if isinstance(model, keras.Sequential):
        try:
            (inputs,), (outputs,) = model.inputs, model.outputs  # a Sequential's one of each
            return keras.Model(inputs, outputs, name=model.name)
        except (AttributeError, ValueError):
            pass
    else:
        try:
            config = model.get_config()
        except (NotImplementedError, TypeError, ValueError, AttributeError):
            config = None
        if isinstance(config, dict) and "input_layers" in config:
            return model
    raise ValueError(
        f"model={model.name!r} ({type(model).__name__}) is not a functional model: {needs} "
        "rebuilds a model from its graph of layers; pass a functional model (e.g. from "
        "kr.create_model, or keras.Model(inputs, outputs)) or a Sequential built on a "
        "keras.Input."
    )


def rebuild_model(model, config, new_weights=None):
    """A new functional model from an edited `model.get_config()`, weights copied by layer name.

    Args:
        model: the functional model whose weights are copied.
        config: `model.get_config()`, edited.
        new_weights: optional `(old_layer, new_layer) -> list of arrays or None`; None keeps
            the new layer's initial weights. By default every layer's weights are copied.

    Returns:
        A new `keras.Model` that shares no state with `model`.
    """
    for entry in config["layers"]:
        # Saved build shapes would build the layers for the old shapes; let the new graph
        # build every layer from its actual inputs instead.
        entry.pop("build_config", None)
    rebuilt = keras.Model.from_config(config)
    for layer in rebuilt.layers:
        if not layer.weights:
            continue
        old = model.get_layer(layer.name)
        values = new_weights(old, layer) if new_weights else old.get_weights()
        if values is not None:
            layer.set_weights(values)
    return rebuilt


def leaf_layers(model):
    """Every layer of `model` that is not itself a model, nested models' layers included."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


def low_precision(model):
    """The dtype policy of `model`'s layers that compute in less than float32 (e.g.
    "mixed_bfloat16", as `kr.train`'s precision="auto" trains on GPUs and TPUs), or None.
    Layers quantized by `model.quantize` are not counted (see `_check_keras_quantization`)."""
    for layer in leaf_layers(model):
        policy = layer.dtype_policy
        if getattr(policy, "quantization_mode", None) is None and policy.compute_dtype in (
            "bfloat16",
            "float16",
        ):
            return policy.name
    return None


def is_vit(model) -> bool:
    """Whether a model is a Vision Transformer (plain or hybrid): it has position embeddings."""
    return any(isinstance(layer, PositionEmbedding) for layer in model.layers)


def classifier_layer(model, needs):
    """The model's Dense classifier named "predictions"; `needs` says who requires it."""
    names = [layer.name for layer in model.layers]
    if "predictions" not in names or not isinstance(
        model.get_layer("predictions"), keras.layers.Dense
    ):
        raise ValueError(
            f"model={model.name!r} has no Dense layer named 'predictions'; {needs} built with "
            "include_top=True."
        )
    return model.get_layer("predictions")


def output_layer(model):
    """The layer that makes `model`'s first output, looked for inside nested models: a
    classifier wrapped in a `keras.Sequential` or called by another functional model ends in
    the wrapped model's last layer."""
    layer = model
    for _ in range(64):  # a chain of wrappers, not a cycle
        if not isinstance(layer, keras.Model):
            return layer
        try:
            inner = layer.outputs[0]._keras_history.operation
        except (AttributeError, IndexError, TypeError, ValueError):  # a subclassed model
            inner = layer.layers[-1] if layer.layers else None
        if inner is None or inner is layer:
            return layer
        layer = inner
    return layer


_HEADS = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Activation)
_HEADS += (keras.layers.Softmax,)


def check_classifier(model, needs: str):
    """Refuses a model that does not end in a classifier (one score per class): features
    (`include_top=False`) would be scored as if each dimension were a class.

    Args:
        model: the model.
        needs: who requires the classifier, for the message ("train() needs ...").

    Raises:
        ValueError: a multi-output model, an output that is not (batch, classes), or a last
            layer (`output_layer`, inside a wrapped model too) that is not a Dense /
            activation layer.
    """
    last, shape = output_layer(model), model.output_shape
    if isinstance(shape, list) or len(shape) != 2 or not isinstance(last, _HEADS):
        raise ValueError(
            f"model {model.name!r} ends in {type(last).__name__} {last.name!r} with output "
            f"shape {shape}, not a classifier: {needs}. Build it with include_top=True (e.g. "
            "kr.create_model(name, num_classes=10)), or end it with a Dense classifier."
        )


def classifier_activation(model) -> str | None:
    """The name of the activation a classifier's outputs come out of: "softmax" (a
    `Softmax` layer too), "linear" (logits), "sigmoid", ...; None where the model does not
    end in a classifier layer (`check_classifier`): features, or outputs of another kind."""
    last = output_layer(model)
    if isinstance(last, keras.layers.Softmax):
        return "softmax"
    if not isinstance(last, _HEADS):
        return None
    return getattr(getattr(last, "activation", None), "__name__", "linear")


def outputs_logits(model) -> bool:
    """Whether a classifier's outputs are logits (no activation) rather than probabilities
    (softmax, or another activation such as a sigmoid, whose outputs a loss must not take for
    logits)."""
    return classifier_activation(model) == "linear"


# Activations whose outputs rank classes as probabilities do: `probabilities` maps them onto
# probabilities (a softmax of logits, the exponential of log-probabilities).
SCORE_ACTIVATIONS = ("softmax", "sigmoid", "linear", "log_softmax")


def check_score_activation(activation, model=None):
    """Refuses a classifier activation outside `SCORE_ACTIVATIONS` (a tanh or a relu gives
    scores that are neither probabilities nor logits); `model` names the model."""
    if activation not in SCORE_ACTIVATIONS:
        who = f"model {model!r}" if model else "the model"
        raise ValueError(
            f"{who} ends in a {activation} activation, whose outputs are neither "
            "probabilities nor logits: its classes have no probabilities to report; valid "
            f"classifier activations: {', '.join(SCORE_ACTIVATIONS)} (None: logits)."
        )


def check_pixel_means(model) -> None:
    """Refuses a model whose `PixelMean` layer (`preprocessing="pixel_mean"`) holds no mean
    image yet: it subtracts zeros, so the model computes on raw pixels what it was built to
    compute on centred ones. `kr.train` sets the mean; scoring and export need it set."""
    for layer in leaf_layers(model):
        if isinstance(layer, PixelMean) and not layer.adapted:
            raise ValueError(
                f"model {model.name!r} has a PixelMean layer ({layer.name!r}, "
                "preprocessing='pixel_mean') without its mean image: it would subtract zeros. "
                "Train the model with kr.train, which sets the mean from the training images, "
                f"or call model.get_layer({layer.name!r}).adapt(training_images) first."
            )


def score_activation(model) -> str | None:
    """`classifier_activation(model)`, refused (`check_score_activation`) where its outputs
    are neither probabilities nor logits; None for a model that ends in no classifier. A
    model without its pixel mean is refused too (`check_pixel_means`)."""
    check_pixel_means(model)
    activation = classifier_activation(model)
    if activation is not None:
        check_score_activation(activation, model.name)
    return activation


def probabilities(scores, activation, model=None):
    """`scores` (N, classes) of a classifier whose outputs come out of `activation`, as
    probabilities: the softmax of logits ("linear"), the exponential of a "log_softmax",
    softmax and sigmoid outputs as they are.

    Raises:
        ValueError: another activation (`check_score_activation`); `model` names the model.
    """
    check_score_activation(activation, model)
    if activation in ("softmax", "sigmoid"):
        return scores
    scores = np.asarray(scores, "float64")
    if activation == "log_softmax":
        return np.exp(scores).astype("float32")
    exp = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return (exp / exp.sum(axis=-1, keepdims=True)).astype("float32")


def replace_head(model: keras.Model, num_classes: int) -> keras.Model:
    """A copy of `model` with a fresh `num_classes`-way classifier and every other weight kept.

    ViTs get a zero-initialized classifier, as Dosovitskiy et al. do for fine-tuning, so the new
    model starts at uniform predictions; other families get the Dense layer's default
    initialization. The classifier activation and dtype are kept. The new classifier is
    trainable, also in a frozen model, whose other layers stay frozen (a linear probe). Works
    on any functional model whose classifier is a Dense layer named "predictions" (every
    builder here, with `include_top=True`), also after loading from a `.keras` file.

    Args:
        model: a functional model with a Dense layer named "predictions".
        num_classes: size of the new classifier.

    Returns:
        A new `keras.Model`; `model` is left unchanged.

    Raises:
        ValueError: `num_classes` is not a positive int, or `model` is not a functional (or
            Sequential) model whose output is a Dense layer named "predictions".

    Example:
    >>> import keras_resvit as kr
    >>> model = kr.replace_head(kr.create_model("resnet20"), 100)
    >>> model.output_shape
    (None, 100)
    """
    model = functional_model(model, "replace_head")
    classifier_layer(model, "replace_head needs a classifier model")
    check_head_arguments(True, num_classes, None, None)
    config = model.get_config()
    outputs = config["output_layers"]  # ["name", 0, 0] for one output, else a list of them
    outputs = [outputs[0]] if isinstance(outputs[0], str) else [entry[0] for entry in outputs]
    if outputs != ["predictions"]:
        raise ValueError(
            f"model={model.name!r} gives its output from layer(s) {outputs}, not from its "
            "classifier 'predictions'; replace_head needs a model whose one output is the "
            "'predictions' Dense layer."
        )
    head = layer_config(config, "predictions")
    head["units"] = num_classes
    # A frozen model (`model.trainable = False`, or each layer frozen) keeps its layers
    # frozen, but the new classifier is there to be trained: freezing the base and replacing
    # the head is how one fine-tunes a linear probe.
    head["trainable"] = config["trainable"] = True
    if is_vit(model):
        head["kernel_initializer"] = keras.initializers.serialize(keras.initializers.Zeros())
    return rebuild_model(
        model, config, lambda old, new: None if new.name == "predictions" else old.get_weights()
    )
