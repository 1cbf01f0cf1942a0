"""VGG, AlexNet and EfficientNetV2: reference parameter counts, multiply-adds, forward passes,
keras.applications parity and argument errors."""

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.cli import main
from keras_resvit.layers import LocalResponseNormalization
from tests.conftest import assert_save_load_identical, random_images

# torchvision's published GFLOPS (multiply-adds) at 224; EfficientNetV2-S at its 384. AlexNet
# as published: 724M multiply-adds (Sze et al. 2017, "Efficient Processing of Deep Neural
# Networks: A Tutorial and Survey", its summary of popular DNNs).
GMACS = {"vgg16": 15.47, "vgg19": 19.63, "alexnet": 0.71, "alexnet_paper": 0.724}


# Their parameter counts: tests/test_registry_sweep.py.
@pytest.mark.parametrize("name", sorted(GMACS))
def test_multiply_adds_match_references(name):
    with keras.StatelessScope(initialize_variables=False):  # shapes only: nothing to initialize
        model = kr.create_model(name)
        assert kr.count_macs(model) / 1e9 == pytest.approx(GMACS[name], rel=0.01)


@pytest.mark.slow
def test_efficientnetv2_s_matches_keras_applications():
    # Counted on weights with shapes and no values: nothing to initialize (0.7 s, not 23 s,
    # under JAX).
    with keras.StatelessScope(initialize_variables=False):
        model = kr.create_model("efficientnetv2_s")
        reference = keras.applications.EfficientNetV2S(weights=None)
        assert model.input_shape == (None, 384, 384, 3)
        assert kr.count_params(model, trainable_only=False) == reference.count_params()
        assert kr.count_macs(model) / 1e9 == pytest.approx(8.37, rel=0.01)  # torchvision: 8.37


def softmax_outputs(model, x):
    y = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    return y


@pytest.mark.parametrize("name, size, features", [("vgg16", 32, 512), ("alexnet", 224, 256)])
def test_forward_pass_on_raw_pixels(name, size, features):
    x = random_images(2, size, size)
    model = kr.create_model(name, input_shape=(size, size, 3), num_classes=10)
    assert softmax_outputs(model, x).shape == (2, 10)
    # Without the classifier AlexNet takes inputs down to 63 px.
    small = (64, 64, 3) if name == "alexnet" else (size, size, 3)
    backbone = kr.create_model(name, input_shape=small, include_top=False, pooling="avg")
    assert backbone.output_shape == (None, features)
    assert np.isfinite(keras.ops.convert_to_numpy(backbone(x[:, : small[0], : small[1]]))).all()


def test_alexnet_paper_layout_two_towers_and_response_normalization(tmp_path):
    model = kr.create_model("alexnet_paper", include_top=False)
    assert model.input_shape == (None, 227, 227, 3)
    assert model.output_shape == (None, 6, 6, 256)
    groups = {f"conv{i}": model.get_layer(f"conv{i}").groups for i in range(1, 6)}
    # Two towers for conv2, conv4 and conv5; conv3 sees both, conv1 the whole image.
    assert groups == {"conv1": 1, "conv2": 2, "conv3": 1, "conv4": 2, "conv5": 2}
    norms = [layer for layer in model.layers if isinstance(layer, LocalResponseNormalization)]
    assert [layer.name for layer in norms] == ["norm1", "norm2"]
    assert (norms[0].size, norms[0].bias, norms[0].alpha, norms[0].beta) == (5, 2.0, 1e-4, 0.75)
    # Small enough to run and save: 67 px leaves a 1x1 map after pool5.
    small = kr.create_model("alexnet_paper", input_shape=(67, 67, 3), num_classes=10)
    x = random_images(2, 67, 67)
    assert softmax_outputs(small, x).shape == (2, 10)
    restored = assert_save_load_identical(small, tmp_path, x)
    assert isinstance(restored.get_layer("norm2"), LocalResponseNormalization)
    backbone = kr.build_alexnet(
        layout="paper", input_shape=(67, 67, 3), include_top=False, pooling="max"
    )
    assert backbone.output_shape == (None, 256)


def test_efficientnetv2_on_raw_pixels_with_its_rescaling_or_a_preset():
    x = random_images(2, 32, 32)
    own = kr.build_efficientnetv2("s", input_shape=(32, 32, 3), num_classes=10)
    assert softmax_outputs(own, x).shape == (2, 10)
    rescaling = own.layers[1]
    # keras.applications' V2 rescaling: raw 0-255 pixels to [-1, 1).
    assert isinstance(rescaling, keras.layers.Rescaling)
    assert (rescaling.scale, rescaling.offset) == (1.0 / 128.0, -1)
    preset = kr.build_efficientnetv2(
        "s", input_shape=(32, 32, 3), include_top=False, pooling="avg", preprocessing="imagenet"
    )
    assert isinstance(preset.get_layer("preprocessing"), keras.layers.Normalization)
    assert not any(isinstance(layer, keras.layers.Rescaling) for layer in preset.layers)
    assert preset.output_shape == (None, 1280)


def test_vgg16_equals_keras_applications_with_its_weights():
    # Same layer names: keras.applications' weights load by name; the caffe preprocessing
    # inside our model replaces its preprocess_input.
    ours = kr.build_vgg(16, input_shape=(32, 32, 3), include_top=False)
    reference = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    for layer in reference.layers:
        if layer.weights:
            ours.get_layer(layer.name).set_weights(layer.get_weights())
    x = random_images(2, 32, 32)
    expected = reference(keras.applications.vgg16.preprocess_input(x.copy()), training=False)
    actual = ours(x, training=False)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(actual),
        keras.ops.convert_to_numpy(expected),
        rtol=1e-5,
        atol=1e-5,
    )


def test_cli_lists_and_describes_the_baselines(capsys):
    assert main(["list", "vgg*"]) == 0
    assert main(["list", "efficientnetv2*"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line]
    assert names == ["vgg16", "vgg19", "efficientnetv2_l", "efficientnetv2_m", "efficientnetv2_s"]
    assert main(["info", "alexnet"]) == 0
    out = capsys.readouterr().out
    assert "61,100,840 trainable" in out and "0.714 G per image" in out


@pytest.mark.parametrize(
    "build, words",
    [
        (lambda: kr.build_vgg(15), ["depth=15", "16", "19"]),
        (lambda: kr.build_alexnet(input_shape=(64, 64, 3)), ["input_shape=(64, 64, 3)", ">= 223"]),
        (lambda: kr.build_vgg(16, input_shape=(None, None, 3)), ["include_top=True"]),
        (lambda: kr.build_vgg(16, dropout=1.5), ["dropout=1.5"]),
        (lambda: kr.build_efficientnetv2("xl"), ["variant='xl'", "'s'"]),
        (lambda: kr.build_efficientnetv2(preprocessing="nope"), ["preprocessing='nope'"]),
        (lambda: kr.build_alexnet(pooling="sum"), ["pooling='sum'"]),
        (lambda: kr.build_alexnet(layout="caffe"), ["layout='caffe'", "'torchvision'", "'paper'"]),
        (
            lambda: kr.build_alexnet(layout="paper", input_shape=(64, 64, 3)),
            ["input_shape=(64, 64, 3)", ">= 67"],
        ),
    ],
)
def test_bad_arguments_raise_one_clear_error(build, words):
    with pytest.raises(ValueError) as error:
        build()
    for word in words:
        assert word in str(error.value)
