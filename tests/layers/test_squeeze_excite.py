"""The public squeeze-and-excitation block: its layers, the SE paper's parameter count, its
gating, saving, and argument errors."""

import keras
import numpy as np
import pytest

from keras_resvit.layers import squeeze_excite
from tests.conftest import assert_save_load_identical


def se_model(channels=32, ratio=1 / 16, name="block"):
    inputs = keras.Input((6, 6, channels))
    x = keras.layers.Conv2D(channels, 3, padding="same", name="conv")(inputs)
    return keras.Model(inputs, squeeze_excite(x, ratio, name=name))


def test_layers_are_named_and_sized_like_the_paper():
    model = se_model(channels=64)
    names = [layer.name for layer in model.layers[2:]]
    assert names == ["block_se_pool", "block_se_reduce", "block_se_expand", "block_se_scale"]
    reduce, expand = model.get_layer("block_se_reduce"), model.get_layer("block_se_expand")
    assert (reduce.filters, expand.filters) == (4, 64)
    # Hu et al. (2018), Section 4: 2 C^2 / r weights per block; the biases come on top.
    kernels = np.prod(reduce.kernel.shape) + np.prod(expand.kernel.shape)
    assert kernels == 2 * 64**2 // 16
    assert reduce.count_params() + expand.count_params() == kernels + 64 // 16 + 64


def test_gates_rescale_the_channels():
    model = se_model(channels=8, ratio=0.5)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 8)).astype("float32")
    features = keras.ops.convert_to_numpy(model.get_layer("conv")(x))
    # Zero excitation weights: every gate is sigmoid(0) = 1/2.
    for layer in ("block_se_reduce", "block_se_expand"):
        layer = model.get_layer(layer)
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), features / 2, rtol=1e-6)
    # A bias of log 3 on one channel opens its gate to 3/4.
    expand = model.get_layer("block_se_expand")
    kernel, bias = expand.get_weights()
    bias[3] = np.log(3.0)
    expand.set_weights([kernel, bias])
    expected = features / 2
    expected[..., 3] = features[..., 3] * 0.75
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), expected, rtol=1e-5)


def test_unnamed_blocks_do_not_clash_and_the_model_reloads(tmp_path):
    inputs = keras.Input((6, 6, 16))
    x = squeeze_excite(inputs, 1 / 4)
    x = squeeze_excite(x, 1 / 4)
    model = keras.Model(inputs, x, name="two_se")
    assert len({layer.name for layer in model.layers}) == len(model.layers) == 9
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 16)).astype("float32")
    assert_save_load_identical(model, tmp_path, x)


@pytest.mark.parametrize(
    "build, words",
    [
        (lambda: squeeze_excite(keras.Input((4, 4, 8)), 16), ["ratio=16", "1/16"]),
        (lambda: squeeze_excite(keras.Input((4, 4, 8)), 0), ["ratio=0"]),
        (lambda: squeeze_excite(keras.Input((8,)), 1 / 4), ["(None, 8)", "channels-last"]),
    ],
)
def test_bad_arguments_raise_one_clear_error(build, words):
    with pytest.raises(ValueError) as error:
        build()
    for word in words:
        assert word in str(error.value)
