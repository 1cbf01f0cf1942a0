"""Distribution detection, and multi-device training matching single-device training."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_resvit.base.backend import configure_xla_cpu, dtype_policy, gradient
from keras_resvit.training.distribution import choose_strategy, place, resolve_precision
from tests.conftest import simulated_devices

SCRIPT = str(Path(__file__).with_name("run_training.py"))


@pytest.mark.parametrize(
    "backend, tpu, gpus, devices, expected",
    [
        ("tensorflow", True, 0, 0, "tpu"),
        ("tensorflow", True, 8, 8, "tpu"),
        ("tensorflow", False, 2, 2, "mirrored"),
        ("tensorflow", False, 1, 1, "none"),
        ("jax", False, 0, 8, "data_parallel"),
        ("jax", False, 0, 1, "none"),
        ("torch", False, 4, 4, "none"),
    ],
)
def test_automatic_strategy_choice(backend, tpu, gpus, devices, expected):
    assert choose_strategy(backend, tpu, gpus, devices) == expected


def test_single_cpu_placement_and_precision():
    placement = place("auto")
    assert placement.num_replicas == 1 and placement.accelerator == "cpu"
    assert resolve_precision("auto", placement) == "float32"
    assert resolve_precision("mixed_bfloat16", placement) == "mixed_bfloat16"


@pytest.mark.parametrize(
    "flags, warns", [({"avx2", "fma"}, True), ({"avx2", "amx_bf16"}, False), (None, False)]
)
def test_bfloat16_on_a_cpu_without_native_support_warns(monkeypatch, flags, warns):
    from keras_resvit.training import distribution

    monkeypatch.setattr(distribution, "cpu_flags", lambda: flags)
    placement = place("none")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_precision("mixed_bfloat16", placement) == "mixed_bfloat16"
        assert resolve_precision("float32", placement) == "float32"
    messages = [str(w.message) for w in caught if "emulated" in str(w.message)]
    assert len(messages) == (1 if warns else 0)
    if warns:
        assert "precision='mixed_bfloat16'" in messages[0] and "AVX512-BF16" in messages[0]


def test_cpu_flags_reads_x86_and_arm_cpuinfo(tmp_path):
    from keras_resvit.base.backend import cpu_flags

    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")
    assert cpu_flags(str(x86)) == {"fpu", "avx512f", "avx512_bf16"}
    assert "bf16" in cpu_flags(str(arm))
    assert cpu_flags(str(tmp_path / "missing")) is None


def test_other_backends_strategy_is_refused(backend):
    name = "data_parallel" if backend == "tensorflow" else "mirrored"
    with pytest.raises(ValueError, match=f'distribution="{name}"'):
        place(name)
    with pytest.raises(ValueError, match="distribution='gpu'.*'auto'"):
        place("gpu")
    with pytest.raises(ValueError, match="precision='fp8'"):
        resolve_precision("fp8", place("none"))


def test_dtype_policy_is_set_and_restored():
    before = keras.config.dtype_policy().name
    with dtype_policy("mixed_bfloat16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == before


def run(args, env, tmp_path):
    result = subprocess.run(
        [sys.executable, SCRIPT, "--output", str(tmp_path), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_multi_device_losses_match_single_device(backend, tmp_path):
    if backend == "jax":
        env = {"XLA_FLAGS": simulated_devices(4)}
        args = ["--distribution", "none", "data_parallel", "--model", "resnet8"]
    else:
        # BatchNorm statistics are per replica under MirroredStrategy; GroupNorm is per example.
        env = {}
        args = ["--distribution", "none", "mirrored", "--model", "gn_resnet8", "--cpus", "2"]
    args += ["--random-images", "--examples", "128", "--epochs", "2", "--learning-rate", "0.01"]
    results = run(args, {"KERAS_BACKEND": backend, **env}, tmp_path)
    single, multi = (results[name] for name in args[1:3])
    assert single["replicas"] == 1 and multi["replicas"] == (4 if backend == "jax" else 2)
    np.testing.assert_allclose(multi["loss"], single["loss"], atol=1e-4)
    assert single["loss"][-1] < single["loss"][0]
    if backend == "tensorflow":  # a model given (not a name), cloned into the replicas' scope
        assert multi["given_checksum"] == pytest.approx(multi["checksum"], rel=1e-6)


@pytest.mark.slow
def test_mirrored_replicas_validate_and_save_the_same_batchnorm_statistics(backend, tmp_path):
    """Under MirroredStrategy each replica's BatchNorm updates its own moving statistics;
    before validation and saves they become the replicas' mean, so the logged validation
    loss is the saved model's (before: 0.3% apart, each replica scoring with its own)."""
    if backend != "tensorflow":
        pytest.skip("MirroredStrategy is TensorFlow's (JAX normalizes with global batches)")
    args = ["--distribution", "mirrored", "--model", "resnet8", "--cpus", "2"]
    args += ["--examples", "128", "--validation", "64", "--epochs", "2", "--save-every", "3"]
    run_ = run(args, {"KERAS_BACKEND": "tensorflow"}, tmp_path)["mirrored"]
    assert run_["replicas"] == 2
    assert run_["saved_val_loss"] == pytest.approx(run_["val_loss"][-1], rel=1e-5)


@pytest.mark.slow
def test_multi_device_runs_average_the_batchnorm_statistics_with_the_weights(backend, tmp_path):
    """With `ema`, the saved BatchNorm statistics are the average over the steps of the
    replicas' mean statistics: JAX's data parallel computes global-batch statistics, and
    under MirroredStrategy each replica's average update is averaged over the replicas.
    Validation scores what is saved."""
    if backend == "jax":
        env = {"XLA_FLAGS": simulated_devices(2)}
        args = ["--distribution", "data_parallel"]
    else:
        env = {}
        args = ["--distribution", "mirrored", "--cpus", "2"]
    args += ["--model", "resnet8", "--examples", "128", "--validation", "32", "--epochs", "1"]
    args += ["--ema", "0.8"]
    run_ = run(args, {"KERAS_BACKEND": backend, **env}, tmp_path)[args[1]]
    assert run_["replicas"] == 2
    assert run_["statistics_ema_error"] < 1e-5
    assert run_["saved_val_loss"] == pytest.approx(run_["val_loss"][-1], rel=1e-5)


def test_gradient_uses_the_backends_autodiff():
    x = np.array([1.0, -2.0, 3.0], dtype="float32")
    grad = gradient(lambda v: keras.ops.sum(v**3), x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(grad), 3 * x**2, rtol=1e-6)


def test_xla_cpu_flags_are_added_on_jax_unless_set_or_opted_out(backend, monkeypatch):
    flag = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
    env = {}
    if backend != "jax":
        assert configure_xla_cpu(env) == [] and env == {}
        return
    assert flag in os.environ.get("XLA_FLAGS", "")  # importing keras_resvit added it
    assert configure_xla_cpu(env) == [flag] and env == {"XLA_FLAGS": flag}
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    assert configure_xla_cpu(env) == [flag]
    assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=4 {flag}"
    user = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=+eltwise"}
    assert configure_xla_cpu(user) == [] and user["XLA_FLAGS"].endswith("=+eltwise")
    opted_out = {"KERAS_RESVIT_XLA_CPU_FLAGS": "0"}
    assert configure_xla_cpu(opted_out) == [] and "XLA_FLAGS" not in opted_out
    # An unmeasured jax release may not know the flag, and XLA aborts on unknown flags.
    import jax

    monkeypatch.setattr(jax, "__version__", "0.11.0")
    assert configure_xla_cpu(env := {}) == [] and env == {}


CONV_GRADIENTS = """
import json, os, keras, numpy as np
import keras_resvit as kr
import jax
keras.utils.set_random_seed(0)
model = kr.build_resnet(8, stem="cifar", num_classes=4, input_shape=(16, 16, 3))
x = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype("float32")
def loss(weights):
    y, _ = model.stateless_call(weights, [v.value for v in model.non_trainable_variables], x)
    return (y ** 2).sum()
value, grads = jax.value_and_grad(loss)([v.value for v in model.trainable_variables])
print(json.dumps({"flags": os.environ.get("XLA_FLAGS", ""), "loss": float(value),
                  "grads": [float(abs(g).sum()) for g in grads]}))
"""


@pytest.mark.slow
def test_xla_cpu_flags_keep_the_results(backend):
    """A ResNet's loss and gradients are the same with the XLA flags on (the default) and off."""
    if backend != "jax":
        pytest.skip("the flags are XLA's, for the JAX backend")
    results = []
    for opt_out in ("1", "0"):
        env = {**os.environ, "KERAS_BACKEND": "jax", "KERAS_RESVIT_XLA_CPU_FLAGS": opt_out}
        env.pop("XLA_FLAGS", None)
        out = subprocess.run(
            [sys.executable, "-c", CONV_GRADIENTS],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "ynn_fusion_type=-individual_convolution" in results[0]["flags"]
    assert not results[1]["flags"]
    np.testing.assert_allclose(results[0]["loss"], results[1]["loss"], rtol=1e-5)
    np.testing.assert_allclose(results[0]["grads"], results[1]["grads"], rtol=1e-4)


@pytest.mark.parametrize(
    "capability, expected",
    [
        ((9, 0), "mixed_bfloat16"),
        ((8, 0), "mixed_bfloat16"),
        ((7, 5), "mixed_float16"),
        (None, "mixed_float16"),
    ],
)
def test_auto_precision_on_a_gpu_follows_its_compute_capability(monkeypatch, capability, expected):
    from keras_resvit.training import distribution

    monkeypatch.setattr(distribution, "gpu_compute_capability", lambda: capability)
    gpu = distribution.Placement("default", "gpu", 1)
    assert resolve_precision("auto", gpu) == expected
    # An explicit choice is kept whatever the GPU.
    assert resolve_precision("mixed_float16", gpu) == "mixed_float16"
    assert resolve_precision("float32", gpu) == "float32"


def test_compute_capability_is_none_without_a_gpu():
    from keras_resvit.base.backend import gpu_compute_capability

    capability = gpu_compute_capability()
    if place("none").accelerator == "gpu":
        assert len(capability) == 2 and capability >= (3, 0)
    else:
        assert capability is None


_AFTER_AN_INTERRUPTED_RUN = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import sys
import keras
import keras_resvit as kr

class Interrupt(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 2:
            raise KeyboardInterrupt

(x, y), _ = kr.data.load_digits()
x, y = x[:128], y[:128]
kwargs = dict(epochs=1, batch_size=32, distribution="mirrored", verbose=0)
try:
    kr.train(kr.build_resnet(8, stem="cifar"), (x, y), output_dir=sys.argv[1] + "/a",
             callbacks=[Interrupt()], **kwargs)
except KeyboardInterrupt:
    pass
else:
    raise SystemExit("not interrupted")
result = kr.train(kr.build_resnet(14, stem="cifar"), (x, y), output_dir=sys.argv[1] + "/b",
                  val_data=(x[:64], y[:64]), **kwargs)
print(result.history["val_loss"][-1])
"""


@pytest.mark.slow
def test_a_mirrored_run_after_an_interrupted_one_trains(backend, tmp_path):
    """Ctrl-C in a notebook, then another run of another model: a new `MirroredStrategy` per
    run handed out the collective keys of the interrupted run's unfinished gradient
    reduction again ("Shape mismatch in the collective instance 100")."""
    if backend != "tensorflow":
        pytest.skip("MirroredStrategy is TensorFlow's")
    result = subprocess.run(
        [sys.executable, "-c", _AFTER_AN_INTERRUPTED_RUN, str(tmp_path)],
        env={**os.environ, "KERAS_BACKEND": "tensorflow"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert np.isfinite(float(result.stdout.strip().splitlines()[-1]))


_PARTIAL_BATCHES = """
import sys
import numpy as np
import tensorflow as tf
import keras_resvit as kr

(x, y), _ = kr.data.load_digits()
case = sys.argv[2]
train, val = (x[:32], y[:32]), None
if case == "train":
    train = kr.data.load_dataset((x[:34], y[:34]), "train", batch_size=8)
elif case == "val":
    val = kr.data.load_dataset((x[:18], y[:18]), "test", batch_size=8)
elif case == "loader":
    train = kr.data.ImageLoader(images=x[:30], labels=y[:30], batch_size=8, image_size=32)
elif case == "tf.data":  # no count of its examples: its third batch is named when it comes
    train = tf.data.Dataset.from_tensor_slices((x[:18], y[:18])).batch(8)
elif case == "dropped":
    train = kr.data.load_dataset((x[:34], y[:34]), "train", batch_size=8, drop_remainder=True)
elif case in ("steps", "more_steps"):  # 4 full batches, then the partial one
    train = kr.data.load_dataset((x[:34], y[:34]), "train", batch_size=8)
length = {"steps": 4, "more_steps": 5}.get(case)
length = {"epochs": 1} if length is None else {"steps": length}
try:
    kr.train(kr.build_resnet(8, stem="cifar", width=0.25), train, val_data=val, **length,
             output_dir=sys.argv[1], distribution="data_parallel", verbose=0)
except ValueError as error:
    print("ValueError:", error)
else:
    print("trained")
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, expected",
    [
        ("train", "train_data: the last batch of each epoch holds 2 examples"),
        ("val", "val_data: the last batch of each epoch holds 2 examples"),
        ("loader", "train_data: the last batch of each epoch holds 6 examples"),
        ("tf.data", "train_data: batch 3 holds 2 examples"),
        ("dropped", "trained"),
        ("steps", "trained"),  # stops before the partial batch
        ("more_steps", "train_data: the last batch of each epoch holds 2 examples"),
    ],
)
def test_a_batch_the_devices_cannot_split_is_named(backend, tmp_path, case, expected):
    """4 JAX devices share every batch: an epoch's last, partial batch of 2 or 6 examples
    failed at the end of the first epoch with JAX's IndivisibleError (the multi-device
    guide's run of 1,437 images in batches of 64)."""
    if backend != "jax":
        pytest.skip("keras.distribution's data parallelism is JAX's")
    result = subprocess.run(
        [sys.executable, "-c", _PARTIAL_BATCHES, str(tmp_path / "run"), case],
        env={
            **os.environ,
            "KERAS_BACKEND": "jax",
            "XLA_FLAGS": simulated_devices(4),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert expected in last
    if expected != "trained":
        assert "4 devices cannot split evenly" in last and "drop_remainder=True" in last
