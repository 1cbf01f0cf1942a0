"""keras_resvit: ResNets and Vision Transformers for Keras 3 on any backend."""

from keras_resvit.models.complexity import count_macs, count_params
from keras_resvit.models.registry import create_model, list_models
from keras_resvit.models.resnet import build_resnet

__version__ = "0.1.0"

__all__ = [
    "build_resnet",
    "count_macs",
    "count_params",
    "create_model",
    "list_models",
]
