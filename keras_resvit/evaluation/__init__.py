"""Evaluation beyond `model.evaluate`: the ResNet paper's multi-crop and fully-convolutional
multi-scale tests, and the ViT paper's few-shot linear evaluation of frozen features."""

from keras_resvit.evaluation import few_shot_probe, multi_crop
from keras_resvit.evaluation.few_shot_probe import (
    extract_features,
    few_shot,
    few_shot_indices,
    least_squares_accuracy,
)
from keras_resvit.evaluation.multi_crop import (
    RESNET_SCALES,
    fully_convolutional_predict,
    multi_crop_evaluate,
    multi_crop_predict,
)

__all__ = [
    "RESNET_SCALES",
    "extract_features",
    "few_shot",
    "few_shot_indices",
    "few_shot_probe",
    "fully_convolutional_predict",
    "least_squares_accuracy",
    "multi_crop",
    "multi_crop_evaluate",
    "multi_crop_predict",
]
