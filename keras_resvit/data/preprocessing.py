"""Deprecated: the names of this module moved to `keras_resvit.data.transforms` (evaluation
transforms), `keras_resvit.layers.normalization` (normalization presets) and
`keras_resvit.evaluation` (multi-crop and fully-convolutional tests)."""

from keras_resvit.base.deprecation import deprecated_names

_MOVED = {
    "keras_resvit.data.transforms": (
        "CROP_RATIO",
        "evaluation_crop_ratio",
        "evaluation_transform",
        "resize_shorter_side",
        "ten_crop",
    ),
    "keras_resvit.layers.normalization": (
        "CAFFE_MEAN_BGR",
        "CIFAR_MEAN",
        "CIFAR_STD",
        "IMAGENET_MEAN",
        "IMAGENET_STD",
        "NORMALIZATION_PRESETS",
        "preprocessing_layers",
    ),
    "keras_resvit.evaluation.multi_crop": (
        "CROPS",
        "RESNET_SCALES",
        "fully_convolutional_predict",
        "multi_crop_evaluate",
        "multi_crop_predict",
    ),
}
_ALIASES = {name: (f"{where}.{name}", None) for where, names in _MOVED.items() for name in names}
_ALIASES["PRESETS"] = ("keras_resvit.layers.normalization.NORMALIZATION_PRESETS", None)

__getattr__ = deprecated_names(__name__, _ALIASES)
