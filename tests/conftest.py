"""Shared fixtures and helpers: tiny inputs, the current backend, save/load checks."""

import os

import keras
import numpy as np
import pytest

# Tests must never reach the network: tensorflow-datasets and Keras use these folders only.
os.environ.setdefault("TFDS_DATA_DIR", os.path.join(os.path.dirname(__file__), "_no_tfds"))


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()


@pytest.fixture
def backend():
    return keras.backend.backend()


def random_images(batch, height, width, channels=3, seed=0):
    """Raw pixels in [0, 255], the models' input convention."""
    return (
        np.random.default_rng(seed)
        .uniform(0, 255, (batch, height, width, channels))
        .astype("float32")
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
