"""Custom layers used by the builders; every one is registered for `.keras` saving."""

from keras_resvit.layers.preprocessing import PRESETS, ReverseChannels, preprocessing_layers
from keras_resvit.layers.resnet_layers import StdConv2D, ZeroPadShortcut

__all__ = [
    "PRESETS",
    "ReverseChannels",
    "StdConv2D",
    "ZeroPadShortcut",
    "preprocessing_layers",
]
