"""The cross-entropy of a softmax's probabilities: the number `from_logits` would give, on every
backend (Keras' clips the probabilities at 1e-7 on JAX and PyTorch but reads the logits on
TensorFlow), as `kr.train` and `keras-resvit evaluate` compute it."""

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.training.losses import SoftmaxCrossentropy
from keras_resvit.training.model_setup import compile_model
from keras_resvit.training.recipes import get_recipe

# Logits whose class gets probabilities from 0.4 down to about e^-60 (Keras' JAX loss: 16.12).
LOGITS = np.array(
    [[2.0, 1.5, -1.0], [0.0, 25.0, 0.0], [-30.0, 30.0, 0.0], [1.0, 0.0, 3.0]], "float32"
)
LABELS = np.array([0, 0, 0, 2])


def _reference(logits, targets):
    """-sum(targets * log_softmax(logits)) per example, in float64."""
    logits = logits.astype("float64")
    shifted = logits - logits.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return -(targets * log_p).sum(-1)


def _numpy(value):
    return keras.ops.convert_to_numpy(value)


@pytest.mark.parametrize("form", ["indices", "column", "one_hot", "smoothed", "mixed"])
def test_softmax_cross_entropy_equals_the_logits_one(form):
    probabilities = keras.ops.softmax(LOGITS)
    one_hot = np.eye(3)[LABELS]
    labels, targets, smoothing = {
        "indices": (LABELS, one_hot, 0.0),
        "column": (LABELS[:, None], one_hot, 0.0),
        "one_hot": (one_hot, one_hot, 0.0),
        "smoothed": (one_hot, one_hot * 0.9 + 0.1 / 3, 0.1),
        "mixed": (0.7 * one_hot + 0.3 * one_hot[::-1], 0.7 * one_hot + 0.3 * one_hot[::-1], 0.0),
    }[form]
    loss = SoftmaxCrossentropy(sparse=form in ("indices", "column"), label_smoothing=smoothing)
    expected = _reference(LOGITS, targets)
    assert expected.max() > 50  # far beyond Keras' cap of -log(1e-7) = 16.1 on JAX
    per_example = SoftmaxCrossentropy(
        sparse=loss.sparse, label_smoothing=smoothing, reduction=None
    )(labels, probabilities)
    np.testing.assert_allclose(_numpy(per_example), expected, rtol=1e-5)
    assert float(_numpy(loss(labels, probabilities))) == pytest.approx(expected.mean(), rel=1e-5)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert (restored.sparse, restored.label_smoothing) == (loss.sparse, smoothing)


def test_a_softmax_model_trains_and_scores_as_its_logits_would_on_every_backend():
    """A softmax classifier compiled as kr.train compiles it: the loss `evaluate` reports and
    the gradient each step takes are the logits' (Keras' own loss on JAX: capped at 16.1 with
    no gradient for an example whose class gets under 1e-7)."""
    inputs = keras.Input((3,))
    logits = keras.layers.Dense(3, use_bias=False, name="predictions")(inputs)
    model = keras.Model(inputs, keras.layers.Softmax()(logits))
    model.layers[1].set_weights([np.eye(3, dtype="float32")])  # the logits are the inputs
    compile_model(model, get_recipe("resnet_cifar"), 4, 10)
    loss, _ = model.evaluate(LOGITS, LABELS, batch_size=4, verbose=0)
    assert loss == pytest.approx(_reference(LOGITS, np.eye(3)[LABELS]).mean(), rel=1e-5)
    # d loss / d logits = (softmax - one-hot) / batch, so the kernel's gradient is x^T of it.
    kernel = model.layers[1].kernel
    expected = LOGITS.T @ ((_numpy(keras.ops.softmax(LOGITS)) - np.eye(3)[LABELS]) / 4)
    loss_fn = model.loss
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = loss_fn(LABELS, model(LOGITS))
        gradient = tape.gradient(value, kernel.value)
    else:
        import jax

        def of(value):
            stateless = model.stateless_call([value], [], LOGITS)[0]
            return loss_fn(LABELS, stateless)

        gradient = jax.grad(of)(kernel.value)
    np.testing.assert_allclose(_numpy(gradient), expected, atol=1e-5)


def test_train_compiles_softmax_models_with_it_and_logits_models_with_keras_loss():
    digits = kr.data.load_dataset("digits", "test", batch_size=64).take(2)
    softmax = kr.build_resnet(8, stem="cifar", num_classes=10)
    logits = kr.build_resnet(8, stem="cifar", num_classes=10, classifier_activation=None)
    for model in (softmax, logits):
        compile_model(model, get_recipe("resnet_cifar"), 64, 10)
    assert isinstance(softmax.loss, SoftmaxCrossentropy) and softmax.loss.sparse
    assert isinstance(logits.loss, keras.losses.SparseCategoricalCrossentropy)
    # The two compute one loss for one set of weights: softmax = the logits' softmax.
    logits.set_weights(softmax.get_weights())
    figures = [model.evaluate(digits, verbose=0)[0] for model in (softmax, logits)]
    assert figures[0] == pytest.approx(figures[1], rel=1e-5)
