"""model_parallel_distribution refuses devices this process does not have, at the call, instead
of a "Device not found" when the model is built."""

import json
import os
import subprocess
import sys

import keras
import pytest

from keras_resvit.training.sharding import device_mesh, model_parallel_distribution
from tests.conftest import simulated_devices


@pytest.mark.one_backend("jax", reason="ModelParallel is JAX's; elsewhere the backend is refused")
def test_devices_that_do_not_exist_are_named_with_the_available_ones():
    available = keras.distribution.list_devices()
    absent = ["cpu:999"] + [f"{kind}:0" for kind in ("gpu", "tpu") if f"{kind}:0" not in available]
    for name in absent:
        with pytest.raises(ValueError) as error:
            model_parallel_distribution([available[0], name], model_parallelism=1)
        message = str(error.value)
        assert message.startswith(f"devices={[available[0], name]!r} names devices this process")
        assert f"does not have: {[name]!r}; available: {available!r}" in message
    # A mesh is data: it may name another machine's devices, for planning layouts.
    assert device_mesh(1, [available[0], "cpu:999"]).shape == (2, 1)


EIGHT_DEVICES = """
import json, keras, numpy as np
from keras_resvit.training.sharding import model_parallel_distribution

reply = {"available": keras.distribution.list_devices()}
try:
    model_parallel_distribution(["cpu:0", "cpu:1", "cpu:8", "cpu:9"], model_parallelism=2)
except ValueError as error:
    reply["error"] = str(error)
distribution, replicas = model_parallel_distribution([f"cpu:{i}" for i in range(4)], 2)
with distribution.scope():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)])
reply["replicas"] = replicas
reply["output"] = np.asarray(model(np.ones((2, 4), "float32"))).shape
print(json.dumps(reply))
"""


def test_a_mesh_beyond_the_simulated_devices_is_refused(backend):
    """With 8 simulated CPU devices, cpu:8 and cpu:9 are refused and cpu:0-3 build a model."""
    if backend != "jax":
        pytest.skip("runs JAX in a subprocess whatever the backend: once, in the JAX pass")
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": simulated_devices(8),
    }
    result = subprocess.run(
        [sys.executable, "-c", EIGHT_DEVICES], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reply = json.loads(result.stdout.strip().splitlines()[-1])
    eight = [f"cpu:{i}" for i in range(8)]
    assert reply["available"] == eight
    assert f"does not have: ['cpu:8', 'cpu:9']; available: {eight!r}" in reply["error"]
    assert reply["replicas"] == 2 and reply["output"] == [2, 8]
