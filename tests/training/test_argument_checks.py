"""Bad arguments of the optimizers, schedules and callbacks of a run: one clear ValueError
before any work, naming the argument and the value, and never a user's file replaced."""

import re

import keras
import numpy as np
import pytest

from keras_resvit.training import callbacks, history_csv
from keras_resvit.training.optimizers import CoupledDecayLamb, CoupledDecaySGD, recipe_optimizer
from keras_resvit.training.recipes import RECIPES
from keras_resvit.training.schedules import RecipeSchedule, recipe_schedule, recipe_steps
from keras_resvit.training.train import build_optimizer, compile_model

NAN = float("nan")


def _tiny_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_ema_zero_is_refused_not_taken_for_099():
    with pytest.raises(ValueError, match=r"ema=0.0 must be a number in \(0, 1\)"):
        build_optimizer(RECIPES["resnet_cifar"], 128, 100, ema=0.0)
    with pytest.raises(ValueError, match=r"ema=0 must be a number in \(0, 1\)"):
        compile_model(_tiny_model(), RECIPES["resnet_cifar"], 128, 100, ema=0)
    assert not build_optimizer(RECIPES["resnet_cifar"], 128, 100, ema=None).use_ema
    optimizer = build_optimizer(RECIPES["resnet_cifar"], 128, 100, ema=0.5)
    assert optimizer.use_ema and optimizer.ema_momentum == 0.5


@pytest.mark.parametrize("ema", [NAN, True, 1.0, 1.5, -0.1, "0.99"])
def test_bad_ema_is_refused(ema):
    with pytest.raises(ValueError, match=re.escape(f"ema={ema!r} must be a number in (0, 1)")):
        recipe_optimizer(RECIPES["deit"], 1e-3, ema=ema)


@pytest.mark.parametrize("batch", [0, -128, 12.5, "128"])
def test_bad_global_batch_size_is_refused(batch):
    for recipe in ("resnet_cifar", "vit_finetune"):
        with pytest.raises(
            ValueError, match=re.escape(f"global_batch_size={batch!r} must be a positive")
        ):
            build_optimizer(RECIPES[recipe], batch, 100)
    with pytest.raises(
        ValueError, match=re.escape(f"global_batch_size={batch!r} must be a positive")
    ):
        recipe_steps(RECIPES["resnet_cifar"], batch)


def test_plateau_recipe_refuses_a_bad_batch_size():
    # A "plateau" recipe has no schedule: its rate is scaled by the batch.
    with pytest.raises(ValueError, match=r"global_batch_size=-256 must be a positive int"):
        build_optimizer(RECIPES["resnet_imagenet"], -256, 1000)
    with pytest.raises(ValueError, match=r"learning_rate=nan must be a number > 0"):
        recipe_optimizer(RECIPES["resnet_cifar"], NAN)


@pytest.mark.parametrize("steps", [NAN, 0, -5, 100.0])
def test_bad_total_steps_is_refused(steps):
    with pytest.raises(
        ValueError, match=re.escape(f"total_steps={steps!r} must be a positive int")
    ):
        build_optimizer(RECIPES["resnet_cifar"], 128, steps)


def test_recipe_given_by_name():
    assert type(recipe_optimizer("resnet_cifar", 0.1)).__name__ == "CoupledDecaySGD"
    assert type(build_optimizer("rsb_a2", 256, 1000)).__name__ == "CoupledDecayLamb"
    schedule = recipe_schedule("resnet_cifar", 128, 64_000)
    assert schedule.decay_at == (32_000, 48_000)
    assert recipe_steps("resnet_cifar", 256) == 32_000
    with pytest.raises(ValueError, match=r"recipe='resnet_cifra' is not known.*'resnet_cifar'"):
        recipe_optimizer("resnet_cifra", 0.1)
    with pytest.raises(ValueError, match=r"recipe=3 is not known"):
        recipe_schedule(3, 128, 100)


@pytest.mark.parametrize("kind", [CoupledDecaySGD, CoupledDecayLamb])
def test_exclude_of_one_name_is_one_name(kind):
    optimizer = kind(exclude="bias")
    assert optimizer.exclude == ("bias",)
    clone = kind.from_config(optimizer.get_config())
    assert clone.exclude == ("bias",)
    bias, kernel = keras.Variable([1.0], name="bias"), keras.Variable([1.0], name="kernel")
    optimizer.build([bias, kernel])
    assert not optimizer._use_weight_decay(bias) and optimizer._use_weight_decay(kernel)
    assert kind(exclude=None).exclude == ()


@pytest.mark.parametrize("exclude", [["bias", 3], [""], 5, {"bias": 1}])
def test_bad_exclude_is_refused(exclude):
    with pytest.raises(
        ValueError, match=re.escape(f"CoupledDecaySGD: exclude={exclude!r} is not valid")
    ):
        CoupledDecaySGD(exclude=exclude)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"decay_at": "50"}, r"decay_at='50' is not valid"),
        ({"decay_at": (75, 50)}, r"decay_at=\(75, 50\) is not valid"),
        ({"decay_at": (50.0,)}, r"decay_at=\(50.0,\) is not valid"),
        ({"decay_at": (-1,)}, r"decay_at=\(-1,\) is not valid"),
        ({"decay_at": 50}, r"decay_at=50 is not valid"),
        ({"peak": NAN}, r"peak=nan must be a number > 0"),
        ({"peak": 0}, r"peak=0 must be a number > 0"),
        ({"peak": "0.1"}, r"peak='0.1' must be a number > 0"),
        ({"total_steps": -1}, r"total_steps=-1 must be a positive int"),
        ({"total_steps": 10.5}, r"total_steps=10.5 must be a positive int"),
        ({"warmup_steps": -10}, r"warmup_steps=-10 must be an int >= 0"),
        ({"warmup_steps": NAN}, r"warmup_steps=nan must be an int >= 0"),
        ({"warmup_learning_rate": NAN}, r"warmup_learning_rate=nan must be a number > 0"),
        ({"decay": "Step"}, r"decay='Step' is not valid"),
        ({"decay": "cosine"}, r"decay_at=\[50\] applies to decay='step' only"),
        ({"warmup_learning_rate": 0.01}, r"warmup_learning_rate=0.01 needs a warm-up"),
    ],
)
def test_bad_schedule_arguments_are_refused(kwargs, message):
    arguments = {"peak": 0.1, "total_steps": 100, "decay_at": (50,), **kwargs}
    with pytest.raises(ValueError, match="RecipeSchedule: " + message):
        RecipeSchedule(**arguments)


def test_schedule_of_a_tiny_run_keeps_its_repeated_boundaries():
    # Fractions rounded to steps of a short run may meet: (0.5, 0.75) of 3 steps is (2, 2).
    schedule = recipe_schedule(RECIPES["resnet_cifar"], 128, 3)
    assert schedule.decay_at == (2, 2)
    assert float(schedule(2)) == pytest.approx(0.001)


def test_history_csv_never_replaces_a_users_file(tmp_path):
    path = tmp_path / "user.csv"
    path.write_text("my,precious\n1,2")
    for first_epoch in (0, 1):
        with pytest.raises(ValueError, match=r"HistoryCSV: path='.*user.csv' holds a file"):
            history_csv.HistoryCSV(path, 1, first_epoch=first_epoch)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=r"path='.*empty.csv' holds a file that is not"):
        history_csv.HistoryCSV(tmp_path / "empty.csv", 1)
    assert path.read_text() == "my,precious\n1,2"


def test_history_csv_replaces_its_own_file(tmp_path):
    path = tmp_path / "history.csv"
    model = _tiny_model()
    model.optimizer.build(model.trainable_variables)
    callback = history_csv.HistoryCSV(path, 1)
    callback.set_model(model)
    for epoch in range(2):
        callback.on_epoch_begin(epoch)
        callback.on_epoch_end(epoch, {"loss": 1.0})
    again = history_csv.HistoryCSV(path, 1)  # a new run in its place
    again.set_model(model)
    again.on_epoch_begin(0)
    again.on_epoch_end(0, {"loss": 0.5})
    assert [row["loss"] for row in history_csv.read_history(path)] == [0.5]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps_per_epoch": 0}, r"HistoryCSV: steps_per_epoch=0 must be a positive int"),
        ({"steps_per_epoch": "2"}, r"HistoryCSV: steps_per_epoch='2' must be a positive int"),
        ({"first_epoch": -1}, r"HistoryCSV: first_epoch=-1 must be an int >= 0"),
        ({"path": 3}, r"HistoryCSV: path=3 is not a path"),
    ],
)
def test_bad_history_csv_arguments_are_refused(tmp_path, kwargs, message):
    arguments = {"path": tmp_path / "history.csv", "steps_per_epoch": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        history_csv.HistoryCSV(**arguments)


def test_best_checkpoint_refuses_a_monitor_missing_from_the_logs(tmp_path):
    model = _tiny_model()
    x, y = np.zeros((4, 4), "float32"), np.zeros(4, "int32")
    best = callbacks.BestCheckpoint(tmp_path / "best.keras", monitor="val_acc")
    with pytest.raises(ValueError, match=r"monitor='val_acc' is not in .*'val_accuracy'"):
        model.fit(x, y, validation_data=(x, y), epochs=1, callbacks=[best], verbose=0)
    assert not (tmp_path / "best.keras").exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"best": "0.5"}, r"BestCheckpoint: best='0.5' is not valid; expected a finite number"),
        ({"best": NAN}, r"BestCheckpoint: best=nan is not valid"),
        ({"best": True}, r"BestCheckpoint: best=True is not valid"),
        ({"monitor": ""}, r"BestCheckpoint: monitor='' is not valid"),
        ({"monitor": None}, r"BestCheckpoint: monitor=None is not valid"),
        ({"path": "best.h5"}, r"BestCheckpoint: path='best.h5' has suffix '.h5'"),
    ],
)
def test_bad_best_checkpoint_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        callbacks.BestCheckpoint(**{"path": "best.keras", **kwargs})


def test_best_checkpoint_takes_a_numpy_best():
    assert callbacks.BestCheckpoint("best.keras", best=np.float32(0.5)).best == 0.5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"total_steps": "1"}, r"StopAtStep: total_steps='1' must be a positive int"),
        ({"total_steps": 0}, r"StopAtStep: total_steps=0 must be a positive int"),
        ({"start_step": -1}, r"StopAtStep: start_step=-1 must be an int >= 0"),
        ({"start_step": 1.0}, r"StopAtStep: start_step=1.0 must be an int >= 0"),
    ],
)
def test_bad_stop_at_step_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        callbacks.StopAtStep(**{"total_steps": 10, **kwargs})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"every_steps": 0}, r"every_steps=0 must be a positive int"),
        ({"every_steps": -1}, r"every_steps=-1 must be a positive int"),
        ({"every_steps": 1.5}, r"every_steps=1.5 must be a positive int"),
        ({"best": "best.keras"}, r"best='best.keras' is not valid; expected a BestCheckpoint"),
        ({"statistics": 1}, r"statistics=1 is not valid; expected a ReplicaStatistics"),
        ({"directory": None}, r"directory=None is not a path"),
    ],
)
def test_bad_resume_checkpoint_arguments_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match="ResumeCheckpoint: " + message):
        callbacks.ResumeCheckpoint(**{"directory": tmp_path / "resume", **kwargs})
