"""Attention rollout: row-stochastic matrices, parity with a hand-computed one-block rollout,
maps that depend on the image, a savable model afterwards and clear errors."""

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.base.backend import dtype_policy
from tests.conftest import assert_save_load_identical, random_images, tiny_vit

# TINY_VIT: 32 px images in patches of 8, so a 4x4 grid and 17 tokens with the class token.
GRID = (4, 4)
TOKENS = 1 + GRID[0] * GRID[1]


@pytest.fixture
def images():
    return np.concatenate([random_images(1, 32, 32, seed=1), random_images(1, 32, 32, seed=2)])


@pytest.fixture(scope="module")
def vit():
    return tiny_vit()


@pytest.mark.parametrize(
    "discard_ratio, head_fusion", [(0.0, "mean"), (0.5, "mean"), (0.0, "max"), (0.3, "min")]
)
def test_rollout_rows_are_distributions(vit, images, discard_ratio, head_fusion):
    rollout = kr.viz.rollout_matrices(vit, images, discard_ratio, head_fusion)
    assert rollout.shape == (2, TOKENS, TOKENS)
    assert rollout.min() >= 0
    np.testing.assert_allclose(rollout.sum(axis=-1), 1.0, atol=1e-5)


def test_class_token_maps_differ_between_images(vit, images):
    maps = kr.viz.attention_rollout(vit, images)
    assert maps.shape == (2, *GRID)
    # The class token's row over the patches; the rest of its mass stays on itself.
    assert np.all(maps.sum(axis=(1, 2)) < 1)
    assert np.abs(maps[0] - maps[1]).max() > 1e-3
    np.testing.assert_allclose(
        maps, kr.viz.rollout_matrices(vit, images)[:, 0, 1:].reshape(2, *GRID)
    )


def test_one_block_matches_hand_computed_attention(images):
    # With one block the rollout is (mean over heads of softmax(QK^T / sqrt(d)) + I) / 2.
    model = tiny_vit(num_layers=1)
    tokens = keras.Model(model.input, model.get_layer("encoder_block1_norm1").output)
    x = keras.ops.convert_to_numpy(tokens(images)).astype("float64")
    attention = model.get_layer("encoder_block1_attention")
    q_kernel, q_bias = (np.asarray(w) for w in attention.query_dense.weights)
    k_kernel, k_bias = (np.asarray(w) for w in attention.key_dense.weights)
    q = np.einsum("btd,dhk->bhtk", x, q_kernel) + q_bias[None, :, None]
    k = np.einsum("btd,dhk->bhtk", x, k_kernel) + k_bias[None, :, None]
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    expected = (weights.mean(axis=1) + np.eye(TOKENS)) / 2
    np.testing.assert_allclose(kr.viz.rollout_matrices(model, images), expected, atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("head_fusion", ["mean", "max"])
def test_mixed_precision_vits_roll_out_as_their_float32_twin(vit, images, policy, head_fusion):
    with dtype_policy(policy):
        twin = tiny_vit()
    twin.set_weights(vit.get_weights())
    actual = kr.viz.rollout_matrices(twin, images, head_fusion=head_fusion)
    assert actual.dtype == np.float64
    np.testing.assert_allclose(actual.sum(axis=-1), 1.0, atol=1e-12)
    expected = kr.viz.rollout_matrices(vit, images, head_fusion=head_fusion)
    np.testing.assert_allclose(actual, expected, atol=0.01)


def test_gap_models_average_the_patch_rows(images):
    maps = kr.viz.attention_rollout(tiny_vit(pooling="gap"), images)
    assert maps.shape == (2, *GRID)
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), 1.0, atol=1e-5)


def test_model_is_unchanged_and_still_saves(vit, images, tmp_path):
    before = [w.copy() for w in vit.get_weights()]
    layers = len(vit.layers)
    kr.viz.attention_rollout(vit, images)
    assert len(vit.layers) == layers
    for old, new in zip(before, vit.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    assert_save_load_identical(vit, tmp_path, images)


def test_plot_attention_writes_a_png_of_panel_size(vit, images, tmp_path):
    from matplotlib.image import imread

    from keras_resvit.viz.figures import DPI, LINE_INCHES, PANEL_INCHES

    path = kr.viz.plot_attention(vit, images, tmp_path / "attention.png")
    height, width = imread(path).shape[:2]
    assert (height, width) == (
        round((PANEL_INCHES + LINE_INCHES) * DPI),
        round(2 * PANEL_INCHES * DPI),
    )


@pytest.mark.parametrize(
    "model, arguments, words",
    [
        ("resnet", {}, ["is not a ViT", "grad_cam"]),
        ("vit", {"head_fusion": "median"}, ["head_fusion='median'", "'mean'"]),
        ("vit", {"discard_ratio": 1.0}, ["discard_ratio=1.0", "[0, 1)"]),
        # int(17 * 0.05) = 0 tokens: accepted, it changed nothing.
        ("vit", {"discard_ratio": 0.05}, ["discard_ratio=0.05 of 17 tokens", "at least 1/17"]),
        ("vit", {"images": np.zeros((2, 16, 16, 3))}, ["(2, 16, 16, 3)", "(N, 32, 32, 3)"]),
        ("vit", {"images": np.zeros((32, 32, 3))}, ["(32, 32, 3)", "images[None]"]),
    ],
)
def test_bad_input_raises_one_clear_error(vit, images, model, arguments, words):
    model = vit if model == "vit" else kr.build_resnet(8, stem="cifar")
    arguments = {"images": images, **arguments}
    with pytest.raises(ValueError) as error:
        kr.viz.attention_rollout(model, **arguments)
    for word in words:
        assert word in str(error.value)


def test_class_names_for_a_model_without_a_classifier_are_refused(images, tmp_path):
    features = tiny_vit(include_top=False)
    with pytest.raises(ValueError, match=r"class_names name the classes.*has no classifier"):
        kr.viz.plot_attention(features, images, tmp_path / "a.png", class_names=["a", "b"])
    assert not (tmp_path / "a.png").exists()
