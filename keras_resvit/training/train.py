"""`train()`: compile a model with a paper's recipe and run `model.fit` on any backend."""

import csv
import json
from pathlib import Path

import keras

from keras_resvit.files import atomic_path, save_model
from keras_resvit.models.registry import create_model
from keras_resvit.training.recipes import RECIPES

# Variables that weight decay leaves alone: norm scales/offsets and biases.
NO_DECAY = ["gamma", "beta", "bias"]


class _BestCheckpoint(keras.callbacks.Callback):
    """Saves `best.keras` (atomically) whenever the monitored validation metric improves."""

    def __init__(self, path, monitor):
        super().__init__()
        self.path, self.monitor, self.best = path, monitor, -float("inf")

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value > self.best:
            self.best = value
            save_model(self.model, self.path)


def learning_rate_schedule(recipe, batch_size, steps):
    """The recipe's step schedule: linear batch scaling, /10 at each `decay_at` fraction."""
    learning_rate = recipe.learning_rate * batch_size / recipe.batch_size
    boundaries = [max(1, int(f * steps)) for f in recipe.decay_at]
    values = [learning_rate / 10**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def _optimizer(recipe, batch_size, steps):
    optimizer = keras.optimizers.SGD(
        learning_rate_schedule(recipe, batch_size, steps),
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
    )
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer


def _write_history(history, path):
    columns = list(history)
    rows = [
        dict(zip(columns, values, strict=True)) for values in zip(*history.values(), strict=True)
    ]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", *history])
        writer.writeheader()
        for epoch, row in enumerate(rows, start=1):
            writer.writerow({"epoch": epoch, **row})


def train(
    model_or_name,
    train_data,
    *,
    recipe: str = "resnet_cifar",
    epochs: int | None = None,
    val_data=None,
    output_dir,
    verbose="auto",
) -> keras.callbacks.History:
    """Compiles the model with a recipe and trains it with `model.fit`.

    Writes into `output_dir`: `last.keras`, `best.keras` (best validation accuracy, when
    `val_data` is given), `history.csv` and `config.json`.

    Args:
        model_or_name: a `keras.Model` or a registry name.
        train_data: a batched `tf.data.Dataset` of (images, integer labels).
        recipe: a name in `RECIPES`.
        epochs: number of epochs; default the recipe's.
        val_data: optional batched validation dataset.
        output_dir: folder for the checkpoints and logs.
        verbose: passed to `model.fit`.

    Returns:
        The `keras.callbacks.History` of the run.

    Example:
    >>> import keras_resvit as kr
    >>> data = kr.data.load_dataset("digits", batch_size=64)
    >>> kr.train("resnet20", data, epochs=1, output_dir="/tmp/run")  # doctest: +SKIP
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe={recipe!r} is not known; valid: {sorted(RECIPES)}.")
    spec = RECIPES[recipe]
    epochs = spec.epochs if epochs is None else epochs
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs={epochs!r} must be a positive int.")
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"output_dir={str(output_dir)!r} exists and is not a folder.")
    output_dir.mkdir(parents=True, exist_ok=True)
    model = create_model(model_or_name) if isinstance(model_or_name, str) else model_or_name

    batch_size = int(next(iter(train_data))[0].shape[0])
    steps = epochs * int(train_data.cardinality())
    model.compile(
        optimizer=_optimizer(spec, batch_size, steps),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    callbacks = []
    if val_data is not None:
        callbacks.append(_BestCheckpoint(output_dir / "best.keras", "val_accuracy"))
    # The dataset shuffles itself (tf.data); fit's own shuffle does not apply to datasets.
    history = model.fit(
        train_data,
        epochs=epochs,
        validation_data=val_data,
        callbacks=callbacks,
        shuffle=False,
        verbose=verbose,
    )
    save_model(model, output_dir / "last.keras")
    _write_history(history.history, output_dir / "history.csv")
    config = {
        "model": model.name,
        "recipe": recipe,
        "epochs": epochs,
        "batch_size": batch_size,
        "backend": keras.backend.backend(),
    }
    with atomic_path(output_dir / "config.json") as tmp, open(tmp, "w") as f:
        json.dump(config, f, indent=2)
    return history
