"""count_params and count_macs on models the package did not build: every kind of layer with a
kernel is counted at each call, or named."""

import keras
import pytest

import keras_resvit as kr

L = keras.layers


def _sequential(shape, *layers):
    return keras.Sequential([keras.Input(shape), *layers])


@pytest.mark.parametrize(
    "shape, layer, macs",
    [
        # output positions x kernel taps x input channels x filters
        ((16, 3), L.Conv1D(4, 3), 14 * 3 * 3 * 4),
        ((8, 8, 3), L.Conv2D(4, 3, groups=1), 6 * 6 * 9 * 3 * 4),
        ((8, 8, 4), L.Conv2D(6, 3, groups=2), 6 * 6 * 9 * 2 * 6),
        ((4, 4, 4, 2), L.Conv3D(3, 2), 27 * 8 * 2 * 3),
        # depthwise taps per channel, then a 1x1 convolution
        ((8, 8, 3), L.DepthwiseConv2D(3), 6 * 6 * 9 * 3),
        ((8, 8, 3), L.SeparableConv2D(4, 3), 6 * 6 * (9 * 3 + 3 * 4)),
        # each input position scatters a kernel
        ((8, 8, 3), L.Conv2DTranspose(4, 3), 8 * 8 * 9 * 3 * 4),
        ((5, 7), L.Dense(4), 5 * 7 * 4),
        ((4,), L.EinsumDense("ab,bc->ac", output_shape=5), 4 * 5),
        ((6, 4), L.EinsumDense("abc,cde->abde", output_shape=(6, 2, 3)), 6 * 2 * 3 * 4),
        ((5, 8), L.MultiHeadAttention(2, 4), 5 * 8 * 2 * 4 * 3 + 5 * 2 * 4 * 8 + 2 * 5 * 5 * 8),
    ],
)
def test_each_kind_of_layer_counts_its_multiply_adds(shape, layer, macs):
    if isinstance(layer, L.MultiHeadAttention):
        inputs = keras.Input(shape)
        model = keras.Model(inputs, layer(inputs, inputs))
    else:
        model = _sequential(shape, layer)
    assert kr.count_macs(model) == macs


def test_a_layer_called_twice_and_a_nested_model_count_at_each_call():
    inputs = keras.Input((4,))
    dense = L.Dense(4)
    assert kr.count_macs(keras.Model(inputs, dense(dense(inputs)))) == 2 * 16
    inner = _sequential((4,), L.Dense(3))
    outer = keras.Model(inputs, inner(inner(L.Dense(4)(inputs))[:, :1] * keras.ops.ones((1, 4))))
    assert kr.count_macs(outer) == 16 + 2 * 12


def test_models_without_a_graph_or_weights_are_named():
    with pytest.raises(ValueError, match=r"model='\w+' is not built, so it has no weights"):
        kr.count_params(keras.Sequential([L.Dense(4)]))
    with pytest.raises(ValueError, match=r"\(Sequential\) has no graph of layer calls"):
        kr.count_macs(keras.Sequential([L.Dense(4)]))

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(3)

        def call(self, x):
            return self.dense(x)

    model = Subclassed()
    model(keras.ops.ones((1, 4)))
    assert kr.count_params(model) == 4 * 3 + 3
    with pytest.raises(ValueError, match=r"\(Subclassed\) has no graph.*keras.Input"):
        kr.count_macs(model)


def test_a_layer_with_a_kernel_of_an_unknown_kind_is_named():
    class Bilinear(L.Layer):
        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], input_shape[-1]), name="kernel")

        def call(self, x):
            return x @ self.kernel * x

    with pytest.raises(ValueError, match=r"layer '\w+' \(Bilinear\) has a kernel .*Dense"):
        kr.count_macs(_sequential((4,), Bilinear()))
