"""A user's augmentation layers as a `keras.layers.Pipeline`, which runs inside `tf.data` under
every backend: a `keras.Sequential` of Keras preprocessing layers, or a keras-cv layer."""

import importlib.util

import keras

from keras_resvit.base.backend import is_data_layer


def as_pipeline(model: keras.Sequential) -> keras.layers.Pipeline:
    """The `keras.layers.Pipeline` of a `keras.Sequential`'s preprocessing layers.

    A Sequential is a model: it converts its inputs to the backend's tensors, which inside
    `tf.data` under JAX or PyTorch fails; a Pipeline hands each layer the `tf.data` tensors
    as they are, and Keras' preprocessing layers then run TensorFlow ops on every backend.
    """
    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.Sequential):
            layer = as_pipeline(layer)
        elif not (is_data_layer(layer) or isinstance(layer, keras.layers.Pipeline)):
            raise ValueError(
                f"augment={model!r} holds layer {layer.name!r} ({type(layer).__name__}), which "
                "cannot run inside tf.data on every backend; build the augmentation from Keras "
                "preprocessing layers (keras.layers.RandomFlip, RandomCrop, RandomRotation, "
                "...), in a keras.Sequential or a keras.layers.Pipeline."
            )
        layers.append(layer)
    return keras.layers.Pipeline(layers, name=model.name)


def from_keras_cv(layer, **kwargs) -> keras.layers.Pipeline:
    """Wraps a keras-cv augmentation layer so that it drops into a preset or `dataset.map`.

    keras-cv is optional (`pip install keras-resvit[cv]`). keras-cv layers run TensorFlow ops;
    inside a `keras.layers.Pipeline` they receive the `tf.data` tensors as they are, whatever
    the Keras backend.

    Args:
        layer: a keras-cv layer instance, or the name of a class in `keras_cv.layers`.
        **kwargs: constructor arguments when `layer` is a name.

    Returns:
        A `keras.layers.Pipeline` holding the layer.

    Raises:
        ImportError: when keras-cv is not installed.
        ValueError: for a name keras-cv does not have, or an object that is not a keras-cv layer.

    Example:
    >>> from keras_resvit.data.pipelines import from_keras_cv
    >>> import numpy as np
    >>> layer = from_keras_cv("RandomCutout", height_factor=0.3, width_factor=0.3)
    >>> tuple(layer(np.ones((2, 32, 32, 3), "float32")).shape)
    (2, 32, 32, 3)
    """
    if importlib.util.find_spec("keras_cv") is None:
        raise ImportError("from_keras_cv needs keras-cv: pip install keras-resvit[cv].")
    import keras_cv

    if isinstance(layer, str):
        found = getattr(keras_cv.layers, layer, None) if layer.isidentifier() else None
        if not (isinstance(found, type) and issubclass(found, keras.layers.Layer)):
            raise ValueError(f"layer={layer!r} is not a layer class in keras_cv.layers.")
        name, layer = layer, found(**kwargs)
    elif isinstance(layer, keras.layers.Layer) and type(layer).__module__.startswith("keras_cv"):
        if kwargs:
            raise ValueError(
                f"{sorted(kwargs)} are constructor arguments, read only with a class name; "
                f"layer={layer.name!r} is built already: pass its arguments when you build it."
            )
        name = layer.name
    else:
        raise ValueError(
            f"layer={layer!r} is not valid; pass a keras_cv layer or a keras_cv.layers class name."
        )
    return keras.layers.Pipeline([layer], name=f"keras_cv_{name}")
