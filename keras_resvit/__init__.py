"""keras_resvit: ResNets and Vision Transformers for Keras 3 on any backend."""

from keras_resvit import data, evaluate, viz, weights
from keras_resvit.export import export
from keras_resvit.files import load_model
from keras_resvit.models.classic import build_alexnet, build_efficientnetv2, build_vgg
from keras_resvit.models.common import replace_head
from keras_resvit.models.complexity import count_macs, count_params
from keras_resvit.models.hybrid import build_hybrid_vit
from keras_resvit.models.registry import create_model, list_models
from keras_resvit.models.resnet import build_resnet
from keras_resvit.models.vit import build_vit, resize_vit
from keras_resvit.predict import predict
from keras_resvit.training import train
from keras_resvit.training.distribution import configure_xla_cpu
from keras_resvit.training.masked_patches import pretrain_masked_patches

# Importing computes nothing, so XLA has not read its flags yet (see configure_xla_cpu).
configure_xla_cpu()

__version__ = "0.1.0"

__all__ = [
    "build_alexnet",
    "build_efficientnetv2",
    "build_hybrid_vit",
    "build_resnet",
    "build_vgg",
    "build_vit",
    "count_macs",
    "count_params",
    "create_model",
    "data",
    "evaluate",
    "export",
    "list_models",
    "load_model",
    "predict",
    "pretrain_masked_patches",
    "replace_head",
    "resize_vit",
    "train",
    "viz",
    "weights",
]
