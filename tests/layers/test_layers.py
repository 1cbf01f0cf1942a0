"""Custom layers against NumPy / keras.applications references, and their serialization."""

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.layers import (
    ClosedFormLayerNormalization,
    FusedBatchNormalization,
    MultiHeadSelfAttention,
    PointwiseConv2D,
    PositionEmbedding,
    ReverseChannels,
    SlicedMaxPooling2D,
    StdConv2D,
    ZeroPadShortcut,
    preprocessing_layers,
)
from tests.conftest import random_images


def apply(layers, x):
    for layer in layers:
        x = layer(x)
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize(
    "preset, mode", [("caffe", "caffe"), ("imagenet", "torch"), ("inception", "tf")]
)
def test_presets_match_keras_applications_preprocess_input(preset, mode):
    x = random_images(2, 8, 8)
    expected = keras.applications.imagenet_utils.preprocess_input(x.copy(), mode=mode)
    np.testing.assert_allclose(apply(preprocessing_layers(preset), x), expected, atol=1e-4)


def test_cifar_preset_standardizes_per_channel():
    from keras_resvit.layers.normalization import CIFAR_MEAN, CIFAR_STD

    x = random_images(2, 8, 8)
    expected = (x - np.array(CIFAR_MEAN)) / np.array(CIFAR_STD)
    np.testing.assert_allclose(apply(preprocessing_layers("cifar"), x), expected, atol=1e-4)
    assert preprocessing_layers(None) == []


def test_unknown_preset_names_valid_ones():
    with pytest.raises(ValueError, match="preprocessing='torch'.*'imagenet'.*'caffe'"):
        preprocessing_layers("torch")


def test_zero_pad_shortcut_matches_numpy():
    x = random_images(2, 9, 9, channels=4)
    out = keras.ops.convert_to_numpy(ZeroPadShortcut(8, stride=2)(x))
    expected = np.pad(x[:, ::2, ::2, :], [(0, 0), (0, 0), (0, 0), (2, 2)])
    np.testing.assert_array_equal(out, expected)
    assert out.shape == (2, 5, 5, 8)


def test_std_conv_standardizes_each_filter():
    x = random_images(2, 6, 6, channels=3) / 255.0
    layer = StdConv2D(4, 3, padding="same", use_bias=False)
    out = keras.ops.convert_to_numpy(layer(x))
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    mean = kernel.mean(axis=(0, 1, 2), keepdims=True)
    std = np.sqrt(kernel.var(axis=(0, 1, 2), keepdims=True) + 1e-10)  # BiT's epsilon
    plain = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)
    plain.build(x.shape)
    plain.kernel.assign((kernel - mean) / std)
    np.testing.assert_allclose(out, keras.ops.convert_to_numpy(plain(x)), rtol=1e-4, atol=1e-5)
    # Rescaling a kernel does not change a standardized conv's output.
    layer.kernel.assign(kernel * 3.0 + 1.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), out, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    "layer",
    [
        ZeroPadShortcut(16, stride=2),
        StdConv2D(8, 3, epsilon=1e-6),
        ReverseChannels(),
        FusedBatchNormalization(epsilon=1e-5, momentum=0.9, axis=1),
        PointwiseConv2D(8, 1, strides=2, use_bias=False),
        MultiHeadSelfAttention(3, 5, dropout=0.1, name="attention"),
        ClosedFormLayerNormalization(epsilon=1e-6, name="norm"),
        SlicedMaxPooling2D(3, strides=2, name="pool"),
    ],
    ids=[
        "zero_pad",
        "std_conv",
        "reverse",
        "fused_bn",
        "pointwise",
        "self_attention",
        "fused_ln",
        "sliced_pool",
    ],
)
def test_layers_serialize(layer):
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(clone) is type(layer)
    assert clone.get_config() == layer.get_config()


def _bn_pair(axis, channels):
    layers = [
        keras.layers.BatchNormalization(axis=axis, epsilon=1e-5, momentum=0.9),
        FusedBatchNormalization(axis=axis, epsilon=1e-5, momentum=0.9),
    ]
    gamma = np.linspace(0.5, 2.0, channels).astype("float32")
    for layer in layers:
        layer.build((None, channels, 5, 7) if axis == 1 else (None, 5, 7, channels))
        layer.gamma.assign(gamma)
        layer.beta.assign(-gamma / 2)
    return layers


@pytest.mark.parametrize("axis", [-1, 1])
def test_fused_batch_norm_matches_keras_batch_norm(axis):
    """Same outputs and moving statistics as keras.layers.BatchNormalization, in training
    (batch statistics, biased variance) and inference (moving statistics)."""
    x = np.random.default_rng(0).normal(2.0, 3.0, (6, 8, 5, 7)).astype("float32")
    if axis == -1:
        x = x.transpose(0, 2, 3, 1)
    keras_bn, fused = _bn_pair(axis, 8)
    for training in (True, True, False):
        expected = keras.ops.convert_to_numpy(keras_bn(x, training=training))
        got = keras.ops.convert_to_numpy(fused(x, training=training))
        np.testing.assert_allclose(got, expected, atol=1e-5)
    for name in ("moving_mean", "moving_variance"):
        expected = keras.ops.convert_to_numpy(getattr(keras_bn, name))
        got = keras.ops.convert_to_numpy(getattr(fused, name))
        np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Two training steps moved the statistics away from their (0, 1) start.
    assert np.abs(keras.ops.convert_to_numpy(fused.moving_mean)).min() > 0.3


@pytest.mark.parametrize("training", [True, False])
def test_fused_batch_norm_gradients_match_keras(training, backend):
    if backend != "tensorflow":
        pytest.skip("the fused kernel is TensorFlow's; other backends run the Keras layer")
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(1).normal(1.0, 2.0, (4, 5, 7, 8)).astype("float32"))
    grads = []
    for layer in _bn_pair(-1, 8):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(y * tf.sin(y))
        grads.append(tape.gradient(loss, [x, layer.gamma.value, layer.beta.value]))
    for expected, got in zip(*grads, strict=True):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-3, atol=1e-3)


def _pointwise_pair(stride, padding, size):
    """Images, a PointwiseConv2D and a keras Conv2D with the same (non-zero) weights."""
    x = random_images(2, size, size, channels=5) / 255.0
    layer = PointwiseConv2D(6, 1, strides=stride, padding=padding)
    reference = keras.layers.Conv2D(6, 1, strides=stride, padding=padding)
    layer.build(x.shape)
    reference.build(x.shape)
    reference.set_weights([w + 0.5 for w in layer.get_weights()])
    layer.set_weights(reference.get_weights())
    return x, layer, reference


@pytest.mark.parametrize("stride, padding, size", [(1, "same", 7), (2, "same", 7), (2, "valid", 8)])
def test_pointwise_conv_matches_keras_conv(stride, padding, size, backend):
    from keras_resvit.layers.resnet_layers import _pointwise_as_matmul

    x, layer, reference = _pointwise_pair(stride, padding, size)
    out = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(out, keras.ops.convert_to_numpy(reference(x)), atol=1e-5)
    # JAX's CPU backend takes the matmul path; a 3x3 kernel never does.
    assert _pointwise_as_matmul(layer) == (backend == "jax")
    assert not _pointwise_as_matmul(PointwiseConv2D(6, 3))


def _input_gradients(layer, x, with_weights=False):
    """Gradients of a fixed non-linear loss of `layer(x)` with respect to x (and, with
    `with_weights`, then to the layer's trainable variables, in their order)."""
    r = np.random.default_rng(3).normal(size=layer.compute_output_shape(x.shape))
    r = keras.ops.convert_to_tensor(r.astype("float32"))
    if keras.backend.backend() == "jax":
        import jax

        def loss(x, trainable):
            fixed = [v.value for v in layer.non_trainable_variables]
            y, _ = layer.stateless_call(trainable, fixed, x)
            return keras.ops.sum(y * r + keras.ops.square(y))

        trainable = [v.value for v in layer.trainable_variables]
        dx, dw = jax.grad(loss, argnums=(0, 1))(keras.ops.convert_to_tensor(x), trainable)
        return [np.asarray(g) for g in [dx, *(dw if with_weights else [])]]
    import tensorflow as tf

    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * r + tf.square(y))
    weights = [w.value for w in layer.trainable_variables] if with_weights else []
    return [g.numpy() for g in tape.gradient(loss, [x, *weights])]


@pytest.mark.parametrize("stride, padding, size", [(1, "same", 7), (2, "same", 8)])
def test_pointwise_conv_gradients_match_keras_conv(stride, padding, size):
    x, layer, reference = _pointwise_pair(stride, padding, size)
    got = _input_gradients(layer, x, with_weights=True)
    expected = _input_gradients(reference, x, with_weights=True)
    assert len(got) == 3  # x, kernel, bias
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


def test_pointwise_conv_weight_gradient_does_not_transpose_activations(backend):
    """On JAX's CPU backend the kernel gradient contracts the pixels of both operands in
    place. Written as a 4-D matmul, XLA copied every upstream gradient into a (channels,
    pixels) layout first, fused with the ops that produced it: a third of a ResNet-50 step."""
    if backend != "jax":
        pytest.skip("the matmul path, and XLA's CPU layouts, are JAX's")
    import jax

    layer = PointwiseConv2D(64, 1, use_bias=False)
    x = keras.ops.convert_to_tensor(random_images(4, 14, 14, channels=32) / 255.0)
    layer.build(x.shape)

    def loss(kernel):
        y, _ = layer.stateless_call([kernel], [], x)
        # A batch-norm-like consumer, so that the upstream gradient comes out of a fusion.
        y = (y - keras.ops.mean(y, axis=(0, 1, 2))) * keras.ops.rsqrt(
            keras.ops.var(y, axis=(0, 1, 2)) + 1e-3
        )
        return keras.ops.sum(keras.ops.relu(y) ** 2)

    hlo = jax.jit(jax.grad(loss)).lower(layer.kernel.value).compile().as_text()
    activation_size = 4 * 14 * 14 * 64
    transposed = [
        line
        for line in hlo.splitlines()
        if " transpose(" in line and _hlo_size(line) >= activation_size // 2
    ]
    assert transposed == []
    assert "dot(" in hlo or "ynn_fusion" in hlo  # the gradient is still a matmul


def _hlo_size(line):
    """Number of elements of the array an HLO instruction line defines."""
    import re

    shape = re.search(r"= \w+\[([\d,]*)\]", line)
    return int(np.prod([int(d) for d in shape.group(1).split(",") if d])) if shape else 0


@pytest.mark.parametrize(
    "pool, stride, size", [(3, 2, 9), (3, 2, 10), (2, 2, 8), (1, 2, 7), (3, 1, 6), (2, 3, 11)]
)
def test_sliced_max_pool_matches_keras_max_pool(pool, stride, size):
    """Outputs and gradients equal Keras' on inputs with many ties (a ReLU's zeros and
    rounded values): each window's gradient goes to its first maximum."""
    rng = np.random.default_rng(pool * 10 + stride)
    x = np.maximum(rng.normal(size=(2, size, size + 1, 3)), 0).round(1).astype("float32")
    layer = SlicedMaxPooling2D(pool, strides=stride)
    reference = keras.layers.MaxPooling2D(pool, strides=stride)
    expected = keras.ops.convert_to_numpy(reference(x))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), expected)
    np.testing.assert_allclose(
        _input_gradients(layer, x)[0], _input_gradients(reference, x)[0], rtol=1e-6, atol=1e-6
    )


def _attention_pair(seed=0, **kwargs):
    """A keras MultiHeadAttention and a MultiHeadSelfAttention with the same weights.
    key_dim=6 makes the 1/sqrt(key_dim) scale inexact, so its placement is tested too."""
    x = np.random.default_rng(seed).normal(size=(3, 7, 12)).astype("float32")
    # One tensor as query and value: that is what a self-attention call is.
    x = keras.ops.convert_to_tensor(x)
    reference = keras.layers.MultiHeadAttention(4, 6, **kwargs)
    layer = MultiHeadSelfAttention(4, 6, **kwargs)
    reference(x, x)
    layer(x, x)
    layer.set_weights([w + 0.1 * np.sign(w) for w in reference.get_weights()])
    reference.set_weights(layer.get_weights())
    return reference, layer, x


def test_self_attention_matches_keras_attention(backend, monkeypatch):
    reference, layer, x = _attention_pair()
    expected = keras.ops.convert_to_numpy(reference(x, x))
    calls = []
    monkeypatch.setattr(
        keras.layers.MultiHeadAttention, "call", lambda *a, **k: calls.append(k) or a[1]
    )
    got = keras.ops.convert_to_numpy(layer(x, x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # TensorFlow and JAX run the matmul path; other backends run the Keras layer.
    assert not calls if backend in ("tensorflow", "jax") else calls
    layer(x, x, return_attention_scores=True)
    assert calls[-1]["return_attention_scores"]


def test_self_attention_falls_back_for_scores_and_masks():
    reference, layer, x = _attention_pair(seed=1)
    out, scores = layer(x, x, return_attention_scores=True)
    assert tuple(scores.shape) == (3, 4, 7, 7)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.sum(scores, -1)), 1, atol=1e-5)
    mask = np.array([[True] * 4 + [False] * 3] * 3)
    masked = keras.ops.convert_to_numpy(layer(x, x, value_mask=mask))
    expected = keras.ops.convert_to_numpy(reference(x, x, value_mask=mask))
    np.testing.assert_allclose(masked, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(masked - keras.ops.convert_to_numpy(out)).max() > 1e-3


def test_self_attention_trains_like_keras_attention():
    """One SGD step through each layer gives the same updated weights (so the same gradients)."""
    reference, layer, x = _attention_pair(seed=2)
    x = keras.ops.convert_to_numpy(x)
    target = np.random.default_rng(3).normal(size=x.shape).astype("float32")
    weights = []
    for attention in (reference, layer):
        inputs = keras.Input(x.shape[1:])
        model = keras.Model(inputs, attention(inputs, inputs))
        model.compile(keras.optimizers.SGD(0.5), "mse")
        model.fit(x, target, batch_size=3, epochs=1, verbose=0)
        weights.append(attention.get_weights())
    start = _attention_pair(seed=2)[1].get_weights()
    assert np.abs(weights[1][0] - start[0]).max() > 1e-4
    for expected, got in zip(*weights, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_self_attention_dropout_and_mixed_precision():
    _, layer, x = _attention_pair(seed=4, dropout=0.5)
    inference = keras.ops.convert_to_numpy(layer(x, x))
    training = keras.ops.convert_to_numpy(layer(x, x, training=True))
    assert training.shape == inference.shape
    assert np.abs(training - inference).max() > 1e-3
    reference, layer, x = _attention_pair(seed=5, dtype="mixed_bfloat16")
    out = layer(x, x)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    expected = keras.ops.convert_to_numpy(keras.ops.cast(reference(x, x), "float32"))
    got = keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))
    np.testing.assert_allclose(got, expected, atol=0.05)


def _layer_norm_pair(shape, **kwargs):
    """A keras LayerNormalization and a ClosedFormLayerNormalization with the same non-trivial
    gamma and beta."""
    layers = [keras.layers.LayerNormalization(**kwargs), ClosedFormLayerNormalization(**kwargs)]
    for layer in layers:
        layer.build(shape)
        if layer.gamma is not None:
            layer.gamma.assign(np.linspace(0.5, 2.0, layer.gamma.shape[0]).astype("float32"))
        if layer.beta is not None:
            layer.beta.assign(np.linspace(-1.0, 1.0, layer.beta.shape[0]).astype("float32"))
    return layers


@pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`")
@pytest.mark.parametrize(
    "kwargs",
    [{"epsilon": 1e-6}, {"axis": 1}, {"rms_scaling": True}, {"center": False}],
    ids=["last_axis", "axis_1", "rms", "no_center"],
)
def test_fused_layer_norm_matches_keras_layer_norm(kwargs, backend, monkeypatch):
    from keras_resvit.layers import layer_norm

    x = np.random.default_rng(0).normal(1.0, 3.0, (3, 5, 8)).astype("float32")
    reference, layer = _layer_norm_pair(x.shape, **kwargs)
    calls = []
    closed_form = layer_norm._tf_layer_norm
    monkeypatch.setattr(layer_norm, "_tf_layer_norm", lambda *a: calls.append(1) or closed_form(*a))
    got = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(reference(x)), atol=1e-5)
    # TensorFlow runs the closed-form gradient for a Transformer's LayerNorm only.
    assert bool(calls) == (backend == "tensorflow" and kwargs == {"epsilon": 1e-6})


def test_fused_layer_norm_gradients_match_keras(backend):
    if backend != "tensorflow":
        pytest.skip("the closed-form gradient is TensorFlow's; other backends run Keras' call")
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(1).normal(1.0, 2.0, (4, 7, 16)).astype("float32"))
    grads = []
    for layer in _layer_norm_pair(x.shape, epsilon=1e-6):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * tf.sin(3.0 * y))
        grads.append(tape.gradient(loss, [x, layer.gamma.value, layer.beta.value]))
    for expected, got in zip(*grads, strict=True):
        assert np.abs(expected.numpy()).max() > 1e-2
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)


def test_fused_layer_norm_mixed_precision():
    x = np.random.default_rng(2).normal(0.0, 2.0, (2, 5, 8)).astype("float32")
    reference, layer = _layer_norm_pair(x.shape, epsilon=1e-6, dtype="mixed_bfloat16")
    out = layer(x)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    expected = keras.ops.convert_to_numpy(keras.ops.cast(reference(x), "float32"))
    got = keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))
    np.testing.assert_allclose(got, expected, atol=0.05)


def test_gelu_matches_keras_exact_gelu(backend, monkeypatch):
    """Same values and gradients as `keras.activations.gelu(approximate=False)`; on
    TensorFlow the gradient comes from the XLA-compiled kernel."""
    from keras_resvit.layers import gelu, vit_layers

    calls = []
    kernel = vit_layers._tf_gelu_gradient
    monkeypatch.setattr(vit_layers, "_tf_gelu_gradient", lambda: calls.append(1) or kernel())
    x = np.linspace(-7.0, 7.0, 2 * 3 * 40, dtype="float32").reshape(2, 3, 40)
    layer = keras.layers.Activation(gelu)
    reference = keras.layers.Activation(lambda t: keras.activations.gelu(t, approximate=False))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x)), keras.ops.convert_to_numpy(reference(x)), atol=1e-6
    )
    got, expected = _input_gradients(layer, x)[0], _input_gradients(reference, x)[0]
    # The derivative dips below zero (about -0.17 near x = -0.75) and exceeds one near 0.75.
    assert expected.min() < -0.1 and expected.max() > 1.0
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert bool(calls) == (backend == "tensorflow")


def test_gelu_keeps_bfloat16_and_serializes(backend):
    from keras_resvit.layers import gelu

    x = np.linspace(-3.0, 3.0, 24, dtype="float32").reshape(2, 12)
    dense = keras.layers.Dense(5, activation=gelu, dtype="mixed_bfloat16")
    assert keras.backend.standardize_dtype(dense(x).dtype) == "bfloat16"
    if backend == "tensorflow":
        import tensorflow as tf

        grads = []
        for dtype in ("bfloat16", "float32"):
            z = tf.cast(x, dtype)
            with tf.GradientTape() as tape:
                tape.watch(z)
                y = gelu(z)
            grads.append(tape.gradient(y, z))
        assert grads[0].dtype == tf.bfloat16
        np.testing.assert_allclose(
            tf.cast(grads[0], "float32").numpy(), grads[1].numpy(), rtol=2e-2, atol=2e-2
        )
    config = keras.layers.serialize(dense)
    assert config["config"]["activation"]["config"] == "keras_resvit>gelu"
    assert keras.layers.deserialize(config).activation is gelu


def test_files_saved_with_the_former_layer_norm_name_still_load(tmp_path):
    from keras_resvit.layers.vit_layers import FusedLayerNormalization

    inputs = keras.Input((5, 8))
    model = keras.Model(inputs, FusedLayerNormalization(name="norm")(inputs))
    model.get_layer("norm").gamma.assign(np.linspace(0.5, 2.0, 8).astype("float32"))
    model.save(tmp_path / "old.keras")
    loaded = kr.load_model(tmp_path / "old.keras")
    assert isinstance(loaded.get_layer("norm"), ClosedFormLayerNormalization)
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x))
    )
    with pytest.warns(
        DeprecationWarning, match="use keras_resvit.layers.ClosedFormLayerNormalization"
    ):
        assert kr.layers.FusedLayerNormalization is FusedLayerNormalization


@pytest.mark.parametrize(
    "inputs, words",
    [
        (np.zeros((2, 7, 8), "float32"), ["[tokens, patch_map]", "(2, 7, 8)"]),  # map forgotten
        (keras.Input((7, 8)), ["[tokens, patch_map]", "(None, 7, 8)"]),
        ([np.zeros((2, 7, 8), "float32")], ["[tokens, patch_map]", "[(2, 7, 8)]"]),
        ([np.zeros((2, 7, 8), "float32")] * 2, ["[tokens, patch_map]", "(batch, h, w, dim)"]),
        (
            [np.zeros((2, 7, 8), "float32"), np.zeros((2, 3, 3, 8), "float32")],
            ["7 tokens", "3x3 patch map", "expected 10 tokens"],
        ),
    ],
    ids=["tokens", "input", "one", "flat-map", "count"],
)
def test_dynamic_position_embedding_refuses_inputs_without_a_patch_map(inputs, words):
    layer = PositionEmbedding((2, 3), dynamic_size=True)
    with pytest.raises(ValueError) as info:
        layer(inputs)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    tokens, patch_map = np.ones((2, 10, 8), "float32"), np.zeros((2, 3, 3, 8), "float32")
    assert tuple(layer([tokens, patch_map]).shape) == (2, 10, 8)
