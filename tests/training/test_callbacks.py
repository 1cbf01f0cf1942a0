"""Training hygiene: an interrupted run resumed later never replaces best.keras with a worse
model."""

import json

import keras
import numpy as np
import pytest

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
    perfect = kr.data.load_dataset((x_val, predicted), "test", batch_size=16)
    wrong = kr.data.load_dataset((x_val, (predicted + 1) % 10), "test", batch_size=16)
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
