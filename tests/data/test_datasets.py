"""The embedded digits source and array sources as tf.data pipelines."""

import numpy as np
import pytest

import keras_resvit as kr


def test_digits_are_real_rgb_images_in_pixel_range():
    (x_train, y_train), (x_test, y_test) = kr.data.load_digits(image_size=32)
    assert len(x_train) + len(x_test) == 1797
    assert x_train.shape[1:] == (32, 32, 3) and x_train.dtype == np.float32
    assert x_train.min() >= 0.0 and x_train.max() <= 255.0 and x_train.max() > 200.0
    np.testing.assert_array_equal(x_train[..., 0], x_train[..., 2])
    # Stratified split: every class on both sides, in about the same proportion.
    assert set(y_train) == set(y_test) == set(range(10))
    assert abs(len(x_test) / 1797 - 0.2) < 0.01


def test_load_dataset_batches_and_shuffles_train_only():
    train = kr.data.load_dataset("digits", "train", batch_size=16)
    test = kr.data.load_dataset("digits", "test", batch_size=16)
    images, labels = next(iter(train))
    assert tuple(images.shape) == (16, 32, 32, 3) and tuple(labels.shape) == (16,)
    first = [np.asarray(y) for _, y in test.take(3)]
    again = [np.asarray(y) for _, y in test.take(3)]
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(again))
    epoch1 = np.concatenate([np.asarray(y) for _, y in train])
    epoch2 = np.concatenate([np.asarray(y) for _, y in train])
    assert sorted(epoch1) == sorted(epoch2) and not np.array_equal(epoch1, epoch2)


def test_arrays_source():
    x = np.zeros((10, 8, 8, 3), "uint8")
    y = np.arange(10)
    ds = kr.data.load_dataset((x, y), "test", batch_size=4)
    assert [int(b[0].shape[0]) for b in ds] == [4, 4, 2]


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"source": "mnist"}, ["source='mnist'", "digits"]),
        ({"split": "validation"}, ["split='validation'", "'train'"]),
        ({"batch_size": 0}, ["batch_size=0", "positive"]),
        ({"source": (np.zeros((3, 8, 8)), np.zeros(3))}, ["(3, 8, 8)", "(N, height"]),
    ],
)
def test_bad_dataset_arguments(kwargs, words):
    with pytest.raises(ValueError) as info:
        kr.data.load_dataset(**kwargs)
    for word in words:
        assert word in str(info.value)
