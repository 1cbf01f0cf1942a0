"""Atomic writes: a save that fails or is killed half-way leaves the previous file intact."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import matplotlib.figure
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.files import save_model, write_json
from keras_resvit.predict import write_class_names
from keras_resvit.training.callbacks import HistoryCSV, ResumeCheckpoint
from keras_resvit.viz import plot_history
from tests.conftest import random_images

TINY = {"depth": 8, "stem": "cifar", "input_shape": (8, 8, 3), "num_classes": 2, "width": 0.25}


class DiskFull(OSError):
    pass


def _half_then_fail(path):
    """What a crash mid-write leaves: the first bytes of a file, then an error."""
    with open(path, "wb") as f:
        f.write(b"\x00partial")
    raise DiskFull("disk full")


def _tiny_model():
    model = kr.build_resnet(**TINY)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    return model


def _keras_file(tmp_path, monkeypatch):
    model, path = _tiny_model(), tmp_path / "last.keras"

    def write():
        save_model(model, path)

    return path, write, lambda: monkeypatch.setattr(model, "save", _half_then_fail)


def _json_file(tmp_path, monkeypatch):
    path = tmp_path / "config.json"

    def fail(data, f, **kwargs):
        f.write('{"half": ')
        raise DiskFull("disk full")

    return (
        path,
        lambda: write_json(path, {"epochs": 3}),
        lambda: monkeypatch.setattr(json, "dump", fail),
    )


def _class_names(tmp_path, monkeypatch):
    path = tmp_path / "model.classes.json"
    return (
        path,
        lambda: write_class_names(tmp_path / "model.keras", ["cat", "dog"]),
        lambda: monkeypatch.setattr(
            "pathlib.Path.write_text", lambda self, text: _half_then_fail(self)
        ),
    )


def _history_csv(tmp_path, monkeypatch):
    path = tmp_path / "history.csv"
    callback = HistoryCSV(path)
    callback.set_model(_tiny_model())

    def fail(self, rows):
        self.writerow(rows[0])
        raise DiskFull("disk full")

    return (
        path,
        lambda: callback.on_epoch_end(0, {"loss": 1.0}),
        lambda: monkeypatch.setattr(csv.DictWriter, "writerows", fail),
    )


def _curves_png(tmp_path, monkeypatch):
    path = tmp_path / "curves.png"
    return (
        path,
        lambda: plot_history({"loss": [2.0, 1.0]}, path),
        lambda: monkeypatch.setattr(
            matplotlib.figure.Figure, "savefig", lambda self, tmp, **kw: _half_then_fail(tmp)
        ),
    )


def _resume_weights(tmp_path, monkeypatch):
    callback = ResumeCheckpoint(tmp_path)
    model = _tiny_model()
    callback.set_model(model)

    def break_saves():
        monkeypatch.setattr(model, "save_weights", _half_then_fail)
        # The next save writes a new weights file: the failure must keep state and old file.
        model.optimizer.iterations.assign(7)

    return tmp_path / "state.json", callback.save, break_saves


WRITERS = {
    "keras_checkpoint": _keras_file,
    "config_json": _json_file,
    "class_names": _class_names,
    "history_csv": _history_csv,
    "curves_png": _curves_png,
    "resume_weights": _resume_weights,
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_failure_during_a_write_keeps_the_previous_file(writer, tmp_path, monkeypatch):
    path, write, break_writes = WRITERS[writer](tmp_path, monkeypatch)
    write()
    before = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert path.name in before and len(before[path.name]) > 0
    break_writes()
    with pytest.raises(DiskFull):
        write()
    after = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # byte-identical, and no temporary file left behind


SAVE_FOREVER = textwrap.dedent(
    """
    import sys
    import keras
    import keras_resvit as kr
    from keras_resvit.files import save_model

    keras.utils.set_random_seed(0)
    model = kr.build_resnet(**{TINY!r})
    while True:
        save_model(model, sys.argv[1])
        print("saved", flush=True)
    """
).replace("{TINY!r}", repr(TINY))


@pytest.mark.slow
def test_process_killed_while_saving_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "last.keras"
    saver = subprocess.Popen(
        [sys.executable, "-c", SAVE_FOREVER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=os.environ.copy(),
    )
    try:
        for _ in range(3):  # a few complete saves, then a kill at an arbitrary point of one
            assert saver.stdout.readline().strip() == "saved"
        time.sleep(0.05)
    finally:
        saver.send_signal(signal.SIGKILL)
        saver.wait(timeout=60)
    assert saver.returncode == -signal.SIGKILL
    keras.utils.set_random_seed(0)
    expected = kr.build_resnet(**TINY)  # the net the subprocess saved, initialized alike
    images = random_images(2, 8, 8)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(kr.load_model(path)(images)),
        keras.ops.convert_to_numpy(expected(images)),
        rtol=1e-5,
        atol=1e-6,
    )
