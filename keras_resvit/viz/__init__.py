"""Pictures of models and runs (matplotlib, PNG out): training curves, Grad-CAM for
convolutional nets, attention rollout for ViTs and top-k predictions."""

from keras_resvit.viz.attention import attention_rollout, plot_attention, rollout_matrices
from keras_resvit.viz.curves import plot_history
from keras_resvit.viz.gradcam import grad_cam, plot_grad_cam
from keras_resvit.viz.predictions import plot_predictions

__all__ = [
    "attention_rollout",
    "grad_cam",
    "plot_attention",
    "plot_grad_cam",
    "plot_history",
    "plot_predictions",
    "rollout_matrices",
]
