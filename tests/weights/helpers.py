"""Shared helpers of the converter tests: non-trivial source weights and output comparison."""

import keras
import numpy as np


def randomize(model, seed=0):
    """Random biases, BatchNorm scales, offsets and statistics: a converter that drops or
    misplaces any of them (conv bias folding, epsilon, stream biases) changes the outputs."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape, name = tuple(variable.shape), variable.path.rsplit("/", 1)[-1]
        if name in ("moving_variance", "gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name in ("bias", "beta", "moving_mean"):
            value = rng.normal(0.0, 0.2, shape)
        else:
            continue
        variable.assign(value.astype(variable.dtype))
    return model


def assert_close(actual, expected, tolerance=1e-4):
    """Max abs difference below `tolerance`, relative to the outputs' scale when it exceeds 1."""
    actual, expected = (keras.ops.convert_to_numpy(a) for a in (actual, expected))
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    difference = float(np.abs(actual - expected).max())
    assert difference < tolerance * scale, f"max abs difference {difference:.2e} (scale {scale})"
