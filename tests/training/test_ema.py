"""`kr.train(..., ema=...)`: the validation figures, `best.keras` and `last.keras` are those of
the averaged weights, and a resumed run ends as the uninterrupted one does (a plateau schedule
too)."""

import json
import warnings

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.training.ema_statistics import (
    average_statistics,
    moving_statistics,
    run_state,
    statistic_pairs,
)
from keras_resvit.training.recipes import get_recipe
from tests.training.run_training import StatisticsAfterEachStep
from tests.training.test_train import Interrupt, StopAfter
from tests.training.test_train_py_dataset import _small as _model  # same initial weights

RUN = {"batch_size": 16, "epochs": 3, "save_every": 3, "ema": 0.8, "verbose": 0}


class InterruptAtTheEnd(keras.callbacks.Callback):
    """Kills the run, as Ctrl-C would, once its last epoch is saved."""

    def on_train_end(self, logs=None):
        raise KeyboardInterrupt


def _weights(path):
    return [np.asarray(w) for w in kr.load_model(path).get_weights()]


@pytest.fixture(scope="module")
def uninterrupted(arrays, tmp_path_factory):
    out = tmp_path_factory.mktemp("ema")
    record = StatisticsAfterEachStep()  # reads the state: it changes nothing trained
    history = kr.train(
        _model(), arrays[0], val_data=arrays[1], output_dir=out, callbacks=[record], **RUN
    )
    return out, history, record


def test_validation_and_both_checkpoints_use_the_averaged_weights(arrays, uninterrupted):
    out, history, _ = uninterrupted
    x, y = arrays[1]
    # The averaged weights are not the trained ones: a model holding the trained weights
    # (the resume state `fit` saved at the last step) scores otherwise.
    last = kr.load_model(out / "last.keras")
    loss, _ = last.evaluate(x, y, batch_size=16, verbose=0)
    assert loss == pytest.approx(history.history["val_loss"][-1], rel=1e-5)
    best_epoch = int(np.argmax(history.history["val_accuracy"]))
    best = kr.load_model(out / "best.keras")
    loss, accuracy = best.evaluate(x, y, batch_size=16, verbose=0)
    assert accuracy == pytest.approx(history.summary["best_val_accuracy"], abs=1e-6)
    assert loss == pytest.approx(history.history["val_loss"][best_epoch], rel=1e-5)
    # The run's record says what was averaged.
    assert json.loads((out / "config.json").read_text())["ema"] == RUN["ema"]


def test_batchnorm_statistics_are_averaged_with_the_weights(uninterrupted):
    """Keras' `use_ema` averages the trainable weights only; the saved model's BatchNorm
    statistics are the average of the statistics after each step (as timm's EMA), not the
    trained model's last ones (before: 0.43 apart on JAX, 1.4 on TensorFlow)."""
    out, history, record = uninterrupted
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        last = kr.load_model(out / "last.keras")
    # The averages travel in the resume state only: the file reloads its optimizer whole.
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]
    assert len(record.steps) == 12
    assert record.error(last, RUN["ema"]) < 1e-5
    trained = record.steps[-1]
    saved = [np.asarray(keras.ops.convert_to_numpy(v)) for v in moving_statistics(last)]
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(saved, trained, strict=True)) > 0.05
    # Keras' own save of the returned model too: its optimizer reloads whole.
    history.model.save(out / "plain.keras")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reloaded = keras.saving.load_model(out / "plain.keras")
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]
    assert int(keras.ops.convert_to_numpy(reloaded.optimizer.iterations)) == 12


def test_a_state_with_or_without_the_averages_loads(tmp_path):
    """A resume state holds the averages of the statistics (`run_state`); a state without
    them (any other weights file) loads too, each average starting from its statistic."""
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")

    def compiled():
        model = _model()
        optimizer = keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5)
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
        average_statistics(model)
        return model

    trained = compiled()
    trained.fit(x, np.arange(8) % 10, batch_size=4, epochs=2, verbose=0)
    for statistic, _ in statistic_pairs(trained):  # `fit` ended them at their averages
        statistic.assign(np.asarray(statistic) + 1.0)
    with run_state(trained):
        trained.save_weights(tmp_path / "run.weights.h5")
    trained.save_weights(tmp_path / "plain.weights.h5")
    averages = [np.asarray(a) for _, a in statistic_pairs(trained)]
    statistics = [np.asarray(s) for s, _ in statistic_pairs(trained)]
    for average, statistic in zip(averages, statistics, strict=True):
        np.testing.assert_allclose(statistic - average, 1.0, rtol=1e-6)
    for name, expected in (("run", averages), ("plain", statistics)):
        model = compiled()
        model.optimizer.build(model.trainable_variables)
        model.load_weights(tmp_path / f"{name}.weights.h5")
        for (_, average), want in zip(statistic_pairs(model), expected, strict=True):
            np.testing.assert_array_equal(np.asarray(average), want)


def test_where_keras_overwrites_the_weights_with_their_average_the_statistics_follow():
    """`ema_overwrite_frequency=2`: after steps 2 and 4 the weights are their averages, and
    the statistics are theirs; after step 3 neither is."""
    model = _model()
    optimizer = keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5, ema_overwrite_frequency=2)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    average_statistics(model)
    gaps = []

    class Gaps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pairs = statistic_pairs(self.model)  # under JAX `self.model` syncs the state
            gaps.append(max(float(np.max(np.abs(np.asarray(s) - np.asarray(a)))) for s, a in pairs))

    x = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    model.fit(x, np.arange(16) % 10, batch_size=4, epochs=1, verbose=0, callbacks=[Gaps()])
    assert gaps[1] == 0 and gaps[3] == 0
    assert gaps[2] > 1e-3


def test_the_returned_model_trains_on(arrays, tmp_path):
    history = kr.train(_model(), arrays[0], output_dir=tmp_path, **RUN)
    x, y = arrays[0]
    losses = history.model.fit(x, y, batch_size=16, epochs=2, verbose=0).history["loss"]
    assert np.isfinite(losses).all()


def test_averaged_weights_differ_from_the_trained_ones(arrays, tmp_path):
    # The same run without averaging ends elsewhere: the test above compares different models.
    plain = {**RUN, "ema": None}
    kr.train(_model(), arrays[0], output_dir=tmp_path / "plain", **plain)
    kr.train(_model(), arrays[0], output_dir=tmp_path / "ema", **RUN)
    plain, averaged = (_weights(tmp_path / name / "last.keras") for name in ("plain", "ema"))
    difference = max(float(np.max(np.abs(a - b))) for a, b in zip(plain, averaged, strict=True))
    assert difference > 0.01


@pytest.mark.parametrize("kill", [Interrupt(7), InterruptAtTheEnd()], ids=["inside", "after"])
def test_a_resumed_run_ends_with_the_weights_of_the_uninterrupted_one(
    arrays,
    uninterrupted,
    tmp_path,
    kill,
):
    # Killed at step 7 (4 steps per epoch, saved every 3), it resumes from step 6 in two `fit`
    # calls: the first must not hand its averaged weights to the second. Killed after the last
    # save, it has no step left to run, and its model must still be the averaged one.
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        kr.train(_model(), arrays[0], val_data=arrays[1], output_dir=out, callbacks=[kill], **RUN)
    assert not (out / "last.keras").exists()
    kr.train(_model(), arrays[0], val_data=arrays[1], output_dir=out, **RUN)
    expected = _weights(uninterrupted[0] / "last.keras")
    for got, want in zip(_weights(out / "last.keras"), expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_resumed_run_that_a_callback_stops_ends_with_the_averaged_weights(arrays, tmp_path):
    # Resumed at step 6 of 12, a callback stops it at the end of epoch 2: the first of the
    # resume's two `fit` calls ends the run, as the uninterrupted run stopped there does.
    data = {"val_data": arrays[1], **RUN}
    kr.train(_model(), arrays[0], output_dir=tmp_path / "a", callbacks=[StopAfter(2)], **data)
    with pytest.raises(KeyboardInterrupt):
        kr.train(_model(), arrays[0], output_dir=tmp_path / "b", callbacks=[Interrupt(7)], **data)
    kr.train(_model(), arrays[0], output_dir=tmp_path / "b", callbacks=[StopAfter(2)], **data)
    expected = _weights(tmp_path / "a" / "last.keras")
    for got, want in zip(_weights(tmp_path / "b" / "last.keras"), expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_resumed_plateau_schedule_lowers_the_rate_when_the_uninterrupted_one_does(
    arrays, tmp_path
):
    """The plateau schedule's counters (best value, epochs waited) travel in the resume state:
    a run killed inside epoch 3 lowers the rate at the epochs the uninterrupted run does."""
    recipe = get_recipe("alexnet", patience=2)
    run = {"val_data": arrays[1], "batch_size": 16, "epochs": 5, "save_every": 1}
    run.update(recipe=recipe, verbose=0)
    a = kr.train(_model(), arrays[0], output_dir=tmp_path / "a", **run)
    with pytest.raises(KeyboardInterrupt):
        kr.train(_model(), arrays[0], output_dir=tmp_path / "b", callbacks=[Interrupt(10)], **run)
    b = kr.train(_model(), arrays[0], output_dir=tmp_path / "b", **run)
    rates = a.history["learning_rate"]
    assert rates[-1] < rates[0]  # the uninterrupted run lowered it after the kill's epoch
    np.testing.assert_allclose(b.history["learning_rate"], rates, rtol=1e-6)
    expected = _weights(tmp_path / "a" / "last.keras")
    for got, want in zip(_weights(tmp_path / "b" / "last.keras"), expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_swapping_in_the_average_for_validation_leaves_the_trained_weights_exact(backend):
    """Keras' own swap on TensorFlow is arithmetic (a += b; b = a - b; a -= b): it rounds both,
    so a run validated with `ema` trained other weights than one without."""
    from keras_resvit.training.callbacks import SwapEMAWeights

    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5), loss="mse")
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    model.fit(x, np.ones((8, 10)), batch_size=4, epochs=2, verbose=0)
    rng = np.random.default_rng(1)  # `fit` ends with the weights set to their average
    for weight in model.trainable_weights:
        weight.assign(np.asarray(weight) + rng.normal(0, 0.1, weight.shape).astype("float32"))
    trained = [np.array(w) for w in model.trainable_weights]
    averaged = [np.array(w) for w in model.optimizer._model_variables_moving_average]
    swap = SwapEMAWeights()
    swap.set_model(model)
    swap.on_test_begin()
    for got, want in zip(model.trainable_weights, averaged, strict=True):
        np.testing.assert_array_equal(np.asarray(got), want)
    swap.on_test_end()
    for got, want in zip(model.trainable_weights, trained, strict=True):
        np.testing.assert_array_equal(np.asarray(got), want)
