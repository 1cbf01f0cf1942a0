"""The package's corrections to Keras itself, each applied once and only where it is needed.

- `recover_from_errors_in_fit`: a model stays usable after `fit`, `evaluate` or `predict`
  raises (applied by `keras_resvit` as soon as it loads Keras).
- `patch_keras_fit`: `fit` without drawing from the data before the run, and under
  TensorFlow's `MultiWorkerMirroredStrategy`.
- `patch_tf2onnx`: Keras' own fix of tf2onnx's NumPy 1 aliases, for the ONNX export.

Each touches Keras' private `keras.src` modules, pinned in requirements/constraints.txt, and
is tested against the failure it corrects.
"""

import functools

from keras_resvit.base.lazy import keras

METHODS = ("fit", "evaluate", "predict")

# Per model (by id), the stack of its running `fit`/`evaluate`/`predict` calls, each a dict of
# the variables Keras' JAX trainer detached during that call: id -> (variable, value).
_detached = {}


def recover_from_errors_in_fit() -> None:
    """Keeps a model usable, with its weights, when `fit`, `evaluate` or `predict` raises: a
    layer refusing an input (as this package's layers refuse a bad image size), a bad batch,
    Ctrl-C in a notebook. The error propagates unchanged; runs that do not raise are untouched.

    JAX: Keras' trainer (3.15) detaches every variable's value from the model while its
    compiled steps run, and attaches the last step's values when the loop ends. When a step
    raised before the first one finished, nothing was attached back: the trained weights were
    gone and the next call failed with "'NoneType' object is not callable" (`evaluate` and
    `predict` also left a later step's values detached). Now an error first attaches the
    values of the steps that finished, then gives every variable still without a value the
    one it had before it was detached.

    TensorFlow: when the first trace of `fit`'s step raised, the next `fit` failed with
    "Creating variables on a non-first call to a function decorated with tf.function" (the
    optimizer builds its variables in that first trace). Now an error drops the compiled
    functions, and the next call traces them anew.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        from keras.src.backend.jax import trainer

        _keep_jax_variables(trainer.JAXTrainer)
    elif backend == "tensorflow":
        from keras.src.backend.tensorflow import trainer

        _retrace_after_errors(trainer.TensorFlowTrainer)


def _retrace_after_errors(cls):
    if getattr(cls, "_keras_resvit_retraces", False):
        return

    def wrap(method):
        @functools.wraps(method)
        def run(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except BaseException:
                self.train_function = self.test_function = self.predict_function = None
                raise

        return run

    for name in METHODS:
        setattr(cls, name, wrap(getattr(cls, name)))
    cls._keras_resvit_retraces = True


def _keep_jax_variables(cls):
    if getattr(cls, "_keras_resvit_keeps_variables", False):
        return
    detach = cls._purge_model_variables

    @functools.wraps(detach)
    def detach_and_record(self, *args, **kwargs):
        calls = _detached.get(id(self))
        if calls:
            for variable in _all_variables(self):
                if variable._value is not None:  # the latest value, as a callback may sync
                    calls[-1][id(variable)] = (variable, variable._value)
        return detach(self, *args, **kwargs)

    cls._purge_model_variables = detach_and_record
    for name in METHODS:
        setattr(cls, name, _keeping_variables(getattr(cls, name)))
    cls._keras_resvit_keeps_variables = True


def _all_variables(model):
    variables = [*model.trainable_variables, *model.non_trainable_variables]
    variables += model.metrics_variables
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        variables += optimizer.variables
    return variables


def _keeping_variables(method):
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        calls = _detached.setdefault(id(self), [])
        calls.append({})
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            _attach(self, calls[-1])
            raise
        finally:
            calls.pop()
            if not calls:
                del _detached[id(self)]

    return run


def _attach(model, kept):
    if getattr(model, "_jax_state", None) and not model._jax_state_synced:
        model.jax_state_sync()  # the values of the steps that finished
    model._jax_state = None
    model._jax_state_synced = True
    for variable, value in kept.values():
        deleted = getattr(value, "is_deleted", None)  # a buffer a finished step donated
        if variable._value is None and not (deleted and deleted()):
            variable._value = value


def patch_tf2onnx() -> None:
    """Applies Keras' patch for tf2onnx's NumPy 1 aliases (Keras ships it with its own ONNX
    export; this package converts with tf2onnx directly)."""
    from keras.src.export.tf2onnx_lib import patch_tf2onnx as patch

    patch()


def _spec_batch(iterator):
    """Symbolic tensors of one replica's batch of the `tf.data` dataset that `iterator` (a
    Keras epoch iterator) reads, or None for other data and where they are not all tensors
    of known size past the batch axis."""
    from keras.src.trainers.data_adapters.tf_dataset_adapter import TFDatasetAdapter

    dataset = getattr(iterator, "_distributed_dataset", None)  # TensorFlow's
    if dataset is None:
        adapter = getattr(iterator, "data_adapter", None)
        if not isinstance(adapter, TFDatasetAdapter):
            return None
        dataset = adapter.get_tf_dataset()
    import tensorflow as tf

    specs = tf.nest.map_structure(  # a `PerReplicaSpec` holds one spec per replica
        lambda spec: spec._value_specs[0] if hasattr(spec, "_value_specs") else spec,
        dataset.element_spec,
    )
    flat = tf.nest.flatten(specs)
    if not all(
        isinstance(spec, tf.TensorSpec)
        and spec.shape.rank is not None
        and None not in spec.shape[1:]
        for spec in flat
    ):
        return None
    tensors = [keras.KerasTensor(tuple(spec.shape), spec.dtype.name) for spec in flat]
    return tf.nest.pack_sequence_as(specs, tensors)


def patch_keras_fit() -> None:
    """Lets Keras' trainers `fit` without drawing from a `tf.data` dataset before the run,
    and TensorFlow's under `MultiWorkerMirroredStrategy` at all. Applied once by every
    training run (`fitting`) and `processes.initialize`.

    `fit` builds the model's losses and metrics from a first batch (under JAX, and under a
    `tf.distribute` strategy), which it draws from an iterator it then throws away. That
    iterator goes on prefetching in the background, into the next pass over a repeating
    dataset, so a `shuffle` of the data with `reshuffle_each_iteration` hands the orders of
    the run's passes out in an order that depends on timing: a run resumed inside an epoch
    then trained on other batches than the uninterrupted one (tests/training/
    test_fitting.py). The model is built from the dataset's `element_spec` instead, wherever
    that gives every tensor's size past the batch axis.

    Keras 3's trainer (keras-team/keras#20585) also reduces the batch it builds the model
    from, and each step's scalar logs, with `strategy.reduce("MEAN", value, axis=0)`, which
    `MultiWorkerMirroredStrategy` cannot do on a batch's per-replica tensors or on scalars.
    Under that strategy, a model whose data's sizes are unknown is built from this worker's
    first batch, and the logs (already aggregated across replicas by the metrics) are
    averaged whole (tests/training/test_processes.py). Other strategies' logs are reduced by
    Keras' code unchanged.
    """
    from keras.src.trainers import trainer as base

    if getattr(base, "_keras_resvit_fit", False):
        return
    base._keras_resvit_fit = True
    symbolic = base.Trainer._symbolic_build

    def from_specs(self, iterator=None, data_batch=None):
        if iterator is not None and data_batch is None:
            specs = _spec_batch(iterator)
            if specs is not None:
                iterator, data_batch = None, specs
        return symbolic(self, iterator=iterator, data_batch=data_batch)

    base.Trainer._symbolic_build = from_specs
    if keras.backend.backend() == "tensorflow":
        _patch_tensorflow_trainer()


def _patch_tensorflow_trainer():
    """`patch_keras_fit`'s part for `TensorFlowTrainer`, which draws its first batch itself."""
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    reduce_per_replica = trainer.reduce_per_replica
    symbolic_build = trainer.TensorFlowTrainer._maybe_symbolic_build

    def local(strategy, value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def reduce_logs(values, strategy, reduction="auto"):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return tf.nest.map_structure(
                lambda v: (
                    strategy.reduce("MEAN", v, axis=None)
                    if trainer._is_per_replica_instance(v)
                    else v
                ),
                values,
            )
        return reduce_per_replica(values, strategy, reduction)

    def build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is not None and strategy is not None:
            specs = _spec_batch(iterator)
            if specs is not None:
                iterator, data_batch = None, specs
            elif trainer._collective_all_reduce_multi_worker(strategy):
                for _, _, batches in iterator:
                    data_batch = tf.nest.map_structure(lambda v: local(strategy, v), next(batches))
                    break
                iterator = None
        return symbolic_build(self, iterator=iterator, data_batch=data_batch)

    trainer.reduce_per_replica = reduce_logs
    trainer.TensorFlowTrainer._maybe_symbolic_build = build
