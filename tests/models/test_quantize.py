"""Keras' post-training weight quantization (`model.quantize(mode)`) on our ViTs and ResNets.

Keras quantizes its Dense and EinsumDense layers (so the ViT's attention projections, its MLP
and every classifier) and skips, with a warning per layer, those it has no quantized kernel
for: in Keras 3.15 convolutions, so a ResNet's convolutions stay float and only its classifier
is quantized. Our attention layer records its projections' mode in its config, so quantized
ViTs reload from `.keras` files."""

import json
import warnings

import keras
import numpy as np
import pytest

import keras_resvit as kr
from tests.conftest import TINY_VIT, shared_folder

# The modes whose quantized layout `quantize(mode)` alone fixes (GPTQ and AWQ need calibration).
MODES = ("int8", "float8", "int4")
# int8 must keep the float model's top-1 on nearly every test image; the 4- and 8-bit floats
# lose more (measured agreements are printed), so they are held to a looser bar.
MIN_AGREEMENT = {"int8": 0.95, "float8": 0.8, "int4": 0.8}
BUILDERS = {
    "vit": lambda: kr.build_vit(**{**TINY_VIT, "num_classes": 10}),
    "resnet8": lambda: kr.build_resnet(8, stem="cifar"),
}


@pytest.fixture(scope="module")
def digits():
    (x_train, y_train), (x_test, y_test) = kr.data.load_digits()
    return x_train, y_train, x_test, y_test


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """Each model trained a few epochs on digits, saved once for the whole session (whichever
    pytest-xdist worker comes first): `{name: (path, accuracy)}`."""
    x_train, y_train, x_test, y_test = digits
    with shared_folder(tmp_path_factory, "quantize") as folder:
        done = folder / "accuracies.json"
        if not done.exists():
            accuracies = {}
            for name, build in BUILDERS.items():
                keras.utils.set_random_seed(0)
                model = build()
                model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
                model.fit(x_train, y_train, batch_size=64, epochs=5, verbose=0)
                predicted = np.argmax(model.predict(x_test, verbose=0), -1)
                accuracies[name] = float(np.mean(predicted == y_test))
                model.save(folder / f"{name}.keras")
            done.write_text(json.dumps(accuracies))
        accuracies = json.loads(done.read_text())
    return {name: (folder / f"{name}.keras", accuracies[name]) for name in BUILDERS}


def _quantized(path, mode):
    model = keras.saving.load_model(path, safe_mode=True, compile=False)
    with warnings.catch_warnings():
        # One warning per layer Keras cannot quantize (norms, convolutions, ...).
        warnings.simplefilter("ignore", UserWarning)
        model.quantize(mode)
    return model


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_quantized_model_agrees_with_float_model(name, mode, trained, digits):
    path, accuracy = trained[name]
    x_test = digits[2]
    expected = np.argmax(
        keras.saving.load_model(path, compile=False).predict(x_test, verbose=0), -1
    )
    model = _quantized(path, mode)
    quantized = [w for w in model.weights if w.dtype in ("int8", "float8_e4m3fn")]
    assert quantized or mode == "float8"
    agreement = float(np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == expected))
    print(f"\n{name} {mode}: float top-1 {accuracy:.3f}, top-1 agreement {agreement:.4f}")
    assert accuracy > 0.7  # trained enough for its top-1 to mean something
    assert agreement >= MIN_AGREEMENT[mode]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_quantized_model_reloads_from_keras_file(name, mode, trained, digits, tmp_path):
    model = _quantized(trained[name][0], mode)
    x = digits[2][:16]
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    model.save(tmp_path / "quantized.keras")
    restored = keras.saving.load_model(tmp_path / "quantized.keras", safe_mode=True, compile=False)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(x, training=False)), expected, atol=1e-6
    )
    modes = {layer.quantization_mode for layer in restored._flatten_layers()}
    assert mode in modes
