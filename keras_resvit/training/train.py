"""`train()`: a paper's recipe, `model.fit` under the detected distribution, resumable."""

import importlib.util
import inspect
import json
import math
import time
import warnings
from types import SimpleNamespace

import keras
import numpy as np

from keras_resvit.base.backend import backend, dtype_policy
from keras_resvit.base.class_names import set_class_names, write_class_names
from keras_resvit.base.files import check_output_path, first_line, write_json
from keras_resvit.base.lazy import tf
from keras_resvit.base.model_files import save_model
from keras_resvit.base.output_folders import output_folder
from keras_resvit.data.checks import (
    check_batches,
    check_class_count,
    check_class_names_match,
    check_pixels,
    data_errors,
)
from keras_resvit.data.datasets import load_dataset
from keras_resvit.factory import create_model
from keras_resvit.layers.preprocessing import PixelMean
from keras_resvit.models.common import check_classifier, is_vit, outputs_logits
from keras_resvit.models.registry import get_spec
from keras_resvit.models.vit import resize_vit
from keras_resvit.training.callbacks import (
    BestCheckpoint,
    HistoryCSV,
    NanGuard,
    ResumeCheckpoint,
    RunCallbacks,
    StopAtStep,
    follows_schedule,
    iterations,
    read_history,
)
from keras_resvit.training.distribution import place, resolve_precision
from keras_resvit.training.optimizers import recipe_optimizer
from keras_resvit.training.recipes import Recipe, get_recipe, recipe_model_options
from keras_resvit.training.run_folder import (
    CONFIG_FILE,
    RESUME_DIR,
    RUN_FILES,
    clear_resume_state,
    clear_run,
    previous_run,
    read_resume_state,
    resume_state,
    run_record,
)
from keras_resvit.training.schedules import recipe_schedule, recipe_steps


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def build_optimizer(recipe, global_batch_size, total_steps, ema=None):
    """The recipe's optimizer (its weight decay mode, clipping and exclusions) around its
    schedule for a run of `total_steps` steps of `global_batch_size`, with an optional EMA."""
    if recipe.schedule == "plateau":  # a rate that `plateau_callback` lowers
        rate = recipe.learning_rate * global_batch_size / recipe.batch_size
        return recipe_optimizer(recipe, rate, ema)
    schedule = recipe_schedule(recipe, global_batch_size, total_steps)
    return recipe_optimizer(recipe, schedule, ema)


def plateau_callback(recipe, validates):
    """A "plateau" recipe's schedule: /10 after `recipe.patience` epochs without a better
    validation accuracy (the training loss without validation data)."""
    monitor = ("val_accuracy", "max") if validates else ("loss", "min")
    return keras.callbacks.ReduceLROnPlateau(
        monitor=monitor[0], mode=monitor[1], factor=0.1, patience=recipe.patience, verbose=1
    )


def _check_positive(argument, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{argument}={value!r} must be a positive int.")


def _check_number(argument, value, low, high=math.inf):
    """`value` must be a real number with low < value < high (None allowed: the default)."""
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low < value < high:
        interval = f"in ({low}, {high})" if high != math.inf else f"> {low}"
        raise ValueError(f"{argument}={value!r} must be a number {interval}.")


def _check_optimizer(optimizer, learning_rate, ema):
    """`optimizer` (an instance or a Keras name) as a fresh optimizer instance, or None."""
    if optimizer is None:
        return None
    given = optimizer
    if isinstance(optimizer, str):
        try:
            optimizer = keras.optimizers.get(optimizer)
        except ValueError:
            optimizer = None
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ValueError(
            f"optimizer={given!r} is not valid; pass a keras.optimizers.Optimizer instance "
            "(e.g. keras.optimizers.AdamW(1e-3)), a Keras optimizer name ('adam', 'sgd', ...) "
            "or None (the recipe's)."
        )
    if optimizer.built:
        raise ValueError(
            f"optimizer={type(optimizer).__name__} instance has already been used on a model; "
            "pass a new instance."
        )
    for argument, value in (("learning_rate", learning_rate), ("ema", ema)):
        if value is not None:
            raise ValueError(
                f"{argument}={value!r} applies to the recipe's optimizer, not to optimizer="
                f"{type(optimizer).__name__}: set it on that optimizer (learning_rate=, "
                "use_ema=True with ema_momentum=)."
            )
    return optimizer


def _check_loss(loss):
    valid = (
        "pass a keras.losses.Loss instance (e.g. keras.losses.CategoricalFocalCrossentropy()), "
        "a Keras loss name ('sparse_categorical_crossentropy', ...), a function "
        "(y_true, y_pred) -> loss, or None (the recipe's)"
    )
    if isinstance(loss, str):
        try:
            keras.losses.get(loss)
        except ValueError:
            raise ValueError(f"loss={loss!r} is not a Keras loss name; {valid}.") from None
    elif loss is not None and (isinstance(loss, type) or not callable(loss)):
        raise ValueError(f"loss={loss!r} is not valid; {valid}.")


def _check_loss_outputs(loss, model):
    """A loss whose `from_logits` disagrees with the classifier's activation trains on wrong
    numbers without an error: refuse it."""
    resolved = keras.losses.get(loss) if isinstance(loss, str) else loss
    if isinstance(resolved, keras.losses.Loss):
        wanted = resolved.get_config().get("from_logits")
    else:
        try:
            parameter = inspect.signature(resolved).parameters.get("from_logits")
        except (TypeError, ValueError):  # a callable Python cannot inspect: trust it
            parameter = None
        wanted = None if parameter is None else parameter.default
    logits = outputs_logits(model)
    if wanted is not None and wanted != logits:
        name = loss if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)
        outputs = "logits" if logits else "softmax probabilities"
        raise ValueError(
            f"loss={name!r} has from_logits={wanted} but the model outputs {outputs}; pass "
            f"a loss with from_logits={logits}."
        )


def _check_callbacks(callbacks, schedule):
    """The user's callbacks as a list; `schedule`: whether the optimizer follows a schedule."""
    if callbacks is None:
        return []
    valid = (
        "pass a list of keras.callbacks.Callback instances, e.g. "
        "[keras.callbacks.EarlyStopping(patience=3)]"
    )
    if not isinstance(callbacks, (list, tuple)):
        raise ValueError(f"callbacks={callbacks!r} is not valid; {valid}.")
    setters = (keras.callbacks.LearningRateScheduler, keras.callbacks.ReduceLROnPlateau)
    for index, callback in enumerate(callbacks):
        if not isinstance(callback, keras.callbacks.Callback):
            raise ValueError(f"callbacks[{index}]={callback!r} is not valid; {valid}.")
        if isinstance(callback, keras.callbacks.BackupAndRestore):
            raise ValueError(
                f"callbacks[{index}]={callback!r} is not valid: train() saves and resumes its "
                "runs itself (output_dir/resume, save_every=); leave BackupAndRestore out."
            )
        if schedule and isinstance(callback, setters):
            raise ValueError(
                f"callbacks[{index}]={callback!r} sets the learning rate, but the optimizer's "
                "rate follows a schedule (the recipe's, or that of optimizer=); pass optimizer= "
                "with a constant rate, e.g. keras.optimizers.SGD(0.1, momentum=0.9)."
            )
    return list(callbacks)


def _described(obj):
    """A user's optimizer or loss as JSON for the run's record (None: the recipe's): what a
    resumed run must match."""
    if obj is None or isinstance(obj, str):
        return obj
    if not isinstance(obj, (keras.optimizers.Optimizer, keras.losses.Loss)):
        return f"{obj.__module__}.{obj.__qualname__}"  # a loss function
    # Keras numbers the names of unnamed instances per process ("adam_1"): leave them out.
    config = {key: value for key, value in obj.get_config().items() if key != "name"}
    return json.loads(json.dumps({"class_name": type(obj).__name__, **config}, default=repr))


def _check_dataset(argument, data):
    if not isinstance(data, tf.data.Dataset):
        raise ValueError(
            f"{argument} of type {type(data).__name__} is not valid; pass a batched "
            "tf.data.Dataset of (images, labels), e.g. from kr.data.load_dataset, or an "
            "(images, labels) tuple of arrays."
        )
    spec = data.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2 or len(spec[0].shape) != 4:
        raise ValueError(
            f"{argument} yields {spec}; expected batches of (images (batch, height, width, "
            "channels), labels): batch the dataset, e.g. with .batch(32)."
        )
    labels = spec[1]
    rank, integer = len(labels.shape), labels.dtype.is_integer
    valid = (rank == 1 and (integer or labels.dtype.is_floating)) or (
        rank == 2 and labels.dtype.is_floating and labels.shape[-1] != 1
    )
    if not valid:
        raise ValueError(
            f"{argument} has labels of dtype {labels.dtype.name} and shape {labels.shape}; "
            "expected class indices (batch,) or float class probabilities (batch, classes). "
            "Squeeze (batch, 1) labels, cast one-hot labels to float32."
        )


def _as_dataset(argument, data, split, batch_size, seed):
    """`data` as a dataset: an (images, labels) tuple of arrays goes through
    `kr.data.load_dataset` (shuffled every epoch for training, never augmented), whose
    `provenance` (a hash of the arrays) lets a run resume only on the same arrays."""
    if not isinstance(data, tuple):
        return data
    try:
        images, labels = (np.asarray(array) for array in data)
    except ValueError:  # not two arrays, or ragged ones
        images = labels = None
    if images is None or images.ndim != 4 or labels.shape != images.shape[:1] or not len(images):
        shapes = [getattr(np.asarray(a, dtype=object), "shape", None) for a in data]
        raise ValueError(
            f"{argument} holds {len(data)} arrays of shapes {shapes}; expected an (images, "
            "labels) pair of arrays: images (N, height, width, channels) and N integer class "
            "indices, N >= 1 (squeeze (N, 1) labels; one-hot labels: labels.argmax(-1); grey "
            "images: add a channel axis, x[..., None])."
        )
    try:
        return load_dataset((images, labels), split, batch_size=batch_size, seed=seed)
    except ValueError as error:
        raise ValueError(f"{argument}: {error}") from None


def _dataset_info(train_data):
    _check_dataset("train_data", train_data)
    steps = int(train_data.cardinality())
    if steps == tf.data.UNKNOWN_CARDINALITY:
        # An image folder drops files it cannot decode (as does .filter()): count one pass.
        steps = int(train_data.reduce(np.int64(0), lambda count, *_: count + 1))
    if steps <= 0:
        raise ValueError(
            f"train_data has {steps} batches per epoch; it must be finite and non-empty "
            "(do not .repeat() it: train() repeats it)."
        )
    first = tuple(t.numpy() for t in next(iter(train_data)))
    return first, steps, len(train_data.element_spec[1].shape) == 2


def _check_labels(model, train_data, labels, soft_labels):
    """Labels the classifier cannot score fail here, not as a backend error (TensorFlow) or
    a silently wrong loss (JAX) in the middle of `fit`."""
    classes = model.output_shape[-1]
    if soft_labels:
        if labels.shape[-1] != classes:
            raise ValueError(
                f"train_data has soft labels over {labels.shape[-1]} classes but the model's "
                f"classifier has {classes} outputs; use kr.replace_head(model, "
                f"{labels.shape[-1]})."
            )
        return
    declared = getattr(train_data, "num_classes", None) or 0
    low, high = int(labels.min()), max(int(labels.max()), declared - 1)
    if low < 0 or high >= classes:
        raise ValueError(
            f"train_data has labels from {low} to {high} but the model's classifier has "
            f"{classes} outputs (valid labels 0 to {classes - 1}); use "
            f"kr.replace_head(model, {high + 1}) or num_classes={high + 1}."
        )


def _one_hot_labels(data, classes):
    """A dataset of (images, integer labels) with one-hot labels; soft labels pass through."""
    if len(data.element_spec[1].shape) == 2:
        return data
    return data.map(lambda x, y: (x, tf.one_hot(tf.cast(y, "int32"), classes)))


def _loss(model, soft_labels, label_smoothing):
    from_logits = outputs_logits(model)
    if soft_labels:
        # MixUp/CutMix pipelines (kr.data) already smooth the labels they mix.
        return keras.losses.CategoricalCrossentropy(from_logits=from_logits)
    if label_smoothing:
        return keras.losses.CategoricalCrossentropy(
            from_logits=from_logits, label_smoothing=label_smoothing
        )
    return keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)


def compile_model(
    model,
    recipe,
    global_batch_size,
    total_steps,
    *,
    soft_labels=False,
    ema=None,
    optimizer=None,
    loss=None,
):
    """Compiles `model` as `train()` does: the recipe's optimizer, schedule and loss (or the
    `optimizer` and `loss` given instead), and accuracy.

    Args:
        model: a `keras.Model` (built under the distribution scope that will train it).
        recipe: a `Recipe`.
        global_batch_size: images per optimizer step over all replicas (scales the rate).
        total_steps: optimizer steps of the whole run (the schedule's length).
        soft_labels: labels are one-hot or mixed probabilities rather than class indices.
        ema: momentum of a weight EMA, or None.
        optimizer: a Keras optimizer used instead of the recipe's, or None.
        loss: a Keras loss (or its name) used instead of the recipe's, or None.

    Example:
    >>> import keras_resvit as kr
    >>> from keras_resvit.training.recipes import get_recipe
    >>> model = kr.create_model("resnet20")
    >>> compile_model(model, get_recipe("resnet_cifar"), 128, 1000)
    """
    if optimizer is None:
        optimizer = build_optimizer(recipe, global_batch_size, total_steps, ema)
    model.compile(
        optimizer=optimizer,
        loss=_loss(model, soft_labels, recipe.label_smoothing) if loss is None else loss,
        metrics=["accuracy"],
    )


def _carry_class_names(model, train_data):
    """Gives `model` the class names of `train_data` (one per output), so that the checkpoints
    and the returned model carry them (`kr.files.save_model`)."""
    names = getattr(train_data, "class_names", None)
    if names and len(names) == model.output_shape[-1]:
        set_class_names(model, [str(name) for name in names])


def _in_scope(optimizer, placement):
    """The user's optimizer, rebuilt from its config inside the distribution's scope (as the
    model is) when several replicas train: its variables must be the strategy's."""
    if optimizer is None or placement.num_replicas == 1:
        return optimizer
    return type(optimizer).from_config(optimizer.get_config())


def _model(model_or_name, recipe, placement):
    if isinstance(model_or_name, str):
        return create_model(model_or_name, **recipe_model_options(model_or_name, recipe))
    if not isinstance(model_or_name, keras.Model):
        raise ValueError(
            f"model_or_name of type {type(model_or_name).__name__} is not valid; pass a "
            "keras.Model or a registry name (kr.list_models())."
        )
    if placement.num_replicas == 1:
        return model_or_name
    # Variables must be created under the strategy: rebuild the model inside its scope.
    clone = keras.models.clone_model(model_or_name)
    clone.set_weights(model_or_name.get_weights())
    return clone


def _adapt_pixel_means(model, train_data):
    """Sets the mean image of every un-adapted `PixelMean` from the training images before
    augmentation (He et al.: "the per-pixel mean subtracted"), or refuses the model."""
    layers = [layer for layer in model.layers if isinstance(layer, PixelMean) and not layer.adapted]
    if not layers:
        return
    source = getattr(train_data, "unaugmented", None)
    if source is None:
        raise ValueError(
            f"the model's PixelMean layer {layers[0].name!r} has no mean yet and train_data "
            "does not carry its images without augmentation; load the data with "
            "kr.data.load_dataset, or call model.get_layer"
            f"({layers[0].name!r}).adapt(training_images) first."
        )
    for layer in layers:
        layer.adapt(source)
    print(f"train: per-pixel mean of {int(layers[0].count.numpy())} training images set")


def _batches(iterator):
    """A generator over one live tf.data iterator, so that several `fit` calls continue the
    same stream (a new iterator would draw new shuffle seeds)."""
    for images, labels in iterator:
        yield images.numpy(), labels.numpy()


def _check_channels(argument, model, batch_shape):
    wanted, given = model.input_shape[-1], batch_shape[-1]
    if wanted is not None and given is not None and wanted != given:
        raise ValueError(
            f"{argument} has {given}-channel images but the model takes {wanted} channels; "
            "load RGB images (kr.data.load_dataset converts grey images to RGB) or build the "
            f"model with input_shape=(height, width, {given})."
        )


def _fit_resolution(model, batch_shape):
    """A ViT meets data of another resolution through `resize_vit` (the paper's fine-tuning at
    higher resolution: position embeddings interpolated); other models must match."""
    wanted = tuple(model.input_shape[1:3])
    given = tuple(batch_shape[1:3])
    _check_channels("train_data", model, batch_shape)
    if None in wanted or wanted == given:
        return model
    if is_vit(model):
        print(f"train: resizing {model.name} from {wanted} to the data's {given} (resize_vit)")
        return resize_vit(model, given)
    raise ValueError(
        f"train_data has {given[0]}x{given[1]} images but the model takes "
        f"{wanted[0]}x{wanted[1]}; load the data with image_size={wanted[0]} or build the "
        "model for the data's size."
    )


def _fit_from(model, data, steps_per_epoch, epochs, start_step, callbacks, **fit_kwargs):
    """Runs `fit` from global step `start_step` over `data` (which repeats, reshuffling each
    pass) with `callbacks` (a `RunCallbacks`); returns the run's `History`. Skipping the steps
    already taken replays exactly the batches an uninterrupted run sees; a resume inside an
    epoch finishes that epoch, then the rest, on one iterator."""
    fit_kwargs.update(shuffle=False, callbacks=callbacks)  # the dataset shuffles itself
    first_epoch, done = divmod(start_step, steps_per_epoch)
    stream = data.skip(start_step)
    if not done:
        return model.fit(
            stream,
            initial_epoch=first_epoch,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            **fit_kwargs,
        )
    batches = _batches(iter(stream))
    callbacks.more = first_epoch + 1 < epochs
    history = model.fit(
        batches,
        initial_epoch=first_epoch,
        epochs=first_epoch + 1,
        steps_per_epoch=steps_per_epoch - done,
        **fit_kwargs,
    )
    if callbacks.more and not model.stop_training:
        callbacks.more = False
        history = model.fit(
            batches,
            initial_epoch=first_epoch + 1,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            **fit_kwargs,
        )
    return history


def _run_length(recipe, epochs, steps, batch_size, steps_per_epoch):
    """(epochs, total steps) of a run: `steps` or `epochs` as given, else the recipe's."""
    if steps is None and epochs is None:
        steps = recipe_steps(recipe, batch_size)
    if steps is None:
        epochs = recipe.epochs if epochs is None else epochs
        return epochs, epochs * steps_per_epoch
    return math.ceil(steps / steps_per_epoch), steps


def _check_warmup(recipe, batch_size, total_steps):
    """Warns when the recipe's warm-up (in images: steps of its reference batch) fills half
    the run or more, which leaves the run mostly at low rates."""
    if recipe.schedule == "plateau" or not recipe.warmup:
        return
    warmup = recipe_schedule(recipe, batch_size, total_steps).warmup_steps
    if warmup * 2 >= total_steps:
        warnings.warn(
            f"the recipe's warm-up lasts {warmup} of this run's {total_steps} steps (batch "
            f"{batch_size}); for a short run pass a shorter one, e.g. a tenth of the run: "
            "recipe=get_recipe(NAME, warmup=0.1).",
            stacklevel=3,
        )


def _check_val_data(val_data, model, train_data):
    """Validation data the model cannot score fails before the first epoch, not after it."""
    if int(val_data.cardinality()) == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            "val_data repeats forever; pass a finite dataset (do not .repeat() it): each "
            "epoch validates on all of it."
        )
    classes = model.output_shape[-1]
    check_class_count("val_data", val_data, classes)
    check_class_names_match(
        "val_data",
        getattr(val_data, "class_names", None),
        getattr(train_data, "class_names", None),
        "train_data",
    )
    labels = val_data.element_spec[1].shape
    if len(labels) == 2 and labels[-1] not in (None, classes):
        raise ValueError(
            f"val_data has soft labels over {labels[-1]} classes but the model's classifier "
            f"has {classes} outputs."
        )
    wanted = tuple(model.input_shape[1:3])
    first = next(iter(val_data.take(1)), None)
    if first is None:
        raise ValueError("val_data is empty; pass a dataset with at least one batch, or None.")
    first = first[0].numpy()
    check_pixels("val_data images", first)
    shape = first.shape
    _check_channels("val_data", model, shape)
    given = shape[1:3]
    if None not in wanted and given != wanted:
        raise ValueError(
            f"val_data has {given[0]}x{given[1]} images but the model takes "
            f"{wanted[0]}x{wanted[1]}; load it with image_size={wanted[0]}."
        )


def _restore(model, out, resume):
    """Loads the weights and optimizer state of `resume` into the compiled `model`."""
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


def _prepare(model, spec, out, data, length, resume, user, *, ema, save_every, tensorboard):
    """Everything a run does before it writes: compiles `model` (with `user.optimizer` and
    `user.loss` where given), restores `resume` (a resume state or None), builds the callbacks
    (`user.callbacks` first) and the checked pipelines (`check_batches`).
    Anything that can fail on the arguments fails here, while the folder is untouched."""
    train_data, val_data, first_batch, steps_per_epoch, soft_labels = data
    epochs, total_steps = length
    batch_size = int(first_batch[0].shape[0])
    # A categorical loss (soft labels on either side, or label smoothing) takes one-hot
    # targets: integer labels of the training and validation data are encoded to match. A
    # user's loss replaces the recipe's label smoothing.
    smoothing = spec.label_smoothing if user.loss is None else 0.0
    val_soft = val_data is not None and len(val_data.element_spec[1].shape) == 2
    categorical = soft_labels or val_soft or bool(smoothing)
    compile_model(
        model,
        spec,
        batch_size,
        total_steps,
        soft_labels=soft_labels or (val_soft and not smoothing),
        ema=ema,
        optimizer=user.optimizer,
        loss=user.loss,
    )
    if user.optimizer is None:  # else the schedule, warm-up included, is the user's
        _check_warmup(spec, batch_size, total_steps)
    classes = model.output_shape[-1]
    if categorical and first_batch[1].ndim == 1:
        first_batch = (first_batch[0], np.eye(classes, dtype="float32")[first_batch[1]])
    # Build the loss and metrics from a batch in hand: otherwise `fit` takes one from its
    # own iterator to do so, and where that stream starts would depend on how far it skips.
    model.test_on_batch(*first_batch)
    start_step, best = 0, None
    if resume is not None:
        _restore(model, out, resume)
        start_step, best = resume["step"], resume["best"]
    best_checkpoint = BestCheckpoint(out / "best.keras", best=best)
    nan_guard = NanGuard()
    # The user's callbacks first: a rate one sets when an epoch begins is the rate
    # history.csv records. ResumeCheckpoint before BestCheckpoint: the resume state records
    # a new best value before best.keras is replaced, so a restart never saves a worse one.
    callbacks = [
        *user.callbacks,
        nan_guard,
        ResumeCheckpoint(out / RESUME_DIR, save_every, best_checkpoint),
        HistoryCSV(out / "history.csv", steps_per_epoch, first_epoch=start_step // steps_per_epoch),
    ]
    if val_data is not None:
        callbacks.append(best_checkpoint)
        val_data = check_batches(val_data, classes, "val_data")
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(out / "tensorboard")))
    if spec.schedule == "plateau" and user.optimizer is None:
        # Before the checkpoints: the epoch's saves then hold the lowered rate.
        callbacks.insert(len(user.callbacks), plateau_callback(spec, val_data is not None))
    if total_steps < epochs * steps_per_epoch:
        callbacks.insert(0, StopAtStep(total_steps, start_step))
    train_data = check_batches(train_data, classes, "train_data")
    if categorical:
        train_data = _one_hot_labels(train_data, classes)
        val_data = None if val_data is None else _one_hot_labels(val_data, classes)
    return SimpleNamespace(
        model=model,
        train_data=train_data,
        val_data=val_data,
        callbacks=callbacks,
        steps_per_epoch=steps_per_epoch,
        start_step=start_step,
        total_steps=total_steps,
        batch_size=batch_size,
        epochs=epochs,
        nan_guard=nan_guard,
        best_checkpoint=best_checkpoint,
    )


def _fit(plan, verbose):
    """Fits the rest of the run `plan` (from `_prepare`); returns its figures."""
    start, total = plan.start_step, plan.total_steps
    if start and verbose != 0:
        epoch = min(start // plan.steps_per_epoch + 1, plan.epochs)
        rest = f"{total - start} steps to go" if start < total else "no steps to go"
        print(f"train: resuming from step {start} (epoch {epoch}): {rest}")
    started = time.perf_counter()
    history = None
    if start < total:  # else: killed after its last save, before it finished
        with data_errors(), warnings.catch_warnings():
            # Validation data of unknown size (an image folder) ends each epoch's validation
            # by running out, which `fit` reports as if the training data had; the training
            # stream repeats, so it never runs out.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            callbacks = RunCallbacks(
                plan.callbacks,
                plan.model,
                epochs=plan.epochs,
                steps=plan.steps_per_epoch,
                verbose=verbose,
            )
            history = _fit_from(
                plan.model,
                plan.train_data.repeat(),
                plan.steps_per_epoch,
                plan.epochs,
                start,
                callbacks,
                validation_data=plan.val_data,
                verbose=verbose,
            )
    return SimpleNamespace(
        history=history,
        seconds=time.perf_counter() - started,
        start_step=start,
        end_step=iterations(plan.model),
        steps_per_epoch=plan.steps_per_epoch,
        batch_size=plan.batch_size,
        bad_step=plan.nan_guard.bad_step,
        best=plan.best_checkpoint.best,
    )


def _diverged(out, bad_step):
    state = read_resume_state(out / RESUME_DIR)
    if state is None:
        kept = "no checkpoint had been saved before it"
    else:
        kept = (
            f"the last good checkpoint (step {state['step']}) is kept in {str(out / RESUME_DIR)!r}"
        )
    return TrainingDivergedError(
        f"the loss became NaN/inf at step {bad_step}; training stopped and {kept}. Lower "
        "learning_rate or use precision='float32', and start afresh with overwrite=True "
        "(keras-resvit train --overwrite) or a new output_dir."
    )


def _finish(out, model, fitted, train_data, config):
    """Writes the run's final files, then removes its resume state."""
    save_model(model, out / "last.keras")
    class_names = getattr(train_data, "class_names", None)
    if class_names:
        # Beside the checkpoints, so that `keras-resvit predict` names its classes.
        for checkpoint in ("last.keras", "best.keras"):
            if (out / checkpoint).exists():
                write_class_names(out / checkpoint, [str(name) for name in class_names])
    history = fitted.history
    if history is None:
        history = keras.callbacks.History()
        history.set_model(model)
    # The whole run's epochs, those of the call it resumed included, as history.csv holds them.
    rows = read_history(out / "history.csv")
    history.epoch = [int(row["epoch"]) - 1 for row in rows]
    history.history = {k: [r.get(k, math.nan) for r in rows] for k in rows[0] if k != "epoch"}
    steps = fitted.end_step - fitted.start_step
    history.summary = {
        "model": model.name,
        # What the run trained, not what it was asked to: a callback may have stopped it.
        "epochs": math.ceil(fitted.end_step / fitted.steps_per_epoch),
        "steps": fitted.end_step,
        "resumed_from_step": fitted.start_step or None,
        "best_val_accuracy": None if fitted.best == -math.inf else fitted.best,
        # This call's: the steps of an earlier, interrupted call are not timed again.
        "seconds": round(fitted.seconds, 2),
        "images_per_second": round(steps * fitted.batch_size / max(fitted.seconds, 1e-9), 1),
        "output_dir": str(out),
    }
    write_json(out / CONFIG_FILE, {**config, "result": history.summary})
    clear_resume_state(out / RESUME_DIR)
    return history


def train(
    model_or_name,
    train_data,
    *,
    recipe: str | Recipe = "resnet_cifar",
    epochs: int | None = None,
    steps: int | None = None,
    val_data=None,
    output_dir,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    optimizer: keras.optimizers.Optimizer | str | None = None,
    loss: keras.losses.Loss | str | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    distribution: str = "auto",
    precision: str = "auto",
    ema: float | None = None,
    save_every: int | None = None,
    tensorboard: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    verbose="auto",
) -> keras.callbacks.History:
    """Compiles a model with a paper's recipe and trains it with `model.fit`.

    Writes into `output_dir`: `last.keras`, `best.keras` (best validation accuracy),
    `history.csv`, `config.json` (the run's arguments, then its result) and,
    while running, `resume/` (weights and optimizer state every `save_every` steps and every
    epoch). Running the same call again after a crash continues from the last saved step,
    replaying the same batches (it prints "resuming from step N (epoch E)" unless
    `verbose=0`); a call with other arguments is refused rather than mixed with the first
    run. The folder is locked while a run writes it, and files in it that keras_resvit did
    not write are never overwritten or deleted. Every batch's labels and pixels are checked in
    the input pipeline (`kr.data.checks`).

    Args:
        model_or_name: a `keras.Model` ending in a classifier, or a registry name (built under
            the run's precision).
        train_data: a finite, batched `tf.data.Dataset` of (images, labels); labels are ints or
            one-hot/soft vectors (MixUp, CutMix). Its batch is the global batch. Or an
            `(images, labels)` tuple of arrays: images (N, height, width, channels) of raw
            0-255 pixels and N integer class indices, fed through
            `kr.data.load_dataset((images, labels), "train", batch_size=batch_size, seed=seed)`
            (shuffled every epoch, not augmented: for augmentation call `load_dataset` with
            `augment=`). A run resumes only on the same arrays.
        recipe: a name in `keras_resvit.training.RECIPES`, or a `Recipe` (e.g.
            `get_recipe("vit_finetune", warmup=50)` for a short run).
        epochs: number of epochs (passes over `train_data`).
        steps: number of optimizer steps instead (the last epoch may end early). Default
            (neither given): the recipe's own length, in steps where the paper counts
            iterations (`resnet_cifar`: 64k steps of batch 128, scaled to the data's batch),
            else in epochs.
        val_data: optional batched validation dataset, or an `(images, labels)` tuple of
            arrays (batched as the training data, neither shuffled nor augmented).
        output_dir: folder for checkpoints and logs.
        batch_size: global batch size of arrays given as `train_data` (and `val_data`); default
            the recipe's reference batch (128 for `resnet_cifar`), at which its learning rate
            applies unscaled. A dataset sets its own batch: this is refused with one.
        learning_rate: peak learning rate at the recipe's reference batch size; default the
            recipe's. The rate used scales with `global batch / recipe batch`.
        optimizer: a `keras.optimizers.Optimizer` (or a Keras name, "adam") trained with instead
            of the recipe's. It replaces everything the recipe says about the optimizer: it
            brings its own learning rate or schedule, used as given (not scaled with the
            batch, no recipe warm-up or plateau division), its own weight decay (the recipe's
            is not applied), clipping and EMA; so `learning_rate` and `ema` are refused beside
            it. The recipe still sets the run's length and, unless `loss` is given, the loss.
            Under a multi-replica distribution it is rebuilt from its config in the
            distribution's scope (as the model is). Recorded in `config.json`: a resumed run
            must pass the same.
        loss: a `keras.losses.Loss`, a Keras loss name or a function `(y_true, y_pred)`, used
            instead of the recipe's cross-entropy; the recipe's label smoothing is then not
            applied. It receives the labels as the data holds them: class indices, or (when
            either split has soft labels) one-hot / soft vectors for both. Its `from_logits`
            must match the classifier's activation. Recorded in `config.json` like `optimizer`.
        callbacks: a list of `keras.callbacks.Callback`s, run in `fit` before train()'s own
            (NaN guard, resume and best checkpoints, history.csv, plateau schedule): they see
            every epoch, may stop the run (`model.stop_training = True`: the run then ends
            there and is finished), and see one `on_train_begin`/`on_train_end` even when a
            resume takes two `fit` calls. Their state is not saved: a resumed run starts them
            afresh. `BackupAndRestore` is refused (train() resumes itself), and so are
            callbacks that set the rate (`LearningRateScheduler`, `ReduceLROnPlateau`) where
            the rate follows a schedule.
        distribution: "auto", "none", "tpu", "mirrored" (TensorFlow) or "data_parallel" (JAX).
        precision: "auto" (bf16 on TPUs and on GPUs from Ampere on, fp16 on older GPUs,
            float32 on CPUs), "float32", "mixed_float16", "mixed_bfloat16" or "bfloat16".
        ema: momentum of an exponential moving average of the weights (e.g. 0.9999); the
            saved models hold the averaged weights.
        save_every: also save the resume state every this many steps.
        tensorboard: write TensorBoard logs to `output_dir/tensorboard`.
        seed: seed of the weight initialization, of the shuffle of arrays and of any
            randomness in training.
        overwrite: replace a finished or interrupted run of keras_resvit in `output_dir`
            (by default a finished run is kept and an interrupted one resumed).
        verbose: passed to `model.fit`.

    Returns:
        The `keras.callbacks.History` of the whole run, epochs of an interrupted call that
        this one resumed included (as `history.csv`); its "learning_rate" is the rate each
        epoch trained with, that of its first step. `history.summary` holds the run's
        figures: "epochs" and "steps" trained (fewer than asked when a callback stopped the
        run), "resumed_from_step" (None for a fresh start), "best_val_accuracy", and this
        call's "seconds" and "images_per_second".

    Raises:
        ValueError: an invalid argument, model, data or output folder (one in use by another
            run, holding files of the same names that keras_resvit did not write, a finished
            run, or an interrupted run with other arguments), before any training starts; or
            a bad batch met during training (a label the model cannot score, NaN pixels).
        TrainingDivergedError: the loss became NaN/inf (the last good checkpoint is kept).

    Example:
    >>> import keras
    >>> import keras_resvit as kr
    >>> data = kr.data.load_dataset("digits", batch_size=64)
    >>> kr.train("resnet20", data, epochs=1, output_dir="/tmp/run")  # doctest: +SKIP
    >>> (x, y), _ = kr.data.load_digits()
    >>> kr.train(
    ...     "resnet20",
    ...     (x, y),
    ...     epochs=2,
    ...     batch_size=64,
    ...     optimizer=keras.optimizers.Adam(1e-3),
    ...     callbacks=[keras.callbacks.EarlyStopping("loss", patience=1)],
    ...     output_dir="/tmp/run_arrays",
    ... )  # doctest: +SKIP
    """
    _check_number("learning_rate", learning_rate, 0)
    _check_number("ema", ema, 0, 1)
    overrides = {} if learning_rate is None else {"learning_rate": learning_rate}
    spec = get_recipe(recipe, **overrides)
    optimizer = _check_optimizer(optimizer, learning_rate, ema)
    _check_loss(loss)
    schedule = spec.schedule != "plateau" if optimizer is None else follows_schedule(optimizer)
    user = SimpleNamespace(
        optimizer=optimizer, loss=loss, callbacks=_check_callbacks(callbacks, schedule)
    )
    for argument, value in (("epochs", epochs), ("steps", steps), ("save_every", save_every)):
        if value is not None:
            _check_positive(argument, value)
    if epochs is not None and steps is not None:
        raise ValueError(
            f"epochs={epochs!r} and steps={steps!r} both set the run's length; pass one."
        )
    if not isinstance(overwrite, bool):
        raise ValueError(f"overwrite={overwrite!r} must be True or False.")
    if tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ImportError(
            "tensorboard=True needs the `tensorboard` package, which is not installed: "
            "`pip install tensorboard`."
        )
    if isinstance(model_or_name, str):
        get_spec(model_or_name)
    if batch_size is not None:
        _check_positive("batch_size", batch_size)
        if not isinstance(train_data, tuple):
            raise ValueError(
                f"batch_size={batch_size!r} applies to (images, labels) arrays only; "
                f"train_data of type {type(train_data).__name__} sets its own batch (load it "
                "with kr.data.load_dataset(..., batch_size=...))."
            )
    train_data = _as_dataset("train_data", train_data, "train", batch_size or spec.batch_size, seed)
    out = check_output_path("output_dir", output_dir, folder=True)
    first_batch, steps_per_epoch, soft_labels = _dataset_info(train_data)
    check_pixels("train_data images", first_batch[0])
    global_batch = int(first_batch[0].shape[0])
    if val_data is not None:
        val_data = _as_dataset("val_data", val_data, "test", global_batch, seed)
        _check_dataset("val_data", val_data)
    epochs, total_steps = _run_length(spec, epochs, steps, global_batch, steps_per_epoch)
    placement = place(distribution)
    if global_batch % placement.num_replicas:
        raise ValueError(
            f"batch size {global_batch} is not divisible by the {placement.num_replicas} replicas "
            f"of distribution={placement.name!r}; use a multiple of {placement.num_replicas}."
        )
    policy = resolve_precision(precision, placement)
    if not isinstance(model_or_name, str) and precision != "auto":
        current = model_or_name.dtype_policy.name
        if current != policy:
            raise ValueError(
                f"precision={precision!r} but the model was built with {current!r}; pass the "
                "model's registry name, or build it under keras.config.set_dtype_policy."
            )

    keras.utils.set_random_seed(seed)
    with output_folder("output_dir", out, RUN_FILES) as folder:
        previous = previous_run(out, overwrite)
        with dtype_policy(policy), placement.scope():
            model = _fit_resolution(_model(model_or_name, spec, placement), first_batch[0].shape)
            _adapt_pixel_means(model, train_data)
            check_classifier(model, "train() needs one score per class")
            _check_labels(model, train_data, first_batch[1], soft_labels)
            _carry_class_names(model, train_data)
            if loss is not None:
                _check_loss_outputs(loss, model)
            if val_data is not None:
                _check_val_data(val_data, model, train_data)
            user.optimizer = _in_scope(optimizer, placement)
            settings = {
                "learning_rate": learning_rate,
                "precision": policy,
                "ema": ema,
                # Where the examples come from (kr.data datasets say): a resumed run must
                # continue on the same data.
                "data": getattr(train_data, "provenance", None),
                "class_names": getattr(train_data, "class_names", None),
                "steps": total_steps,
                "optimizer": _described(optimizer),
                "loss": _described(loss),
            }
            run = run_record(
                model, spec, recipe, epochs, global_batch, steps_per_epoch, seed=seed, **settings
            )
            resume = resume_state(out, previous, run, overwrite)
            environment = {
                "distribution": placement.name,
                "replicas": placement.num_replicas,
                "backend": backend(),
            }
            plan = _prepare(
                model,
                spec,
                out,
                (train_data, val_data, first_batch, steps_per_epoch, soft_labels),
                (epochs, total_steps),
                resume,
                user,
                ema=ema,
                save_every=save_every,
                tensorboard=tensorboard,
            )
            # Every check has passed: only now is anything in the folder written or removed.
            folder.start_writing()
            if resume is None:
                clear_run(out)
                write_json(out / CONFIG_FILE, {**run, **environment, "result": None})
            fitted = _fit(plan, verbose)
        if fitted.bad_step is not None:
            raise _diverged(out, fitted.bad_step)
        return _finish(out, model, fitted, train_data, {**run, **environment})
