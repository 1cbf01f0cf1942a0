"""Hybrid R50+ViT: the paper's two ResNet layouts, parameter counts, saving, resizing, heads."""

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


# Option (i) downsamples 32x: 64x64 images give the same 2x2 map, of 2048 channels.
TINY_STAGE4 = {**TINY, "patch_size": 32, "image_size": 64}


def tiny_stage4_hybrid(**overrides):
    return kr.build_hybrid_vit("r50_stage4", **{**TINY_STAGE4, **overrides})


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
    with keras.StatelessScope(initialize_variables=False):
        model = kr.create_model("r50_vit_b16")
    # ViT-B/16 with a 1x1 embedding of the 1024-channel map instead of 16x16x3 patches.
    vit_b16 = 86_567_656 - (16 * 16 * 3 * 768 + 768)
    expected = r50_backbone_params() + vit_b16 + (1024 * 768 + 768)
    assert kr.count_params(model) == expected == 98_659_112


def test_r50_vit_b32_parameter_count():
    with keras.StatelessScope(initialize_variables=False):
        model = kr.create_model("r50_vit_b32")
    # Dosovitskiy et al. (2021), Section 4.1, option (i): the regular ResNet-50 (He et al. 2016,
    # Table 1: blocks 3, 4, 6, 3) up to stage 4, here with GroupNorm + standardized convs.
    backbone = r50_backbone_params((3, 4, 6, 3), (64, 128, 256, 512))
    # torchvision's ResNet-50 count minus its 1000-way fc: BatchNorm and GroupNorm alike have
    # a scale and an offset per channel.
    assert backbone == 25_557_032 - (2048 * 1000 + 1000)
    # ViT-B/16 (paper: 86,567,656) without its 16x16x3 patch embedding and with 7x7 + 1
    # position embeddings instead of 14x14 + 1, then a 1x1 embedding of the 2048 channels.
    transformer = 86_567_656 - (16 * 16 * 3 * 768 + 768) - (14 * 14 + 1) * 768
    expected = backbone + transformer + (7 * 7 + 1) * 768 + (2048 * 768 + 768)
    assert kr.count_params(model) == expected == 110_945_832


def test_r50_vit_b32_takes_stage4_of_a_regular_resnet50():
    with keras.StatelessScope(initialize_variables=False):
        model = kr.create_model("r50_vit_b32")
    names = [layer.name for layer in model.layers]
    assert BACKBONES["r50_stage4"] == (3, 4, 6, 3)
    assert "stage3_block6_out" in names and "stage3_block7_out" not in names
    assert isinstance(model.get_layer("stage4_block3_conv2"), StdConv2D)
    assert isinstance(model.get_layer("stage4_block3_bn3"), keras.layers.GroupNormalization)
    # 32x downsampling: 224 -> a 7x7 map of 2048 channels -> 49 tokens + the class token.
    assert model.get_layer("stage4_block3_out").output.shape == (None, 7, 7, 2048)
    assert model.get_layer("patch_embedding").kernel_size == (1, 1)
    assert model.get_layer("patch_embedding").output.shape == (None, 7, 7, 768)
    assert model.get_layer("position_embedding").output.shape == (None, 50, 768)
    assert model.name == "r50_vit_b32" and model.output_shape == (None, 1000)


def test_stage4_hybrid_runs_saves_and_loads_by_name(tmp_path):
    model = tiny_stage4_hybrid()
    model.get_layer("predictions").kernel.assign(np.ones((32, 5), "float32"))
    x = random_images(2, 64, 64)
    assert model.get_layer("position_embedding").weights[0].shape == (1, 5, 32)
    restored = assert_save_load_identical(model, tmp_path, x)
    assert [layer.name for layer in restored.layers] == [layer.name for layer in model.layers]
    # The registry name takes the same weights back from a weights file.
    path = tmp_path / "stage4.weights.h5"
    model.save_weights(path)
    small = {k: v for k, v in TINY_STAGE4.items() if k != "variant"}
    loaded = kr.create_model("r50_vit_b32", weights=path, **small)
    np.testing.assert_allclose(numpy_out(loaded, x), numpy_out(model, x), rtol=1e-5, atol=1e-6)


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
    assert model.name == "r50_vit_d768_l1_16"  # one of ViT-B's twelve layers: no ViT-B
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


def test_resize_stage4_hybrid_keeps_the_32_pixel_patches():
    model = tiny_stage4_hybrid()
    resized = kr.resize_vit(model, 96)
    # 96 / 32 = 3: a 3x3 map, 9 tokens + the class token.
    assert resized.get_layer("position_embedding").weights[0].shape == (1, 10, 32)
    assert resized.get_layer("stage4_block3_out").output.shape == (None, 3, 3, 2048)
    np.testing.assert_array_equal(
        resized.get_layer("stage4_block3_conv3").get_weights()[0],
        model.get_layer("stage4_block3_conv3").get_weights()[0],
    )
    assert numpy_out(resized, random_images(1, 96, 96)).shape == (1, 5)
    with pytest.raises(ValueError, match="image_size=80 is not divisible by .* patch size 32"):
        kr.resize_vit(model, 80)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"backbone": "r101"}, ["backbone='r101'", "'r50'", "'r50_stage4'"]),
        ({"image_size": 40}, ["image_size=40", "patch_size=16"]),
        ({"patch_size": 8}, ["patch_size=8", "16"]),
        ({"backbone": "r50_stage4"}, ["patch_size=16", "downsampling 32"]),
    ],
)
def test_bad_arguments_raise_one_clear_error(kwargs, words):
    with pytest.raises(ValueError) as error:
        kr.build_hybrid_vit(**{**TINY, **kwargs})
    for word in words:
        assert word in str(error.value)
