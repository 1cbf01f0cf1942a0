"""Repeated augmentation (Hoffer et al. 2020, Berman et al. 2019; timm's `RepeatAugSampler`):
each epoch reads ceil(N / r) examples r times in a row, augmented independently, N in all."""

import argparse

import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.data.loaders import ImageLoader

N, REPEATS = 12, 3


def _arrays():
    """Image i is filled with 10 * i: its pixels say which example it is."""
    images = np.stack([np.full((8, 8, 3), 10.0 * i, "float32") for i in range(N)])
    return images, np.arange(N) % 3


def _ids(images):
    return [int(round(float(image.mean()) / 10)) for image in images]


def _check_epoch(ids):
    assert len(ids) == N
    groups = [ids[i : i + REPEATS] for i in range(0, N, REPEATS)]
    assert all(len(set(group)) == 1 for group in groups), ids  # copies follow each other
    assert len({group[0] for group in groups}) == N // REPEATS  # distinct examples


@pytest.mark.parametrize("loader", ["tf.data", "py_dataset"])
def test_each_epoch_reads_a_third_of_the_examples_three_times(loader):
    if loader == "tf.data":
        pytest.importorskip("tensorflow")
    data = kr.data.load_dataset(
        _arrays(), "train", batch_size=4, repeated_augmentation=REPEATS, loader=loader
    )
    plain = kr.data.load_dataset(_arrays(), "train", batch_size=4, loader=loader)
    epochs = []
    for _ in range(2):
        if loader == "tf.data":
            ids = [i for images, _ in data.as_numpy_iterator() for i in _ids(images)]
        else:
            ids = [i for index in range(len(data)) for i in _ids(data[index][0])]
            data.on_epoch_end()
        _check_epoch(ids)
        epochs.append(ids)
    assert epochs[0] != epochs[1]  # reshuffled: other examples or another order
    if loader == "py_dataset":
        assert len(data) == len(plain)  # the epoch keeps its length
    assert "repeated_augmentation=3" in data.provenance
    assert "repeated_augmentation" not in plain.provenance


def test_copies_are_augmented_independently():
    pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (N, 32, 32, 3)).astype("float32")
    data = kr.data.load_dataset(
        (images, np.arange(N) % 3), "train", batch_size=N, augment="resnet_cifar",
        repeated_augmentation=REPEATS, mixing=False,
    )  # fmt: skip
    batch = next(iter(data))[0].numpy()
    for start in range(0, N, REPEATS):
        copies = batch[start : start + REPEATS]
        assert not np.allclose(copies[0], copies[1]) or not np.allclose(copies[1], copies[2])


def test_processes_share_out_the_copies_as_timm_does():
    images, labels = _arrays()
    shards = [
        ImageLoader(
            images,
            labels,
            batch_size=4,
            shuffle=True,
            repeated_augmentation=2,
            process_index=index,
            process_count=2,
        ).positions()  # fmt: skip
        for index in (0, 1)
    ]
    # Each process reads one copy of each of the first N / 2 examples.
    np.testing.assert_array_equal(shards[0], shards[1])
    assert len(set(shards[0])) == N // 2


def test_evaluation_splits_read_each_image_once():
    pytest.importorskip("tensorflow")
    data = kr.data.load_dataset(_arrays(), "test", batch_size=N, repeated_augmentation=REPEATS)
    assert sorted(_ids(next(iter(data))[0].numpy())) == list(range(N))


def test_the_cli_passes_the_recipes_repeats():
    pytest.importorskip("tensorflow")
    from keras_resvit.cli_train import _load_training_data
    from keras_resvit.training.recipes import get_recipe

    args = argparse.Namespace(
        image_size=32, model="resnet8", recipe="rsb_a1", data="digits", batch_size=16
    )
    splits = ({"source": "digits", "split": "train"}, {"source": "digits", "split": "test"}, None)
    train, val, _, _ = _load_training_data(kr, args, splits, get_recipe("rsb_a1"), None)
    assert "repeated_augmentation=3" in train.provenance
    assert "repeated_augmentation" not in val.provenance


@pytest.mark.parametrize("value", [0, 1.5, "3"])
def test_bad_values_get_one_clear_error(value):
    with pytest.raises(ValueError, match=rf"repeated_augmentation={value!r}"):
        kr.data.load_dataset(_arrays(), "train", repeated_augmentation=value)


def test_without_shuffling_it_is_refused():
    # Every epoch would read the same first third of the examples.
    words = r"repeated_augmentation=3 with shuffle=False reads the same first 1/3"
    with pytest.raises(ValueError, match=words):
        kr.data.load_dataset(_arrays(), "train", repeated_augmentation=3, shuffle=False)
    with pytest.raises(ValueError, match=words):
        ImageLoader(*_arrays(), repeated_augmentation=3)
