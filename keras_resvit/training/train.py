"""`train()`: a paper's recipe, `model.fit` under the detected distribution, resumable.

`train()` reads as its steps: check the arguments and the data (`train_checks`,
`data_checks`), place the run (`place`: distribution and precision), build and compile the
model under that placement (`model_setup`), then the callbacks and `fit` (`fitting`), then
the run's final files (`run_outputs`).
"""

import json
import warnings

import keras
import numpy as np

from keras_resvit.base.backend import backend, dtype_policy
from keras_resvit.base.files import write_json
from keras_resvit.base.processes import barrier
from keras_resvit.models.common import check_classifier, low_precision
from keras_resvit.models.lora import idle_lora_layers
from keras_resvit.training.data_checks import (
    check_data,
    check_labels,
    check_last_batches,
    check_val_data,
    split_over,
)
from keras_resvit.training.distribution import local_input, place, resolve_precision
from keras_resvit.training.fitting import checked_pipelines, fit_run, restore, run_callbacks
from keras_resvit.training.model_setup import (
    adapt_pixel_means,
    build_optimizer,
    carry_class_names,
    compile_model,
    fit_resolution,
    in_scope,
    label_encoding,
    model_for_run,
)
from keras_resvit.training.recipes import Recipe
from keras_resvit.training.run_folder import (
    CONFIG_FILE,
    clear_run,
    previous_run,
    process_folder,
    resume_state,
    run_record,
)
from keras_resvit.training.run_outputs import TrainingDivergedError, diverged, finish_run
from keras_resvit.training.train_checks import (
    check_arguments,
    check_class_probabilities,
    check_loss_outputs,
    check_warmup,
)

# `build_optimizer` and `compile_model` compile a model as train() does, for benchmarks and
# custom loops; tests replace `place`, `compile_model` and `finish_run` here.
__all__ = ["TrainingDivergedError", "build_optimizer", "compile_model", "train"]


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
    on the batches an uninterrupted run trains on (made from that step at once for a
    `load_dataset` training split of arrays or a folder: `from_step`); it prints "resuming
    from step N (epoch E)" unless `verbose=0`; resumed under another backend, it warns that
    the model's random draws (dropout, stochastic depth) differ from there on (a tf.data
    pipeline's batches do not). A call with other arguments is refused rather
    than mixed with the first run. The folder is locked while a run writes it, and files in
    it that keras_resvit did not write are never overwritten or deleted. Every batch's labels
    and pixels are checked in the input pipeline (`kr.data.checks`).

    Args:
        model_or_name: a `keras.Model` ending in a classifier, a registry name (built under
            the run's precision with a score per class of the data: `kr.data` datasets and
            arrays name their classes, soft labels count them; else the registry's default
            count), or a function of no arguments that builds the model: it is
            called under the run's precision and distribution scope, so a model of one's own
            gets mixed precision where `precision` asks for it.
        train_data: a finite, batched `tf.data.Dataset` of (images, labels); labels are ints or
            one-hot/soft vectors (MixUp, CutMix): the recipe's label smoothing applies to vectors
            with zeros, not to those already smoothed (every entry above 0, as a `kr.data`
            mixing preset's). Its batch is the global batch. Or a
            `keras.utils.PyDataset` of such batches (`kr.data.ImageLoader`, what `load_dataset`
            returns without TensorFlow; under several processes, each process's share). Or an
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
        distribution: "auto", "none", "tpu", "mirrored", "multi_worker" (TensorFlow: the
            workers of `TF_CONFIG`) or "data_parallel" (JAX: every device of every process).
            Several processes (hosts) train one run when the environment describes them
            (`KERAS_DISTRIBUTION_*` under JAX, `TF_CONFIG` under TensorFlow; see
            `keras_resvit.training.initialize`): each feeds its share of every global batch,
            and only process 0 writes `output_dir`, which the others read to resume, so it
            must be shared by all of them.
        precision: "auto" (bf16 on TPUs and on GPUs from Ampere on, fp16 on older GPUs,
            float32 on CPUs), "float32", "mixed_float16", "mixed_bfloat16" or "bfloat16". A
            model passed built computes in its layers' precision (the builders' `dtype=`):
            "auto" takes it (and `config.json` records it), another value must equal it.
            "bfloat16" keeps the weights in bfloat16 too (8 bits of mantissa: an update
            smaller than 1/256 of a weight is rounded away); "mixed_bfloat16" keeps float32
            weights and is the one to train with.
        ema: momentum of an exponential moving average of the weights (e.g. 0.9999), kept by
            the optimizer (`use_ema`): the validation figures, `best.keras`, `last.keras` and
            `history.model` are those of the averaged weights (as timm validates its EMA
            model), while training and the resume state go on from the trained ones.
            BatchNorm's moving statistics are averaged with the same momentum beside them
            (as timm's and TensorFlow Model Garden's EMA do; Keras' `use_ema` averages the
            trainable weights only), so the averaged weights normalize with statistics of
            their own time, on every backend and under every distribution.
        save_every: also save the resume state every this many steps.
        tensorboard: write TensorBoard logs to `output_dir/tensorboard`.
        seed: seed of the weight initialization, of the shuffle of arrays and of any
            randomness in training.
        overwrite: replace a finished or interrupted run of keras_resvit in `output_dir`
            (by default a finished run is kept and an interrupted one resumed).
        verbose: passed to `model.fit`: "auto", 0 (silent), 1 (progress bar) or 2 (one line
            per epoch).

    Returns:
        The `keras.callbacks.History` of the whole run, epochs of an interrupted call that
        this one resumed included (as `history.csv`); `history.model` is the trained model:
        the model passed, which ends with the trained weights as after `model.fit`, except a
        ViT resized to the data's resolution: then a resized copy (the model passed keeps its
        weights, and `train` prints so). Its "learning_rate" is the rate each
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
    >>> import os, keras, keras_resvit as kr
    >>> (x, y), _ = kr.data.load_digits()
    >>> history = kr.train(
    ...     "resnet20",
    ...     (x[:256], y[:256]),
    ...     val_data=(x[256:320], y[256:320]),  # best.keras: the best validation accuracy
    ...     epochs=2,
    ...     batch_size=64,
    ...     optimizer=keras.optimizers.Adam(1e-3),
    ...     output_dir="run",
    ...     verbose=0,
    ... )
    train: resnet20 for 10 classes (from the data)
    >>> history.summary["epochs"], len(history.history["loss"])
    (2, 2)
    >>> sorted(name for name in os.listdir("run") if name.endswith(".keras"))
    ['best.keras', 'last.keras']
    >>> data = kr.data.load_dataset("digits", batch_size=64)  # batches train the same way
    >>> kr.train("resnet20", data, steps=3, output_dir="run2", verbose=0).summary["steps"]
    train: resnet20 for 10 classes (from the data)
    3
    """
    spec, user = check_arguments(
        model_or_name,
        train_data,
        recipe,
        epochs=epochs,
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        optimizer=optimizer,
        loss=loss,
        callbacks=callbacks,
        ema=ema,
        save_every=save_every,
        tensorboard=tensorboard,
        overwrite=overwrite,
        verbose=verbose,
    )
    out, data = check_data(
        train_data,
        val_data,
        output_dir,
        spec,
        epochs=epochs,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
    )
    placement, policy = _placement(distribution, precision, model_or_name, data.batch_size)
    check_last_batches(data, placement)
    keras.utils.set_random_seed(seed)
    with process_folder(out) as folder:
        written = folder.path  # `out`, or another process's private folder
        previous = previous_run(out, overwrite)
        with dtype_policy(policy), placement.scope():
            model = _build(model_or_name, spec, placement, data, user.loss)
            settings = {"learning_rate": learning_rate, "precision": policy, "ema": ema}
            run = _record(model, spec, recipe, data, user, seed=seed, **settings)
            user.optimizer = in_scope(user.optimizer, placement)
            resume = resume_state(out, previous, run, overwrite)
            _warn_other_backend(resume, previous)
            one_hot, *start = _compile(model, spec, out, data, resume, user, ema=ema)
            callbacks = run_callbacks(spec, written, data, user, start, save_every, tensorboard)
            start_step = start[0]
            local = local_input(data, placement)
            pipelines = checked_pipelines(
                local, model.output_shape[-1], one_hot, model.input_shape[1:],
                split_over(placement),
            )  # fmt: skip
            environment = {
                "distribution": placement.name,
                "replicas": placement.num_replicas,
                "processes": placement.processes,
                "backend": backend(),
            }
            # Every process has read the folder before process 0 writes into it.
            barrier("keras_resvit.train")
            # Every check has passed: only now is anything in the folder written or removed.
            folder.start_writing()
            if resume is None:
                clear_run(written, folder.owned)
                write_json(written / CONFIG_FILE, {**run, **environment, "result": None})
            feeds = (local.feed_train, local.feed_val)
            fitted = fit_run(model, data, pipelines, callbacks, start_step, verbose, feeds)
        if fitted.bad_step is not None:
            raise diverged(out, fitted.bad_step)
        summary = {**run, **environment}
        history = finish_run(written, model, fitted, data.train, summary, output_dir=out)
    _hand_back(model_or_name, model)
    return history


def _hand_back(given, trained):
    """A model given that `train` rebuilt (cloned into several replicas' scope, or resized to
    the data) gets the trained weights back where it has their shapes, as `fit` would have
    trained it; else `train` says where the trained model is."""
    if not isinstance(given, keras.Model) or trained is given:
        return
    shapes = [tuple(w.shape) for w in given.weights]
    if shapes == [tuple(w.shape) for w in trained.weights]:
        given.set_weights(trained.get_weights())
        return
    print(
        f"train: the trained model is history.model (and last.keras), taking "
        f"{trained.input_shape[1:3]} images; the model passed, for {given.input_shape[1:3]}, "
        "keeps its weights"
    )


def _warn_other_backend(resume, previous):
    """A run resumed under another backend goes on with other random draws in the model
    (dropout, stochastic depth; a tf.data pipeline's batches are the same on every backend,
    the py_dataset loader's are not): not the run an uninterrupted one would have been.
    Said, not refused: moving a run to other hardware is a reason to resume it there."""
    started = (previous or {}).get("backend")
    if resume is not None and started not in (None, backend()):
        warnings.warn(
            f"this run started under the {started} backend and resumes under {backend()}: "
            "the model's random draws (dropout, stochastic depth; augmentation too with the "
            "py_dataset loader) differ from here on, so the rest of the run is not the one an "
            "uninterrupted run would have trained.",
            stacklevel=3,
        )


def _placement(distribution, precision, model_or_name, global_batch):
    """The run's `Placement` (`place`) and dtype policy name, checked against the batch and
    the model given."""
    placement = place(distribution)
    if global_batch % placement.num_replicas:
        raise ValueError(
            f"batch size {global_batch} is not divisible by the {placement.num_replicas} replicas "
            f"of distribution={placement.name!r}; use a multiple of {placement.num_replicas}."
        )
    policy = resolve_precision(precision, placement)
    if isinstance(model_or_name, keras.Model):
        # The layers' policy: a functional model reloaded from a file has the default itself.
        current = low_precision(model_or_name) or "float32"
        if precision != "auto" and current != policy:
            raise ValueError(
                f"precision={precision!r} but the model was built with {current!r}; pass the "
                "model's registry name or a function that builds it (called under the run's "
                f'precision), or build it with dtype="{policy}" (every builder and '
                "kr.create_model take it)."
            )
        policy = current  # "auto": a built model trains in its own precision
    return placement, policy


def _build(model_or_name, spec, placement, data, loss):
    """The model to train, under the placement's scope: built or rebuilt, fitted to the data's
    resolution and pixel means, given its class names, and checked against the labels, the
    user's `loss` and the validation data."""
    labels = data.first_batch[1]
    classes = labels.shape[-1] if data.soft_labels else getattr(data.train, "num_classes", None)
    if classes == 1 and not data.soft_labels:  # (a vector of one is a sigmoid's target)
        raise ValueError(
            "train_data has labels of one class; a classifier learns to tell at least two "
            "apart (one class gives a loss of 0 whatever the images)."
        )
    model = model_for_run(model_or_name, spec, placement, classes)
    if not model.trainable_weights:
        raise ValueError(
            f"model={model.name!r} has no trainable weights (every layer is frozen): training "
            "would leave it as it is. Unfreeze what should learn (`model.trainable = True`, or "
            "`layer.trainable = True` for some layers), or give it a new trainable classifier "
            "with kr.replace_head(model, num_classes)."
        )
    idle = idle_lora_layers(model)
    if idle:
        raise ValueError(
            f"model={model.name!r} has LoRA layers whose two factors are zero ({idle[0]!r} "
            f"and {len(idle) - 1} more), as a model loaded from a .keras file has them: they "
            "get no gradient, so training would adapt nothing through them. Call "
            "enable_lora(model, rank, targets) again, as the model was made (it draws new "
            "lora_kernel_a factors, outputs unchanged, and freezes the rest), then train."
        )
    model = fit_resolution(model, data.first_batch[0].shape)
    adapt_pixel_means(model, data.train)
    check_classifier(model, "train() needs one score per class")
    check_labels(model, data.train, labels, data.soft_labels)
    carry_class_names(model, data.train)
    if loss is not None:
        check_loss_outputs(loss, model, data.first_batch[1])
    if data.val is not None:
        check_val_data(data.val, model, data.train)
    return model


def _record(model, spec, recipe, data, user, *, seed, **settings):
    """The run's record (`run_record`): what a resumed run must match; `settings`: the
    learning rate, precision and EMA momentum."""
    settings = {
        **settings,
        # Where the examples come from (kr.data datasets say): a resumed run must continue on
        # the same data.
        "data": getattr(data.train, "provenance", None),
        # The best model so far was judged on it: a resumed run must validate on it too.
        "val_data": None if data.val is None else getattr(data.val, "provenance", "given"),
        "class_names": getattr(data.train, "class_names", None),
        "steps": data.total_steps,
        "optimizer": _described(user.optimizer),
        "loss": _described(user.loss),
    }
    return run_record(
        model,
        spec,
        recipe,
        data.epochs,
        data.batch_size,
        data.steps_per_epoch,
        seed=seed,
        **settings,
    )


def _compile(model, spec, out, data, resume, user, *, ema):
    """Compiles `model` (with `user.optimizer` and `user.loss` where given) and restores
    `resume` (a resume state or None); returns (one_hot: whether the loss takes one-hot
    targets, the step the run starts from, the best validation accuracy so far or None, the
    metrics' state at that step when it is inside an epoch or None)."""
    one_hot, soft = label_encoding(spec, user.loss, data.soft_labels, data.val, data.first_batch[1])
    compile_model(
        model,
        spec,
        data.batch_size,
        data.total_steps,
        soft_labels=soft,
        ema=ema,
        optimizer=user.optimizer,
        loss=user.loss,
    )
    if user.optimizer is None:  # else the schedule, warm-up included, is the user's
        check_warmup(spec, data.batch_size, data.total_steps)
    first_batch = data.first_batch
    if first_batch[1].ndim == 2 and user.loss is None and spec.loss == "cross_entropy":
        check_class_probabilities("train_data", first_batch[1])
    if one_hot and first_batch[1].ndim == 1:
        first_batch = (
            first_batch[0],
            np.eye(model.output_shape[-1], dtype="float32")[first_batch[1]],
        )
    # Build the loss and metrics from a batch in hand: otherwise `fit` takes one from its
    # own iterator to do so, and where that stream starts would depend on how far it skips.
    model.test_on_batch(*first_batch)
    if resume is None:
        return one_hot, 0, None, None, None
    restore(model, out, resume)
    return one_hot, resume["step"], resume["best"], resume.get("metrics"), resume.get("plateau")


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
