"""The colour and RandAugment layers keep the input's channels, refuse the arguments they do not
take and the magnitudes they cannot apply, draw torchvision's colour-jitter factors, blur and
pick 3-Augment's operation per image."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_resvit.layers import (
    ColorJitter,
    IsotropicGaussianBlur,
    KerasRandAugment,
    RandAugment,
    ThreeAugment,
    ThresholdSolarization,
)
from keras_resvit.layers.rand_augment import IMAGENET_GREY, OPERATIONS
from tests.conftest import random_images


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _in_tf_data(layer, images):
    ds = tf.data.Dataset.from_tensor_slices(images).batch(len(images)).map(layer)
    return next(iter(ds.as_numpy_iterator()))


# 1. RandAugment on images that are not RGB.


@pytest.mark.parametrize("operation", OPERATIONS)
def test_rand_augment_keeps_one_channel_whatever_the_operation(operation):
    grey = random_images(2, 16, 16, channels=1)
    out = _numpy(RandAugment().apply_operation(grey, operation, 9))
    assert out.shape == grey.shape


def test_rand_augment_output_channels_do_not_depend_on_the_draw():
    grey = random_images(2, 16, 16, channels=1)
    for seed in range(4):
        layer = RandAugment(prob=1.0, seed=seed)
        assert _numpy(layer(grey, training=True)).shape == grey.shape
        assert _in_tf_data(layer, grey).shape == grey.shape


def test_rand_augment_fills_grey_images_with_the_imagenet_grey_level():
    grey = np.zeros((1, 16, 16, 1), "float32")
    # timm's translate at magnitude 10: 0.45 of the width moves in from the left.
    moved = _numpy(RandAugment().apply_operation(grey, "translate_x", 10, negate=True))
    np.testing.assert_allclose(moved[0, :, :6, 0], IMAGENET_GREY, atol=1e-3)
    scalar = RandAugment(fill_value=0.5, value_range=(0, 1))
    moved = _numpy(scalar.apply_operation(grey, "translate_x", 10, negate=True))
    np.testing.assert_allclose(moved[0, :, :6, 0], 0.5, atol=1e-6)


@pytest.mark.parametrize("operation", ["invert", "rotate"])
def test_rand_augment_refuses_an_rgb_fill_on_other_channel_counts(operation):
    layer = RandAugment(fill_value=(10, 20, 30), prob=1.0, seed=0)
    for channels in (1, 4):
        images = random_images(1, 8, 8, channels=channels)
        message = f"fill_value=[10.0, 20.0, 30.0] .* the images have {channels} channels"
        with pytest.raises(ValueError, match=re.escape("fill_value=[10.0, 20.0, 30.0]")):
            layer.apply_operation(images, operation, 5)
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            layer(images, training=True)
    assert _numpy(layer.apply_operation(random_images(1, 8, 8), operation, 5)).shape[-1] == 3


# 2. Arguments of the Keras parents that these layers do not take.


@pytest.mark.parametrize(
    "make, kwargs",
    [
        (ColorJitter, {"factor": 0.5}),
        (ThreeAugment, {"num_ops": 3}),
        (ThreeAugment, {"factor": 0.0}),
        (ThreeAugment, {"interpolation": "nearest"}),
        (ThresholdSolarization, {"threshold_factor": (0.9, 0.9)}),
        (ThresholdSolarization, {"addition_factor": 0.2}),
        (RandAugment, {"bounding_box_format": "xyxy"}),
        (RandAugment, {"factor": 0.5}),
    ],
)
def test_arguments_a_layer_does_not_take_are_refused_by_name(make, kwargs):
    ((name, value),) = kwargs.items()
    with pytest.raises(ValueError, match=re.escape(f"{name}={value!r}")):
        make(**kwargs)


@pytest.mark.parametrize(
    "layer",
    [
        ColorJitter(0.3, 0.2, 0.1, seed=1),
        ThreeAugment(seed=2),
        ThresholdSolarization(threshold=100.0),
        RandAugment(magnitude=7, seed=3),
        IsotropicGaussianBlur(factor=(1.0, 1.0), kernel_size=5, sigma=(0.1, 2.0), seed=4),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_layers_rebuild_from_their_configs_and_run_in_tf_data(layer):
    restored = type(layer).from_config(layer.get_config())
    assert restored.get_config() == layer.get_config()
    images = random_images(2, 16, 16)
    assert _in_tf_data(restored, images).shape == images.shape


def test_threshold_solarization_config_keeps_its_threshold():
    restored = ThresholdSolarization.from_config(ThresholdSolarization(threshold=50).get_config())
    out = _numpy(restored(np.array([[[40.0, 60.0, 255.0]]], "float32"), training=True))
    np.testing.assert_allclose(out, [[[40.0, 195.0, 0.0]]])


# 3. ColorJitter's factors, as torchvision's `ColorJitter._check_input`.


def test_color_jitter_draws_factors_from_zero_up_for_strengths_above_one():
    layer = ColorJitter(brightness=1.5, contrast=0.5, saturation=3.0, seed=0)
    draws = layer.get_random_transformation(np.zeros((4000, 2, 2, 3), "float32"))
    for name, low, high in (("brightness", 0.0, 2.5), ("contrast", 0.5, 1.5), ("saturation", 0, 4)):
        factors = _numpy(draws[name])
        assert factors.min() >= low and factors.max() <= high
        assert factors.min() < low + 0.01 and factors.max() > high - 0.01
        assert factors.mean() == pytest.approx((low + high) / 2, abs=0.05)


def test_color_jitter_never_inverts_colours():
    images = np.zeros((32, 4, 4, 3), "float32")
    images[..., 0], images[..., 1] = 200.0, 50.0
    out = _numpy(ColorJitter(saturation=3.0, seed=3)(images, training=True))
    assert (out[..., 0] - out[..., 1]).min() >= 0.0


def test_color_jitter_takes_channels_first_grey_and_refuses_other_channel_counts():
    images = random_images(2, 8, 8)
    expected = _numpy(ColorJitter(0.3, 0.3, 0.3, seed=5)(images, training=True))
    first = ColorJitter(0.3, 0.3, 0.3, seed=5, data_format="channels_first")
    out = _numpy(first(np.transpose(images, (0, 3, 1, 2)), training=True))
    np.testing.assert_allclose(np.transpose(out, (0, 2, 3, 1)), expected, atol=1e-3)
    grey = random_images(2, 8, 8, channels=1)
    assert _numpy(ColorJitter(0.3, 0.3, 0.3)(grey, training=True)).shape == grey.shape
    with pytest.raises(ValueError, match="images of 4 channels"):
        ColorJitter(0.3)(random_images(2, 8, 8, channels=4), training=True)


# 4. RandAugment's magnitudes: 0-10 on timm's scale (up to 20 on Google's, AugReg).


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"magnitude": 30}, "magnitude=30"),
        ({"magnitude": 12, "increasing": False}, "magnitude=12"),
        ({"magnitude_max": 15}, "magnitude_max=15"),
        ({"magnitude_max": 25, "increasing": False}, "magnitude_max=25"),
        ({"magnitude_max": 0}, "magnitude_max=0"),
    ],
)
def test_rand_augment_refuses_magnitudes_out_of_range(kwargs, named):
    with pytest.raises(ValueError, match=named):
        RandAugment(**kwargs)


def test_rand_augment_applies_magnitudes_up_to_its_maximum_only():
    image = random_images(1, 8, 8)
    with pytest.raises(ValueError, match=re.escape("magnitude=50 must be a number in [0, 10.0]")):
        RandAugment().apply_operation(image, "posterize", 50)
    # timm at magnitude 10 keeps 4 - 4 = 0 bits: every level becomes 0.
    assert _numpy(RandAugment().apply_operation(image, "posterize", 10)).max() == 0.0
    # AugReg's RandAugment(2, 15) with Google's definitions: posterize keeps int(4 * 1.5) bits.
    google = RandAugment(magnitude=15, magnitude_max=15, increasing=False)
    out = _numpy(google.apply_operation(image, "posterize", 15))
    np.testing.assert_array_equal(out, np.floor(np.floor(image) / 4) * 4)


# 5. IsotropicGaussianBlur's kernel against the image size.


def test_blur_names_a_kernel_too_large_for_the_image():
    layer = IsotropicGaussianBlur(factor=(1.0, 1.0), kernel_size=31)
    message = "kernel_size=(31, 31) is too large for images of 8x8 pixels"
    with pytest.raises(ValueError, match=re.escape(message) + ".*15x15"):
        layer(np.zeros((1, 8, 8, 3), "float32"), training=True)
    first = IsotropicGaussianBlur(
        factor=(1.0, 1.0), kernel_size=(3, 17), data_format="channels_first"
    )
    with pytest.raises(ValueError, match=re.escape("images of 16x8 pixels")):
        first(np.zeros((3, 16, 8), "float32"), training=True)
    # The largest kernel that reflection allows runs, and keeps a flat image flat.
    out = IsotropicGaussianBlur(factor=(1.0, 1.0), kernel_size=15)(
        np.full((1, 8, 8, 3), 7.0, "float32"), training=True
    )
    np.testing.assert_allclose(_numpy(out), 7.0, atol=1e-4)


@pytest.mark.parametrize("factor, fewest, most", [(1.0, 400, 400), (0.0, 0, 0), (0.5, 150, 250)])
def test_blur_factor_is_the_probability_of_blurring_each_image(factor, fewest, most):
    # Keras' layer draws the probability from [0, factor]: its default 1.0 blurred half.
    images = random_images(400, 8, 8)
    out = _numpy(IsotropicGaussianBlur(factor=factor, seed=0)(images, training=True))
    blurred = np.sum(~np.isclose(out, images).all(axis=(1, 2, 3)))
    assert fewest <= blurred <= most  # 0.5: 200 +- 5 standard deviations of a binomial


# 6. One operation per image of a batch, and colours that do not depend on the pixel range.


def test_three_augment_picks_an_operation_for_each_image_of_a_batch():
    images = np.round(random_images(60, 16, 16))  # whole levels, as decoded images
    solarized = np.where(images > 127.5, 255.0 - images, images)
    for out in (
        _numpy(ThreeAugment(seed=0)(images, training=True)),
        _in_tf_data(ThreeAugment(seed=1), images),
    ):
        grey = np.isclose(out, out[..., :1]).all(axis=(1, 2, 3))
        solar = np.isclose(out, solarized).all(axis=(1, 2, 3))
        blurred = ~grey & ~solar & ~np.isclose(out, images).all(axis=(1, 2, 3))
        assert grey.any() and solar.any() and blurred.any()
        np.testing.assert_array_equal(grey + solar + blurred, 1)


def test_color_jitter_gives_the_same_colours_on_any_value_range():
    # torchvision's brightness blends with black, which is the low end of the range.
    images = random_images(16, 8, 8)
    jitter = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "seed": 2}
    on_255 = _numpy(ColorJitter(**jitter)(images, training=True))
    signed = ColorJitter(**jitter, value_range=(-1, 1))(images / 127.5 - 1, training=True)
    np.testing.assert_allclose(_numpy(signed), on_255 / 127.5 - 1, atol=1e-5)
    black = np.full((8, 2, 2, 3), -1.0, "float32")
    out = ColorJitter(brightness=0.9, value_range=(-1, 1), seed=0)(black, training=True)
    np.testing.assert_array_equal(_numpy(out), black)


# 7. Bad arguments: one ValueError at construction, naming the argument and what is valid.


@pytest.mark.parametrize(
    "build, words",
    [
        (lambda: IsotropicGaussianBlur(value_range=(1, 0)), ["value_range=(1, 0)", "low < high"]),
        (lambda: IsotropicGaussianBlur(factor=float("nan")), ["factor=nan", "[0, 1]"]),
        (lambda: IsotropicGaussianBlur(factor=(1, float("nan"))), ["factor=(1, nan)", "[0, 1]"]),
        (lambda: IsotropicGaussianBlur(factor=1.5), ["factor=1.5", "[0, 1]"]),
        (lambda: KerasRandAugment(interpolation="foo"), ["interpolation='foo'", "'bilinear'"]),
        (lambda: KerasRandAugment(factor=float("nan")), ["factor=nan", "[0, 1]"]),
        (lambda: KerasRandAugment(factor=(0.9, 0.1)), ["factor=(0.9, 0.1)", "low <= high"]),
        (lambda: RandAugment(fill_value=True), ["fill_value=True", "one number"]),
        (lambda: RandAugment(fill_value=(0, True, 0)), ["fill_value=(0, True, 0)", "three"]),
    ],
)
def test_bad_arguments_get_one_clear_error_at_construction(build, words):
    with pytest.raises(ValueError) as info:
        build()
    for word in words:
        assert word in str(info.value), (word, str(info.value))
