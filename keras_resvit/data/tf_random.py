"""`tf.data`'s seeded random datasets, made from their seed alone.

`Dataset.random(seed)` and `Dataset.shuffle(seed=...)` pair the seed with TensorFlow's global
seed, which `keras.utils.set_random_seed` (so `kr.train`) and `tf.random.set_seed` set: the
same `load_dataset(..., seed=3)` gave other orders and augmentations once a notebook had called
either. These build the same operations with the seed pair TensorFlow uses when no global seed
is set, whatever is set: a seed gives one sequence in every process, on every backend. Each
pass over them draws anew, as `rerandomize_each_iteration` / `reshuffle_each_iteration` do.
"""

from keras_resvit.base.lazy import tf

# TensorFlow's graph-level seed where none is set (`random_seed.DEFAULT_GRAPH_SEED`), and the
# bound it reduces an operation's seed below (`random_seed._truncate_seed`).
_GRAPH_SEED, _BOUND = 87654321, 2**31 - 1


def _seeds(seed: int):
    return {
        "seed": tf.constant(_GRAPH_SEED, "int64"),
        "seed2": tf.constant(seed % _BOUND, "int64"),
        "seed_generator": tf.raw_ops.DummySeedGenerator(),
    }


def _structure(spec):
    specs = tf.nest.flatten(spec)
    return {"output_types": [s.dtype for s in specs], "output_shapes": [s.shape for s in specs]}


def random_numbers(seed: int):
    """`tf.data.Dataset.random(seed, rerandomize_each_iteration=True)` (endless int64s in
    [0, 2**32)), whatever TensorFlow's global seed."""
    spec = tf.TensorSpec([], "int64")
    variant = tf.raw_ops.RandomDatasetV2(
        **_seeds(seed), **_structure(spec), rerandomize_each_iteration=True
    )
    return tf.data.experimental.from_variant(variant, spec)


def shuffled(ds, buffer_size: int, seed: int):
    """`ds.shuffle(buffer_size, seed, reshuffle_each_iteration=True)`, whatever TensorFlow's
    global seed."""
    variant = tf.raw_ops.ShuffleDatasetV3(
        input_dataset=tf.data.experimental.to_variant(ds),
        buffer_size=tf.constant(buffer_size, "int64"),
        **_seeds(seed),
        **_structure(ds.element_spec),
        reshuffle_each_iteration=True,
    )
    return tf.data.experimental.from_variant(variant, ds.element_spec)
