"""PyTorch backend smoke tests: every family trains a step, `.keras` files cross between
PyTorch, TensorFlow and JAX both ways, `kr.train` learns the digits, and TF Lite export works
from a PyTorch session.

Run under `KERAS_BACKEND=torch` (scripts/test.sh runs this module after the TensorFlow and JAX
runs); under the other backends every test here is skipped, the rest of the suite covering them.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_resvit as kr
from tests.conftest import random_images, tiny_vit, train_steps_lower_loss

TORCH = keras.backend.backend() == "torch"
pytestmark = pytest.mark.skipif(not TORCH, reason="PyTorch smoke tests: KERAS_BACKEND=torch")
if TORCH:
    import torch

    # On 2 busy cores PyTorch's OpenMP threads wait on each other: one ResNet-20 step of 64
    # images took 5-10 s with 2 threads and 0.4 s with one.
    torch.set_num_threads(1)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = 5


# A CIFAR ResNet and a tiny ViT, both 32x32 with 5 classes: the pair that crosses backends.
SMALL = {"resnet20": lambda: kr.create_model("resnet20", num_classes=CLASSES), "vit": tiny_vit}


def small_models():
    return {name: build() for name, build in SMALL.items()}


def outputs(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def trained(model, x, y, steps=1):
    """Compiles `model`, trains `steps` steps on (x, y); returns the last loss."""
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    return [float(model.train_on_batch(x, y)) for _ in range(steps)][-1]


FAMILIES = {
    **SMALL,
    "hybrid": lambda: kr.build_hybrid_vit(
        "r50",
        variant=None,
        hidden_size=32,
        num_layers=1,
        num_heads=4,
        mlp_dim=64,
        patch_size=16,
        image_size=32,
        num_classes=CLASSES,
    ),
    **{
        name: lambda name=name: kr.create_model(name, input_shape=(32, 32, 3), num_classes=CLASSES)
        for name in ("bit_r50x1", "se_resnet50", "resnet50v2")
    },
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_builds_and_trains_a_step(family):
    model = FAMILIES[family]()
    x, y = random_images(4, 32, 32), np.arange(4) % CLASSES
    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    # Two steps: a ViT's classifier starts at zero, so the first step moves only the head.
    loss = trained(model, x, y, steps=2)
    assert np.isfinite(loss)
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    changed = sum(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert changed >= 0.9 * len(before), f"{changed} of {len(before)} weights moved"
    scores = outputs(model, x)
    assert scores.shape == (4, CLASSES)
    np.testing.assert_allclose(scores.sum(axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", ["resnet20", "vit"])
def test_small_models_lower_the_loss(name):
    x, y = random_images(8, 32, 32, seed=1), np.arange(8) % CLASSES
    first, last = train_steps_lower_loss(small_models()[name], x, y, steps=8, learning_rate=0.02)
    assert last < 0.7 * first, (first, last)


def _child(folder):
    """Runs in a TensorFlow or JAX subprocess: loads the PyTorch-saved files, then saves them
    again with every weight moved; prints the outputs of both as JSON."""
    x = np.load(os.path.join(folder, "x.npy"))
    backend, reply = keras.backend.backend(), {"loaded": {}, "saved": {}}
    rng = np.random.default_rng(3)
    for name in SMALL:
        model = keras.saving.load_model(os.path.join(folder, f"torch_{name}.keras"), safe_mode=True)
        reply["loaded"][name] = outputs(model, x).tolist()
        # New weights (BatchNorm statistics too) without building a model: building under JAX
        # compiles every initializer.
        model.set_weights([w + rng.normal(0, 0.05, w.shape) for w in model.get_weights()])
        model.save(os.path.join(folder, f"{backend}_{name}.keras"))
        reply["saved"][name] = outputs(model, x).tolist()
    print(json.dumps({"backend": backend, **reply}))


def _run_child(backend, folder):
    command = f"from tests.test_torch_backend import _child; _child({str(folder)!r})"
    result = subprocess.run(
        [sys.executable, "-c", command],
        cwd=ROOT,
        env={**os.environ, "KERAS_BACKEND": backend},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reply = json.loads(result.stdout.strip().splitlines()[-1])
    assert reply["backend"] == backend
    return reply


@pytest.mark.parametrize("other", ["tensorflow", "jax"])
def test_keras_files_cross_backends_both_ways(tmp_path, other):
    """Saved under PyTorch, reloaded under `other` (a subprocess), and the reverse."""
    pytest.importorskip(other)
    x, y = random_images(4, 32, 32, seed=2), np.arange(4) % CLASSES
    np.save(tmp_path / "x.npy", x)
    expected = {}
    for name, model in small_models().items():
        trained(model, x, y)  # moved weights and BatchNorm statistics
        model.save(tmp_path / f"torch_{name}.keras")
        expected[name] = outputs(model, x)
    reply = _run_child(other, tmp_path)
    for name, scores in expected.items():
        np.testing.assert_allclose(reply["loaded"][name], scores, atol=1e-5, err_msg=name)
        theirs = keras.saving.load_model(tmp_path / f"{other}_{name}.keras", safe_mode=True)
        np.testing.assert_allclose(outputs(theirs, x), reply["saved"][name], atol=1e-5)
        assert not np.allclose(reply["saved"][name], scores, atol=1e-3)  # new weights


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """`kr.train` of ResNet-20 on 384 digits, 3 epochs of 6 steps, under PyTorch."""
    (x, y), (xt, yt) = kr.data.load_digits()
    train = kr.data.load_dataset((x[:384], y[:384]), "train", batch_size=64)
    output_dir = tmp_path_factory.mktemp("digits")
    history = kr.train("resnet20", train, epochs=3, output_dir=output_dir, verbose=0)
    return history, output_dir, xt[:32]


def test_train_learns_the_digits(digits_run):
    history, output_dir, _ = digits_run
    losses = history.history["loss"]
    assert len(losses) == 3 and losses[-1] < 0.8 * losses[0], losses
    config = json.loads((output_dir / "config.json").read_text())
    assert config["backend"] == "torch"
    reloaded = kr.load_model(output_dir / "last.keras")
    assert reloaded.output_shape == (None, 10)


def test_tflite_export_from_a_torch_session(digits_run, tmp_path):
    from keras_resvit.artifacts import tflite_interpreter

    history, _, images = digits_run
    result = kr.export(history.model, tmp_path / "digits.tflite", representative_data=images)
    assert result["checked"] and result["max_abs_difference"] < 1e-4, result
    # And by hand: the TF Lite file against the PyTorch model it came from.
    interpreter = tflite_interpreter(tmp_path / "digits.tflite")
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images)
    interpreter.invoke()
    lite = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(lite, outputs(history.model, images), atol=1e-4)
