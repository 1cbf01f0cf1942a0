"""Each example's random augmentation comes from its own seed: parallel maps draw what serial
ones draw, a seed repeats its batches, each pass draws anew, and a stream skipped to a step
draws there what an uninterrupted one did."""

import ast

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_resvit as kr
from keras_resvit.data.element_seeds import element_seed, next_seed, seeded_map
from tests.conftest import on_other_backend, random_images

IMAGES, LABELS = random_images(48, 24, 24), np.arange(48) % 4


def _batches(ds, count=None):
    ds = ds if count is None else ds.take(count)
    return [(np.asarray(x), np.asarray(y)) for x, y in ds]


def _load(augment="deit", **kwargs):
    options = dict(batch_size=16, augment=augment, seed=3, shuffle=True) | kwargs
    return kr.data.load_dataset((IMAGES, LABELS), "train", **options)


def _assert_same(a, b):
    assert len(a) == len(b)
    for (x1, y1), (x2, y2) in zip(a, b, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


def _differ(a, b):
    return any(not np.array_equal(x1, x2) for (x1, _), (x2, _) in zip(a, b, strict=True))


@pytest.mark.parametrize("augment", ["deit", "resnet_cifar"])
def test_parallel_augmentation_draws_what_a_serial_one_does(augment):
    """`deit` also mixes batches (MixUp or CutMix, chosen at random per batch)."""
    parallel = _batches(_load(augment))
    _assert_same(parallel, _batches(_load(augment, deterministic=True)))
    _assert_same(parallel, _batches(_load(augment)))  # the seed repeats it
    assert _differ(parallel, _batches(_load(augment, seed=4)))


def test_each_pass_draws_anew_and_a_skipped_stream_replays_the_draws():
    """A resumed run skips to its step on a new pipeline: the batches there must be those an
    uninterrupted run saw, with the same crops, flips and mixes."""
    ds = _load("resnet_cifar", shuffle=False)
    first, second = _batches(ds), _batches(ds)
    assert _differ(first, second)  # the same examples, drawn anew
    uninterrupted = _batches(_load("resnet_cifar").repeat(), 7)
    _assert_same(uninterrupted[4:], _batches(_load("resnet_cifar").repeat().skip(4), 3))


def test_element_seed_governs_keras_layers_only_inside():
    layer = keras.layers.Pipeline(
        [keras.layers.RandomFlip("horizontal"), keras.layers.RandomTranslation(0.2, 0.2)]
    )
    images = tf.constant(random_images(8, 16, 16))

    @tf.function
    def draw(seed):
        with element_seed(seed):
            return layer(images), next_seed()

    (a, seed_a), (b, seed_b) = draw(tf.constant([1, 2])), draw(tf.constant([1, 2]))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(seed_a, seed_b)
    c, _ = draw(tf.constant([1, 3]))
    assert not np.array_equal(a, c)
    # Outside the context the layer's own generator moves on: two calls differ.
    flip = keras.layers.RandomFlip("horizontal", seed=0)
    outs = [keras.ops.convert_to_numpy(flip(images)) for _ in range(4)]
    assert any(not np.array_equal(outs[0], out) for out in outs[1:])
    seed = tf.constant([1, 2])
    with pytest.raises(RuntimeError, match="do not nest"), element_seed(seed), element_seed(seed):
        pass


def test_seeded_map_gives_streams_sharing_a_seed_different_draws():
    ds = tf.data.Dataset.range(64).map(lambda i: (tf.cast(i, "float32"),))
    draw = lambda x: x + tf.random.stateless_uniform((), seed=next_seed())  # noqa: E731
    a = np.array(list(seeded_map(ds, draw, 0, tf.data.AUTOTUNE).as_numpy_iterator()))
    b = np.array(list(seeded_map(ds, draw, 0, None, stream=1).as_numpy_iterator()))
    a_serial = np.array(list(seeded_map(ds, draw, 0, None).as_numpy_iterator()))
    np.testing.assert_array_equal(a, a_serial)
    assert not np.allclose(a, b)
    fractions = a - np.arange(64)
    assert len(np.unique(fractions)) == 64 and 0.3 < fractions.mean() < 0.7


def test_image_loader_batches_do_not_depend_on_the_order_they_are_asked_for(backend):
    """`keras.utils.PyDataset` workers ask for batches from several threads, in any order; a
    resumed run asks from its step on."""

    def loader(**kwargs):
        options = dict(batch_size=16, augment="resnet_cifar", seed=3, loader="py_dataset")
        return kr.data.load_dataset((IMAGES, LABELS), "train", **(options | kwargs))

    first = loader()
    in_order = [first[i] for i in range(3)]
    backwards = loader()
    for i in (2, 1, 0):
        x, y = backwards[i]
        np.testing.assert_array_equal(x, in_order[i][0])
        np.testing.assert_array_equal(y, in_order[i][1])
    assert not np.array_equal(loader(seed=4)[0][0], in_order[0][0])
    first.on_epoch_end()  # each epoch draws anew
    assert not np.array_equal(first[0][0], in_order[0][0])


def test_a_layers_first_call_in_a_map_draws_what_later_calls_do():
    """An unbuilt layer's first call traces it for its shapes (on TensorFlow inside a
    `tf.data` map): those draws are not counted, so a new layer augments as a used one."""

    def pipeline():
        return kr.data.get_augmentation("resnet_cifar", 24, seed=5)[0]

    used = pipeline()
    used(np.zeros((24, 24, 3), "float32"))
    ds = tf.data.Dataset.from_tensor_slices((IMAGES[:8],))
    new, old = (np.stack(list(seeded_map(ds, layer, 3, None))) for layer in (pipeline(), used))
    np.testing.assert_array_equal(new, old)


def test_tf_data_batches_are_the_same_under_the_other_backend():
    """A run moved to the other backend (resumed there) trains on the same augmented and
    mixed batches: the layers draw TensorFlow's stateless ops from the same seeds."""
    script = (
        "from tests.data import test_element_seeds as t\n"
        "x = [b[0] for a in ('deit', 'resnet_cifar') for b in t._batches(t._load(a), 2)]\n"
        "print(repr([float(v) for b in x for v in b.reshape(-1)[::97]]))\n"
    )
    there = ast.literal_eval(on_other_backend(script))
    here = [b[0] for a in ("deit", "resnet_cifar") for b in _batches(_load(a), 2)]
    np.testing.assert_array_equal(
        np.array(there), np.concatenate([b.reshape(-1)[::97] for b in here])
    )


def test_batches_do_not_depend_on_tensorflows_global_seed(tmp_path):
    """`keras.utils.set_random_seed` (which `kr.train` calls) sets TensorFlow's global seed,
    which TensorFlow's seeded datasets (`random`, `shuffle`) pair with their own: `seed=`
    alone makes the order and the draws, from arrays, a folder or tensorflow-datasets."""
    root, rng = tmp_path / "folder", np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(8):
            pixels = rng.integers(0, 256, (12 + i, 14, 3), dtype=np.uint8)
            (root / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    options = dict(image_size=12, batch_size=4, seed=2, augment="resnet_cifar")

    def batches(global_seed, source, **read):
        keras.utils.set_random_seed(global_seed)
        ds = kr.data.load_dataset(source, "train", **(options | read))
        return _batches(ds.repeat(), 6)

    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=16):
        for source, read in [
            ((IMAGES, LABELS), {}),
            (str(root), {"cache": False}),
            ("tfds:cifar10", {"cache": False}),
        ]:
            first = batches(0, source, **read)
            _assert_same(first, batches(123, source, **read))
            assert _differ(first, batches(0, source, **{**read, "seed": 5}))


def test_a_streamed_tfds_split_shuffles_its_files_in_an_order_drawn_from_the_seed(monkeypatch):
    """tensorflow-datasets draws a new file order every run unless given a seed."""
    tfds = pytest.importorskip("tensorflow_datasets")
    seeds, load = [], tfds.load

    def spy(*args, **kwargs):
        if kwargs.get("shuffle_files"):
            seeds.append(kwargs["read_config"].shuffle_seed)
        return load(*args, **kwargs)

    monkeypatch.setattr(tfds, "load", spy)
    with tfds.testing.mock_data(num_examples=16):
        for seed in (3, 4):
            kr.data.load_dataset("tfds:cifar10", "train", cache=False, seed=seed, batch_size=4)
    assert seeds == [3, 4]
