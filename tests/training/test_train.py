"""`kr.train` on the embedded digits: learns, writes its files atomically, resumes, stops on NaN."""

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.training.callbacks import read_history
from keras_resvit.training.recipes import RECIPES, get_recipe
from keras_resvit.training.train import TrainingDivergedError
from tests.conftest import tiny_vit

SCRIPT = str(Path(__file__).with_name("run_training.py"))


@pytest.fixture(scope="module")
def digits():
    (x, y), (xt, yt) = kr.data.load_digits()
    train = kr.data.load_dataset((x[:768], y[:768]), "train", batch_size=64)
    test = kr.data.load_dataset((xt[:128], yt[:128]), "test", batch_size=64)
    return train, test


def test_train_learns_digits_and_writes_outputs(digits, tmp_path):
    train, test = digits
    history = kr.train("resnet20", train, epochs=4, val_data=test, output_dir=tmp_path, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.6 * losses[0]
    assert history.history["accuracy"][-1] > 0.5
    for name in ("last.keras", "best.keras", "history.csv", "config.json", "curves.png"):
        assert (tmp_path / name).is_file()
    assert not (tmp_path / "resume").exists()
    rows = read_history(tmp_path / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["loss"] == pytest.approx(losses[-1])
    # 12 steps per epoch, 48 in all: lr 0.05 (0.1 * 64/128), /10 after 24 steps, /100 after 36.
    np.testing.assert_allclose([r["learning_rate"] for r in rows], [0.05, 0.005, 0.0005, 0.0005])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["recipe"] == "resnet_cifar" and config["batch_size"] == 64
    assert config["backend"] == keras.backend.backend() and config["precision"] == "float32"
    assert history.summary["images_per_second"] > 0
    best = kr.load_model(tmp_path / "best.keras")
    labels = np.concatenate([np.asarray(y) for _, y in test])
    accuracy = np.mean(np.argmax(best.predict(test, verbose=0), -1) == labels)
    assert accuracy == pytest.approx(max(history.history["val_accuracy"]), abs=1e-6)


def test_a_recipe_that_counts_iterations_stops_on_its_step(digits, tmp_path):
    # 10 steps of the recipe's batch 128 are 20 steps of 64: one full epoch of 12 steps, then
    # 8 of the second; the rate drops at 50% and 75% of them (steps 10 and 15).
    recipe = get_recipe("resnet_cifar", steps=10)
    history = kr.train("resnet20", digits[0], recipe=recipe, output_dir=tmp_path, verbose=0)
    assert int(keras.ops.convert_to_numpy(history.model.optimizer.iterations)) == 20
    rows = read_history(tmp_path / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    np.testing.assert_allclose([r["learning_rate"] for r in rows], [0.005, 0.0005])
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["steps"], config["epochs"], config["steps_per_epoch"]) == (20, 2, 12)
    with pytest.raises(ValueError, match="epochs=1 and steps=5 both set the run's length"):
        kr.train("resnet20", digits[0], epochs=1, steps=5, output_dir=tmp_path / "both")
    with pytest.raises(ValueError, match="steps=0 must be a positive int"):
        kr.train("resnet20", digits[0], steps=0, output_dir=tmp_path / "zero")


def test_bfloat16_run_on_cpu_trains_and_clears_the_policy(digits, tmp_path):
    history = kr.train(
        "resnet20", digits[0], epochs=2, output_dir=tmp_path, verbose=0, precision="mixed_bfloat16"
    )
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert keras.config.dtype_policy().name == "float32"
    model = kr.load_model(tmp_path / "last.keras")
    assert model.get_layer("stage1_block1_conv1").dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("predictions").dtype_policy.name == "float32"


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(digits, tmp_path):
    with pytest.raises(TrainingDivergedError, match=r"NaN/inf at step \d+") as info:
        kr.train(
            "resnet20",
            digits[0],
            epochs=3,
            output_dir=tmp_path,
            verbose=0,
            learning_rate=1e12,
            save_every=1,
            val_data=digits[1],
        )
    assert "last good checkpoint" in str(info.value)
    # A diverged model can score above chance on validation; it never becomes best.keras.
    assert not (tmp_path / "best.keras").exists()
    state = json.loads((tmp_path / "resume" / "state.json").read_text())
    model = kr.create_model("resnet20")
    model.load_weights(tmp_path / "resume" / state["weights"], skip_mismatch=True)
    assert all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights)


def _run(tmp_path, out, extra=()):
    command = [
        sys.executable,
        SCRIPT,
        "--output",
        str(out),
        "--examples",
        "256",
        "--epochs",
        "3",
        "--save-every",
        "3",
        *extra,
    ]
    return subprocess.Popen(
        command, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
def test_killed_run_resumes_where_it_stopped(tmp_path, backend):
    reference = _run(tmp_path, tmp_path / "reference")
    out, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err[-2000:]
    expected = json.loads(out.strip().splitlines()[-1])["none"]

    state = tmp_path / "killed" / "none" / "resume" / "state.json"
    victim = _run(tmp_path, tmp_path / "killed")
    deadline = time.time() + 600
    # 8 steps per epoch: wait for a mid-epoch save in the second epoch, then SIGKILL.
    while time.time() < deadline and victim.poll() is None:
        if state.is_file() and json.loads(state.read_text())["step"] in (9, 12, 15):
            victim.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = json.loads(state.read_text())["step"]
    assert not (tmp_path / "killed" / "none" / "last.keras").exists()

    resumed = _run(tmp_path, tmp_path / "killed")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-2000:]
    result = json.loads(out.strip().splitlines()[-1])["none"]
    rows = read_history(tmp_path / "killed" / "none" / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and killed_at < 24
    # Whatever temporaries the kill left, the resumed run removed them with its resume state.
    folder = tmp_path / "killed" / "none"
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == [".keras-resvit.json"]
    assert not (folder / "resume").exists()
    if backend == "jax":  # deterministic on CPU: the same weights as the uninterrupted run
        for got, want in zip(result["weights"], expected["weights"], strict=True):
            np.testing.assert_allclose(got, want, atol=1e-5)
        assert result["checksum"] == pytest.approx(expected["checksum"], rel=1e-5)
    else:
        assert result["loss"][-1] < result["loss"][0]


def test_bad_model_and_data(digits, tmp_path):
    with pytest.raises(ValueError, match="name='resnet21'.*resnet20"):
        kr.train("resnet21", digits[0], epochs=1, output_dir=tmp_path)
    with pytest.raises(ValueError, match="train_data of type list"):
        kr.train("resnet20", [1, 2], epochs=1, output_dir=tmp_path)
    with pytest.raises(ValueError, match="precision='mixed_float16' but the model was built"):
        kr.train(
            kr.create_model("resnet20"),
            digits[0],
            epochs=1,
            output_dir=tmp_path,
            precision="mixed_float16",
        )


def test_output_dir_that_is_a_file_or_unwritable(digits, tmp_path):
    target = tmp_path / "file"
    target.write_text("keep")
    with pytest.raises(ValueError, match="output_dir=.*not a folder"):
        kr.train("resnet20", digits[0], epochs=1, output_dir=target)
    assert target.read_text() == "keep"
    with pytest.raises(ValueError, match="output_dir=.*cannot be written"):
        kr.train("resnet20", digits[0], epochs=1, output_dir=target / "sub")


def test_vit_is_resized_to_the_data_resolution(tmp_path):
    # Fine-tuning at a higher resolution: a 32 px ViT trained on 48 px images.
    (x, y), _ = kr.data.load_digits(image_size=48)
    data = kr.data.load_dataset((x[:64], y[:64]), "train", batch_size=32)
    vit = tiny_vit(num_layers=1, num_classes=10)
    # 500 warm-up steps of batch 512 are 8,000 of batch 32: far beyond this 2-step run.
    with pytest.warns(UserWarning, match="warm-up lasts 8000 of this run's 2 steps"):
        history = kr.train(
            vit, data, recipe="vit_finetune", epochs=1, output_dir=tmp_path, verbose=0
        )
    assert np.isfinite(history.history["loss"]).all()
    assert kr.load_model(tmp_path / "last.keras").input_shape == (None, 48, 48, 3)


def test_resnet_with_another_resolution_is_refused(digits, tmp_path):
    model = kr.create_model("resnet20", input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="32x32 images but the model takes 64x64"):
        kr.train(model, digits[0], epochs=1, output_dir=tmp_path)


def test_batch_not_divisible_by_replicas(digits, tmp_path, monkeypatch):
    from keras_resvit.training.distribution import Placement

    train_module = importlib.import_module("keras_resvit.training.train")

    monkeypatch.setattr(train_module, "place", lambda name: Placement("mirrored", "gpu", 3))
    with pytest.raises(ValueError, match="batch size 64 is not divisible by the 3 replicas"):
        kr.train("resnet20", digits[0], epochs=1, output_dir=tmp_path)


@pytest.mark.parametrize("mixing", [False, True], ids=["smoothing", "mixup"])
def test_categorical_loss_takes_integer_train_and_val_labels(digits, tmp_path, mixing):
    # deit smooths labels (a categorical loss); with MixUp the training labels are soft too,
    # while the validation labels stay integers.
    (x, y), _ = kr.data.load_digits()
    train = kr.data.load_dataset(
        (x[:64], y[:64]), "train", batch_size=32, augment="deit" if mixing else None
    )
    assert len(train.element_spec[1].shape) == (2 if mixing else 1)
    vit = tiny_vit(num_layers=1, num_classes=10)
    recipe = get_recipe("deit", warmup=1) if mixing else "deit"
    history = kr.train(
        vit, train, recipe=recipe, epochs=1, val_data=digits[1], output_dir=tmp_path, verbose=0
    )
    assert np.isfinite(history.history["loss"]).all()
    assert 0.0 <= history.history["val_accuracy"][0] <= 1.0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["recipe"] == ("custom" if mixing else "deit")
    assert config["recipe_fields"]["warmup"] == (1 if mixing else RECIPES["deit"].warmup)


def test_plateau_schedule_divides_the_rate_when_the_loss_stalls(tmp_path):
    # Random labels on a handful of images: the training loss stalls at once, so the rate
    # drops by 10 after each `patience` epochs without improvement.
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (32, 32, 32, 3)).astype("float32")
    data = kr.data.load_dataset((images, rng.integers(0, 10, 32)), "train", batch_size=16)
    recipe = get_recipe("resnet_cifar", schedule="plateau", patience=1, learning_rate=1e-9)
    kr.train("resnet20", data, recipe=recipe, epochs=4, output_dir=tmp_path, verbose=0)
    rates = [r["learning_rate"] for r in read_history(tmp_path / "history.csv")]
    # 1e-9 at batch 128 is 1.25e-10 at 16: every epoch after the first is no better.
    assert rates[0] == pytest.approx(1.25e-10) and rates[-1] < rates[0] / 5
    assert np.all(np.diff(rates) <= 0)


def test_train_sets_the_per_pixel_mean_from_the_unaugmented_images(tmp_path):
    (x, y), _ = kr.data.load_digits()
    data = kr.data.load_dataset((x[:64], y[:64]), "train", batch_size=32, augment="resnet_cifar")
    model = kr.build_resnet(8, stem="cifar", preprocessing="pixel_mean")
    kr.train(model, data, epochs=1, output_dir=tmp_path / "run", verbose=0)
    mean = kr.load_model(tmp_path / "run" / "last.keras").get_layer("preprocessing").mean
    np.testing.assert_allclose(keras.ops.convert_to_numpy(mean), x[:64].mean(0), atol=1e-3)
    # A dataset of the user's own carries no unaugmented images: no silent zero mean.
    import tensorflow as tf

    plain = tf.data.Dataset.from_tensor_slices((x[:64], y[:64])).batch(32)
    fresh = kr.build_resnet(8, stem="cifar", preprocessing="pixel_mean")
    with pytest.raises(ValueError, match="PixelMean layer 'preprocessing' has no mean yet"):
        kr.train(fresh, plain, epochs=1, output_dir=tmp_path / "other", verbose=0)
