"""Model files and their class names: the public API of `keras_resvit.base`'s file modules.

`save_model` writes a `.keras` file atomically with the model's class names inside it;
`load_model` loads one in Keras' safe mode (also ResNet-1202) and attaches its names. A model in
memory carries names through `set_class_names` / `model_class_names`; `read_class_names` finds
a file's names (its `<name>.classes.json` side file first, else those inside the `.keras` or
`.tflite` file) and `write_class_names` writes the side file. See
`keras_resvit.base.class_names` for where the names are stored.

Keras rebuilds a `.keras` file's custom objects (this package's layers, its optimizer and
learning-rate schedule) only once their modules have registered them: `load_model` imports them
first (`register_serializables`), which `import keras_resvit` alone does not (it imports its API
on first use).
"""

import keras_resvit.layers
import keras_resvit.layers.masked_patch_layers
import keras_resvit.training.optimizers
import keras_resvit.training.schedules
from keras_resvit.base import model_files
from keras_resvit.base.class_names import (
    CLASS_NAMES_KEY,
    embedded_class_names,
    model_class_names,
    read_class_names,
    set_class_names,
    write_class_names,
)
from keras_resvit.base.model_files import save_model

# The modules whose classes this package's `.keras` files name.
SERIALIZABLE_MODULES = (
    keras_resvit.layers,
    keras_resvit.layers.masked_patch_layers,
    keras_resvit.training.optimizers,
    keras_resvit.training.schedules,
)


def register_serializables() -> tuple:
    """Registers with Keras every class that this package's `.keras` files may name (importing
    this module did); returns their modules. Call it before `keras.saving.load_model` when
    nothing of the package has run yet; `load_model` needs no call."""
    return SERIALIZABLE_MODULES


def load_model(path, *, safe_mode: bool = True, custom_objects: dict | None = None):
    """`keras_resvit.base.model_files.load_model` with the package's classes registered: a
    `.keras` file, in safe mode by default (also ResNet-1202), carrying its class names.

    >>> from keras_resvit.files import load_model
    >>> import keras_resvit as kr
    >>> kr.create_model("vit_ti16", image_size=32).save("vit.keras")
    >>> load_model("vit.keras").count_params()
    5680552
    """
    return model_files.load_model(path, safe_mode=safe_mode, custom_objects=custom_objects)


__all__ = [
    "CLASS_NAMES_KEY",
    "embedded_class_names",
    "load_model",
    "model_class_names",
    "read_class_names",
    "register_serializables",
    "save_model",
    "set_class_names",
    "write_class_names",
]
