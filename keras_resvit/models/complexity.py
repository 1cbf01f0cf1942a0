"""Parameter and multiply-add counts of a built model (what `keras-resvit info` prints)."""

import inspect
import math

import keras

from keras_resvit.base.validation import check_bool, check_model


def count_params(model: keras.Model, trainable_only: bool = True) -> int:
    """Number of parameters: by default the trainable ones, which the papers count.

    Args:
        model: a built model.
        trainable_only: True counts the trainable weights (the papers' figure, e.g. 25,557,032
            for ResNet-50: BatchNorm's scale and offset but not its moving statistics, and
            nothing of frozen layers); False counts every weight, BatchNorm moving statistics
            included, as `model.count_params()` does.

    Raises:
        ValueError: for a model not built yet (it has no weights to count).
    """
    check_model("model", model)
    check_bool("trainable_only", trainable_only)
    if not model.built:
        raise ValueError(
            f"model={model.name!r} is not built, so it has no weights to count yet; build it "
            "on an input first (keras.Input in its layers, or model.build(input_shape))."
        )
    weights = model.trainable_weights if trainable_only else model.weights
    return sum(math.prod(w.shape) for w in weights)


def _shape(tensor):
    shape = tuple(tensor.shape)
    if any(d is None for d in shape[1:]):
        raise ValueError(
            f"input shape {shape} has unknown sizes; multiply-adds need a fixed input_shape."
        )
    return shape


def _attention_macs(layer, node, output):
    """q/k/v/output projections plus the two attention matmuls (QK^T and AV), each query
    position attending to the key positions along the layer's attention axes."""
    arguments = inspect.signature(layer.call).bind(*node.arguments.args, **node.arguments.kwargs)
    query, value = arguments.arguments["query"], arguments.arguments["value"]
    key = arguments.arguments.get("key")
    query, value = _shape(query), _shape(value)
    key = value if key is None else _shape(key)
    n_q, n_kv = math.prod(query[1:-1]), math.prod(value[1:-1])
    attended = math.prod(value[axis] for axis in layer.attention_axes)
    heads, key_dim, value_dim = layer.num_heads, layer.key_dim, layer.value_dim
    projections = (
        n_q * query[-1] * heads * key_dim
        + n_kv * key[-1] * heads * key_dim
        + n_kv * value[-1] * heads * value_dim
        + math.prod(_shape(output)[1:]) * heads * value_dim
    )
    return projections + heads * n_q * attended * (key_dim + value_dim)


def _einsum_macs(layer, inputs, output):
    """The output's size times the sizes of the contracted axes (those not in the output)."""
    operands, result = layer.equation.split("->")
    source, axes = operands.split(",")
    if len(axes) != len(layer.kernel.shape):  # an ellipsis among the kernel's axes
        raise ValueError(
            f"layer {layer.name!r} (EinsumDense {layer.equation!r}): count_macs counts "
            "equations whose kernel axes are all named."
        )
    sizes = dict(zip(axes, layer.kernel.shape, strict=True))
    # Input axes summed without meeting the kernel; around an ellipsis, named axes count from
    # the start and from the end of the input's shape.
    shape = _shape(inputs[0])
    before, _, after = source.partition("...")
    sizes.update(zip(before, shape[: len(before)], strict=True))
    sizes.update(zip(after, shape[len(shape) - len(after) :], strict=True))
    contracted = set(source.replace(".", "") + axes) - set(result)
    return math.prod(_shape(output)[1:]) * math.prod(sizes[axis] for axis in contracted)


CONVOLUTIONS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
TRANSPOSED = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)


def _positions_channels(layer, tensor):
    """(positions, channels) of a convolution's input or output: (batch, channels, *positions)
    for channels_first, (batch, *positions, channels) otherwise."""
    shape = _shape(tensor)
    if layer.data_format == "channels_first":
        return shape[2:], shape[1]
    return shape[1:-1], shape[-1]


def _conv_macs(layer, inputs, output):
    """Output positions x kernel taps x the input channels each output channel reads."""
    in_positions, channels_in = _positions_channels(layer, inputs[0])
    out_positions, channels_out = _positions_channels(layer, output)
    positions, taps = math.prod(out_positions), math.prod(layer.kernel_size)
    if isinstance(layer, DEPTHWISE):
        return positions * taps * channels_out
    if isinstance(layer, SEPARABLE):
        depthwise = channels_in * layer.depth_multiplier
        return positions * depthwise * (taps + layer.filters)
    if isinstance(layer, TRANSPOSED):  # each input position scatters a kernel
        return math.prod(in_positions) * taps * channels_in * layer.filters
    return positions * taps * (channels_in // layer.groups) * layer.filters


def _call_macs(node) -> int:
    """Multiply-adds of one call (`node`) of a layer."""
    layer, inputs, output = node.operation, list(node.input_tensors), node.output_tensors[0]
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return _attention_macs(layer, node, output)
    if isinstance(layer, keras.layers.EinsumDense):
        return _einsum_macs(layer, inputs, output)
    if isinstance(layer, keras.layers.Dense):  # on the last axis, at every other position
        return math.prod(_shape(output)[1:]) * _shape(inputs[0])[-1]
    if isinstance(layer, (*CONVOLUTIONS, *DEPTHWISE, *SEPARABLE, *TRANSPOSED)):
        return _conv_macs(layer, inputs, output)
    kernels = [w.path for w in getattr(layer, "weights", ()) if w.path.endswith("kernel")]
    if kernels:
        raise ValueError(
            f"layer {layer.name!r} ({type(layer).__name__}) has a kernel ({kernels[0]}) whose "
            "multiply-adds count_macs does not know; it counts Conv1D/2D/3D (plain, depthwise, "
            "separable, transposed), Dense, EinsumDense and MultiHeadAttention."
        )
    return 0


def layer_macs(layer) -> int:
    """Multiply-adds of the first call of a layer for one example (convs, dense, attention).

    Normalization, activations, softmax and pooling are left out, as in the papers' FLOP
    counts.
    """
    return _call_macs(layer._inbound_nodes[0])


def _nodes(model):
    """The calls (nodes) of `model`'s layer graph, inputs first, or one clear ValueError."""
    graph = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
    by_depth = getattr(graph, "_nodes_by_depth", None)
    if not by_depth:
        raise ValueError(
            f"model={model.name!r} ({type(model).__name__}) has no graph of layer calls: "
            "count_macs needs a functional or Sequential model built on a keras.Input (a "
            "subclassed model's calls are not recorded)."
        )
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def _graph_macs(model) -> int:
    total = 0
    for node in _nodes(model):
        layer = node.operation
        if isinstance(layer, keras.Model):
            total += _graph_macs(layer)  # a nested model, counted at each call
        elif node.output_tensors and not isinstance(layer, keras.layers.InputLayer):
            total += _call_macs(node)
    return total


def count_macs(model: keras.Model) -> int:
    """Multiply-adds of one forward pass for one image (the papers' "FLOPs").

    Every call of a layer counts (a layer applied twice, twice). Convolutions, dense and
    attention layers count; normalization, activations, softmax and pooling are left out, as
    in the papers' FLOP counts.

    Raises:
        ValueError: for a model that is not a functional or Sequential model built on an
            input of fixed size, or that holds a layer with a kernel of a kind not counted.

    Example:
    >>> from keras_resvit.models.complexity import count_macs
    >>> import keras_resvit as kr
    >>> round(count_macs(kr.create_model("resnet18")) / 1e9, 1)
    1.8
    """
    check_model("model", model)
    return _graph_macs(model)
