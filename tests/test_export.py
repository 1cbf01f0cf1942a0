"""TF Lite, SavedModel and ONNX exports agree with the Keras model, from any backend."""

import importlib.util
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_resvit as kr
from keras_resvit.cli import main
from keras_resvit.export import (
    TOLERANCES,
    VIT_INT8_FLOAT_OPS,
    _run_tflite,
    representative_images,
)
from keras_resvit.predict import class_names_path, predict, write_class_names
from tests.conftest import random_images, tiny_vit

HAS_ONNX = all(importlib.util.find_spec(m) for m in ("tf2onnx", "onnx", "onnxruntime"))
SUFFIX = {"tflite": ".tflite", "saved_model": "", "onnx": ".onnx"}
# Under other backends every export goes through the same TensorFlow subprocess; the slowest
# ViT conversions run once, under TensorFlow, to keep the suite short.
TF_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="same subprocess path as vit_ti16-tflite"
)
NEEDS_ONNX = pytest.mark.skipif(
    not HAS_ONNX, reason="needs the onnx extra (tf2onnx, onnx, onnxruntime)"
)


def _resnet20():
    model = kr.create_model("resnet20")
    model(random_images(4, 32, 32), training=True)  # non-trivial BatchNorm statistics
    return model


def _vit_ti16():
    model = kr.create_model("vit_ti16", image_size=32, num_classes=10)
    head = model.get_layer("predictions")  # zero-initialized: give the classes distinct scores
    head.kernel.assign(np.random.default_rng(0).normal(0, 0.2, head.kernel.shape))
    return model


MODELS = {"resnet20": _resnet20, "vit_ti16": _vit_ti16}


def _only(tmp_path, *names):
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


@pytest.mark.parametrize(
    "name, format",
    [
        ("resnet20", "tflite"),
        ("resnet20", "saved_model"),
        pytest.param("resnet20", "onnx", marks=NEEDS_ONNX),
        ("vit_ti16", "tflite"),
        ("vit_ti16", "saved_model"),
        pytest.param("vit_ti16", "onnx", marks=[NEEDS_ONNX, TF_ONLY]),
    ],
)
def test_float32_export_passes_its_check(name, format, tmp_path):
    model = MODELS[name]()
    target = tmp_path / f"model{SUFFIX[format]}"
    result = kr.export(model, target, format=format)
    assert result["format"] == format and result["checked"] and target.exists()
    assert result["max_abs_difference"] < 1e-4 and result["top1_agreement"] == 1.0
    _only(tmp_path, target.name)


@pytest.mark.parametrize(
    "name, quantization",
    [
        ("resnet20", "float16"),
        ("resnet20", "dynamic"),
        pytest.param("vit_ti16", "float16", marks=TF_ONLY),
    ],
)
def test_quantized_tflite_passes_its_check(name, quantization, tmp_path):
    target = tmp_path / "model.tflite"
    model = MODELS[name]()
    result = kr.export(model, target, quantization=quantization)
    assert result["quantization"] == quantization and result["checked"]
    if quantization == "float16":
        assert result["max_abs_difference"] < 1e-2
    else:
        assert result["top1_agreement"] >= 0.95
    assert target.stat().st_size < 0.6 * 4 * model.count_params()  # smaller than float32


def test_trained_model_exports_to_int8_tflite_with_digits(tmp_path):
    """Trained under the current backend (JAX too), calibrated on digits, full-integer."""
    (x, y), _ = kr.data.load_digits(32)
    model = kr.create_model("resnet20")
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "sparse_categorical_crossentropy")
    model.fit(x[:256], y[:256], batch_size=64, epochs=1, verbose=0)
    result = kr.export(
        model, tmp_path / "int8.tflite", quantization="int8", representative_data="digits"
    )
    assert result["samples"] == 128 and result["top1_agreement"] >= 0.95  # every image
    details = tf.lite.Interpreter(str(tmp_path / "int8.tflite")).get_tensor_details()
    assert any(d["dtype"] == np.int8 for d in details)  # integer tensors inside
    expected = keras.ops.convert_to_numpy(model(x[:8], training=False)).argmax(-1)
    assert (_run_tflite(tmp_path / "int8.tflite", x[:8]).argmax(-1) == expected).mean() >= 0.75


def _input_dtypes_by_op(path):
    """{TF Lite op type: dtypes of its first input}; the interpreter lists ops only privately."""
    interpreter = tf.lite.Interpreter(str(path))
    tensors = interpreter.get_tensor_details()
    dtypes = {}
    for op in interpreter._get_ops_details():
        dtypes.setdefault(op["op_name"], set()).add(
            np.dtype(tensors[op["inputs"][0]]["dtype"]).name
        )
    return dtypes


def test_trained_vit_exports_to_int8_with_float_attention_and_to_dynamic(tmp_path):
    """A ViT with meaningful predictions (trained on digits): int8 keeps convolutions and Dense
    layers in int8, runs the attention core in float32 and agrees with Keras on >= 95% of the
    digits; "dynamic" passes its check on the same images."""
    (x, y), (x_test, _) = kr.data.load_digits(32)
    model = tiny_vit(num_classes=10)
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=6, verbose=0)  # about 90% test accuracy
    for quantization in ("int8", "dynamic"):
        target = tmp_path / f"{quantization}.tflite"
        result = kr.export(model, target, quantization=quantization, representative_data="digits")
        assert result["samples"] == 128 and result["top1_agreement"] >= 0.95
    dtypes = _input_dtypes_by_op(tmp_path / "int8.tflite")
    assert dtypes["CONV_2D"] == dtypes["FULLY_CONNECTED"] == dtypes["GELU"] == {"int8"}
    assert all(dtypes[op] == {"float32"} for op in VIT_INT8_FLOAT_OPS)
    expected = keras.ops.convert_to_numpy(model(x_test, training=False)).argmax(-1)
    agreement = (_run_tflite(tmp_path / "int8.tflite", x_test).argmax(-1) == expected).mean()
    print(f"int8 ViT top-1 agreement on {len(x_test)} digits: {agreement:.3f}")
    assert agreement >= 0.95


def test_export_from_keras_file_replaces_target_and_carries_class_names(tmp_path):
    source = tmp_path / "m.keras"
    kr.create_model("resnet20").save(source)
    write_class_names(source, [f"digit {i}" for i in range(10)])
    target = tmp_path / "m.tflite"
    target.write_bytes(b"old")
    kr.export(source, target)
    assert target.read_bytes() != b"old"
    _only(tmp_path, "m.keras", "m.tflite", "m.classes.json")
    assert json.loads(class_names_path(target).read_text())[3] == "digit 3"


def test_failed_check_raises_with_figures_and_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setitem(TOLERANCES, None, 0.0)
    target = tmp_path / "model.tflite"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match=r"max abs difference \d.*top-1 agreement 100\.0%"):
        kr.export(_resnet20(), target)
    assert target.read_bytes() == b"old"
    _only(tmp_path, "model.tflite")


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"format": "onnx2"}, ["format='onnx2'", "tflite"]),
        ({"quantization": "int4"}, ["quantization='int4'", "float16"]),
        ({"quantization": "int8"}, ["representative_data", "digits"]),
        ({"quantization": "float16", "format": "saved_model", "path": "x"}, ["format='tflite'"]),
        ({"path": "x.lite"}, ["x.lite", ".tflite"]),
        ({"model_or_path": "corrupt.keras"}, ["corrupt.keras", "not a readable .keras"]),
    ],
)
def test_bad_export_arguments(tmp_path, kwargs, words):
    (tmp_path / "corrupt.keras").write_bytes(b"not a zip file")
    args = {"model_or_path": kr.create_model("resnet20"), "path": "x.tflite", **kwargs}
    if isinstance(args["model_or_path"], str):
        args["model_or_path"] = tmp_path / args["model_or_path"]
    args["path"] = tmp_path / args["path"]
    with pytest.raises(ValueError) as info:
        kr.export(**args)
    for word in words:
        assert word in str(info.value)
    _only(tmp_path, "corrupt.keras")


def test_missing_keras_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        kr.export(tmp_path / "missing.keras", tmp_path / "x.tflite")


def _write_pngs(folder, count, size=20):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(random_images(count, size, size, seed=3).astype("uint8")):
        paths.append(folder / f"image{i}.png")
        paths[-1].write_bytes(tf.io.encode_png(image).numpy())
    return paths


def test_representative_data_sources(tmp_path):
    model = kr.create_model("resnet20")
    _write_pngs(tmp_path / "cats", 3)
    _write_pngs(tmp_path / "dogs", 2)
    assert representative_images(str(tmp_path), model).shape == (5, 32, 32, 3)
    assert representative_images("digits", model, count=40).shape == (40, 32, 32, 3)
    dataset = tf.data.Dataset.from_tensor_slices(random_images(6, 16, 16)).batch(4)
    assert representative_images(dataset, model).shape == (6, 32, 32, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        representative_images(str(tmp_path / "empty"), model)


def test_cli_export_and_predict_with_class_names(tmp_path, capsys):
    source = tmp_path / "m.keras"
    model = _resnet20()
    model.save(source)
    write_class_names(source, [f"digit {i}" for i in range(10)])
    target = tmp_path / "m.tflite"
    assert main(["export", str(source), str(target)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["checked"] is True
    images = [str(p) for p in _write_pngs(tmp_path / "images", 2, size=32)]
    for model_file in (source, target):
        assert main(["predict", str(model_file), *images, "--top-k", "2"]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert len(lines) == 2 and lines[0].startswith(images[0]) and "digit " in lines[0]
    pixels = np.stack([tf.io.decode_png(tf.io.read_file(p)).numpy() for p in images])
    expected = keras.ops.convert_to_numpy(model(pixels.astype("float32"))).argmax(-1)
    assert [r[0]["index"] for r in predict(target, images, top_k=1)] == list(expected)


def test_cli_export_errors_are_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "m.keras"), str(tmp_path / "m.tflite")]) == 2
    assert "m.keras" in capsys.readouterr().err
    code = main(["export", str(tmp_path / "m.keras"), "m.tflite", "--quantization", "int8"])
    assert code == 2 and "representative_data" in capsys.readouterr().err


def test_export_never_relabels_with_another_models_class_names(tmp_path):
    # b.classes.json belongs to the user's b.keras; exporting a.keras to b.tflite would put
    # a's names beside b.keras (and b's beside a's artifact).
    model = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=3)
    model.save(tmp_path / "a.keras")
    write_class_names(tmp_path / "a.keras", ["cat", "dog", "fox"])
    model.save(tmp_path / "b.keras")
    write_class_names(tmp_path / "b.keras", ["red", "green", "blue"])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match=r"b.classes.json.*\['red', 'green', 'blue'\].*another"):
        kr.export(tmp_path / "a.keras", tmp_path / "b.tflite")
    with pytest.raises(ValueError, match=r"b.classes.json.*the exported model has none"):
        kr.export(model, tmp_path / "b.tflite")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_predict_with_a_one_channel_model(tmp_path):
    model = kr.build_resnet(
        8, stem="cifar", input_shape=(16, 16, 1), num_classes=3, preprocessing=None
    )
    model.save(tmp_path / "grey.keras")
    (image,) = _write_pngs(tmp_path / "images", 1, size=16)
    (top,) = predict(tmp_path / "grey.keras", [image], top_k=3)
    grey = tf.io.decode_png(tf.io.read_file(str(image)), channels=1).numpy()[None]
    expected = keras.ops.convert_to_numpy(model(grey.astype("float32")))[0]
    assert [c["index"] for c in top] == list(np.argsort(-expected, kind="stable"))
    np.testing.assert_allclose([c["score"] for c in top], np.sort(expected)[::-1], rtol=1e-4)


def test_an_undecodable_image_names_the_reason_not_the_op(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    model = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=3)
    model.save(tmp_path / "m.keras")
    with pytest.raises(ValueError, match="broken.png") as info:
        predict(tmp_path / "m.keras", [tmp_path / "broken.png"])
    assert "function_node" not in str(info.value) and "{{" not in str(info.value)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="builds the int8 file with TF's converter"
)
def test_a_fully_integer_tflite_from_another_tool_is_run_on_its_scales(tmp_path):
    # Another converter's int8-in/int8-out file: pixels are quantized with the input tensor's
    # scale and the scores dequantized, else predictions are garbage.
    model = _resnet20()
    images = random_images(16, 32, 32, seed=5)
    model.export(str(tmp_path / "sm"), format="tf_saved_model", verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "sm"))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None]] for image in images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    (tmp_path / "int8.tflite").write_bytes(converter.convert())
    actual = _run_tflite(tmp_path / "int8.tflite", images)
    expected = keras.ops.convert_to_numpy(model(images))
    assert np.mean(actual.argmax(-1) == expected.argmax(-1)) >= 0.9
    assert np.abs(actual - expected).max() < 0.1
