"""Input pipelines: sources -> tf.data datasets of raw 0-255 pixels, for every backend, or
(without TensorFlow) a `keras.utils.PyDataset` of the same batches."""

from keras_resvit.base.deprecation import deprecated_names
from keras_resvit.data import (
    augmentation,
    checks,
    image_files,
    loaders,
    preprocessing,  # noqa: F401  deprecated: each old name warns
    transforms,
)
from keras_resvit.data.augmentation import AUGMENTATION_PRESETS, Mixing, get_augmentation
from keras_resvit.data.datasets import load_dataset
from keras_resvit.data.folders import list_image_folder
from keras_resvit.data.in_memory import load_digits
from keras_resvit.data.loader_choice import LOADERS
from keras_resvit.data.loaders import ImageLoader
from keras_resvit.data.pipelines import from_keras_cv
from keras_resvit.data.sources import SOURCES
from keras_resvit.data.transforms import evaluation_transform, ten_crop

__all__ = [
    "AUGMENTATION_PRESETS",
    "LOADERS",
    "SOURCES",
    "ImageLoader",
    "Mixing",
    "augmentation",
    "checks",
    "evaluation_transform",
    "from_keras_cv",
    "get_augmentation",
    "image_files",
    "list_image_folder",
    "load_dataset",
    "loaders",
    "load_digits",
    "transforms",
    "ten_crop",
]

_MULTI_CROP = ("fully_convolutional_predict", "multi_crop_evaluate", "multi_crop_predict")
__getattr__ = deprecated_names(
    __name__,
    {
        "PRESETS": ("AUGMENTATION_PRESETS", AUGMENTATION_PRESETS),
        **{name: (f"keras_resvit.evaluation.{name}", None) for name in _MULTI_CROP},
    },
)
