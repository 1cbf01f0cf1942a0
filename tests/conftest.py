"""Shared fixtures and helpers: tiny inputs, the current backend, save/load checks."""

import contextlib
import gc
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

# JAX compiles every program it runs (each eager operation per shape, each train step); the
# test processes and their subprocesses (CLI runs, guides, killed and resumed trainings) compile
# the same programs again and again. One compilation cache for the session, set before JAX is
# imported and inherited by every pytest-xdist worker and subprocess, compiles each once. A
# cache the caller set is used as it is; the process that made one removes it at its end.
_OWN_JAX_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="keras-resvit-tests-jax-")
    _OWN_JAX_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"]
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# Compiling, not running, is most of what JAX does in these tests: each eager operation of a
# model being built or called compiles on its first shape. XLA's fast-compile settings (no LLVM
# optimization) take a quarter off the layer tests' time (measured on tests/layers and
# tests/viz/test_attention.py) and compute results within every tolerance here;
# KERAS_RESVIT_TEST_FAST_COMPILE=0 compiles as users' programs do. In the JAX pass only:
# TensorFlow on a CPU compiles with XLA only the functions that ask for it, which would then
# run slower. A caller's XLA_FLAGS are kept. Set before JAX is imported, inherited by the
# pytest-xdist workers and the subprocesses that keep XLA_FLAGS.
FAST_COMPILE_FLAGS = (
    ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")
    if os.environ.get("KERAS_RESVIT_TEST_FAST_COMPILE", "1") != "0"
    and os.environ.get("KERAS_BACKEND") == "jax"
    else ()
)
_flags = os.environ.get("XLA_FLAGS", "")
_added = [flag for flag in FAST_COMPILE_FLAGS if flag.split("=")[0] not in _flags]
if _added:
    os.environ["XLA_FLAGS"] = " ".join([_flags, *_added]).strip()


def simulated_devices(count):
    """`XLA_FLAGS` for a JAX subprocess with `count` simulated CPU devices, compiled as the
    suite compiles."""
    return " ".join([f"--xla_force_host_platform_device_count={count}", *FAST_COMPILE_FLAGS])


import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Tests must never reach the network: tensorflow-datasets and Keras use these folders only.
os.environ.setdefault("TFDS_DATA_DIR", os.path.join(os.path.dirname(__file__), "_no_tfds"))


def pytest_unconfigure(config):
    if _OWN_JAX_CACHE:
        shutil.rmtree(_OWN_JAX_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """`@pytest.mark.one_backend("jax", reason=...)`: the test runs in that backend's pass only
    (the suite runs once per backend; see the marker's description in pyproject.toml)."""
    backend = keras.backend.backend()
    for item in items:
        marker = item.get_closest_marker("one_backend")
        if marker is None:
            continue
        (name,) = marker.args
        if "reason" not in marker.kwargs:
            raise pytest.UsageError(f"{item.nodeid}: one_backend needs reason=")
        if backend != name:
            item.add_marker(pytest.mark.skip(reason=f"{name} pass only: {marker.kwargs['reason']}"))


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()  # and a garbage collection of what this test made
    # What is left is the session's (modules, caches): frozen, so the next test's collection
    # scans only that test's objects. Without it every collection walks the ~500k objects of
    # TensorFlow, JAX and Keras, about 0.4 s a test.
    gc.freeze()


@pytest.fixture
def backend():
    return keras.backend.backend()


TINY_VIT = {
    "variant": None,
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 4,
    "mlp_dim": 64,
    "patch_size": 8,
    "image_size": 32,
    "num_classes": 5,
}


@contextlib.contextmanager
def shared_folder(tmp_path_factory, name):
    """A folder shared by every pytest-xdist worker of the session, held under a lock while
    the caller reads or fills it: expensive fixtures (models trained for a module) are made
    once per session instead of once per worker. Without `fcntl` (Windows) each worker holds
    its own folder."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER") and fcntl is not None:
        root = root.parent  # the session's base folder, above the workers' own
    folder = root / f"shared-{name}"
    folder.mkdir(exist_ok=True)
    with open(root / f"shared-{name}.lock", "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield folder
        finally:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)


def tiny_vit(**overrides):
    """A ViT small enough for behaviour tests (32 px, patch 8, width 32, two blocks)."""
    import keras_resvit as kr

    return kr.build_vit(**{**TINY_VIT, **overrides})


# ONNX export and its check: the `onnx` extra (tf2onnx, onnx, onnxruntime).
HAS_ONNX = all(importlib.util.find_spec(m) for m in ("tf2onnx", "onnx", "onnxruntime"))


def random_images(batch, height, width, channels=3, seed=0):
    """Raw pixels in [0, 255], the models' input convention."""
    return (
        np.random.default_rng(seed)
        .uniform(0, 255, (batch, height, width, channels))
        .astype("float32")
    )


def assert_layer_round_trip(layer, images, registered_name):
    """`layer` serializes under `registered_name`, deserializes to the same config, and the
    restored layer passes `images` through unchanged at inference."""
    config = keras.saving.serialize_keras_object(layer)
    assert config["registered_name"] == registered_name
    restored = keras.saving.deserialize_keras_object(config)
    assert restored.get_config() == layer.get_config()
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored(images, training=False)), images
    )


def assert_save_load_identical(model, tmp_path, inputs):
    """`.keras` round trip with safe_mode=True gives the same outputs."""
    path = tmp_path / f"{model.name}.keras"
    expected = keras.ops.convert_to_numpy(model(inputs, training=False))
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    actual = keras.ops.convert_to_numpy(restored(inputs, training=False))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    assert [w.shape for w in restored.weights] == [w.shape for w in model.weights]
    return restored


def train_steps_lower_loss(model, x, y, steps=8, learning_rate=0.05):
    """Trains on a fixed batch; returns (first loss, last loss)."""
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9),
        loss="sparse_categorical_crossentropy",
    )
    history = model.fit(x, y, batch_size=len(x), epochs=steps, verbose=0, shuffle=False)
    losses = history.history["loss"]
    return losses[0], losses[-1]


def on_other_backend(script):
    """The last line `script` prints, run in a Python subprocess under the other backend."""
    other = {"tensorflow": "jax", "jax": "tensorflow"}[keras.backend.backend()]
    pytest.importorskip(other)
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "KERAS_BACKEND": other},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


def outputs_on_other_backend(model, inputs, tmp_path):
    """Saves `model`, reloads it (safe mode) under the other backend in a subprocess and
    returns that model's outputs on `inputs`."""
    other = {"tensorflow": "jax", "jax": "tensorflow"}[keras.backend.backend()]
    path, x_path = tmp_path / "other_backend.keras", tmp_path / "other_backend_x.npy"
    model.save(path)
    np.save(x_path, inputs)
    script = (
        "import json, numpy as np, keras, keras_resvit\n"
        f"m = keras.saving.load_model({str(path)!r}, safe_mode=True)\n"
        f"y = m(np.load({str(x_path)!r}), training=False)\n"
        "print(json.dumps({'backend': keras.backend.backend(),\n"
        "                  'y': keras.ops.convert_to_numpy(y).tolist()}))\n"
    )
    reply = json.loads(on_other_backend(script))
    assert reply["backend"] == other
    return np.array(reply["y"])
