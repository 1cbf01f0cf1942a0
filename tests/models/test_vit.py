"""Vision Transformer: reference parameter counts, NumPy parity, resizing, head replacement."""

import math

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.files import model_class_names, save_model, set_class_names
from keras_resvit.layers import DropPath, PositionEmbedding
from keras_resvit.layers.vit_layers import sincos_2d
from keras_resvit.models.complexity import layer_macs
from keras_resvit.models.registry import get_spec
from keras_resvit.models.vit import (
    VARIANTS,
    encoder_block,
    resample_position_embeddings,
    vit_config,
)
from tests.conftest import (
    TINY_VIT,
    assert_save_load_identical,
    outputs_on_other_backend,
    random_images,
    tiny_vit,
    train_steps_lower_loss,
)

# The registry's ViTs (their parameter counts: tests/test_registry_sweep.py).
VITS = [
    "vit_b16",
    "vit_b32",
    "vit_b8",
    "vit_h14",
    "vit_l16",
    "vit_l32",
    "vit_s16",
    "vit_s32",
    "vit_ti16",
]


# Small enough for behaviour tests on two CPU cores: a 4x4 grid of 8x8 patches.
def randomize(model, seed=0, scale=0.2):
    """Random weights everywhere (zero-initialized heads and tokens would hide mistakes)."""
    rng = np.random.default_rng(seed)
    for weight in model.trainable_weights:
        weight.assign(rng.normal(0, scale, weight.shape).astype("float32"))
    return model


def numpy_out(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def weights_of(model, name):
    return [keras.ops.convert_to_numpy(w) for w in model.get_layer(name).weights]


# --- a plain NumPy reference of the ViT forward pass -------------------------------------------


def np_layer_norm(x, gamma, beta, epsilon=1e-6):
    mean = x.mean(-1, keepdims=True)
    variance = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def np_gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / np.sqrt(2)))


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_attention(x, wq, bq, wk, bk, wv, bv, wo, bo):
    q = np.einsum("btd,dhk->bhtk", x, wq) + bq[:, None]
    k = np.einsum("btd,dhk->bhtk", x, wk) + bk[:, None]
    v = np.einsum("btd,dhk->bhtk", x, wv) + bv[:, None]
    scores = np_softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]))
    return np.einsum("bhtk,hkd->btd", scores @ v, wo) + bo


def np_encoder_block(x, w, name):
    y = np_layer_norm(x, *w(f"{name}_norm1"))
    x = x + np_attention(y, *w(f"{name}_attention"))
    y = np_layer_norm(x, *w(f"{name}_norm2"))
    w1, b1 = w(f"{name}_mlp_dense1")
    w2, b2 = w(f"{name}_mlp_dense2")
    return x + np_gelu(y @ w1 + b1) @ w2 + b2


def np_vit(x, model, patch, num_layers):
    """Inception scaling, patches, class token, position embeddings, blocks, head."""
    w = lambda name: weights_of(model, name)  # noqa: E731
    batch, height, width, channels = x.shape
    x = x / 127.5 - 1.0
    gh, gw = height // patch, width // patch
    patches = x.reshape(batch, gh, patch, gw, patch, channels).transpose(0, 1, 3, 2, 4, 5)
    kernel, bias = w("patch_embedding")
    tokens = patches.reshape(batch, gh * gw, -1) @ kernel.reshape(-1, kernel.shape[-1]) + bias
    (cls,) = w("class_token")
    tokens = np.concatenate([np.repeat(cls, batch, axis=0), tokens], axis=1)
    tokens = tokens + w("position_embedding")[0]
    for i in range(1, num_layers + 1):
        tokens = np_encoder_block(tokens, w, f"encoder_block{i}")
    features = np_layer_norm(tokens, *w("encoder_norm"))[:, 0]
    kernel, bias = w("predictions")
    return np_softmax(features @ kernel + bias)


def keys_cubic_weights(n_in, n_out):
    """Interpolation matrix: half-pixel centers, Keys cubic (a=-0.5), renormalized at borders,
    kernel widened by the scale when shrinking (antialiasing)."""
    scale = n_out / n_in
    width = 1 / scale if scale < 1 else 1.0
    t = np.abs(np.arange(n_in)[None, :] - ((np.arange(n_out) + 0.5) / scale - 0.5)[:, None])
    t = t / width
    a = -0.5
    k = np.where(
        t <= 1,
        (a + 2) * t**3 - (a + 3) * t**2 + 1,
        np.where(t < 2, a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a, 0.0),
    )
    return k / k.sum(1, keepdims=True)


def np_resize_grid(grid, new_grid):
    wh = keys_cubic_weights(grid.shape[0], new_grid[0])
    ww = keys_cubic_weights(grid.shape[1], new_grid[1])
    return np.einsum("ih,hwd,jw->ijd", wh, grid.astype("float64"), ww)


# --- architecture ------------------------------------------------------------------------------


def test_registry_has_every_vit():
    assert kr.list_models("vit_*") == VITS
    assert "r50_vit_b16" in kr.list_models()


@pytest.mark.one_backend(
    "tensorflow",
    reason="each registry name's structure (widths, heads, patch, grid), the same on every "
    "backend; ViTs compute on both backends throughout this module",
)
@pytest.mark.parametrize("name", VITS)
def test_forward_shapes_for_every_registry_name(name):
    variant = get_spec(name).kwargs["variant"]
    size, patch = variant.split("/")
    patch = int(patch)
    # One block keeps the big variants cheap; width, heads and patch are the registry's.
    model = kr.create_model(name, image_size=2 * patch, num_layers=1, num_classes=3)
    probs = numpy_out(model, random_images(2, 2 * patch, 2 * patch))
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    attention = model.get_layer("encoder_block1_attention")
    assert attention.num_heads == VARIANTS[size]["num_heads"]
    assert model.get_layer("patch_embedding").kernel_size == (patch, patch)
    assert model.get_layer("encoder_block1_mlp_dense1").units == VARIANTS[size]["mlp_dim"]
    assert model.get_layer("position_embedding").weights[0].shape == (
        1,
        5,
        VARIANTS[size]["hidden_size"],
    )


@pytest.mark.parametrize(
    "overrides, shape",
    [
        ({"pooling": "token"}, (None, 32)),
        ({"pooling": "gap"}, (None, 32)),
        ({"pooling": None}, (None, 17, 32)),
        ({"pooling": "token", "representation_size": 16}, (None, 16)),
    ],
)
def test_include_top_false_returns_features(overrides, shape):
    model = tiny_vit(include_top=False, **overrides)
    assert model.output_shape == shape
    assert "predictions" not in [layer.name for layer in model.layers]


def test_gap_pooling_has_no_class_token():
    model = tiny_vit(pooling="gap")
    assert "class_token" not in [layer.name for layer in model.layers]
    assert model.get_layer("position_embedding").weights[0].shape == (1, 16, 32)
    assert kr.count_params(model) == kr.count_params(tiny_vit()) - 32 - 32


def test_representation_size_adds_tanh_pre_logits():
    model = tiny_vit(representation_size=16)
    assert model.get_layer("pre_logits").units == 16
    assert model.get_layer("pre_logits").get_config()["activation"] == "tanh"
    assert model.get_layer("predictions").kernel.shape == (16, 5)


def test_sincos2d_has_no_position_weights():
    model = tiny_vit(position_embedding="sincos2d")
    assert model.get_layer("position_embedding").weights == []
    assert kr.count_params(model) == kr.count_params(tiny_vit()) - 17 * 32
    grid = sincos_2d((4, 4), 32)
    # Token 0 sits at (0, 0): sin terms 0, cos terms 1.
    np.testing.assert_allclose(grid[0], np.repeat([0.0, 1.0, 0.0, 1.0], 8))
    assert numpy_out(model, random_images(2, 32, 32)).shape == (2, 5)


def test_drop_path_rates_rise_linearly():
    model = tiny_vit(num_layers=4, drop_path=0.3)
    for block, rate in enumerate(np.linspace(0, 0.3, 4), start=1):
        names = [f"encoder_block{block}_attention_drop_path", f"encoder_block{block}_mlp_drop_path"]
        layers = [layer for layer in model.layers if layer.name in names]
        assert [layer.rate for layer in layers] == ([] if block == 1 else [pytest.approx(rate)] * 2)
        assert all(isinstance(layer, DropPath) for layer in layers)


def test_drop_path_drops_whole_examples_in_training_only():
    layer = DropPath(0.5, seed=1)
    x = np.ones((64, 3, 4), "float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), x)
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    per_example = y.reshape(64, -1)
    assert set(np.unique(per_example)) == {0.0, 2.0}
    assert (per_example == per_example[:, :1]).all()


def test_attention_multiply_adds():
    model = tiny_vit()
    n, d = 17, 32
    # q, k, v, output projections + QK^T + AV.
    assert layer_macs(model.get_layer("encoder_block1_attention")) == 4 * n * d * d + 2 * n * n * d


def test_vit_b16_multiply_adds_match_known_figure():
    with keras.StatelessScope(initialize_variables=False):
        model = kr.create_model("vit_b16")
    # 17.6 GFLOPs (multiply-adds) is the figure timm and the DeiT paper report for ViT-B/16.
    assert kr.count_macs(model) / 1e9 == pytest.approx(17.6, abs=0.05)


# --- numerics ----------------------------------------------------------------------------------


def test_encoder_block_matches_numpy():
    cfg = vit_config(
        None, **{k: v for k, v in TINY_VIT.items() if k not in ("variant", "num_classes")}
    )
    inputs = keras.Input((17, 32))
    block = randomize(keras.Model(inputs, encoder_block(inputs, cfg, 0.0, "block")))
    x = np.random.default_rng(1).normal(size=(2, 17, 32)).astype("float32")
    expected = np_encoder_block(x.astype("float64"), lambda n: weights_of(block, n), "block")
    np.testing.assert_allclose(numpy_out(block, x), expected, atol=1e-4)


def test_whole_vit_matches_numpy():
    model = randomize(tiny_vit(), scale=0.1)
    x = random_images(2, 32, 32)
    expected = np_vit(x.astype("float64"), model, patch=8, num_layers=2)
    np.testing.assert_allclose(numpy_out(model, x), expected, atol=1e-4)


def test_training_steps_lower_the_loss():
    model = kr.create_model("vit_ti16", image_size=32, num_classes=4)
    x = random_images(8, 32, 32)
    y = np.arange(8) % 4
    first, last = train_steps_lower_loss(model, x, y, steps=8, learning_rate=0.01)
    assert last < first


# --- saving ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"pooling": "gap", "position_embedding": "sincos2d"},
        {"representation_size": 16, "dropout": 0.1, "attention_dropout": 0.1, "drop_path": 0.2},
    ],
)
def test_save_load_identical(tmp_path, overrides):
    model = randomize(tiny_vit(**overrides))
    restored = assert_save_load_identical(model, tmp_path, random_images(2, 32, 32))
    assert isinstance(restored.get_layer("position_embedding"), PositionEmbedding)


def test_keras_file_reloads_on_the_other_backend(tmp_path):
    model = randomize(tiny_vit())
    x = random_images(2, 32, 32)
    actual = outputs_on_other_backend(model, x, tmp_path)
    np.testing.assert_allclose(actual, numpy_out(model, x), rtol=1e-4, atol=1e-6)


# --- resize_vit --------------------------------------------------------------------------------


@pytest.mark.parametrize("new_size, new_grid", [(48, (6, 6)), ((24, 40), (3, 5))])
def test_resize_keeps_weights_and_interpolates_the_grid(new_size, new_grid):
    model = randomize(tiny_vit())
    resized = kr.resize_vit(model, new_size)
    for layer in model.layers:
        if layer.weights and layer.name != "position_embedding":
            for old, new in zip(
                weights_of(model, layer.name), weights_of(resized, layer.name), strict=True
            ):
                np.testing.assert_array_equal(new, old)
    (old,) = weights_of(model, "position_embedding")
    (new,) = weights_of(resized, "position_embedding")
    assert new.shape == (1, 1 + new_grid[0] * new_grid[1], 32)
    np.testing.assert_array_equal(new[:, 0], old[:, 0])
    expected = np_resize_grid(old[0, 1:].reshape(4, 4, 32), new_grid).reshape(-1, 32)
    np.testing.assert_allclose(new[0, 1:], expected, atol=1e-5)
    height, width = (new_size, new_size) if isinstance(new_size, int) else new_size
    assert numpy_out(resized, random_images(2, height, width)).shape == (2, 5)


def test_resize_224_to_384_as_in_fine_tuning():
    # ViT-Ti/16 (one block, for speed): a 14x14 grid becomes 24x24, the class token stays.
    model = kr.build_vit("Ti/16", num_layers=1, num_classes=10)
    resized = kr.resize_vit(model, 384)
    (old,) = weights_of(model, "position_embedding")
    (new,) = weights_of(resized, "position_embedding")
    assert new.shape == (1, 1 + 24 * 24, 192)
    np.testing.assert_array_equal(new[:, 0], old[:, 0])
    expected = np_resize_grid(old[0, 1:].reshape(14, 14, 192), (24, 24)).reshape(-1, 192)
    np.testing.assert_allclose(new[0, 1:], expected, atol=1e-5)
    for layer in model.layers:
        if layer.weights and layer.name != "position_embedding":
            for a, b in zip(
                weights_of(model, layer.name), weights_of(resized, layer.name), strict=True
            ):
                np.testing.assert_array_equal(b, a)
    out = keras.ops.convert_to_numpy(resized(random_images(1, 384, 384), training=False))
    assert out.shape == (1, 10) and np.isfinite(out).all()


def test_resize_to_the_same_size_is_exact():
    model = randomize(tiny_vit())
    x = random_images(2, 32, 32)
    np.testing.assert_array_equal(numpy_out(kr.resize_vit(model, 32), x), numpy_out(model, x))


def test_resize_a_loaded_model_and_reload_it(tmp_path):
    model = randomize(tiny_vit(pooling="gap"))
    model.save(tmp_path / "vit.keras")
    loaded = keras.saving.load_model(tmp_path / "vit.keras", safe_mode=True)
    resized = kr.resize_vit(loaded, 48)
    assert resized.input_shape == (None, 48, 48, 3)
    assert_save_load_identical(resized, tmp_path, random_images(2, 48, 48))


def test_resize_keeps_the_class_names_and_replace_head_drops_them(tmp_path):
    model = tiny_vit()
    names = [f"class{i}" for i in range(model.output_shape[-1])]
    set_class_names(model, names)
    resized = kr.resize_vit(model, 48)
    assert model_class_names(resized) == names
    save_model(resized, tmp_path / "resized.keras")
    assert model_class_names(kr.load_model(tmp_path / "resized.keras")) == names
    assert model_class_names(kr.replace_head(resized, 3)) is None  # other classes


def test_resize_sincos_model_uses_the_new_grid():
    resized = kr.resize_vit(tiny_vit(position_embedding="sincos2d"), 48)
    embeddings = np.asarray(resized.get_layer("position_embedding").embeddings)
    np.testing.assert_allclose(embeddings[0, 1:], sincos_2d((6, 6), 32))


def test_resample_position_embeddings_shrinks_and_keeps_prefix():
    rng = np.random.default_rng(0)
    posemb = rng.normal(size=(1, 2 + 6 * 4, 8)).astype("float32")
    out = resample_position_embeddings(posemb, (3, 2), old_grid=(6, 4), num_prefix_tokens=2)
    np.testing.assert_array_equal(out[:, :2], posemb[:, :2])
    expected = np_resize_grid(posemb[0, 2:].reshape(6, 4, 8), (3, 2)).reshape(-1, 8)
    np.testing.assert_allclose(out[0, 2:], expected, atol=1e-5)
    with pytest.raises(ValueError, match="old_grid"):
        resample_position_embeddings(posemb[:, 2:-1], (3, 3))


# --- replace_head ------------------------------------------------------------------------------


def test_replace_head_on_vit_starts_at_zero_logits():
    model = randomize(tiny_vit(classifier_activation=None))
    x = random_images(2, 32, 32)
    before = numpy_out(model, x)
    new = kr.replace_head(model, 7)
    assert new.output_shape == (None, 7)
    np.testing.assert_array_equal(numpy_out(new, x), np.zeros((2, 7)))
    for layer in model.layers:
        if layer.weights and layer.name != "predictions":
            for old, kept in zip(
                weights_of(model, layer.name), weights_of(new, layer.name), strict=True
            ):
                np.testing.assert_array_equal(kept, old)
    np.testing.assert_array_equal(numpy_out(model, x), before)


def test_replace_head_on_vit_keeps_softmax_and_features():
    model = randomize(tiny_vit())
    x = random_images(2, 32, 32)
    new = kr.replace_head(model, 4)
    np.testing.assert_allclose(numpy_out(new, x), np.full((2, 4), 0.25), rtol=1e-6)

    def features(m):
        return numpy_out(keras.Model(m.input, m.get_layer("token_pool").output), x)

    np.testing.assert_array_equal(features(new), features(model))


def test_replace_head_on_resnet_keeps_backbone():
    model = kr.create_model("resnet20")
    x = random_images(2, 32, 32)
    new = kr.replace_head(model, 3)
    assert new.output_shape == (None, 3)
    assert np.abs(weights_of(new, "predictions")[0]).max() > 0

    def features(m):
        return numpy_out(keras.Model(m.input, m.get_layer("avg_pool").output), x)

    np.testing.assert_array_equal(features(new), features(model))


@pytest.mark.parametrize("how", ["model", "each layer"])
def test_replace_head_on_a_frozen_model_gives_a_trainable_head_on_the_frozen_base(how):
    """Freeze the base, replace the head, train: a linear probe. The head must learn."""
    model = kr.create_model("resnet20")
    if how == "model":
        model.trainable = False
    else:
        for layer in model.layers:
            layer.trainable = False
    new = kr.replace_head(model, 5)
    assert new.trainable and new.get_layer("predictions").trainable
    assert [w.path for w in new.trainable_weights] == ["predictions/kernel", "predictions/bias"]
    assert not any(
        layer.trainable for layer in new.layers if layer.name != "predictions" and layer.weights
    )


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"image_size": 30}, ["image_size=30", "patch_size=8", "32"]),
        ({"variant": "X/16"}, ["variant='X/16'", "'Ti'", "'B/16'"]),
        ({"variant": "b/16"}, ["variant='b/16'", "Did you mean", "'B/16'"]),
        ({"hidden_size": 30, "num_heads": 4}, ["hidden_size=30", "num_heads=4"]),
        ({"pooling": "avg"}, ["pooling='avg'", "'token'", "'gap'"]),
        ({"pooling": None}, ["pooling=None", "include_top=False"]),
        ({"position_embedding": "rope"}, ["position_embedding='rope'", "'sincos2d'"]),
        (
            {"position_embedding": "sincos2d", "hidden_size": 30, "num_heads": 3},
            ["hidden_size=30", "multiple of 4"],
        ),
        ({"drop_path": 1.0}, ["drop_path=1.0", "[0, 1)"]),
        ({"num_layers": 0}, ["num_layers=0", "positive"]),
        ({"num_classes": 0}, ["num_classes=0", "positive"]),
        ({"representation_size": -1}, ["representation_size=-1", "positive"]),
        ({"preprocessing": "torch"}, ["preprocessing='torch'", "'inception'"]),
        ({"hidden_size": None}, ["hidden_size"]),
    ],
)
def test_bad_arguments_raise_one_clear_error(kwargs, words):
    with pytest.raises(ValueError) as error:
        tiny_vit(**kwargs)
    for word in words:
        assert word in str(error.value)


def test_resize_and_replace_head_reject_unfit_models():
    with pytest.raises(ValueError, match="model='resnet20' is not a ViT"):
        kr.resize_vit(kr.create_model("resnet20"), 64)
    with pytest.raises(ValueError, match=r"image_size=36 .* patch size 8"):
        kr.resize_vit(tiny_vit(), 36)
    with pytest.raises(ValueError, match="predictions"):
        kr.replace_head(tiny_vit(include_top=False), 3)
    with pytest.raises(ValueError, match="num_classes=0"):
        kr.replace_head(tiny_vit(), 0)


def test_a_vit_is_named_by_the_widths_it_has():
    # A ViT-B/16 whose widths were overridden was named "vit_b4", as if it were a ViT-B.
    small = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "mlp_dim": 8, "image_size": 16}
    assert kr.build_vit(patch_size=4, **small).name == "vit_d32_l1_4"
    assert kr.build_vit(None, patch_size=8, **small).name == "vit_d32_l1_8"
    # Its depth too: a 2-layer ViT-Ti is no ViT-Ti, nor a 12-layer ViT of its width.
    assert kr.build_vit("Ti/16", image_size=32, num_layers=2).name == "vit_d192_l2_16"
    hybrid = kr.build_hybrid_vit("r50", "Ti/16", image_size=32, num_layers=1)
    assert hybrid.name == "r50_vit_d192_l1_16"
    assert kr.build_vit("Ti/16", image_size=32, patch_size=8).name == "vit_ti8"
