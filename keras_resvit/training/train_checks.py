"""The checks of `train()`'s arguments that need no data (recipe, run length, optimizer, loss,
callbacks) and of the model's outputs: each fails with one clear ValueError before the run's
output folder is touched. The data's checks are in `data_checks`."""

import importlib.util
import inspect
import warnings
from types import SimpleNamespace

import keras
import numpy as np

from keras_resvit.base.validation import check_bool, check_int, check_number, check_verbose
from keras_resvit.models.common import classifier_activation, outputs_logits
from keras_resvit.models.registry import get_spec
from keras_resvit.training.callbacks import follows_schedule
from keras_resvit.training.recipes import get_recipe
from keras_resvit.training.schedules import recipe_schedule


def check_arguments(
    model_or_name,
    train_data,
    recipe,
    *,
    epochs,
    steps,
    batch_size,
    learning_rate,
    optimizer,
    loss,
    callbacks,
    ema,
    save_every,
    tensorboard,
    overwrite,
    verbose,
):
    """The run's `Recipe` and the user's optimizer, loss and callbacks (a namespace), once the
    arguments of `train()` that need no data are checked."""
    check_number("learning_rate", learning_rate, 0, none_ok=True)
    check_number("ema", ema, 0, 1, none_ok=True)
    overrides = {} if learning_rate is None else {"learning_rate": learning_rate}
    spec = get_recipe(recipe, **overrides)
    optimizer = check_optimizer(optimizer, learning_rate, ema)
    check_loss(loss)
    schedule = spec.schedule != "plateau" if optimizer is None else follows_schedule(optimizer)
    user = SimpleNamespace(
        optimizer=optimizer, loss=loss, callbacks=check_callbacks(callbacks, schedule)
    )
    for argument, value in (("epochs", epochs), ("steps", steps), ("save_every", save_every)):
        check_int(argument, value, none_ok=True)
    if epochs is not None and steps is not None:
        raise ValueError(
            f"epochs={epochs!r} and steps={steps!r} both set the run's length; pass one."
        )
    check_bool("overwrite", overwrite)
    check_bool("tensorboard", tensorboard)
    check_verbose(verbose)
    if tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ImportError(
            "tensorboard=True needs the `tensorboard` package, which is not installed: "
            "`pip install tensorboard`."
        )
    if isinstance(model_or_name, str):
        get_spec(model_or_name)
    if batch_size is not None:
        check_int("batch_size", batch_size)
        if not isinstance(train_data, tuple):
            raise ValueError(
                f"batch_size={batch_size!r} applies to (images, labels) arrays only; "
                f"train_data of type {type(train_data).__name__} sets its own batch (load it "
                "with kr.data.load_dataset(..., batch_size=...))."
            )
    return spec, user


def check_optimizer(optimizer, learning_rate, ema):
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


def check_loss(loss):
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


def check_loss_outputs(loss, model, labels):
    """A loss whose `from_logits` disagrees with the classifier's activation trains on wrong
    numbers without an error: refuse it. A Keras loss that cannot take the run's `labels` (a
    batch) against the model's scores (as 'mse' with class indices) is refused before fit."""
    resolved = keras.losses.get(loss) if isinstance(loss, str) else loss
    _probe_loss(loss, resolved, model, np.asarray(labels))
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
        outputs = "logits" if logits else f"{classifier_activation(model)} probabilities"
        raise ValueError(
            f"loss={name!r} has from_logits={wanted} but the model outputs {outputs}; pass "
            f"a loss with from_logits={logits}."
        )


def _probe_loss(loss, resolved, model, labels):
    """Calls the loss once on `labels` and uniform scores, with one more row than classes (a
    batch as long as the class count would broadcast where fit fails): a Keras loss that
    cannot take them, or a function of another signature, is named before fit."""
    classes = model.output_shape[-1]
    rows = np.resize(labels, (classes + 1, *labels.shape[1:]))
    scores = np.full((classes + 1, classes), 1.0 / classes, "float32")
    try:
        keras.ops.convert_to_numpy(resolved(rows, scores))
    except Exception as error:  # noqa: BLE001 - any backend's shape or dtype error
        name = loss if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)
        kind = "soft labels" if labels.ndim == 2 else "class indices"
        shape = "(batch,)" if labels.ndim == 1 else f"(batch, {labels.shape[1]})"
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise ValueError(
            f"loss={name!r} cannot compare this run's labels ({kind} of shape {shape}, dtype "
            f"{labels.dtype}) with the model's scores (batch, {classes}) as "
            f"loss(y_true, y_pred) ({type(error).__name__}: {reason}); pass a "
            "classification loss that takes them, e.g. 'sparse_categorical_crossentropy' for "
            "class indices, 'categorical_crossentropy' for soft labels."
        ) from None


def check_callbacks(callbacks, schedule):
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


def check_warmup(recipe, batch_size, total_steps):
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


def check_class_probabilities(argument, labels):
    """Soft labels for a softmax cross-entropy are class probabilities: each row sums to 1
    (MixUp, CutMix and label smoothing keep that). Rows of another sum (multi-hot labels, or
    one-hot rows scaled) would train on a loss scaled by that sum, without an error."""
    sums = np.asarray(labels, "float64").sum(axis=-1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-3)
    if bad.size:
        raise ValueError(
            f"{argument}: batch 1 has soft labels whose rows sum to {sums[bad[0]]:g} (row "
            f"{bad[0]}); the recipe's softmax cross-entropy takes class probabilities that sum "
            "to 1. Normalize the labels, or train multi-hot labels with a binary cross-entropy "
            "recipe (e.g. 'rsb_a3') or loss='binary_crossentropy'."
        )
