"""`kr.train` on a `keras.utils.PyDataset` (`kr.data.ImageLoader`, the input pipeline of a
machine without TensorFlow): learns, validates, checks every batch, resumes inside an epoch on
the batches an uninterrupted run reads."""

import json

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.data.checks import CheckedBatches
from keras_resvit.training.history_csv import read_history
from tests.conftest import random_images
from tests.training.test_train import Interrupt


@pytest.fixture(scope="module")
def digits():
    (x, y), (xt, yt) = kr.data.load_digits()
    return (x[:96], y[:96]), (xt[:32], yt[:32])


def _loader(arrays, **options):
    return kr.data.ImageLoader(*arrays, **{"batch_size": 16, **options})


def _small(seed=0):
    keras.utils.set_random_seed(seed)  # the same initial weights every call
    return kr.build_resnet(8, stem="cifar", width=0.5)


def _weights(model):
    return np.concatenate([np.ravel(w) for w in model.get_weights()])


def test_train_on_an_image_loader_learns_validates_and_writes(digits, tmp_path):
    train = _loader(digits[0], shuffle=True)
    val = _loader(digits[1])
    history = kr.train(
        _small(),
        train,
        val_data=val,
        epochs=3,
        optimizer=keras.optimizers.Adam(2e-3),
        output_dir=tmp_path,
        verbose=0,
    )
    losses = history.history["loss"]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert "val_accuracy" in history.history and (tmp_path / "best.keras").is_file()
    assert (history.summary["epochs"], history.summary["steps"]) == (3, 18)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["steps_per_epoch"] == 6 and config["batch_size"] == 16
    # Each epoch read its own permutation: epochs 0, 1, 2 (not Keras' extra reset).
    assert train.epoch == 3
    reloaded = keras.saving.load_model(tmp_path / "last.keras")
    x = digits[1][0][:4]
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), history.model.predict(x, verbose=0), atol=1e-5
    )


@pytest.mark.parametrize("ema", [None, 0.8])
def test_a_run_killed_inside_an_epoch_resumes_on_the_same_batches(digits, tmp_path, ema):
    # 6 steps per epoch, 18 in all, saved every 4 steps: killed at step 9, it resumes from the
    # save at step 8, inside the second epoch, and ends where the uninterrupted run ends (with
    # a moving average of the weights too, which the first of its two `fit` calls keeps), on
    # the same crops and flips.
    run = {"epochs": 3, "save_every": 4, "verbose": 0, "seed": 3, "ema": ema}
    reference = kr.train(
        _small(),
        _loader(digits[0], shuffle=True, augment="resnet_cifar"),
        output_dir=tmp_path / "a",
        **run,
    )
    with pytest.raises(KeyboardInterrupt):
        kr.train(
            _small(),
            _loader(digits[0], shuffle=True, augment="resnet_cifar"),
            output_dir=tmp_path / "b",
            callbacks=[Interrupt(9)],
            **run,
        )
    assert json.loads((tmp_path / "b" / "resume" / "state.json").read_text())["step"] == 8
    resumed = kr.train(
        _small(),
        _loader(digits[0], shuffle=True, augment="resnet_cifar"),
        output_dir=tmp_path / "b",
        **run,
    )
    assert resumed.summary["resumed_from_step"] == 8
    assert [int(r["epoch"]) for r in read_history(tmp_path / "b" / "history.csv")] == [1, 2, 3]
    atol = 1e-5 if keras.backend.backend() == "jax" else 1e-4
    np.testing.assert_allclose(_weights(resumed.model), _weights(reference.model), atol=atol)


@pytest.mark.parametrize(
    "labels, bad, words",
    [
        ([0, 1, 2, 1] * 6 + [0, 1, 7, 2] + [0] * 4, "train", ["batch 4 has label 7", "3 classes"]),
        ([0, 1, 2, 1] * 4 + [9] + [0] * 15, "val", ["val_data: batch 3 has label 9"]),
        ([0, 1, 2, 1] * 8, "nan", ["batch 2 has NaN or infinite pixels (image 3"]),
    ],
    ids=["train_label", "val_label", "nan_pixels"],
)
def test_every_batch_of_a_py_dataset_is_checked(tmp_path, labels, bad, words):
    images = random_images(32, 16, 16)
    good = kr.data.ImageLoader(images.copy(), np.arange(32) % 3, batch_size=8)
    if bad == "nan":
        images[10, 4, 4, 0] = np.nan
    # A user's PyDataset: ImageLoader refuses NaN pixels, and labels beyond its class_names,
    # when it is made; here a bad label or pixel shows only in its batch.
    wrong = Batches([(images[i : i + 8], np.array(labels[i : i + 8])) for i in range(0, 32, 8)])
    train, val = (good, wrong) if bad == "val" else (wrong, None)
    model = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=3, width=0.25)
    with pytest.raises(ValueError) as info:
        kr.train(model, train, val_data=val, epochs=1, output_dir=tmp_path, verbose=0)
    for word in words:
        assert word in str(info.value), str(info.value)
    assert not (tmp_path / "last.keras").exists()


class Batches(keras.utils.PyDataset):
    """A user's PyDataset: fixed batches, counting the epochs it was told of."""

    def __init__(self, batches):
        super().__init__()
        self.batches, self.ends = batches, 0

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return self.batches[index]

    def on_epoch_end(self):
        self.ends += 1


def test_a_users_py_dataset_trains_and_bad_ones_are_named(digits, tmp_path):
    x, y = digits[0]
    data = Batches([(x[i : i + 32], y[i : i + 32]) for i in range(0, 96, 32)])
    history = kr.train(_small(), data, epochs=2, output_dir=tmp_path / "a", verbose=0)
    assert history.summary["steps"] == 6 and data.ends == 2
    with pytest.raises(ValueError, match=r"train_data yields images of shape \(32, 32, 3\)"):
        kr.train(_small(), Batches([(x[0], y[:1])]), epochs=1, output_dir=tmp_path / "b")
    with pytest.raises(ValueError, match=r"labels of dtype int32 and shape \(32, 1\)"):
        kr.train(_small(), Batches([(x[:32], y[:32, None])]), epochs=1, output_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="has 0 batches per epoch"):
        kr.train(_small(), Batches([]), epochs=1, output_dir=tmp_path / "d")
    assert not any((tmp_path / name).exists() for name in "bcd")


def test_checked_batches_one_hot_and_resume_offset():
    x = random_images(12, 4, 4)
    loader = kr.data.ImageLoader(x, np.arange(12) % 3, batch_size=4, shuffle=True)
    batches = CheckedBatches(loader, 3, "data", one_hot=True, epoch=2, start=1)
    assert len(batches) == 2 and loader.epoch == 2
    images, labels = batches[0]
    want = loader[1]
    np.testing.assert_array_equal(images, want[0])
    np.testing.assert_array_equal(labels, np.eye(3)[want[1]])
    batches.on_epoch_end()  # as `fit` starts: no epoch read yet
    assert (loader.epoch, len(batches)) == (2, 2)
    batches.on_epoch_begin()
    batches.on_epoch_end()
    assert (loader.epoch, len(batches)) == (3, 3)


@pytest.mark.parametrize("kind", ["arrays", "tf_data"])
def test_a_py_dataset_validates_on_arrays_or_a_tf_data_dataset(digits, tmp_path, kind):
    import tensorflow as tf

    (x, y), (xt, yt) = digits
    val = (xt, yt) if kind == "arrays" else tf.data.Dataset.from_tensor_slices((xt, yt)).batch(8)
    history = kr.train(_small(), _loader((x, y)), val_data=val, epochs=1, output_dir=tmp_path)
    assert 0 <= history.history["val_accuracy"][-1] <= 1
    bad = tf.data.Dataset.from_tensor_slices((xt, yt + 10)).batch(8)
    with pytest.raises(ValueError, match="val_data"):
        kr.train(_small(), _loader((x, y)), val_data=bad, epochs=1, output_dir=tmp_path / "b")


@pytest.mark.parametrize(
    "bad, words",
    [
        ("size", "train_data: batch 3 holds images of shape (8, 8, 3), but the model takes"),
        ("empty", "train_data: batch 5 holds images of shape (0, 16, 16, 3)"),
    ],
)
def test_a_later_py_dataset_batch_of_another_size_or_empty_is_named(tmp_path, bad, words):
    images, labels = random_images(32, 16, 16), np.arange(32) % 3
    batches = [(images[i : i + 8], labels[i : i + 8]) for i in range(0, 32, 8)]
    if bad == "size":  # a model with a fixed input size would train on it with a warning
        batches[2] = (random_images(8, 8, 8), labels[:8])
    else:  # a len() that counts one batch too many
        batches.append((images[:0], labels[:0]))
    model = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=3, width=0.25)
    with pytest.raises(ValueError) as info:
        kr.train(model, Batches(batches), epochs=1, output_dir=tmp_path, verbose=0)
    assert words in str(info.value), str(info.value)
