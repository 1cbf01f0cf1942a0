"""Random augmentation in `tf.data` with a seed of its own for every example.

A Keras random layer keeps its seed in one variable that each call reads, then advances. In a
parallel `map` two calls can read it at once and draw the same transformation, and the order
of the calls (so which example gets which draw) depends on thread timing. Here each element
of the dataset carries its own seed, drawn in order from a seeded random dataset (a new
sequence every pass over the dataset, the same sequences for a given seed), and every
`keras.random.SeedGenerator` the layers use while that element is transformed hands out seeds
derived from it. The draws then depend only on the example's place in the epoch: a parallel
map gives the batches a serial one does, and a resumed run that skips to a step sees the
transformations an uninterrupted one saw there. The layers run TensorFlow's stateless random
ops inside `tf.data` on every backend, so the same seed gives the same batches under TensorFlow
and JAX. `loaders.ImageLoader` seeds each image of a batch the same way, from the seed, the
epoch and the batch's index (its layers draw with the backend's own random ops).
"""

import contextlib
import threading

import keras
import numpy as np

from keras_resvit.base.backend import in_shape_trace
from keras_resvit.base.lazy import tf
from keras_resvit.base.processes import host_cpu
from keras_resvit.data.tf_random import random_numbers

_active = threading.local()  # the seed of the element being transformed on this thread
_patched = threading.Lock()


def _draw() -> int:
    """The count of draws inside the current `element_seed`, this one included."""
    _active.draws += 1
    return _active.draws


def next_seed():
    """Inside `element_seed` with a tensor seed (in a `tf.data` map): the next seed for a
    stateless random op (an int32 [2] tensor), the element's seed folded with the count of
    draws so far, so each draw has its own."""
    return tf.random.experimental.stateless_fold_in(_active.seed, _draw())


def _next(generator, ordered=True, *, _original=keras.random.SeedGenerator.next):
    """`SeedGenerator.next`: inside `element_seed`, a seed derived from the element's (a
    `tf.data` tensor: `next_seed()`; a pair of ints, eagerly on any backend: the pair with
    the count of draws added); elsewhere, and in a trace made only for shapes (which counts
    no draw), the generator's own."""
    seed = getattr(_active, "seed", None)
    if seed is None or in_shape_trace():
        # An unbuilt layer's first call traces it for its shapes first, on TensorFlow (not on
        # JAX) inside a `tf.data` map: counting those draws would shift every later one.
        return _original(generator, ordered)
    if not isinstance(seed, tuple):
        return next_seed()
    pair = np.array([seed[0], (seed[1] + _draw()) % 2**31])
    return generator.backend.convert_to_tensor(pair, dtype=generator.state.dtype)


def _install():
    with _patched:
        if keras.random.SeedGenerator.next is not _next:
            keras.random.SeedGenerator.next = _next


@contextlib.contextmanager
def element_seed(seed):
    """Within: every `SeedGenerator` draw on this thread derives from `seed`, each a
    different derivation. `seed`: an int32 [2] tensor, when tracing a `tf.data` map
    function; or a pair of ints below 2**31, for eager calls on any backend."""
    _install()
    if getattr(_active, "seed", None) is not None:
        raise RuntimeError("element_seed contexts do not nest.")
    _active.seed, _active.draws = seed, 0
    try:
        yield
    finally:
        _active.seed = None


def build(layer, image_size: int):
    """Builds `layer` (a random image layer) by a call outside any `element_seed`: an eager
    first call also traces the layers symbolically, which draws, and a seeded first call would
    count those draws (a `tf.data` trace does not)."""
    with host_cpu():
        layer(np.zeros((image_size, image_size, 3), "float32"))


def with_seeds(ds, seed: int, stream: int = 0):
    """`ds` (of tuples) with each element's seed, an int32 [2] tensor, appended: one in order
    from `tf_random.random_numbers(seed)`, a new sequence on every pass (as a reshuffling
    `shuffle` draws a new order), folded with `stream` (maps that share `seed` give different
    streams different seeds)."""
    seeds = random_numbers(seed).batch(2)
    fold = tf.random.experimental.stateless_fold_in
    seeds = seeds.map(lambda pair: fold(tf.cast(pair % (2**31 - 1), "int32"), stream))
    return tf.data.Dataset.zip(ds, seeds).map(lambda element, s: (*element, s))


def map_seeded(ds, function, parallel_calls):
    """`ds` (of tuples whose last part is the element's seed, an int32 [2] tensor) mapped by
    `function` of the other parts, every random Keras layer `function` calls (and
    `next_seed`) drawing from that seed: the result does not depend on `parallel_calls`."""

    def call(*element):
        with element_seed(element[-1]):
            return function(*element[:-1])

    return ds.map(call, num_parallel_calls=parallel_calls)


def seeded_map(ds, function, seed: int, parallel_calls, stream: int = 0):
    """`ds.map(function)` where every random Keras layer `function` calls (and `next_seed`)
    draws from the element's own seed (`with_seeds`), so the result does not depend on
    `parallel_calls`."""
    return map_seeded(with_seeds(ds, seed, stream), function, parallel_calls)
