"""`train()`'s output folder: owned, locked, resumed only with the same arguments, and never
a place where a user's file is overwritten or deleted."""

import importlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import keras_resvit as kr
from keras_resvit.base.files import atomic_path
from keras_resvit.base.output_folders import LOCK, MANIFEST, output_folder
from keras_resvit.training.callbacks import ResumeCheckpoint
from keras_resvit.training.run_folder import RUN_FILES, clear_resume_state
from keras_resvit.training.train import TrainingDivergedError
from tests.conftest import random_images

pytestmark = pytest.mark.one_backend(
    "tensorflow",
    reason="a run folder's bookkeeping (Python and files); training and resuming are tested "
    "on both backends in test_train.py",
)

train_module = importlib.import_module("keras_resvit.training.train")

TINY = {"depth": 8, "stem": "cifar", "input_shape": (16, 16, 3), "num_classes": 3, "width": 0.25}


def _model():
    return kr.build_resnet(**TINY)


def _data(batch_size=8, count=32, labels=None):
    labels = np.arange(count) % 3 if labels is None else labels
    return kr.data.load_dataset(
        (random_images(count, 16, 16), labels), "train", batch_size=batch_size
    )


def _train(out, data=None, **kwargs):
    kwargs = {"epochs": 2, "output_dir": out, "verbose": 0, **kwargs}
    return kr.train(_model(), _data() if data is None else data, **kwargs)


def _snapshot(folder):
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _interrupted_run(out, monkeypatch, **kwargs):
    """A run that saved its resume state after every epoch, then died before finishing."""

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(train_module, "finish_run", killed)
        with pytest.raises(KeyboardInterrupt):
            _train(out, **kwargs)
    assert (out / "resume" / "state.json").is_file()


@pytest.mark.parametrize(
    "name, make",
    [
        ("config.json", lambda p: p.write_text('{"my": "settings"}')),
        ("history.csv", lambda p: p.write_text("my,numbers\n1,2\n")),
        ("resume", lambda p: (p.mkdir(), (p / "notes.txt").write_text("mine"))),
    ],
    ids=["config", "history", "resume_folder"],
)
def test_files_the_package_did_not_write_are_never_overwritten(tmp_path, name, make):
    make(tmp_path / name)
    (tmp_path / "data.npy").write_bytes(b"unrelated")
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError) as info:
        _train(tmp_path)
    message = str(info.value)
    assert f"output_dir={str(tmp_path)!r}" in message and name in message
    assert "did not write" in message
    assert _snapshot(tmp_path) == before
    assert not (tmp_path / MANIFEST).exists()


def test_resume_folder_cleanup_deletes_only_what_the_run_wrote(tmp_path):
    resume = tmp_path / "resume"
    resume.mkdir()
    ours = ["state.json", "step8.weights.h5", ".step12.tmp-host-123-0123abcd.weights.h5"]
    for name in ours:
        (resume / name).write_bytes(b"x")
    (resume / "notes.txt").write_text("the user's")
    (resume / "step8.weights.h5.bak").write_text("the user's")
    clear_resume_state(resume)
    assert sorted(p.name for p in resume.iterdir()) == ["notes.txt", "step8.weights.h5.bak"]
    (resume / "notes.txt").unlink()
    (resume / "step8.weights.h5.bak").unlink()
    (resume / "state.json").write_text("{}")
    clear_resume_state(resume)
    assert not resume.exists()


def _owned_run_folder(out, state):
    """A run folder of the package's whose resume state reads `state`."""
    with output_folder("output_dir", out, RUN_FILES) as folder:
        folder.start_writing()
        (out / "config.json").write_text(json.dumps({"result": None}))
        (out / "resume").mkdir()
        (out / "resume" / "state.json").write_text(state)


@pytest.mark.parametrize(
    "state, words",
    [
        ('{"step": 4, "weights": "../victim.txt", "best": null}', ["'../victim.txt'"]),
        ('{"step": 4, "weights": "VICTIM", "best": null}', ["is not a weights file"]),
        ('{"step": 4, "weights": "step4.weights.h5", "best": null}', ["is missing"]),
        ('{"step": "4", "weights": "step4.weights.h5", "best": null}', ["step='4'"]),
        ('{"step": 4}', ["is not"]),
        ("[1, 2", ["not JSON"]),
    ],
    ids=["parent_path", "absolute_path", "missing_weights", "step_type", "schema", "not_json"],
)
def test_a_corrupt_or_foreign_resume_state_is_refused_and_nothing_is_deleted(
    tmp_path, state, words
):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "run"
    _owned_run_folder(out, state.replace("VICTIM", str(victim)))
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError) as info:
        _train(out)
    message = str(info.value)
    assert "state.json" in message and "overwrite=True" in message, message
    for word in words:
        assert word in message, message
    assert _snapshot(tmp_path) == before
    # The checkpoint callback reads the same state before it deletes the previous weights.
    model = _model()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    callback = ResumeCheckpoint(out / "resume")
    callback.set_model(model)
    with pytest.raises(ValueError, match="state.json"):
        callback.save()
    assert victim.read_text() == "keep me"


def test_overwrite_starts_afresh_over_a_corrupt_state(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "run"
    _owned_run_folder(out, '{"step": 4, "weights": "../victim.txt", "best": null}')
    (out / "config.json").write_text("not json")
    (out / "resume" / "notes.txt").write_text("the user's")
    _train(out, epochs=1, overwrite=True)
    assert victim.read_text() == "keep me"
    assert json.loads((out / "config.json").read_text())["result"]["epochs"] == 1
    assert sorted(p.name for p in (out / "resume").iterdir()) == ["notes.txt"]


def test_resume_weights_that_cannot_be_loaded(tmp_path, monkeypatch):
    _interrupted_run(tmp_path, monkeypatch)
    state = json.loads((tmp_path / "resume" / "state.json").read_text())
    (tmp_path / "resume" / state["weights"]).write_bytes(b"\x89HDF\r\n\x1a\ngarbage")
    with pytest.raises(ValueError, match=r"resume weights .*step\d+\.weights\.h5.*overwrite=True"):
        _train(tmp_path)


def test_a_run_resumes_only_with_its_own_arguments(tmp_path, monkeypatch):
    _interrupted_run(tmp_path, monkeypatch)
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError) as info:
        _train(tmp_path, data=_data(batch_size=16))
    message = str(info.value)
    assert "interrupted run with other arguments" in message
    assert "batch_size: 8 there, 16 now" in message and "steps_per_epoch: 4 there, 2 now" in message
    with pytest.raises(ValueError, match="epochs: 2 there, 3 now"):
        _train(tmp_path, epochs=3)
    with pytest.raises(ValueError, match="recipe: 'resnet_cifar' there, 'resnet_imagenet' now"):
        _train(tmp_path, recipe="resnet_imagenet")
    # Its best model was judged without validation data: none may come in now.
    with pytest.raises(ValueError, match="val_data: None there, .* now"):
        _train(tmp_path, val_data=(random_images(8, 16, 16), np.arange(8) % 3))
    assert _snapshot(tmp_path) == before
    # The same arguments: it was killed after its last save, so it only finishes.
    history = _train(tmp_path)
    assert history.summary["epochs"] == 2 and len(history.history["loss"]) == 2
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["batch_size"] == 8 and config["result"]["epochs"] == 2
    assert not (tmp_path / "resume").exists()
    # The rows read back at the resume are written as they were: epoch "1", not "1.0".
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == ["epoch", "1", "2"]


def test_a_finished_run_is_kept_unless_overwrite(tmp_path):
    _train(tmp_path, epochs=1, val_data=_data(count=8))
    assert (tmp_path / "best.keras").is_file()
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match="holds a finished run.*overwrite=True"):
        _train(tmp_path, epochs=1)
    assert _snapshot(tmp_path) == before
    _train(tmp_path, epochs=1, data=_data(batch_size=16), overwrite=True)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["batch_size"] == 16 and config["result"] is not None
    # The first run's best.keras does not survive into a run without validation.
    assert not (tmp_path / "best.keras").exists()
    assert (tmp_path / "last.keras").is_file()


def test_divergence_before_any_checkpoint_names_no_missing_folder(tmp_path):
    with pytest.raises(TrainingDivergedError) as info:
        _train(tmp_path, epochs=1, learning_rate=1e30)
    message = str(info.value)
    assert "no checkpoint had been saved" in message and "overwrite=True" in message
    assert "resume" not in message and not (tmp_path / "resume").exists()


HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from keras_resvit.base.output_folders import output_folder

    with output_folder("output_dir", sys.argv[1], ["config.json"]):
        print("locked", flush=True)
        time.sleep(600)
    """
)


def test_a_second_run_in_the_same_folder_is_refused_until_the_first_dies(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError) as info:
            _train(tmp_path)
        message = str(info.value)
        assert f"in use by another run (process {holder.pid})" in message
        assert not (tmp_path / "config.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    # The kernel released the killed holder's lock: the next run proceeds and cleans up.
    _train(tmp_path, epochs=1)
    assert (tmp_path / "last.keras").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [MANIFEST]


@pytest.mark.parametrize(
    "labels, data_kind, words",
    [
        ([0, 1, 2, 1] * 6 + [0, 1, 7, 2] + [0] * 4, "train", ["batch 4 has label 7", "3 classes"]),
        ([0, 1, 2, 1] * 6 + [0, 1.5, 2, 2] + [0] * 4, "float", ["batch 4 has label 1.5"]),
        ([0, 1, 2, 1] * 4 + [9] + [0] * 15, "val", ["val_data: batch 3 has label 9"]),
        ([0, 1, 2, 1] * 8, "nan", ["batch 2 has NaN or infinite pixels (image 3"]),
    ],
    ids=["train_label", "fractional_label", "val_label", "nan_pixels"],
)
def test_every_batch_is_checked_not_only_the_first(tmp_path, labels, data_kind, words):
    images = random_images(32, 16, 16)
    good = tf.data.Dataset.from_tensor_slices((images, np.arange(32) % 3)).batch(8)
    if data_kind == "nan":
        images[10, 4, 4, 0] = np.nan
    dtype = "float32" if data_kind == "float" else "int32"
    bad = tf.data.Dataset.from_tensor_slices((images, np.array(labels, dtype))).batch(8)
    train, val = (good, bad) if data_kind == "val" else (bad, None)
    with pytest.raises(ValueError) as info:
        _train(tmp_path, data=train, val_data=val, epochs=1)
    for word in words:
        assert word in str(info.value), str(info.value)
    assert not (tmp_path / "best.keras").exists() and not (tmp_path / "last.keras").exists()


def test_output_folder_records_what_it_wrote(tmp_path):
    with output_folder("output_dir", tmp_path, ["a.txt", "b.txt"]) as folder:
        folder.start_writing()
        assert not (tmp_path / MANIFEST).exists()  # a name is claimed as it is written
        with atomic_path(folder.path / "a.txt") as temporary:
            assert json.loads((tmp_path / MANIFEST).read_text()) == ["a.txt"]
            Path(temporary).write_text("ours")
    # b.txt was never written: it is not recorded as the package's.
    assert json.loads((tmp_path / MANIFEST).read_text()) == ["a.txt"]
    with output_folder("output_dir", tmp_path, ["b.txt"]):
        pass  # a run that never starts writing records nothing new
    assert json.loads((tmp_path / MANIFEST).read_text()) == ["a.txt"]
    (tmp_path / "c.txt").write_text("the user's")
    refused = pytest.raises(ValueError, match="holds c.txt, which keras_resvit did not write")
    with refused, output_folder("output_dir", tmp_path, ["c.txt"]):
        pass
    assert os.listdir(tmp_path) and (tmp_path / "c.txt").read_text() == "the user's"


def test_a_refused_run_claims_nothing_and_a_finished_run_only_what_it_wrote(tmp_path):
    wrong = _data(labels=np.arange(32) % 5)  # labels 0-4 for a 3-class model: refused
    with pytest.raises(ValueError, match="labels up to 4"):
        _train(tmp_path, data=wrong)
    (tmp_path / "best.keras").write_bytes(b"the user's own model")
    with pytest.raises(ValueError, match="holds best.keras, which keras_resvit did not write"):
        _train(tmp_path)
    assert (tmp_path / "best.keras").read_bytes() == b"the user's own model"
    (tmp_path / "best.keras").unlink()
    _train(tmp_path, epochs=1)  # no validation data: no best.keras, no tensorboard
    record = json.loads((tmp_path / MANIFEST).read_text())
    assert "best.keras" not in record and "tensorboard" not in record
    assert {"config.json", "last.keras", "history.csv"} <= set(record)
    (tmp_path / "tensorboard").mkdir()
    (tmp_path / "tensorboard" / "events.mine").write_bytes(b"the user's")
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match="holds tensorboard, which keras_resvit did not write"):
        _train(tmp_path, epochs=1, overwrite=True)
    assert _snapshot(tmp_path) == before


def test_a_run_that_cannot_start_leaves_the_finished_run_intact(tmp_path, monkeypatch):
    _train(tmp_path, epochs=1, val_data=_data(count=8))
    before = _snapshot(tmp_path)
    with pytest.raises(ImportError, match="tensorboard"):
        _train(tmp_path, epochs=1, overwrite=True, tensorboard=True)

    def broken(*args, **kwargs):
        raise ValueError("a recipe the optimizer cannot build")

    monkeypatch.setattr(train_module, "compile_model", broken)
    with pytest.raises(ValueError, match="the optimizer cannot build"):
        _train(tmp_path, epochs=1, overwrite=True)
    assert _snapshot(tmp_path) == before


def test_soft_validation_labels_with_integer_training_labels(tmp_path):
    images = random_images(16, 16, 16)
    labels = np.arange(16) % 3
    soft = np.eye(3, dtype="float32")[labels]
    val = tf.data.Dataset.from_tensor_slices((images, soft)).batch(8)
    history = _train(tmp_path, epochs=1, val_data=val)
    assert 0.0 <= history.history["val_accuracy"][0] <= 1.0
    assert np.isfinite(history.history["val_loss"][0])


def test_images_on_another_scale_warn(tmp_path):
    scaled = random_images(16, 16, 16) / 255.0
    data = tf.data.Dataset.from_tensor_slices((scaled, np.arange(16) % 3))
    with pytest.warns(UserWarning, match=r"train_data images range from 0.*multiply \[0, 1\]"):
        _train(tmp_path, data=data.batch(8), epochs=1)
    # Arrays are checked whole when read: one warning, not a second for their first batch.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(tmp_path / "arrays", data=(scaled, np.arange(16) % 3), epochs=1, batch_size=8)
    assert len([w for w in caught if " range from " in str(w.message)]) == 1


@pytest.mark.parametrize("name", [LOCK, "resume", "tensorboard", "config.json"])
def test_links_in_a_run_folder_are_never_followed(tmp_path, name):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "state.json").write_text("the user's")
    (elsewhere / "step5.weights.h5").write_bytes(b"the user's")
    (elsewhere / "notes.txt").write_text("the user's")
    out = tmp_path / "run"
    out.mkdir()
    target = elsewhere / "notes.txt" if name in (LOCK, "config.json") else elsewhere
    (out / name).symlink_to(target)
    if name != LOCK:  # a link at a name the package wrote before
        (out / MANIFEST).write_text(json.dumps([name]))
    before = _snapshot(elsewhere)
    with pytest.raises(ValueError, match=f"holds {re.escape(name)}") as info:
        _train(out, overwrite=True)
    assert "link" in str(info.value)
    assert _snapshot(elsewhere) == before and (out / name).is_symlink()


def test_a_broken_link_as_output_dir(tmp_path):
    (tmp_path / "run").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"output_dir=.*run' is a link to .*nowhere'.*not exist"):
        _train(tmp_path / "run")


@pytest.mark.parametrize(
    "read",
    [
        {"seed": 9},  # other images
        {"mixing": kr.data.Mixing(mixup_alpha=0.2)},  # soft labels, another loss
        {"shuffle": False},
        {"crop_ratio": 0.5},
        {"drop_remainder": True},
    ],
    ids=["images", "mixing", "shuffle", "crop_ratio", "drop_remainder"],
)
def test_a_run_resumes_only_on_the_same_data_read_the_same_way(tmp_path, monkeypatch, read):
    _interrupted_run(tmp_path, monkeypatch, data=_data(count=36))
    images = random_images(36, 16, 16, seed=read.pop("seed", 0))
    other = kr.data.load_dataset((images, np.arange(36) % 3), "train", batch_size=8, **read)
    with pytest.raises(ValueError, match=r"other arguments \(.*data: 'arrays\[train\] "):
        _train(tmp_path, data=other)
    # The same data read the same way resumes.
    _train(tmp_path, data=_data(count=36))


def test_validation_images_on_another_scale_warn(tmp_path):
    with pytest.warns(UserWarning, match="source images range"):
        scaled = kr.data.load_dataset((random_images(8, 16, 16) / 255.0, np.arange(8) % 3))
    with pytest.warns(UserWarning, match=r"val_data images range from 0"):
        _train(tmp_path, epochs=1, val_data=scaled)


def test_other_processes_remove_folders_that_killed_ones_left(tmp_path, monkeypatch):
    from keras_resvit.training import run_folder

    monkeypatch.setattr(run_folder.tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(run_folder, "is_chief", lambda: False)

    def left(name, mark=True):
        folder = tmp_path / f"{run_folder.PROCESS_FOLDER_PREFIX}{name}"
        folder.mkdir()
        if mark:
            (folder / run_folder.PROCESS_FOLDER_MARK).touch()
        (folder / MANIFEST).write_text('["config.json"]')
        (folder / LOCK).write_text("99999999\n")  # its holder was killed
        (folder / "config.json").write_text("{}")
        return folder

    killed = left("killed")
    users_run = left("a-users-run", mark=False)  # a finished run folder a user named so
    unknown = tmp_path / f"{run_folder.PROCESS_FOLDER_PREFIX}not-ours"  # no record: not ours
    unknown.mkdir()
    (unknown / "data.txt").write_text("a user's")
    with output_folder("output_dir", tmp_path / f"{run_folder.PROCESS_FOLDER_PREFIX}live", []):
        live = tmp_path / f"{run_folder.PROCESS_FOLDER_PREFIX}live"
        (live / MANIFEST).write_text("[]")
        with run_folder.process_folder(tmp_path / "shared") as folder:
            private = folder.path
            assert private.parent == tmp_path and private.is_dir()
            assert not killed.exists()
            assert (unknown / "data.txt").read_text() == "a user's"
            assert (users_run / "config.json").is_file()
            assert live.is_dir()  # held by a living process (here, this one)
    assert not private.exists()
