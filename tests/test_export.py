"""TF Lite and SavedModel exports agree with the Keras model, from any backend."""

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.export import _run_tflite
from tests.conftest import random_images


@pytest.mark.parametrize("format", ["tflite", "saved_model"])
def test_export_matches_keras_outputs(format, tmp_path):
    model = kr.create_model("resnet20")
    model(random_images(4, 32, 32), training=True)  # non-trivial BatchNorm statistics
    target = tmp_path / ("model.tflite" if format == "tflite" else "saved")
    result = kr.export(model, target, format=format)
    assert result["format"] == format and target.exists()
    assert result["max_abs_difference"] < 1e-4
    if format == "tflite":
        x = random_images(2, 32, 32, seed=5)
        expected = keras.ops.convert_to_numpy(model(x, training=False))
        np.testing.assert_allclose(_run_tflite(target, x), expected, atol=1e-4)


def test_export_from_keras_file_replaces_target_atomically(tmp_path):
    model = kr.create_model("resnet20")
    source = tmp_path / "m.keras"
    model.save(source)
    target = tmp_path / "m.tflite"
    target.write_bytes(b"old")
    kr.export(source, target)
    assert target.read_bytes() != b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras", "m.tflite"]


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"format": "onnx2"}, ValueError, ["format='onnx2'", "tflite"]),
        ({"model_or_path": "missing.keras"}, FileNotFoundError, ["missing.keras"]),
    ],
)
def test_bad_export_arguments(tmp_path, kwargs, error, words, backend):
    if error is FileNotFoundError and backend != "tensorflow":
        error = RuntimeError  # raised in the TensorFlow-backend subprocess
    args = {"model_or_path": kr.create_model("resnet20"), "path": tmp_path / "x.tflite", **kwargs}
    with pytest.raises(error) as info:
        kr.export(**args)
    for word in words:
        assert word in str(info.value)
    assert not (tmp_path / "x.tflite").exists()
