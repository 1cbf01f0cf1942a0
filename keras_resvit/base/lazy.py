"""TensorFlow (and Keras, for the base modules), imported on first use.

`tf.data` pipelines, `train()` and the exporters need TensorFlow, but building, compiling and
fitting a model on arrays does not: importing `keras_resvit` therefore works where only JAX (or
PyTorch) is installed, such as a GPU image that ships JAX alone. The first attribute read of
`tf` imports TensorFlow, or raises one `ImportError` that says which feature needs it.
"""

import importlib


class LazyModule:
    """A module imported when one of its attributes is first read."""

    def __init__(self, name, pip_name, needed_for, hint=""):
        self._name = name
        self._pip_name = pip_name
        self._needed_for = needed_for
        self._hint = hint
        self._module = None

    def __getattr__(self, attribute):
        if self._module is None:
            try:
                self._module = importlib.import_module(self._name)
            except ImportError as error:
                raise ImportError(
                    f"{self._needed_for} needs the `{self._name}` package, which is not "
                    f"installed: `pip install {self._pip_name}`.{self._hint}"
                ) from error
        return getattr(self._module, attribute)


tf = LazyModule(
    "tensorflow",
    "tensorflow",
    "keras_resvit's tf.data pipelines, train(), evaluation and export",
    " Building models and `model.fit` on arrays work without it.",
)
# The base modules that `import keras_resvit` loads (the backend capabilities) must not load
# Keras, which loads its backend: `keras-resvit --help` and `list` answer without it.
keras = LazyModule("keras", "keras", "keras_resvit")
