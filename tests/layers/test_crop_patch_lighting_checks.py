"""Argument and input checks of the crop, lighting, masked-patch and normalization layers: one
clear error for what they cannot do, and ReverseChannels inside tf.data on every backend."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_resvit as kr
from keras_resvit.layers import (
    PCALighting,
    RandomPadCrop,
    RandomResizedCrop,
    RandomScaleCrop,
    ResizeCenterCrop,
    ReverseChannels,
    preprocessing_layers,
)
from keras_resvit.layers.masked_patch_layers import PatchColourClasses, PatchCorruption
from keras_resvit.layers.normalization import PixelMean
from tests.conftest import assert_save_load_identical, random_images


def _in_tf_data(layer, images, batch=None):
    ds = tf.data.Dataset.from_tensor_slices(images)
    ds = ds.batch(batch) if batch else ds
    return np.concatenate([np.asarray(x)[None] for x in ds.map(layer).as_numpy_iterator()])


def _error(error, build, *words):
    with pytest.raises(error) as info:
        build()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize(
    "build",
    [
        lambda: ResizeCenterCrop(8, 8, data_format="channels_first"),
        lambda: RandomPadCrop(4, data_format="channels_first"),
        lambda: RandomResizedCrop(8, 8, data_format="channels_first"),
        lambda: PCALighting(data_format="channels_first"),
    ],
    ids=["ResizeCenterCrop", "RandomPadCrop", "RandomResizedCrop", "PCALighting"],
)
def test_channels_first_is_refused_not_cropped_as_channels_last(build):
    _error(ValueError, build, "data_format='channels_first'", "'channels_last'")


def test_per_channel_fill_refuses_other_channel_counts():
    layer = RandomPadCrop(4, fill_value=(125.3, 123.0, 113.9), seed=0)
    gray = random_images(2, 16, 16, channels=1)
    for training in (True, False):
        _error(
            ValueError,
            lambda t=training: layer(gray, training=t),
            "RandomPadCrop",
            "fill_value=[125.3, 123.0, 113.9]",
            "1 channels",
        )
    with pytest.raises(ValueError, match="have 1 channels"):
        _in_tf_data(layer, gray)  # static shapes: refused while the map is traced
    for channels in (1, 4):  # a single number pads any channel count
        images = random_images(2, 16, 16, channels=channels)
        out = keras.ops.convert_to_numpy(RandomPadCrop(4, fill_value=7.0)(images, training=True))
        assert out.shape == images.shape
        assert _in_tf_data(RandomPadCrop(4, fill_value=7.0, seed=1), images).shape == images.shape


@pytest.mark.parametrize("channels", [1, 4])
def test_pca_lighting_refuses_images_that_are_not_rgb(channels):
    images = random_images(2, 8, 8, channels=channels)
    for training in (True, False):
        _error(
            ValueError,
            lambda t=training: PCALighting(seed=0)(images, training=t),
            "PCALighting",
            f"{channels} channels",
            "3 channels",
        )
    with pytest.raises(ValueError, match=f"{channels} channels"):
        _in_tf_data(PCALighting(seed=0), images)


def test_pca_lighting_refuses_factor_and_reads_its_own_configs():
    _error(
        ValueError, lambda: PCALighting(factor=0.5), "factor=0.5", "not an argument", "alpha_std"
    )
    layer = PCALighting(alpha_std=0.2, seed=3)
    assert "factor" not in layer.get_config()
    restored = PCALighting.from_config(layer.get_config())
    assert restored.get_config() == layer.get_config()
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert again.alpha_std == 0.2


def test_pca_lighting_shifts_uint8_images_as_floats_clipped_to_the_range():
    # Keras' RandomBrightness adds in the images' dtype: black uint8 pixels turned white.
    black = np.zeros((6, 1, 1, 3), "uint8")
    out = keras.ops.convert_to_numpy(PCALighting(seed=3)(black, training=True))
    floats = PCALighting(seed=3)(black.astype("float32"), training=True)
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() < 10.0
    np.testing.assert_array_equal(out, keras.ops.convert_to_numpy(floats))


@pytest.mark.parametrize("value_range", [(0, float("nan")), (255, 0)])
def test_pca_lighting_refuses_a_value_range_that_is_not_low_high(value_range):
    _error(
        ValueError,
        lambda: PCALighting(value_range=value_range),
        f"PCALighting: value_range={value_range!r}",
        "low < high",
    )


def test_random_resized_crop_fallback_box_is_centered():
    """torchvision's RandomResizedCrop: when no drawn box fits, the largest box with a ratio in
    range is taken from the center ((height - h) // 2, (width - w) // 2)."""
    # A box of area 1 and ratio 4 never fits a square: the fallback is 8 rows by 32 columns.
    layer = RandomResizedCrop(8, 32, scale=(1.0, 1.0), ratio=(4.0, 4.0), seed=0)
    image = np.zeros((32, 32, 3), "float32")
    boxes = {
        tuple(int(v) for v in layer.get_random_transformation(image, training=True))
        for _ in range(8)
    }
    assert boxes == {(12, 0, 8, 32)}
    rows = np.tile(np.arange(32, dtype="float32")[:, None, None], (8, 1, 32, 3))
    nearest = RandomResizedCrop(8, 32, scale=(1.0, 1.0), ratio=(4.0, 4.0), interpolation="nearest")
    out = _in_tf_data(nearest, rows)
    np.testing.assert_array_equal(out[:, :, 0, 0], np.tile(np.arange(12, 20), (8, 1)))


@pytest.mark.parametrize(
    "layer",
    [
        RandomResizedCrop(8, 8, scale=(0.5, 0.5), ratio=(1.0, 1.0), seed=0),  # 8x8 of 12x12
        RandomScaleCrop(8, 8, scale_range=(12, 12), seed=0),  # shorter side 12: 8x8 of 12x12
    ],
    ids=["random_resized_crop", "random_scale_crop"],
)
def test_a_random_box_is_placed_at_every_offset_edges_included(layer):
    """torchvision draws a fitting box's offset with randint(0, room + 1): flush with the
    bottom or right edge as often as with the top or left."""
    image = np.zeros((12, 12, 3), "float32")
    boxes = [
        tuple(int(v) for v in layer.get_random_transformation(image, training=True))
        for _ in range(200)
    ]
    assert {box[2:] for box in boxes} == {(8, 8)}
    for axis in (0, 1):
        offsets = np.bincount([box[axis] for box in boxes], minlength=5)
        assert len(offsets) == 5 and offsets.min() >= 20, offsets  # 0 .. 4, 40 each expected


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"rate": 0.0}, ["rate=0.0", "(0, 1]"]),
        ({"rate": 1.5}, ["rate=1.5", "(0, 1]"]),
        ({"mask_fraction": 2.0}, ["mask_fraction=2.0", "[0, 1]"]),
        ({"random_fraction": -0.1}, ["random_fraction=-0.1", "[0, 1]"]),
        ({"mask_fraction": 0.8, "random_fraction": 0.3}, ["random_fraction=0.3", "at most 1"]),
        ({"seed": -1}, ["seed=-1"]),
    ],
)
def test_patch_corruption_refuses_bad_arguments(kwargs, words):
    _error(ValueError, lambda: PatchCorruption(**kwargs), "PatchCorruption", *words)


def test_patch_corruption_rates_and_inputs():
    tokens = np.random.default_rng(0).normal(size=(2, 16, 8)).astype("float32")
    for rate, picked in ((1.0, 16), (0.01, 1), (0.25, 4)):  # at least one patch is picked
        mask = keras.ops.convert_to_numpy(PatchCorruption(rate=rate, seed=1)(tokens)[1])
        assert (mask.sum(axis=1) == picked).all(), rate
    _error(ValueError, lambda: PatchCorruption()(tokens[0]), "PatchCorruption", "(16, 8)")
    _error(ValueError, lambda: PatchCorruption()(keras.Input((None, 8))), "fixed number")


@pytest.mark.parametrize(
    "build, words",
    [
        (lambda: PatchColourClasses(0), ["patch_size=0", "positive int"]),
        (lambda: PatchColourClasses(4.0), ["patch_size=4.0"]),
        (lambda: PatchColourClasses(4, bits=0), ["bits=0"]),
        (lambda: PatchColourClasses(4, bits=9), ["bits=9", "[1, 8]"]),
        (lambda: PatchColourClasses(5)(random_images(2, 16, 16)), ["16x16", "patch_size=5"]),
        (lambda: PatchColourClasses(4)(random_images(2, 16, 16, 1)), ["(2, 16, 16, 1)", "RGB"]),
        (lambda: PatchColourClasses(4)(keras.Input((16, 16, 4))), ["(None, 16, 16, 4)"]),
        (lambda: PatchColourClasses(4)(keras.Input((None, None, 3))), ["fixed size"]),
    ],
)
def test_patch_colour_classes_refuses_bad_arguments_and_images(build, words):
    _error(ValueError, build, "PatchColourClasses", *words)


def test_reverse_channels_runs_in_tf_data_and_in_models(tmp_path):
    images = random_images(4, 6, 6)
    expected = images[..., ::-1]
    for batch in (None, 2):  # single images and batches
        out = _in_tf_data(ReverseChannels(), images, batch).reshape(images.shape)
        np.testing.assert_array_equal(out, expected)
    bgr, normalize = preprocessing_layers("caffe")
    normalize(images)  # Keras' Normalization is built outside tf.data

    def caffe_preset(x):
        return normalize(bgr(x))

    caffe = _in_tf_data(caffe_preset, images, 2).reshape(images.shape)
    np.testing.assert_allclose(caffe, expected - np.array([103.939, 116.779, 123.68]), atol=1e-4)
    inputs = keras.Input((6, 6, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(ReverseChannels(name="bgr")(inputs)))
    restored = assert_save_load_identical(model, tmp_path, images)
    assert type(restored.get_layer("bgr")) is ReverseChannels


@pytest.mark.parametrize("preset", ["caffe", "imagenet", "inception", "cifar", "pixel_mean"])
def test_a_model_called_plainly_runs_in_inference_whatever_its_preprocessing(preset):
    """No preprocessing layer may put the model it starts in training mode: an image
    augmentation layer's default `training=True` would set it for every layer after it, and
    BatchNorm would normalize with each batch's statistics."""
    model = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), preprocessing=preset)
    for variable in model.weights:  # statistics far from a batch's own
        if variable.path.endswith("moving_mean"):
            variable.assign(np.full(variable.shape, 3.0, "float32"))
    images = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    plain = keras.ops.convert_to_numpy(model(images))
    np.testing.assert_allclose(plain, keras.ops.convert_to_numpy(model(images, training=False)))
    assert np.abs(plain - keras.ops.convert_to_numpy(model(images, training=True))).max() > 1e-3


def test_reverse_channels_configs_written_before_it_took_data_format_load():
    config = {
        "module": "keras_resvit.layers.normalization",
        "class_name": "ReverseChannels",
        "config": {"name": "preprocessing_bgr", "trainable": True, "dtype": "float32"},
        "registered_name": "keras_resvit>ReverseChannels",
    }
    layer = keras.saving.deserialize_keras_object(config)
    image = random_images(1, 2, 2)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(image)), image[..., ::-1])


def test_reverse_channels_flips_the_channel_axis_of_channels_first_images():
    image = random_images(1, 2, 2)
    flipped = ReverseChannels(data_format="channels_first")(image.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(flipped), image[..., ::-1].transpose(0, 3, 1, 2)
    )


def test_pixel_mean_in_tf_data_runs_on_tensorflow_and_is_refused_elsewhere(backend):
    images = random_images(4, 4, 4)
    layer = PixelMean()
    layer.adapt(images)
    if backend == "tensorflow":
        out = _in_tf_data(layer, images, 2).reshape(images.shape)
        np.testing.assert_allclose(out, images - images.mean(0), atol=1e-3)
    else:
        _error(ValueError, lambda: _in_tf_data(layer, images, 2), "PixelMean", "tf.data")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(images)), images - images.mean(0), atol=1e-3
    )


@pytest.mark.parametrize(
    "build, words",
    [
        (lambda: ResizeCenterCrop(8, 8, crop_ratio=True), ["crop_ratio=True", "(0, 1]"]),
        (lambda: RandomResizedCrop(8, 8, scale=(True, True)), ["scale=(True, True)", "pair"]),
    ],
)
def test_a_bool_is_not_a_crop_number(build, words):
    with pytest.raises(ValueError) as info:
        build()
    for word in words:
        assert word in str(info.value)


def test_random_pad_crop_refuses_the_crop_size_it_does_not_take():
    with pytest.raises(ValueError, match=r"RandomPadCrop: height=32 is not an argument.*padding"):
        RandomPadCrop(padding=4, height=32, width=32)


@pytest.mark.parametrize(
    "values, vectors",
    [
        ((0.2, -0.01, 0.004), None),  # a covariance has no negative eigenvalue
        ((0.2, float("nan"), 0.004), None),
        (None, [[1, 0, 0], [0, float("inf"), 0], [0, 0, 1]]),
        ("abc", None),
        (None, 5),
        ((0.2, 0.01), None),
    ],
)
def test_pca_lighting_refuses_components_that_are_not_a_covariance_s(values, vectors):
    from keras_resvit.layers.lighting import IMAGENET_EIGENVALUES, IMAGENET_EIGENVECTORS

    values = IMAGENET_EIGENVALUES if values is None else values
    vectors = IMAGENET_EIGENVECTORS if vectors is None else vectors
    _error(
        ValueError,
        lambda: PCALighting(eigenvalues=values, eigenvectors=vectors),
        "eigenvalues=",
        "none negative",
        "3x3",
    )
