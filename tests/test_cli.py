"""The console script: one call into the API, one line on errors, exit codes 0/1/2.

The tests of how a user drives it run the real entry point (`python -m keras_resvit.cli`) in
a fresh process, under the suite's backend, on small image folders written here.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import types
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

import keras_resvit as kr
from keras_resvit import cli, cli_parser, cli_train
from keras_resvit.cli import main
from keras_resvit.training.history_csv import read_history
from tests.conftest import tiny_vit

# Lines of the libraries' logs that a quiet command must not print.
LOG_LINE = re.compile(r"cuda|onednn|I0000|absl::|XNNPACK", re.IGNORECASE)


def run_cli(*args, cwd=None, backend=None, timeout=900):
    """`keras-resvit ARGS` in a fresh process, with the user's environment (no log level)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_BACKEND"] = backend or keras.backend.backend()
    return subprocess.run(
        [sys.executable, "-m", "keras_resvit.cli", *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def call_cli(capsys, *args):
    """`keras-resvit ARGS` in this process, as `run_cli` runs it in a fresh one (without its
    ten seconds of start-up): the exit code, the output, and the errors after the warnings,
    each printed as the command prints it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    printed = "".join(f"keras-resvit {args[0]}: warning: {w.message}\n" for w in caught)
    return types.SimpleNamespace(returncode=code, stdout=out, stderr=printed + err)


def write_image_folder(root, classes=3, per_class=6, seed=0):
    """`classes` sub-folders of PNG and JPEG images of 16-40 px, one colour per class."""
    rng = np.random.default_rng(seed)
    for label in range(classes):
        colour = np.roll([200.0, 30.0, 30.0], label)
        folder = Path(root) / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            size = int(rng.integers(16, 41))
            pixels = np.clip(colour + rng.normal(0, 25, (size, size, 3)), 0, 255)
            Image.fromarray(pixels.astype("uint8")).save(folder / f"{i}.{('png', 'jpg')[i % 2]}")
    return Path(root)


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}


def last_line(text):
    return text.strip().splitlines()[-1]


def test_list_filters_names(capsys):
    assert main(["list", "plain2*"]) == 0
    out = capsys.readouterr().out.split("\n")
    assert [line.split()[0] for line in out if line] == ["plain20"]


def test_info_prints_parameters_and_multiply_adds(capsys):
    assert main(["info", "resnet50"]) == 0
    out = capsys.readouterr().out
    assert "25,557,032 trainable" in out
    assert "4.089 G per image" in out


def test_info_vit_b16(capsys):
    assert main(["info", "vit_b16"]) == 0
    out = capsys.readouterr().out
    assert "86,567,656 trainable" in out
    macs = float(re.search(r"multiply-adds:\s+([0-9.]+) G", out).group(1))
    assert abs(macs - 17.6) / 17.6 < 0.01


def test_info_of_a_keras_file(tmp_path, capsys):
    kr.create_model("resnet20").save(tmp_path / "m.keras")
    assert main(["info", str(tmp_path / "m.keras")]) == 0
    assert "269,722 trainable" in capsys.readouterr().out  # the paper's ResNet-20
    assert main(["info", str(tmp_path / "m.keras"), "--image-size", "64"]) == 2
    assert "--image-size applies to a registry name" in capsys.readouterr().err
    tiny_vit(image_size=None).save(tmp_path / "any.keras")  # no multiply-adds without a size
    assert main(["info", str(tmp_path / "any.keras")]) == 0
    assert "input:          any size, 3 channels" in capsys.readouterr().out


def test_info_resizes(capsys):
    assert main(["info", "resnet20", "--image-size", "64"]) == 0
    assert "64x64x3" in capsys.readouterr().out


def test_info_resizes_a_vit(capsys):
    assert main(["info", "vit_ti16", "--image-size", "32"]) == 0
    assert "32x32x3" in capsys.readouterr().out


@pytest.mark.parametrize("activation", [None, "sigmoid", "log_softmax"])
def test_evaluate_reports_the_loss_of_a_logits_or_sigmoid_model(tmp_path, capsys, activation):
    """Logits go through the softmax; sigmoid scores are probabilities, never taken for
    logits (the loss normalizes them); log-probabilities are logits (their softmax is the
    model's own), where they were read as probabilities (a loss of 6.6 for 0.18)."""
    model = kr.build_resnet(8, stem="cifar", num_classes=10, classifier_activation=activation)
    model.save(tmp_path / "model.keras")
    assert main(["evaluate", str(tmp_path / "model.keras"), "--data", "digits"]) == 0
    loss = float(re.search(r"cross-entropy ([0-9.]+)", capsys.readouterr().out).group(1))
    test = kr.data.load_dataset("digits", "test", batch_size=64)
    labels = np.concatenate([np.asarray(y) for _, y in test])
    scores = model.predict(test, verbose=0)
    from_logits = activation in (None, "log_softmax")
    expected = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)(labels, scores)
    assert loss == pytest.approx(float(expected), abs=2e-4)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_evaluate_refuses_a_classifier_without_probabilities(tmp_path, capsys, activation):
    model = kr.build_resnet(8, stem="cifar", num_classes=10, classifier_activation=activation)
    model.save(tmp_path / "model.keras")
    assert main(["evaluate", str(tmp_path / "model.keras"), "--data", "digits"]) == 2
    assert f"ends in a {activation} activation" in capsys.readouterr().err


@pytest.mark.one_backend("jax", reason="runs its command under JAX whatever the pass")
def test_errors_are_one_line_on_stderr_from_a_fresh_process(tmp_path):
    # TensorFlow's C++ start-up logs would otherwise come before the one line. Under the
    # JAX backend TensorFlow loads after the CLI starts, so the CLI can quiet them.
    pytest.importorskip("jax")
    model = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=3)
    model.save(tmp_path / "m.keras")
    result = subprocess.run(
        [sys.executable, "-m", "keras_resvit.cli", "predict", str(tmp_path / "m.keras"), "no.png"],
        env={**os.environ, "KERAS_BACKEND": "jax"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "keras-resvit predict: error: image 'no.png' is not a file."
    ], result.stderr


def test_debug_shows_the_exception():
    with pytest.raises(ValueError, match="resnet05"):
        main(["--debug", "info", "resnet05"])


@pytest.mark.one_backend(
    "tensorflow",
    reason="the default backend's end-to-end main job; under JAX the same command trains "
    "digits in tests/test_without_tensorflow.py",
)
def test_default_train_learns_digits_saves_and_exports(tmp_path, capsys):
    # The main job, shortened from 10 to 4 epochs; the full 10-epoch run reaches about 0.99.
    # After 4 epochs TensorFlow's test accuracy varies from run to run with the same seed
    # (multithreaded CPU kernels): 0.942, 0.947, 0.975, 0.978 and 0.981 measured (JAX 0.992);
    # chance is 0.1, and the first epoch ends near 0.3.
    code = main(["train", "--epochs", "4", "--output", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    accuracy = float(re.search(r"test accuracy ([0-9.]+) \(last\)", out).group(1))
    assert accuracy >= 0.9, out
    assert "model.tflite" in out
    for name in ("last.keras", "best.keras", "model.tflite", "curves.png", "config.json"):
        assert (tmp_path / name).is_file()
    # The digits' class names travel with the model and its export.
    assert json.loads((tmp_path / "model.classes.json").read_text())[:3] == ["0", "1", "2"]
    # The same command keeps the finished run (what --overwrite replaces, its export included,
    # is in test_a_plain_folder_trains_for_its_classes_and_size_and_keeps_a_finished_run).
    before = snapshot(tmp_path)
    assert main(["train", "--epochs", "1", "--output", str(tmp_path)]) == 2
    assert "holds a finished run" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_train_refuses_a_users_file_it_would_write_after_the_run_before_training(tmp_path, capsys):
    # `kr.train` leaves curves.png and model.tflite to the CLI, which writes them after the
    # run: a user's file of those names must stop the command before it trains, not after.
    for name in ("curves.png", "model.tflite"):
        (tmp_path / name).write_text("the user's")
        assert main(["train", "--epochs", "1", "--output", str(tmp_path)]) == 2
        assert f"holds {name}, which keras_resvit did not write" in capsys.readouterr().err
        assert not (tmp_path / "config.json").exists()
        assert (tmp_path / name).read_text() == "the user's"
        (tmp_path / name).unlink()


@pytest.mark.one_backend(
    "tensorflow",
    reason="the CLI's --ema flag; the averaging itself is tested on both backends in "
    "tests/training/test_ema.py",
)
def test_train_keeps_a_moving_average_of_the_weights(tmp_path, capsys):
    assert (
        main(["train", "--epochs", "1", "--ema", "0.9", "--no-tflite", "--output", str(tmp_path)])
        == 0
    )
    assert json.loads((tmp_path / "config.json").read_text())["ema"] == 0.9
    # The printed test accuracy is the saved model's: that of the averaged weights.
    out = capsys.readouterr().out
    printed = float(re.search(r"test accuracy ([0-9.]+) \(last\)", out).group(1))
    (x, y) = kr.data.load_digits()[1]
    scores = kr.load_model(tmp_path / "last.keras").predict(x, verbose=0)
    assert printed == pytest.approx(np.mean(np.argmax(scores, -1) == y), abs=1e-3)


def test_evaluate_a_saved_model(tmp_path, capsys):
    model = kr.create_model("resnet20")
    model.save(tmp_path / "m.keras")
    assert main(["evaluate", str(tmp_path / "m.keras"), "--data", "digits"]) == 0
    out = capsys.readouterr().out
    accuracy = float(re.search(r"accuracy ([0-9.]+)", out).group(1))
    assert 0.0 <= accuracy <= 0.3  # an untrained model is near chance (0.1)


def test_evaluate_reads_a_training_split_unaugmented(tmp_path, capsys):
    # The preset names the evaluation transform only: scoring augmented training images
    # would give other figures, run to run.
    kr.create_model("resnet20").save(tmp_path / "m.keras")
    figures = []
    for augment in ("resnet_cifar", "none"):
        argv = ["evaluate", str(tmp_path / "m.keras"), "--data", "digits", "--split", "train"]
        assert main([*argv, "--augment", augment]) == 0
        figures.append(re.findall(r"\d\.\d+", capsys.readouterr().out))
    assert figures[0] == figures[1] and figures[0]


def test_evaluate_names_its_model_argument_as_the_command_does(tmp_path, capsys):
    (tmp_path / "m.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3")
    assert main(["evaluate", str(tmp_path / "m.tflite"), "--data", "digits"]) == 2
    err = capsys.readouterr().err
    assert "MODEL '" in err and "path=" not in err, err


def test_evaluate_and_few_shot_name_their_flags_in_errors(tmp_path, capsys):
    kr.create_model("resnet20").save(tmp_path / "m.keras")
    model = str(tmp_path / "m.keras")
    valid = "valid: 'digits', 'tfds:NAME', the path of an image folder"
    for argv, named in (
        (["evaluate", model, "--data", "nowhere"], "--data 'nowhere' is neither"),
        (["few-shot", model, "--data", "nowhere"], "--data 'nowhere' is neither"),
        (["few-shot", model, "--l2", "-1"], "--l2 -1.0 must be"),
        (["few-shot", "resnet05"], "MODEL 'resnet05' is not a registered model"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        # The flag, not the API's argument ("source='nowhere'", "l2_regularization=-1.0").
        assert named in err and "=" not in err.split("error:")[1].split(";")[0], err
        assert valid in err or "nowhere" not in err, err


def test_evaluate_scores_the_share_train_held_out(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i in range(5):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "pets" / name / f"{i}.png")
    model = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=2)
    model.save(tmp_path / "m.keras")
    folder = str(tmp_path / "pets")
    argv = ["evaluate", str(tmp_path / "m.keras"), "--data", folder, "--split", "validation"]
    assert main([*argv, "--validation-split", "0.4"]) == 0
    printed = float(re.search(r"accuracy ([0-9.]+)", capsys.readouterr().out).group(1))
    # The files `train --validation-split 0.4` holds out, scored by the model itself.
    paths, labels, _ = kr.data.list_image_folder(folder, "validation", validation_split=0.4)
    images = np.stack([np.asarray(Image.open(path), "float32") for path in paths])
    scores = model.predict(images, verbose=0)
    assert len(paths) == 4
    assert printed == pytest.approx(np.mean(np.argmax(scores, -1) == labels), abs=1e-4)


@pytest.mark.one_backend(
    "tensorflow",
    reason="the CLI's crop and scale options; the multi-crop computation itself is tested on "
    "both backends in tests/evaluation/test_multi_crop.py",
)
def test_evaluate_offers_the_multi_crop_test(tmp_path, capsys):
    model = kr.build_resnet(8, stem="cifar", num_classes=10)
    model.save(tmp_path / "m.keras")
    path = str(tmp_path / "m.keras")
    assert (
        main(["evaluate", path, "--data", "digits", "--crops", "ten", "--scales", "32", "36"]) == 0
    )
    out = capsys.readouterr().out
    assert "ten crops at shorter sides (32, 36)" in out
    top1, top5 = (float(v) for v in re.findall(r"top-[15] accuracy ([0-9.]+)", out))
    whole = kr.data.load_dataset("digits", "test", image_size=36, crop_ratio=1.0)
    expected = kr.evaluation.multi_crop_evaluate(model, whole, scales=(32, 36), crops="ten")
    assert (top1, top5) == pytest.approx((expected["top1"], expected["top5"]), abs=1e-4)
    # Without --scales, one scale: the input size / 0.875 (32 -> 37).
    assert main(["evaluate", path, "--data", "digits", "--crops", "center"]) == 0
    assert "center crop at shorter sides (37,)" in capsys.readouterr().out
    assert main(["evaluate", path, "--data", "digits", "--scales", "36"]) == 2
    assert "--scales is only read by the multi-crop test" in capsys.readouterr().err
    assert main(["evaluate", path, "--data", "digits", "--crops", "ten", "--scales", "24"]) == 2
    assert "--scales 24 is not valid; valid: shorter sides >= the model's input size 32" in (
        capsys.readouterr().err
    )


def test_the_multi_crop_test_of_a_folder_crops_whole_wide_images(tmp_path, capsys, recwarn):
    """Each image keeps its aspect: its shorter side is resized to each scale and the ten crops
    come from the whole of it, as `multi_crop_evaluate` does with the images themselves."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 16, 40, 3)).astype("uint8")
    labels = np.arange(6) % 3
    for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        folder = tmp_path / "data" / "test" / "abc"[label]
        folder.mkdir(parents=True, exist_ok=True)
        keras.utils.save_img(folder / f"{i}.png", pixels)
    model = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=3)
    model.save(tmp_path / "m.keras")
    (tmp_path / "data" / "test" / "a" / "notes.png").write_text("not an image")
    argv = ["evaluate", str(tmp_path / "m.keras"), "--data", str(tmp_path / "data")]
    assert main([*argv, "--split", "test", "--crops", "ten", "--scales", "16", "20"]) == 0
    top1 = float(re.search(r"top-1 accuracy ([0-9.]+)", capsys.readouterr().out).group(1))
    # One warning, not one per listing of the folder.
    assert [str(w.message).count("notes.png") for w in recwarn if "notes" in str(w.message)] == [1]
    order = np.argsort([f"{'abc'[y]}/{i}" for i, y in enumerate(labels)])  # the listing's order
    arrays = (images[order].astype("float32"), labels[order])
    expected = kr.evaluation.multi_crop_evaluate(model, arrays, scales=(16, 20), crops="ten")
    assert top1 == pytest.approx(expected["top1"], abs=1e-4)


@pytest.mark.slow
@pytest.mark.one_backend(
    "tensorflow",
    reason="the CLI's size and recipe handling and a TensorFlow conversion; ViTs train at "
    "other sizes under JAX in tests/training and tests/models/test_vit.py",
)
def test_a_vit_trains_at_32_px_and_ends_with_a_tflite_file(tmp_path, capsys):
    # A ViT at another size than its 224 used to train, then fail on the model it had not
    # trained ("You must call compile()") before any export.
    data = tmp_path / "shapes"
    write_image_folder(data / "train")
    write_image_folder(data / "test", per_class=2, seed=1)
    out = tmp_path / "vit"
    result = call_cli(
        capsys,
        "train",
        "--model",
        "vit_ti16",
        "--data",
        data,
        "--image-size",
        32,
        "--epochs",
        1,
        "--batch-size",
        32,
        "--recipe",
        "deit",
        "--output",
        out,
    )
    assert result.returncode == 0, result.stderr
    assert "model: vit_ti16 for 3 classes (from the data) at 32x32 (--image-size)" in result.stdout
    assert re.search(r"^test accuracy [0-9.]+ \(last\)", result.stdout, re.MULTILINE)
    # The export says what it wrote and how it was checked, in words rather than a dict.
    line = last_line(result.stdout)
    assert line.startswith(f"exported {out / 'model.tflite'} (tflite, float32"), line
    assert "checked on 32 images" in line and line.endswith("; from last.keras")
    assert "{" not in result.stdout
    model = kr.load_model(out / "last.keras")
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 3)
    # The DeiT recipe's stochastic depth, as kr.train sets it in a ViT it builds by name.
    rates = [layer.rate for layer in model.layers if type(layer).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.1)
    assert (out / "model.tflite").stat().st_size > 0
    assert json.loads((out / "model.classes.json").read_text()) == ["class0", "class1", "class2"]


@pytest.mark.slow
@pytest.mark.one_backend(
    "tensorflow",
    reason="the CLI's reading of a plain folder (held-out split, classes, size, output "
    "folder); folders train under JAX in tests/data and tests/test_without_tensorflow.py",
)
def test_a_plain_folder_trains_for_its_classes_and_size_and_keeps_a_finished_run(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    write_image_folder(tmp_path / "flowers")
    command = ["train", "--model", "resnet18", "--data", "flowers", "--image-size", 32]
    result = call_cli(capsys, *command, "--epochs", 1, "--no-tflite")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # A folder without train/ test/ sub-folders: a tenth held out (1 image of 6 per class).
    assert lines[0] == "holding out 10% of flowers for validation (--validation-split)"
    assert lines[1] == (
        "model: resnet18 for 3 classes (from the data) at 32x32 (--image-size), recipe resnet_cifar"
    )
    assert re.search(r"^validation accuracy [0-9.]+ \(last\)", result.stdout, re.MULTILINE)
    out = tmp_path / "runs" / "flowers"  # the default --output: runs/<data name>
    model = kr.load_model(out / "last.keras")
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 3)
    config = json.loads((out / "config.json").read_text())
    assert "15 files" in config["data"] and "validation_split=0.1" in config["data"]
    # Validation reads the evaluation view of the training preset (whole images or a crop).
    preset = re.search(r"augment=(\w+)", config["data"])[1]
    assert preset != "None" and f"augment={preset}" in config["val_data"]
    # `evaluate` scores the held-out files as the run validated them: the same loss (it read
    # them with a center crop, where the run had read the preset's view).
    held_out = ["--data", "flowers", "--split", "validation", "--validation-split", "0.1"]
    scored = call_cli(capsys, "evaluate", out / "last.keras", *held_out)
    assert scored.returncode == 0, scored.stderr
    assert f"evaluation transform of {preset}" in scored.stdout
    loss = float(re.search(r"cross-entropy ([0-9.]+)", scored.stdout)[1])
    assert loss == pytest.approx(float(read_history(out / "history.csv")[-1]["val_loss"]), abs=2e-4)
    # Without --validation-split, the share the model's run held out (its config.json).
    scored = call_cli(capsys, "evaluate", out / "last.keras", *held_out[:4])
    assert scored.returncode == 0, scored.stderr
    assert "holding out 10% of flowers as the model's run did" in scored.stdout
    assert float(re.search(r"cross-entropy ([0-9.]+)", scored.stdout)[1]) == loss
    # Its training split is the rest: the held-out files are not scored as training images.
    trained = ["--data", "flowers", "--split", "train"]
    scored = call_cli(capsys, "evaluate", out / "last.keras", *trained)
    assert "holding out 10% of flowers as the model's run did" in scored.stdout
    given = call_cli(capsys, "evaluate", out / "last.keras", *trained, "--validation-split", 0.1)
    assert scored.stdout.splitlines()[-1] == given.stdout.splitlines()[-1], scored.stdout
    # An image added since: the held-out split may differ from the run's, and it says so.
    first = sorted((tmp_path / "flowers").iterdir())[0]
    image = sorted(first.iterdir())[0]
    shutil.copy(image, first / f"added{image.suffix}")
    scored = call_cli(capsys, "evaluate", out / "last.keras", *held_out[:4])
    assert scored.returncode == 0, scored.stderr
    assert "holds 16 training images where the model's run listed 15" in scored.stderr
    (first / f"added{image.suffix}").unlink()
    # Another share than the run's: images it trained on are scored, and it says so.
    assert "the model's run held out" not in scored.stderr
    scored = call_cli(
        capsys, "evaluate", out / "last.keras", *held_out[:4], "--validation-split", 0.5
    )
    assert scored.returncode == 0, scored.stderr
    assert "--validation-split 0.5 but the model's run held out 0.1 of flowers" in scored.stderr

    # The same command again: one line naming --overwrite, and nothing touched.
    before = snapshot(out)
    again = call_cli(capsys, *command, "--epochs", 1)
    assert again.returncode == 2
    errors = [line for line in again.stderr.splitlines() if line.startswith("keras-resvit")]
    assert errors == [last_line(again.stderr)]
    assert errors[0].startswith("keras-resvit train: error: --output runs/flowers holds a ")
    assert "finished run" in errors[0] and "pass --overwrite" in errors[0]
    assert snapshot(out) == before
    # --overwrite replaces it, the TF Lite export of the old run included.
    (out / "model.tflite").write_bytes(b"an export of the first run")
    manifest = json.loads((out / ".keras-resvit.json").read_text())
    (out / ".keras-resvit.json").write_text(json.dumps([*manifest, "model.tflite"]))
    again = call_cli(capsys, *command, "--epochs", 2, "--no-tflite", "--overwrite")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("replacing the finished run in runs/flowers (--overwrite)")
    assert json.loads((out / "config.json").read_text())["epochs"] == 2
    assert not (out / "model.tflite").exists()


@pytest.mark.slow
@pytest.mark.one_backend(
    "tensorflow",
    reason="what the CLI says and keeps when it resumes (four fresh processes, each a minute "
    "of JAX compilation); resuming itself is tested on both backends in tests/training",
)
def test_an_interrupted_run_resumes_and_says_from_where(tmp_path):
    write_image_folder(tmp_path / "shapes")
    command = ["train", "--data", "shapes", "--epochs", 3, "--no-tflite", "--output", "run"]
    # Ctrl-C at the end of the second epoch, once its checkpoint is saved.
    interrupt = (
        "import sys\n"
        "from keras_resvit.training import history_csv\n"
        "end = history_csv.HistoryCSV.on_epoch_end\n"
        "def on_epoch_end(self, epoch, logs=None):\n"
        "    end(self, epoch, logs)\n"
        "    if epoch == 1:\n"
        "        raise KeyboardInterrupt\n"
        "history_csv.HistoryCSV.on_epoch_end = on_epoch_end\n"
        "from keras_resvit.cli import main\n"
        f"sys.exit(main({[str(a) for a in command]!r}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_BACKEND"] = keras.backend.backend()
    first = subprocess.run(
        [sys.executable, "-c", interrupt], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert first.returncode == 130, first.stderr
    assert last_line(first.stderr) == (
        "keras-resvit train: interrupted; run the same command again to resume"
    )
    # 15 training images in one batch of 64: one step per epoch.
    result = run_cli(*command, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "train: resuming from step 2 (epoch 3): 1 steps to go" in result.stdout
    assert "\nresnet20: 3 epochs, resumed from step 2 of 3, in " in result.stdout
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert [float(row.split(",")[0]) for row in history[1:]] == [1, 2, 3]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (
            ["--validation-split", "1.5"],
            ["--validation-split", "'1.5'", "between 0 and 1, e.g. 0.1"],
        ),
        (["--validation-split", "0.2"], ["--validation-split 0.2", "--data digits", "test split"]),
        (["--data", "no_such_folder"], ["--data 'no_such_folder'", "not a folder", "tfds:NAME"]),
        (["--model", "resnet05"], ["name='resnet05'", "resnet50"]),
        (["--ema", "1.5"], ["--ema", "'1.5'", "between 0 and 1, e.g. 0.9999"]),
    ],
)
def test_bad_training_arguments_are_one_line_naming_the_flag(argv, words, tmp_path, capsys):
    assert main(["train", *argv, "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for word in words:
        assert word in err
    assert not (tmp_path / "run").exists()


def test_info_prints_no_library_logs_from_a_fresh_process(backend):
    result = run_cli("info", "resnet20")
    assert result.returncode == 0, result.stderr
    assert "269,722 trainable" in result.stdout
    assert not [line for line in result.stderr.splitlines() if LOG_LINE.search(line)], result.stderr


HEAVY_MODULES = ("tensorflow", "keras", "jax", "torch")


def test_help_imports_no_backend(tmp_path):
    # The CLI module alone, loaded from its file without the package: what `--help` costs
    # once the package imports lazily.
    script = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('cli_alone', {cli.__file__!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "code = module.main(['--help'])\n"
        f"print(code, sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "usage: keras-resvit" in result.stdout
    assert last_line(result.stdout) == "0 []"


def test_help_and_list_of_the_console_script_import_no_backend(backend):
    script = (
        "import sys\n"
        "from keras_resvit.cli import main\n"
        "code = main(['--help']) + main(['list', 'resnet*'])\n"
        f"print(code, sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    env = {**os.environ, "KERAS_BACKEND": backend}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert last_line(result.stdout) == "0 []"


def test_export_prints_a_summary_not_a_dict(tmp_path, capsys):
    model = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=3)
    model.save(tmp_path / "m.keras")
    assert main(["export", str(tmp_path / "m.keras"), str(tmp_path / "m.tflite")]) == 0
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and "{" not in out, out
    assert out.startswith(f"exported {tmp_path / 'm.tflite'} (tflite, float32")
    assert "checked on 32 images" in out


@pytest.mark.parametrize(
    ("folders", "flags", "expected"),
    [
        # A plain folder: a tenth of it held out, or the share --validation-split names.
        ("data/a data/b", "", "data train 0.1 | data validation 0.1"),
        ("data/a data/b", "--validation-split 0.3", "data train 0.3 | data validation 0.3"),
        # Split sub-folders are used as they are: validation/ before test/.
        ("data/train/a data/test/a", "", "data train - | data test -"),
        ("data/train/a data/validation/a data/test/a", "", "data train - | data validation -"),
        # Their common names, in any case, are split folders too (never classes).
        ("data/Train/a data/Test/a", "", "data train - | data test -"),
        ("data/training/a data/val/a", "", "data train - | data validation -"),
        # train/ alone, or --validation-split beside test/: a share of train/ held out.
        ("data/train/a", "", "data/train train 0.1 | data/train validation 0.1"),
        (
            "data/train/a data/test/a",
            "--validation-split 0.2",
            "data/train train 0.2 | data/train validation 0.2",
        ),
        # --val-data: its test/ sub-folder, all of a plain folder, another source's test split.
        ("data/a other/test/a", "--val-data other", "data train - | other test -"),
        ("data/a other/a", "--val-data other", "data train - | other train -"),
        ("data/a", "--val-data digits", "data train - | digits test -"),
    ],
)
def test_the_validation_data_of_each_folder_layout(folders, flags, expected, tmp_path, monkeypatch):
    for folder in folders.split():
        (tmp_path / folder).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    args = cli_parser.build_parser().parse_args(["train", "--data", "data", *flags.split()])
    train, val, note = cli_train._splits(args)

    def described(split):
        source = split["source"]
        source = source if source == "digits" else Path(source).as_posix()
        return f"{source} {split['split']} {split.get('validation_split') or '-'}"

    assert f"{described(train)} | {described(val)}" == expected
    held_out = train.get("validation_split")
    if held_out:
        share = f"{held_out:.0%} of {Path(train['source']).as_posix()}"
        assert note == f"holding out {share} for validation (--validation-split)"
    else:
        assert note is None
