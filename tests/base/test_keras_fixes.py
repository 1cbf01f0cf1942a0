"""A model keeps its weights and stays usable when `fit`, `evaluate` or `predict` raises
(`keras_resvit.base.keras_fixes.recover_from_errors_in_fit`): on JAX, Keras' trainer lost the
weights; on TensorFlow, a first `fit` that raised left the model unable to `fit` again."""

import keras
import numpy as np
import pytest

import keras_resvit as kr

GOOD = np.linspace(0, 1, 4 * 8 * 8 * 3, dtype="float32").reshape(4, 8, 8, 3)
BAD = np.zeros((4, 6, 6, 3), "float32")  # 6 pixels do not divide into patches of 4
LABELS = np.array([0, 1, 2, 1])
# A TensorFlow graph traced for sizes it has seen checks the size when it runs.
REFUSED = "do not divide into 4x4 patches|multiples_of_the_patch_size"


def _model():
    """Any image size at build time; the patch embedding refuses sizes not divisible by 4."""
    inputs = keras.Input((None, None, 3))
    x = kr.layers.PatchEmbedding(filters=8, kernel_size=4, strides=4)(inputs)
    x = keras.layers.BatchNormalization()(x)  # non-trainable variables too
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy")
    return model


def _call(model, method, x, **kwargs):
    if method == "predict":
        return model.predict(x, verbose=0, **kwargs)
    if method == "evaluate":
        return model.evaluate(x, LABELS[: len(x)], verbose=0, **kwargs)
    return model.fit(x, LABELS[: len(x)], verbose=0, shuffle=False, **kwargs)


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


@pytest.mark.parametrize("trained_before", [False, True], ids=["fresh", "trained"])
@pytest.mark.parametrize("method", ["predict", "evaluate", "fit"])
def test_an_error_in_the_first_step_keeps_every_weight(method, trained_before):
    model = _model()
    if trained_before:
        _call(model, method, GOOD)  # the optimizer and metrics exist before the failing call
    weights, outputs = _weights(model), model.predict(GOOD, verbose=0)

    with pytest.raises(Exception, match=REFUSED):
        _call(model, method, BAD)

    for got, expected in zip(_weights(model), weights, strict=True):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(model.predict(GOOD, verbose=0), outputs)
    history = model.fit(GOOD, LABELS, epochs=3, verbose=0)  # the optimizer state survived too
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses


class _Batches(keras.utils.PyDataset):
    """A good batch, then one the model refuses."""

    def __len__(self):
        return 2

    def __getitem__(self, index):
        return (GOOD, LABELS) if index == 0 else (BAD, LABELS)


@pytest.mark.parametrize("method", ["predict", "evaluate"])
def test_an_error_in_a_later_step_keeps_every_weight(method):
    model = _model()
    weights = _weights(model)
    with pytest.raises(Exception, match=REFUSED):
        getattr(model, method)(_Batches(), verbose=0)
    for got, expected in zip(_weights(model), weights, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_an_interrupted_fit_keeps_the_weights_of_its_finished_steps():
    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                raise KeyboardInterrupt

    model, reference = _model(), _model()
    reference.set_weights(model.get_weights())
    reference.fit(GOOD[:2], LABELS[:2], batch_size=2, shuffle=False, verbose=0)
    reference.fit(GOOD[2:], LABELS[2:], batch_size=2, shuffle=False, verbose=0)

    with pytest.raises(KeyboardInterrupt):
        model.fit(GOOD, LABELS, batch_size=2, shuffle=False, callbacks=[Interrupt()], verbose=0)

    for got, expected in zip(_weights(model), _weights(reference), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_an_error_in_validation_keeps_the_trained_weights():
    model = _model()
    with pytest.raises(Exception, match=REFUSED):
        model.fit(GOOD, LABELS, validation_data=(BAD, LABELS), verbose=0)
    assert all(np.isfinite(w).all() for w in _weights(model))
    assert model.predict(GOOD, verbose=0).shape == (4, 3)
