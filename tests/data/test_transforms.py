"""The evaluation transform and ten crops vs NumPy; the old module names still work."""

import importlib
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_resvit as kr
from keras_resvit.data import transforms
from keras_resvit.layers import ResizeCenterCrop, normalization


def bilinear_resize(image, height, width):
    """Half-pixel-centre bilinear resize without antialiasing (tf.image.resize's rule)."""

    def axis(out_size, in_size):
        src = np.clip((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0, in_size - 1)
        low = np.floor(src).astype(int)
        return low, np.minimum(low + 1, in_size - 1), src - low

    y0, y1, wy = axis(height, image.shape[0])
    x0, x1, wx = axis(width, image.shape[1])
    top = image[y0][:, x0] * (1 - wx)[:, None] + image[y0][:, x1] * wx[:, None]
    bottom = image[y1][:, x0] * (1 - wx)[:, None] + image[y1][:, x1] * wx[:, None]
    return top * (1 - wy)[:, None, None] + bottom * wy[:, None, None]


def reference_center_crop(image, size, crop_ratio):
    short = min(image.shape[:2])
    target = round(size / crop_ratio)
    new_h = round(image.shape[0] * target / short)
    new_w = round(image.shape[1] * target / short)
    resized = bilinear_resize(image, new_h, new_w)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized[top : top + size, left : left + size]


def test_the_old_data_preprocessing_names_warn_and_give_the_moved_objects():
    old = importlib.import_module("keras_resvit.data.preprocessing")
    moved = {
        "NORMALIZATION_PRESETS": normalization.NORMALIZATION_PRESETS,
        "preprocessing_layers": normalization.preprocessing_layers,
        "evaluation_crop_ratio": transforms.evaluation_crop_ratio,
        "ten_crop": transforms.ten_crop,
        "multi_crop_predict": kr.evaluation.multi_crop_predict,
        "fully_convolutional_predict": kr.evaluation.fully_convolutional_predict,
    }
    for name, value in moved.items():
        with pytest.warns(DeprecationWarning, match=f"preprocessing.{name} is deprecated; use "):
            assert getattr(old, name) is value
    for name in ("multi_crop_predict", "multi_crop_evaluate", "fully_convolutional_predict"):
        with pytest.warns(DeprecationWarning, match=f"data.{name} is deprecated; use "):
            assert getattr(kr.data, name) is getattr(kr.evaluation, name)
    assert set(normalization.NORMALIZATION_PRESETS) == {
        "imagenet",
        "inception",
        "cifar",
        "caffe",
        "pixel_mean",
        None,
    }


@pytest.mark.parametrize(
    "shape, size, crop_ratio", [((20, 30), 16, 0.875), ((10, 14), 16, 1.0), ((37, 25), 12, 0.5)]
)
def test_resize_center_crop_matches_numpy(shape, size, crop_ratio):
    image = np.random.default_rng(1).uniform(0, 255, (*shape, 3)).astype("float32")
    layer = ResizeCenterCrop(size, size, crop_ratio=crop_ratio, antialias=False)
    expected = reference_center_crop(image.astype("float64"), size, crop_ratio)
    eager = keras.ops.convert_to_numpy(layer(image))
    np.testing.assert_allclose(eager, expected, atol=1e-3)
    # The same layer inside tf.data, on images whose size is unknown to the graph.
    ds = tf.data.Dataset.from_generator(
        lambda: iter([image]), output_signature=tf.TensorSpec((None, None, 3), tf.float32)
    )
    (in_pipeline,) = list(ds.map(layer).as_numpy_iterator())
    np.testing.assert_allclose(in_pipeline, expected, atol=1e-3)


def test_evaluation_transform_default_is_256_to_224():
    layer = kr.data.evaluation_transform(224)
    assert layer.crop_ratio == 0.875 and layer.resize_to == 256
    out = layer(np.zeros((300, 500, 3), "float32"))
    assert tuple(out.shape) == (224, 224, 3)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert restored.get_config() == layer.get_config()


@pytest.mark.parametrize(
    "shorter_side, image_size, ratio",
    [
        (375, 224, 0.875),  # an ImageNet photo: resized to 256, center 224
        (256, 224, 0.875),  # 224 / 0.875: the crop no longer upsamples
        (255, 224, 1.0),
        (32, 32, 1.0),  # CIFAR at its own size
        (32, 224, 1.0),  # CIFAR upsampled for fine-tuning
        (36, 32, 1.0),  # under 32 / 0.875 = 36.57
        (37, 32, 0.875),
    ],
)
def test_evaluation_crop_ratio_follows_the_image_size(shorter_side, image_size, ratio):
    assert transforms.evaluation_crop_ratio(shorter_side, image_size) == ratio


@pytest.mark.parametrize(
    "sizes, words",
    [
        ((0, 8, 4), "height=0"),  # was a ZeroDivisionError
        ((8, 0, 4), "width=0"),
        ((8, 8, 0), "size=0"),  # was (1, 1)
        ((-8, 8, 4), "height=-8"),
    ],
)
def test_shorter_side_size_refuses_sizes_below_one(sizes, words):
    assert transforms.shorter_side_size(8, 16, 4) == (4, 8)
    with pytest.raises(ValueError, match=f"^{words} must be a positive int"):
        transforms.shorter_side_size(*sizes)


def test_ten_crop_matches_numpy_slices():
    images = np.random.default_rng(2).uniform(0, 255, (2, 9, 12, 3)).astype("float32")
    crops = [keras.ops.convert_to_numpy(c) for c in kr.data.ten_crop(images, 5)]
    corners = [(0, 0), (0, 7), (4, 0), (4, 7), (2, 3)]
    expected = [images[:, t : t + 5, s : s + 5] for t, s in corners]
    expected += [e[:, :, ::-1] for e in expected]
    assert len(crops) == 10
    for actual, want in zip(crops, expected, strict=True):
        np.testing.assert_array_equal(actual, want)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"crop_ratio": 0.0}, ["crop_ratio=0.0", "(0, 1]"]),
        ({"height": 0}, ["height=0", "positive int"]),
    ],
)
def test_bad_center_crop_arguments(kwargs, words):
    with pytest.raises(ValueError) as info:
        ResizeCenterCrop(**{"height": 8, "width": 8, **kwargs})
    for word in words:
        assert word in str(info.value)


def test_pixel_mean_subtracts_the_mean_image_and_is_saved(tmp_path):
    images = np.random.default_rng(0).uniform(0, 255, (20, 8, 8, 3)).astype("float32")
    layer = normalization.PixelMean()
    layer.adapt(tf.data.Dataset.from_tensor_slices((images, np.zeros(20))).batch(6))
    assert layer.adapted and float(layer.count.numpy()) == 20
    np.testing.assert_allclose(layer.mean.numpy(), images.mean(0), rtol=1e-5)
    np.testing.assert_allclose(layer(images[:2]), images[:2] - images.mean(0), atol=1e-3)
    model = kr.build_resnet(8, stem="cifar", input_shape=(8, 8, 3), preprocessing="pixel_mean")
    assert not model.get_layer("preprocessing").adapted
    model.get_layer("preprocessing").adapt(images)
    model.save(tmp_path / "m.keras")
    restored = kr.load_model(tmp_path / "m.keras").get_layer("preprocessing")
    np.testing.assert_allclose(restored.mean.numpy(), images.mean(0), rtol=1e-5)
    with pytest.raises(ValueError, match="preprocessing='pixel_mean' subtracts a mean image"):
        kr.build_resnet(8, stem="cifar", input_shape=(None, None, 3), preprocessing="pixel_mean")
    with pytest.raises(ValueError, match="images of shape \\(4, 4, 3\\) do not match"):
        layer.adapt(images[:, :4, :4])


def test_the_old_presets_names_still_work_and_say_which_name_replaced_them():
    cases = [
        (kr.data, "AUGMENTATION_PRESETS"),
        (kr.data.augmentation, "AUGMENTATION_PRESETS"),
        (kr.data.preprocessing, "NORMALIZATION_PRESETS"),
        (kr.layers, "NORMALIZATION_PRESETS"),
    ]
    for module, new in cases:
        with pytest.warns(DeprecationWarning, match=f"PRESETS is deprecated; use .*{new}"):
            assert module.PRESETS is getattr(module, new)
    assert set(kr.data.AUGMENTATION_PRESETS).isdisjoint(kr.layers.NORMALIZATION_PRESETS)


@pytest.mark.parametrize(
    "old, new",
    [
        ("keras_resvit.layers.preprocessing", "keras_resvit.layers.normalization"),
        ("keras_resvit.layers.masked_patches", "keras_resvit.layers.masked_patch_layers"),
        ("keras_resvit.training.masked_patches", "keras_resvit.training.masked_pretraining"),
        ("keras_resvit.models.classic", "keras_resvit.models.baselines"),
        ("keras_resvit.layers.classic_layers", "keras_resvit.layers.baseline_layers"),
        ("keras_resvit.evaluate", "keras_resvit.evaluation"),
    ],
)
def test_a_renamed_module_imports_as_the_new_one_with_a_warning(old, new, monkeypatch):
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated; use {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
