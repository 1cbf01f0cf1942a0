"""The fast-path switch: every fast path off gives the same outputs and gradients."""

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.base import backend as capabilities
from keras_resvit.layers.keras_rand_augment import Equalization
from tests.conftest import random_images


@pytest.fixture(autouse=True)
def _fast_paths_restored():
    yield
    capabilities.set_fast_paths(True)


def test_the_switch_turns_every_fast_path_off(backend):
    on = {name: capabilities.fast_path(name) for name in capabilities.FAST_PATHS}
    # Each backend the suite runs has fast paths (JAX's CPU ones included here).
    assert any(on.values()), on
    assert on["fused_batch_norm"] == (backend == "tensorflow")
    assert on["pointwise_matmul"] == capabilities.on_jax_cpu()
    with capabilities.fast_paths(False):
        assert not capabilities.fast_paths_enabled()
        assert not any(capabilities.fast_path(name) for name in capabilities.FAST_PATHS)
    assert capabilities.fast_paths_enabled()
    with pytest.raises(ValueError, match="enabled='no' must be True or False"):
        capabilities.set_fast_paths("no")


def test_the_environment_variable_turns_fast_paths_off_at_import():
    import subprocess
    import sys

    script = "from keras_resvit.base.backend import fast_paths_enabled; print(fast_paths_enabled())"
    env = {"KERAS_RESVIT_FAST_PATHS": "0", "PATH": ""}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def _outputs_and_gradients(model, x):
    """Outputs in training and inference mode, and the gradient of the inference outputs' sum
    of squares with respect to the input (it runs back through every layer's gradient, custom
    ones included). Training-mode gradients of batch norm are its layer test's: Keras' plain
    layer stops the gradient through the mean inside the variance, the fused kernel does not
    (tests/layers/test_layers.py)."""
    weights = model.get_weights()
    train = keras.ops.convert_to_numpy(model(x, training=True))
    model.set_weights(weights)  # the training call moved batch norm's moving statistics
    infer = keras.ops.convert_to_numpy(model(x, training=False))
    grads = capabilities.gradient(lambda v: keras.ops.sum(model(v, training=False) ** 2), x)
    return [train, infer, keras.ops.convert_to_numpy(grads)]


HEAD = {"num_classes": 4, "classifier_activation": None}
# Name -> (model, largest relative L2 difference of its input gradients). Outputs differ by
# float32 round-off (measured <= 1e-4 of their norm: a fused batch norm sums in another
# order). Gradients of the ReLU nets differ by more (measured 2e-3 to 5e-3): round-off flips
# a few units' pre-activations across zero, which switches their gradient on or off. A wrong
# computation differs by about its whole norm.
MODELS = {
    # Bottleneck ResNet: max-pool stem, 1x1 convolutions, batch norm.
    "resnet50": (lambda: kr.create_model("resnet50", input_shape=(64, 64, 3), **HEAD), 2e-2),
    # ViT: matmul self-attention, layer norm, exact GELU.
    "vit": (lambda: kr.build_vit("Ti/16", image_size=32, **HEAD), 1e-4),
    # Hybrid: both families' layers in one graph.
    "hybrid": (
        lambda: kr.build_hybrid_vit("r50", "Ti/16", image_size=32, num_layers=2, **HEAD),
        2e-2,
    ),
}


def relative_difference(got, expected):
    return float(np.linalg.norm(got - expected) / np.linalg.norm(expected))


@pytest.mark.parametrize(
    "name",
    [
        "resnet50",
        "vit",
        # JAX's fast paths are the ResNet's and the attention's, checked above; TensorFlow's
        # fused norms and GELU meet in this one graph. Eager JAX takes a minute over it.
        pytest.param(
            "hybrid",
            marks=pytest.mark.one_backend("tensorflow", reason="JAX's paths are checked above"),
        ),
    ],
)
def test_models_compute_the_same_with_fast_paths_off(name):
    build, gradient_tolerance = MODELS[name]
    model = build()
    head = model.get_layer("predictions")  # a ViT's starts at zero: no gradient would pass
    head.kernel.assign(keras.random.normal(head.kernel.shape, stddev=0.1, seed=1))
    size = model.input_shape[1]
    x = keras.ops.convert_to_tensor(random_images(4, size, size))
    fast = _outputs_and_gradients(model, x)
    with capabilities.fast_paths(False):
        plain = _outputs_and_gradients(model, x)
    assert all(np.isfinite(a).all() for a in fast) and np.abs(fast[-1]).max() > 0
    tolerances = (1e-3, 1e-3, gradient_tolerance)
    for got, expected, tolerance in zip(plain, fast, tolerances, strict=True):
        assert relative_difference(got, expected) < tolerance


def test_equalization_is_the_same_with_fast_paths_off():
    layer = Equalization()
    images = random_images(3, 16, 16)
    fast = keras.ops.convert_to_numpy(layer(images))
    with capabilities.fast_paths(False):
        plain = keras.ops.convert_to_numpy(layer(images))
    np.testing.assert_allclose(plain, fast, atol=1e-3)
