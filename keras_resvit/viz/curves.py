"""Training curves: loss, accuracy and learning rate per epoch."""

import contextlib
import os
import reprlib
from collections.abc import Mapping, Set
from pathlib import Path

import numpy as np

from keras_resvit.base.files import as_path
from keras_resvit.base.validation import check_int
from keras_resvit.viz.figures import DPI, check_png_path, save_png

PANELS = (("loss", "loss"), ("accuracy", "accuracy"), ("learning_rate", "learning rate"))
PANEL_SIZE = (4.5, 3.5)  # inches per curve panel


def _columns(history):
    if isinstance(history, (str, os.PathLike)):
        from keras_resvit.training.history_csv import read_history

        history = as_path("history", history)
        if not history.is_file():
            raise FileNotFoundError(f"history={str(history)!r} is not a file; expected a CSV.")
        rows = read_history(history)
        if not rows:
            raise ValueError(f"history={str(history)!r} has no rows; expected a history.csv.")
        # Every row's columns: the history writer leaves a cell blank in an epoch without
        # that value (validation every few epochs), also in the first row.
        keys = dict.fromkeys(k for row in rows for k in row)
        return {k: [row.get(k) for row in rows] for k in keys}
    columns = getattr(history, "history", history)
    if not isinstance(columns, Mapping):
        raise ValueError(
            f"history={reprlib.repr(history)} is not valid; expected a keras History, its "
            "`.history` dict ({'loss': [...], ...}) or a history.csv path."
        )
    return dict(columns)


def _series(columns, key, validated=None):
    """`columns[key]` as float64 numbers, one per epoch (None, NaN and infinities as gaps);
    a validation curve (`validated`: the train curve's epochs that were validated, a boolean
    mask) as many as its train curve, or one per validated epoch, placed at those epochs."""
    values = columns[key]
    series = None
    # A string or a dict iterates to characters or keys, which numpy would read as numbers.
    if not isinstance(values, (str, bytes, Mapping, Set)):
        with contextlib.suppress(TypeError, ValueError):  # not iterable, or ragged
            series = np.asarray([np.nan if v is None else v for v in values])
    valid = series is not None and series.dtype.kind in "iuf" and series.ndim == 1
    if valid and validated is not None and len(series) == validated.sum() < len(validated):
        every = np.full(len(validated), np.nan)
        every[validated] = series
        return every
    if not valid or len(series) == 0 or validated is not None and len(series) != len(validated):
        epochs = "one per epoch"
        if validated is not None and validated.all():
            epochs = (
                f"{len(validated)}, as many as its train curve (a History of "
                "fit(validation_freq=N) has fewer: pass validation_freq=N)"
            )
        elif validated is not None:
            epochs = (
                f"{len(validated)}, as many as its train curve, or {validated.sum()}: one per "
                "epoch validated with the validation_freq given"
            )
        raise ValueError(
            f"history[{key!r}]={reprlib.repr(values)} is not valid; expected a list of "
            f"numbers (None for an epoch without one), {epochs}."
        )
    return series.astype("float64")


def _epochs(history, count):
    """The 1-based epoch of each of `count` values: a `History`'s own (`fit(initial_epoch=5)`
    trained epochs 6, 7, ...), else 1, 2, ... (a dict's values, or a history.csv's rows,
    which the history writer numbers 1, 2, ... without gaps)."""
    epochs = getattr(history, "epoch", None)
    if isinstance(history, Mapping) or not isinstance(epochs, list) or len(epochs) != count:
        return np.arange(1, count + 1)
    return np.asarray(epochs) + 1


def _plot(ax, epochs, series, label):
    """One curve against its epochs; a value between two gaps (validation every few epochs)
    has no line to either side, nor has the value of a one-epoch run, so a curve with gaps
    or of one value also marks each value."""
    marker = None if np.isfinite(series).all() and len(series) > 1 else "."
    ax.plot(epochs, series, marker=marker, label=label)


def plot_history(history, path, validation_freq: int = 1) -> Path:
    """Draws loss, accuracy (train and validation) and learning rate against epochs.

    Epochs are numbered from 1, or as a `History` numbers them: one of
    `fit(initial_epoch=5)` is drawn at epochs 6, 7, ...

    Args:
        history: a `keras.callbacks.History`, its `.history` dict, or a `history.csv` path.
        path: PNG file to write (atomically); an existing file is replaced only if it is a
            figure keras_resvit wrote.
        validation_freq: the `validation_freq` given to `fit`: a `History` of it holds one
            validation value per validated epoch (each whose number is a multiple of it),
            drawn at those epochs. A history.csv (and `kr.train`'s History) leaves the other
            epochs blank and needs none.

    Returns:
        The path written.

    Raises:
        FileNotFoundError: `history` is a path but not a file.
        ValueError: `history` is not a History, dict or path; it has none of the columns
            loss, accuracy, learning_rate, or one that is not a list of numbers (None, NaN
            and infinities are drawn as gaps; a string, a dict or nested lists are refused,
            as is a validation curve of another length); or `path` is not a writable `.png`
            file.

    Example:
    >>> from keras_resvit.viz.curves import plot_history
    >>> plot_history({"loss": [2.3, 1.1, 0.7], "accuracy": [0.2, 0.6, 0.8]}, "curves.png")
    PosixPath('curves.png')
    >>> # or a run's history.csv: plot_history("runs/digits/history.csv", "curves.png")
    """
    from matplotlib.figure import Figure

    check_int("validation_freq", validation_freq)
    path = check_png_path(path)
    columns = _columns(history)
    panels = [(key, title) for key, title in PANELS if key in columns]
    if not panels:
        raise ValueError(
            f"history has columns {sorted(columns)}; expected at least one of "
            f"{[key for key, _ in PANELS]}."
        )
    curves, epochs = {}, {}
    for key, _ in panels:
        curves[key] = _series(columns, key)
        epochs[key] = _epochs(history, len(curves[key]))
        if f"val_{key}" in columns:
            validated = epochs[key] % validation_freq == 0
            curves[f"val_{key}"] = _series(columns, f"val_{key}", validated)
    width, height = PANEL_SIZE
    figure = Figure(figsize=(width * len(panels), height), dpi=DPI, layout="tight")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, title) in zip(axes, panels, strict=True):
        _plot(ax, epochs[key], curves[key], "train")
        if f"val_{key}" in curves:
            _plot(ax, epochs[key], curves[f"val_{key}"], "validation")
            ax.legend()
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    return save_png(figure, path)
