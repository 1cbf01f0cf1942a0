"""Grad-CAM of models the package did not build: a Sequential on a keras.Input, and a
classifier without a bias."""

import keras
import numpy as np

import keras_resvit as kr
from tests.conftest import random_images

L = keras.layers
SHAPE = (16, 16, 3)


def _layers(use_bias=True):
    return [
        L.Conv2D(4, 3, activation="relu", name="conv"),
        L.GlobalAveragePooling2D(name="avg_pool"),
        L.Dense(3, use_bias=use_bias, name="predictions"),
    ]


def _functional(use_bias=True):
    x = inputs = keras.Input(SHAPE)
    for layer in _layers(use_bias):
        x = layer(x)
    return keras.Model(inputs, x)


def test_a_sequential_on_an_input_explains_as_its_functional_twin():
    sequential = keras.Sequential([keras.Input(SHAPE), *_layers()])
    functional = _functional()
    functional.set_weights(sequential.get_weights())
    images = random_images(2, 16, 16)
    for class_index in (None, [0, 2]):
        expected = kr.viz.grad_cam(functional, images, class_index, layer="conv")
        actual = kr.viz.grad_cam(sequential, images, class_index, layer="conv")
        assert actual.shape == (2, 16, 16)
        np.testing.assert_allclose(actual, expected, atol=1e-6)


def test_a_classifier_without_bias_explains_as_one_with_a_zero_bias():
    unbiased, zero = _functional(use_bias=False), _functional()
    kernel, bias = zero.get_layer("predictions").get_weights()
    # Positive weights on ReLU features: every class has evidence, so no map is all zeros.
    kernel = np.abs(kernel)
    zero.get_layer("predictions").set_weights([kernel, np.zeros_like(bias)])
    unbiased.get_layer("conv").set_weights(zero.get_layer("conv").get_weights())
    unbiased.get_layer("predictions").set_weights([kernel])
    images = random_images(2, 16, 16)
    for class_index in (None, 1):
        actual = kr.viz.grad_cam(unbiased, images, class_index, layer="conv")
        assert actual.shape == (2, 16, 16) and np.isfinite(actual).all()
        np.testing.assert_allclose(actual.max(axis=(1, 2)), 1.0, rtol=1e-6)
        expected = kr.viz.grad_cam(zero, images, class_index, layer="conv")
        np.testing.assert_allclose(actual, expected, atol=1e-6)
    # By hand: with average pooling and a linear classifier Grad-CAM is CAM (Selvaraju et al.,
    # Section 3.1), the ReLU of the class's kernel column weighting the feature channels.
    features = keras.Model(unbiased.input, unbiased.get_layer("conv").output)(images)
    cam = np.maximum(
        np.einsum("nhwk,k->nhw", keras.ops.convert_to_numpy(features), kernel[:, 1]), 0
    )
    cam = keras.ops.convert_to_numpy(keras.ops.image.resize(cam[..., None], (16, 16)))[..., 0]
    np.testing.assert_allclose(actual, cam / cam.max(axis=(1, 2), keepdims=True), atol=1e-5)
