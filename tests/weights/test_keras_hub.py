"""keras-hub's ViT and ResNet backbones and preset folders, both ways, give the same outputs
as ours (skipped without keras-hub)."""

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.weights import from_keras_hub_vit
from keras_resvit.weights.keras_hub import save_keras_hub_preset, to_keras_hub
from tests.conftest import random_images
from tests.weights.helpers import assert_close, randomize

pytestmark = pytest.mark.one_backend(
    "tensorflow",
    reason="a NumPy conversion; the converted model's computation is tested on both backends in "
    "tests/models",
)

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


def _resnet_backbone(blocks=(2, 2, 2, 2), block_type="basic_block", **overrides):
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=list(blocks),
        stackwise_num_strides=[1, 2, 2, 2],
        block_type=block_type,
        use_pre_activation=False,
        image_shape=(32, 32, 3),
        **overrides,
    )
    return randomize(backbone)


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406]) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225]) * 255


@pytest.mark.parametrize(
    "name, blocks, block_type",
    [("resnet18", (2, 2, 2, 2), "basic_block"), ("resnet50", (3, 4, 6, 3), "bottleneck_block")],
)
def test_a_keras_hub_resnet_preset_fills_the_registry_model(tmp_path, name, blocks, block_type):
    backbone = _resnet_backbone(blocks, block_type)
    backbone.save_to_preset(str(tmp_path / "preset"))
    model = kr.create_model(
        name, weights=tmp_path / "preset", include_top=False, pooling=None, input_shape=(32, 32, 3)
    )
    x = random_images(2, 32, 32)
    assert_close(model(x), backbone((x - IMAGENET_MEAN) / IMAGENET_STD))
    # With its classifier: the backbone fills all but the fresh head.
    classifier = kr.create_model(name, weights=str(tmp_path / "preset"), input_shape=(32, 32, 3))
    assert classifier.output_shape == (None, 1000)
    with pytest.raises(ValueError, match="holds resnet weights .* do not fit a vit model"):
        kr.create_model("vit_ti16", weights=tmp_path / "preset")


def test_a_keras_hub_vit_preset_fills_the_registry_model(tmp_path):
    backbone = _backbone()
    backbone.save_to_preset(str(tmp_path / "preset"))
    # The preset's architecture must be the model's (it never replaces it); its size is kept.
    small = {"patch_size": 8, "num_layers": 2, "num_heads": 4, "hidden_size": 32, "mlp_dim": 64}
    model = kr.create_model(
        "vit_ti16", weights=tmp_path / "preset", include_top=False, pooling=None, **small
    )
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 17, 32)
    x = random_images(2, 32, 32)
    assert_close(model(x), backbone(x / 127.5 - 1.0))


@pytest.mark.parametrize("name", ["vit", "resnet18", "resnet50"])
def test_ours_saved_as_a_keras_hub_preset_loads_in_keras_hub_with_the_same_outputs(tmp_path, name):
    if name == "vit":
        model = randomize(kr.build_vit("Ti/16", image_size=32, patch_size=8))
        normalize = lambda x: x / 127.5 - 1.0  # noqa: E731
        last = "encoder_norm"
    else:
        model = randomize(kr.create_model(name, input_shape=(32, 32, 3)))
        normalize = lambda x: (x - IMAGENET_MEAN) / IMAGENET_STD  # noqa: E731
        last = [layer.name for layer in model.layers if layer.name.endswith("_out")][-1]
    features = keras.Model(model.input, model.get_layer(last).output)
    folder = save_keras_hub_preset(model, tmp_path / "preset")
    backbone = keras_hub.models.Backbone.from_preset(str(folder))
    x = random_images(2, 32, 32)
    assert_close(backbone(normalize(x)), features(x))
    # And back: the preset fills our registry model with the same features.
    if name != "vit":
        again = kr.create_model(name, weights=folder, input_shape=(32, 32, 3))
        again_features = keras.Model(again.input, again.get_layer(last).output)
        assert_close(again_features(x), features(x), tolerance=1e-5)
    # A second save replaces the earlier preset; a folder of other files is refused.
    save_keras_hub_preset(model, folder)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="notes.txt"):
        save_keras_hub_preset(model, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_models_keras_hub_cannot_hold_are_refused():
    for model in (kr.create_model("se_resnet50"), kr.create_model("resnet50v2")):
        with pytest.raises(ValueError, match="keras-hub"):
            to_keras_hub(model)
    # A quarter-width ResNet-18: keras-hub's backbone of its config has full-width kernels
    # (before: Keras' variable.assign error and a dump of the tensor).
    narrow = kr.build_resnet(18, width=0.25, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"of shape \(7, 7, 3, 16\).*\(7, 7, 3, 64\)"):
        to_keras_hub(narrow)
    with pytest.raises(ValueError, match="use_pre_activation=True"):
        kr.weights.keras_hub.backbone_arguments(
            "ResNetBackbone",
            {**_resnet_backbone().get_config(), "use_pre_activation": True},
        )
