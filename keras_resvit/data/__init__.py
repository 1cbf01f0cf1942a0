"""Input pipelines: sources -> tf.data datasets of raw 0-255 pixels, for every backend."""

from keras_resvit.data.datasets import SOURCES, load_dataset, load_digits

__all__ = ["SOURCES", "load_dataset", "load_digits"]
