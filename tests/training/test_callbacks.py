"""Training hygiene: an interrupted run resumed later never replaces best.keras with a worse
model."""

import json
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_resvit as kr
from keras_resvit.training import callbacks
from tests.conftest import random_images


class Interrupted(Exception):
    pass


def _model():
    # GroupNorm: no moving statistics, so with a vanishing learning rate the predictions stay
    # those of the initial weights and the validation accuracy is known in advance.
    keras.utils.set_random_seed(0)
    return kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), norm="group", width=0.5)


def test_resumed_run_never_replaces_best_with_a_worse_model(tmp_path, monkeypatch):
    x = random_images(64, 16, 16)
    train = kr.data.load_dataset((x, np.arange(64) % 10), "train", batch_size=32)
    x_val = random_images(16, 16, 16, seed=1)
    predicted = np.argmax(keras.ops.convert_to_numpy(_model()(x_val)), -1)
    # Accuracy 1.0 on the first validation set, 0.0 on the second (every label off by one).
    # Plain tf.data datasets, which carry no provenance: a resumed run must validate on the
    # same data, and datasets of kr.data say which data they hold.
    perfect = tf.data.Dataset.from_tensor_slices((x_val, predicted)).batch(16)
    wrong = tf.data.Dataset.from_tensor_slices((x_val, (predicted + 1) % 10)).batch(16)
    run = {"epochs": 2, "output_dir": tmp_path, "learning_rate": 1e-9, "verbose": 0}
    save_model = callbacks.save_model

    def interrupted_save(model, path):  # the run stops right after best.keras is written
        save_model(model, path)
        raise Interrupted

    monkeypatch.setattr(callbacks, "save_model", interrupted_save)
    with pytest.raises(Interrupted):
        kr.train(_model(), train, val_data=perfect, **run)
    state = json.loads((tmp_path / "resume" / "state.json").read_text())
    assert state["step"] == 2 and state["best"] == 1.0  # recorded before best.keras is written
    before = (tmp_path / "best.keras").read_bytes()

    monkeypatch.setattr(callbacks, "save_model", save_model)
    history = kr.train(_model(), train, val_data=wrong, **run)
    assert history.history["val_accuracy"][1:] == [0.0]
    assert (tmp_path / "last.keras").is_file()
    assert (tmp_path / "best.keras").read_bytes() == before


def test_nan_guard_counts_steps_without_reading_the_device_each_step():
    model = _model()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(10)
    guard = callbacks.NanGuard()
    guard.set_model(model)
    guard.on_epoch_begin(0)
    guard.on_train_batch_end(0, {"loss": 1.5})
    assert guard.bad_step is None and not model.stop_training
    # Keras may run batch callbacks off the loop's thread, so they can arrive out of order.
    guard.on_train_batch_end(3, {"loss": float("nan")})
    guard.on_train_batch_end(2, {"loss": float("inf")})
    assert guard.bad_step == 13 and model.stop_training
    # Only callbacks with nothing to do between steps let Keras run the loop without waiting.
    assert callbacks.NanGuard.async_safe
    assert callbacks.ResumeCheckpoint("unused").async_safe
    assert not callbacks.ResumeCheckpoint("unused", every_steps=5).async_safe


def test_learning_rate_at_reads_the_schedule_at_a_step_or_the_current_rate():
    from keras_resvit.training.schedules import RecipeSchedule

    schedule = RecipeSchedule(0.1, 100, decay_at=(50, 75))
    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(80)  # where training is does not matter
    rates = [callbacks.learning_rate_at(model.optimizer, step) for step in (0, 49, 50, 75)]
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.01, 0.001], rtol=1e-6)
    assert callbacks.follows_schedule(model.optimizer)
    # Under loss scaling (mixed_float16) the schedule is the wrapped optimizer's.
    scaled = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(schedule))
    assert callbacks.learning_rate_at(scaled, 60) == pytest.approx(0.01)
    constant = keras.optimizers.SGD(0.05)
    assert not callbacks.follows_schedule(constant)
    assert callbacks.learning_rate_at(constant, 60) == pytest.approx(0.05)


class _Calls(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append("begin")

    def on_train_end(self, logs=None):
        self.calls.append("end")


def test_run_callbacks_begin_and_end_a_run_of_several_fits_once():
    model = _model()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    user = _Calls()
    run = callbacks.RunCallbacks([user], model, epochs=3, steps=4, verbose=0)
    assert run.params == {"epochs": 3, "steps": 4, "verbose": 0} and user.params == run.params
    run.more = True  # the first fit of two
    run.on_train_begin()
    run.on_train_end()
    assert user.calls == ["begin"]
    run.more = False
    run.on_train_begin()
    run.on_train_end()
    assert user.calls == ["begin", "end"]
    # A first fit that a callback stopped ends the run: no second fit follows.
    stopped = _Calls()
    run = callbacks.RunCallbacks([stopped], model, epochs=3, steps=4, verbose=0)
    run.more = True
    run.on_train_begin()
    model.stop_training = True
    run.on_train_end()
    assert stopped.calls == ["begin", "end"]


class SlowBatchEnd(keras.callbacks.Callback):
    """A batch callback that Keras may run off the training loop's thread, and that takes
    longer than the loop needs to reach the next batch."""

    async_safe = True

    def __init__(self):
        super().__init__()
        self.done = []

    def on_train_batch_end(self, batch, logs=None):
        time.sleep(0.5)
        self.done.append(batch)


def test_a_run_that_raises_mid_epoch_returns_after_its_batch_callbacks(tmp_path):
    """Where every batch callback is `async_safe` (JAX), Keras runs them on a thread; a `fit`
    that raises left them running, and a progress bar then printed into what came next."""
    x = random_images(48, 16, 16)
    labels = np.arange(48) % 10
    labels[32:] = 99  # the third batch's labels are not classes
    data = tf.data.Dataset.from_tensor_slices((x, labels)).batch(16)
    slow = SlowBatchEnd()
    with pytest.raises(ValueError, match="99"):
        kr.train(_model(), data, epochs=1, output_dir=tmp_path, callbacks=[slow], verbose=0)
    assert sorted(slow.done) == [0, 1]  # Keras' threads may finish them in either order
