"""CutMix as the paper's code and timm draw it: labels weighted by the pixels actually pasted,
the box's size and clipping as theirs (a NumPy copy of the draw), alpha as the paper's."""

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.layers import CutMix


def _flat_batch(count, height, width):
    """Images of one grey level each (their index + 1), and their one-hot labels."""
    levels = np.arange(1, count + 1, dtype="float32")
    images = np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).copy()
    return images, np.eye(count, dtype="float32")


def _kept_and_weights(images, labels):
    """Per image: the share of its pixels still its own, and the weight of its own label."""
    own = np.arange(1, len(images) + 1)[:, None, None]
    kept = (np.asarray(images)[..., 0] == own).mean(axis=(1, 2))
    return kept, np.diagonal(np.asarray(labels))


def _reference_shares(alpha, height, width, draws, rng):
    """timm's `rand_bbox` + `correct_lam` (and the paper's code): 1 - the clipped box's share."""
    shares = []
    for lam in rng.beta(alpha, alpha, draws):
        cut_h, cut_w = int(height * np.sqrt(1 - lam)), int(width * np.sqrt(1 - lam))
        cy, cx = rng.integers(0, height), rng.integers(0, width)
        y0, y1 = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
        x0, x1 = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
        shares.append(1.0 - (y1 - y0) * (x1 - x0) / (height * width))
    return np.array(shares)


@pytest.mark.parametrize("size", [(32, 32), (7, 12)])
def test_label_weights_are_the_share_of_pixels_each_image_keeps(size):
    layer = CutMix(seed=3)
    images, labels = _flat_batch(16, *size)
    for _ in range(4):
        out = layer({"images": images, "labels": labels})
        kept, weights = _kept_and_weights(out["images"], out["labels"])
        np.testing.assert_allclose(weights, kept, atol=1e-6)
        np.testing.assert_allclose(np.asarray(out["labels"]).sum(-1), 1.0, atol=1e-6)


@pytest.mark.parametrize("alpha", [1.0, 0.4, 2.0])
def test_the_kept_share_follows_the_papers_draw(alpha):
    """Over 4,096 images, the share each keeps has the mean and spread of timm's draw (Keras'
    own layer, at `factor=1`, spreads it more: U-shaped weights)."""
    height, width = 24, 20
    layer = CutMix(alpha, seed=0)
    images, labels = _flat_batch(64, height, width)
    data = {"images": images, "labels": labels}
    shares = np.concatenate(
        [np.asarray(layer.get_random_transformation(data)["mix_weight"]) for _ in range(64)]
    )
    expected = _reference_shares(alpha, height, width, 20_000, np.random.default_rng(0))
    assert abs(shares.mean() - expected.mean()) < 0.02
    assert abs(shares.std() - expected.std()) < 0.02


def test_alpha_is_checked_and_saved():
    with pytest.raises(ValueError, match="CutMix: alpha=0"):
        CutMix(0)
    layer = CutMix(2.5, seed=7)
    config = layer.get_config()
    assert config["alpha"] == 2.5 and "factor" not in config
    again = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(again, CutMix) and again.alpha == 2.5


def test_the_pipelines_cutmix_labels_are_the_pixel_shares():
    """`Mixing(cutmix_alpha=...)` in `kr.data` uses this layer, inside tf.data on any backend."""
    images, _ = _flat_batch(16, 32, 32)
    data = (images, np.arange(16))
    mixing = kr.data.Mixing(cutmix_alpha=1.0)
    options = {"batch_size": 16, "shuffle": False, "augment": None}
    ds = kr.data.load_dataset(data, "train", mixing=mixing, **options)
    for x, y in ds.take(2):
        kept, weights = _kept_and_weights(x, y)
        np.testing.assert_allclose(weights, kept, atol=1e-6)
