"""Self-attention through `keras.ops.dot_product_attention` (`set_fused_attention(True)`)
computes what the matmul path computes: outputs, input and weight gradients, whole ViTs."""

import keras
import numpy as np
import pytest

from keras_resvit.base.backend import fused_attention, fused_attention_enabled, gradient
from keras_resvit.layers import MultiHeadSelfAttention
from tests.conftest import random_images, tiny_vit


def _layer(qk_norm, seed=0):
    layer = MultiHeadSelfAttention(num_heads=4, key_dim=8, qk_norm=qk_norm)
    x = np.random.default_rng(seed).normal(size=(3, 9, 32)).astype("float32")
    layer(x, x)
    rng = np.random.default_rng(seed + 1)
    for variable in layer.weights:  # every weight random (norms start at 1 and 0)
        variable.assign(rng.normal(0, 0.3, tuple(variable.shape)).astype("float32"))
    return layer, keras.ops.convert_to_tensor(x)


def _outputs_and_gradients(layer, x):
    out = keras.ops.convert_to_numpy(layer(x, x, training=True))
    grads = gradient(lambda v: keras.ops.sum(layer(v, v, training=True) ** 2), x)
    return out, keras.ops.convert_to_numpy(grads)


@pytest.mark.parametrize("qk_norm", [False, True], ids=["plain", "qk_norm"])
def test_fused_attention_matches_the_matmul_path(qk_norm):
    layer, x = _layer(qk_norm)
    matmul = _outputs_and_gradients(layer, x)
    with fused_attention(True):
        assert fused_attention_enabled()
        fused = _outputs_and_gradients(layer, x)
    assert not fused_attention_enabled()
    for got, want in zip(fused, matmul, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_a_vit_trains_the_same_with_fused_attention():
    """One SGD step per path from the same weights: the same updated weights."""
    x = random_images(4, 32, 32)
    y = np.arange(4) % 5
    updated = []
    for fused in (False, True):
        with fused_attention(fused):
            keras.utils.set_random_seed(0)
            model = tiny_vit()
            model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
            model.fit(x, y, batch_size=4, epochs=1, verbose=0)
            updated.append([keras.ops.convert_to_numpy(w) for w in model.weights])
    for got, want in zip(updated[1], updated[0], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_attention_dropout_while_training_keeps_the_matmul_path(monkeypatch):
    layer = MultiHeadSelfAttention(num_heads=2, key_dim=4, dropout=0.5)
    x = keras.ops.ones((2, 5, 8))

    def fused(*args, **kwargs):
        raise RuntimeError("the fused path ran")

    monkeypatch.setattr(keras.ops, "dot_product_attention", fused)
    with fused_attention(True):
        layer(x, x, training=True)  # dropout on the weights: the matmul path
        with pytest.raises(RuntimeError, match="the fused path ran"):
            layer(x, x, training=False)
