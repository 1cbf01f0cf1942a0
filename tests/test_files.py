"""Files the package writes: a save that fails or is killed half-way leaves the previous file
intact and no temporary behind, a folder export replaces nothing but an earlier SavedModel,
and every file gets the mode a plain `open()` would give."""

import csv
import importlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import keras
import matplotlib.figure
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.base import files as files_module
from keras_resvit.base import output_folders as folders_module
from keras_resvit.base.class_names import (
    CLASS_NAMES_KEY,
    KERAS_METADATA,
    embedded_class_names,
    model_class_names,
    set_class_names,
    write_class_names,
)
from keras_resvit.base.files import (
    _host,
    _stem_and_suffix,
    atomic_path,
    remove_stale_temporaries,
    write_json,
)
from keras_resvit.base.model_files import _copy_keras_archive, save_model
from keras_resvit.cli import main
from keras_resvit.training.callbacks import ResumeCheckpoint
from keras_resvit.training.history_csv import HistoryCSV
from keras_resvit.viz import plot_history
from tests.conftest import random_images

pytestmark = pytest.mark.one_backend(
    "tensorflow",
    reason="file handling (Python); what the files hold is tested on both backends elsewhere",
)

export_module = importlib.import_module("keras_resvit.export")
ownership = importlib.import_module("keras_resvit.export.ownership")

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


def _named_keras_file(tmp_path, monkeypatch):
    """A checkpoint with class names inside: Keras' archive is copied with the names added."""
    model, path = _tiny_model(), tmp_path / "last.keras"

    def fail(source, target, *args):
        target.write(b"\x00partial")
        raise DiskFull("disk full")

    return (
        path,
        lambda: save_model(model, path, class_names=["cat", "dog"]),
        lambda: monkeypatch.setattr(files_module.shutil, "copyfileobj", fail),
    )


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
    (tmp_path / "model.keras").write_bytes(b"a model")  # names are written beside a model
    return (
        path,
        lambda: write_class_names(tmp_path / "model.keras", ["cat", "dog"]),
        lambda: monkeypatch.setattr(
            "pathlib.Path.write_text", lambda self, text: _half_then_fail(self)
        ),
    )


def _history_csv(tmp_path, monkeypatch):
    path = tmp_path / "history.csv"
    callback = HistoryCSV(path, steps_per_epoch=1)
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
    "keras_checkpoint_with_class_names": _named_keras_file,
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


def _fail_creating(monkeypatch):
    monkeypatch.setattr(files_module.os, "open", _failing)


def _fail_renaming(monkeypatch):
    monkeypatch.setattr(files_module.os, "replace", _failing)


@pytest.mark.parametrize(
    "step, break_step",
    [("create", _fail_creating), ("write", None), ("rename", _fail_renaming)],
    ids=["create", "write", "rename"],
)
def test_failure_at_each_step_of_an_atomic_write(tmp_path, monkeypatch, step, break_step):
    path = tmp_path / "config.json"
    write_json(path, {"epochs": 3})
    before = _snapshot(tmp_path)

    def write():
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            f.write('{"half": ')
            if step == "write":
                raise DiskFull("disk full")
            f.write("1}")

    if break_step:
        break_step(monkeypatch)
    with pytest.raises(DiskFull):
        write()
    assert _snapshot(tmp_path) == before


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
    # The kill may have left a temporary beside it; the next save to the path removes it.
    save_model(kr.load_model(path), path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.keras"]


# Temporaries a killed writer left behind, and their cleanup by the next write.


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _temporary(path, pid, kind="tmp"):
    stem, suffix = _stem_and_suffix(path)
    return path.with_name(f".{stem}.{kind}-{_host()}-{pid}-0123abcd{suffix}")


def test_next_write_removes_what_a_dead_writer_left_and_keeps_a_live_ones(tmp_path):
    path = tmp_path / "last.keras"
    dead = _temporary(path, _dead_pid())
    dead.write_bytes(b"half a checkpoint")
    dead_folder = _temporary(tmp_path / "model.tflite", _dead_pid())
    dead_folder.mkdir()  # an export's scratch folder
    (dead_folder / "model.keras").write_bytes(b"x" * 1000)
    live = _temporary(path, os.getpid())  # another thread of this process may be writing
    live.write_bytes(b"in progress")
    other = (
        tmp_path / ".last.tmp-otherhost-1-0123abcd.keras"
    )  # another host's: its pid says nothing
    other.write_bytes(b"x")
    save_model(_tiny_model(), path)
    write_json(tmp_path / "model.tflite", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, other.name, "last.keras", "model.tflite"]
    )


# Export into folders: only an earlier SavedModel is ever replaced, in one atomic step.


def _fake_converter(content):
    """Stands in for the TensorFlow conversion: writes a SavedModel-shaped folder (or a file)
    holding `content`, so the tests exercise the file handling alone."""

    def convert(model, target, format, quantization, calibration, scratch, class_names):
        target = Path(target)
        if format == "saved_model":
            (target / "variables").mkdir(parents=True)
            (target / "saved_model.pb").write_bytes(content)
            (target / "variables" / "variables.index").write_bytes(content)
        else:
            target.write_bytes(content)

    return convert


@pytest.fixture
def fake_export(monkeypatch):
    written = []

    def use(content):
        convert = _fake_converter(content)
        monkeypatch.setattr(export_module, "_convert", convert)
        # What the fake converter wrote stands for an artifact `export` marked as its own.
        written.append(content)
        monkeypatch.setattr(
            ownership, "exported_here", lambda path, format: any(_holds(path, c) for c in written)
        )
        monkeypatch.setattr(
            export_module, "_convert_in_subprocess", lambda source, *args: convert(None, *args)
        )

    return use


def _holds(path, content):
    path = Path(path) / "saved_model.pb" if Path(path).is_dir() else Path(path)
    return path.is_file() and path.read_bytes() == content


def _export(model, path, format="saved_model"):
    return kr.export(model, path, format=format, check=False, verbose=False)


def _snapshot(folder):
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_cli_export_into_a_folder_with_other_files_refuses_and_keeps_them(tmp_path, capsys):
    # The reported case: `keras-resvit export d/m.keras d --format saved_model` deleted d.
    folder = tmp_path / "d"
    folder.mkdir()
    _tiny_model().save(folder / "m.keras")
    (folder / "notes.txt").write_text("keep")
    before = _snapshot(tmp_path)
    code = main(["export", str(folder / "m.keras"), str(folder), "--format", "saved_model"])
    err = capsys.readouterr().err
    assert code == 2 and "is not an earlier SavedModel" in err and "m.keras" in err, err
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("contents", ["user_files", "empty"])
def test_export_into_the_current_folder_is_refused(tmp_path, monkeypatch, fake_export, contents):
    fake_export(b"new")
    if contents == "user_files":
        (tmp_path / "train.py").write_text("print('mine')")
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "x.npy").write_bytes(b"mine")
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match="path='.'"):
        _export(_tiny_model(), ".")
    assert _snapshot(tmp_path) == before and tmp_path.is_dir()


def _failing(*args, **kwargs):
    raise DiskFull("disk full")


def _break_exchange(monkeypatch):
    monkeypatch.setattr(folders_module, "_exchange", _failing)


def _fallback_second_rename_fails(monkeypatch):
    monkeypatch.setattr(folders_module, "_exchange", lambda a, b: False)
    renames = []
    real = os.rename

    def rename(a, b):
        renames.append((a, b))
        if len(renames) == 2:  # the finished folder onto the target, after the old one moved
            raise DiskFull("disk full")
        real(a, b)

    monkeypatch.setattr(folders_module.os, "rename", rename)


def _break_conversion(monkeypatch):
    monkeypatch.setattr(export_module, "_convert", _failing)
    monkeypatch.setattr(export_module, "_convert_in_subprocess", _failing)


SWAP_FAULTS = {
    "writer": _break_conversion,
    "exchange": _break_exchange,
    "fallback_rename": _fallback_second_rename_fails,
}


@pytest.mark.parametrize("fault", sorted(SWAP_FAULTS))
def test_failure_while_replacing_a_saved_model_keeps_the_old_one(
    tmp_path, monkeypatch, fake_export, fault
):
    fake_export(b"old")
    target = tmp_path / "sm"
    model = _tiny_model()
    _export(model, target)
    before = _snapshot(tmp_path)
    fake_export(b"new")
    SWAP_FAULTS[fault](monkeypatch)
    with pytest.raises(DiskFull):
        _export(model, target)
    assert _snapshot(tmp_path) == before  # the old SavedModel, and no temporary left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sm"]


def test_a_folder_with_a_lone_saved_model_pb_is_not_replaced(tmp_path, fake_export):
    fake_export(b"new")
    target = tmp_path / "sm"
    target.mkdir()
    (target / "saved_model.pb").write_text("a user's own file")
    with pytest.raises(ValueError, match=r"sm' exists and is not an earlier SavedModel \(it lacks"):
        _export(_tiny_model(), target)
    assert _snapshot(tmp_path) == {"sm/saved_model.pb": b"a user's own file"}


def test_a_saved_model_holding_a_users_assets_is_not_replaced(tmp_path, fake_export):
    """A SavedModel the user wrote (with a vocabulary in assets/) is not an image model's
    export: replacing it would delete their files."""
    fake_export(b"new")
    target = tmp_path / "sm"
    (target / "variables").mkdir(parents=True)
    (target / "assets").mkdir()
    (target / "saved_model.pb").write_bytes(b"theirs")
    (target / "variables" / "variables.index").write_bytes(b"theirs")
    (target / "assets" / "vocab.txt").write_text("the user's vocabulary")
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"not an earlier SavedModel \(it holds assets/vocab.txt"):
        _export(_tiny_model(), target)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two_renames"])
def test_an_earlier_saved_model_is_replaced_whole(tmp_path, monkeypatch, fake_export, exchange):
    if not exchange:
        monkeypatch.setattr(folders_module, "_exchange", lambda a, b: False)
    fake_export(b"old")
    target = tmp_path / "sm"
    model = _tiny_model()
    _export(model, target)
    (target / "assets").mkdir()  # what Keras' exporter also writes
    fake_export(b"new")
    _export(model, target)
    assert _snapshot(tmp_path) == {
        "sm/saved_model.pb": b"new",
        "sm/variables/variables.index": b"new",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sm"]


def test_a_kill_between_the_two_renames_is_undone_by_the_next_export(
    tmp_path, monkeypatch, fake_export
):
    fake_export(b"old")
    target = tmp_path / "sm"
    model = _tiny_model()
    _export(model, target)
    before = _snapshot(tmp_path)
    # What a writer killed after its first rename leaves: the old folder under its backup name.
    os.rename(target, _temporary(target, _dead_pid(), kind="old"))
    _break_conversion(monkeypatch)
    with pytest.raises(DiskFull):
        _export(model, target)
    assert _snapshot(tmp_path) == before


WRITE_TARGETS = {
    "keras": lambda tmp: save_model(_tiny_model(), tmp / "m.keras"),
    "keras_with_class_names": lambda tmp: save_model(
        _tiny_model(), tmp / "m.keras", class_names=["a", "b"]
    ),
    "json": lambda tmp: write_json(tmp / "config.json", {"a": 1}),
    "class_names": lambda tmp: (
        (tmp / "m.keras").touch() or write_class_names(tmp / "m.keras", ["a", "b"])
    ),
    "csv": lambda tmp: _history_csv(tmp, None)[1](),
    "png": lambda tmp: plot_history({"loss": [2.0, 1.0]}, tmp / "curves.png"),
    "resume": lambda tmp: _resume_weights(tmp / "resume", None)[1](),
    "tflite": lambda tmp: _export(_tiny_model(), tmp / "model.tflite", format="tflite"),
    "saved_model": lambda tmp: _export(_tiny_model(), tmp / "sm"),
    "folders": lambda tmp: write_json(tmp / "new" / "deeper" / "config.json", {}),
}


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_written_files_get_the_modes_open_would_give(tmp_path, fake_export, umask):
    fake_export(b"artifact")
    previous = os.umask(umask)
    try:
        for name, write in WRITE_TARGETS.items():
            (tmp_path / name).mkdir()
            write(tmp_path / name)
    finally:
        os.umask(previous)
    paths = [p for p in tmp_path.rglob("*") if p.parent != tmp_path]
    assert len(paths) >= 12
    for path in paths:
        wanted = (0o777 if path.is_dir() else 0o666) & ~umask
        assert stat.S_IMODE(path.stat().st_mode) == wanted, path


EXPORT_AND_DIE = textwrap.dedent(
    """
    import sys
    import keras_resvit as kr

    model = kr.build_resnet(**{TINY!r})
    print("exporting", flush=True)
    kr.export(model, sys.argv[1])
    """
).replace("{TINY!r}", repr(TINY))


def _children_converting(parent):
    """Processes running the export conversion for `parent`, found through /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"keras_resvit.export" in command and command[-2].endswith(f", {parent}]".encode()):
            found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the child process through /proc")
@pytest.mark.one_backend("jax", reason="the exporting process runs JAX in either pass")
def test_killing_an_export_kills_its_conversion_and_leaves_nothing(tmp_path):
    # The conversion subprocess exists on every backend but TensorFlow: run the exporting
    # process under JAX whatever this suite's backend is.
    pytest.importorskip("jax")
    target = tmp_path / "model.tflite"
    parent = subprocess.Popen(
        [sys.executable, "-c", EXPORT_AND_DIE, str(target)],
        env={**os.environ, "KERAS_BACKEND": "jax"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert parent.stdout.readline().strip() == "exporting"
        deadline = time.time() + 300
        while not _children_converting(parent.pid) and time.time() < deadline:
            assert parent.poll() is None, "the export ended before its conversion was seen"
            time.sleep(0.05)
        children = _children_converting(parent.pid)
        assert children, "no conversion subprocess appeared"
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=60)
    deadline = time.time() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in children) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{pid}").exists() for pid in children), "the child outlived it"
    assert not target.exists()
    remove_stale_temporaries(target)  # what the next export to the same path does first
    assert list(tmp_path.iterdir()) == []


def test_replacing_a_file_keeps_its_mode_and_writes_through_a_link(tmp_path):
    private = tmp_path / "config.json"
    private.write_text("{}")
    private.chmod(0o600)
    write_json(private, {"a": 1})
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    # Like open(): a link is written through, and stays a link.
    target = tmp_path / "elsewhere" / "real.json"
    target.parent.mkdir()
    target.write_text("{}")
    (tmp_path / "link.json").symlink_to(target)
    write_json(tmp_path / "link.json", {"b": 2})
    assert (tmp_path / "link.json").is_symlink() and json.loads(target.read_text()) == {"b": 2}
    assert sorted(p.name for p in target.parent.iterdir()) == ["real.json"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write read-only files")
def test_a_read_only_file_is_not_replaced(tmp_path):
    locked = tmp_path / "config.json"
    locked.write_text("{}")
    locked.chmod(0o444)
    with pytest.raises(ValueError, match="config.json' is read-only"):
        write_json(locked, {"a": 1})
    assert locked.read_text() == "{}"


def test_save_model_writes_only_keras_files_and_replaces_only_keras_files(tmp_path):
    model = kr.build_resnet(8, stem="cifar", num_classes=3, input_shape=(16, 16, 3))
    notes = tmp_path / "notes.keras"
    notes.write_text("a user's notes, not a model")
    with pytest.raises(ValueError, match=r"notes.keras' exists and is not a .keras file"):
        kr.files.save_model(model, notes, class_names=["a", "b", "c"])
    assert notes.read_text() == "a user's notes, not a model"
    archive = tmp_path / "archive.keras"  # a zip, but not of a model
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("thesis.tex", "a user's thesis")
    with pytest.raises(ValueError, match=r"archive.keras' exists and is not a .keras file"):
        kr.files.save_model(model, archive)
    assert zipfile.ZipFile(archive).read("thesis.tex") == b"a user's thesis"
    archive.unlink()
    for name in ("m.h5", "m.txt", "model"):
        with pytest.raises(
            ValueError, match=rf"{name}' has suffix '[.a-z0-9]*'; save_model writes"
        ):
            kr.files.save_model(model, tmp_path / name, class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="model of type str"):
        kr.files.save_model("resnet20", tmp_path / "m.keras")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.keras"]
    saved = tmp_path / "m.keras"
    kr.files.save_model(model, saved)
    kr.files.save_model(model, saved, class_names=["a", "b", "c"])  # its own file: replaced
    assert kr.files.read_class_names(saved) == ["a", "b", "c"]


def test_class_names_replace_only_a_list_of_names_beside_a_model(tmp_path):
    model_file = tmp_path / "m.keras"
    with pytest.raises(FileNotFoundError, match=r"m.keras' does not exist; .* save the model"):
        write_class_names(model_file, ["a", "b"])
    assert not any(tmp_path.iterdir())
    model_file.write_bytes(b"a model")
    side = tmp_path / "m.classes.json"
    for user in ('{"user": "settings"}', "not json", '["a", 2]'):
        side.write_text(user)
        with pytest.raises(ValueError, match=r"m.classes.json' is not replaced: it is not a list"):
            write_class_names(model_file, ["a", "b"])
        assert side.read_text() == user
    side.write_text('["old", "names"]')  # names written earlier: replaced
    write_class_names(model_file, ["a", "b"])
    assert json.loads(side.read_text()) == ["a", "b"]


@pytest.mark.parametrize(
    "format, written", [("tflite", b"\x1c\x00\x00\x00TFL3 model"), ("onnx", b"\x08\x07 model")]
)
def test_export_replaces_only_a_file_of_its_format(tmp_path, fake_export, format, written):
    fake_export(written)
    model = _tiny_model()
    notes = tmp_path / f"notes.{format}"
    notes.write_text("a user's notes, not a model")
    with pytest.raises(ValueError, match=rf"notes.{format}' exists and is not a .{format} file"):
        _export(model, notes, format)
    assert notes.read_text() == "a user's notes, not a model"
    exported = tmp_path / f"m.{format}"
    exported.touch()  # an empty file holds nothing to lose
    for _ in range(2):  # the second export replaces the first
        _export(model, exported, format)
        assert exported.read_bytes() == written


@pytest.mark.parametrize("format", ["tflite", "onnx"])
def test_export_does_not_write_through_a_link_to_a_file_of_another_kind(
    tmp_path, fake_export, format
):
    fake_export(b"\x1c\x00\x00\x00TFL3 model")
    notes = tmp_path / "empty_notes.txt"
    notes.touch()  # empty: nothing in it tells that it is not a model
    link = tmp_path / f"m.{format}"
    link.symlink_to(notes)
    with pytest.raises(ValueError, match=rf"is a link to .*empty_notes.txt', not a .{format}"):
        _export(_tiny_model(), link, format)
    assert notes.read_bytes() == b"" and link.is_symlink()


@pytest.mark.parametrize("extra", [15, 50])
def test_names_near_or_over_the_filesystems_limit(tmp_path, fake_export, extra):
    """A name the filesystem takes is written whatever the temporary's longer name; a longer
    one, or a NUL character, is one ValueError naming the argument, before any work."""
    fake_export(b"\x1c\x00\x00\x00TFL3 model")
    model = _tiny_model()
    name = "m" * (185 + extra * 4)  # 251 or 391 bytes with ".keras"
    long = tmp_path / f"{name}.keras"
    if len(long.name) <= 255:
        assert kr.files.save_model(model, long) == long and kr.files.load_model(long)
        assert _export(model, tmp_path / f"{name}.tflite", "tflite")
        assert sorted(p.name for p in tmp_path.iterdir()) == [long.name, f"{name}.tflite"]
    else:
        for write in (
            lambda: kr.files.save_model(model, long),
            lambda: _export(model, long.with_suffix(".tflite"), "tflite"),
            lambda: _export(model, tmp_path / name / "sm"),
        ):
            with pytest.raises(ValueError, match=r"path=.* is \d+ bytes, over this filesystem"):
                write()
        assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=r"path='a\\x00b.keras' holds a NUL character"):
        kr.files.save_model(model, "a\0b.keras")
    with pytest.raises(ValueError, match="path='td.keras/' ends with a '/', naming a folder"):
        kr.files.save_model(model, "td.keras/")


def test_a_home_relative_path_is_written_and_read_in_the_home_folder(
    tmp_path, monkeypatch, fake_export
):
    # "~/..." means the home folder, for outputs as for inputs: never a folder named "~".
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home").mkdir()
    fake_export(b"TFL3")
    model = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=3)
    kr.export(model, "~/m.tflite", check=False)
    model.save(tmp_path / "home" / "m.keras")
    assert kr.load_model("~/m.keras").count_params() == model.count_params()
    x, y = random_images(4, 16, 16), np.arange(4) % 3
    kr.train(model, (x, y), epochs=1, batch_size=4, output_dir="~/run", verbose=0)
    assert (tmp_path / "home" / "m.tflite").is_file()
    assert (tmp_path / "home" / "run" / "last.keras").is_file()
    assert not (tmp_path / "~").exists()


def test_a_run_that_fails_before_writing_leaves_no_folder_of_its_making(tmp_path):
    model = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=3)
    x, y = random_images(4, 16, 16), np.arange(4) % 3
    # 'mse' cannot compare class indices with class scores: refused before fit, named.
    with pytest.raises(ValueError, match="loss='mse' cannot compare .* class indices"):
        kr.train(model, (x, y), epochs=1, output_dir=tmp_path / "new" / "run", loss="mse")
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()  # a user's empty folder stays
    with pytest.raises(ValueError, match="loss='mse'"):
        kr.train(model, (x, y), epochs=1, output_dir=tmp_path / "mine", loss="mse")
    assert (tmp_path / "mine").is_dir()


def test_temporaries_are_tagged_with_a_host_hash():
    # A hash of the whole host name and process namespace: no two hosts' tags collide by
    # sharing a prefix, as "trainingjobworker-0" and "-1" would when cut to 16 letters.
    assert re.fullmatch(r"[0-9a-f]{8}", _host())


def test_export_of_a_model_with_two_outputs_is_refused_before_converting(tmp_path):
    images = keras.Input((8, 8, 3))
    flat = keras.layers.Flatten()(images)
    two = keras.Model(images, [keras.layers.Dense(2)(flat), keras.layers.Dense(3)(flat)])
    with pytest.raises(ValueError, match="1 input.*2 output.*one image input and one output"):
        kr.export(two, tmp_path / "x.tflite")
    assert list(tmp_path.iterdir()) == []


# Class names inside .keras files and models in memory.


def test_class_names_travel_inside_a_keras_file_and_keras_still_loads_it(tmp_path):
    model = _tiny_model()
    path = save_model(model, tmp_path / "m.keras", class_names=["cat", "dog"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]  # no side file needed
    with zipfile.ZipFile(path) as archive:
        # Keras' own three entries: a fourth would make Keras extract the archive on load.
        assert archive.namelist() == [KERAS_METADATA, "config.json", "model.weights.h5"]
        assert json.loads(archive.read(KERAS_METADATA))[CLASS_NAMES_KEY] == ["cat", "dog"]
    images = random_images(2, 8, 8)
    expected = keras.ops.convert_to_numpy(model(images))
    plain = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(plain(images)), expected, atol=1e-6)
    loaded = kr.load_model(path)
    assert model_class_names(loaded) == ["cat", "dog"]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(images)), expected, atol=1e-6)
    # The names stay with the model through the next save, not with a new head.
    assert embedded_class_names(save_model(loaded, tmp_path / "again.keras")) == ["cat", "dog"]
    assert model_class_names(kr.replace_head(loaded, 2)) is None
    assert embedded_class_names(save_model(model, tmp_path / "plain.keras")) is None


def test_class_names_of_a_model_in_memory_are_checked_and_untracked(tmp_path):
    model = _tiny_model()
    with pytest.raises(ValueError, match=r"class_names list 3 classes but the model has 2"):
        set_class_names(model, ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"class_names=\[1, 2\] must be a list of strings"):
        save_model(model, tmp_path / "m.keras", class_names=[1, 2])
    assert list(tmp_path.iterdir()) == []
    set_class_names(model, ["a", "b"])
    assert model_class_names(model) == ["a", "b"]
    # Invisible to Keras: the same variables and the same file as without names.
    assert len(model.variables) == len(_tiny_model().variables)
    set_class_names(model, None)
    assert model_class_names(model) is None


@pytest.mark.parametrize(
    "names, words",
    [
        (["only one"], ["m.keras", "do not fit", "1 classes", "2 outputs"]),
        ("cat", ["m.keras", "corrupt", "JSON list of strings"]),
    ],
    ids=["count", "not_a_list"],
)
def test_a_keras_file_with_wrong_class_names_inside_is_one_error(tmp_path, names, words):
    _tiny_model().save(tmp_path / "plain.keras")
    _copy_keras_archive(tmp_path / "plain.keras", tmp_path / "m.keras", {CLASS_NAMES_KEY: names})
    with pytest.raises(ValueError) as info:
        kr.load_model(tmp_path / "m.keras")
    for word in words:
        assert word in str(info.value)


def test_a_trained_run_loads_in_a_fresh_process(tmp_path):
    # A fresh process imports nothing of the package but what it asks for: loading must
    # register the package's layers, optimizer and schedule itself (the lazy public API).
    (x, y), _ = kr.data.load_digits()
    vit = kr.build_vit("Ti/16", image_size=32, num_classes=10, num_layers=1)
    kr.train(vit, (x[:64], y[:64]), recipe="resnet_cifar", epochs=1, batch_size=32,
             output_dir=tmp_path / "run", verbose=0)  # fmt: skip
    path = tmp_path / "run" / "last.keras"
    scripts = [
        "import keras_resvit as kr\nmodel = kr.load_model(sys.argv[1])",
        # Keras first, as notebooks do: its own loader then reads the package's files.
        "import keras, keras_resvit\nmodel = keras.saving.load_model(sys.argv[1])",
    ]
    for script in scripts:
        code = f"import sys\n{script}\nprint(type(model.optimizer).__name__, model.count_params())"
        result = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr[-2000:]
        # The recipe's coupled-decay SGD and its schedule, and the ViT's layers.
        assert result.stdout.split()[-2:] == ["CoupledDecaySGD", str(vit.count_params())]
