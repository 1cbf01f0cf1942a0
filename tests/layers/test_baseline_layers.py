"""AlexNet's local response normalization against the paper's formula, and its serialization."""

import keras
import numpy as np
import pytest

from keras_resvit.layers import LocalResponseNormalization


def paper_lrn(a, n=5, k=2.0, alpha=1e-4, beta=0.75):
    """Krizhevsky et al. (2012), Section 3.3, channel by channel:
    b_i = a_i / (k + alpha * sum_{j = max(0, i - n/2)}^{min(N - 1, i + n/2)} a_j^2)^beta."""
    channels = a.shape[-1]
    b = np.empty_like(a, dtype="float64")
    for i in range(channels):
        window = a[..., max(0, i - n // 2) : min(channels - 1, i + n // 2) + 1]
        b[..., i] = a[..., i] / (k + alpha * np.sum(window.astype("float64") ** 2, axis=-1)) ** beta
    return b


def relu_maps(shape, scale, seed=0):
    # ReLU outputs of a conv layer: non-negative, some in the hundreds, where LRN bites.
    return np.maximum(np.random.default_rng(seed).normal(0, scale, shape), 0).astype("float32")


@pytest.mark.parametrize(
    "kwargs, channels",
    [
        ({}, 96),  # the paper's constants on conv1's 96 maps
        ({}, 3),  # fewer channels than the window
        ({"size": 3, "bias": 1.0, "alpha": 1e-2, "beta": 0.5}, 8),
        ({"size": 1, "bias": 0.5, "alpha": 1.0, "beta": 1.0}, 4),
    ],
)
def test_matches_the_papers_formula(kwargs, channels):
    x = relu_maps((2, 5, 4, channels), scale=100.0)
    layer = LocalResponseNormalization(**kwargs)
    names = {"size": "n", "bias": "k", "alpha": "alpha", "beta": "beta"}
    expected = paper_lrn(x, **{names[key]: value for key, value in kwargs.items()})
    actual = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    assert actual.dtype == np.float32


def test_matches_tensorflows_op():
    tf = pytest.importorskip("tensorflow")
    x = relu_maps((2, 6, 6, 16), scale=50.0)
    expected = tf.nn.local_response_normalization(
        x, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75
    ).numpy()
    actual = keras.ops.convert_to_numpy(LocalResponseNormalization()(x))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_float16_inputs_do_not_overflow():
    # 300^2 * 5 overflows float16 (max 65,504); the layer sums the squares in float32.
    x = np.full((1, 2, 2, 8), 300.0, "float16")
    layer = LocalResponseNormalization(dtype="mixed_float16")
    out = keras.ops.convert_to_numpy(layer(x))
    assert out.dtype == np.float16
    np.testing.assert_allclose(out, paper_lrn(x.astype("float32")), rtol=1e-3)


def test_serializes():
    layer = LocalResponseNormalization(size=3, bias=1.0, alpha=2e-4, beta=0.5, name="norm1")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(clone) is LocalResponseNormalization
    assert clone.get_config() == layer.get_config()
    assert (clone.size, clone.bias, clone.alpha, clone.beta) == (3, 1.0, 2e-4, 0.5)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"size": 4}, ["size=4", "odd"]),
        ({"size": 0}, ["size=0"]),
        ({"size": True}, ["size=True"]),
        ({"bias": 0}, ["bias=0", "> 0"]),
        ({"alpha": -1e-4}, ["alpha=-0.0001", ">= 0"]),
        ({"beta": "0.75"}, ["beta='0.75'"]),
    ],
)
def test_bad_arguments_raise_one_clear_error(kwargs, words):
    with pytest.raises(ValueError) as error:
        LocalResponseNormalization(**kwargs)
    for word in words:
        assert word in str(error.value)
