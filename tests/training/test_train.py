"""`kr.train` on the embedded digits: learns, writes its files atomically, resumes, stops on NaN."""

import importlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_resvit as kr
from keras_resvit.files import model_class_names
from keras_resvit.training.history_csv import read_history
from keras_resvit.training.recipes import RECIPES, get_recipe
from keras_resvit.training.schedules import recipe_schedule
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
    for name in ("last.keras", "best.keras", "history.csv", "config.json"):
        assert (tmp_path / name).is_file()
    assert not (tmp_path / "curves.png").exists()  # pictures are the caller's (kr.viz)
    assert not (tmp_path / "resume").exists()
    rows = read_history(tmp_path / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["loss"] == pytest.approx(losses[-1])
    # 12 steps per epoch, 48 in all: lr 0.05 (0.1 * 64/128), /10 after 24 steps, /100 after 36;
    # each epoch logs the rate of its first step (steps 0, 12, 24, 36), what it trained with.
    np.testing.assert_allclose([r["learning_rate"] for r in rows], [0.05, 0.05, 0.005, 0.0005])
    np.testing.assert_allclose(history.history["learning_rate"], [0.05, 0.05, 0.005, 0.0005])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["recipe"] == "resnet_cifar" and config["batch_size"] == 64
    assert config["backend"] == keras.backend.backend() and config["precision"] == "float32"
    assert history.summary["images_per_second"] > 0
    best = kr.load_model(tmp_path / "best.keras")
    labels = np.concatenate([np.asarray(y) for _, y in test])
    accuracy = np.mean(np.argmax(best.predict(test, verbose=0), -1) == labels)
    assert accuracy == pytest.approx(max(history.history["val_accuracy"]), abs=1e-6)
    # The data's class names travel inside both checkpoints, not only beside them.
    names = [str(i) for i in range(10)]
    for checkpoint in ("best.keras", "last.keras"):
        (tmp_path / checkpoint.replace(".keras", ".classes.json")).unlink()
        assert model_class_names(kr.load_model(tmp_path / checkpoint)) == names


def test_a_model_built_by_name_has_a_score_per_class_of_the_data(tmp_path, capsys):
    (x, y), _ = kr.data.load_digits()
    x, y = x[:64], y[:64] % 3  # three classes, named "0", "1", "2"
    kr.train("resnet20", (x, y), epochs=1, batch_size=32, output_dir=tmp_path / "a", verbose=0)
    assert "resnet20 for 3 classes (from the data)" in capsys.readouterr().out
    model = kr.load_model(tmp_path / "a" / "last.keras")
    assert model.output_shape == (None, 3)
    assert kr.files.read_class_names(tmp_path / "a" / "last.keras") == ["0", "1", "2"]
    # A model given with more outputs than the data's classes trains (its labels are valid),
    # but the data's three names are not written beside its ten scores.
    model = kr.build_resnet(8, stem="cifar", num_classes=10, input_shape=(32, 32, 3))
    kr.train(model, (x, y), epochs=1, batch_size=32, output_dir=tmp_path / "b", verbose=0)
    assert kr.files.read_class_names(tmp_path / "b" / "last.keras") is None


def test_a_vit_resized_to_the_data_is_the_trained_model_and_train_says_so(tmp_path, capsys):
    (x, y), _ = kr.data.load_digits()
    data = kr.data.load_dataset((x[:64], y[:64]), "train", batch_size=32, image_size=48)
    vit = tiny_vit(num_classes=10)  # 32 px
    before = [np.array(w) for w in vit.get_weights()]
    history = kr.train(vit, data, epochs=1, output_dir=tmp_path, verbose=0)
    out = capsys.readouterr().out
    assert "resizing" in out and "the trained model is history.model (and last.keras)" in out
    assert history.model is not vit and history.model.input_shape == (None, 48, 48, 3)
    for old, kept in zip(before, vit.get_weights(), strict=True):
        np.testing.assert_array_equal(old, kept)
    # The same model at its own size trains in place, as model.fit does.
    data = kr.data.load_dataset((x[:64], y[:64]), "train", batch_size=32, image_size=32)
    history = kr.train(vit, data, epochs=1, output_dir=tmp_path / "own", verbose=0)
    assert history.model is vit and "the trained model is" not in capsys.readouterr().out


def test_a_recipe_that_counts_iterations_stops_on_its_step(digits, tmp_path):
    # 10 steps of the recipe's batch 128 are 20 steps of 64: one full epoch of 12 steps, then
    # 8 of the second; the rate drops at 50% and 75% of them (steps 10 and 15).
    recipe = get_recipe("resnet_cifar", steps=10)
    history = kr.train(_small(), digits[0], recipe=recipe, output_dir=tmp_path, verbose=0)
    assert int(keras.ops.convert_to_numpy(history.model.optimizer.iterations)) == 20
    rows = read_history(tmp_path / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    # Each epoch logs the schedule's rate at its first step (0 and 12): 0.05 then 0.005, not
    # the rates left at the epochs' ends (0.005 after step 12, 0.0005 after step 20).
    schedule = recipe_schedule(recipe, 64, 20)
    expected = [float(keras.ops.convert_to_numpy(schedule(step))) for step in (0, 12)]
    np.testing.assert_allclose(expected, [0.05, 0.005])
    np.testing.assert_allclose([r["learning_rate"] for r in rows], expected)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["steps"], config["epochs"], config["steps_per_epoch"]) == (20, 2, 12)
    with pytest.raises(ValueError, match="epochs=1 and steps=5 both set the run's length"):
        kr.train("resnet20", digits[0], epochs=1, steps=5, output_dir=tmp_path / "both")
    with pytest.raises(ValueError, match="steps=0 must be a positive int"):
        kr.train("resnet20", digits[0], steps=0, output_dir=tmp_path / "zero")


@pytest.mark.one_backend(
    "jax",
    reason="two epochs of emulated bfloat16 (150 s under TensorFlow); TensorFlow trains "
    "mixed_bfloat16 in tests/models/test_dtype.py",
)
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
        "--model",
        "resnet8",
        *extra,
    ]
    return subprocess.Popen(
        command, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
@pytest.mark.parametrize("distribution", ["none", "mirrored"])
def test_killed_run_resumes_where_it_stopped(tmp_path, backend, distribution):
    """Shuffled and augmented (parallel maps): the resumed run replays the same orders, crops
    and flips, on one device and on two replicas of a `MirroredStrategy`."""
    if distribution == "mirrored" and backend != "tensorflow":
        pytest.skip("MirroredStrategy is TensorFlow's")
    augment = ["--augment", "resnet_cifar", "--distribution", distribution]
    if distribution == "mirrored":
        augment += ["--cpus", "2"]
    reference = _run(tmp_path, tmp_path / "reference", augment)
    out, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err[-2000:]
    expected = json.loads(out.strip().splitlines()[-1])[distribution]

    state = tmp_path / "killed" / distribution / "resume" / "state.json"
    victim = _run(tmp_path, tmp_path / "killed", augment)
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
    assert not (tmp_path / "killed" / distribution / "last.keras").exists()

    resumed = _run(tmp_path, tmp_path / "killed", augment)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-2000:]
    result = json.loads(out.strip().splitlines()[-1])[distribution]
    rows = read_history(tmp_path / "killed" / distribution / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and killed_at < 24
    # Whatever temporaries the kill left, the resumed run removed them with its resume state.
    folder = tmp_path / "killed" / distribution
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == [".keras-resvit.json"]
    assert not (folder / "resume").exists()
    # Deterministic on CPU: the same weights as the uninterrupted run, on both backends.
    for got, want in zip(result["weights"], expected["weights"], strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert result["checksum"] == pytest.approx(expected["checksum"], rel=1e-5)


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
    resized = kr.load_model(tmp_path / "last.keras")
    assert resized.input_shape == (None, 48, 48, 3)
    assert model_class_names(resized) == [str(i) for i in range(10)]


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


@pytest.mark.parametrize("pipeline", ["own_one_hot", "kr_mixing"])
def test_recipe_smoothing_reaches_unsmoothed_soft_labels_once(tmp_path, pipeline):
    # A user's own one-hot labels get deit's smoothing (0.1); the labels of a kr.data mixing
    # preset arrive smoothed (no entry is 0) and are not smoothed again.
    (x, y), _ = kr.data.load_digits()
    x, y = x[:32], y[:32]
    if pipeline == "own_one_hot":
        train = tf.data.Dataset.from_tensor_slices((x.astype("float32"), np.eye(10)[y]))
        train = train.batch(16)
    else:
        train = kr.data.load_dataset((x, y), "train", batch_size=16, augment="deit")
    vit = tiny_vit(num_layers=1, num_classes=10)
    history = kr.train(
        vit, train, recipe=get_recipe("deit", warmup=1), epochs=1, output_dir=tmp_path, verbose=0
    )
    loss = history.model.loss  # of a softmax's probabilities, against one-hot rows
    assert type(loss).__name__ == "SoftmaxCrossentropy" and not loss.sparse
    assert loss.label_smoothing == (0.1 if pipeline == "own_one_hot" else 0.0)


def test_plateau_schedule_divides_the_rate_when_the_loss_stalls(tmp_path):
    # Random labels on a handful of images: the training loss stalls at once, so the rate
    # drops by 10 after each `patience` epochs without improvement.
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (32, 32, 32, 3)).astype("float32")
    data = kr.data.load_dataset((images, rng.integers(0, 10, 32)), "train", batch_size=16)
    recipe = get_recipe(
        "resnet_cifar", schedule="plateau", decay_at=(), patience=1, learning_rate=1e-9
    )
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
    # Nor are its scores or exports those of raw pixels for centred ones.
    with pytest.raises(ValueError, match=r"PixelMean layer \('preprocessing'.* without its mean"):
        kr.evaluation.multi_crop_predict(fresh, x[:2], scales=32)
    with pytest.raises(ValueError, match="without its mean image"):
        kr.export(fresh, tmp_path / "fresh.tflite")
    assert not (tmp_path / "fresh.tflite").exists()


# Keras habits: callbacks, an optimizer or loss beside the recipe, arrays as data.


def _small():
    return kr.build_resnet(8, stem="cifar", width=0.5)


class Recorder(keras.callbacks.Callback):
    """Records the calls a user's callback sees."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append("begin")

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(epoch)

    def on_train_end(self, logs=None):
        self.calls.append("end")


class Interrupt(keras.callbacks.Callback):
    """Kills the run, as Ctrl-C would, after global step `step` of a fresh run."""

    def __init__(self, step):
        super().__init__()
        self.step, self.seen = step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            raise KeyboardInterrupt


class StopAfter(keras.callbacks.Callback):
    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            self.model.stop_training = True


def test_a_user_callback_sees_every_epoch_and_can_stop_the_run(arrays, tmp_path):
    recorder = Recorder()
    history = kr.train(
        _small(),
        arrays[0],
        batch_size=16,
        epochs=4,
        callbacks=[recorder, StopAfter(2)],
        output_dir=tmp_path,
        verbose=0,
    )
    assert recorder.calls == ["begin", 0, 1, "end"]
    # The run ends where the callback stopped it, and says so: 2 epochs of 4 steps, not 4.
    assert [int(r["epoch"]) for r in read_history(tmp_path / "history.csv")] == [1, 2]
    assert history.epoch == [0, 1] and len(history.history["loss"]) == 2
    summary = json.loads((tmp_path / "config.json").read_text())["result"]
    assert (summary["epochs"], summary["steps"], summary["resumed_from_step"]) == (2, 8, None)
    assert history.summary == summary
    assert (tmp_path / "last.keras").is_file() and not (tmp_path / "resume").exists()


def test_a_run_resumed_inside_an_epoch_keeps_user_callbacks_and_logs_what_it_ran(
    arrays, tmp_path, capsys
):
    # 4 steps per epoch, 12 in all, saved every 3 steps: killed at step 7, it resumes from
    # the save at step 6, inside the second epoch.
    run = {"batch_size": 16, "epochs": 3, "save_every": 3, "output_dir": tmp_path}
    keras.utils.set_random_seed(0)
    with pytest.raises(KeyboardInterrupt):
        kr.train(_small(), arrays[0], callbacks=[Interrupt(7)], verbose=0, **run)
    assert json.loads((tmp_path / "resume" / "state.json").read_text())["step"] == 6
    capsys.readouterr()
    recorder = Recorder()
    history = kr.train(_small(), arrays[0], callbacks=[recorder], verbose=2, **run)
    assert "train: resuming from step 6 (epoch 2): 6 steps to go" in capsys.readouterr().out
    # One begin and one end although the resume takes two `fit` calls; epochs 2 and 3 only.
    assert recorder.calls == ["begin", 1, 2, "end"]
    assert history.epoch == [0, 1, 2] and len(history.history["loss"]) == 3
    assert history.summary["resumed_from_step"] == 6
    assert (history.summary["epochs"], history.summary["steps"]) == (3, 12)
    # Rates of the epochs' first steps 0, 4, 8 (0.1 * 16/128, /10 from step 6): the resumed
    # epoch logs its own first step's rate, not the rate at step 6 where the call began.
    rows = read_history(tmp_path / "history.csv")
    np.testing.assert_allclose([r["learning_rate"] for r in rows], [0.0125, 0.0125, 0.00125])
    assert not (tmp_path / "resume").exists()
    # The resumed epoch logs the mean over all its steps, those before the kill included
    # (it logged steps 7-8 only): the figures of a run never interrupted.
    keras.utils.set_random_seed(0)
    whole = kr.train(_small(), arrays[0], verbose=0, **{**run, "output_dir": tmp_path / "w"})
    for name in ("loss", "accuracy"):
        np.testing.assert_allclose(history.history[name], whole.history[name], rtol=1e-5)
        logged = [r[name] for r in read_history(tmp_path / "history.csv")]
        np.testing.assert_allclose(logged, whole.history[name], rtol=1e-5)


def test_an_optimizer_and_a_loss_beside_the_recipe(arrays, tmp_path):
    optimizer = keras.optimizers.Adam(1e-3)
    loss = keras.losses.SparseCategoricalCrossentropy()
    run = {"batch_size": 16, "epochs": 3, "output_dir": tmp_path, "verbose": 0}
    history = kr.train(_small(), arrays[0], optimizer=optimizer, loss=loss, **run)
    assert history.model.optimizer is optimizer and history.model.loss is loss
    losses = history.history["loss"]
    assert np.all(np.diff(losses) < 0) and losses[-1] < 0.9 * losses[0], losses
    # The optimizer's own constant rate, not the recipe's 0.1 scaled and divided.
    np.testing.assert_allclose(history.history["learning_rate"], [1e-3] * 3, rtol=1e-6)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["optimizer"]["class_name"] == "Adam"
    assert config["optimizer"]["learning_rate"] == pytest.approx(1e-3)
    assert config["loss"]["class_name"] == "SparseCategoricalCrossentropy"


def test_a_string_loss_replaces_the_recipe_loss_and_its_label_smoothing(arrays, tmp_path):
    # deit smooths labels, which takes one-hot targets; a sparse loss keeps class indices.
    vit = tiny_vit(num_layers=1, num_classes=10)
    history = kr.train(
        vit,
        arrays[0],
        recipe=get_recipe("deit", warmup=0.1),
        batch_size=16,
        epochs=1,
        loss="sparse_categorical_crossentropy",
        val_data=arrays[1],
        output_dir=tmp_path,
        verbose=0,
    )
    assert history.model.loss == "sparse_categorical_crossentropy"
    assert np.isfinite(history.history["loss"]).all()
    assert 0.0 <= history.history["val_accuracy"][0] <= 1.0
    assert json.loads((tmp_path / "config.json").read_text())["loss"] == (
        "sparse_categorical_crossentropy"
    )


def test_a_resume_must_pass_the_same_optimizer(arrays, tmp_path):
    run = {"batch_size": 16, "epochs": 2, "output_dir": tmp_path, "verbose": 0}
    with pytest.raises(KeyboardInterrupt):
        kr.train(
            _small(),
            arrays[0],
            optimizer=keras.optimizers.Adam(1e-3),
            callbacks=[Interrupt(5)],
            **run,
        )
    state = (tmp_path / "resume" / "state.json").read_text()
    with pytest.raises(ValueError, match="interrupted run with other arguments.*optimizer"):
        kr.train(_small(), arrays[0], optimizer=keras.optimizers.Adam(1e-2), **run)
    with pytest.raises(ValueError, match="optimizer: .*Adam.* there, None now"):
        kr.train(_small(), arrays[0], **run)
    assert (tmp_path / "resume" / "state.json").read_text() == state
    optimizer = keras.optimizers.Adam(1e-3)
    history = kr.train(_small(), arrays[0], optimizer=optimizer, **run)
    assert history.summary["resumed_from_step"] == 4 and history.summary["steps"] == 8
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 8


def test_a_model_with_nothing_to_train_is_refused_before_any_file(arrays, tmp_path):
    model = _small()
    model.trainable = False
    with pytest.raises(ValueError, match="no trainable weights.*kr.replace_head"):
        kr.train(model, arrays[0], batch_size=16, epochs=1, output_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_run_resumed_under_another_backend_says_so(arrays, tmp_path):
    run = {"batch_size": 16, "epochs": 2, "output_dir": tmp_path, "verbose": 0}
    with pytest.raises(KeyboardInterrupt):
        kr.train(_small(), arrays[0], callbacks=[Interrupt(5)], **run)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["backend"] == keras.backend.backend()
    other = "jax" if config["backend"] == "tensorflow" else "tensorflow"
    (tmp_path / "config.json").write_text(json.dumps({**config, "backend": other}))
    with pytest.warns(UserWarning, match=f"started under the {other} backend and resumes"):
        history = kr.train(_small(), arrays[0], **run)
    assert history.summary["resumed_from_step"] == 4


def test_arrays_train_and_resume_only_on_the_same_arrays(arrays, tmp_path):
    (x, y), val = arrays
    # Without batch_size: the recipe's reference batch, 128 (64 images: one batch of 64).
    run = {"epochs": 2, "val_data": val, "output_dir": tmp_path / "default", "verbose": 0}
    history = kr.train(_small(), (x, y), **run)
    config = json.loads((tmp_path / "default" / "config.json").read_text())
    assert (config["batch_size"], config["steps_per_epoch"]) == (64, 1)
    assert config["data"].startswith("arrays[train]") and len(history.history["val_accuracy"]) == 2

    run = {"epochs": 2, "batch_size": 16, "output_dir": tmp_path / "run", "verbose": 0}
    with pytest.raises(KeyboardInterrupt):
        kr.train(_small(), (x, y), callbacks=[Interrupt(5)], **run)
    other = (x[::-1].copy(), y[::-1].copy())
    with pytest.raises(ValueError, match=r"other arguments \(data: 'arrays\[train\] "):
        kr.train(_small(), other, **run)
    history = kr.train(_small(), (x, y), **run)
    assert history.summary["resumed_from_step"] == 4
    assert [int(r["epoch"]) for r in read_history(tmp_path / "run" / "history.csv")] == [1, 2]


def test_a_dataset_of_fewer_images_than_its_batch_is_said(arrays, tmp_path):
    # 64 images read in batches of 100: one batch of 64, which the run took for its batch
    # (and scaled the learning rate to) without a word (`keras-resvit train --batch-size`).
    data = kr.data.load_dataset(arrays[0], "train", batch_size=100)
    run = {"epochs": 1, "output_dir": tmp_path, "verbose": 0}
    with pytest.warns(UserWarning, match=r"batch_size=100, but holds only 64 training images"):
        history = kr.train(_small(), data, **run)
    assert json.loads((tmp_path / "config.json").read_text())["batch_size"] == 64
    assert history.summary["steps"] == 1


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"callbacks": "early"},
            r"callbacks='early' is not valid; pass a list of keras\.callbacks",
        ),
        (
            {"callbacks": [keras.callbacks.EarlyStopping]},
            r"callbacks\[0\]=<class .*EarlyStopping'> is not valid; pass a list of keras",
        ),
        (
            {"callbacks": [keras.callbacks.BackupAndRestore("unused")]},
            r"callbacks\[0\]=.*BackupAndRestore.*train\(\) saves and resumes its runs itself",
        ),
        (
            {"callbacks": [keras.callbacks.ReduceLROnPlateau()]},
            r"callbacks\[0\]=.*ReduceLROnPlateau.* sets the learning rate, but .*schedule",
        ),
        ({"optimizer": "nope"}, r"optimizer='nope' is not valid; pass a keras\.optimizers"),
        (
            {"optimizer": keras.optimizers.Adam(), "learning_rate": 0.1},
            r"learning_rate=0\.1 applies to the recipe's optimizer, not to optimizer=Adam",
        ),
        (
            {"optimizer": keras.optimizers.SGD(), "ema": 0.9},
            r"ema=0\.9 applies to the recipe's optimizer",
        ),
        ({"loss": "nope"}, r"loss='nope' is not a Keras loss name; pass a keras\.losses\.Loss"),
        (
            {"loss": keras.losses.SparseCategoricalCrossentropy},
            r"loss=<class .*SparseCategoricalCrossentropy'> is not valid",
        ),
        (
            {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
            r"from_logits=True but the model outputs softmax probabilities; pass a loss with "
            "from_logits=False",
        ),
        (
            {"loss": lambda y: y},
            r"loss='<lambda>' cannot compare .* as loss\(y_true, y_pred\) \(TypeError: ",
        ),
        ({"batch_size": 0}, r"batch_size=0 must be a positive int"),
        ({"seed": -1}, r"^seed=-1 must be an int in \[0, 2\*\*32\)"),  # train's, not train_data's
        # 8 images: one batch of 8 trained where 16 was asked (and the rate scaled for 8).
        ({"batch_size": 16}, r"batch_size=16 is larger than the 8 training images"),
        ({"data": "dataset", "batch_size": 16}, r"batch_size=16 applies to \(images, labels\)"),
        (
            {"data": "grey"},
            r"train_data holds 2 arrays of shapes \[\(8, 32, 32\), \(8,\)\]; expected an "
            r"\(images, labels\) pair",
        ),
        ({"data": "one_hot"}, r"train_data holds 2 arrays of shapes \[\(8, 32, 32, 3\), \(8, 10\)"),
        (
            {"data": "scaled_soft"},
            r"train_data: batch 1 has soft labels whose rows sum to 5 \(row 0\)",
        ),
        ({"data": "short"}, r"train_data holds 2 arrays of shapes \[\(8, 32, 32, 3\), \(4,\)\]"),
        ({"val_data": "single"}, r"val_data holds 1 arrays of shapes \[\(8, 32, 32, 3\)\]"),
        ({"data": "negative"}, r"train_data: source labels must be class indices.*found -1"),
        ({"data": "ragged"}, r"train_data images are arrays of different shapes.*image_size="),
        ({"data": "ragged_labels"}, r"train_data labels are sequences of different lengths"),
        ({"val_data": [1, 2]}, r"val_data of type list is not valid.*\(images, labels\) tuple"),
    ],
)
def test_bad_keras_style_arguments(arrays, digits, tmp_path, arguments, message):
    x, y = arrays[0][0][:8], arrays[0][1][:8]
    arguments = dict(arguments)
    data = {
        "dataset": digits[0],
        "grey": (x[..., 0], y),
        "one_hot": (x, np.eye(10)[y]),
        "scaled_soft": tf.data.Dataset.from_tensor_slices((x, 5 * np.eye(10)[y])).batch(4),
        "short": (x, y[:4]),
        "negative": (x, np.full(8, -1)),
        "ragged": ([*x[:7], x[7, :16]], y),
        "ragged_labels": (x, [[label] for label in y[:7]] + [[0, 1]]),
        None: (x, y),
    }[arguments.pop("data", None)]
    if arguments.get("val_data") == "single":
        arguments["val_data"] = (x,)
    with pytest.raises(ValueError, match=message):
        kr.train(_small(), data, epochs=1, output_dir=tmp_path / "run", verbose=0, **arguments)
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_function_builds_the_model_in_the_runs_precision(arrays, tmp_path):
    built = []

    def build():
        built.append(keras.config.dtype_policy().name)
        return _small()

    history = kr.train(
        build, arrays[0], epochs=1, precision="mixed_float16", output_dir=tmp_path, verbose=0
    )
    assert built == ["mixed_float16"]
    assert history.model.dtype_policy.name == "mixed_float16"
    assert json.loads((tmp_path / "config.json").read_text())["precision"] == "mixed_float16"
    assert keras.config.dtype_policy().name == "float32"  # restored after the run
    # The file records the loss-scaled optimizer it trained with: in a float32 session it
    # reloads with its state (before: Keras recorded the inner optimizer, and the reload
    # skipped the saved state with a warning).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reloaded = kr.load_model(tmp_path / "last.keras")
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]
    assert isinstance(reloaded.optimizer, keras.optimizers.LossScaleOptimizer)
    steps = history.summary["steps"]
    assert int(keras.ops.convert_to_numpy(reloaded.optimizer.iterations)) == steps
    with pytest.raises(ValueError, match="returned a str; a function given as the model must"):
        kr.train(lambda: "resnet8", arrays[0], epochs=1, output_dir=tmp_path / "b", verbose=0)


def test_a_resumed_mixed_float16_run_keeps_its_loss_scale(arrays, tmp_path):
    """The resume state loads whole into a loss-scaled optimizer: the loss scale and its
    step counter go on as in an uninterrupted run (before, on JAX, the optimizer was built a
    second time, with a second loss scale, and its saved state was skipped with a warning)."""

    def build():
        keras.utils.set_random_seed(0)
        return _small()

    run = {"epochs": 2, "batch_size": 16, "save_every": 2, "verbose": 0}
    run["precision"] = "mixed_float16"
    whole = kr.train(build, arrays[0], output_dir=tmp_path / "a", **run).model.optimizer
    with pytest.raises(KeyboardInterrupt):
        kr.train(build, arrays[0], output_dir=tmp_path / "b", callbacks=[Interrupt(3)], **run)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = kr.train(build, arrays[0], output_dir=tmp_path / "b", **run).model.optimizer
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]
    assert len(resumed.variables) == len(whole.variables)
    for name in ("step_counter", "dynamic_scale", "iterations"):
        got, want = (keras.ops.convert_to_numpy(getattr(o, name)) for o in (resumed, whole))
        assert got == want, name
    assert keras.ops.convert_to_numpy(whole.iterations) == 8


@pytest.mark.parametrize("model", ["resnet", "vit"])
def test_a_dataset_batch_of_another_image_size_is_named(tmp_path, model):
    # A dataset that declares no image size: batch 2 is 64x64. A ResNet trained on it
    # silently, a ViT failed deep in the backend.
    (x, y), _ = kr.data.load_digits()

    def batches():
        yield x[:16].astype("float32"), y[:16]
        yield np.zeros((16, 64, 64, 3), "float32"), y[:16]

    spec = (tf.TensorSpec((None, None, None, 3)), tf.TensorSpec((None,), tf.int64))
    data = tf.data.Dataset.from_generator(batches, output_signature=spec)
    build = kr.build_resnet(8, stem="cifar") if model == "resnet" else tiny_vit(num_classes=10)
    with pytest.raises(ValueError, match=r"train_data: batch 2 has images of shape \[64 64 3\]"):
        kr.train(build, data, epochs=1, output_dir=tmp_path, verbose=0, optimizer="adam")
