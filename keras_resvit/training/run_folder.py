"""What a training run's folder holds, and how a run starts, resumes or refuses to.

`train()` writes `TRAIN_FILES` into its `output_dir` (`keras-resvit train` adds `CLI_FILES`),
records the arguments that define the run in `config.json` before training (its `result` is
filled in at the end), and keeps its resume state in `resume/`. A call into a folder holding
an interrupted run resumes it when the arguments match and refuses otherwise; a finished run
is kept unless `overwrite`. A folder holds one kind of run: `config.json` names it ("run"),
and a run of another kind (`pretrain_masked_patches`) is refused, `overwrite` or not. Every
name read back from the folder is validated: a resume state may only point at weights files
of its own pattern inside `resume/`.
"""

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

from keras_resvit.base.files import read_json
from keras_resvit.base.output_folders import abandoned, output_folder
from keras_resvit.base.processes import is_chief

RESUME_DIR = "resume"
CONFIG_FILE = "config.json"
# The key of `config.json` naming the kind of run that wrote the folder: the function's name.
KIND = "run"
TRAIN = "train"
# What a run writes into its folder (the CLI adds its TF Lite export): names that must be new,
# or written there by an earlier run of keras_resvit.
RUN_FILES = (
    CONFIG_FILE,
    "history.csv",
    "curves.png",
    "last.keras",
    "best.keras",
    "last.classes.json",
    "best.classes.json",
    "model.tflite",
    "model.classes.json",
    RESUME_DIR,
    "tensorboard",
)
# What only `keras-resvit train` writes, after the run (its curves and TF Lite export): the
# files of an earlier run are cleared with it; a user's own there (`kr.viz.plot_history`'s
# curves.png beside a `kr.train` run) are neither refused nor touched.
CLI_FILES = ("curves.png", "model.tflite", "model.classes.json")
# What `train()` itself writes: a user's file of one of these names is refused.
TRAIN_FILES = tuple(name for name in RUN_FILES if name not in CLI_FILES)
STATE_FILE = "state.json"
# What `keras.callbacks.TensorBoard` writes into tensorboard/ (and its train/, validation/).
TENSORBOARD_EVENTS = "events.out.tfevents."
# The only names a resume folder's state may point to: weights files the callback wrote.
WEIGHTS_NAME = re.compile(r"step(\d+)\.weights\.h5")
# ... and the LoRA layers' raw variables beside them (`training.lora_state`).
LORA_NAME = re.compile(r"step(\d+)\.lora\.npz")
# What the callback writes into the resume folder: its state, weights files and the
# temporaries of their atomic writes (see `keras_resvit.base.files.atomic_path`).
WRITTEN_NAME = re.compile(
    r"state\.json|step\d+\.(weights\.h5|lora\.npz)"
    r"|\.(state|step\d+)\.tmp-[A-Za-z0-9]+-\d+-[0-9a-f]{8}\.(json|weights\.h5|lora\.npz)"
)


def _state_problem(state, directory: Path):
    """What is wrong with a parsed state, or None: it must name a weights file of ours."""
    keys = {"step", "weights", "best"}
    if not isinstance(state, dict) or set(state) - {"metrics", "plateau", "lora"} != keys:
        return 'it is not {"step", "weights", "best"} (and "metrics", "plateau", "lora")'
    step, weights, best = state["step"], state["weights"], state["best"]
    plateau = state.get("plateau", {"best": None, "wait": 0, "cooldown_counter": 0})
    if not (
        isinstance(plateau, dict)
        and set(plateau) == {"best", "wait", "cooldown_counter"}
        and all(isinstance(v, (int, float, type(None))) for v in plateau.values())
    ):
        return "its plateau is not {best, wait, cooldown_counter} numbers"
    metrics = state.get("metrics", [])
    if not isinstance(metrics, list) or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in metrics
    ):
        return "its metrics are not a list of numbers"
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return f"step={step!r} is not a step count"
    # A bare file name of the callback's own pattern: nothing outside the folder, no "..".
    if not isinstance(weights, str) or not WEIGHTS_NAME.fullmatch(weights):
        return f"weights={weights!r} is not a weights file this package writes (stepN.weights.h5)"
    if not (directory / weights).is_file():
        return f"its weights file {weights!r} is missing"
    lora = state.get("lora")
    if lora is not None and (not isinstance(lora, str) or not LORA_NAME.fullmatch(lora)):
        return f"lora={lora!r} is not a LoRA file this package writes (stepN.lora.npz)"
    if lora is not None and not (directory / lora).is_file():
        return f"its LoRA file {lora!r} is missing"
    if best is not None and (not isinstance(best, (int, float)) or not math.isfinite(best)):
        return f"best={best!r} is not a finite number"
    return None


def read_resume_state(directory) -> dict | None:
    """The last resumable state saved in `directory` ({"step", "weights", "best"}), or None
    when there is none.

    Raises:
        ValueError: the state file is unreadable, of another schema, or points anywhere but a
            weights file of this package in `directory` (naming the file and the remedy).
    """
    directory = Path(directory)
    path = directory / STATE_FILE
    if not path.exists():
        return None
    return read_json(
        path,
        lambda state: _state_problem(state, directory),
        "resume state",
        "it is not a state this package wrote: start afresh with overwrite=True "
        "(keras-resvit train --overwrite) or a new output_dir.",
    )


def clear_resume_state(directory) -> None:
    """Deletes what `ResumeCheckpoint` wrote in `directory` (its state, weights files and
    temporaries), then the folder if nothing else is left in it."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        if WRITTEN_NAME.fullmatch(path.name) and path.is_file():
            path.unlink()
    if not any(directory.iterdir()):
        directory.rmdir()


def run_record(model, spec, recipe, epochs, batch_size, steps_per_epoch, **settings):
    """The arguments that define a run, as JSON values: a run resumes only when they match."""
    record = {
        KIND: TRAIN,
        "model": model.name,
        "parameters": int(model.count_params()),
        "input_shape": list(model.input_shape[1:]),
        "num_classes": int(model.output_shape[-1]),
        "recipe": recipe if isinstance(recipe, str) else "custom",
        "recipe_fields": dict(vars(spec)),
        "epochs": epochs,
        "batch_size": batch_size,
        "steps_per_epoch": steps_per_epoch,
        **settings,
    }
    return json.loads(json.dumps(record))


def _flat(record):
    # The kind is checked first (`check_run_kind`); configs from before it was recorded lack it.
    flat = {k: v for k, v in record.items() if k not in ("recipe_fields", KIND)}
    flat.update({f"recipe.{k}": v for k, v in record.get("recipe_fields", {}).items()})
    return flat


def run_kind(out) -> str | None:
    """The kind of run whose `config.json` is in the folder `out` ("train",
    "pretrain_masked_patches"), or None where there is none or it is unreadable. A config of
    a run from before kinds were recorded is a `train()` run's."""
    try:
        config = json.loads((Path(out) / CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return str(config.get(KIND, TRAIN)) if isinstance(config, dict) else None


def check_run_kind(argument: str, out, kind: str, remedy: str) -> None:
    """Refuses a folder `out` that holds a run of another kind than `kind`, whose files a run
    of `kind` would overwrite or delete; `remedy`: the way out, for the message."""
    there = run_kind(out)
    if there is not None and there != kind:
        raise ValueError(
            f"{argument}={str(out)!r} holds a {there} run (its {CONFIG_FILE} says so), whose "
            f"files {kind} would overwrite; {remedy}"
        )


def previous_run(out, overwrite):
    """The `config.json` of an earlier run in `out`, or None (always None with `overwrite`:
    that run is replaced); refuses to replace a finished run otherwise, and a run of another
    kind in any case."""
    check_run_kind(
        "output_dir",
        out,
        TRAIN,
        "pass another output_dir (overwrite=True replaces only an earlier train run).",
    )
    path = out / CONFIG_FILE
    if overwrite or not path.exists():
        return None
    config = read_json(
        path,
        lambda value: None if isinstance(value, dict) and "result" in value else "no result",
        "run config",
        "it is not the config.json of a keras_resvit run: pass a new output_dir.",
    )
    if config["result"] is not None:
        raise ValueError(
            f"output_dir={str(out)!r} holds a finished run ({CONFIG_FILE}, last.keras); pass "
            "overwrite=True (keras-resvit train --overwrite) to replace it, or a new output_dir."
        )
    return config


def resume_state(out, previous, run, overwrite):
    """The resume state to continue from, or None for a fresh start; refuses to continue a
    run with other arguments, and to replace it unless `overwrite`."""
    if overwrite:
        return None
    state = read_resume_state(out / RESUME_DIR)
    if state is None:
        return None
    remedy = (
        "pass overwrite=True (keras-resvit train --overwrite) to start afresh there, or a new "
        "output_dir."
    )
    if previous is None:
        raise ValueError(
            f"output_dir={str(out)!r} holds a resume state without the {CONFIG_FILE} of its "
            f"run, so its arguments are unknown; {remedy}"
        )
    before, now = _flat(previous), _flat(run)
    changed = [key for key in now if before.get(key) != now[key]]
    if not changed:
        return state
    shown = "; ".join(f"{key}: {before.get(key)!r} there, {now[key]!r} now" for key in changed[:4])
    raise ValueError(
        f"output_dir={str(out)!r} holds an interrupted run with other arguments ({shown}). Run "
        f"with the same arguments to resume it, or {remedy}"
    )


def _clear_tensorboard(folder: Path):
    """Deletes the event files TensorBoard wrote in `folder` and its sub-folders, then the
    folders left empty: a user's own files there stay, with their folders."""
    for root, _, names in os.walk(folder, topdown=False):
        for name in names:
            if name.startswith(TENSORBOARD_EVENTS):
                os.unlink(os.path.join(root, name))
        with contextlib.suppress(OSError):  # not empty: kept
            os.rmdir(root)


def clear_run(out, owned):
    """Removes an earlier run's outputs from `out`: the `TRAIN_FILES` (the caller owns them:
    `output_folder`), and the `CLI_FILES` among `owned` (the names its record lists)."""
    clear_resume_state(out / RESUME_DIR)
    for name in RUN_FILES:
        path = out / name
        if name in CLI_FILES and name not in owned:
            continue
        if name == "tensorboard" and path.is_dir():
            _clear_tensorboard(path)
        elif path.is_file():
            path.unlink()


PROCESS_FOLDER_PREFIX = "keras-resvit-process-"
# Written into each private folder when it is made: a run folder a user happened to give a
# name of that pattern (it holds no such file) is never taken for one.
PROCESS_FOLDER_MARK = ".keras-resvit-process"


def _remove_abandoned_process_folders():
    """Removes the private folders that killed processes of this user's earlier runs left in
    the temporary folder (each holds a copy of the run's resume state)."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    for folder in Path(tempfile.gettempdir()).glob(f"{PROCESS_FOLDER_PREFIX}*"):
        try:
            mine = uid is None or folder.lstat().st_uid == uid
            marked = (folder / PROCESS_FOLDER_MARK).is_file()
        except OSError:
            continue
        if mine and marked and abandoned(folder):
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def process_folder(out: Path):
    """The folder this process writes a run into (an `output_folder`): `out` on process 0;
    on the run's other processes a private temporary folder, removed at the end (or, when
    the process is killed, by the next run's processes on this machine).

    Every process runs the same steps, saves included (under JAX a save reads variables that
    span every process, so all of them must take part), but only process 0's files are kept.
    The others read the run's earlier state (`config.json`, `resume/`) from `out`, which
    must therefore be a folder every process sees (a shared file system or bucket)."""
    if is_chief():
        with output_folder("output_dir", out, TRAIN_FILES) as folder:
            yield folder
        return
    _remove_abandoned_process_folders()
    private = Path(tempfile.mkdtemp(prefix=PROCESS_FOLDER_PREFIX))
    try:
        (private / PROCESS_FOLDER_MARK).touch()
        with output_folder("output_dir", private, TRAIN_FILES) as folder:
            yield folder
    finally:
        shutil.rmtree(private, ignore_errors=True)
