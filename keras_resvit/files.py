"""Model files and their class names: the public API of `keras_resvit.base`'s file modules.

`save_model` writes a `.keras` file atomically with the model's class names inside it;
`load_model` loads one in Keras' safe mode (also ResNet-1202) and attaches its names. A model in
memory carries names through `set_class_names` / `model_class_names`; `read_class_names` finds
a file's names (its `<name>.classes.json` side file first, else those inside the `.keras` or
`.tflite` file) and `write_class_names` writes the side file. See
`keras_resvit.base.class_names` for where the names are stored.
"""

from keras_resvit.base.class_names import (
    CLASS_NAMES_KEY,
    embedded_class_names,
    model_class_names,
    read_class_names,
    set_class_names,
    write_class_names,
)
from keras_resvit.base.model_files import load_model, save_model

__all__ = [
    "CLASS_NAMES_KEY",
    "embedded_class_names",
    "load_model",
    "model_class_names",
    "read_class_names",
    "save_model",
    "set_class_names",
    "write_class_names",
]
