"""Without TensorFlow (a JAX-only GPU image): models build and train on arrays, and the features
that need `tf.data` say so in one ImportError."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from keras_resvit.base.lazy import LazyModule

# A finder ahead of all others makes every `import tensorflow...` raise ImportError, as on a
# machine without it. (`sys.modules["tensorflow"] = None` would not do: Keras takes a
# "tensorflow" key in sys.modules as TensorFlow being in use.)
SCRIPT = textwrap.dedent(
    """
    import json, sys

    class NoTensorFlow:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "tensorflow":
                raise ImportError(f"No module named {name!r}")

    sys.meta_path.insert(0, NoTensorFlow())
    import numpy as np
    import keras_resvit as kr

    reply = {"tensorflow_imported": "tensorflow" in sys.modules}
    model = kr.build_resnet(
        depth=8, stem="cifar", input_shape=(8, 8, 3), num_classes=2, width=0.25
    )
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (8, 8, 8, 3)).astype("float32")
    y = np.arange(8) % 2
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    reply["losses"] = history.history["loss"]
    try:
        kr.data.load_dataset("digits", "train")
    except ImportError as error:
        reply["error"] = str(error)
    print(json.dumps(reply))
    """
)


def test_jax_trains_without_tensorflow():
    pytest.importorskip("jax")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**os.environ, "KERAS_BACKEND": "jax"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reply = json.loads(result.stdout.strip().splitlines()[-1])
    assert not reply["tensorflow_imported"]
    assert len(reply["losses"]) == 2 and all(loss > 0 for loss in reply["losses"])
    assert "needs the `tensorflow` package" in reply["error"]
    assert "pip install tensorflow" in reply["error"]


def test_lazy_module_imports_on_first_use():
    lazy = LazyModule("json", "json", "this test")
    assert lazy.dumps([1]) == "[1]"
    missing = LazyModule("no_such_module_kr", "no-such-package", "The feature X")
    with pytest.raises(ImportError, match="The feature X needs the `no_such_module_kr` package"):
        _ = missing.anything
