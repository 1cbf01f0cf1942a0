"""Parameter and multiply-add counts of a built model (what `keras-resvit info` prints)."""

import math

import keras

from keras_resvit.base.validation import check_bool, check_model
from keras_resvit.models.common import leaf_layers


def count_params(model: keras.Model, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; BatchNorm moving statistics are not parameters."""
    check_model("model", model)
    check_bool("trainable_only", trainable_only)
    weights = model.trainable_weights if trainable_only else model.weights
    return sum(math.prod(w.shape) for w in weights)


def _shape(tensor):
    shape = tuple(tensor.shape)
    if any(d is None for d in shape[1:]):
        raise ValueError(
            f"input shape {shape} has unknown sizes; multiply-adds need a fixed input_shape."
        )
    return shape


def _attention_macs(layer):
    """q/k/v/output projections plus the two attention matmuls (QK^T and AV)."""
    query, value = layer.input[:2] if isinstance(layer.input, (list, tuple)) else 2 * [layer.input]
    query, value = _shape(query), _shape(value)
    n_q, n_kv = math.prod(query[1:-1]), math.prod(value[1:-1])
    heads, key_dim, value_dim = layer.num_heads, layer.key_dim, layer.value_dim
    projections = (
        n_q * query[-1] * heads * key_dim
        + n_kv * value[-1] * heads * (key_dim + value_dim)
        + n_q * heads * value_dim * _shape(layer.output)[-1]
    )
    return projections + heads * n_q * n_kv * (key_dim + value_dim)


def layer_macs(layer) -> int:
    """Multiply-adds of one forward pass of a layer for one example (convs, dense, attention).

    Normalization, activations, softmax and pooling are left out, as in the papers' FLOP
    counts.
    """
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return _attention_macs(layer)
    if isinstance(layer, keras.layers.Conv2D):
        out = _shape(layer.output)
        kh, kw = layer.kernel_size
        cin = _shape(layer.input)[-1] // layer.groups
        return out[1] * out[2] * kh * kw * cin * layer.filters
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        out = _shape(layer.output)
        kh, kw = layer.kernel_size
        return out[1] * out[2] * kh * kw * out[3]
    if isinstance(layer, keras.layers.Dense):
        out = _shape(layer.output)
        return math.prod(out[1:-1]) * _shape(layer.input)[-1] * layer.units
    return 0


def count_macs(model: keras.Model) -> int:
    """Multiply-adds of one forward pass for one image (the papers' "FLOPs").

    Example:
    >>> import keras_resvit as kr
    >>> round(count_macs(kr.create_model("resnet18")) / 1e9, 1)
    1.8
    """
    check_model("model", model)
    return sum(layer_macs(layer) for layer in leaf_layers(model))
