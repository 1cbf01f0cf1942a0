"""Every source as a tf.data pipeline: digits, arrays, tensorflow-datasets, image folders."""

import functools
import http.server
import io
import os
import re
import socket
import threading
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import keras_resvit as kr
from keras_resvit.data.checks import data_errors


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
    # Labels of shape (N, 1), as keras.datasets.cifar10 gives them, are N labels.
    column = kr.data.load_dataset((x, y[:, None].astype("uint8")), "test", batch_size=10)
    np.testing.assert_array_equal(next(iter(column))[1], y)


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


# --- sources: tensorflow-datasets (mocked, no network), image folders, arrays ---------------


def _tiny_model(num_classes, loss):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=loss)
    return model


def _trains(ds, soft=False):
    loss = "categorical_crossentropy" if soft else "sparse_categorical_crossentropy"
    history = _tiny_model(ds.num_classes, loss).fit(ds.take(3), epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


def _write_folder(root, classes=("cat", "dog", "eel"), per_class=4, seed=0):
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (20 + 3 * i, 16 + 2 * c, 3), dtype=np.uint8)
            encode, ext = (tf.io.encode_png, "png") if i % 2 else (tf.io.encode_jpeg, "jpg")
            (root / name / f"{i}.{ext}").write_bytes(encode(pixels).numpy())
    return root


def test_tfds_source_with_mock_data():
    with tfds.testing.mock_data(num_examples=20):
        train = kr.data.load_dataset("tfds:cifar10", "train", batch_size=8, augment="resnet_cifar")
        test = kr.data.load_dataset("tfds:cifar10", "test", batch_size=8, drop_remainder=True)
        photos = kr.data.load_dataset("tfds:oxford_flowers102", "test", image_size=24, batch_size=5)
        assert train.num_classes == 10 and len(train.class_names) == 10
        images, labels = next(iter(train))
        assert images.shape == (8, 32, 32, 3) and images.dtype == tf.float32
        assert labels.dtype == tf.int32 and int(tf.reduce_min(labels)) >= 0
        assert [int(x.shape[0]) for x, _ in test] == [8, 8]
        assert photos.num_classes == 102
        assert all(x.shape[1:] == (24, 24, 3) for x, _ in photos)
        assert sum(int(x.shape[0]) for x, _ in photos) == 20
        _trains(train)


class KerasResvitTinyDownload(tfds.core.GeneratorBasedBuilder):
    """A tensorflow-datasets builder whose data is downloaded from `URL` (set by the test)."""

    VERSION = tfds.core.Version("1.0.0")
    URL = None

    def _info(self):
        features = tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(8, 8, 3)),
                "label": tfds.features.ClassLabel(names=["a", "b"]),
            }
        )
        return tfds.core.DatasetInfo(
            builder=self, features=features, supervised_keys=("image", "label")
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(dl_manager.download(self.URL))}

    def _generate_examples(self, path):
        with tf.io.gfile.GFile(os.fspath(path), "rb") as f:
            arrays = np.load(io.BytesIO(f.read()))
        for i, image in enumerate(arrays["images"]):
            yield i, {"image": image, "label": int(arrays["labels"][i])}


@pytest.fixture
def served_folder(tmp_path):
    """(folder, base URL): an HTTP server on 127.0.0.1 serving the folder's files."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_tfds_source_downloads_and_prepares_a_dataset(tmp_path, served_folder, monkeypatch):
    """A first `tfds:` load runs tensorflow-datasets' whole download-and-prepare path (download
    manager, builder, writer; every module they import, importlib_resources among them) as for
    "tfds:cifar10", with the download served from this machine."""
    folder, url = served_folder
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    np.savez(folder / "tiny.npz", images=images, labels=np.arange(6) % 2)
    monkeypatch.setattr(KerasResvitTinyDownload, "URL", f"{url}/tiny.npz")
    data_dir = tmp_path / "tfds"
    ds = kr.data.load_dataset(
        "tfds:keras_resvit_tiny_download", "train", data_dir=str(data_dir), batch_size=6
    )
    assert ds.class_names == ["a", "b"] and ds.num_classes == 2
    x, y = next(iter(ds))
    # tensorflow-datasets shuffles the examples as it writes them: compare them as a set.
    pairs = sorted(
        (int(label), image.tolist()) for label, image in zip(y.numpy(), x.numpy(), strict=True)
    )
    assert pairs == sorted(
        (i % 2, image.astype("float32").tolist()) for i, image in enumerate(images)
    )
    assert list(data_dir.glob("keras_resvit_tiny_download/1.0.0/*.tfrecord*"))
    assert list((data_dir / "downloads").iterdir())


@pytest.mark.parametrize("server", ["missing_file", "no_server"])
def test_a_tfds_download_that_fails_is_one_error(tmp_path, served_folder, monkeypatch, server):
    """Without network (or the file), a first `tfds:` load is one ConnectionError naming the
    source and what to do, not requests' traceback."""
    from tensorflow_datasets.core.download import downloader

    folder, url = served_folder
    if server == "no_server":  # a closed port: refused at once, without the retries' wait
        monkeypatch.setattr(downloader, "MAX_RETRIES", 0)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(KerasResvitTinyDownload, "URL", f"{url}/tiny.npz")
    with pytest.raises(ConnectionError) as info:
        kr.data.load_dataset("tfds:keras_resvit_tiny_download", data_dir=str(tmp_path / "tfds"))
    message = str(info.value)
    assert "source='tfds:keras_resvit_tiny_download'" in message and "data_dir=" in message
    assert len(message.splitlines()) == 1


def test_unknown_tfds_name_is_a_clear_error():
    with pytest.raises(ValueError, match="source='tfds:no_such_dataset'"):
        kr.data.load_dataset("tfds:no_such_dataset", image_size=8)


def test_image_folder_classes_counts_and_training(tmp_path):
    root = _write_folder(tmp_path / "pets")
    ds = kr.data.load_dataset(str(root), image_size=16, batch_size=5, augment="inception_crop")
    assert ds.class_names == ["cat", "dog", "eel"] and ds.num_classes == 3
    assert int(ds.cardinality()) == 3 and int(ds.unaugmented.cardinality()) == 3
    batches = list(ds)
    assert sum(int(x.shape[0]) for x, _ in batches) == 12
    assert all(x.shape[1:] == (16, 16, 3) for x, _ in batches)
    labels = np.concatenate([np.asarray(y) for _, y in batches])
    assert sorted(labels) == [0] * 4 + [1] * 4 + [2] * 4
    _trains(ds)


def _write_images(root, images, classes=("a", "b")):
    """One PNG per image in `root/<class>/`, classes in turn; returns the root."""
    for i, image in enumerate(images):
        folder = root / classes[i % len(classes)]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    return root


def _by_label(ds):
    """The images of a dataset's first batch, ordered by label, as float64."""
    images, labels = next(iter(ds))
    return images.numpy()[np.argsort(labels.numpy(), kind="stable")].astype("float64")


def _gradients(count, height, width, seed=0):
    """Smooth images (a bright ramp plus a little noise): crops and zooms change them."""
    rng = np.random.default_rng(seed)
    ramp = np.add.outer(np.linspace(0, 150, height), np.linspace(0, 90, width))[..., None]
    noise = rng.integers(0, 16, (count, height, width, 3))
    return (ramp + noise).clip(0, 255).astype("uint8")


def test_unaugmented_images_are_whole_for_training_and_evaluated_otherwise(tmp_path):
    """`ds.unaugmented` (PixelMean's source): a training split's images resized whole, as the
    augmentation sees them; other splits as they are evaluated (10x10 images at 8 are larger
    than 8 / 0.875 and get the 0.875 center crop)."""
    pixels = _gradients(2, 10, 10)
    root = _write_images(tmp_path / "small" / "train", pixels).parent
    _write_images(root / "validation", pixels)
    train = kr.data.load_dataset(root, image_size=8, batch_size=2, augment="resnet_cifar")
    whole = kr.data.evaluation_transform(8, 1.0)(pixels.astype("float32"))
    np.testing.assert_allclose(_by_label(train.unaugmented), whole, atol=1e-3)
    validation = kr.data.load_dataset(root, "validation", image_size=8, batch_size=2)
    cropped = kr.data.evaluation_transform(8)(pixels.astype("float32"))
    np.testing.assert_allclose(_by_label(validation.unaugmented), cropped, atol=1e-3)
    assert not np.allclose(cropped, whole, atol=1.0)


def test_small_folder_images_are_evaluated_whole(tmp_path):
    """CIFAR-sized images at their own size: no crop, no zoom against training (a 0.875 crop
    zoomed 32x32 CIFAR images 1.14x and cost 1.9 points of accuracy)."""
    pixels = _gradients(4, 32, 32)
    root = _write_images(tmp_path / "cifar", pixels)
    test = kr.data.load_dataset(root, "train", image_size=32, batch_size=4, shuffle=False)
    np.testing.assert_array_equal(_by_label(test), pixels[[0, 2, 1, 3]])
    # Upsampled for fine-tuning (32 -> 64): the whole image, resized.
    large = kr.data.load_dataset(root, "train", image_size=64, batch_size=4, shuffle=False)
    whole = kr.data.evaluation_transform(64, 1.0)(pixels[[0, 2, 1, 3]].astype("float32"))
    np.testing.assert_allclose(_by_label(large), whole, atol=0.01)
    # An explicit crop_ratio still decides.
    cropped = kr.data.load_dataset(
        root, "train", image_size=32, batch_size=4, shuffle=False, crop_ratio=0.875
    )
    assert not np.allclose(_by_label(cropped), pixels[[0, 2, 1, 3]], atol=1.0)
    # The same for arrays of the output size, with either loader.
    expected = kr.data.evaluation_transform(32, 0.875)(pixels.astype("float32"))
    for loader in ("tf.data", "py_dataset"):
        arrays = kr.data.load_dataset(
            (pixels, np.arange(4)), "test", batch_size=4, crop_ratio=0.875, loader=loader
        )
        images = arrays[0][0] if loader == "py_dataset" else next(iter(arrays))[0]
        np.testing.assert_allclose(np.asarray(images), expected, atol=0.01)


def test_photos_are_center_cropped_unless_trained_on_whole_images(tmp_path):
    pixels = _gradients(2, 300, 400)
    root = _write_images(tmp_path / "photos" / "train", pixels).parent
    _write_images(root / "validation", pixels)
    kwargs = {"image_size": 224, "batch_size": 2, "shuffle": False}
    photos = _by_label(kr.data.load_dataset(root, "train", **kwargs))
    expected = kr.data.evaluation_transform(224, 0.875)(pixels.astype("float32"))
    np.testing.assert_allclose(photos, expected, atol=0.01)
    resized = kr.data.evaluation_transform(224, 1.0)(pixels.astype("float32"))
    assert not np.allclose(photos, resized, atol=1.0)
    # resnet_cifar resizes whole images for training: evaluation follows it.
    whole = kr.data.load_dataset(root, "validation", augment="resnet_cifar", **kwargs)
    np.testing.assert_allclose(_by_label(whole), resized, atol=0.01)


def test_image_folder_validation_split_is_disjoint(tmp_path):
    root = _write_folder(tmp_path / "pets", per_class=5)
    kwargs = {"validation_split": 0.4, "seed": 1}
    train, _, names = kr.data.list_image_folder(root, "train", **kwargs)
    val, _, _ = kr.data.list_image_folder(root, "validation", **kwargs)
    assert not set(train) & set(val) and len(train) + len(val) == 15 and len(val) == 6
    ds = kr.data.load_dataset(root, "validation", image_size=8, batch_size=16, **kwargs)
    assert int(next(iter(ds))[0].shape[0]) == 6


def test_images_added_to_one_class_leave_the_other_classes_hold_out_alone(tmp_path):
    # A model's run held out 20% of each class; images added later to "cat" must not move a
    # "dog" or "eel" training image into the split that evaluates it (one random stream over
    # every class did: a training image was then scored as a validation one, without a word).
    root = _write_folder(tmp_path / "pets", per_class=20)
    kwargs = {"validation_split": 0.2, "seed": 3}
    before, _, _ = kr.data.list_image_folder(root, "validation", **kwargs)
    for i in range(20, 24):
        (root / "cat" / f"{i}.png").write_bytes((root / "cat" / "1.png").read_bytes())
    after, _, _ = kr.data.list_image_folder(root, "validation", **kwargs)
    others = [p for p in before if "/cat/" not in p]
    assert len(others) == 8 and others == [p for p in after if "/cat/" not in p]
    cats_before = {p for p in before if "/cat/" in p}
    cats_after = {p for p in after if "/cat/" in p}
    # Of "cat" (4 held of 20, then 5 of 24) at most the count's change moves.
    assert len(cats_before) == 4 and len(cats_after) == 5
    assert len(cats_before - cats_after) <= 1
    # Another seed holds out other files, the same count.
    other_seed, _, _ = kr.data.list_image_folder(root, "validation", validation_split=0.2)
    assert len(other_seed) == len(after) and set(other_seed) != set(after)


def test_hidden_files_and_folders_inside_a_class_are_not_read(tmp_path):
    root = _write_folder(tmp_path / "pets", per_class=2)
    nested = root / "cat" / "indoor"
    nested.mkdir()
    (nested / "0.jpg").write_bytes((root / "cat" / "0.jpg").read_bytes())  # a visible sub-folder
    for hidden in (root / "dog" / ".ipynb_checkpoints", root / "eel" / "deep" / ".git"):
        hidden.mkdir(parents=True)
        (hidden / "1-checkpoint.png").write_bytes((root / "dog" / "1.png").read_bytes())
    (root / "eel" / ".0.jpg").write_bytes((root / "eel" / "0.jpg").read_bytes())
    paths, labels, names = kr.data.list_image_folder(root)
    listed = sorted(str(Path(p).relative_to(root)) for p in paths)
    assert listed == [
        "cat/0.jpg", "cat/1.png", "cat/indoor/0.jpg", "dog/0.jpg", "dog/1.png", "eel/0.jpg",
        "eel/1.png",
    ]  # fmt: skip
    assert names == ["cat", "dog", "eel"] and sorted(labels) == [0, 0, 0, 1, 1, 2, 2]


def test_linked_folders_are_read_and_nothing_is_left_out_without_a_word(tmp_path):
    root = _write_folder(tmp_path / "pets", per_class=2)
    extra = _write_folder(tmp_path / "extra", classes=("more",), per_class=3) / "more"
    (root / "cat" / "linked").symlink_to(extra, target_is_directory=True)  # followed
    (root / "dog" / "loop").symlink_to(root / "dog", target_is_directory=True)  # read once
    (root / "eel" / "gone.png").symlink_to(tmp_path / "nowhere.png")  # a link to nothing
    (root / "eel" / "up").symlink_to(root, target_is_directory=True)  # every class as eel
    (root / "stray.png").write_bytes((root / "cat" / "1.png").read_bytes())  # in no class
    with pytest.warns(UserWarning) as warned:
        paths, labels, _ = kr.data.list_image_folder(root)
    messages = " ".join(str(w.message) for w in warned)
    assert "eel/gone.png (a link to nothing)" in messages
    assert "eel/up (a link to a folder holding its class)" in messages
    assert "1 image file(s)" in messages and "stray.png" in messages
    listed = sorted(str(Path(p).relative_to(root)) for p in paths)
    assert listed == [
        "cat/0.jpg", "cat/1.png", "cat/linked/0.jpg", "cat/linked/1.png", "cat/linked/2.jpg",
        "dog/0.jpg", "dog/1.png", "eel/0.jpg", "eel/1.png",
    ]  # fmt: skip
    assert sorted(labels) == [0] * 5 + [1, 1, 2, 2]


@pytest.mark.parametrize("cache", [False, True])
def test_file_and_class_names_that_are_not_utf8_are_read(tmp_path, cache):
    root = _write_folder(tmp_path / "pets", classes=("cat", "dog"), per_class=2)
    odd = os.fsdecode(b"d\xffg")  # a Latin-1 name on a UTF-8 file system
    try:
        (root / "dog").rename(root / odd)
        (root / odd / "0.jpg").rename(root / odd / os.fsdecode(b"\xfe0.jpg"))
    except (OSError, UnicodeError):
        pytest.skip("this file system takes only UTF-8 names")
    ds = kr.data.load_dataset(root, image_size=8, batch_size=4, shuffle=False, cache=cache)
    labels = np.concatenate([y for _, y in ds.as_numpy_iterator()])
    assert ds.class_names == ["cat", odd] and sorted(labels.tolist()) == [0, 0, 1, 1]


@pytest.mark.parametrize(
    "train, validation, test",
    [("Train", None, "Test"), ("training", "validation", None), ("train", "Val", "TEST")],
)
def test_split_folders_of_other_names_and_cases_are_splits(tmp_path, train, validation, test):
    # Kaggle's "Train/" and "Test/", "training/" + "validation/": read as the classes'
    # splits, never as two classes of the images below them.
    root = tmp_path / "data"
    _write_folder(root / train, per_class=3)
    held = [(split, name) for split, name in (("validation", validation), ("test", test)) if name]
    for _, name in held:
        _write_folder(root / name, per_class=2, seed=1)
    paths, labels, names = kr.data.list_image_folder(root)
    assert names == ["cat", "dog", "eel"] and sorted(labels) == [0] * 3 + [1] * 3 + [2] * 3
    assert all(Path(p).parent.parent.name == train for p in paths)
    for split, name in held:
        paths, labels, names = kr.data.list_image_folder(root, split)
        assert names == ["cat", "dog", "eel"] and len(paths) == 6
        assert all(Path(p).parent.parent.name == name for p in paths)


def test_classes_named_like_splits_stay_classes(tmp_path):
    # A folder of images (no class folders inside) named "valid" is a class.
    root = _write_folder(tmp_path / "documents", classes=("invalid", "valid"), per_class=2)
    assert kr.data.list_image_folder(root)[2] == ["invalid", "valid"]
    # Two folders of one split, or split folders without a training folder, are refused.
    _write_folder(tmp_path / "two" / "train", per_class=1)
    for name in ("val", "validation"):
        _write_folder(tmp_path / "two" / name, per_class=1)
    with pytest.raises(ValueError, match=r"2 folders of the 'validation' split: \['val', 'vali"):
        kr.data.list_image_folder(tmp_path / "two", "validation")
    for name in ("validation", "test"):
        _write_folder(tmp_path / "no_train" / name, per_class=1)
    with pytest.raises(ValueError, match=r"split folder\(s\) \['test', 'validation'\] but no "):
        kr.data.list_image_folder(tmp_path / "no_train")


def test_an_image_linked_into_two_classes_is_refused(tmp_path):
    root = _write_folder(tmp_path / "pets", per_class=2)
    (root / "kitty").symlink_to(root / "cat", target_is_directory=True)
    with pytest.raises(ValueError, match=r"2 image file\(s\) are listed in more than one class"):
        kr.data.list_image_folder(root)
    (root / "kitty").unlink()
    (root / "dog" / "cat.png").symlink_to(root / "cat" / "1.png")
    with pytest.raises(ValueError, match=r"pets/cat/1.png' \(class 'cat'\) and .*'dog'"):
        kr.data.list_image_folder(root)


def test_image_folder_with_split_folders(tmp_path):
    _write_folder(tmp_path / "data" / "train")
    _write_folder(tmp_path / "data" / "test", per_class=2)
    test = kr.data.load_dataset(tmp_path / "data", "test", image_size=8, batch_size=32)
    assert test.class_names == ["cat", "dog", "eel"]
    assert int(next(iter(test))[0].shape[0]) == 6


def test_a_held_out_split_beside_split_folders_comes_from_the_training_folder(tmp_path):
    # train/ and test/ but no validation/: validation is a share of train/, never the split
    # folders read as classes; and the training split leaves that share out.
    _write_folder(tmp_path / "data" / "train", per_class=5)
    _write_folder(tmp_path / "data" / "test", per_class=2)
    kwargs = {"validation_split": 0.4, "seed": 1}
    val, val_labels, names = kr.data.list_image_folder(tmp_path / "data", "validation", **kwargs)
    train, _, _ = kr.data.list_image_folder(tmp_path / "data", "train", **kwargs)
    assert names == ["cat", "dog", "eel"] and sorted(set(val_labels)) == [0, 1, 2]
    assert len(val) == 6 and len(train) == 9 and not set(train) & set(val)
    assert all("/train/" in path for path in train + val)
    # The files `keras-resvit train --data <folder>` holds out (from <folder>/train).
    assert kr.data.list_image_folder(tmp_path / "data" / "train", "validation", **kwargs)[0] == val
    test, _, _ = kr.data.list_image_folder(tmp_path / "data", "test", **kwargs)
    assert len(test) == 6 and all("/test/" in path for path in test)


def test_a_class_of_one_image_stays_in_training_with_a_warning(tmp_path):
    root = _write_folder(tmp_path / "pets", per_class=2)
    for extra in (root / "dog" / "1.png", root / "eel" / "1.png"):
        extra.unlink()
    with pytest.warns(UserWarning, match=r"\['dog', 'eel'\].*one image each"):
        train, labels, _ = kr.data.list_image_folder(root, "train", validation_split=0.5)
    assert sorted(labels) == [0, 1, 2] and len(train) == 3  # cat: one of two held out
    with pytest.warns(UserWarning, match="one image each"):
        _, held, _ = kr.data.list_image_folder(root, "validation", validation_split=0.5)
    assert held == [0]
    for name in ("cat",):
        (root / name / "1.png").unlink()
    with pytest.raises(ValueError, match="split='validation'.*has no image.*one image"):
        kr.data.list_image_folder(root, "validation", validation_split=0.5)
    # A share that would take every image of a class leaves one in training.
    root = _write_folder(tmp_path / "more", per_class=2)
    _, labels, _ = kr.data.list_image_folder(root, "train", validation_split=0.9)
    assert sorted(labels) == [0, 1, 2]


def test_a_split_folder_lacking_a_class_keeps_the_training_labels(tmp_path):
    # test/ has no "dog": "eel" must still be label 2, as in train/, not label 1.
    _write_folder(tmp_path / "data" / "train")
    _write_folder(tmp_path / "data" / "test", classes=("cat", "eel"), per_class=2)
    test = kr.data.load_dataset(tmp_path / "data", "test", image_size=8, batch_size=32)
    assert test.class_names == ["cat", "dog", "eel"] and test.num_classes == 3
    assert sorted(np.asarray(next(iter(test))[1]).tolist()) == [0, 0, 2, 2]


def _fit_warnings(ds, epochs=2):
    """The Python warnings of a `model.fit` and `model.evaluate` on `ds`."""
    model = _tiny_model(ds.num_classes, "sparse_categorical_crossentropy")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(ds, validation_data=ds, epochs=epochs, verbose=0)
        model.evaluate(ds, verbose=0)
    assert len(history.history["loss"]) == epochs
    return [str(w.message) for w in caught]


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_a_hold_out_beside_a_validation_folder_is_refused(tmp_path, split):
    """With its own validation/ folder read whole, a share held out of train/ would be read by
    no split: refused whichever split is read; the train/ folder itself can be split."""
    for name in ("train", "validation", "test"):
        _write_folder(tmp_path / "data" / name, per_class=2)
    with pytest.raises(ValueError, match=r"validation_split=0.5: .*own 'validation' sub-folder"):
        kr.data.load_dataset(tmp_path / "data", split, image_size=8, validation_split=0.5)
    held = kr.data.load_dataset(
        tmp_path / "data" / "train", "validation", image_size=8, validation_split=0.5
    )
    assert sum(int(x.shape[0]) for x, _ in held) == 3


@pytest.mark.parametrize("cache", [True, False])
def test_folder_datasets_know_their_length(tmp_path, cache):
    """Keras knows an epoch's length from the first epoch: no "Unknown" progress bar and no
    "ran out of data" warning."""
    root = _write_folder(tmp_path / "pets")
    for split in ("train", "test"):
        ds = kr.data.load_dataset(
            root, split, image_size=8, batch_size=5, cache=cache, validation_split=0.25
        )
        listed = 9 if split == "train" else 3
        assert int(ds.cardinality()) == -(-listed // 5)
        assert sum(int(x.shape[0]) for x, _ in ds) == listed
    train = kr.data.load_dataset(root, image_size=8, batch_size=5, cache=cache)
    messages = _fit_warnings(train)
    assert not [m for m in messages if "ran out of data" in m], messages


def test_a_training_file_that_fails_to_decode_keeps_the_epoch_length(tmp_path):
    """A truncated PNG passes a non-strict training listing (its header is whole) and fails to
    decode: it is dropped and replaced by another image, so the asserted count still holds."""
    root = _write_folder(tmp_path / "data" / "train")
    whole = (root / "dog" / "1.png").read_bytes()
    (root / "dog" / "cut.png").write_bytes(whole[: len(whole) // 2])
    ds = kr.data.load_dataset(tmp_path / "data", "train", image_size=8, batch_size=4)
    assert int(ds.cardinality()) == -(-13 // 4)
    for _ in range(2):  # every epoch, shuffled
        labels = np.concatenate([np.asarray(y) for _, y in ds])
        assert len(labels) == 13
    messages = _fit_warnings(ds)
    assert not [m for m in messages if "ran out of data" in m], messages
    with pytest.raises(ValueError, match="cut.png.*truncated"):
        kr.data.load_dataset(tmp_path / "data", "train", image_size=8, strict=True)


def _corrupt_inside(png):
    """The PNG with its pixel data scrambled: whole to its end marker, undecodable."""
    start = png.index(b"IDAT") + 4
    return png[:start] + bytes(b ^ 0xFF for b in png[start : start + 8]) + png[start + 8 :]


@pytest.mark.parametrize("split", ["test", "train"], ids=["test", "train_unshuffled"])
@pytest.mark.parametrize("loader", ["tf.data", "py_dataset"])
def test_an_evaluation_read_never_scores_a_stand_in_image(tmp_path, loader, split):
    """A stand-in for a file that fails to decode would be scored twice: an evaluation read
    (any split but a shuffled training one) skips a truncated file when it is listed, with a
    warning, and a file that is whole but fails to decode stops the read."""
    (tmp_path / "data").mkdir()
    folders = {name: tmp_path / "data" / name for name in ("train", "test")}
    _write_folder(folders["train"], per_class=2, seed=1)
    _write_folder(folders["test"], per_class=2)
    whole = (folders[split] / "dog" / "1.png").read_bytes()
    (folders[split] / "dog" / "cut.png").write_bytes(whole[: len(whole) // 2])
    options = {"image_size": 8, "batch_size": 4, "loader": loader, "shuffle": False}
    with pytest.warns(UserWarning, match=r"Skipping 1 file.*cut.png \(truncated\)"):
        ds = kr.data.load_dataset(tmp_path / "data", split, **options)
    images = np.concatenate([np.asarray(x) for x, _ in ds])
    assert len(images) == 6 and len(np.unique(images.reshape(6, -1), axis=0)) == 6
    (folders[split] / "dog" / "cut.png").write_bytes(_corrupt_inside(whole))
    match = r"image .*cut\.png.? cannot be decoded"
    with pytest.raises(ValueError, match=match), data_errors():
        for _ in kr.data.load_dataset(tmp_path / "data", split, **options):
            pass


@pytest.mark.parametrize("broken", ["cat/0.png", "dog/2.png", "eel/3.png"])
@pytest.mark.parametrize(
    "read",
    [
        {"split": "test"},
        {"split": "test", "cache": False},
        {"split": "train", "strict": True},
        {"split": "train", "strict": True, "cache": False},
        {"split": "test", "sizes": "one"},  # decoded into memory when listed
    ],
    ids=["test", "test_uncached", "train_strict", "train_strict_uncached", "one_size"],
)
def test_a_strict_read_names_the_file_that_fails_to_decode(tmp_path, read, broken):
    """TensorFlow's decoder says only "Invalid PNG data": wherever the file lies in the read
    (first, inside, last), a strict tf.data read stops with one error naming it, and reads
    every file, in order, when none fails."""
    read = dict(read)
    split, one_size = read.pop("split"), read.pop("sizes", None) == "one"
    root = tmp_path / "data" / split
    rng = np.random.default_rng(0)
    for c, name in enumerate(("cat", "dog", "eel")):
        (root / name).mkdir(parents=True)
        for i in range(4):
            shape = (12, 12, 3) if one_size else (12 + i, 10 + c, 3)
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            (root / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    options = {"image_size": 8, "batch_size": 5, "loader": "tf.data", **read}
    strict = kr.data.load_dataset(tmp_path / "data", split, shuffle=False, **options)
    plain = kr.data.load_dataset(
        tmp_path / "data", split, shuffle=False, **{**options, "strict": False}
    )
    for a, b in zip(strict, plain, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
    (root / broken).write_bytes(_corrupt_inside((root / broken).read_bytes()))
    match = rf"^image .*{re.escape(broken)}.? cannot be decoded"
    with pytest.raises(ValueError, match=match), data_errors():
        for _ in kr.data.load_dataset(tmp_path / "data", split, **options):
            pass


def test_corrupt_files_are_skipped_with_a_warning_or_raise_when_strict(tmp_path):
    root = _write_folder(tmp_path / "pets")
    (root / "dog" / "broken.jpg").write_bytes(b"not an image")
    (root / "eel" / "notes.txt").write_text("hello")
    with pytest.warns(UserWarning, match="broken.jpg"):
        ds = kr.data.load_dataset(root, image_size=8, batch_size=32)
    assert int(next(iter(ds))[0].shape[0]) == 12
    with pytest.raises(ValueError, match="broken.jpg.*strict=True"):
        kr.data.load_dataset(root, image_size=8, strict=True)


@pytest.mark.parametrize(
    "setup, words",
    [
        (lambda root: None, ["0 class sub-folder(s)", "at least 2 classes"]),
        (lambda root: _write_folder(root, classes=("cat",)), ["1 class", "at least 2"]),
        (
            lambda root: (root / "a").mkdir() or (root / "b").mkdir(),
            ["'a' has no JPEG, PNG, GIF or BMP image"],
        ),
    ],
)
def test_bad_image_folders(tmp_path, setup, words):
    root = tmp_path / "images"
    root.mkdir()
    setup(root)
    with pytest.raises(ValueError) as info:
        kr.data.load_dataset(root, image_size=8)
    for word in [str(root), *words]:
        assert word in str(info.value)


def test_missing_folder_and_held_out_split_without_fraction(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        kr.data.load_dataset(str(tmp_path / "nowhere"), image_size=8)
    root = _write_folder(tmp_path / "pets")
    with pytest.raises(ValueError, match="split='test'.*validation_split"):
        kr.data.load_dataset(root, "test", image_size=8)


def test_arrays_resize_classes_soft_labels_and_training():
    x, y = np.random.default_rng(0).uniform(0, 255, (12, 20, 20, 3)), np.arange(12) % 3
    ds = kr.data.load_dataset((x, y), "test", image_size=16, batch_size=4)
    assert ds.num_classes == 3 and ds.class_names == ["0", "1", "2"]
    assert all(b.shape[1:] == (16, 16, 3) for b, _ in ds)
    mixed = kr.data.load_dataset((x, y), image_size=16, batch_size=4, augment="vit", seed=2)
    _trains(mixed, soft=True)
    _trains(kr.data.load_dataset("digits", batch_size=16, augment="resnet_cifar"))


@pytest.mark.parametrize("loader", ["tf.data", "py_dataset"])
def test_a_training_split_read_as_evaluation_data(loader):
    # A validation slice of a training split (tfds' "train[45000:]") is read with
    # training=False: in order, unaugmented, unmixed, as any "test" split.
    x, y = np.random.default_rng(0).uniform(0, 255, (12, 16, 16, 3)), np.arange(12) % 3
    common = {"batch_size": 12, "augment": "deit", "seed": 1, "loader": loader}
    augmented = kr.data.load_dataset((x, y), "train", **common)
    held_out = kr.data.load_dataset((x, y), "train", training=False, **common)
    test = kr.data.load_dataset((x, y), "test", **common)
    assert (augmented.augmented, held_out.augmented, test.augmented) == (True, False, False)
    batch, labels = _first(held_out)
    np.testing.assert_array_equal(batch, _first(test)[0])
    np.testing.assert_array_equal(labels, y)  # integer labels, in order
    assert _first(augmented)[1].shape == (12, 3)  # the preset's mixing: soft labels
    assert kr.data.load_dataset((x, y), "test", training=True, **common).augmented
    # A run resumes only on data read the same way.
    assert "training=False" in held_out.provenance and "training" not in test.provenance


def _first(ds):
    images, labels = ds[0] if isinstance(ds, keras.utils.PyDataset) else next(iter(ds))
    return np.asarray(images), np.asarray(labels)


def test_a_tfds_slice_of_the_training_split_as_validation_data():
    with tfds.testing.mock_data(num_examples=20):
        read = functools.partial(kr.data.load_dataset, "tfds:cifar10", augment="deit")
        held_out = read("train[10:]", training=False, batch_size=64)
        assert not held_out.augmented and next(iter(held_out))[1].shape == (20,)
        assert read("train[10:]", batch_size=64).augmented


def test_drop_remainder_gives_static_batches():
    ds = kr.data.load_dataset("digits", "test", batch_size=64, drop_remainder=True)
    assert ds.element_spec[0].shape == (64, 32, 32, 3)
    assert sum(1 for _ in ds) == 360 // 64


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"image_size": 0}, ["image_size=0", "positive int"]),
        ({"image_size": "32"}, ["image_size='32'", "positive int"]),
        ({"augment": "autoaugment"}, ["augment='autoaugment'", "resnet_cifar"]),
        ({"augment": "Resnet-Cifar"}, ["augment='Resnet-Cifar'", "Did you mean 'resnet_cifar'"]),
        ({"crop_ratio": 1.5}, ["crop_ratio=1.5", "[0.25, 1]"]),
        ({"mixing": "yes"}, ["mixing='yes'", "Mixing"]),
    ],
)
def test_bad_pipeline_arguments(kwargs, words):
    with pytest.raises(ValueError) as info:
        kr.data.load_dataset("digits", **kwargs)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("deterministic", [True, False])
def test_augmentation_does_not_depend_on_a_peek(deterministic):
    """`kr.train` looks at the first batch before `fit`: batches read ahead and dropped must
    not change the draws of the following ones."""

    def after_a_peek(wait):
        ds = kr.data.load_dataset(
            "digits", batch_size=16, augment="deit", seed=3, deterministic=deterministic
        )
        next(iter(ds))
        time.sleep(wait)  # time for any read-ahead
        return [(x.numpy(), y.numpy()) for x, y in ds.take(3)]

    for (x1, y1), (x2, y2) in zip(after_a_peek(0.0), after_a_peek(1.0), strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


@pytest.mark.parametrize("cache", [True, False])
def test_folder_batches_mix_classes_beyond_the_shuffle_buffer(tmp_path, monkeypatch, cache):
    """A folder lists its files class by class; with more images than the shuffle buffer, the
    first batches must still draw from every class (cached and streamed alike)."""
    from keras_resvit.data import sources

    monkeypatch.setattr(sources, "SHUFFLE_BUFFER", 6)
    root = _write_folder(tmp_path / "f", classes=("a", "b", "c", "d"), per_class=12)
    ds = kr.data.load_dataset(root, "train", image_size=8, batch_size=12, cache=cache, seed=1)
    first = [np.asarray(y) for _, y in ds.take(2)]
    # Sorted order would give [0]*12 then [1]*12; a uniform shuffle almost surely mixes 3+.
    assert all(len(set(labels)) >= 3 for labels in first), first
    epoch = np.concatenate([np.asarray(y) for _, y in ds])
    assert np.bincount(epoch).tolist() == [12, 12, 12, 12]


def test_a_skipped_file_leaves_the_class_names_alone(tmp_path):
    root = _write_folder(tmp_path / "f", classes=("ant", "bee", "cow"), per_class=3)
    (root / "bee" / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="notes.txt"):
        ds = kr.data.load_dataset(root, "train", image_size=8, batch_size=4)
    assert ds.class_names == ["ant", "bee", "cow"] and ds.num_classes == 3
