"""`fitting._fit_from` resumed inside an epoch, alone or with a `feed` (TensorFlow workers'
shares fed through `distribute_datasets_from_function`): the rest of the epoch, then the
following epochs from a second pipeline, are the batches an uninterrupted run trains on."""

import contextlib

import keras
import numpy as np
import pytest

from keras_resvit.training import fitting


class _Keep(keras.callbacks.Callback):
    """Keeps the weights after step `at`."""

    def __init__(self, at=None):
        super().__init__()
        self.at, self.steps, self.kept = at, 0, None

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps == self.at:
            self.kept = [keras.ops.convert_to_numpy(w) for w in self.model.weights]


class _Callbacks(keras.callbacks.CallbackList):
    """What `_fit_from` needs of a `RunCallbacks` (a `CallbackList`); keeps the weights after
    step `at`."""

    more = False

    def __init__(self, model, at=None):
        self.keep = _Keep(at)
        super().__init__([self.keep], add_history=True, model=model)

    @property
    def kept(self):
        return self.keep.kept


@pytest.mark.parametrize("fed", [False, True])
def test_a_resumed_run_replays_the_shuffled_epochs(backend, fed):
    if fed and backend != "tensorflow":
        pytest.skip("feeds are TensorFlow workers' (tf.distribute)")
    feed = strategy = None
    if fed:
        import tensorflow as tf

        strategy = tf.distribute.MultiWorkerMirroredStrategy()  # one worker, no cluster

        def feed(ds):
            return strategy.distribute_datasets_from_function(lambda context: ds.rebatch(2))

    def data():
        import tensorflow as tf

        ds = tf.data.Dataset.range(8).shuffle(8, seed=0, reshuffle_each_iteration=True)
        features = lambda i: tf.cast(tf.stack([i, i * i % 5]), "float32")  # noqa: E731
        ds = ds.map(lambda i: (features(i), tf.cast(i % 2, "int32"))).batch(2)
        next(iter(ds))  # `kr.train` peeks at the first batch before it fits
        return ds

    def model(weights=None):
        keras.utils.set_random_seed(1)
        with strategy.scope() if strategy else contextlib.nullcontext():
            net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
            net.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        if weights is not None:
            net.set_weights(weights)
        return net

    uninterrupted = model()
    callbacks = _Callbacks(uninterrupted, at=6)
    fitting._fit_from(uninterrupted, data().repeat(), 4, 3, 0, callbacks, feed, verbose=0)
    # Resumed after step 6 of 12: the rest of epoch 2, then epoch 3 from a second pipeline.
    resumed = model(callbacks.kept)
    fitting._fit_from(resumed, data().repeat(), 4, 3, 6, _Callbacks(resumed), feed, verbose=0)
    for got, want in zip(resumed.weights, uninterrupted.weights, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(want), atol=1e-6
        )
    assert not np.allclose(callbacks.kept[0], keras.ops.convert_to_numpy(uninterrupted.weights[0]))


@pytest.mark.parametrize("strategy", [None, "mirrored", "multi_worker"])
def test_fit_draws_no_batch_before_the_run(backend, strategy):
    # Keras builds a model (under JAX, and under a strategy) from a batch of an iterator it
    # throws away, whose prefetching then takes the shuffle orders of a repeating dataset's
    # passes at a moment that depends on timing. The run's batches must be the only ones drawn.
    if strategy is not None and backend != "tensorflow":
        pytest.skip("tf.distribute strategies are TensorFlow's")
    import tensorflow as tf

    drawn = []

    def count(i):
        drawn.append(int(i))
        return i

    ds = tf.data.Dataset.range(4).map(lambda i: tf.reshape(tf.py_function(count, [i], "int64"), []))
    ds = ds.map(lambda i: (tf.cast(tf.stack([i, i]), "float32"), i % 2)).batch(2)
    if strategy == "mirrored":
        strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    elif strategy == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope() if strategy else contextlib.nullcontext():
        net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        net.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    fitting._fit_from(net, ds, 2, 1, 0, _Callbacks(net), verbose=0)
    assert sorted(drawn) == [0, 1, 2, 3]
