"""The PyDataset loader (`loader="py_dataset"`): the tf.data path's batches without TensorFlow,
per-epoch permutations from a seed, shards for several processes, augmentation and mixing."""

import warnings

import keras
import numpy as np
import pytest
from PIL import Image

import keras_resvit as kr
from keras_resvit.data import image_files, loaders
from keras_resvit.data.in_memory import load_digits
from keras_resvit.data.loaders import ImageLoader

PY = {"loader": "py_dataset"}
TF = {"loader": "tf.data"}
# Pixel levels (0-255) by which a JPEG file's pixels decoded by Pillow may differ from
# TensorFlow's decoder (measured: at most 4, about 1 on average, on noisy ramps at quality 90).
JPEG_MAX, JPEG_MEAN = 6.0, 1.5


def _first(ds):
    """The first batch of a tf.data dataset or a loader, as NumPy arrays."""
    batch = ds[0] if isinstance(ds, ImageLoader) else next(iter(ds))
    return tuple(np.asarray(t) for t in batch)


def _numbered(count, size=4):
    """Images whose pixels are their index, and labels 0, 1, 2 in turn."""
    images = np.broadcast_to(
        np.arange(count, dtype="float32")[:, None, None, None], (count, size, size, 3)
    )
    return images, np.arange(count) % 3


def _ids(batch):
    return batch[0][:, 0, 0, 0].astype(int).tolist()


def _write_folder(root, kinds=("png", "jpg"), per_class=4, seed=0):
    """Noisy ramps of varying size in `root/<class>/`, saved by Pillow as PNG / JPEG in turn."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(("cat", "dog", "eel")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            height, width = 20 + 3 * i, 16 + 2 * c
            ramp = np.add.outer(np.linspace(0, 150, height), np.linspace(0, 90, width))[..., None]
            pixels = (ramp + rng.integers(0, 60, (height, width, 3))).clip(0, 255)
            kind = kinds[i % len(kinds)]
            Image.fromarray(pixels.astype("uint8")).save(root / name / f"{i}.{kind}", quality=90)
    return root


# --- batches: shapes, order, shards -------------------------------------------------------


def test_digits_batches_shapes_and_attributes():
    train = kr.data.load_dataset("digits", "train", batch_size=64, **PY)
    tf_train = kr.data.load_dataset("digits", "train", batch_size=64, **TF)
    assert isinstance(train, keras.utils.PyDataset) and len(train) == int(tf_train.cardinality())
    images, labels = train[0]
    assert images.shape == (64, 32, 32, 3) and images.dtype == np.float32
    assert labels.shape == (64,) and labels.dtype == np.int32
    assert train.class_names == tf_train.class_names and train.num_classes == 10
    assert train.provenance == tf_train.provenance
    assert len(train[len(train) - 1][1]) == 1437 % 64
    dropped = kr.data.load_dataset("digits", "train", batch_size=64, drop_remainder=True, **PY)
    assert len(dropped) == 1437 // 64 and len(dropped[len(dropped) - 1][1]) == 64
    with pytest.raises(IndexError):
        dropped[len(dropped)]


def test_epochs_are_permutations_drawn_from_seed_and_epoch():
    images, labels = _numbered(20)
    loader = ImageLoader(images, labels, batch_size=5, shuffle=True, seed=3)
    first = [_ids(loader[i]) for i in range(len(loader))]
    assert sorted(sum(first, [])) == list(range(20)) != sum(first, [])  # shuffled
    again = ImageLoader(images, labels, batch_size=5, shuffle=True, seed=3)
    assert [_ids(again[i]) for i in range(4)] == first
    loader.on_epoch_end()
    second = [_ids(loader[i]) for i in range(4)]
    assert loader.epoch == 1 and second != first and sorted(sum(second, [])) == list(range(20))
    again.epoch = 1
    assert [_ids(again[i]) for i in range(4)] == second
    other_seed = ImageLoader(images, labels, batch_size=5, shuffle=True, seed=4)
    assert [_ids(other_seed[i]) for i in range(4)] != first
    in_order = ImageLoader(images, labels, batch_size=5)
    in_order.on_epoch_end()
    assert sum((_ids(in_order[i]) for i in range(4)), []) == list(range(20))


def test_two_processes_read_disjoint_shards_that_cover_the_epoch():
    images, labels = _numbered(21)
    whole = ImageLoader(images, labels, batch_size=6, shuffle=True, seed=1)
    shards = [
        ImageLoader(
            images, labels, batch_size=6, shuffle=True, seed=1, process_index=p, process_count=2
        )
        for p in (0, 1)
    ]
    for epoch in (0, 1):
        for loader in (whole, *shards):
            loader.epoch = epoch
        assert len(shards[0]) == len(shards[1]) == 4  # 10 examples each, 3 per batch
        read = [sum((_ids(s[i]) for i in range(4)), []) for s in shards]
        assert len(read[0]) == len(read[1]) == 10 and not set(read[0]) & set(read[1])
        left_out = set(range(21)) - set(read[0]) - set(read[1])
        assert len(left_out) == 1 and left_out == {int(whole.positions()[-1])}
        # Together, the processes' batches at a step are the one-process batch at that step.
        for step in range(3):
            together = _ids(shards[0][step]) + _ids(shards[1][step])
            assert sorted(together) == sorted(_ids(whole[step]))
    assert shards[0][0][0].shape[0] == 3


# --- the same batches as the tf.data path -------------------------------------------------


def test_digits_are_tensorflows_bilinear_upsampling_on_every_backend(backend):
    """`load_digits` resizes with the backend (no TensorFlow needed): TensorFlow's bilinear
    pixels bit for bit at the default 32 (at any size on TensorFlow); JAX's upsampling to
    other sizes rounds differently (measured: 3e-5 of a level at 24)."""
    import tensorflow as tf
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    labels = digits.target
    train, test = train_test_split(
        np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=0
    )
    for size in (32, 24):
        atol = 0.0 if size == 32 or backend == "tensorflow" else 1e-4
        grey = digits.images.astype("float32")[..., None] * (255.0 / 16.0)
        expected = tf.image.resize(grey, (size, size), method="bilinear").numpy()
        expected = np.clip(np.repeat(expected, 3, axis=-1), 0.0, 255.0)
        for (x, y), rows in zip(load_digits(size), (train, test), strict=True):
            np.testing.assert_allclose(x, expected[rows], atol=atol, rtol=0)
            np.testing.assert_array_equal(y, labels[rows])


@pytest.mark.parametrize("split", ["train", "test"])
def test_evaluation_batches_equal_the_tf_data_path_for_digits_and_arrays(split, backend):
    kwargs = {"batch_size": 50, "shuffle": False}
    for source in (
        "digits",
        (np.random.default_rng(0).uniform(0, 255, (50, 20, 20, 3)), np.arange(50) % 4),
    ):
        tf_images, tf_labels = _first(kr.data.load_dataset(source, split, **kwargs, **TF))
        images, labels = _first(kr.data.load_dataset(source, split, **kwargs, **PY))
        np.testing.assert_array_equal(images, tf_images)  # at their own size: exact
        np.testing.assert_array_equal(labels, tf_labels)
    # Resized (antialiased bilinear): TensorFlow's resize on the TensorFlow backend; JAX's
    # differs from it by float rounding (measured below 5e-4 of a pixel level).
    images = np.random.default_rng(1).uniform(0, 255, (20, 40, 30, 3))
    arrays = (images, np.arange(20) % 3)
    for size in (16, 64):
        expected = _first(kr.data.load_dataset(arrays, split, image_size=size, **kwargs, **TF))
        actual = _first(kr.data.load_dataset(arrays, split, image_size=size, **kwargs, **PY))
        atol = 0.0 if backend == "tensorflow" else 1e-3
        np.testing.assert_allclose(actual[0], expected[0], atol=atol, rtol=0)


def test_folder_batches_equal_the_tf_data_path_within_the_decoders_tolerance(tmp_path):
    root = _write_folder(tmp_path / "pets")
    kwargs = {"image_size": 16, "batch_size": 12, "shuffle": False}
    tf_ds = kr.data.load_dataset(root, "train", **kwargs, **TF)
    loader = kr.data.load_dataset(root, "train", **kwargs, **PY)
    assert loader.class_names == tf_ds.class_names == ["cat", "dog", "eel"]
    assert loader.provenance == tf_ds.provenance and len(loader) == int(tf_ds.cardinality())
    (tf_images, tf_labels), (images, labels) = _first(tf_ds), _first(loader)
    np.testing.assert_array_equal(labels, tf_labels)
    difference = np.abs(images - tf_images).reshape(12, -1)
    png = np.arange(12) % 4 % 2 == 0  # files 0.png, 1.jpg, 2.png, 3.jpg in every class
    assert difference[png].max() <= 1e-3  # PNG: the same pixels, the same resize
    assert difference[~png].max() <= JPEG_MAX and difference[~png].mean() <= JPEG_MEAN


def _one_file_folder(root, image, name):
    """A folder of two classes holding the same file `name` (the least a folder may hold)."""
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        image.save(root / label / name)
    return root


@pytest.mark.parametrize("kind", ["bmp", "gif"])
def test_gif_and_bmp_files_are_read_as_their_pixels_by_both_paths(tmp_path, kind):
    """The formats of `keras.utils.image_dataset_from_directory` besides JPEG and PNG: the
    tf.data path and the loader read every file, as Pillow's pixels (a GIF's first frame, in
    its palette's colours, grey as RGB); a cut-off file is found by `strict=True`."""
    root = _write_folder(tmp_path / "pets", kinds=(kind,))
    for options in (TF, PY):
        ds = kr.data.load_dataset(root, "train", image_size=8, batch_size=12, **options)
        assert ds.class_names == ["cat", "dog", "eel"] and len(_first(ds)[1]) == 12
    rng = np.random.default_rng(0)
    colour = Image.fromarray(rng.integers(0, 256, (14, 14, 3), dtype=np.uint8))
    grey = Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8))
    palette = grey.quantize(7)  # 8 bits a pixel in a BMP file, 3 in a GIF
    for image in (colour, grey, palette) if kind == "gif" else (colour, grey):
        one = _one_file_folder(tmp_path / f"one_{image.mode}", image, f"0.{kind}")
        with Image.open(one / "a" / f"0.{kind}") as saved:
            expected = np.asarray(saved.convert("RGB"), dtype="float32")
        size = {"image_size": expected.shape[0], "batch_size": 1, "shuffle": False}
        for options in (TF, PY):
            ds = kr.data.load_dataset(one, "train", **size, **options)
            np.testing.assert_array_equal(_first(ds)[0][0], expected)
    cut = root / "dog" / f"1.{kind}"
    cut.write_bytes(cut.read_bytes()[:-8])
    with pytest.raises(ValueError, match=f"{cut.name}.*truncated.*strict=True"):
        kr.data.load_dataset(root, "train", image_size=8, strict=True)


@pytest.mark.parametrize("mode, bits", [("P", 8), ("1", 1)])
def test_bmp_files_tensorflow_misreads_are_refused_by_name(tmp_path, mode, bits):
    """TensorFlow reads a palette BMP's indices as grey levels (and refuses 1-bit files without
    naming them): such files are skipped with a warning, refused with `strict=True` and by
    `kr.predict`'s reader, never read as wrong pixels."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8))
    image = image.quantize(7) if mode == "P" else image.convert("1")
    root = _write_folder(tmp_path / "pets", kinds=("png",))
    image.save(root / "cat" / "odd.bmp")
    assert (root / "cat" / "odd.bmp").read_bytes()[28] == bits
    reason = f"odd.bmp.*{bits}-bit BMP, whose colours TensorFlow's BMP decoder does not read"
    for options in (TF, PY):
        with pytest.warns(UserWarning, match=reason):
            ds = kr.data.load_dataset(root, "train", image_size=8, batch_size=13, **options)
        assert len(_first(ds)[1]) == 12
    with pytest.raises(ValueError, match=reason):
        kr.data.load_dataset(root, "train", image_size=8, strict=True)
    with pytest.raises(ValueError, match=reason):
        image_files.load_images([root / "cat" / "odd.bmp"], (8, 8))


def test_a_folder_of_one_size_is_decoded_once_and_needs_no_image_size(tmp_path, monkeypatch):
    root, rng = tmp_path / "pets", np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(5):
            pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    read, read_image = [], loaders.read_image
    counting = lambda path: read.append(path) or read_image(path)  # noqa: E731
    monkeypatch.setattr(loaders, "read_image", counting)
    options = {"batch_size": 4, "seed": 1, "augment": "resnet_cifar", **PY}
    train = kr.data.load_dataset(root, "train", **options)
    assert sorted(read) == sorted(str(p) for p in root.rglob("*.png")) and train.paths is None
    run = [train[i] for i in range(len(train))]
    train.on_epoch_end()
    run += [train[i] for i in range(len(train))]
    assert len(read) == 10 and run[0][0].shape == (4, 12, 12, 3)  # nothing read again
    # The same batches as decoding the files every epoch (cache=False).
    streamed = kr.data.load_dataset(root, "train", cache=False, image_size=12, **options)
    assert streamed.paths is not None and streamed.provenance == train.provenance
    again = [streamed[i] for i in range(len(streamed))]
    streamed.on_epoch_end()
    again += [streamed[i] for i in range(len(streamed))]
    for (images, labels), (expected, expected_labels) in zip(run, again, strict=True):
        np.testing.assert_array_equal(labels, expected_labels)
        np.testing.assert_allclose(images, expected, atol=1e-4)
    # Evaluation: the PNG pixels, as the tf.data path reads them.
    test = kr.data.load_dataset(root, "test", validation_split=0.4, batch_size=4, **PY)
    tf_test = kr.data.load_dataset(root, "test", validation_split=0.4, batch_size=4, **TF)
    assert test.paths is None and test.provenance == tf_test.provenance
    np.testing.assert_array_equal(_first(test)[0], _first(tf_test)[0])
    # A file that fails to decode is replaced by the next one, as the files are read.
    broken = root / "dog" / "1.png"
    broken.write_bytes(broken.read_bytes()[:60])  # the header survives, the pixels do not
    with pytest.warns(UserWarning, match="1.png.*cannot be decoded"):
        kept = kr.data.load_dataset(root, "train", **options)
    assert kept.paths is None and len(kept.labels) == 10
    with pytest.raises(ValueError, match="1.png.*truncated.*strict=True"):
        kr.data.load_dataset(root, "train", strict=True, **options)


def test_unaugmented_images_have_the_tf_data_mean(tmp_path):
    root = _write_folder(tmp_path / "pets", kinds=("png",))
    kwargs = {"image_size": 16, "batch_size": 5, "augment": "resnet_cifar"}
    tf_ds = kr.data.load_dataset(root, "train", **kwargs, **TF)
    loader = kr.data.load_dataset(root, "train", **kwargs, **PY)
    expected = np.concatenate([np.asarray(x) for x, _ in tf_ds.unaugmented]).mean(0)
    plain = loader.unaugmented
    assert len(plain) == 3 and plain.shuffle is False
    actual = np.concatenate([plain[i][0] for i in range(len(plain))]).mean(0)
    np.testing.assert_allclose(actual, expected, atol=1e-3)


# --- augmentation, mixing, training -------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(kr.data.AUGMENTATION_PRESETS))
def test_augmentation_presets_run_image_by_image_and_keep_the_shape(preset):
    images = np.random.default_rng(0).uniform(0, 255, (3, 40, 36, 3))
    loader = ImageLoader(
        images, np.arange(3), image_size=32, batch_size=3, augment=preset, mixing=True, seed=1
    )
    augmented, labels = loader[0]
    assert augmented.shape == (3, 32, 32, 3) and augmented.dtype == np.float32
    assert np.isfinite(augmented).all() and augmented.min() >= -1 and augmented.max() <= 256
    if preset in kr.data.augmentation.MIXING:  # the presets' MixUp / CutMix: soft labels
        assert labels.shape == (3, 3) and np.allclose(labels.sum(1), 1.0, atol=1e-5)
    else:
        assert labels.tolist() == [0, 1, 2]


def test_augmentation_draws_for_each_image_and_repeats_with_the_seed():
    images = np.broadcast_to(
        np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)), (4, 32, 32, 3)
    )
    batches = [
        ImageLoader(images, np.arange(4), batch_size=4, augment="inception_crop", seed=2)[0][0]
        for _ in range(2)
    ]
    np.testing.assert_array_equal(batches[0], batches[1])
    assert len({batch.tobytes() for batch in batches[0]}) == 4  # one crop per image


def test_mixing_gives_soft_labels_on_training_splits_only():
    mixing = kr.data.Mixing(mixup_alpha=0.5, cutmix_alpha=1.0, label_smoothing=0.1)
    train = kr.data.load_dataset("digits", "train", batch_size=16, mixing=mixing, **PY)
    images, labels = train[0]
    assert images.shape == (16, 32, 32, 3) and labels.shape == (16, 10)
    np.testing.assert_allclose(labels.sum(1), 1.0, atol=1e-5)
    assert labels.min() >= 0.01 - 1e-6  # smoothed: 0.1 / 10 at least
    test = kr.data.load_dataset("digits", "test", batch_size=16, mixing=mixing, **PY)
    assert test[0][1].shape == (16,)


def _tiny_model():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="sparse_categorical_crossentropy"
    )
    return model


@pytest.mark.parametrize("workers", [1, 2])
def test_fit_on_the_loader_lowers_the_loss_on_digits(workers):
    train = kr.data.load_dataset(
        "digits", "train", batch_size=64, loader_options={"workers": workers}, **PY
    )
    assert train.workers == workers
    history = _tiny_model().fit(train, epochs=3, verbose=0)
    losses = history.history["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert train.epoch >= 3  # Keras ends an epoch after each pass (and when fit starts)


def test_a_file_that_fails_to_decode_is_replaced_with_a_warning(tmp_path):
    root = _write_folder(tmp_path / "pets", kinds=("png",))
    broken = root / "dog" / "1.png"
    broken.write_bytes(broken.read_bytes()[:120])  # the header survives, the pixels do not
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loader = kr.data.load_dataset(root, "train", image_size=16, batch_size=12, **PY)
        images, labels = loader[0]
    assert images.shape == (12, 16, 16, 3) and len(labels) == 12
    assert any("1.png" in str(w.message) and "cannot be decoded" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match="cannot be decoded"):
        ImageLoader(paths=[broken], labels=[0], image_size=16, batch_size=1, strict=True)[0]


@pytest.mark.filterwarnings("ignore:Image .* cannot be decoded:UserWarning")
@pytest.mark.parametrize("one_size", [False, True], ids=["read_per_batch", "decoded_once"])
def test_a_stand_in_for_a_file_that_fails_to_decode_brings_its_own_label(tmp_path, one_size):
    root = tmp_path / "pets"
    rng = np.random.default_rng(0)
    for name, channel in (("cat", 0), ("dog", 2)):  # red cats, blue dogs, noisy (incompressible)
        (root / name).mkdir(parents=True)
        size = (16, 16) if one_size or name == "cat" else (20, 24)
        pixels = rng.integers(0, 40, (*size, 3))
        pixels[..., channel] += 200
        Image.fromarray(pixels.astype("uint8")).save(root / name / "0.png")
    cat = root / "cat" / "0.png"
    cat.write_bytes(cat.read_bytes()[:60])  # the header survives, the pixels do not
    paths = [root / "cat" / "0.png", root / "dog" / "0.png"]
    images, labels = ImageLoader(paths=paths, labels=[0, 1], image_size=8, batch_size=2)[0]
    assert labels.tolist() == [1, 1]
    np.testing.assert_allclose(images[0], images[1])
    assert images[0, ..., 2].mean() > 200 > 40 > images[0, ..., 0].mean()  # dog's blue
    loader = kr.data.load_dataset(root, "train", image_size=8, batch_size=2, **PY)  # training
    assert sorted(loader[0][1].tolist()) == [1, 1]


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"loader": "grain"}, ["loader='grain'", "'auto'", "'tf.data'", "'py_dataset'"]),
        ({"loader_options": {"threads": 2}, **PY}, ["loader_options", "workers"]),
        ({"loader_options": {"workers": 2}, **TF}, ["loader_options", "loader='py_dataset'"]),
        ({"source": "tfds:cifar10", **PY}, ["loader='py_dataset'", "tfds:cifar10", "tf.data"]),
        (
            {"deterministic": True, "loader_options": {"workers": 2}, **PY},
            ["deterministic=True", "workers=1"],
        ),
        (
            {"batch_size": 33, "loader_options": {"process_count": 2}, **PY},
            ["batch_size=33", "process_count=2"],
        ),
        (
            {"loader_options": {"process_index": 2, "process_count": 2}, **PY},
            ["process_index=2", "process_count=2"],
        ),
        ({"augment": "nope", "split": "test", **PY}, ["augment='nope'"]),
        ({"split": "validation", **PY}, ["split='validation'"]),
    ],
)
def test_bad_loader_arguments(kwargs, words):
    kwargs = {"source": "digits", **kwargs}
    with pytest.raises(ValueError) as info:
        kr.data.load_dataset(**kwargs)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({}, ["images=", "paths="]),
        ({"images": np.zeros((2, 4, 4, 3)), "paths": ["a.png"]}, ["images=", "paths="]),
        ({"paths": ["a.png", "b.png"], "labels": [0]}, ["labels", "2 paths"]),
        ({"paths": ["a.png"], "labels": [0]}, ["image_size=None"]),
        ({"images": np.zeros((2, 4, 6, 3)), "labels": [0, 1]}, ["image_size=None", "4x6"]),
        (
            {"images": np.zeros((2, 4, 4, 3)), "labels": [0, 1], "drop_remainder": True},
            ["no batch"],
        ),
    ],
)
def test_bad_image_loader_arguments(kwargs, words):
    with pytest.raises(ValueError) as info:
        ImageLoader(**{"batch_size": 4, **kwargs})
    for word in words:
        assert word in str(info.value)
