"""Deprecated: this module is now `keras_resvit.layers.baseline_layers`."""

from keras_resvit.base.deprecation import moved_module

moved_module(__name__, "keras_resvit.layers.baseline_layers")
