"""`kr.predict`, `plot_predictions` and the ResNet paper's multi-view tests score classes with
probabilities, whatever the model's last activation: a model of logits (a `recipe="deit3"` or
`"rsb_a1"` model) and its files score as the same model ending in a softmax."""

import keras
import numpy as np
import pytest
from PIL import Image

import keras_resvit as kr
from keras_resvit.data.image_files import load_images
from keras_resvit.predict import predict
from tests.conftest import HAS_ONNX, random_images

CLASSES = 4


def _twins(seed=0, activations=("linear", "sigmoid", "log_softmax")):
    """The same ResNet with a softmax, without one (logits), with a sigmoid, ..."""
    keras.utils.set_random_seed(seed)
    softmax = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=CLASSES)
    head = softmax.get_layer("predictions")  # scores far from uniform: logits of several units
    head.kernel.assign(np.random.default_rng(seed).normal(0, 2.0, head.kernel.shape))
    twins = {"softmax": softmax}
    for activation in activations:
        twin = kr.build_resnet(
            8,
            stem="cifar",
            input_shape=(16, 16, 3),
            num_classes=CLASSES,
            classifier_activation=None if activation == "linear" else activation,
        )
        twin.set_weights(softmax.get_weights())
        twins[activation] = twin
    return twins


def _images(tmp_path, count=3):
    paths = []
    for i, pixels in enumerate(random_images(count, 16, 16, seed=3)):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(pixels.astype("uint8")).save(paths[-1])
    return paths


def _by_class(results):
    return np.array(
        [[c["score"] for c in sorted(top, key=lambda c: c["index"])] for top in results]
    )


def test_a_model_of_logits_scores_its_classes_with_their_softmax(tmp_path):
    twins, paths = _twins(), _images(tmp_path)
    expected = _by_class(predict(twins["softmax"], paths, top_k=CLASSES))
    logits = twins["linear"].predict(load_images(paths, (16, 16), channels=3), verbose=0)
    assert np.abs(keras.ops.convert_to_numpy(logits)).max() > 1.5  # raw logits: not scores
    scores = _by_class(predict(twins["linear"], paths, top_k=CLASSES))
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    np.testing.assert_allclose(scores.sum(axis=-1), 1.0, atol=1e-5)
    log_softmax = _by_class(predict(twins["log_softmax"], paths, top_k=CLASSES))
    np.testing.assert_allclose(log_softmax, expected, atol=1e-5)  # its exponential
    # A sigmoid's outputs are probabilities already (one per class): left as they are.
    sigmoid = _by_class(predict(twins["sigmoid"], paths, top_k=CLASSES))
    np.testing.assert_allclose(
        sigmoid, keras.ops.convert_to_numpy(keras.ops.sigmoid(logits)), atol=1e-5
    )


@pytest.mark.one_backend("tensorflow", reason="the files are converted as under any backend")
@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
def test_files_of_logits_score_as_their_keras_model(tmp_path, suffix):
    if suffix == ".onnx" and not HAS_ONNX:
        pytest.skip("needs the onnx extra (tf2onnx, onnx, onnxruntime)")
    twins, paths = _twins(seed=1), _images(tmp_path)
    expected = _by_class(predict(twins["softmax"], paths, top_k=CLASSES))
    for activation, model in twins.items():
        target = tmp_path / f"{activation}{suffix}"
        kr.export(model, target, format=suffix[1:])
        scores = _by_class(predict(target, paths, top_k=CLASSES))
        if activation == "sigmoid":
            np.testing.assert_array_less(scores.sum(axis=-1), CLASSES)  # not renormalized
            np.testing.assert_allclose(scores, _by_class(predict(model, paths, top_k=4)), atol=1e-5)
        else:
            np.testing.assert_allclose(scores, expected, atol=1e-5, err_msg=activation)


@pytest.mark.one_backend("tensorflow", reason="the file is converted as under any backend")
def test_a_fully_quantized_softmax_file_is_not_given_a_second_softmax(tmp_path):
    # int8: the file ends SOFTMAX -> DEQUANTIZE; its scores stay the softmax's (sum 1), where
    # a second softmax would flatten them toward 1 / classes.
    softmax, paths = _twins(seed=2)["softmax"], _images(tmp_path)
    target = tmp_path / "q.tflite"
    kr.export(softmax, target, quantization="int8", representative_data=random_images(8, 16, 16))
    scores = _by_class(predict(target, paths, top_k=CLASSES))
    np.testing.assert_allclose(scores.sum(axis=-1), 1.0, atol=0.02)
    expected = _by_class(predict(softmax, paths, top_k=CLASSES))
    assert np.abs(scores - expected).max() < 0.05 < np.abs(expected - 1 / CLASSES).max()


def test_plotted_predictions_show_probabilities(tmp_path, monkeypatch):
    from keras_resvit.viz import predictions

    twins = _twins(seed=3)
    images = random_images(2, 16, 16, seed=4)
    titles = {"softmax": [], "linear": []}
    for activation, shown in titles.items():
        monkeypatch.setattr(predictions, "show_image", lambda ax, image, title: shown.append(title))  # noqa: B023 - called within the iteration
        kr.viz.plot_predictions(twins[activation], images, tmp_path / f"{activation}.png", top_k=2)
    assert titles["linear"] == titles["softmax"] and len(titles["linear"]) == 2


@pytest.mark.parametrize("test", ["multi_crop_predict", "fully_convolutional_predict"])
def test_multi_view_tests_average_probabilities(test):
    """The 10-crop and fully-convolutional tests average softmax scores (He et al. 2016,
    Section 3.4); a logits model's views go through a softmax first, so it ranks and scores
    classes as its softmax twin (a mean of logits would not)."""
    twins = _twins(seed=5)
    images = random_images(3, 20, 24, seed=6)
    run = getattr(kr.evaluation, test)
    expected = run(twins["softmax"], images, scales=(16, 20))
    scores = run(twins["linear"], images, scales=(16, 20))
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    np.testing.assert_allclose(scores.sum(axis=-1), 1.0, atol=1e-5)
    sigmoid = run(twins["sigmoid"], images, scales=(16, 20))  # probabilities as they are
    assert np.all((sigmoid > 0) & (sigmoid < 1)) and np.abs(sigmoid.sum(-1) - 1).min() > 0.01


def test_a_softmax_classifier_inside_another_model_is_scored_once(tmp_path):
    """A classifier wrapped in a `keras.Sequential` ends in its own softmax: no second one
    (which would flatten its scores toward 1 / classes), as the model unwrapped."""
    softmax = _twins(seed=7, activations=())["softmax"]
    wrapped = keras.Sequential([keras.Input((16, 16, 3)), softmax])
    images = random_images(3, 20, 24, seed=8)
    for test in ("multi_crop_predict", "fully_convolutional_predict"):
        run = getattr(kr.evaluation, test)
        expected = run(softmax, images, scales=(16, 20))
        np.testing.assert_allclose(run(wrapped, images, scales=(16, 20)), expected, atol=1e-6)
        assert np.abs(expected - 1 / CLASSES).max() > 0.05  # far from uniform
    paths = _images(tmp_path)
    expected = _by_class(predict(softmax, paths, top_k=CLASSES))
    np.testing.assert_allclose(_by_class(predict(wrapped, paths, top_k=CLASSES)), expected)


def test_features_are_averaged_as_they_are_and_not_evaluated_as_classes():
    features = kr.build_resnet(
        8, stem="cifar", input_shape=(16, 16, 3), include_top=False, pooling="avg"
    )
    images = random_images(2, 16, 16, seed=10)
    averaged = kr.evaluation.multi_crop_predict(features, images, scales=16, crops="center")
    np.testing.assert_allclose(averaged, features.predict(images, verbose=0), atol=1e-5)
    with pytest.raises(ValueError, match="not a classifier: multi_crop_evaluate ranks"):
        kr.evaluation.multi_crop_evaluate(features, (images, np.zeros(2)), scales=16)


def test_an_activation_without_probabilities_is_refused(tmp_path):
    """A tanh or a relu classifier gives neither probabilities nor logits: scoring its
    classes is refused, the model's and its files' alike, before any image is read."""
    twins = _twins(seed=11, activations=("tanh", "relu"))
    tanh = twins["tanh"]
    paths = _images(tmp_path, count=1)
    words = "ends in a tanh activation, whose outputs are neither probabilities nor logits"
    with pytest.raises(ValueError, match=words):
        predict(tanh, paths)
    with pytest.raises(ValueError, match=words):
        kr.evaluation.multi_crop_predict(tanh, random_images(1, 16, 16), scales=16)
    if keras.backend.backend() == "tensorflow":  # the same files under any backend
        suffixes = [".tflite", ".onnx"] if HAS_ONNX else [".tflite"]
        for suffix in suffixes:
            kr.export(tanh, tmp_path / f"tanh{suffix}")
            with pytest.raises(ValueError, match=f"tanh{suffix}' ends in a tanh activation"):
                predict(tmp_path / f"tanh{suffix}", paths)
        # TF Lite's converter fuses a relu into the classifier's FULLY_CONNECTED operation:
        # the export's mark names it (the file's last operation was read as logits).
        kr.export(twins["relu"], tmp_path / "relu.tflite")
        with pytest.raises(ValueError, match="relu.tflite' ends in a relu activation"):
            predict(tmp_path / "relu.tflite", paths)
