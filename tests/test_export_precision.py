"""Exports of models that compute in mixed precision (as `kr.train` trains on GPUs and TPUs),
and the check's tolerance for outputs that are not probabilities (logits, features)."""

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.artifacts import RUNNERS
from keras_resvit.base.backend import dtype_policy
from keras_resvit.base.model_files import save_model
from keras_resvit.cli import main
from keras_resvit.export import export_summary, float32_model, low_precision
from keras_resvit.export.check import check_artifact
from tests.conftest import HAS_ONNX, random_images

ONE_CONVERSION = "the same TensorFlow conversion of the float32 copy as the tflite case"


def _numpy(value):
    return keras.ops.convert_to_numpy(value)


def _mixed_resnet():
    with dtype_policy("mixed_bfloat16"):
        model = kr.build_resnet(8, stem="cifar", num_classes=5)
    model(random_images(8, 32, 32), training=True)  # non-trivial BatchNorm statistics
    return model


@pytest.mark.parametrize(
    "format",
    [
        "tflite",
        pytest.param(
            "saved_model", marks=pytest.mark.one_backend("tensorflow", reason=ONE_CONVERSION)
        ),
        pytest.param(
            "onnx",
            marks=[
                pytest.mark.one_backend("tensorflow", reason=ONE_CONVERSION),
                pytest.mark.skipif(not HAS_ONNX, reason="needs the onnx extra"),
            ],
        ),
    ],
)
def test_a_mixed_precision_model_exports_its_float32_computation(format, tmp_path):
    """TF Lite needed its Flex delegate for bfloat16 (the check failed to run the file), ONNX
    has no bfloat16 and the SavedModel failed the check by the bfloat16 rounding (3e-2)."""
    model = _mixed_resnet()
    assert low_precision(model) == "mixed_bfloat16"
    path = tmp_path / {"tflite": "m.tflite", "saved_model": "m", "onnx": "m.onnx"}[format]
    result = kr.export(model, path, format=format)
    assert result["checked"] and result["model_precision"] == "mixed_bfloat16"
    assert "from a mixed_bfloat16 model" in export_summary(result)
    # The model is left as it was; the artifact computes what its float32 copy does.
    assert low_precision(model) == "mixed_bfloat16"
    copy = float32_model(model)
    assert low_precision(copy) is None and copy is not model
    for mine, its in zip(model.weights, copy.weights, strict=True):
        np.testing.assert_array_equal(_numpy(mine), _numpy(its))
    x = random_images(6, 32, 32)
    exported = RUNNERS[format](path, x)
    np.testing.assert_allclose(exported, _numpy(copy(x, training=False)), atol=1e-5)
    rounded = np.abs(exported - _numpy(model(x, training=False)).astype("float32")).max()
    assert 0 < rounded < 0.1  # the bfloat16 model's own rounding


def test_a_saved_mixed_precision_model_exports_from_its_file(tmp_path, capsys):
    save_model(_mixed_resnet(), tmp_path / "m.keras")
    assert main(["export", str(tmp_path / "m.keras"), str(tmp_path / "m.tflite")]) == 0
    assert "(tflite, float32 from a mixed_bfloat16 model)" in capsys.readouterr().out
    copy = float32_model(kr.load_model(tmp_path / "m.keras"))
    x = random_images(4, 32, 32)
    np.testing.assert_allclose(
        RUNNERS["tflite"](tmp_path / "m.tflite", x), _numpy(copy(x)), atol=1e-5
    )


def test_float32_models_export_themselves():
    model = kr.build_resnet(8, stem="cifar", num_classes=5)
    assert low_precision(model) is None and float32_model(model) is model


def _logits_resnet(scale):
    model = kr.build_resnet(8, stem="cifar", num_classes=5, classifier_activation=None)
    model(random_images(8, 32, 32), training=True)
    head = model.get_layer("predictions")
    head.kernel.assign(_numpy(head.kernel) * scale)
    return model


@pytest.mark.one_backend("tensorflow", reason="the check, not the conversion, is tested")
def test_the_check_scales_its_tolerance_with_outputs_above_one(tmp_path):
    """Logits in the hundreds: float16's relative round-off (~4e-4) failed the absolute 1e-2;
    a wrong artifact still fails, by more than the scaled tolerance."""
    model = _logits_resnet(300.0)
    path = tmp_path / "m.tflite"
    result = kr.export(model, path, quantization="float16")
    largest = float(np.abs(_numpy(model(random_images(4, 32, 32)))).max())
    assert largest > 20 and result["checked"]
    assert result["max_abs_difference"] > 1e-2  # rejected by an absolute tolerance
    assert "x the largest |output|" in result["criterion"]
    bias = model.get_layer("predictions").bias
    bias.assign(_numpy(bias) + np.array([0.05 * largest, 0, 0, 0, 0], "float32"))
    with pytest.raises(RuntimeError, match="fails its check.*x the largest"):
        check_artifact(model, path, "tflite", "float16", None)
