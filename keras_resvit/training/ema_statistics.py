"""Moving averages of the BatchNormalization statistics beside an optimizer's moving average of
the weights (`use_ema`).

Keras' optimizer averages the trainable weights only, so a model evaluated with averaged
weights would normalize with the statistics of the trained weights, which their average lags
by about 1 / (1 - momentum) steps (10,000 at 0.9999). timm's `ModelEmaV3` and TensorFlow
Model Garden's `ExponentialMovingAverage` average the statistics too. `average_statistics`
gives a compiled model's optimizer such averages, updated after every step with the weights'
momentum. Until the optimizer's first update (a loss-scaled step that it skips included) the
average is the value, as Keras starts the weights' average there; where Keras sets the
weights to their average (`ema_overwrite_frequency`), the statistics become theirs. They are
optimizer variables that only a resume state saves (`run_state`), and are read wherever the
averaged weights are: at validation (`SwapEMAWeights`), in the saved models, at the end of
training.
"""

import contextlib

import keras

from keras_resvit.base.backend import backend
from keras_resvit.base.lazy import tf


def _inner(optimizer):
    return getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's


def moving_statistics(model) -> list:
    """The moving statistics (non-trainable float variables) of `model`'s BatchNormalization
    layers, nested models' included."""
    found = []
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.built:
            found += [v for v in layer.non_trainable_variables if "float" in str(v.dtype)]
    return found


def statistic_pairs(model) -> list:
    """The (statistic, average) pairs `average_statistics` gave `model`'s optimizer, or []."""
    optimizer = getattr(model, "optimizer", None)
    return list(getattr(optimizer, "_statistic_pairs", []))


def average_statistics(model):
    """Gives the optimizer of the compiled `model`, where it averages the weights (`use_ema`),
    averages of `model`'s BatchNormalization statistics; does nothing otherwise (no average,
    no BatchNormalization) or when it has them already.

    Call it after `compile` and before the optimizer is built (by `fit`, or by loading a
    resume state), so that the optimizer's variables come in the same order in every run.
    """
    optimizer = model.optimizer
    inner = _inner(optimizer)
    statistics = moving_statistics(model)
    if not getattr(inner, "use_ema", False) or not statistics or statistic_pairs(model):
        return
    pairs = [(statistic, _average_of(inner, statistic)) for statistic in statistics]
    # Not through Keras' attribute tracking, which would make the statistics optimizer variables.
    object.__setattr__(optimizer, "_statistic_pairs", pairs)
    _saved_in_run_states_only(optimizer, pairs)
    model.train_step = _averaging_train_step(model, pairs)
    finalize = optimizer.finalize_variable_values

    def finalize_variable_values(var_list):
        finalize(var_list)
        for statistic, average in pairs:
            # A copy: under JAX two variables must not share one array (`fit` donates both).
            statistic.assign(keras.ops.convert_to_numpy(average))

    optimizer.finalize_variable_values = finalize_variable_values


@contextlib.contextmanager
def run_state(model):
    """Inside, `model.save_weights` writes the averages of the statistics too: a resume
    state. Other files (`.keras`, weights) leave them out, so that they load into the
    optimizer their config builds (Keras' own, which has none)."""
    optimizer = getattr(model, "optimizer", None)
    if not statistic_pairs(model):
        yield
        return
    object.__setattr__(optimizer, "_in_run_state", True)
    try:
        yield
    finally:
        object.__setattr__(optimizer, "_in_run_state", False)


def _saved_in_run_states_only(optimizer, pairs):
    """Makes `optimizer` (and its inner optimizer) save the averages only inside `run_state`,
    and load a state with or without them (one without: each average starts from its
    statistic)."""
    inner = _inner(optimizer)
    averages = {id(average) for _, average in pairs}

    @contextlib.contextmanager
    def without_averages():
        listed = inner._variables
        inner._variables = [v for v in listed if id(v) not in averages]
        try:
            yield
        finally:
            inner._variables = listed

    for saveable in {id(optimizer): optimizer, id(inner): inner}.values():
        save, load = saveable.save_own_variables, saveable.load_own_variables

        def save_own_variables(store, save=save):
            if getattr(optimizer, "_in_run_state", False):
                return save(store)
            with without_averages():
                return save(store)

        def load_own_variables(store, load=load, saveable=saveable):
            if len(store.keys()) == len(saveable.variables):
                return load(store)
            with without_averages():
                load(store)
            for statistic, average in pairs:
                average.assign(keras.ops.convert_to_numpy(statistic))

        object.__setattr__(saveable, "save_own_variables", save_own_variables)
        object.__setattr__(saveable, "load_own_variables", load_own_variables)


def _average_of(optimizer, statistic):
    """An optimizer variable for the average of `statistic`. Under a TensorFlow strategy of
    several replicas, whose replicas each keep their own statistics, its updates are averaged
    over the replicas: the update is linear, so it is the average of the replicas' mean
    statistics (`ReplicaStatistics`)."""
    name = f"{statistic.path.replace('/', '_')}_average"

    def add():
        return optimizer.add_variable(
            statistic.shape, initializer="zeros", dtype=statistic.dtype, aggregation="mean",
            name=name,
        )  # fmt: skip

    if backend() != "tensorflow":
        return add()
    with optimizer._distribution_strategy.extended.colocate_vars_with(statistic.value):
        return add()


def _averaging_train_step(model, pairs):
    """`model`'s `train_step`, then every average updated from its statistic, while `model`
    is compiled with the optimizer that holds them (a later `compile` trains as Keras does)."""
    train_step = model.train_step
    train_step = getattr(train_step, "unaveraged", train_step)  # an earlier run's: its own
    optimizer = model.optimizer
    inner = _inner(optimizer)
    ops = keras.ops

    def momentum(iterations, dtype):
        # 0 at the first step (the average becomes the value), as Keras' average of the weights.
        return ops.cast(ops.where(ops.equal(iterations, 0), 0.0, inner.ema_momentum), dtype)

    def overwrites(iterations):
        # Where Keras sets the weights to their average (`ema_overwrite_frequency`), the
        # statistics become theirs too.
        frequency = inner.ema_overwrite_frequency
        return ops.equal(ops.mod(iterations + 1, frequency), 0) if frequency else None

    def stateful_train_step(data):  # TensorFlow, PyTorch
        if model.optimizer is not optimizer:
            return train_step(data)
        iterations = ops.copy(ops.convert_to_tensor(inner.iterations))  # before the step's
        logs = train_step(data)
        overwrite = overwrites(iterations)
        for statistic, average in pairs:
            rate = momentum(iterations, average.dtype)
            average.assign(rate * average + (1 - rate) * statistic)
            if overwrite is not None:
                statistic.assign(ops.where(overwrite, average, statistic))
        return logs

    def stateless_train_step(state, data):  # JAX: the averages in the returned state
        if model.optimizer is not optimizer:
            return train_step(state, data)
        # Positions in the state, looked up when traced (the optimizer is built by then).
        position = {id(v): i for i, v in enumerate(optimizer.variables)}
        statistic_position = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
        iterations = state[2][position[id(inner.iterations)]]
        logs, (trainable, non_trainable, optimizer_variables, metrics) = train_step(state, data)
        optimizer_variables = list(optimizer_variables)
        non_trainable = list(non_trainable)
        overwrite = overwrites(iterations)
        for statistic, average in pairs:
            rate = momentum(iterations, average.dtype)
            i, j = position[id(average)], statistic_position[id(statistic)]
            optimizer_variables[i] = rate * optimizer_variables[i] + (1 - rate) * non_trainable[j]
            if overwrite is not None:
                non_trainable[j] = ops.where(overwrite, optimizer_variables[i], non_trainable[j])
        return logs, (trainable, non_trainable, optimizer_variables, metrics)

    averaging = stateless_train_step if backend() == "jax" else stateful_train_step
    averaging.unaveraged = train_step
    return averaging


def swap_statistics(model):
    """Exchanges `model`'s statistics and their averages (`SwapEMAWeights`); exactly, each
    pair through a copy. Call it between steps."""
    pairs = statistic_pairs(model)
    if not pairs:
        return
    if backend() == "tensorflow":
        strategy = model.optimizer._distribution_strategy
        for statistic, average in pairs:
            strategy.extended.update(statistic.value, swap_values, args=(average.value,))
        return
    for statistic, average in pairs:
        saved = keras.ops.convert_to_numpy(statistic)
        statistic.assign(keras.ops.convert_to_numpy(average))
        average.assign(saved)


def swap_values(a, b):
    """Exchanges two TensorFlow variables' values (one replica's, under a strategy)."""
    saved = tf.identity(a)
    a.assign(b)
    b.assign(saved)
