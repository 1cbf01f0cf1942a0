"""Intermediate features: one owner of the layer names, for every family."""

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.models.features import attention_layers, last_feature_map, stage_outputs
from tests.conftest import random_images


def numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize(
    "name, overrides, levels",
    [
        ("resnet20", {}, {"P0": (32, 16), "P1": (16, 32), "P2": (8, 64)}),
        ("resnet18", {"input_shape": (64, 64, 3)}, {f"P{k}": (64 >> k, 0) for k in (2, 3, 4, 5)}),
        ("resnet50v2", {"input_shape": (64, 64, 3)}, {f"P{k}": (64 >> k, 0) for k in range(2, 6)}),
        ("bit_r50x1", {"input_shape": (64, 64, 3)}, {f"P{k}": (64 >> k, 0) for k in range(2, 6)}),
    ],
)
def test_feature_pyramid_names_stages_by_stride(name, overrides, levels):
    model = kr.create_model(name, num_classes=5, **overrides)
    size = model.input_shape[1]
    pyramid = kr.feature_pyramid(model)(random_images(2, size, size))
    assert list(pyramid) == list(levels)
    for key, (height, channels) in levels.items():
        assert pyramid[key].shape[1:3] == (height, height)
        assert channels == 0 or pyramid[key].shape[-1] == channels


@pytest.mark.parametrize("name", ["resnet20", "resnet50v2", "se_resnet50"])
def test_the_last_stage_is_what_the_classifier_pools(name):
    # Average-pooling the last feature map and applying the classifier reproduces the model.
    overrides = {} if name == "resnet20" else {"input_shape": (64, 64, 3)}
    model = kr.create_model(name, num_classes=5, **overrides)
    x = random_images(2, *model.input_shape[1:3])
    last = kr.intermediate_model(model, [list(kr.feature_layers(model))[-1]])
    key = list(kr.feature_layers(model))[-1]
    if name == "resnet50v2":  # its blocks end before the closing norm-ReLU
        assert (
            last_feature_map(model) == "post_relu" and stage_outputs(model)["stage4"] == "post_relu"
        )
        features = numpy(keras.Model(model.input, model.get_layer("post_relu").output)(x))
    else:
        features = numpy(last(x)[key])
    pooled = features.mean(axis=(1, 2))
    expected = numpy(model(x))
    np.testing.assert_allclose(numpy(model.get_layer("predictions")(pooled)), expected, atol=1e-5)


def test_vit_intermediates_are_every_blocks_tokens():
    vit = kr.build_vit("Ti/16", image_size=32, num_classes=5, num_layers=3)
    assert list(kr.feature_layers(vit)) == ["encoder_block1", "encoder_block2", "encoder_block3"]
    x = random_images(2, 32, 32)
    tokens = kr.intermediate_model(vit)(x)
    assert all(t.shape == (2, 5, 192) for t in tokens.values())  # class token + 4 patches
    assert not np.allclose(numpy(tokens["encoder_block1"]), numpy(tokens["encoder_block3"]))
    # The last block's class token, normalized and classified, is the model's output.
    head = vit.get_layer("predictions")
    head.kernel.assign(keras.random.normal(head.kernel.shape, seed=0))
    normalized = vit.get_layer("encoder_norm")(tokens["encoder_block3"])
    np.testing.assert_allclose(numpy(head(normalized[:, 0])), numpy(vit(x)), atol=1e-5)
    assert [norm.name for norm, _ in attention_layers(vit)] == [
        f"encoder_block{i}_norm1" for i in (1, 2, 3)
    ]


def test_the_hybrid_has_both_kinds_of_features():
    hybrid = kr.create_model("r50_vit_b16", image_size=64, num_classes=5)
    names = list(kr.feature_layers(hybrid))
    assert names[0] == "stage1_block1" and names[-1] == "encoder_block12"
    assert list(kr.feature_pyramid(hybrid).output) == ["P2", "P3", "P4"]


def test_bad_feature_requests():
    model = kr.create_model("resnet20")
    with pytest.raises(ValueError, match=r"features=\['stage9_block1'\] are not features"):
        kr.intermediate_model(model, ["stage9_block1"])
    with pytest.raises(ValueError, match="must be a non-empty list"):
        kr.intermediate_model(model, "stage1_block1")
    vit = kr.build_vit("Ti/16", image_size=32, num_classes=5, num_layers=1)
    with pytest.raises(ValueError, match="has no ResNet stages"):
        kr.feature_pyramid(vit)
    vgg = kr.build_vgg(11, input_shape=(32, 32, 3), num_classes=5, include_top=False)
    with pytest.raises(ValueError, match="has no ResNet or ViT blocks"):
        kr.feature_layers(vgg)
