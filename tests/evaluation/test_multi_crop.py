"""The ResNet paper's multi-crop and fully-convolutional tests against NumPy references."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_resvit as kr
from keras_resvit.data import transforms
from tests.conftest import tiny_vit


def _mean_colour_model(size):
    # Scores depend on where the crop sits, so averaging over crops is observable.
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(2, size, use_bias=False, kernel_initializer="glorot_uniform")(inputs)
    outputs = keras.layers.Softmax()(keras.layers.Flatten()(x))
    return keras.Model(inputs, outputs)


def test_multi_crop_predict_averages_crops_and_scales():
    model = _mean_colour_model(6)
    images = np.random.default_rng(3).uniform(0, 255, (3, 8, 10, 3)).astype("float32") / 50
    scores = kr.evaluation.multi_crop_predict(model, images, scales=(6, 8), crops="ten")
    views = []
    for scale in (6, 8):
        resized = transforms.resize_shorter_side(keras.ops.convert_to_tensor(images), scale)
        views += kr.data.ten_crop(resized, 6)
    expected = np.mean([keras.ops.convert_to_numpy(model(v)) for v in views], axis=0)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores.sum(-1), 1.0, rtol=1e-5)
    center = kr.evaluation.multi_crop_predict(model, images, scales=8, crops="center")
    assert center.shape == (3, 2)


def test_multi_crop_evaluate_reports_top_k():
    model = _mean_colour_model(6)
    images = np.random.default_rng(4).uniform(0, 255, (4, 8, 8, 3)).astype("float32") / 50
    labels = np.argmax(kr.evaluation.multi_crop_predict(model, images, scales=(8,)), -1)
    result = kr.evaluation.multi_crop_evaluate(model, (images, labels), scales=(8,), top_k=(1, 2))
    assert result == {"top1": 1.0, "top2": 1.0}
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(3)
    assert kr.evaluation.multi_crop_evaluate(model, ds, scales=(8,), top_k=(1,)) == {"top1": 1.0}


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"crops": "five"}, ["crops='five'", "'ten'"]),
        ({"scales": (4,)}, ["scales=(4,)", ">= the crop size 6"]),
    ],
)
def test_bad_multi_crop_arguments(kwargs, words):
    with pytest.raises(ValueError) as info:
        kr.evaluation.multi_crop_predict(_mean_colour_model(6), np.zeros((1, 8, 8, 3)), **kwargs)
    for word in words:
        assert word in str(info.value)


def _resize(images, shorter):
    """Antialiased bilinear resize of (N, H, W, C) to a shorter side of `shorter`."""
    height, width = images.shape[1:3]
    factor = shorter / min(height, width)
    size = (round(height * factor), round(width * factor))
    return keras.ops.convert_to_numpy(keras.ops.image.resize(images, size, antialias=True))


def _any_size_from_config(model):
    """The model rebuilt from its config on a (None, None, 3) input, weights copied."""
    config = model.get_config()
    for entry in config["layers"]:
        entry.pop("build_config", None)
        if entry["class_name"] == "InputLayer":
            entry["config"]["batch_shape"] = [None, None, None, 3]
    rebuilt = keras.Model.from_config(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def test_fully_convolutional_at_the_input_size_is_predict():
    model = kr.create_model("resnet20")
    images = np.random.default_rng(5).uniform(0, 255, (3, 48, 48, 3)).astype("float32")
    scores = kr.evaluation.fully_convolutional_predict(model, images, scales=32, flip=False)
    expected = model.predict(_resize(images, 32), verbose=0)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_fully_convolutional_averages_scales_and_flips():
    # He et al. (2016), Section 3.4: whole images, shorter side at each scale, scores averaged;
    # each resized image and its horizontal flip count once.
    model = kr.create_model("resnet20")
    images = np.random.default_rng(6).uniform(0, 255, (3, 40, 56, 3)).astype("float32")
    scores = kr.evaluation.fully_convolutional_predict(
        model, images, scales=(32, 44), flip=True, batch_size=2
    )
    rebuilt = _any_size_from_config(model)
    views = []
    for scale in (32, 44):
        resized = _resize(images, scale)
        assert resized.shape[1:3] == {32: (32, 45), 44: (44, 62)}[scale]
        views += [rebuilt.predict(view, verbose=0) for view in (resized, resized[:, :, ::-1])]
    # The views score differently, so the average is observable.
    assert np.abs(views[0] - views[3]).max() > 1e-4
    np.testing.assert_allclose(scores, np.mean(views, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    "case, kwargs, words",
    [
        ("vit", {}, ["is a ViT", "multi_crop_predict"]),
        ("flatten", {}, ["no fully-convolutional form", "(None, None)", "multi_crop_predict"]),
        ("resnet", {"scales": (0, 32)}, ["scales=(0, 32)", "positive int"]),
        ("resnet", {"scales": 32.5}, ["scales=32.5", "positive int"]),
        ("resnet", {"scales": ()}, ["scales=()", "RESNET_SCALES"]),
        ("resnet", {"flip": "yes"}, ["flip='yes'", "True or False"]),
        ("resnet", {"batch_size": 0}, ["batch_size=0", "positive int"]),
        ("resnet", {"images": np.zeros((40, 48, 3))}, ["images of shape (40, 48, 3)", "(N, H"]),
    ],
)
def test_bad_fully_convolutional_arguments(case, kwargs, words):
    models = {
        "vit": lambda: tiny_vit(),
        "flatten": lambda: _mean_colour_model(6),
        "resnet": lambda: kr.create_model("resnet20"),
    }
    arguments = {"images": np.zeros((1, 40, 48, 3)), "scales": (32,), **kwargs}
    with pytest.raises(ValueError) as info:
        kr.evaluation.fully_convolutional_predict(models[case](), **arguments)
    for word in words:
        assert word in str(info.value)
