"""A run's `model.fit`: its callbacks, its checked input pipelines, the restore of a resume
state, and a `fit` that starts at any step on the batches of an uninterrupted run."""

import contextlib
import itertools
import time
import warnings
from types import SimpleNamespace

import keras

from keras_resvit.base.files import first_line
from keras_resvit.base.keras_fixes import patch_keras_fit
from keras_resvit.base.lazy import tf
from keras_resvit.data.checks import CheckedBatches, check_batches, data_errors, has_soft_labels
from keras_resvit.training.callbacks import (
    BestCheckpoint,
    NanGuard,
    ReplicaStatistics,
    RestoreMetrics,
    ResumablePlateau,
    ResumeCheckpoint,
    RunCallbacks,
    StopAtStep,
    SwapEMAWeights,
    averages_weights,
    iterations,
)
from keras_resvit.training.history_csv import HistoryCSV
from keras_resvit.training.lora_state import restore_lora_state
from keras_resvit.training.run_folder import RESUME_DIR


def plateau_callback(recipe, validates, state=None):
    """A "plateau" recipe's schedule: /10 after `recipe.patience` epochs without a better
    validation accuracy (the training loss without validation data); `state`: a resumed
    run's counters."""
    monitor = ("val_accuracy", "max") if validates else ("loss", "min")
    return ResumablePlateau(
        state, monitor=monitor[0], mode=monitor[1], factor=0.1, patience=recipe.patience,
        verbose=1,
    )  # fmt: skip


def restore(model, out, resume):
    """Loads the weights and optimizer state of `resume` into the compiled `model`."""
    if not model.optimizer.built:  # a LossScaleOptimizer built twice has its state twice
        model.optimizer.build(model.trainable_variables)
    weights = out / RESUME_DIR / resume["weights"]
    try:
        model.load_weights(weights)
    except Exception as error:  # noqa: BLE001 - h5py and shape errors alike
        raise ValueError(
            f"resume weights {str(weights)!r} cannot be loaded ({first_line(error)}); "
            "start afresh with overwrite=True (keras-resvit train --overwrite) or a new "
            "output_dir."
        ) from None
    lora = resume.get("lora")
    restore_lora_state(model, None if lora is None else out / RESUME_DIR / lora)


def run_callbacks(recipe, out, data, user, start, save_every, tensorboard):
    """The run's callbacks (`user.callbacks` first, then train()'s own) for a `fit` from
    `start`: (step, best validation accuracy so far, the metrics' state at that step inside
    its epoch, a plateau schedule's counters), (0, None, None, None) for a fresh run. Returns
    a namespace of them `all`, the `nan_guard` and the `best_checkpoint`."""
    start_step, best, metrics, plateau_state = start
    plateau = None
    if recipe.schedule == "plateau" and user.optimizer is None:
        plateau = plateau_callback(recipe, data.val is not None, plateau_state)
    best_checkpoint = BestCheckpoint(out / "best.keras", best=best)
    nan_guard = NanGuard()
    statistics = ReplicaStatistics()
    # Replicas' BatchNorm statistics averaged first, so that every callback (the user's
    # checkpoints too) sees the ones validation uses. Then the user's callbacks: a rate one
    # sets when an epoch begins is the rate history.csv records. ResumeCheckpoint before
    # BestCheckpoint: the resume state records a new best value before best.keras is
    # replaced, so a restart never saves a worse one.
    first_epoch = start_step // data.steps_per_epoch
    callbacks = [
        # The resumed epoch's logged loss and accuracy over all its steps, those before the
        # resume included.
        RestoreMetrics(metrics),
        statistics,
        *user.callbacks,
        nan_guard,
        ResumeCheckpoint(out / RESUME_DIR, save_every, best_checkpoint, statistics, plateau),
        HistoryCSV(out / "history.csv", data.steps_per_epoch, first_epoch=first_epoch),
    ]
    if data.val is not None:
        callbacks.append(best_checkpoint)
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(out / "tensorboard")))
    if plateau is not None:
        # Before the checkpoints: the epoch's saves then hold the lowered rate.
        callbacks.insert(callbacks.index(nan_guard), plateau)
    if data.total_steps < data.epochs * data.steps_per_epoch:
        callbacks.insert(0, StopAtStep(data.total_steps, start_step))
    return SimpleNamespace(all=callbacks, nan_guard=nan_guard, best_checkpoint=best_checkpoint)


def _one_hot_labels(data, classes):
    """A dataset of (images, integer labels) with one-hot labels; soft labels pass through."""
    if has_soft_labels(data):
        return data
    return data.map(lambda x, y: (x, tf.one_hot(tf.cast(y, "int32"), classes)))


def _checked_val(val_data, classes, one_hot, image_shape, split_over):
    """The validation batches checked, whichever kind the training batches are."""
    if val_data is None:
        return None
    if isinstance(val_data, keras.utils.PyDataset):
        return CheckedBatches(
            val_data, classes, "val_data", one_hot=one_hot, image_shape=image_shape,
            split_over=split_over,
        )  # fmt: skip
    val_data = check_batches(val_data, classes, "val_data", image_shape, split_over)
    return _one_hot_labels(val_data, classes) if one_hot else val_data


def checked_pipelines(data, classes, one_hot, image_shape=None, split_over=1):
    """(train, val) datasets whose every batch is checked (`check_batches`) for a classifier
    of `classes` outputs and a split over `split_over` devices, with one-hot labels where the
    loss is categorical (`one_hot`).
    A `keras.utils.PyDataset` stays one: train is then a factory of `CheckedBatches`,
    `(epoch, start) -> PyDataset` (from batch `start` of `epoch`); val is checked as what it
    is (a `PyDataset` or a `tf.data` dataset), whatever train is. A `PyDataset`'s every batch
    must have images of `image_shape` (the model's), and a `tf.data` dataset's every batch
    where it declares a size unknown."""
    val_data = _checked_val(data.val, classes, one_hot, image_shape, split_over)
    if isinstance(data.train, keras.utils.PyDataset):

        def train_data(epoch, start):
            return CheckedBatches(
                data.train, classes, "train_data", one_hot=one_hot, image_shape=image_shape,
                split_over=split_over, epoch=epoch, start=start,
            )  # fmt: skip

        return train_data, val_data

    def checked(batches):
        batches = check_batches(batches, classes, "train_data", image_shape, split_over)
        return _one_hot_labels(batches, classes) if one_hot else batches

    train_data = checked(data.train)
    from_step = getattr(data.train, "from_step", None)
    if from_step is not None:  # the run's batches from any step, each epoch checked
        train_data.from_step = lambda step: from_step(step, checked)
    return train_data, val_data


def _batches(iterator):
    """A generator over one live tf.data iterator, so that several `fit` calls continue the
    same stream (a new iterator would draw new shuffle seeds)."""
    for images, labels in iterator:
        yield images.numpy(), labels.numpy()


def _take(batches, count):
    """The next `count` of `batches`, as a generator that ends there: `fit` reads ahead of
    its steps (TensorFlow prefetches), which must not consume the following call's."""
    yield from itertools.islice(batches, count)


@contextlib.contextmanager
def _continued(model):
    """For a `fit` call that another one of the run follows: its end must not replace the
    trained weights by their moving average (`use_ema`), from which the next would go on;
    unless a callback stopped the run, which then ends here."""
    optimizer = model.optimizer
    own = optimizer.__dict__.get("finalize_variable_values")  # `ema_statistics`' if any
    optimizer.finalize_variable_values = lambda var_list: None
    try:
        yield
    finally:
        del optimizer.finalize_variable_values
        if own is not None:
            optimizer.finalize_variable_values = own
    if model.stop_training:
        optimizer.finalize_variable_values(model.trainable_variables)


def _fit_from(
    model,
    data,
    steps_per_epoch,
    epochs,
    start_step,
    callbacks,
    feed=None,
    stream=None,
    **fit_kwargs,
):
    """Runs `fit` from global step `start_step` over `data` (which repeats, reshuffling each
    pass) with `callbacks` (a `RunCallbacks`); returns the run's `History`.

    `stream(step)`, where given (`load_dataset`'s `from_step`: `epochs.Epochs.run`), makes
    the run's batches from its step-th on at once, each from its place in the run. Otherwise
    skipping the steps already taken replays exactly the batches an uninterrupted run sees
    (making every one of them again). A resume inside an epoch finishes that epoch, then the
    rest, on one iterator. `feed` (see `local_input`) turns each dataset into the one `fit`
    reads; a resume inside an epoch then reads the rest of that epoch, and nothing beyond
    it, from one pipeline and the following epochs from a second one: `stream` from the next
    epoch, or a second pass over `data`, whose random orders and draws (`shuffle`,
    `Dataset.random`) move on with each pass, whichever pipeline makes it (test_fitting.py).
    """
    fit_kwargs.update(shuffle=False, callbacks=callbacks)  # the dataset shuffles itself
    patch_keras_fit()  # `fit` draws no batch before the run
    fed = feed or (lambda dataset: dataset)
    first_epoch, done = divmod(start_step, steps_per_epoch)

    def following():  # the epochs after the first, from a second pipeline
        return data if stream is None else stream((first_epoch + 1) * steps_per_epoch)

    first = data.skip(start_step) if stream is None else stream(start_step)
    if not done:
        return model.fit(
            fed(first),
            initial_epoch=first_epoch,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            **fit_kwargs,
        )
    # A distributed dataset is not an iterator that two `fit` calls can share.
    batches = _batches(iter(first)) if feed is None else None
    callbacks.more = first_epoch + 1 < epochs
    with _continued(model) if callbacks.more else contextlib.nullcontext():
        rest = steps_per_epoch - done
        history = model.fit(
            fed(first.take(rest)) if feed else _take(batches, rest),
            initial_epoch=first_epoch,
            epochs=first_epoch + 1,
            steps_per_epoch=rest,
            **fit_kwargs,
        )
    if callbacks.more and not model.stop_training:
        callbacks.more = False
        history = model.fit(
            fed(following()) if feed else batches,
            initial_epoch=first_epoch + 1,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            **fit_kwargs,
        )
    return history


def _fit_py_dataset(model, batches, steps_per_epoch, epochs, start_step, callbacks, **fit_kwargs):
    """`_fit_from` over a `keras.utils.PyDataset`: `batches(epoch, start)` gives the checked
    batches (`CheckedBatches`) from batch `start` of `epoch` on, so a resumed run reads the
    batches an uninterrupted one would (a data with an `epoch` attribute, as
    `kr.data.ImageLoader`, whose augmentations draw from seeds of each batch's own)."""
    fit_kwargs.update(shuffle=False, callbacks=callbacks)
    patch_keras_fit()
    first_epoch, done = divmod(start_step, steps_per_epoch)
    if not done:
        data = batches(first_epoch, 0)
        return model.fit(data, initial_epoch=first_epoch, epochs=epochs, **fit_kwargs)
    # The rest of the interrupted epoch, then the following epochs from their first batch.
    callbacks.more = first_epoch + 1 < epochs
    rest = batches(first_epoch, done)
    with _continued(model) if callbacks.more else contextlib.nullcontext():
        history = model.fit(rest, initial_epoch=first_epoch, epochs=first_epoch + 1, **fit_kwargs)
    if callbacks.more and not model.stop_training:
        callbacks.more = False
        data = batches(first_epoch + 1, 0)
        history = model.fit(data, initial_epoch=first_epoch + 1, epochs=epochs, **fit_kwargs)
    return history


def fit_run(model, data, pipelines, callbacks, start_step, verbose, feeds=(None, None)):
    """Fits the rest of the run from `start_step` over `pipelines` (from `checked_pipelines`)
    with `callbacks` (from `run_callbacks`) and `feeds` (train, val; see `local_input`);
    returns its figures."""
    start, total = start_step, data.total_steps
    if start and verbose != 0:
        epoch = min(start // data.steps_per_epoch + 1, data.epochs)
        rest = f"{total - start} steps to go" if start < total else "no steps to go"
        print(f"train: resuming from step {start} (epoch {epoch}): {rest}")
    started = time.perf_counter()
    history = None
    if start >= total:  # killed after its last save, before it finished
        # What the end of its last `fit` did: the weights become their moving average.
        model.optimizer.finalize_variable_values(model.trainable_variables)
    else:
        train_data, val_data = pipelines
        with data_errors(), warnings.catch_warnings():
            # Validation data of unknown size (an image folder) ends each epoch's validation
            # by running out, which `fit` reports as if the training data had; the training
            # stream repeats, so it never runs out.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            # Validation scores the weights the run saves: their moving average, if kept.
            swap = []
            if averages_weights(model.optimizer) and val_data is not None:
                swap.append(SwapEMAWeights())
            run = RunCallbacks(
                swap + callbacks.all,
                model,
                epochs=data.epochs,
                steps=data.steps_per_epoch,
                verbose=verbose,
            )
            feed_train, feed_val = feeds
            if feed_val is not None:
                val_data = feed_val(val_data)
            arguments = dict(validation_data=val_data, verbose=verbose)
            with run.waited_for():
                if callable(train_data):  # a PyDataset factory
                    history = _fit_py_dataset(
                        model, train_data, data.steps_per_epoch, data.epochs, start, run,
                        **arguments,
                    )  # fmt: skip
                else:
                    history = _fit_from(
                        model, train_data.repeat(), data.steps_per_epoch, data.epochs, start,
                        run, feed=feed_train, stream=getattr(train_data, "from_step", None),
                        **arguments,
                    )  # fmt: skip
    if averages_weights(model.optimizer):
        # The weights now share their average's arrays; copies of their own let the model
        # train on (under JAX a `fit` would otherwise donate one array twice).
        for variable in model.trainable_variables:
            variable.assign(keras.ops.convert_to_numpy(variable))
    return SimpleNamespace(
        history=history,
        seconds=time.perf_counter() - started,
        start_step=start,
        end_step=iterations(model),
        steps_per_epoch=data.steps_per_epoch,
        batch_size=data.batch_size,
        bad_step=callbacks.nan_guard.bad_step,
        best=callbacks.best_checkpoint.best,
    )
