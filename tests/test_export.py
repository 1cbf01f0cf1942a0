"""TF Lite, SavedModel and ONNX exports agree with the Keras model, from any backend."""

import json
import logging
import os
import stat
import subprocess
import sys
import types
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_resvit as kr
from keras_resvit.artifacts import run_tflite, tflite_interpreter
from keras_resvit.base.class_names import (
    CLASS_NAMES_KEY,
    add_tflite_metadata,
    class_names_path,
    embedded_class_names,
    set_class_names,
    tflite_metadata,
    write_class_names,
)
from keras_resvit.base.model_files import save_model
from keras_resvit.cli import main
from keras_resvit.export import (
    TOLERANCES,
    VIT_INT8_FLOAT_OPS,
    export_summary,
    format_from_path,
    representative_images,
)
from keras_resvit.export.converters import _quiet_tf2onnx
from keras_resvit.export.ownership import exported_here
from keras_resvit.predict import predict
from tests.conftest import HAS_ONNX, random_images, tiny_vit

SUFFIX = {"tflite": ".tflite", "saved_model": "", "onnx": ".onnx"}
# Under other backends a TensorFlow subprocess converts the saved .keras file: the same
# conversion for every model and option. One case per format and per quantization mode runs
# there; the others, the slowest ViT conversions among them, run under TensorFlow only.
TF_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the same TensorFlow subprocess conversion as a case that runs under JAX",
)
NEEDS_ONNX = pytest.mark.skipif(
    not HAS_ONNX, reason="needs the onnx extra (tf2onnx, onnx, onnxruntime)"
)


def _resnet20():
    model = kr.create_model("resnet20")
    model(random_images(4, 32, 32), training=True)  # non-trivial BatchNorm statistics
    return model


def _vit():
    # Every part of a registry ViT (class token, position embeddings, pre-norm blocks, GELU
    # MLPs, the head), two blocks deep: ViT-Ti/16's twelve took a minute to convert to ONNX.
    model = tiny_vit(hidden_size=96, mlp_dim=192, num_heads=3, num_classes=10)
    head = model.get_layer("predictions")  # zero-initialized: give the classes distinct scores
    head.kernel.assign(np.random.default_rng(0).normal(0, 0.2, head.kernel.shape))
    return model


MODELS = {"resnet20": _resnet20, "vit": _vit}


def _only(tmp_path, *names):
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


@pytest.mark.parametrize(
    "name, format",
    [
        ("resnet20", "tflite"),
        ("resnet20", "saved_model"),
        pytest.param("resnet20", "onnx", marks=NEEDS_ONNX),
        ("vit", "tflite"),
        pytest.param("vit", "saved_model", marks=TF_ONLY),
        pytest.param("vit", "onnx", marks=[NEEDS_ONNX, TF_ONLY]),
    ],
)
def test_float32_export_passes_its_check(name, format, tmp_path):
    model = MODELS[name]()
    target = tmp_path / f"model{SUFFIX[format]}"
    result = kr.export(model, target)  # the format the path names, as the command line's
    assert result["format"] == format and result["checked"] and target.exists()
    assert result["max_abs_difference"] < 1e-4 and result["top1_agreement"] == 1.0
    _only(tmp_path, target.name)
    assert exported_here(target, format)  # so that the next export may replace it
    kr.export(model, target, check=False)


@pytest.mark.parametrize(
    "name, quantization",
    [
        ("resnet20", "float16"),
        ("resnet20", "dynamic"),
        pytest.param("vit", "float16", marks=TF_ONLY),
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
    details = tflite_interpreter(tmp_path / "int8.tflite").get_tensor_details()
    assert any(d["dtype"] == np.int8 for d in details)  # integer tensors inside
    expected = keras.ops.convert_to_numpy(model(x[:8], training=False)).argmax(-1)
    assert (run_tflite(tmp_path / "int8.tflite", x[:8]).argmax(-1) == expected).mean() >= 0.75


def _input_dtypes_by_op(path):
    """{TF Lite op type: dtypes of its first input}; the interpreter lists ops only privately."""
    interpreter = tflite_interpreter(path)
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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for quantization in ("int8", "dynamic"):
            target = tmp_path / f"{quantization}.tflite"
            result = kr.export(
                model, target, quantization=quantization, representative_data="digits"
            )
            assert result["samples"] == 128 and result["top1_agreement"] >= 0.95
    # The quantization debugger and the check run TF Lite without its 5-line notice.
    assert [w for w in caught if "tf.lite.Interpreter is deprecated" in str(w.message)] == []
    dtypes = _input_dtypes_by_op(tmp_path / "int8.tflite")
    assert dtypes["CONV_2D"] == dtypes["FULLY_CONNECTED"] == dtypes["GELU"] == {"int8"}
    assert all(dtypes[op] == {"float32"} for op in VIT_INT8_FLOAT_OPS)
    expected = keras.ops.convert_to_numpy(model(x_test, training=False)).argmax(-1)
    agreement = (run_tflite(tmp_path / "int8.tflite", x_test).argmax(-1) == expected).mean()
    print(f"int8 ViT top-1 agreement on {len(x_test)} digits: {agreement:.3f}")
    assert agreement >= 0.95


# The head of a TF Lite flatbuffer (its schema's name at bytes 4-8), without export's mark.
OLD_TFLITE = b"\x1c\x00\x00\x00TFL3 old"


def test_export_from_keras_file_replaces_target_and_carries_class_names(tmp_path):
    source = tmp_path / "m.keras"
    kr.create_model("resnet20").save(source)
    write_class_names(source, [f"digit {i}" for i in range(10)])
    target = tmp_path / "m.tflite"
    target.write_bytes(OLD_TFLITE)  # a TF Lite file this package did not export
    with pytest.raises(ValueError, match=r"m.tflite' holds a .tflite file that keras_resvit did"):
        kr.export(source, target)
    assert target.read_bytes() == OLD_TFLITE
    kr.export(source, target, overwrite=True)
    assert target.read_bytes() != OLD_TFLITE
    _only(tmp_path, "m.keras", "m.tflite", "m.classes.json")
    assert json.loads(class_names_path(target).read_text())[3] == "digit 3"
    kr.export(source, target, quantization="float16")  # its own export: replaced


def test_an_upper_case_suffix_exports_where_it_says(tmp_path):
    # Keras' exporter took only ".tflite": it failed on the temporary file's ".TFLITE".
    model = kr.build_resnet(8, stem="cifar")
    result = kr.export(model, tmp_path / "m.TFLITE")
    assert result["format"] == "tflite" and result["checked"]
    _only(tmp_path, "m.TFLITE")
    x = random_images(2, 32, 32)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(run_tflite(tmp_path / "m.TFLITE", x), expected, atol=1e-4)


def test_failed_check_raises_with_figures_and_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setitem(TOLERANCES, None, 0.0)
    target = tmp_path / "model.tflite"
    target.write_bytes(OLD_TFLITE)
    with pytest.raises(RuntimeError, match=r"max abs difference \d.*top-1 agreement 100\.0%"):
        kr.export(_resnet20(), target, overwrite=True)
    assert target.read_bytes() == OLD_TFLITE
    _only(tmp_path, "model.tflite")


def test_a_model_with_nan_outputs_is_named_not_its_export(tmp_path):
    # The failed check blamed the export ("max abs difference nan"); the SavedModel's even
    # reported "top-1 agreement 100.0%".
    model = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=3)
    head = model.get_layer("predictions")
    head.kernel.assign(keras.ops.full(head.kernel.shape, np.nan))
    for name in ("m.tflite", "sm"):
        with pytest.raises(ValueError, match=r"itself gives NaN or infinite outputs for 32 of 32"):
            kr.export(model, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_one_calibration_image_is_asked_as_a_batch_of_one(tmp_path):
    model = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=3)
    image = random_images(1, 16, 16)[0]
    with pytest.raises(ValueError, match=r"\(16, 16, 3\) \(one image: pass image\[None\]"):
        kr.export(model, tmp_path / "m.tflite", quantization="int8", representative_data=image)
    with pytest.raises(ValueError, match=r"\(1, 16, 16, 1\); valid: a batch \(N, H, W, 3\)"):
        grey = image[None, ..., :1]
        kr.export(model, tmp_path / "m.tflite", quantization="int8", representative_data=grey)


def test_a_check_on_constant_outputs_says_it_compares_nothing(tmp_path):
    """A ViT's zero-initialized head scores every image alike: the check cannot see a wrong
    conversion of the rest, and says so (the result is not called checked: before, it was,
    and another model's file passed it); a head that varies checks without the warning."""
    model = tiny_vit()
    with pytest.warns(UserWarning, match="same output 0.2 for every class.*compares nothing"):
        result = kr.export(model, tmp_path / "zero_head.tflite")
    assert not result["checked"] and "one constant" in result["reason"]
    assert export_summary(result).endswith("not checked (the model's outputs are one constant)")
    head = model.get_layer("predictions").kernel
    head.assign(np.random.default_rng(0).normal(size=head.shape))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*compares nothing")
        assert kr.export(model, tmp_path / "trained_head.tflite")["checked"]


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"format": "onnx2"}, ["format='onnx2'", "tflite"]),
        ({"quantization": "int4"}, ["quantization='int4'", "float16"]),
        ({"quantization": "int8"}, ["representative_data", "digits"]),
        ({"quantization": "float16", "format": "saved_model", "path": "x"}, ["format='tflite'"]),
        ({"path": "x.lite"}, ["x.lite", ".tflite"]),
        ({"path": "x.keras"}, ["x.keras", "cannot export to a .keras file"]),
        ({"path": "x.onnx", "format": "tflite"}, ["x.onnx", "must end with '.tflite'"]),
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
    assert '{"path"' not in capsys.readouterr().out  # no raw JSON dict
    images = [str(p) for p in _write_pngs(tmp_path / "images", 2, size=32)]
    for model_file in (source, target):
        assert main(["predict", str(model_file), *images, "--top-k", "2"]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert len(lines) == 2 and lines[0].startswith(images[0]) and "digit " in lines[0]
    pixels = np.stack([tf.io.decode_png(tf.io.read_file(p)).numpy() for p in images])
    expected = keras.ops.convert_to_numpy(model(pixels.astype("float32"))).argmax(-1)
    assert [r[0]["index"] for r in predict(target, images, top_k=1)] == list(expected)


@pytest.mark.slow
def test_cli_int8_export_prints_nothing_on_stderr(tmp_path):
    # The TF Lite quantizer printed its settings ("fully_quantize: 0, inference_type: 6, ...")
    # straight to stderr, whatever the log level.
    kr.build_resnet(8, stem="cifar").save(tmp_path / "m.keras")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "keras_resvit.cli", "export", str(tmp_path / "m.keras"),
         str(tmp_path / "m.tflite"), "--quantization", "int8", "--calibration", "digits"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == "" and "exported" in result.stdout


def test_cli_export_errors_are_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "m.keras"), str(tmp_path / "m.tflite")]) == 2
    assert "m.keras" in capsys.readouterr().err
    code = main(["export", str(tmp_path / "m.keras"), "m.tflite", "--quantization", "int8"])
    assert code == 2 and "needs --calibration" in capsys.readouterr().err


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
    actual = run_tflite(tmp_path / "int8.tflite", images)
    expected = keras.ops.convert_to_numpy(model(images))
    assert np.mean(actual.argmax(-1) == expected.argmax(-1)) >= 0.9
    assert np.abs(actual - expected).max() < 0.1


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="builds the file with TF's converter"
)
def test_a_tflite_file_of_any_input_size_scores_each_image_at_its_own_size(tmp_path):
    # Another converter's file of any input size: its "shape" reads [1, 1, 1, 3] (-1 only in
    # the signature); reading images at 1x1 would give scores of nothing.
    from PIL import Image

    model = kr.build_resnet(8, stem="cifar", input_shape=(None, None, 3), num_classes=4)
    model.export(str(tmp_path / "sm"), format="tf_saved_model", verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "sm"))
    (tmp_path / "any.tflite").write_bytes(converter.convert())
    paths = []
    for i, (h, w) in enumerate([(40, 24), (16, 56)]):
        pixels = random_images(1, h, w, seed=i)[0].astype("uint8")
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    from_file = predict(tmp_path / "any.tflite", paths, top_k=4)
    from_model = predict(model, paths, top_k=4)
    for file_top, model_top in zip(from_file, from_model, strict=True):
        assert [c["index"] for c in file_top] == [c["index"] for c in model_top]
        scores = [[c["score"] for c in top] for top in (file_top, model_top)]
        np.testing.assert_allclose(*scores, atol=1e-5)


# Class names inside the artifacts, the interpreter and quiet conversions.

NAMES = ["cat", "dog", "fox"]


def _small_model():
    return kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=3)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("name", ["m.tflite", "m.TFLITE"])  # export takes both: so does predict
def test_a_model_in_memory_exports_its_class_names_into_the_tflite_file(tmp_path, capsys, name):
    model = _small_model()
    set_class_names(model, NAMES)
    target = tmp_path / name
    result = kr.export(model, target)
    assert capsys.readouterr().out == ""  # quiet unless asked
    assert result["class_names"] == NAMES and result["checked"]  # checked with the names in
    assert embedded_class_names(target) == NAMES
    assert json.loads(class_names_path(target).read_text()) == NAMES  # the side file too
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()
    _only(tmp_path, name, "m.classes.json")
    class_names_path(target).unlink()  # the file alone, as copied to a phone
    (image,) = _write_pngs(tmp_path / "images", 1, size=16)
    (top,) = predict(target, [image], top_k=3)
    assert [c["name"] for c in top] == [NAMES[c["index"]] for c in top]
    assert sorted(c["name"] for c in top) == sorted(NAMES)


@pytest.mark.one_backend("tensorflow", reason="the same SavedModel files under any backend")
def test_saved_model_folders_with_dots_keep_their_own_class_names(tmp_path):
    # "resnet.v1" and "resnet.v2" are two folders: each has its side file (both were
    # "resnet.classes.json", and the second export was refused as another model's).
    first, second = _small_model(), kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3))
    kr.export(first, tmp_path / "resnet.v1", class_names=NAMES)
    kr.export(second, tmp_path / "resnet.v2", class_names=[f"c{i}" for i in range(10)])
    assert json.loads((tmp_path / "resnet.v1.classes.json").read_text()) == NAMES
    assert json.loads((tmp_path / "resnet.v2.classes.json").read_text())[:2] == ["c0", "c1"]
    _only(tmp_path, "resnet.v1", "resnet.v2", "resnet.v1.classes.json", "resnet.v2.classes.json")


def test_files_saved_or_exported_from_memory_predict_with_their_names(tmp_path, capsys):
    model = _small_model()
    source = save_model(model, tmp_path / "m.keras", class_names=NAMES)
    loaded = kr.load_model(source)  # carries the names inside the file
    kr.export(loaded, tmp_path / "m.tflite")
    class_names_path(source).unlink()  # written by the export; neither file needs it
    _only(tmp_path, "m.keras", "m.tflite")
    images = [str(p) for p in _write_pngs(tmp_path / "images", 2, size=16)]
    pixels = np.stack([tf.io.decode_png(tf.io.read_file(p)).numpy() for p in images])
    best = keras.ops.convert_to_numpy(model(pixels.astype("float32"))).argmax(-1)
    for model_file in (source, tmp_path / "m.tflite"):
        assert main(["predict", str(model_file), *images, "--top-k", "1"]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert [line.split(": ")[1].split()[0] for line in lines] == [NAMES[i] for i in best]


def test_class_names_inside_files_are_read_under_the_other_backend(tmp_path):
    other = {"tensorflow": "jax", "jax": "tensorflow"}[keras.backend.backend()]
    model = _small_model()
    save_model(model, tmp_path / "m.keras", class_names=NAMES)
    kr.export(model, tmp_path / "t.tflite", class_names=NAMES, check=False)
    class_names_path(tmp_path / "t.tflite").unlink()
    script = (
        "import json, sys, keras, keras_resvit as kr\n"
        "from keras_resvit.files import model_class_names\n"
        "from keras_resvit.predict import read_class_names\n"
        "model = kr.load_model(sys.argv[1])\n"
        "print(json.dumps([keras.backend.backend(), model_class_names(model),\n"
        "                  read_class_names(sys.argv[2])]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "m.keras"), str(tmp_path / "t.tflite")],
        env={**os.environ, "KERAS_BACKEND": other},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [other, NAMES, NAMES]


def test_tflite_metadata_reader_agrees_with_tensorflows_schema(tmp_path, capsys):
    from tensorflow.lite.python import schema_py_generated as schema

    target = tmp_path / "m.tflite"
    result = kr.export(_small_model(), target, class_names=NAMES, check=False, verbose=True)
    assert capsys.readouterr().out == export_summary(result) + "\n"
    data = bytearray(target.read_bytes())
    model = schema.Model.GetRootAs(data, 0)
    expected = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        expected[entry.Name().decode()] = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    assert {"min_runtime_version", CLASS_NAMES_KEY} <= set(expected)  # the converter's kept
    assert tflite_metadata(target) == expected
    (tmp_path / "cut.tflite").write_bytes(data[:40])
    with pytest.raises(ValueError, match=r"cut.tflite.*not a readable TF Lite file"):
        embedded_class_names(tmp_path / "cut.tflite")


def test_a_tflite_file_whose_weights_lie_after_the_flatbuffer_is_left_as_it_is(tmp_path):
    # The converter marks a file over 2 GB, whose weights follow the flatbuffer at absolute
    # offsets, with a "buffer_location" entry: repacking would move them under the offsets.
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = schema.ModelT()
    model.version, model.buffers = 3, [schema.BufferT(), schema.BufferT()]
    entry = schema.MetadataT()
    entry.name, entry.buffer = "buffer_location", 1
    model.metadata = [entry]
    path = tmp_path / "large.tflite"
    path.write_bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    before = path.read_bytes()
    assert tflite_metadata(path) == {"buffer_location": b""}
    assert add_tflite_metadata(path, {CLASS_NAMES_KEY: json.dumps(NAMES).encode()}) is False
    assert path.read_bytes() == before


def test_export_summary_is_one_readable_line():
    checked = {
        "path": "m.tflite",
        "format": "tflite",
        "quantization": "float16",
        "class_names": NAMES,
        "checked": True,
        "samples": 32,
        "max_abs_difference": 0.00123,
        "top1_agreement": 1.0,
    }
    assert export_summary(checked) == (
        "exported m.tflite (tflite, float16, 3 class names): checked on 32 images, max abs "
        "difference 1.2e-03, top-1 agreement 100.0%"
    )
    unchecked = {"path": "m.onnx", "format": "onnx", "quantization": None, "class_names": None}
    unchecked = {**unchecked, "checked": False, "reason": "onnxruntime is not installed"}
    assert export_summary(unchecked) == (
        "exported m.onnx (onnx, float32): not checked (onnxruntime is not installed)"
    )


def test_tflite_interpreter_is_litert_where_installed_and_never_warns(tmp_path, monkeypatch):
    target = tmp_path / "m.tflite"
    kr.export(_small_model(), target, check=False)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # not installed
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        interpreter = tflite_interpreter(target)
    assert isinstance(interpreter, tf.lite.Interpreter)
    assert [str(w.message) for w in caught if "deprecated" in str(w.message)] == []

    class Interpreter:
        def __init__(self, model_path):
            self.model_path = model_path

    litert = types.ModuleType("ai_edge_litert.interpreter")
    litert.Interpreter = Interpreter
    monkeypatch.setitem(sys.modules, "ai_edge_litert", types.ModuleType("ai_edge_litert"))
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", litert)
    interpreter = tflite_interpreter(target)
    assert isinstance(interpreter, Interpreter) and interpreter.model_path == str(target)


@NEEDS_ONNX
def test_onnx_export_carries_class_names_and_prints_no_tf1_notices(tmp_path, monkeypatch):
    import onnx

    model = _small_model()
    from tensorflow.python.util import deprecation

    # As in a fresh process, every deprecated TensorFlow function would log its notice.
    monkeypatch.setattr(deprecation, "_PRINTED_WARNING", {})
    notice = "f (from m) is deprecated and will be removed in a future version."
    caught = []

    def log():
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            kr.export(model, tmp_path / "m.onnx", format="onnx", class_names=NAMES)
        caught.extend(str(w.message) for w in warned)
        logging.getLogger("tensorflow").warning(notice)

    # Silenced around the conversion only: the notice logged after it gets through.
    assert [m for m in _tf_log_records(log) if "deprecated" in m] == [notice]
    assert [m for m in caught if "np.object" in m] == []
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(props[CLASS_NAMES_KEY]) == NAMES
    # Predictions from the file, named from inside it (no side file), as the model's.
    (tmp_path / "m.classes.json").unlink()
    images = [tmp_path / f"{i}.png" for i in range(2)]
    for path, pixels in zip(images, random_images(2, 20, 20), strict=True):
        keras.utils.save_img(path, pixels)
    from_file = kr.predict(tmp_path / "m.onnx", images, top_k=3)
    for ranked, expected in zip(from_file, kr.predict(model, images, top_k=3), strict=True):
        assert {p["name"]: p["score"] for p in ranked} == pytest.approx(
            {NAMES[p["index"]]: p["score"] for p in expected}, abs=1e-5
        )


@NEEDS_ONNX
def test_predicting_from_a_file_that_is_not_onnx_is_one_error(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"not a model")
    keras.utils.save_img(tmp_path / "a.png", random_images(1, 8, 8)[0])
    with pytest.raises(ValueError, match=r"model='.*m.onnx' is not a readable ONNX file \("):
        kr.predict(tmp_path / "m.onnx", [tmp_path / "a.png"])


@NEEDS_ONNX
def test_predicting_from_an_onnx_file_that_is_no_image_classifier_is_one_error(tmp_path):
    from onnx import TensorProto, helper, save

    image = helper.make_tensor_value_info("image", TensorProto.UINT8, [1, 8, 8, 3])
    out = helper.make_tensor_value_info("out", TensorProto.UINT8, [1, 8, 8, 3])
    identity = helper.make_node("Identity", ["image"], ["out"])
    graph = helper.make_graph([identity], "g", [image], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    save(model, str(tmp_path / "m.onnx"))
    keras.utils.save_img(tmp_path / "a.png", random_images(1, 8, 8)[0])
    with pytest.raises(ValueError, match=r"takes 1 inputs \(tensor\(uint8\)\) and gives 1 outputs"):
        kr.predict(tmp_path / "m.onnx", [tmp_path / "a.png"])


def _tf_log_records(log):
    """The warnings that reach a handler of TensorFlow's logger while `log()` runs (at its
    default level: the CLI raises it)."""
    records, logger = [], logging.getLogger("tensorflow")
    handler, level = logging.Handler(), logger.level
    handler.emit = records.append
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        log()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return [record.getMessage() for record in records]


def test_quiet_tf2onnx_drops_only_deprecation_notices():
    def log():
        with _quiet_tf2onnx():
            logging.getLogger("tensorflow").warning("x (from y) is deprecated and will be removed")
            logging.getLogger("tensorflow").warning("a real problem")

    assert _tf_log_records(log) == ["a real problem"]


def test_a_failed_quantized_check_on_random_pixels_asks_for_real_images(monkeypatch):
    from keras_resvit.export import check

    model = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=3)

    def disagreeing(path, images):  # every top class moved by one
        scores = keras.ops.convert_to_numpy(model(images, training=False))
        return np.roll(scores, 1, axis=-1)

    monkeypatch.setitem(check.RUNNERS, "tflite", disagreeing)
    with pytest.raises(RuntimeError, match=r"random pixels: .*--calibration FOLDER"):
        check.check_artifact(model, "m.tflite", "tflite", "dynamic", None)
    real = random_images(8, 16, 16)
    with pytest.raises(RuntimeError, match=r"on 8 sample images\.$"):
        check.check_artifact(model, "m.tflite", "tflite", "dynamic", real)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("m.tflite", "tflite"),
        ("m.TFLITE", "tflite"),
        ("m.onnx", "onnx"),
        ("exported", "saved_model"),
        ("m.tf", "saved_model"),  # a folder name with a dot: not a misspelt file suffix
        ("resnet.v2", "saved_model"),
        ("m.tflit", "did you mean '.tflite'"),
        ("m.onx", "did you mean '.onnx'"),
        ("m.keras", "cannot export to a .keras file"),
        ("out.txt", "cannot export to a .txt file"),  # would be a SavedModel folder so named
        ("model.zip", "cannot export to a .zip file"),
        (".tflite", "no name before its suffix"),  # Python: a name without suffix
        ("out/.ONNX", "no name before its suffix"),
    ],
)
def test_the_export_format_is_read_from_the_path(path, expected):
    if " " not in expected:
        assert format_from_path(path) == expected
        return
    with pytest.raises(ValueError, match=expected):
        format_from_path(path)


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_users_own_saved_model_and_onnx_file_are_replaced_only_on_request(tmp_path, capsys):
    # A SavedModel of a tf.Module and an ONNX graph made by hand: models of the user's own,
    # which an export to their path replaced without a word.
    module = tf.Module()
    module.scale = tf.Variable(2.0)
    module.serve = tf.function(lambda x: x * module.scale, input_signature=[tf.TensorSpec([1])])
    tf.saved_model.save(module, str(tmp_path / "users"))
    model = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=3)
    model.save(tmp_path / "m.keras")
    before = _snapshot(tmp_path / "users")
    code = main(["export", str(tmp_path / "m.keras"), str(tmp_path / "users")])
    err = capsys.readouterr().err
    assert code == 2 and "holds a SavedModel that keras_resvit did not export" in err, err
    assert "--overwrite" in err and _snapshot(tmp_path / "users") == before
    assert main(["export", str(tmp_path / "m.keras"), str(tmp_path / "users"), "--overwrite"]) == 0
    assert exported_here(tmp_path / "users", "saved_model")
    assert main(["export", str(tmp_path / "m.keras"), str(tmp_path / "users")]) == 0  # ours now
    if HAS_ONNX:
        from onnx import TensorProto, helper, save

        tensor = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
        graph = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])], "g", [tensor], [out]
        )
        save(helper.make_model(graph), str(tmp_path / "users.onnx"))
        assert not exported_here(tmp_path / "users.onnx", "onnx")
        with pytest.raises(ValueError, match=r"holds a .onnx file that keras_resvit did not"):
            kr.export(model, tmp_path / "users.onnx")


def test_a_link_is_written_through_with_the_class_names_of_the_file_it_points_to(tmp_path):
    # The class names went beside the link, and the file it points to was predicted with
    # the names of the model it replaced.
    shared, own = tmp_path / "shared", tmp_path / "own"
    shared.mkdir(), own.mkdir()
    model = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=3)
    kr.export(model, shared / "t.tflite", class_names=["x", "y", "z"], check=False)
    (own / "link.tflite").symlink_to(shared / "t.tflite")
    before = (shared / "t.tflite").read_bytes()
    with pytest.raises(ValueError, match=r"shared/t.classes.json' lists the classes \['x'"):
        kr.export(model, own / "link.tflite", class_names=["a", "b", "c"], check=False)
    assert (shared / "t.tflite").read_bytes() == before
    result = kr.export(model, own / "link.tflite", class_names=["x", "y", "z"], check=False)
    assert result["path"] == str(shared / "t.tflite") and (own / "link.tflite").is_symlink()
    assert sorted(p.name for p in own.iterdir()) == ["link.tflite"]
