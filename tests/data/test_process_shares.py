"""Each process of a multi-process run reads its own share of the examples (`load_dataset`'s
`process_index` / `process_count`), with tf.data before anything is decoded.

The two-process training runs that use these shares are in tests/training/test_processes.py.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

import keras_resvit as kr
from keras_resvit.data import folders

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (37, 8, 8, 3)).astype("uint8")
LABELS = np.arange(37) % 3


def _share(index, count, **kwargs):
    options = {"process_index": index, "process_count": count}
    kwargs = {"batch_size": 6, "shuffle": False, **kwargs}
    return kr.data.load_dataset((IMAGES, LABELS), "train", loader_options=options, **kwargs)


def _rows(batches):
    return np.concatenate([np.asarray(images) for images, _ in batches])


@pytest.mark.parametrize("loader", ["tf.data", "py_dataset"])
def test_shares_are_disjoint_equal_and_keep_the_global_batch(loader):
    shares = [_share(i, 3, loader=loader) for i in range(3)]
    rows = [_rows(share) for share in shares]
    # 37 examples over 3 processes: 12 each (the last one is read by none), 2 per batch of 6.
    assert [len(r) for r in rows] == [12, 12, 12]
    assert all(len(images) == 2 for share in shares for images, _ in share)
    assert [(share.process_index, share.process_count) for share in shares] == [
        (0, 3),
        (1, 3),
        (2, 3),
    ]
    read = np.concatenate(rows).reshape(3, 12, -1).transpose(1, 0, 2).reshape(36, 8, 8, 3)
    if loader == "tf.data":  # unshuffled: the global batches are the one-process batches
        np.testing.assert_array_equal(read, IMAGES[:36])


@pytest.mark.parametrize("source", ["arrays", "folder"])
def test_shares_shuffle_in_orders_of_their_own(tmp_path, source):
    # Shares deal out every other example: with one order for both, example 2k and its
    # neighbour 2k+1 (of the same class in a folder) would meet in every global batch.
    if source == "arrays":
        images = np.arange(40, dtype="uint8")[:, None, None, None] * np.ones((8, 8, 3), "uint8")
        read = dict(source=(images, np.zeros(40, "int64")))
    else:  # 2 classes of 20 files; pixel value 10 * k + class
        read = dict(source=str(_folder(tmp_path / "folder", per_class=20)), image_size=8)
    first, second = (
        _rows(
            kr.data.load_dataset(
                **read,
                split="train",
                batch_size=4,
                loader_options={"process_index": i, "process_count": 2},
            )
        )[:, 0, 0, 0].astype(int)
        for i in range(2)
    )
    assert len(set(first) | set(second)) == 40  # disjoint shares
    # With one order: always neighbours (arrays), always of one class (folder; else half).
    together = second - first == 1 if source == "arrays" else second % 10 == first % 10
    assert np.mean(together) < 0.8, (first, second)


def test_statistics_read_every_example_once_in_every_process():
    for index in range(2):
        share = _share(index, 2, augment="resnet_cifar", repeated_augmentation=3, shuffle=True)
        whole = _rows(share.unaugmented)
        assert len(whole) == 37
        np.testing.assert_array_equal(np.sort(whole.ravel()), np.sort(IMAGES.ravel()))


def test_repeated_augmentation_statistics_see_every_example_once():
    # One process: the repeated epoch reads a third of the examples three times; the mean
    # image (PixelMean) must still average them all, once each.
    ds = kr.data.load_dataset(
        (IMAGES, LABELS), "train", batch_size=6, augment="resnet_cifar", repeated_augmentation=3
    )
    whole = _rows(ds.unaugmented)
    np.testing.assert_array_equal(np.sort(whole.ravel()), np.sort(IMAGES.ravel()))


def test_processes_draw_different_augmentations():
    same = np.repeat(IMAGES[:1], 12, axis=0)
    views = [
        _rows(
            kr.data.load_dataset(
                (same, np.zeros(12, "int64")),
                "train",
                batch_size=12,
                augment="resnet_cifar",
                loader_options={"process_index": i, "process_count": 2},
            )
        )
        for i in range(2)
    ]
    assert views[0].shape == views[1].shape == (6, 8, 8, 3)
    assert not np.array_equal(views[0], views[1])


def _folder(root, per_class=5):
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True)
        for k in range(per_class):
            pixels = np.full((8, 8, 3), 10 * k + c, "uint8")
            Image.fromarray(pixels).save(root / f"c{c}" / f"{k}.png")
    return root


@pytest.mark.parametrize("cache", [True, False])
def test_a_folder_share_decodes_only_its_files(tmp_path, monkeypatch, cache):
    root = _folder(tmp_path / "folder")
    decoded = []

    def counting_decode(path):
        record = lambda p: decoded.append(p.numpy().decode()) or p  # noqa: E731
        return folders.tf.io.decode_image(
            tf.io.read_file(tf.py_function(record, [path], tf.string)),
            channels=3,
            expand_animations=False,
        )

    monkeypatch.setattr(folders, "decode_image", counting_decode)
    seen = []
    for index in range(3):
        decoded.clear()
        ds = kr.data.load_dataset(
            str(root),
            "train",
            image_size=8,
            batch_size=3,
            cache=cache,
            loader_options={"process_index": index, "process_count": 3},
        )
        values = sorted(int(v) for images, _ in ds for v in np.asarray(images)[:, 0, 0, 0])
        # 10 files over 3 processes: 3 each, and only those 3 are decoded.
        assert len(values) == 3 and len(set(decoded)) == 3
        seen += values
    assert len(set(seen)) == 9


class KerasResvitTinyShares(tfds.core.GeneratorBasedBuilder):
    """A prepared tensorflow-datasets dataset of 20 distinct 8x8 images (no download)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(8, 8, 3)),
                "label": tfds.features.ClassLabel(names=["a", "b"]),
            }
        )
        return self.dataset_info_from_configs(features=features, supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for k in range(20):
            yield k, {"image": np.full((8, 8, 3), k, "uint8"), "label": k % 2}


# Read into memory (rows dealt out as arrays' are), or streamed from its files (cache=False:
# tensorflow-datasets' even sub-splits).
@pytest.mark.parametrize("cache", [None, False], ids=["in_memory", "streamed"])
def test_tfds_shares_are_even_and_disjoint(cache, tmp_path):
    KerasResvitTinyShares(data_dir=str(tmp_path)).download_and_prepare()
    shares = [
        kr.data.load_dataset(
            "tfds:keras_resvit_tiny_shares",
            "train",
            data_dir=str(tmp_path),
            batch_size=6,
            cache=cache,
            loader_options={"process_index": i, "process_count": 3},
        )
        for i in range(3)
    ]
    values = [sorted(_rows(share)[:, 0, 0, 0].astype(int)) for share in shares]
    # 20 examples over 3 processes: 6 each, disjoint; statistics read all 20.
    assert [len(v) for v in values] == [6, 6, 6]
    assert len(set(sum(values, []))) == 18
    assert sorted(_rows(shares[1].unaugmented)[:, 0, 0, 0].astype(int)) == list(range(20))
    assert shares[0].provenance == shares[2].provenance


@pytest.mark.parametrize(
    "options, words",
    [
        ({"process_index": 2, "process_count": 2}, ["process_index=2", "below"]),
        ({"process_index": 0, "process_count": 4}, ["batch_size=6", "process_count=4"]),
        ({"process_count": 0}, ["process_count=0"]),
        ({"workers": 2}, ["tf.data takes only", "py_dataset"]),
    ],
)
def test_bad_shares_are_named(options, words):
    with pytest.raises(ValueError) as error:
        kr.data.load_dataset((IMAGES, LABELS), batch_size=6, loader_options=options)
    assert all(word in str(error.value) for word in words), str(error.value)


def test_a_share_does_not_train_a_run_of_another_process_count(tmp_path):
    model = kr.build_resnet(8, stem="cifar", input_shape=(8, 8, 3), num_classes=3)
    with pytest.raises(ValueError) as error:
        kr.train(model, _share(1, 2), epochs=1, output_dir=str(tmp_path / "run"), verbose=0)
    message = str(error.value)
    assert "train_data" in message and "process_count=2" in message, message
    assert not (tmp_path / "run" / "last.keras").exists()


def test_tensorflow_workers_take_tf_data_shares_but_not_a_loader_share():
    from types import SimpleNamespace

    from keras_resvit.training.distribution import Placement, local_input

    workers = Placement("multi_worker", "cpu", num_replicas=2, processes=2)
    loader = kr.data.load_dataset(
        (IMAGES, LABELS), "train", batch_size=6, loader="py_dataset",
        loader_options={"process_index": 0, "process_count": 2},
    )  # fmt: skip
    data = SimpleNamespace(train=loader, val=None, batch_size=6)
    with pytest.raises(ValueError, match="cannot feed TensorFlow's MultiWorkerMirroredStrategy"):
        local_input(data, workers)
    data.train = _share(0, 2)
    local = local_input(data, workers)
    assert callable(local.feed_train) and local.feed_val is None
    data.train = kr.data.load_dataset((IMAGES, LABELS), "train", batch_size=6)
    assert local_input(data, workers).feed_train is None  # global batches: fit splits them


def test_evaluations_outside_a_distributed_fit_read_every_example(backend, monkeypatch):
    """`load_dataset` defaults to this process's share of a multi-process run (JAX's
    processes, TensorFlow's workers);
    what evaluates outside `fit` (features for few-shot probes, the CLI's scores, export
    checks, masked-patch pre-training) reads every example in every process instead."""
    from keras_resvit.data import datasets
    from keras_resvit.evaluation.few_shot_probe import extract_features

    monkeypatch.setattr(datasets, "process_count", lambda: 2)
    monkeypatch.setattr(datasets, "process_index", lambda: 1)
    share = kr.data.load_dataset((IMAGES, LABELS), "train", batch_size=6, shuffle=False)
    assert (share.process_index, share.process_count) == (1, 2) and len(_rows(share)) == 18
    model = kr.build_resnet(8, stem="cifar", input_shape=(8, 8, 3), num_classes=3)
    features, labels = extract_features(model, (IMAGES, LABELS), batch_size=6)
    assert len(features) == len(labels) == 37
