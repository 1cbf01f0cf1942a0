"""Training epochs made from their place in the run, so that a resumed run starts at once.

An epoch of a training split read from arrays, an image folder or a tfds dataset read into
memory (a `sources.Source` that can `fetch` any of its examples) follows from a key alone: its
order, a permutation of the share drawn by `tf.random.experimental.index_shuffle`, and the
seed of every example's augmentation and of every batch's MixUp/CutMix, each folded from the
key and the place in the epoch.
`train()` keys epoch e of a run by (seed, e) (`Epochs.run`): a run resumed at step s makes
batch s first, the batches before it neither read, decoded nor augmented (a `Dataset.skip`
over a reshuffling pipeline makes them all), and gets the batches an uninterrupted run got
there. Iterated as a dataset (`Epochs.dataset`), each pass draws a key of its own: a new
order every epoch, as a reshuffling `shuffle` gives. No shuffle buffer is involved, so the
order does not depend on how fast threads or workers fill one.
"""

from collections.abc import Callable
from dataclasses import dataclass

from keras_resvit.base.lazy import tf
from keras_resvit.data.element_seeds import map_seeded
from keras_resvit.data.tf_random import random_numbers

# What each key is folded with: the run's epochs, a dataset's passes, an epoch's order, its
# examples' seeds, its batches' seeds.
RUN, PASS, ORDER, EXAMPLE, BATCH = range(5)
ENDLESS = 2**62  # the end of `Dataset.range`s that do not end


def _fold(key, value):
    return tf.random.experimental.stateless_fold_in(key, tf.cast(value, "int32"))


@dataclass(frozen=True)
class Epochs:
    """The epochs of one process's share of a training split, batched and transformed."""

    read: object  # a `sources.Source` with `count` and `fetch`
    transform: Callable  # (pixels, label) -> (image, label); random layers draw from the
    # example's seed
    batch_size: int  # this process's examples per batch
    seed: int  # this process's
    shuffle: bool = True
    repeats: int = 1  # each example of the first ceil(N / repeats) this many times in a row
    mix: Callable | None = None  # (images, labels) -> (images, soft labels), drawing from
    # the batch's seed
    drop_remainder: bool = False
    parallel_calls: int | None = None

    def __len__(self):
        """Batches per epoch."""
        whole, rest = divmod(self.read.count, self.batch_size)
        return whole + (1 if rest and not self.drop_remainder else 0)

    def _places(self, key, start):
        """(index into the share, example seed) of the epoch's places from `start` on."""
        count, repeats = self.read.count, self.repeats
        order, examples = _fold(key, ORDER), _fold(key, EXAMPLE)

        def place(position):
            index = position // repeats
            if self.shuffle:
                index = tf.random.experimental.index_shuffle(index, order, count - 1)
            return index, _fold(examples, position)

        return tf.data.Dataset.range(start, count).map(place)

    def batches(self, key, start=0):
        """An epoch's batches from batch `start` (an int or a scalar tensor) on, made from
        `key` (an int32 [2] tensor)."""
        start = tf.cast(start, "int64")
        examples = self.read.fetch(self._places(key, start * self.batch_size))
        ds = map_seeded(examples, self.transform, self.parallel_calls)
        ds = ds.batch(self.batch_size, drop_remainder=self.drop_remainder)
        if self.mix is None:
            return ds
        seeds = tf.data.Dataset.range(start, ENDLESS).map(lambda n: _fold(_fold(key, BATCH), n))
        ds = tf.data.Dataset.zip(ds, seeds).map(lambda batch, seed: (*batch, seed))
        return map_seeded(ds, self.mix, self.parallel_calls)

    def dataset(self):
        """The epochs as a dataset: each pass over it one epoch, from a key of its own."""
        passes = random_numbers(self.seed)
        key = tf.constant([self.seed % 2**31, PASS], "int32")
        ds = passes.take(1).flat_map(lambda draw: self.batches(_fold(key, draw % 2**31)))
        return ds.apply(tf.data.experimental.assert_cardinality(len(self)))

    def run(self, step=0, each=None):
        """The run's batches from its `step`-th (counted from 0 over its epochs) on, endless:
        epoch e made from the key (seed, e). `each`: a function applied to each epoch's
        batches."""
        key = tf.constant([self.seed % 2**31, RUN], "int32")
        first, start = divmod(int(step), len(self))
        each = each or (lambda ds: ds)

        def one(epoch):
            return each(self.batches(_fold(key, epoch), tf.where(epoch == first, start, 0)))

        return tf.data.Dataset.range(first, ENDLESS).flat_map(one)
