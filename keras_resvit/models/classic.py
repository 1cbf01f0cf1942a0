"""Deprecated: this module is now `keras_resvit.models.baselines`."""

from keras_resvit.base.deprecation import moved_module

moved_module(__name__, "keras_resvit.models.baselines")
