"""The ViT options beyond the 2021 paper: register tokens, LayerScale, QK-norm and attention
pooling ("map"). Reference parameter counts, NumPy parity, `.keras` round trips, resize_vit,
replace_head and TF Lite."""

import math

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.layers import LayerScale, MultiHeadSelfAttention, RegisterTokens
from keras_resvit.models.vit import resample_position_embeddings
from tests.conftest import assert_save_load_identical, random_images, tiny_vit
from tests.models.test_vit import (
    np_gelu,
    np_layer_norm,
    np_softmax,
    numpy_out,
    randomize,
    weights_of,
)
from tests.test_registry_sweep import weight_gradients

# Every option at once, on the conftest's tiny ViT (width 32, 4 heads, 2 blocks, 4x4 patches).
ALL_OPTIONS = {"num_registers": 2, "layer_scale_init": 0.1, "qk_norm": True}


# --- parameter counts --------------------------------------------------------------------------

# timm's published sizes (millions, `param_count` of
# pytorch-image-models/results/benchmark-infer-amp-nchw-pt240-cu124-rtx3090.csv) for the same
# configurations:
# - vit_base_patch16_reg4_gap_256 (86.62): B/16 at 256, 4 registers, no class token, no
#   position embedding on the registers (no_embed_class), mean pooling, 1000 classes.
# - vit_medium_patch16_reg4_gap_256 (38.88): width 512, 12 blocks, 8 heads, MLP 2048, the same
#   registers and pooling, LayerScale init_values=1e-5.
# - vit_base_patch16_siglip_224 (92.88): B/16 at 224, attention pooling ("map"), no class
#   token, no classifier (num_classes=0).
MEDIUM = {"hidden_size": 512, "num_layers": 12, "num_heads": 8, "mlp_dim": 2048, "patch_size": 16}
PUBLISHED = [
    ("B/16", {"image_size": 256, "pooling": "gap", "num_registers": 4}, 86.62),
    (
        None,
        {
            **MEDIUM,
            "image_size": 256,
            "pooling": "gap",
            "num_registers": 4,
            "layer_scale_init": 1e-5,
        },
        38.88,
    ),  # noqa: E501
    ("B/16", {"pooling": "map", "include_top": False}, 92.88),
]


@pytest.mark.parametrize(
    "variant, options, millions", PUBLISHED, ids=["reg4_gap", "medium_reg4_ls", "siglip_map"]
)  # noqa: E501
def test_parameter_count_matches_timm(variant, options, millions):
    with keras.StatelessScope(initialize_variables=False):
        model = kr.build_vit(variant, **options)
        count = kr.count_params(model)
    assert round(count / 1e6, 2) == millions, count


def test_vit_s16_with_layer_scale_and_qk_norm_count_by_hand():
    # ViT-S/16 at 224 (timm's vit_small_patch16_224: 22,050,664) plus, in each of 12 blocks,
    # two LayerScale vectors (2 x 384) and QK-norm's scale and bias for queries and keys
    # (4 x head_dim 64): 22,050,664 + 12 * (768 + 256) = 22,062,952.
    with keras.StatelessScope(initialize_variables=False):
        model = kr.create_model("vit_s16", layer_scale_init=1e-5, qk_norm=True)
        count = kr.count_params(model)
    assert count == 22_050_664 + 12 * (2 * 384 + 4 * 64) == 22_062_952


def test_defaults_add_no_layer_and_no_weight():
    with keras.StatelessScope(initialize_variables=False):
        plain = tiny_vit()
        explicit = tiny_vit(num_registers=0, layer_scale_init=None, qk_norm=False)
    assert [layer.name for layer in explicit.layers] == [layer.name for layer in plain.layers]
    assert [w.path for w in explicit.weights] == [w.path for w in plain.weights]
    assert "qk_norm" not in plain.get_layer("encoder_block1_attention").get_config()


def test_option_layers_and_weights():
    with keras.StatelessScope(initialize_variables=False):
        model = tiny_vit(pooling="map", **ALL_OPTIONS)
    names = [layer.name for layer in model.layers]
    assert "class_token" not in names and "map_pool" in names
    assert model.get_layer("register_tokens").weights[0].shape == (1, 2, 32)
    # The registers have no position embedding: 16 patches only.
    assert model.get_layer("position_embedding").weights[0].shape == (1, 16, 32)
    scale = model.get_layer("encoder_block2_mlp_layer_scale")
    assert isinstance(scale, LayerScale) and scale.init_value == 0.1
    attention = model.get_layer("encoder_block1_attention")
    assert [w.path.split("/", 1)[1] for w in attention.weights][-4:] == [
        "query_norm/gamma",
        "query_norm/beta",
        "key_norm/gamma",
        "key_norm/beta",
    ]
    assert attention.weights[-1].shape == (8,)  # head_dim


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"num_registers": -1}, ("num_registers=-1", "int >= 0")),
        ({"num_registers": 2.0}, ("num_registers=2.0", "int >= 0")),
        ({"num_registers": True}, ("num_registers=True", "int >= 0")),
        ({"layer_scale_init": 0.0}, ("layer_scale_init=0.0", "> 0")),
        ({"layer_scale_init": "1e-5"}, ("layer_scale_init='1e-5'", "> 0")),
        ({"qk_norm": "yes"}, ("qk_norm='yes'", "True or False")),
        ({"pooling": "attention"}, ("pooling='attention'", "'map'")),
        ({"pooling": None}, ("pooling=None", '"map"')),
        ({"fc_norm": "yes"}, ("fc_norm='yes'", "True or False")),
        (
            {"fc_norm": True, "pooling": None, "include_top": False},
            ("fc_norm=True", "pooling=None"),
        ),
    ],
)
def test_bad_option_values_raise_one_clear_error(kwargs, words):
    with pytest.raises(ValueError) as error:
        tiny_vit(**kwargs)
    assert all(word in str(error.value) for word in words), str(error.value)


def test_options_reach_create_model_and_the_hybrid():
    with keras.StatelessScope(initialize_variables=False):
        model = kr.create_model("vit_ti16", image_size=32, pooling="map", **ALL_OPTIONS)
        hybrid = kr.create_model("r50_vit_b16", image_size=32, pooling="map", **ALL_OPTIONS)
    for built in (model, hybrid):
        names = [layer.name for layer in built.layers]
        assert {"register_tokens", "register_drop", "map_attention"} <= set(names)
        assert built.get_layer("encoder_block1_attention").qk_norm


# --- a plain NumPy reference -------------------------------------------------------------------


def np_attention(query, value, layer):
    """Multi-head attention of `query` over `value` with `layer`'s weights (and QK-norm)."""
    w = {v.path.split("/", 1)[1]: keras.ops.convert_to_numpy(v) for v in layer.weights}
    q = np.einsum("btd,dhk->bthk", query, w["query/kernel"]) + w["query/bias"]
    k = np.einsum("bsd,dhk->bshk", value, w["key/kernel"]) + w["key/bias"]
    v = np.einsum("bsd,dhk->bshk", value, w["value/kernel"]) + w["value/bias"]
    if "query_norm/gamma" in w:
        q = np_layer_norm(q, w["query_norm/gamma"], w["query_norm/beta"])
        k = np_layer_norm(k, w["key_norm/gamma"], w["key_norm/beta"])
    scores = np_softmax(np.einsum("bthk,bshk->bhts", q, k) / math.sqrt(q.shape[-1]))
    out = np.einsum("bhts,bshk->bthk", scores, v)
    return (
        np.einsum("bthk,hkd->btd", out, w["attention_output/kernel"]) + w["attention_output/bias"]
    )


def np_mlp(x, model, name):
    w1, b1 = weights_of(model, f"{name}_dense1")
    w2, b2 = weights_of(model, f"{name}_dense2")
    return np_gelu(x @ w1 + b1) @ w2 + b2


def np_vit_with_options(x, model, pooling, num_registers, layer_scale):
    """The tiny ViT (patch 8, two blocks) with its options, step by step in float64."""
    w = lambda name: weights_of(model, name)  # noqa: E731
    fc_norm = any(layer.name == "fc_norm" for layer in model.layers)
    batch, height, width, _ = x.shape
    grid = (height // 8, width // 8)
    x = x / 127.5 - 1.0
    patches = x.reshape(batch, grid[0], 8, grid[1], 8, 3).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(batch, grid[0] * grid[1], -1)
    kernel, bias = w("patch_embedding")
    tokens = patches @ kernel.reshape(-1, kernel.shape[-1]) + bias
    prefix = 1 if pooling == "token" else 0
    if prefix:
        tokens = np.concatenate([np.repeat(w("class_token")[0], batch, 0), tokens], axis=1)
    tokens = tokens + w("position_embedding")[0]
    if num_registers:  # after the class token, after the position embeddings
        registers = np.repeat(w("register_tokens")[0], batch, 0)
        tokens = np.concatenate([tokens[:, :prefix], registers, tokens[:, prefix:]], axis=1)
    for i in (1, 2):
        name = f"encoder_block{i}"
        y = np_layer_norm(tokens, *w(f"{name}_norm1"))
        y = np_attention(y, y, model.get_layer(f"{name}_attention"))
        tokens = tokens + (w(f"{name}_attention_layer_scale")[0] if layer_scale else 1) * y
        y = np_mlp(np_layer_norm(tokens, *w(f"{name}_norm2")), model, f"{name}_mlp")
        tokens = tokens + (w(f"{name}_mlp_layer_scale")[0] if layer_scale else 1) * y
    if not fc_norm:
        tokens = np_layer_norm(tokens, *w("encoder_norm"))
    tokens = np.concatenate([tokens[:, :prefix], tokens[:, prefix + num_registers :]], axis=1)
    if pooling == "token":
        features = tokens[:, 0]
    elif pooling == "gap":
        features = tokens.mean(1)
    else:  # big_vision's MAPHead
        probe = np.repeat(w("map_probe")[0], batch, 0)
        y = np_attention(probe, tokens, model.get_layer("map_attention"))
        y = y + np_mlp(np_layer_norm(y, *w("map_norm")), model, "map_mlp")
        features = y[:, 0]
    if fc_norm:  # timm's fc_norm: the final LayerNorm on the pooled feature
        features = np_layer_norm(features, *w("fc_norm"))
    kernel, bias = w("predictions")
    return np_softmax(features @ kernel + bias)


@pytest.mark.parametrize(
    "options",
    [
        {"pooling": "token", **ALL_OPTIONS},
        {"pooling": "gap", "num_registers": 3},
        {"pooling": "map", **ALL_OPTIONS},
        {"pooling": "gap", "num_registers": 2, "fc_norm": True},
        {"pooling": "token", "fc_norm": True},
    ],
    ids=["token_all", "gap_registers", "map_all", "gap_fc_norm", "token_fc_norm"],
)
def test_vit_with_options_matches_numpy(options):
    model = randomize(tiny_vit(**options), scale=0.1)
    x = random_images(2, 32, 32)
    expected = np_vit_with_options(
        x.astype("float64"),
        model,
        options["pooling"],
        options.get("num_registers", 0),
        "layer_scale_init" in options,
    )
    np.testing.assert_allclose(numpy_out(model, x), expected, atol=1e-4)


def test_qk_norm_attention_matches_numpy_on_both_paths():
    # A plain self-attention call runs the matmul path; asking for the scores runs Keras'.
    layer = MultiHeadSelfAttention(num_heads=4, key_dim=8, qk_norm=True)
    x = np.random.default_rng(1).normal(size=(2, 19, 32)).astype("float32")
    layer(x, x)
    randomize(layer, seed=2, scale=0.3)
    expected = np_attention(x.astype("float64"), x.astype("float64"), layer)
    fast = keras.ops.convert_to_numpy(layer(x, x))
    keras_path, scores = layer(x, x, return_attention_scores=True)
    np.testing.assert_allclose(fast, expected, atol=1e-4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras_path), expected, atol=1e-4)
    assert scores.shape == (2, 4, 19, 19)


def test_every_new_weight_gets_a_gradient():
    # A registered ViT's name: the sweep's helper compiles a ViT's step as one JAX program.
    model = tiny_vit(pooling="map", num_layers=1, name="vit_ti16", **ALL_OPTIONS)
    model = randomize(model, scale=0.1)
    grads = weight_gradients(model, random_images(4, 32, 32), np.arange(4))
    assert all(np.isfinite(g).all() for g in grads.values())
    assert not [path for path, g in grads.items() if not np.any(g)]
    # Registers 1; LayerScale 2 per block; QK-norm 4 per block; the MAP head's probe 1,
    # attention 8, LayerNorm 2 and MLP 4: 22 new weights in a one-block model, each trained.
    new = ("register_tokens", "layer_scale", "query_norm", "key_norm", "map_")
    assert sum(any(n in path for n in new) for path in grads) == 1 + 2 + 4 + 15


def test_layer_scale_and_registers_match_numpy():
    x = np.random.default_rng(3).normal(size=(2, 5, 6)).astype("float32")
    scale = LayerScale(1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scale(x)), x * 1e-5, rtol=1e-6)
    registers = RegisterTokens(3, num_prefix_tokens=1)
    out = keras.ops.convert_to_numpy(registers(x))
    (tokens,) = weights_of(keras.Sequential([keras.Input((5, 6)), registers]), registers.name)
    expected = np.concatenate([x[:, :1], np.repeat(tokens, 2, 0), x[:, 1:]], axis=1)
    np.testing.assert_array_equal(out, expected)
    assert 0 < np.abs(tokens).max() < 1e-4  # N(0, 1e-6): distinct registers, near zero


# --- save, resize, replace the head, export ---------------------------------------------------


def assert_same_weights(model, other, but):
    """Every layer's weights but the layer `but`'s are equal in `model` and `other`."""
    for layer in model.layers:
        if layer.weights and layer.name != but:
            for a, b in zip(
                weights_of(model, layer.name), weights_of(other, layer.name), strict=True
            ):
                np.testing.assert_array_equal(b, a)


@pytest.mark.parametrize("pooling", ["token", "map"])
def test_keras_round_trip_with_every_option(pooling, tmp_path):
    model = randomize(tiny_vit(pooling=pooling, **ALL_OPTIONS))
    restored = assert_save_load_identical(model, tmp_path, random_images(2, 32, 32))
    assert restored.get_layer("encoder_block1_attention").qk_norm
    assert isinstance(restored.get_layer("encoder_block1_mlp_layer_scale"), LayerScale)


def test_resize_vit_keeps_registers_and_resamples_only_the_grid():
    model = randomize(tiny_vit(pooling="token", **ALL_OPTIONS), scale=0.1)
    resized = kr.resize_vit(model, 48)
    (old,) = weights_of(model, "position_embedding")
    (new,) = weights_of(resized, "position_embedding")
    # The class token is the only prefix token of the position embeddings; the registers have
    # none, so they and every other weight are copied as they are.
    assert resized.get_layer("position_embedding").num_prefix_tokens == 1
    expected = resample_position_embeddings(old, (6, 6), num_prefix_tokens=1)
    np.testing.assert_array_equal(new, expected)
    assert_same_weights(model, resized, but="position_embedding")
    x = random_images(2, 48, 48)
    expected = np_vit_with_options(x.astype("float64"), resized, "token", 2, True)
    np.testing.assert_allclose(numpy_out(resized, x), expected, atol=1e-4)


def test_replace_head_keeps_every_option():
    model = randomize(tiny_vit(pooling="map", **ALL_OPTIONS))
    new = kr.replace_head(model, 3)
    x = random_images(2, 32, 32)
    np.testing.assert_allclose(numpy_out(new, x), np.full((2, 3), 1 / 3), rtol=1e-6)
    assert_same_weights(model, new, but="predictions")


def test_intermediate_tokens_hold_the_registers_after_the_class_token():
    model = tiny_vit(pooling="token", num_registers=2)
    tokens = kr.intermediate_model(model, ["encoder_block1"])(random_images(1, 32, 32))
    registers = model.get_layer("register_tokens").tokens
    # Block 1's input holds them right after the class token: 1 + 2 + the 4x4 grid.
    assert tuple(tokens["encoder_block1"].shape) == (1, 1 + 2 + 16, 32)
    assert tuple(registers.shape) == (1, 2, 32)


def test_attention_rollout_leaves_the_registers_out():
    model = tiny_vit(pooling="token", num_registers=2)
    rollout = kr.viz.attention_rollout(model, random_images(1, 32, 32))
    assert rollout.shape == (1, 4, 4)


def test_fc_norm_moves_the_final_norm_and_survives_save_resize_and_export(tmp_path):
    """timm's fc_norm (MAE / BEiT fine-tuning): the same parameters, the final LayerNorm on
    the pooled feature; `.keras`, resize_vit (any size) and TF Lite keep it."""
    with keras.StatelessScope(initialize_variables=False):
        plain = kr.count_params(kr.build_vit("B/16", pooling="gap"))
        moved = kr.count_params(kr.build_vit("B/16", pooling="gap", fc_norm=True))
    assert moved == plain == 86_566_120
    model = randomize(tiny_vit(pooling="gap", fc_norm=True, num_registers=1), scale=0.1)
    names = [layer.name for layer in model.layers]
    assert "encoder_norm" not in names and names.index("fc_norm") > names.index("gap_pool")
    x = random_images(2, 32, 32)
    restored = assert_save_load_identical(model, tmp_path, x)
    assert "fc_norm" in [layer.name for layer in restored.layers]
    opened = kr.resize_vit(model, (None, None))
    np.testing.assert_allclose(numpy_out(opened, x), numpy_out(model, x), atol=1e-5)
    result = kr.export(model, tmp_path / "model.tflite")
    assert result["checked"] and result["max_abs_difference"] < 1e-4


def test_tflite_export_with_every_option_passes_its_check(tmp_path):
    model = randomize(tiny_vit(pooling="map", **ALL_OPTIONS), scale=0.1)
    result = kr.export(model, tmp_path / "model.tflite")
    assert result["checked"] and (tmp_path / "model.tflite").exists()
    assert result["max_abs_difference"] < 1e-4 and result["top1_agreement"] == 1.0
