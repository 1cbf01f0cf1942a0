"""Callbacks of `train()`: resumable checkpoints, best model, NaN guard, history CSV, and the
list that carries them with the user's own through a run of several `fit` calls.

Every file is written through a temporary file and a rename, so a run killed during a save
leaves the previous file intact.
"""

import concurrent.futures
import contextlib
import math
import numbers

import keras
import numpy as np

from keras_resvit.base.backend import backend
from keras_resvit.base.files import (
    atomic_path,
    check_output_path,
    write_json,
)
from keras_resvit.base.lazy import tf
from keras_resvit.base.model_files import save_model
from keras_resvit.base.validation import check_int
from keras_resvit.training.ema_statistics import (
    moving_statistics,
    run_state,
    statistic_pairs,
    swap_statistics,
    swap_values,
)
from keras_resvit.training.lora_state import save_lora_state
from keras_resvit.training.run_folder import STATE_FILE, read_resume_state


def weights_finite(model) -> bool:
    """Whether every weight of `model` is finite (no NaN/inf)."""
    ops = keras.ops
    return all(bool(ops.all(ops.isfinite(w))) for w in model.weights)


def iterations(model) -> int:
    """Optimizer steps taken so far (waits for the device: call it between epochs)."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def averages_weights(optimizer) -> bool:
    """Whether `optimizer` keeps a moving average of the weights (`use_ema`)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's
    return bool(getattr(inner, "use_ema", False))


@contextlib.contextmanager
def averaged_weights(model):
    """Inside, `model`'s trainable weights (and BatchNormalization statistics) are their moving
    average where its optimizer keeps one (`averages_weights`, `ema_statistics`); after it,
    the trained ones again. Call it between steps."""
    if not averages_weights(model.optimizer):
        yield
        return
    variables = model.trainable_variables
    kept = variables + [statistic for statistic, _ in statistic_pairs(model)]
    trained = [keras.ops.convert_to_numpy(v) for v in kept]
    model.optimizer.finalize_variable_values(variables)
    try:
        yield
    finally:
        for variable, value in zip(kept, trained, strict=True):
            variable.assign(value)


class SwapEMAWeights(keras.callbacks.SwapEMAWeights):
    """`keras.callbacks.SwapEMAWeights` that swaps the BatchNormalization statistics with their
    averages too (`ema_statistics`), and whose swap is exact on TensorFlow: Keras swaps a
    weight and its average there by arithmetic (a += b; b = a - b; a -= b), which rounds both
    in float32 at every validation, so that a run with `ema` trained other weights than one
    without (1e-4 apart after a few epochs). Here each pair is swapped through a copy."""

    def _tf_swap_variables(self, optimizer):
        averages = optimizer._model_variables_moving_average
        for variable, average in zip(optimizer._trainable_variables, averages, strict=True):
            variable = variable.value if isinstance(variable, keras.Variable) else variable
            average = average.value if isinstance(average, keras.Variable) else average
            optimizer._distribution_strategy.extended.update(variable, swap_values, args=(average,))

    def _swap_variables(self):
        super()._swap_variables()
        swap_statistics(self.model)


def _schedule(optimizer):
    """The `LearningRateSchedule` `optimizer` follows, or None (a rate callbacks may set)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's
    # Keras keeps the schedule itself only here; `learning_rate` is its value at `iterations`.
    schedule = inner._learning_rate
    return (
        schedule if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule) else None
    )


def follows_schedule(optimizer) -> bool:
    """Whether `optimizer`'s learning rate is a schedule (which no callback can set)."""
    return _schedule(optimizer) is not None


def learning_rate_at(optimizer, step) -> float:
    """The learning rate `optimizer` applies at (0-based) optimizer step `step`: its schedule's
    value there, or its current rate when it follows no schedule (a constant, or a rate that
    a callback such as `ReduceLROnPlateau` sets)."""
    schedule = _schedule(optimizer)
    rate = optimizer.learning_rate if schedule is None else schedule(step)
    return float(keras.ops.convert_to_numpy(rate))


class RunCallbacks(keras.callbacks.CallbackList):
    """The callbacks of one training run, passed to each of the `fit` calls it takes (a run
    resumed inside an epoch finishes that epoch in one call, then runs the rest in another).

    Each callback sees the run as one `fit`: `on_train_begin` and `on_train_end` once, epochs
    numbered over the whole run (the progress bar counts to the run's last epoch), one
    `History` of every epoch of the run since it (re)started.

    Args:
        callbacks: the `keras.callbacks.Callback`s, in the order they are called.
        model: the model trained.
        epochs: the run's number of epochs.
        steps: steps per epoch.
        verbose: `fit`'s verbosity (0: no progress bar).
    """

    def __init__(self, callbacks, model, *, epochs, steps, verbose):
        super().__init__(
            callbacks,
            add_history=True,
            add_progbar=verbose != 0,
            model=model,
            epochs=epochs,
            steps=steps,
            verbose=verbose,
        )
        self.begun = False
        self.more = False  # set while another `fit` call of the run follows this one

    def on_train_begin(self, logs=None):
        if not self.begun:
            self.begun = True
            super().on_train_begin(logs)

    def on_train_end(self, logs=None):
        # Not `self.model`: under JAX that property syncs the state, which `fit` just did.
        if not self.more or self._model.stop_training:
            super().on_train_end(logs)

    @contextlib.contextmanager
    def waited_for(self):
        """Inside, the run's `fit` calls; after it, also when one raised, the batch callbacks
        Keras runs off the training loop's thread (where every one is `async_safe`) are done:
        a `fit` that raises leaves them running, and a progress bar would print into what
        follows (a notebook's traceback, the next cell's output)."""
        try:
            yield
        finally:
            concurrent.futures.wait(self._futures)  # without raising what they raised


def _replica_statistics(model):
    """The moving statistics of `model`'s BatchNormalization layers when each replica of a
    TensorFlow strategy keeps its own (a `MirroredVariable` per statistic, whose replicas
    each update theirs from their own part of the batch), with their strategy; else None."""
    if backend() != "tensorflow":
        return None  # JAX's data parallel computes the statistics of the global batch
    variables = moving_statistics(model)
    if not variables or not isinstance(variables[0].value, tf.distribute.DistributedValues):
        return None
    strategy = variables[0].value.distribute_strategy
    return (strategy, variables) if strategy.num_replicas_in_sync > 1 else None


class ReplicaStatistics(keras.callbacks.Callback):
    """Under a TensorFlow strategy of several replicas (`MirroredStrategy`, the workers of
    `MultiWorkerMirroredStrategy`, `TPUStrategy`), each replica's BatchNormalization layers
    update moving statistics of their own part of each batch, and validation on each replica
    uses its own, while a saved model holds the first replica's: the validation figures
    would not be the saved model's. Before each validation, at each epoch end and at the end
    of training (call it first), and before a save (`average`), every replica's statistics
    become their mean over the replicas (timm's `distribute_bn`, "reduce"). The update is
    linear, so that mean does not depend on when it is taken: it is the moving average of
    the replicas' mean batch statistics. Elsewhere it does nothing (a single replica; JAX's
    data parallel normalizes with the global batch's statistics).

    Every worker must call `average` at the same points: it is a collective operation.
    """

    def __init__(self):
        super().__init__()
        self._average = None  # the traced averaging of the model it was traced for

    def average(self):
        """Replaces every replica's moving statistics by their mean over the replicas."""
        model = self._model  # not `self.model`: under JAX that property syncs the state
        if self._average is None or self._average[0] is not model:
            found = _replica_statistics(model)
            self._average = (model, None if found is None else _averaging(*found))
        if self._average[1] is not None:
            self._average[1]()

    def on_test_begin(self, logs=None):
        self.average()

    def on_epoch_end(self, epoch, logs=None):
        self.average()

    def on_train_end(self, logs=None):
        self.average()


def _averaging(strategy, variables):
    """A function that replaces each of `variables`' replicas by their mean over replicas."""

    def replica_step():
        context = tf.distribute.get_replica_context()
        means = context.all_reduce("MEAN", [tf.identity(v.value) for v in variables])
        for variable, mean in zip(variables, means, strict=True):
            variable.value.assign(mean)

    return tf.function(lambda: strategy.run(replica_step))


class ResumablePlateau(keras.callbacks.ReduceLROnPlateau):
    """`keras.callbacks.ReduceLROnPlateau` whose counters (the best value, the epochs waited,
    the cool-down) travel in the resume state (`state`, `ResumeCheckpoint`), so that a
    resumed run lowers the rate at the epochs an uninterrupted one does: Keras' callback
    starts counting afresh at each `fit`.

    Args:
        state: the counters of `state()` to continue from (a resumed run's), or None.
        **kwargs: as `keras.callbacks.ReduceLROnPlateau`.
    """

    def __init__(self, state=None, **kwargs):
        super().__init__(**kwargs)
        self.restored = state

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)  # Keras resets the counters here
        if self.restored:
            self.best = self.restored["best"]
            self.wait = int(self.restored["wait"])
            self.cooldown_counter = int(self.restored["cooldown_counter"])

    def state(self) -> dict:
        """The counters as JSON numbers (None for no finite best value yet)."""
        best = None if self.best is None else float(self.best)
        return {
            "best": best if best is not None and math.isfinite(best) else None,
            "wait": int(self.wait),
            "cooldown_counter": int(self.cooldown_counter),
        }


class ResumeCheckpoint(keras.callbacks.Callback):
    """Saves weights and optimizer state every `every_steps` steps and at each epoch end.

    The state file names the weights file it belongs to and is renamed into place only after
    that file is complete; the previous weights file is deleted last. A run killed at any
    moment therefore resumes from a consistent (weights, step) pair. Nothing is saved once the
    loss is not finite, so the last checkpoint stays the last good one.

    At an epoch end the state records the best value `best` is about to save *before*
    `best.keras` is written (this callback runs first): the recorded best is never below the
    model in `best.keras`, so a resumed run replaces it only with a better one.

    Args:
        directory: folder of the resume state.
        every_steps: save interval in optimizer steps (a positive int); None saves at epoch
            ends only.
        best: the `BestCheckpoint` whose best value must survive a restart, or None.
        statistics: the run's `ReplicaStatistics`, averaged before each save, or None.
        plateau: the run's `ResumablePlateau`, whose counters are saved too, or None.
    """

    def __init__(self, directory, every_steps=None, best=None, statistics=None, plateau=None):
        super().__init__()
        check_int("ResumeCheckpoint: every_steps", every_steps, none_ok=True)
        for argument, value, kind in (
            ("best", best, BestCheckpoint),
            ("statistics", statistics, ReplicaStatistics),
            ("plateau", plateau, ResumablePlateau),
        ):
            if value is not None and not isinstance(value, kind):
                raise ValueError(
                    f"ResumeCheckpoint: {argument}={value!r} is not valid; expected a "
                    f"{kind.__name__} or None."
                )
        self.directory = check_output_path("ResumeCheckpoint: directory", directory, folder=True)
        self.every_steps = every_steps
        self.best = best
        self.statistics = statistics
        self.plateau = plateau
        self.finite = True
        self.epoch_start = 0
        # Saving between steps must block the loop; without step saves the batch hook does
        # nothing, and Keras may then run batch callbacks off the training loop's thread.
        self.async_safe = every_steps is None

    def _step(self):
        return iterations(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = iterations(self.model)

    def save(self, best=None, metrics=False):
        """Saves weights and state; `best` overrides the value recorded from `self.best`;
        `metrics`: record the metrics' state (inside an epoch, for `RestoreMetrics`)."""
        if self.statistics is not None:
            self.statistics.average()  # on every worker, before any of them may return
        # The loss logged at a step predates that step's update: check the weights themselves.
        if not self.finite or not weights_finite(self.model):
            self.finite = False
            return
        # No mkdir here: `atomic_path` makes the folder once a run folder has recorded it as
        # the package's (`OutputFolder.claim`), so a kill in between leaves no unclaimed folder.
        step = self._step()
        previous = read_resume_state(self.directory)
        weights = f"step{step}.weights.h5"
        with atomic_path(self.directory / weights) as tmp, run_state(self.model):
            self.model.save_weights(tmp)
        lora = save_lora_state(self.model, self.directory, step)
        if best is None and self.best is not None:
            best = self.best.best
        best = best if best is not None and math.isfinite(best) else None
        state = {"step": step, "weights": weights, "best": best}
        if metrics:
            state["metrics"] = metrics_state(self.model)
        if self.plateau is not None:
            state["plateau"] = self.plateau.state()
        if lora is not None:
            state["lora"] = lora
        write_json(self.directory / STATE_FILE, state)
        for kind in ("weights", "lora"):
            if previous and previous.get(kind) not in (None, state.get(kind)):
                (self.directory / previous[kind]).unlink(missing_ok=True)

    def on_train_batch_end(self, batch, logs=None):
        # Steps are counted here rather than read from the optimizer: reading a device value
        # at every step would make the host wait for the device.
        if self.every_steps and (self.epoch_start + batch + 1) % self.every_steps == 0:
            self.save(metrics=True)

    def on_epoch_end(self, epoch, logs=None):
        # The epoch's mean loss is NaN/inf when any step's was.
        if not math.isfinite((logs or {}).get("loss", 0.0)):
            self.finite = False
        self.save(self.best.candidate(logs) if self.best is not None else None)


def metrics_state(model) -> list:
    """The values of `model`'s metric variables (the running sums of its logged loss and
    metrics), flat, as floats."""
    values = [_read(variable) for variable in model.metrics_variables]
    return [float(x) for value in values for x in np.ravel(value)]


def _read(variable):
    """A metric variable's value; under a `tf.distribute` strategy, summed over the replicas
    (its aggregation)."""
    value = variable.value
    read = getattr(value, "read_value", None)  # TensorFlow's variables, distributed or not
    return np.asarray(read() if read is not None else keras.ops.convert_to_numpy(value))


def _assign(variable, value):
    """Sets a metric variable to `value`; under a `tf.distribute` strategy, where a variable
    summed over the replicas takes no cross-replica assignment, the first replica's part to
    `value` and the others' to 0."""
    parts = getattr(variable.value, "values", None)  # a TensorFlow distributed variable's
    if not isinstance(parts, (tuple, list)) or len(parts) < 2:
        variable.assign(value)
        return
    for index, part in enumerate(parts):
        part.assign(value if index == 0 else np.zeros_like(value))


class RestoreMetrics(keras.callbacks.Callback):
    """Gives the metrics, when the first epoch of a resumed run begins (after `fit` has reset
    them), the state `ResumeCheckpoint` saved at that step: the epoch's logged loss and
    metrics then average all its steps, as in a run never interrupted. `values`: that state
    (`metrics_state`), or None (nothing to restore)."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_begin(self, epoch, logs=None):
        if self.values is None:
            return
        variables = self.model.metrics_variables
        sizes = [int(np.prod(v.shape)) for v in variables]
        if sum(sizes) == len(self.values):  # else other metrics: the epoch starts afresh
            start = 0
            for variable, size in zip(variables, sizes, strict=True):
                value = np.reshape(self.values[start : start + size], variable.shape)
                _assign(variable, value.astype(variable.dtype))
                start += size
        self.values = None


class BestCheckpoint(keras.callbacks.Callback):
    """Saves `best.keras` whenever the monitored validation metric beats the best so far; an
    optimizer's moving average of the weights (`use_ema`), what was validated, is saved.

    An epoch whose training loss or weights are not finite is never saved, however its
    validation metric looks (a diverged model can still score above chance).

    Args:
        path: the `.keras` file.
        monitor: the key of the epoch's logs to maximize (validation data must be given to
            `fit` for "val_accuracy").
        best: the value a model must beat to be saved (a resumed run's best), or None.

    Raises:
        ValueError: an argument of another type; at an epoch's end, `monitor` missing from
            the epoch's logs (the callback could never save), naming the keys there are.
    """

    def __init__(self, path, monitor="val_accuracy", best=None):
        super().__init__()
        path = check_output_path("BestCheckpoint: path", path)
        if path.suffix != ".keras":
            raise ValueError(
                f"BestCheckpoint: path={str(path)!r} has suffix {path.suffix!r}; expected a "
                ".keras file."
            )
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(
                f"BestCheckpoint: monitor={monitor!r} is not valid; expected the name of a "
                "logged metric, e.g. 'val_accuracy'."
            )
        finite = isinstance(best, numbers.Real) and not isinstance(best, bool)
        if best is not None and not (finite and math.isfinite(best)):
            raise ValueError(
                f"BestCheckpoint: best={best!r} is not valid; expected a finite number or None."
            )
        self.path, self.monitor = path, monitor
        self.best = -math.inf if best is None else float(best)

    def candidate(self, logs):
        """The value this epoch's `logs` would be saved with, or None if it saves nothing."""
        logs = logs or {}
        value, loss = logs.get(self.monitor), logs.get("loss", 0.0)
        if value is None or not math.isfinite(value) or value <= self.best:
            return None
        if not math.isfinite(loss) or not weights_finite(self.model):
            return None
        return float(value)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(
                f"BestCheckpoint: monitor={self.monitor!r} is not in the epoch's logs, whose "
                f"keys are {sorted(logs)}; it would never save. Monitor one of them (a "
                "'val_' metric needs validation data)."
            )
        value = self.candidate(logs)
        if value is not None:
            self.best = value
            with averaged_weights(self.model):
                save_model(self.model, self.path)


class NanGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and remembers the step.

    Keras may call it off the training loop's thread (`async_safe`): reading each step's loss
    then costs the loop no wait for the device, and the loop stops within a step or two.
    """

    async_safe = True

    def __init__(self):
        super().__init__()
        self.bad_step = None
        self.epoch_start = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = iterations(self.model)

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            step = self.epoch_start + batch + 1
            self.bad_step = step if self.bad_step is None else min(self.bad_step, step)
            # Not `self.model`: on JAX that property syncs the training state into the
            # model, which from this thread races the step that donates those buffers.
            self._model.stop_training = True


class StopAtStep(keras.callbacks.Callback):
    """Stops training after global step `total_steps`, inside an epoch if need be: recipes
    that count iterations (64k for the CIFAR ResNets) end on the step, not on an epoch.

    Args:
        total_steps: the last step of the run (a positive int).
        start_step: the global step `fit` starts from (a resumed run's; an int >= 0).
    """

    def __init__(self, total_steps, start_step=0):
        super().__init__()
        check_int("StopAtStep: total_steps", total_steps)
        check_int("StopAtStep: start_step", start_step, 0)
        self.total_steps = total_steps
        self.step = start_step

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step >= self.total_steps:
            self._model.stop_training = True
