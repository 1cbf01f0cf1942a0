"""Each example's random augmentation comes from its own seed: parallel maps draw what serial
ones draw, a seed repeats its batches, each pass draws anew, and a stream skipped to a step
draws there what an uninterrupted one did."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_resvit as kr
from keras_resvit.data.element_seeds import element_seed, next_seed, seeded_map
from tests.conftest import random_images

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
