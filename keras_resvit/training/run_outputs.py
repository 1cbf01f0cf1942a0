"""The end of a `train()` run: its final files and figures, or the error of a run that
diverged."""

import math

import keras

from keras_resvit.base.class_names import write_class_names
from keras_resvit.base.files import write_json
from keras_resvit.base.model_files import save_model
from keras_resvit.training.history_csv import read_history
from keras_resvit.training.run_folder import (
    CONFIG_FILE,
    RESUME_DIR,
    clear_resume_state,
    read_resume_state,
)


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def diverged(out, bad_step) -> TrainingDivergedError:
    """The error of a run in `out` whose loss became NaN/inf at `bad_step`: what it kept."""
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


def finish_run(out, model, fitted, train_data, config, output_dir=None):
    """Writes the run's final files into `out` from `fitted` (from `fitting.fit_run`), then
    removes its resume state; returns the run's `History` with its `summary`. `output_dir`:
    the run's folder as the user named it (default `out`)."""
    save_model(model, out / "last.keras")
    class_names = getattr(train_data, "class_names", None)
    if class_names and len(class_names) == model.output_shape[-1]:
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
        "output_dir": str(output_dir or out),
    }
    write_json(out / CONFIG_FILE, {**config, "result": history.summary})
    clear_resume_state(out / RESUME_DIR)
    return history
