"""Several processes train one run: the process group, its errors, and losses that equal a
single process's over the same global devices (two processes on 127.0.0.1)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_resvit.base import processes
from keras_resvit.training.distribution import place
from keras_resvit.training.run_folder import PROCESS_FOLDER_PREFIX, RUN_FILES
from tests.conftest import shared_folder, simulated_devices

SCRIPT = str(Path(__file__).with_name("run_processes.py"))
TIMEOUT = 300


def test_one_process_joins_nothing():
    assert processes.initialize() == 1
    assert processes.process_count() == 1 and processes.process_index() == 0
    assert processes.is_chief()
    processes.barrier("alone")  # returns at once


def test_bad_process_arguments_are_named():
    with pytest.raises(ValueError, match="process_id=2 must be below num_processes=2"):
        processes.initialize(num_processes=2, process_id=2)
    with pytest.raises(ValueError, match="num_processes=0 must be a positive int"):
        processes.initialize(num_processes=0)
    with pytest.raises(ValueError, match="job_addresses=5 must be a 'host:port'"):
        processes.initialize(job_addresses=5)
    with pytest.raises(ValueError, match="process_id=3 must be below the 1 of KERAS_DISTRIB"):
        processes.initialize(process_id=3)  # one process: no id but 0


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_a_bad_process_count_in_the_environment_is_named(monkeypatch, value):
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", value)
    with pytest.raises(ValueError, match=f"KERAS_DISTRIBUTION_NUM_PROCESSES='{value}' must be"):
        processes.initialize()


def test_tf_config_is_read_and_checked():
    cluster = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    config = {"cluster": cluster, "task": {"type": "worker", "index": 1}}
    assert processes.cluster_tasks({"TF_CONFIG": json.dumps(config)}) == {
        "chief": 1,
        "worker": 2,
    }
    assert processes.cluster_tasks({}) == {}
    for text in ("not json", '{"cluster": "a:1"}', '{"cluster": {"worker": "a:1"}}'):
        with pytest.raises(ValueError, match=f"TF_CONFIG='{text}' is not valid"):
            processes.cluster_tasks({"TF_CONFIG": text})
    for task in ({}, {"type": "ps", "index": 0}, {"type": "worker", "index": 2}, None):
        text = json.dumps({"cluster": cluster, "task": task})
        with pytest.raises(ValueError, match="does not say which task of its cluster"):
            processes.cluster_tasks({"TF_CONFIG": text})


def test_multi_worker_needs_a_cluster(backend):
    if backend == "tensorflow":
        with pytest.raises(ValueError, match='distribution="multi_worker" but TF_CONFIG'):
            place("multi_worker")
    else:
        with pytest.raises(ValueError, match='distribution="multi_worker" is a TensorFlow'):
            place("multi_worker")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reply(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _run(args, env):
    result = subprocess.run(
        [sys.executable, SCRIPT, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    return _reply(result)


def _run_processes(args, envs):
    """Starts one process per environment in `envs`; returns their replies by index."""
    started = [
        subprocess.Popen(
            [sys.executable, SCRIPT, *args],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for env in envs
    ]
    replies = []
    try:
        for process in started:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
            replies.append(
                _reply(
                    subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
                )
            )
    finally:
        for process in started:
            process.kill()
    return sorted(replies, key=lambda reply: reply["index"])


def _jax_envs(devices_each, count=2):
    port = _free_port()
    return [
        {
            "KERAS_BACKEND": "jax",
            "XLA_FLAGS": simulated_devices(devices_each),
            "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}",
            "KERAS_DISTRIBUTION_NUM_PROCESSES": str(count),
            "KERAS_DISTRIBUTION_PROCESS_ID": str(index),
        }
        for index in range(count)
    ]


def _tf_envs(count=2):
    cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(count)]}
    return [
        {
            "KERAS_BACKEND": "tensorflow",
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
        }
        for i in range(count)
    ]


def _one_jax_process(tmp_path_factory):
    """One process over four devices, the run every data kind's two processes must match.
    The kinds feed the same examples in the same order, unshuffled (one process gives the
    same losses and weights from each), so it runs once per session, from arrays."""
    with shared_folder(tmp_path_factory, "one-jax-process") as folder:
        reply = folder / "reply.json"
        if not reply.exists():
            single = _run(
                ["--output", str(folder / "run"), "--distribution", "data_parallel"],
                {"KERAS_BACKEND": "jax", "XLA_FLAGS": simulated_devices(4)},
            )
            reply.write_text(json.dumps(single))
        return json.loads(reply.read_text())


@pytest.mark.slow
def test_two_jax_processes_match_one_over_the_same_devices(backend, tmp_path, tmp_path_factory):
    """Each data kind, one after the other in the same two processes: "arrays" and "loader",
    load_dataset's tf.data shares and ImageLoader shares (each process reads its own
    examples); "dataset", a plain tf.data split by Keras."""
    if backend != "jax":
        pytest.skip("the JAX process group; the TensorFlow workers have their own test")
    single = _one_jax_process(tmp_path_factory)
    out, private = tmp_path / "two", tmp_path / "tmp"
    private.mkdir()
    envs = [{**env, "TMPDIR": str(private)} for env in _jax_envs(2)]
    kinds = ["arrays", "loader", "dataset"]
    replies = _run_processes(["--output", str(out), "--data", *kinds], envs)
    for kind in kinds:
        chief, other = (reply["runs"][kind] for reply in replies)
        assert (chief["count"], other["count"]) == (2, 2), kind
        assert chief["config"]["processes"] == 2 and chief["config"]["replicas"] == 4
        np.testing.assert_allclose(chief["loss"], single["loss"], atol=1e-4, err_msg=kind)
        np.testing.assert_allclose(other["loss"], single["loss"], atol=1e-4, err_msg=kind)
        assert chief["checksum"] == pytest.approx(single["checksum"], rel=1e-5), kind
        # Only process 0 wrote: the run folder holds one run, the other's folder is gone.
        assert chief["config"]["result"]["output_dir"] == str(out / kind)
        written = {p.name for p in (out / kind).iterdir() if not p.name.startswith(".")}
        assert {"config.json", "history.csv", "last.keras"} <= written <= set(RUN_FILES), kind
    assert single["loss"][-1] < single["loss"][0]
    assert not list(private.iterdir())


@pytest.mark.slow
# "arrays": load_dataset's tf.data shares (each worker reads and decodes its own examples, fed
# through distribute_datasets_from_function); "dataset": global batches that fit splits.
@pytest.mark.parametrize("data", ["arrays", "dataset"])
def test_two_tensorflow_workers_match_one_process(backend, data, tmp_path):
    if backend != "tensorflow":
        pytest.skip("TensorFlow's MultiWorkerMirroredStrategy; JAX has its own test")
    # GroupNorm: batch-norm statistics are per replica under tf.distribute. Validation data
    # of the same kind: its loss is every worker's examples'.
    args = ["--model", "gn_resnet8", "--data", data, "--validate"]
    single = _run(
        ["--output", str(tmp_path / "single"), "--distribution", "none", *args],
        {"KERAS_BACKEND": "tensorflow"},
    )
    envs = _tf_envs(2)
    chief, other = _run_processes(["--output", str(tmp_path / "two"), *args], envs)
    assert chief["config"]["distribution"] == "multi_worker"
    assert chief["config"]["replicas"] == 2 and chief["config"]["processes"] == 2
    np.testing.assert_allclose(chief["loss"], single["loss"], atol=1e-4)
    np.testing.assert_allclose(other["loss"], single["loss"], atol=1e-4)
    np.testing.assert_allclose(chief["val_loss"], single["val_loss"], atol=1e-4)
    assert chief["checksum"] == pytest.approx(single["checksum"], rel=1e-5)


@pytest.mark.slow
def test_two_processes_resume_after_a_kill(backend, tmp_path):
    # The processes' shuffled tf.data shares, against the same two processes uninterrupted:
    # each epoch's order and draws come from (seed, epoch) (`epochs.Epochs`), so a run is
    # reproducible, and the resumed one makes its batches from step 2 without replaying.
    # (Before, JAX drew its global seed at random at joining, and TensorFlow workers'
    # reshuffling pipelines did not reproduce a run either.) TensorFlow resumes inside an
    # epoch (step 2 of 4) from a second pipeline.
    args = ["--data", "arrays", "--shuffle", "--save-every", "2"]
    envs = _jax_envs if backend == "jax" else _tf_envs
    if backend != "jax":
        args = ["--model", "gn_resnet8", *args]
    single = _run_processes(["--output", str(tmp_path / "single"), *args], envs(2))[0]
    out = str(tmp_path / "two")
    scratch = tmp_path / "tmp"  # the processes' temporary folder
    scratch.mkdir()
    private = lambda: list(scratch.glob(f"{PROCESS_FOLDER_PREFIX}*"))  # noqa: E731
    # Both processes die after step 3 of 8, after the resume state of step 2 was saved.
    dying = [
        subprocess.Popen(
            [sys.executable, SCRIPT, "--output", out, *args, "--die-after", "3"],
            env={**os.environ, **env, "TMPDIR": str(scratch)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for env in envs(2)
    ]
    assert [process.wait(timeout=TIMEOUT) for process in dying] == [3, 3]
    state = json.loads(Path(out, "resume", "state.json").read_text())
    assert state["step"] == 2 and not Path(out, "last.keras").exists()
    assert len(private()) == 1  # the killed process 1's copy of the run
    resumed = [{**env, "TMPDIR": str(scratch)} for env in envs(2)]
    chief, other = _run_processes(["--output", out, *args], resumed)
    assert not private()  # removed by the resumed process 1, with its own
    assert chief["resumed_from_step"] == other["resumed_from_step"] == 2
    # The resumed run ends where the uninterrupted one does (the first epoch's logged loss
    # covers only the steps after the resume).
    np.testing.assert_allclose(chief["loss"][-1], single["loss"][-1], atol=1e-4)
    assert chief["checksum"] == pytest.approx(single["checksum"], rel=1e-5)
    assert not Path(out, "resume").exists()
