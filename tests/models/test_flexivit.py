"""FlexiViT (Beyer et al. 2023): `resize_vit(model, patch_size=...)` PI-resizes the patch
embedding, so a patch resized to the new size gives the token the old kernel gave it."""

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.models.vit import pi_resize_kernel
from tests.conftest import random_images, tiny_vit
from tests.models.test_hybrid import TINY as TINY_HYBRID


def _bilinear(images, size):
    """The backend's bilinear resize without antialiasing (what FlexiViT resizes patches with)."""
    resized = keras.ops.image.resize(images, (size, size), antialias=False)
    return keras.ops.convert_to_numpy(resized).astype("float64")


@pytest.mark.parametrize("old, new", [(8, 12), (8, 16), (16, 24)])
def test_pi_resized_kernel_gives_the_original_token_for_a_resized_patch(old, new):
    # FlexiViT, Sec. 3.4: <resize(x), PI-resize(w)> = <x, w> for every patch x when growing.
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(old, old, 3, 5))
    patches = rng.uniform(0, 255, (4, old, old, 3))
    tokens = np.einsum("nhwc,hwcd->nd", patches, kernel)
    resized = pi_resize_kernel(kernel, new).astype("float64")
    assert resized.shape == (new, new, 3, 5)
    got = np.einsum("nhwc,hwcd->nd", _bilinear(patches, new), resized)
    np.testing.assert_allclose(got, tokens, rtol=1e-4, atol=1e-4 * np.abs(tokens).max())


@pytest.mark.parametrize("old, new", [(16, 8), (8, 12)])
def test_the_kernel_is_the_least_squares_solution_under_the_backends_resize(old, new):
    # Sec. 3.4: w_new = argmin ||B^T w_new - w||, B the resize of a patch; exact when growing.
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(old, old, 2, 3))
    basis = np.eye(old * old).reshape(old * old, old, old, 1)
    resize_t = _bilinear(basis, new).reshape(old * old, new * new)  # B^T, from the backend
    expected = np.linalg.lstsq(resize_t, kernel.reshape(old * old, -1), rcond=None)[0]
    got = pi_resize_kernel(kernel, new).reshape(new * new, -1)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert pi_resize_kernel(kernel, new).shape == (new, new, 2, 3)


def test_a_resized_vit_gives_the_same_outputs_on_patch_wise_resized_images():
    # Patch 8 at 32 px (a 4x4 grid) -> patch 12 at 48 px: the same grid and position
    # embeddings, every token the same when each patch is resized on its own.
    model = tiny_vit()
    flexi = kr.resize_vit(model, 48, patch_size=12)
    assert flexi.get_layer("patch_embedding").kernel.shape == (12, 12, 3, 32)
    assert flexi.get_layer("position_embedding").grid_size == (4, 4)
    images = random_images(2, 32, 32)
    patches = images.reshape(2, 4, 8, 4, 8, 3).transpose(0, 1, 3, 2, 4, 5).reshape(-1, 8, 8, 3)
    grown = _bilinear(patches, 12).reshape(2, 4, 4, 12, 12, 3).transpose(0, 1, 3, 2, 4, 5)
    grown = grown.reshape(2, 48, 48, 3).astype("float32")
    want = keras.ops.convert_to_numpy(model(images, training=False))
    got = keras.ops.convert_to_numpy(flexi(grown, training=False))
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert model.get_layer("patch_embedding").kernel.shape == (8, 8, 3, 32)  # left unchanged


def test_patch_size_alone_keeps_the_image_size_and_resamples_the_grid(tmp_path):
    model = tiny_vit()
    flexi = kr.resize_vit(model, patch_size=16)
    assert flexi.input_shape == (None, 32, 32, 3)
    assert flexi.get_layer("position_embedding").grid_size == (2, 2)
    images = random_images(1, 32, 32)
    assert np.isfinite(keras.ops.convert_to_numpy(flexi(images))).all()
    flexi.save(tmp_path / "flexi.keras")
    reloaded = keras.saving.load_model(tmp_path / "flexi.keras")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reloaded(images)),
        keras.ops.convert_to_numpy(flexi(images)),
        atol=1e-6,
    )


def test_bad_patch_sizes_are_named():
    model = tiny_vit()
    with pytest.raises(ValueError, match="image_size=32 is not divisible by the patch size 12"):
        kr.resize_vit(model, patch_size=12)
    with pytest.raises(ValueError, match="patch_size=0 must be a positive int"):
        kr.resize_vit(model, patch_size=0)
    hybrid = kr.build_hybrid_vit("r50", **TINY_HYBRID)
    with pytest.raises(ValueError, match="patch_size=8: .* is a hybrid ViT"):
        kr.resize_vit(hybrid, patch_size=8)
