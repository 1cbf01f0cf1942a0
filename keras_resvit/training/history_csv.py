"""`history.csv`: one row per epoch of a run (`HistoryCSV`), read back by `read_history`."""

import csv
import math
from pathlib import Path

import keras

from keras_resvit.base.files import check_output_path, first_line, write_csv
from keras_resvit.base.validation import check_int
from keras_resvit.training.callbacks import learning_rate_at


class HistoryCSV(keras.callbacks.Callback):
    """Rewrites `history.csv` (one row per epoch, earlier runs' rows kept) after each epoch.

    Its "learning_rate" is the rate the epoch trained with: the rate of the epoch's first
    step (`learning_rate_at` step `epoch * steps_per_epoch`), also when a resumed run starts
    inside the epoch; not the rate left at the epoch's end, which a step schedule may already
    have divided. It is also put into the epoch's logs, for the callbacks called after it and
    the `History`.

    Only a history CSV of this package is replaced: a file of another kind at `path` is
    refused before training, and left as it is.

    Args:
        path: the CSV file.
        steps_per_epoch: optimizer steps per epoch (a positive int).
        first_epoch: the epoch a resumed run starts in (0-based, an int >= 0): rows of
            earlier epochs are kept, later ones replaced.

    Raises:
        ValueError: an argument of another type, or `path` holds a file that is not a
            history CSV of keras_resvit (naming it).
    """

    def __init__(self, path, steps_per_epoch, first_epoch=0):
        super().__init__()
        self.path = check_output_path("HistoryCSV: path", path)
        check_int("HistoryCSV: steps_per_epoch", steps_per_epoch)
        check_int("HistoryCSV: first_epoch", first_epoch, 0)
        self.steps_per_epoch = steps_per_epoch
        rows, problem = _history_rows(self.path)
        if problem is not None:
            raise ValueError(
                f"HistoryCSV: path={str(self.path)!r} holds a file that is not a history CSV "
                f"of keras_resvit ({problem}); it is not replaced: pass another path, or move "
                "that file away."
            )
        self.rows = [r for r in rows if r["epoch"] <= first_epoch]
        self.rate = math.nan

    def on_epoch_begin(self, epoch, logs=None):
        self.rate = learning_rate_at(self.model.optimizer, epoch * self.steps_per_epoch)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = self.rate
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        row["learning_rate"] = self.rate
        self.rows = [r for r in self.rows if int(r["epoch"]) < epoch + 1] + [row]
        write_csv(self.path, self.rows)


def _history_rows(path):
    """(rows, None) for the history.csv at `path` (no rows where there is no file), else
    (None, what is wrong with the file)."""
    if not path.is_file():
        return [], None
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if "epoch" not in (reader.fieldnames or ()):
                return None, f"its columns are {reader.fieldnames}"
            rows = [{k: float(v) for k, v in row.items() if v != ""} for row in reader]
    except (OSError, UnicodeDecodeError, ValueError, TypeError, csv.Error) as error:
        return None, first_line(error)[:200]
    if any("epoch" not in row or not row["epoch"].is_integer() for row in rows):
        return None, "a row has no whole epoch number"
    for row in rows:  # written back as it was read: "3", not "3.0"
        row["epoch"] = int(row["epoch"])
    return rows, None


def read_history(path) -> list[dict]:
    """Rows of a `history.csv` as dicts of floats (empty if the file does not exist).

    Raises:
        ValueError: the file is not a CSV of numbers with an "epoch" column (naming it).
    """
    path = Path(path)
    rows, problem = _history_rows(path)
    if problem is not None:
        raise ValueError(
            f"history={str(path)!r} is not a history.csv of keras_resvit ({problem}); "
            "expected a CSV with a row of numbers per epoch (epoch, loss, accuracy, ...)."
        )
    return rows
