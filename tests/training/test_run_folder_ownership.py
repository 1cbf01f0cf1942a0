"""What the package claims in an output folder: only files it wrote, one kind of run per folder,
its own lock and record only, and a folder it cannot write named before any work."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit import cli_train
from keras_resvit.base import files
from keras_resvit.base.files import check_output_path, write_json
from keras_resvit.base.output_folders import LOCK, MANIFEST, output_folder
from keras_resvit.training.run_folder import RUN_FILES, clear_run
from tests.conftest import random_images, tiny_vit

pytestmark = pytest.mark.one_backend(
    "tensorflow",
    reason="a run folder's bookkeeping (Python and files); training and resuming are tested "
    "on both backends in test_train.py",
)

ROOT = Path(__file__).parents[2]

TINY = {"depth": 8, "stem": "cifar", "input_shape": (16, 16, 3), "num_classes": 3, "width": 0.25}


def _train(out, **kwargs):
    data = kr.data.load_dataset(
        (random_images(16, 16, 16), np.arange(16) % 3), "train", batch_size=8
    )
    kwargs = {"epochs": 2, "output_dir": out, "verbose": 0, **kwargs}
    return kr.train(kr.build_resnet(**TINY), data, **kwargs)


def _pretrain(out, **kwargs):
    data = kr.data.load_dataset((random_images(8, 32, 32), np.zeros(8, "int32")), batch_size=4)
    return kr.pretrain_masked_patches(tiny_vit(), data, output_dir=out, verbose=0, **kwargs)


def _snapshot(folder):
    """The files in `folder`, but a lock (a killed run's is taken over by the next run)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != LOCK
    }


KILL = textwrap.dedent(
    """
    import os, sys
    import keras
    from tests.training.test_run_folder_ownership import _train

    class Killed(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            os._exit(9)  # after the run's last save: nothing of what ends a run runs

    _train(sys.argv[1], callbacks=[Killed()])
    """
)


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """The folder of a run killed after its last save (step 4 of 4), before it ended."""
    out = tmp_path_factory.mktemp("killed") / "run"
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend()}
    child = subprocess.run(
        [sys.executable, "-c", KILL, str(out)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert child.returncode == 9, child.stderr[-2000:]
    assert (out / "resume" / "state.json").is_file() and (out / LOCK).is_file()
    return out


def _copy(killed, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(killed, out, symlinks=True)
    return out


def test_pretraining_refuses_a_training_run_and_leaves_it_resumable(killed, tmp_path):
    out = _copy(killed, tmp_path)
    before = _snapshot(out)
    with pytest.raises(ValueError) as info:
        _pretrain(out)
    message = str(info.value)
    assert f"output_dir={str(out)!r} holds a train run" in message
    assert "pass another output_dir" in message
    assert _snapshot(out) == before
    # The training run resumes on its own epochs.
    assert _train(out).summary["resumed_from_step"] == 4
    rows = (out / "history.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,") and [row.split(",")[0] for row in rows[1:]] == ["1", "2"]
    # A finished training run is refused the same way.
    before = _snapshot(out)
    with pytest.raises(ValueError, match="holds a train run"):
        _pretrain(out)
    assert _snapshot(out) == before


def test_training_refuses_a_pretraining_run_even_with_overwrite(tmp_path):
    _pretrain(tmp_path)
    before = _snapshot(tmp_path)
    for overwrite in (False, True):
        with pytest.raises(ValueError) as info:
            _train(tmp_path, overwrite=overwrite)
        message = str(info.value)
        assert f"output_dir={str(tmp_path)!r} holds a pretrain_masked_patches run" in message
        assert "pass another output_dir" in message
    assert _snapshot(tmp_path) == before
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["run"] == "pretrain_masked_patches" and config["result"]["steps"] == 2
    # A finished pre-training is kept, unless asked to replace it.
    with pytest.raises(ValueError, match="holds a finished pre-training.*overwrite=True"):
        _pretrain(tmp_path)
    assert _snapshot(tmp_path) == before
    _pretrain(tmp_path, overwrite=True)
    assert json.loads((tmp_path / MANIFEST).read_text()) == [
        "config.json",
        "history.csv",
        "pretrained.keras",
    ]
    # The command line says so before it reads any data.
    with pytest.raises(ValueError, match=r"--output=.* holds a pretrain_masked_patches run"):
        cli_train._check_previous_run(str(tmp_path), overwrite=True)


def test_a_killed_run_claims_only_what_it_wrote(killed, tmp_path):
    out = _copy(killed, tmp_path)
    assert json.loads((out / MANIFEST).read_text()) == ["config.json", "history.csv", "resume"]
    # The user keeps files of their own there, at names a run may write.
    for name in ("curves.png", "model.tflite", "best.keras"):
        (out / name).write_text("the user's")
    before = _snapshot(out)
    for overwrite in (False, True):
        with pytest.raises(ValueError) as info:
            _train(out, overwrite=overwrite)
        assert "holds best.keras, which keras_resvit did not write" in str(info.value)
    assert _snapshot(out) == before
    (out / "best.keras").unlink()
    # The killed run's lock is taken over, and removed at the end. Names that only
    # `keras-resvit train` writes are the user's here: kept, never claimed.
    assert _train(out).summary["resumed_from_step"] == 4
    assert not (out / LOCK).exists()
    for name in ("curves.png", "model.tflite"):
        assert (out / name).read_text() == "the user's"
        assert name not in json.loads((out / MANIFEST).read_text())


def test_each_name_is_claimed_when_written_and_not_before(tmp_path):
    with output_folder("output_dir", tmp_path, ["a.txt", "b.txt", "logs"]) as folder:
        folder.start_writing()
        assert not (tmp_path / MANIFEST).exists()
        write_json(tmp_path / "a.txt", {})
        assert json.loads((tmp_path / MANIFEST).read_text()) == ["a.txt"]
        # A folder a library writes itself is claimed with the package's next write.
        (tmp_path / "logs").mkdir()
        write_json(tmp_path / "a.txt", {})
        assert json.loads((tmp_path / MANIFEST).read_text()) == ["a.txt", "logs"]
        write_json(tmp_path / "other.txt", {})  # not one of the run's names
    assert json.loads((tmp_path / MANIFEST).read_text()) == ["a.txt", "logs"]
    assert not files.WRITE_HOOKS


def test_clearing_a_run_keeps_the_users_files_in_its_tensorboard_folder(tmp_path):
    with output_folder("output_dir", tmp_path, RUN_FILES) as folder:
        folder.start_writing()
        for part in ("train", "validation"):
            (tmp_path / "tensorboard" / part).mkdir(parents=True)
            (tmp_path / "tensorboard" / part / "events.out.tfevents.1.host.2.v2").write_bytes(b"")
        write_json(tmp_path / "config.json", {"result": None})
    (tmp_path / "tensorboard" / "train" / "notes.txt").write_text("the user's")
    clear_run(tmp_path, folder.owned)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        MANIFEST,
        "tensorboard",
        "tensorboard/train",
        "tensorboard/train/notes.txt",
    ]


@pytest.mark.parametrize(
    "name, text",
    [(LOCK, "the user's notes"), (MANIFEST, '{"my": "settings"}'), (MANIFEST, '["../up"]')],
    ids=["lock", "record_not_a_list", "record_of_a_path"],
)
def test_a_lock_or_record_the_package_did_not_write_is_refused_and_kept(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError) as info:
        _train(tmp_path, epochs=1)
    message = str(info.value)
    assert f"output_dir={str(tmp_path)!r} holds {name}, which is not" in message
    assert "Move it away, or pass another output_dir" in message
    assert os.listdir(tmp_path) == [name] and (tmp_path / name).read_text() == text


def _read_only(monkeypatch, folder):
    """`folder` as a user without write access to it sees it (the tests may run as root)."""
    access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode: access(path, mode) and str(path) != str(folder)
    )


def test_a_folder_that_is_not_writable_is_named_before_any_work(tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    _read_only(monkeypatch, out)
    words = re.escape(f"{str(out)!r} is a folder that is not writable; pass a folder you can")
    with pytest.raises(ValueError, match=f"^output_dir={words}"):
        check_output_path("output_dir", out, folder=True)
    with pytest.raises(ValueError, match=f"^output_dir={words}"):
        _train(out)
    with pytest.raises(ValueError, match=f"^output_dir={words}"):
        _pretrain(out)
    with pytest.raises(ValueError, match=f"^--output={words}"):
        cli_train._check_previous_run(str(out), overwrite=False)
    assert not os.listdir(out)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write read-only folders")
def test_a_read_only_folder_is_one_clear_error(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(ValueError, match="is a folder that is not writable"):
            _train(out)
    finally:
        out.chmod(0o755)


def test_a_users_curves_beside_a_run_are_kept_and_the_clis_cleared(tmp_path):
    # getting_started.md plots a `kr.train` run's curves into its folder: the next run,
    # `overwrite=True` or not, refused the folder ("holds curves.png, which keras_resvit did
    # not write"). The user's plot is theirs to keep; an earlier CLI run's plot is cleared.
    out = tmp_path / "run"
    history = _train(out)
    kr.viz.plot_history(history, out / "curves.png")
    plot = (out / "curves.png").read_bytes()
    with pytest.raises(ValueError, match="holds a finished run"):
        _train(out)
    _train(out, overwrite=True)
    assert (out / "curves.png").read_bytes() == plot
    assert "curves.png" not in json.loads((out / MANIFEST).read_text())
    # The plot of `keras-resvit train`, which records it, goes with its run.
    (out / "curves.png").unlink()
    with output_folder("--output", out, ["curves.png"]) as folder:
        folder.start_writing()
        kr.viz.plot_history(history, out / "curves.png")
    assert "curves.png" in json.loads((out / MANIFEST).read_text())
    _train(out, overwrite=True)
    assert not (out / "curves.png").exists()
