"""keras-hub's ViTBackbone converted to ours gives the same tokens (skipped without keras-hub)."""

import keras
import numpy as np
import pytest

from keras_resvit.weights import from_keras_hub_vit
from tests.conftest import random_images
from tests.weights.helpers import assert_close

keras_hub = pytest.importorskip("keras_hub")


def _backbone(**overrides):
    config = {
        "image_shape": (32, 32, 3),
        "patch_size": 8,
        "num_layers": 2,
        "num_heads": 4,
        "hidden_dim": 32,
        "mlp_dim": 64,
        **overrides,
    }
    backbone = keras_hub.models.ViTBackbone(**config)
    rng = np.random.default_rng(0)
    for variable in backbone.weights:  # non-trivial LayerNorms, biases and embeddings
        shift = rng.normal(0, 0.2, tuple(variable.shape)).astype("float32")
        variable.assign(keras.ops.convert_to_numpy(variable) + shift)
    return backbone


def test_converted_vit_matches_keras_hub_backbone():
    backbone = _backbone()
    model = from_keras_hub_vit(backbone)
    x = random_images(2, 32, 32)
    expected = backbone(x / 127.5 - 1.0)
    assert model.output_shape == (None, 17, 32)
    assert_close(model(x), expected)


def test_unsupported_backbone_option():
    with pytest.raises(ValueError, match="use_mha_bias=False"):
        from_keras_hub_vit(_backbone(use_mha_bias=False))
