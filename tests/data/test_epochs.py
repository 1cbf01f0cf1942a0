"""A training split of arrays, an image folder or a tfds dataset read into memory makes its
run's batches from any step at once (`epochs.Epochs`): the batches an uninterrupted run makes
there, with the same order, crops, flips and mixes, and without reading anything before the
step."""

import numpy as np
import pytest
import tensorflow as tf

import keras_resvit as kr
from keras_resvit.data import folders
from tests.conftest import random_images
from tests.data.test_datasets import _write_folder

IMAGES, LABELS = random_images(40, 16, 16), np.arange(40) % 4


def _batches(ds, count):
    return [(np.asarray(x), np.asarray(y)) for x, y in ds.take(count)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for (x1, y1), (x2, y2) in zip(a, b, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


@pytest.mark.parametrize(
    "options",
    [
        dict(augment="resnet_cifar"),
        dict(augment="deit", repeated_augmentation=3),  # MixUp/CutMix drawn per batch
        dict(augment=None, drop_remainder=True),
    ],
    ids=["crop_flip", "mixed_repeated", "plain"],
)
def test_a_run_from_any_step_makes_the_uninterrupted_runs_batches(options):
    ds = kr.data.load_dataset((IMAGES, LABELS), "train", batch_size=16, seed=5, **options)
    per_epoch = int(ds.cardinality())
    assert per_epoch == (2 if options.get("drop_remainder") else 3)
    run = _batches(ds.from_step(0), 4 * per_epoch)
    for step in (1, per_epoch, per_epoch + 1, 3 * per_epoch - 1):
        _assert_same(run[step : step + per_epoch], _batches(ds.from_step(step), per_epoch))
    # A step far into a run is made at once, consistent with its neighbour.
    far = 10**7 * per_epoch + 1
    _assert_same(_batches(ds.from_step(far - 1), 2)[1:], _batches(ds.from_step(far), 1))


def test_each_epoch_reads_every_example_once_in_an_order_of_its_own():
    ds = kr.data.load_dataset((IMAGES, np.arange(40)), "train", batch_size=8, seed=1)
    run = _batches(ds.from_step(0), 15)
    orders = [np.concatenate([y for _, y in run[e * 5 : e * 5 + 5]]) for e in range(3)]
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(40))
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[1], orders[2])
    # Passes over the dataset itself draw orders of their own too, a new one each pass.
    passes = [np.concatenate([np.asarray(y) for _, y in ds]) for _ in range(2)]
    assert not np.array_equal(passes[0], passes[1])
    np.testing.assert_array_equal(np.sort(passes[0]), np.arange(40))


def test_a_run_from_a_step_reads_no_file_before_it(tmp_path):
    """The folder's first listed file breaks after listing; strict reading raises on it, so a
    run that started at step 1 and went on through the epoch never read it (`Dataset.skip`
    would have decoded it)."""
    root = _write_folder(tmp_path / "pets", per_class=4)
    ds = kr.data.load_dataset(
        root, image_size=8, batch_size=4, shuffle=False, strict=True, augment="resnet_cifar"
    )
    first = sorted((root / "cat").iterdir())[0]
    first.write_bytes(b"broken after listing")
    assert len(_batches(ds.from_step(1), 2)) == 2  # batches 1 and 2 of epoch 0
    with pytest.raises(tf.errors.InvalidArgumentError):
        _batches(ds.from_step(0), 1)
    with pytest.raises(tf.errors.InvalidArgumentError):
        _batches(ds.repeat().skip(1), 1)


def test_a_small_tfds_split_is_read_into_memory_and_made_from_any_step():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=24):
        options = dict(batch_size=8, seed=3, augment="resnet_cifar")
        ds = kr.data.load_dataset("tfds:cifar10", "train", **options)
        assert int(ds.cardinality()) == 3
        run = _batches(ds.from_step(0), 9)
        for step in (1, 3, 7):
            _assert_same(run[step : step + 2], _batches(ds.from_step(step), 2))
        # Every example once per epoch: the split's labels, in orders of the epochs' own.
        plain = kr.data.load_dataset("tfds:cifar10", "train", batch_size=8, shuffle=False)
        labels = np.sort(np.concatenate([y for _, y in _batches(plain, 3)]))
        orders = [np.concatenate([y for _, y in run[e * 3 : e * 3 + 3]]) for e in range(3)]
        for order in orders:
            np.testing.assert_array_equal(np.sort(order), labels)
        # cache=False streams the split as tensorflow-datasets reads it: a resume skips.
        streamed = kr.data.load_dataset("tfds:cifar10", "train", cache=False, **options)
        assert not hasattr(streamed, "from_step")
        assert int(streamed.cardinality()) == 3


def test_a_folder_of_one_size_is_decoded_into_memory_once(tmp_path, monkeypatch):
    root, rng = tmp_path / "folder", np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            (root / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    decoded = []

    def counting_decode(path):
        record = lambda p: decoded.append(p.numpy().decode()) or p  # noqa: E731
        path = tf.py_function(record, [path], tf.string)
        return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)

    monkeypatch.setattr(folders, "decode_image", counting_decode)
    options = dict(image_size=12, batch_size=4, seed=2, augment="resnet_cifar")
    ds = kr.data.load_dataset(str(root), "train", **options)
    assert sorted(decoded) == sorted(str(p) for p in root.rglob("*.png"))
    run = _batches(ds.from_step(0), 9)  # three epochs: nothing is decoded again
    assert len(decoded) == 12
    # The same batches as decoding the files every epoch (cache=False), from any step.
    streamed = kr.data.load_dataset(str(root), "train", cache=False, **options)
    for step in (0, 4):
        _assert_same(run[step : step + 3], _batches(streamed.from_step(step), 3))
    assert len(decoded) > 12
