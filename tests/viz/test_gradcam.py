"""Grad-CAM: a digits ResNet looks at the digit, heatmaps in [0, 1] at input size, clear errors."""

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.base.backend import dtype_policy
from tests.conftest import random_images, tiny_vit

# Digits at 16 px: a ResNet-8 reaches ~0.98 test accuracy in 3 epochs (measured: 0.983
# TensorFlow, 0.981 JAX), several times faster than at 32 px.
SIZE = 16


@pytest.fixture(scope="module")
def digits_resnet():
    """(ResNet-8 trained on digits, 32 test images, test accuracy).

    Every test explains the same 32 images: under JAX each new batch shape compiles anew.
    """
    keras.utils.set_random_seed(0)
    (x, y), (x_test, y_test) = kr.data.load_digits(SIZE)
    model = kr.build_resnet(8, stem="cifar", input_shape=(SIZE, SIZE, 3))
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=64, epochs=3, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    return model, x_test[:32], accuracy


def test_heatmaps_put_more_mass_on_the_digit_than_the_border(digits_resnet):
    model, images, accuracy = digits_resnet
    assert accuracy > 0.9
    heatmaps = kr.viz.grad_cam(model, images)
    # The digit fills the centre; the 3-pixel frame is mostly background. Measured centre /
    # frame mean mass: 0.72 / 0.47 (TensorFlow), 0.70 / 0.46 (JAX).
    frame = np.ones((SIZE, SIZE), bool)
    frame[3:-3, 3:-3] = False
    centre, border = heatmaps[:, ~frame].mean(), heatmaps[:, frame].mean()
    assert centre > 1.2 * border


def test_heatmaps_are_in_unit_range_at_input_size(digits_resnet):
    model, images, _ = digits_resnet
    heatmaps = kr.viz.grad_cam(model, images)
    assert heatmaps.shape == (32, SIZE, SIZE) and heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0
    np.testing.assert_allclose(heatmaps.max(axis=(1, 2)), 1.0, rtol=1e-6)
    predicted = np.argmax(keras.ops.convert_to_numpy(model(images)), axis=-1)
    np.testing.assert_allclose(
        kr.viz.grad_cam(model, images, class_index=predicted), heatmaps, atol=1e-6
    )
    other = kr.viz.grad_cam(model, images, class_index=(predicted + 5) % 10)
    assert np.abs(other - heatmaps).max() > 0.1


def test_equals_class_activation_mapping_for_a_pooled_linear_head(digits_resnet):
    # Selvaraju et al., Section 3.1: with global average pooling and a linear classifier the
    # gradient weights are the classifier's weights / (h * w), so Grad-CAM is CAM (Zhou et al.).
    model, images, _ = digits_resnet
    features = keras.Model(model.input, model.get_layer("stage3_block1_out").output)(images)
    kernel = keras.ops.convert_to_numpy(model.get_layer("predictions").kernel)
    classes = np.arange(len(images)) % 10
    cam = np.einsum("nhwk,kn->nhw", keras.ops.convert_to_numpy(features), kernel[:, classes])
    cam = keras.ops.image.resize(np.maximum(cam, 0)[..., None], (SIZE, SIZE))[..., 0]
    cam = keras.ops.convert_to_numpy(cam)
    peak = cam.max(axis=(1, 2), keepdims=True)
    # A class with no positive evidence anywhere gives an all-zero map.
    expected = np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)
    actual = kr.viz.grad_cam(model, images, class_index=classes)
    np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_other_layers_and_preactivation_nets(digits_resnet):
    model, images, _ = digits_resnet
    finer = kr.viz.grad_cam(model, images, layer="stage2_block1_out")
    assert finer.shape == (32, SIZE, SIZE)
    assert np.abs(finer - kr.viz.grad_cam(model, images)).max() > 0.1
    # v2 nets end with a norm-ReLU after the last block ("post_relu"), the default layer.
    v2 = kr.build_resnet(8, stem="cifar", version="v2", input_shape=(SIZE, SIZE, 3))
    assert kr.viz.grad_cam(v2, images, class_index=3).shape == (32, SIZE, SIZE)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_nets_explain_as_their_float32_twin(digits_resnet, tmp_path, policy):
    # Half-precision feature maps, a float32 classifier (which TensorFlow does not promote
    # against): the same weights give the float32 maps, also after a save and load.
    model, images, _ = digits_resnet
    with dtype_policy(policy):
        twin = kr.build_resnet(8, stem="cifar", input_shape=(SIZE, SIZE, 3))
    twin.set_weights(model.get_weights())
    twin.save(tmp_path / "twin.keras")
    reloaded = keras.saving.load_model(tmp_path / "twin.keras")
    assert reloaded.get_layer("stage3_block1_out").dtype_policy.name == policy
    predicted = np.argmax(keras.ops.convert_to_numpy(model(images)), axis=-1)
    expected = kr.viz.grad_cam(model, images, class_index=predicted)
    for mixed in (twin, reloaded):
        actual = kr.viz.grad_cam(mixed, images, class_index=predicted)
        assert actual.dtype == np.float32
        # Measured largest difference: 0.010 (bfloat16), 0.0015 (float16) on both backends.
        np.testing.assert_allclose(actual, expected, atol=0.03)
    assert kr.viz.plot_grad_cam(reloaded, images, tmp_path / "gradcam.png").is_file()


def test_plot_grad_cam_writes_a_png_of_panel_size(digits_resnet, tmp_path):
    from matplotlib.image import imread

    from keras_resvit.viz.figures import DPI, LINE_INCHES, MAX_COLUMNS, PANEL_INCHES

    model, images, _ = digits_resnet
    path = kr.viz.plot_grad_cam(model, images, tmp_path / "gradcam.png")
    # 32 panels: 4 rows of MAX_COLUMNS (8).
    assert imread(path).shape[:2] == (
        round(4 * (PANEL_INCHES + LINE_INCHES) * DPI),
        round(MAX_COLUMNS * PANEL_INCHES * DPI),
    )


@pytest.mark.parametrize(
    "model, arguments, words",
    [
        ("vit", {}, ["is a ViT", "attention_rollout"]),
        ("resnet", {"layer": "stage9"}, ["layer='stage9'", "stage3_block1_out"]),
        ("resnet", {"layer": "stage3_block1_conv1"}, ["inside a residual block"]),
        ("resnet", {"layer": "avg_pool"}, ["(N, H, W, C)"]),
        ("resnet", {"class_index": 10}, ["class_index=10", "[0, 10)"]),
        ("resnet", {"class_index": [1, 2, 3]}, ["32 such ints"]),
        ("resnet", {"images": np.zeros((2, 32, 32, 3))}, ["(2, 32, 32, 3)", "(N, 16, 16, 3)"]),
    ],
)
def test_bad_input_raises_one_clear_error(digits_resnet, model, arguments, words):
    if model == "vit":
        model, images = tiny_vit(), random_images(2, 32, 32)
    else:
        model, images, _ = digits_resnet
    with pytest.raises(ValueError) as error:
        kr.viz.grad_cam(model, **{"images": images, **arguments})
    for word in words:
        assert word in str(error.value)
