"""Hybrid R50+ViT: the paper's ResNet layout, parameter count, saving, resizing, new heads."""

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.layers import StdConv2D
from keras_resvit.models.hybrid import BACKBONES
from tests.conftest import assert_save_load_identical, random_images

# A one-block, 32-wide transformer on the full ResNet: 32x32 images give a 2x2 feature map.
TINY = {
    "variant": None,
    "hidden_size": 32,
    "num_layers": 1,
    "num_heads": 4,
    "mlp_dim": 64,
    "patch_size": 16,
    "image_size": 32,
    "num_classes": 5,
}


def tiny_hybrid(**overrides):
    return kr.build_hybrid_vit("r50", **{**TINY, **overrides})


def numpy_out(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def r50_backbone_params(blocks=(3, 4, 9), filters=(64, 128, 256)):
    """GroupNorm (scale + offset) after every bias-free conv; projection on each stage's first
    block (post-activation bottlenecks, as in the paper's hybrid and timm's port)."""
    total = 7 * 7 * 3 * 64 + 2 * 64
    channels = 64
    for num_blocks, f in zip(blocks, filters, strict=True):
        for b in range(num_blocks):
            total += channels * f + 2 * f + 9 * f * f + 2 * f + f * 4 * f + 2 * 4 * f
            if b == 0:
                total += channels * 4 * f + 2 * 4 * f
            channels = 4 * f
    return total


def test_r50_vit_b16_parameter_count():
    with keras.StatelessScope():
        model = kr.create_model("r50_vit_b16")
    # ViT-B/16 with a 1x1 embedding of the 1024-channel map instead of 16x16x3 patches.
    vit_b16 = 86_567_656 - (16 * 16 * 3 * 768 + 768)
    expected = r50_backbone_params() + vit_b16 + (1024 * 768 + 768)
    assert kr.count_params(model) == expected == 98_659_112


def test_backbone_is_resnet50_with_stage4_moved_into_stage3():
    model = tiny_hybrid()
    names = [layer.name for layer in model.layers]
    assert BACKBONES["r50"] == (3, 4, 9)
    assert "stage3_block9_conv3" in names and not any(n.startswith("stage4") for n in names)
    assert isinstance(model.get_layer("stage3_block9_conv2"), StdConv2D)
    assert isinstance(model.get_layer("stage3_block9_bn1"), keras.layers.GroupNormalization)
    # 16x downsampling: the 32x32 image becomes a 2x2 map of 1024 channels, patches of 1x1.
    assert model.get_layer("stage3_block9_out").output.shape == (None, 2, 2, 1024)
    assert model.get_layer("patch_embedding").kernel_size == (1, 1)
    assert model.get_layer("position_embedding").weights[0].shape == (1, 5, 32)


def test_registry_name_builds_at_small_size():
    model = kr.create_model("r50_vit_b16", image_size=32, num_layers=1, num_classes=3)
    assert model.name == "r50_vit_b16"
    assert numpy_out(model, random_images(2, 32, 32)).shape == (2, 3)


def test_save_load_identical(tmp_path):
    model = tiny_hybrid()
    model.get_layer("predictions").kernel.assign(np.ones((32, 5), "float32"))
    assert_save_load_identical(model, tmp_path, random_images(2, 32, 32))


def test_resize_and_replace_head(tmp_path):
    model = tiny_hybrid()
    resized = kr.resize_vit(model, 48)
    assert resized.get_layer("position_embedding").weights[0].shape == (1, 10, 32)
    np.testing.assert_array_equal(
        resized.get_layer("stage1_block1_conv1").get_weights()[0],
        model.get_layer("stage1_block1_conv1").get_weights()[0],
    )
    new = kr.replace_head(resized, 2)
    np.testing.assert_allclose(numpy_out(new, random_images(2, 48, 48)), 0.5)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"backbone": "r101"}, ["backbone='r101'", "'r50'"]),
        ({"image_size": 40}, ["image_size=40", "patch_size=16"]),
        ({"patch_size": 8}, ["patch_size=8", "16"]),
    ],
)
def test_bad_arguments_raise_one_clear_error(kwargs, words):
    with pytest.raises(ValueError) as error:
        kr.build_hybrid_vit(**{**TINY, **kwargs})
    for word in words:
        assert word in str(error.value)
