"""The ResNet paper's multi-crop and fully-convolutional tests against NumPy references."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_resvit as kr
from keras_resvit.data import transforms
from tests.conftest import tiny_vit


def _mean_colour_model(size, classes=2):
    # Scores depend on where the crop sits, so averaging over crops is observable.
    inputs = keras.Input((size, size, 3))
    conv = keras.layers.Conv2D(classes, size, use_bias=False, kernel_initializer="glorot_uniform")
    x = conv(inputs)
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


def _words(*words):
    """A `match` pattern: each of `words`, literally, in this order."""
    return ".*".join(re.escape(word) for word in words)


def _any_size_model():
    inputs = keras.Input((None, None, 3))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))


def _map_model():
    inputs = keras.Input((6, 6, 3))
    return keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))


NAN = np.full((2, 8, 8, 3), 100.0)
NAN[1, 2, 3, 0] = np.nan


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"batch_size": 0}, ["batch_size=0", "positive int"]),
        ({"batch_size": -1}, ["batch_size=-1", "positive int"]),
        ({"batch_size": 2.5}, ["batch_size=2.5", "positive int"]),
        ({"batch_size": True}, ["batch_size=True", "positive int"]),
        ({"scales": 8.0}, ["scales=8.0", "an int >= the crop size 6", "sequence"]),
        ({"scales": ()}, ["scales=()", ">= the crop size 6"]),
        ({"scales": "8"}, ["scales='8'", ">= the crop size 6"]),
        ({"scales": (8, None)}, ["scales=(8, None)", ">= the crop size 6"]),
        ({"crops": None}, ["crops=None", "'center', 'ten'"]),
        ({"model": "model.keras"}, ["model of type str", "keras.Model"]),
        ({"model": _any_size_model}, ["(None, None, None, 3)", "fixed square input size"]),
        ({"images": np.zeros((0, 8, 8, 3))}, ["images of shape (0, 8, 8, 3)", "N, H, W >= 1"]),
        ({"images": np.zeros((8, 8, 3))}, ["images of shape (8, 8, 3)", "4-D batch (N, H, W, 3)"]),
        ({"images": np.zeros((2, 8, 8, 1))}, ["(2, 8, 8, 1) have 1 channels", "model takes 3"]),
        ({"images": "photo.png"}, ["images of type str", "(N, H, W, 3)"]),
        ({"images": [np.zeros((8, 8, 3)), np.zeros((9, 9, 3))]}, ["images of type list"]),
        ({"images": NAN}, ["images hold NaN or infinite pixels (image 1"]),
        ({"images": np.full((1, 8, 8, 3), np.inf)}, ["images hold NaN or infinite pixels"]),
    ],
)
def test_bad_multi_crop_predict_arguments(kwargs, words):
    arguments = {"model": _mean_colour_model(6), "images": np.zeros((2, 8, 8, 3)), "scales": 8}
    arguments.update(kwargs)
    if not isinstance(arguments["model"], (keras.Model, str)):
        arguments["model"] = arguments["model"]()  # built in the test, under its backend
    with pytest.raises(ValueError, match=_words(*words)):
        kr.evaluation.multi_crop_predict(**arguments)


X = np.random.default_rng(7).uniform(0, 255, (4, 8, 8, 3)).astype("float32")
Y = np.array([0, 1, 1, 0])


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"top_k": (0,)}, ["top_k=(0,)", "ints in [1, 2]"]),
        ({"top_k": (1, 3)}, ["top_k=(1, 3)", "[1, 2] (the model has 2 classes)"]),
        ({"top_k": ()}, ["top_k=()", "non-empty sequence"]),
        ({"top_k": 1.5}, ["top_k=1.5", "an int"]),
        ({"top_k": "1"}, ["top_k='1'", "an int"]),
        ({"scales": 4}, ["scales=4", ">= the crop size 6"]),
        ({"crops": "five"}, ["crops='five'", "'ten'"]),
        ({"model": "model.keras"}, ["model of type str", "keras.Model"]),
        ({"model": _map_model}, ["shape (None, 6, 6, 2), not a classifier"]),
        ({"data": []}, ["data of type list holds no batches", "at least one image"]),
        ({"data": iter(())}, ["data of type tuple_iterator holds no batches"]),
        ({"data": "images/"}, ["data of type str is not valid", "(images, labels)"]),
        ({"data": X}, ["data of type ndarray is not valid", "(images, labels)"]),
        ({"data": 3}, ["data of type int is not valid"]),
        ({"batch_size": 0}, ["batch_size=0", "positive int"]),
        ({"data": [(X, Y, Y)]}, ["data batch 1 of type tuple", "(images, labels) pair"]),
        ({"data": (X, Y + 0.5)}, ["labels [0.5 1.5 1.5 0.5] of dtype float64", "[0, 2)"]),
        ({"data": (X, Y * np.nan)}, ["labels [nan nan nan nan]", "integer class indices"]),
        ({"data": (X, np.array(list("abba")))}, ["labels ['a' 'b' 'b' 'a'] of dtype <U1"]),
        ({"data": (X, Y + 1)}, ["labels [1 2 2 1]; label 2 (image 1)", "[0, 2) per image"]),
        ({"data": (X, Y - 1)}, ["labels [-1  0  0 -1]; label -1 (image 0)", "[0, 2)"]),
        ({"data": (X, Y[:3])}, ["4 images and labels of shape (3,)", "shape (4,)"]),
        ({"data": (X, np.eye(2)[Y])}, ["labels of shape (4, 2)", "labels.argmax(-1)"]),
        ({"data": [(X, Y), (X, Y + 2)]}, ["data batch 2 has 4 images and labels [2 3 3 2]"]),
        ({"data": (X[:0], Y[:0])}, ["data batch 1 images of shape (0, 8, 8, 3)"]),
        ({"data": (X[0], Y[:1])}, ["data batch 1 images of shape (8, 8, 3)", "4-D batch"]),
        ({"data": (X[..., :1], Y)}, ["data batch 1 images", "have 1 channels", "takes 3"]),
        ({"data": (NAN, Y[:2])}, ["data batch 1 images hold NaN or infinite pixels"]),
    ],
)
def test_bad_multi_crop_evaluate_arguments(kwargs, words):
    arguments = {"model": _mean_colour_model(6), "data": (X, Y), "scales": 8, "top_k": 1}
    arguments.update(kwargs)
    if not isinstance(arguments["model"], (keras.Model, str)):
        arguments["model"] = arguments["model"]()  # built in the test, under its backend
    with pytest.raises(ValueError, match=_words(*words)):
        kr.evaluation.multi_crop_evaluate(**arguments)


def test_multi_crop_accepts_every_valid_spelling_alike():
    model = _mean_colour_model(6)
    images = np.random.default_rng(8).uniform(0, 255, (4, 8, 10, 3)).astype("float32")
    scores = kr.evaluation.multi_crop_predict(model, images, scales=(6, 8))
    for scales in ([6, 8], np.array([6, 8]), (np.int64(6), 8)):
        same = kr.evaluation.multi_crop_predict(model, images, scales=scales)
        np.testing.assert_array_equal(same, scores)
    for batch_size in (1, 3):
        same = kr.evaluation.multi_crop_predict(model, images, scales=(6, 8), batch_size=batch_size)
        np.testing.assert_allclose(same, scores, rtol=1e-6, atol=1e-7)
    one = kr.evaluation.multi_crop_predict(model, images[:1], scales=(6, 8))
    np.testing.assert_allclose(one, scores[:1], rtol=1e-6, atol=1e-7)

    # One label wrong: top-1 3 of 4, top-2 (both classes) all.
    labels = np.argmax(kr.evaluation.multi_crop_predict(model, images, scales=8), -1)
    labels[0] = 1 - labels[0]
    expected = {"top1": 0.75, "top2": 1.0}
    evaluate = kr.evaluation.multi_crop_evaluate
    assert evaluate(model, (images, labels), scales=8, top_k=(1, 2)) == expected
    spellings = [
        [images, labels],
        (images, labels.astype("float32")),
        (images, labels[:, None]),
        (list(images), list(labels)),
        [(images[:3], labels[:3]), (images[3:], labels[3:])],
        iter([(images[:1], labels[:1]), (images[1:], labels[1:])]),
        tf.data.Dataset.from_tensor_slices((images, labels)).batch(3),
    ]
    for data in spellings:
        assert evaluate(model, data, scales=8, top_k=[1, 2]) == expected
    for batch_size in (1, 3):
        assert evaluate(model, spellings[0], scales=8, top_k=(1, 2), batch_size=batch_size) == (
            expected
        )
    assert evaluate(model, (images, labels), scales=8, top_k=1) == {"top1": 0.75}
    # top_k=None: (1, 5), or (1,) where the model has 5 classes or fewer.
    assert evaluate(model, (images, labels), scales=8) == {"top1": 0.75}
    ten = _mean_colour_model(6, classes=10)
    assert sorted(evaluate(ten, (images, labels), scales=8)) == ["top1", "top5"]


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
        ("resnet", {"scales": (0, 32)}, ["scales=(0, 32)", "an int >= 32"]),
        ("resnet", {"scales": (1, 32)}, ["scales=(1, 32)", "an int >= 32"]),  # 1 for 100?
        ("resnet", {"scales": 31}, ["scales=31", "an int >= 32"]),
        ("resnet", {"scales": 32.5}, ["scales=32.5", "an int >= 32"]),
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


def test_images_of_another_scale_warn_once_per_read_and_16_bit_ones_are_refused():
    # [0, 1] images warned once per batch (a message naming each batch is a new warning to
    # Python's filter); 16-bit pixels (0-65535) only warned, and scored near chance.
    model = _mean_colour_model(6)
    images = np.random.default_rng(4).uniform(0, 1, (12, 8, 8, 3)).astype("float32")
    labels = np.arange(12) % 2
    batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)  # 6 batches
    with pytest.warns(UserWarning, match=r"data batch 1 images range from") as caught:
        kr.evaluation.multi_crop_evaluate(model, batches, scales=(8,), top_k=(1,))
    assert len([w for w in caught if "range from" in str(w.message)]) == 1
    with pytest.warns(UserWarning, match=r"train batch 1 images range") as caught:
        kr.evaluation.few_shot(_mean_colour_model(8), batches, batches, shots=1, batch_size=2)
    ranges = [str(w.message) for w in caught if "range from" in str(w.message)]
    assert len([m for m in ranges if m.startswith("train")]) == 1, ranges
    sixteen_bit = (images * 65535).astype("uint16")
    with pytest.raises(ValueError, match=r"range from \d+ to \d+, which are no 8-bit pixels"):
        kr.evaluation.multi_crop_evaluate(model, (sixteen_bit, labels), scales=(8,))
    with pytest.raises(ValueError, match=r"scale 16-bit images, 0-65535, by 255 / 65535"):
        kr.data.load_dataset((sixteen_bit, labels), "train")
