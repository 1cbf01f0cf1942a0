"""Masked patch prediction: corruption statistics, colour targets, pre-training lowers its loss,
and the pre-trained encoder transfers bit-identically into build_vit and fine-tunes."""

import json

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.layers.masked_patch_layers import PatchColourClasses, PatchCorruption
from keras_resvit.training.history_csv import read_history
from keras_resvit.training.masked_pretraining import masked_patch_model
from keras_resvit.training.train import TrainingDivergedError
from tests.conftest import TINY_VIT, random_images, tiny_vit, train_steps_lower_loss


def test_corruption_follows_the_paper_proportions():
    layer = PatchCorruption(seed=1)
    x = np.random.default_rng(0).normal(size=(128, 64, 8)).astype("float32")
    corrupted, picked = (keras.ops.convert_to_numpy(t) for t in layer(x))
    picked = picked.astype(bool)
    assert (picked.sum(axis=1) == 32).all()  # exactly half of each image's patches
    unchanged = (corrupted == x).all(axis=-1)
    assert unchanged[~picked].all()
    token = keras.ops.convert_to_numpy(layer.mask_token)[0, 0]
    masked = (corrupted == token).all(axis=-1)
    other = picked & ~masked & ~unchanged
    # 4,096 picked patches: 80 / 10 / 10 % within 3 percentage points.
    assert masked[picked].mean() == pytest.approx(0.8, abs=0.03)
    assert unchanged[picked].mean() == pytest.approx(0.1, abs=0.03)
    assert other[picked].mean() == pytest.approx(0.1, abs=0.03)
    for b, i in zip(*np.nonzero(other), strict=True):
        sources = [j for j in range(64) if j != i and np.array_equal(corrupted[b, i], x[b, j])]
        assert sources, "a randomly replaced patch holds another patch's embedding"
    restored = PatchCorruption.from_config(layer.get_config())
    assert (restored.rate, restored.mask_fraction, restored.seed) == (0.5, 0.8, 1)


def test_colour_classes_equal_a_numpy_reference():
    images = random_images(3, 32, 32)
    actual = keras.ops.convert_to_numpy(PatchColourClasses(8)(images))
    means = images.reshape(3, 4, 8, 4, 8, 3).mean(axis=(2, 4)).reshape(3, 16, 3)
    codes = np.clip(np.floor(means / 32), 0, 7).astype(int)
    np.testing.assert_array_equal(actual, codes[..., 0] * 64 + codes[..., 1] * 8 + codes[..., 2])
    assert actual.min() >= 0 and actual.max() < 512


@pytest.mark.parametrize(
    "options",
    [
        {"pooling": "token"},
        {"pooling": "gap"},
        # Registers are left out of the predicted tokens; fc_norm models have no final norm.
        {"pooling": "token", "num_registers": 2},
        {"pooling": "gap", "fc_norm": True},
        {"pooling": "map", "fc_norm": True, "num_registers": 1},
    ],
    ids=["token", "gap", "token_registers", "gap_fc_norm", "map_fc_norm_registers"],
)
def test_pretraining_model_shares_the_vit_layers(options):
    vit = tiny_vit(**options)
    model = masked_patch_model(vit, seed=0)
    assert model.output_shape == (None, 16, 512)
    images = random_images(2, 32, 32)
    assert tuple(model(images).shape) == (2, 16, 512) and np.isfinite(float(sum(model.losses)))
    shared = {id(w) for w in model.weights}
    # Every weight up to the pooling; the head (MAP, fc_norm, classifier) is not pre-trained.
    encoder = [w for w in vit.weights if not w.path.startswith(("predictions", "fc_norm", "map_"))]
    assert all(id(w) in shared for w in encoder)


def test_pretraining_lowers_loss_and_the_encoder_transfers_and_fine_tunes(tmp_path):
    (x, y), _ = kr.data.load_digits()
    vit = tiny_vit(num_classes=10)
    initial = {layer.name: layer.get_weights() for layer in vit.layers if layer.weights}
    pretrained = kr.pretrain_masked_patches(
        vit,
        (x[:512], y[:512]),
        epochs=3,
        batch_size=64,
        learning_rate=1e-3,
        output_dir=tmp_path,
        verbose=0,
    )
    assert pretrained is vit
    losses = [row["loss"] for row in read_history(tmp_path / "history.csv")]
    # Starts near ln(512) = 6.2 (uniform over the colours); measured ~5.5 -> ~3.9.
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.5
    assert (tmp_path / "pretrained.keras").is_file()
    changed = [
        name
        for name, weights in initial.items()
        if not all(
            np.array_equal(a, b)
            for a, b in zip(weights, vit.get_layer(name).get_weights(), strict=True)
        )
    ]
    assert "patch_embedding" in changed and "encoder_block2_attention" in changed
    assert "predictions" not in changed  # the classifier is not part of pre-training

    # Transfer into a freshly built ViT of the same variant, by layer name, new head kept.
    fresh = kr.build_vit(**{**TINY_VIT, "num_classes": 10})
    assert [layer.name for layer in fresh.layers] == [layer.name for layer in vit.layers]
    for layer in fresh.layers:
        if layer.weights and layer.name != "predictions":
            layer.set_weights(vit.get_layer(layer.name).get_weights())
    for layer in vit.layers:
        if layer.weights and layer.name != "predictions":
            for a, b in zip(
                layer.get_weights(), fresh.get_layer(layer.name).get_weights(), strict=True
            ):
                np.testing.assert_array_equal(a, b)

    first, last = train_steps_lower_loss(fresh, x[:64], y[:64], steps=8)
    assert last < first


def test_a_py_dataset_pretrains_the_same_as_tf_data(tmp_path):
    # What load_dataset gives without TensorFlow (kr.data.ImageLoader): the same batches in
    # the same order, so the same losses as the arrays read through tf.data.
    (x, y), _ = kr.data.load_digits()
    losses = {}
    for kind in ("arrays", "py_dataset"):
        keras.utils.set_random_seed(0)
        data = (x[:128], y[:128])
        if kind == "py_dataset":
            data = kr.data.ImageLoader(*data, batch_size=64)
        else:
            data = kr.data.load_dataset(data, batch_size=64, shuffle=False, loader="tf.data")
        vit = tiny_vit(num_classes=10)
        kr.pretrain_masked_patches(vit, data, epochs=2, output_dir=tmp_path / kind, verbose=0)
        losses[kind] = [row["loss"] for row in read_history(tmp_path / kind / "history.csv")]
    np.testing.assert_allclose(losses["py_dataset"], losses["arrays"], rtol=1e-4)
    with pytest.raises(ValueError, match=r"data batch 0 holds images of shape \(64, 3072\)"):
        flat = _Flat(kr.data.ImageLoader(x[:128], y[:128], batch_size=64))
        kr.pretrain_masked_patches(tiny_vit(), flat, verbose=0)


def test_a_py_dataset_moves_to_its_next_epoch_and_keeps_its_options(tmp_path):
    """Each epoch of a loader is its own order and draws: pre-training must end every epoch of
    it, keep its parallel reading and refuse a batch size it would not use."""
    (x, y), _ = kr.data.load_digits()
    loader = kr.data.ImageLoader(x[:32], y[:32], batch_size=16, shuffle=True, workers=2)
    kr.pretrain_masked_patches(tiny_vit(), loader, epochs=2, output_dir=tmp_path, verbose=0)
    assert loader.epoch >= 2  # (Keras also ends an epoch before the first)
    with pytest.raises(ValueError, match="batch_size=8 applies to a kr.data source only"):
        kr.pretrain_masked_patches(tiny_vit(), loader, batch_size=8, verbose=0)


class _Flat(keras.utils.PyDataset):
    """Batches of flattened images: not what a ViT reads."""

    def __init__(self, loader):
        super().__init__()
        self.loader = loader

    def __len__(self):
        return len(self.loader)

    def __getitem__(self, index):
        images, labels = self.loader[index]
        return images.reshape(len(images), -1), labels


def test_bad_arguments_raise_one_clear_error():
    with pytest.raises(ValueError, match="model_or_name='resnet20' is a resnet model"):
        kr.pretrain_masked_patches("resnet20", "digits")
    with pytest.raises(ValueError, match="is not a ViT"):
        kr.pretrain_masked_patches(kr.build_resnet(8, stem="cifar"), "digits")
    with pytest.raises(ValueError, match="vit=None is not a ViT"):
        masked_patch_model(None)
    with pytest.raises(ValueError, match="seed=-3 must be"):
        masked_patch_model(tiny_vit(), seed=-3)
    with pytest.raises(ValueError, match="epochs=0"):
        kr.pretrain_masked_patches(tiny_vit(), "digits", epochs=0)
    with pytest.raises(ValueError, match="learning_rate=-1"):
        kr.pretrain_masked_patches(tiny_vit(), "digits", learning_rate=-1)
    with pytest.raises(ValueError, match="seed=-1"):
        kr.pretrain_masked_patches(tiny_vit(), "digits", seed=-1)
    images = random_images(8, 32, 32)
    dataset = kr.data.load_dataset((images, np.zeros(8, "int32")), batch_size=4)
    with pytest.raises(ValueError, match="batch_size=3 applies to a kr.data source only"):
        kr.pretrain_masked_patches(tiny_vit(), dataset, batch_size=3)


@pytest.mark.parametrize("kind", ["tf_data", "py_dataset"])
def test_bad_images_are_named_and_a_diverged_run_writes_no_model(tmp_path, kind):
    import tensorflow as tf

    def data(images):
        if kind == "py_dataset":
            return kr.data.ImageLoader(images, np.zeros(len(images), "int32"), batch_size=4)
        return tf.data.Dataset.from_tensor_slices(images).batch(4)

    small = random_images(8, 16, 16)
    with pytest.raises(ValueError, match=r"holds images of shape \(16, 16, 3\); the ViT takes"):
        kr.pretrain_masked_patches(tiny_vit(), data(small), verbose=0)
    nan = random_images(8, 32, 32)
    nan[6, 3, 3, 0] = np.nan  # in the second batch: read while training
    with pytest.raises(ValueError, match="NaN or infinite pixels"):
        kr.pretrain_masked_patches(tiny_vit(), data(nan), verbose=0)
    with pytest.raises(TrainingDivergedError, match="loss became NaN/inf at step"):
        kr.pretrain_masked_patches(
            tiny_vit(), data(random_images(8, 32, 32)), learning_rate=1e30,
            output_dir=tmp_path, verbose=0,
        )  # fmt: skip
    assert not (tmp_path / "pretrained.keras").exists()


def test_a_failed_run_in_an_earlier_pretrainings_folder_leaves_none_of_its_files(tmp_path):
    # The folder held the earlier run's model beside the failed run's config.json and
    # history.csv: one run described, another's weights.
    images = random_images(8, 32, 32)
    data = kr.data.load_dataset((images, np.zeros(8, "int32")), batch_size=4, shuffle=False)
    kr.pretrain_masked_patches(tiny_vit(), data, output_dir=tmp_path, verbose=0)
    assert (tmp_path / "pretrained.keras").is_file()
    with pytest.raises(TrainingDivergedError):
        kr.pretrain_masked_patches(
            tiny_vit(), data, learning_rate=1e30, output_dir=tmp_path, overwrite=True, verbose=0
        )
    assert not (tmp_path / "pretrained.keras").exists()
    assert json.loads((tmp_path / "config.json").read_text())["result"] is None


def test_data_that_is_not_image_batches_once_is_named():
    import tensorflow as tf

    images = random_images(8, 32, 32)
    for data, what in [
        (tf.data.Dataset.from_tensor_slices({"a": images}).batch(4), "data holds dict elements"),
        (tf.data.Dataset.from_tensor_slices(({"a": images}, np.zeros(8))).batch(4), "dict"),
        (tf.data.Dataset.from_tensor_slices(images).batch(4).repeat(), "data repeats forever"),
    ]:
        with pytest.raises(ValueError, match=what):
            kr.pretrain_masked_patches(tiny_vit(), data, verbose=0)
    loader = _Dict(kr.data.ImageLoader(images, np.zeros(8, "int32"), batch_size=4))
    with pytest.raises(ValueError, match=r"data batch 0 holds a dict \(keys \['images'\]\)"):
        kr.pretrain_masked_patches(tiny_vit(), loader, verbose=0)


class _Dict(_Flat):
    """Batches of ({"images": images}, labels)."""

    def __getitem__(self, index):
        images, labels = self.loader[index]
        return {"images": images}, labels
