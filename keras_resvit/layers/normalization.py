"""Normalization presets: models take raw pixels in [0, 255] and normalize inside.

Keeping normalization in the model makes a saved or exported model self-contained: a TF Lite
user feeds camera pixels, whatever preset the model was trained with.
"""

import keras

from keras_resvit.base.backend import backend, data_layer, in_tf_graph
from keras_resvit.base.deprecation import deprecated_names
from keras_resvit.base.validation import check_choice

# Per-channel statistics on the 0-255 scale.
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
CIFAR_MEAN = (0.4914 * 255, 0.4822 * 255, 0.4465 * 255)
CIFAR_STD = (0.2470 * 255, 0.2435 * 255, 0.2616 * 255)
# keras.applications ResNet ("caffe" mode): BGR order, mean subtracted, no scaling.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

NORMALIZATION_PRESETS = {
    "imagenet": "mean/std of ImageNet, RGB",
    "inception": "scaled to [-1, 1]",
    "cifar": "mean/std of CIFAR-10, RGB",
    "caffe": "RGB -> BGR, ImageNet mean subtracted (keras.applications ResNet weights)",
    "pixel_mean": "per-pixel mean of the training images subtracted (He et al., CIFAR)",
    None: "no normalization (the model sees raw 0-255 pixels)",
}

# Presets that need exactly three input channels.
RGB_PRESETS = ("imagenet", "cifar", "caffe")


@keras.saving.register_keras_serializable(package="keras_resvit")
class ReverseChannels(data_layer()):
    """Reverses the channel axis (RGB <-> BGR) of images.

    A Keras data layer, like `keras.layers.Rescaling`: in a model it computes with the
    backend's ops, inside `tf.data` with TensorFlow's whatever the backend. It takes no
    `training` argument: an image augmentation layer's default `training=True` would put the
    model it starts in training mode (BatchNorm on batch statistics) when called plainly.

    Args:
        data_format: "channels_last", "channels_first", or None for Keras' setting.

    Example:
    >>> import keras
    >>> from keras_resvit.layers.normalization import ReverseChannels
    >>> import numpy as np
    >>> keras.ops.convert_to_numpy(ReverseChannels()(np.array([[[[1.0, 2.0, 3.0]]]]))).tolist()
    [[[[3.0, 2.0, 1.0]]]]
    """

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = data_format or keras.config.image_data_format()
        check_choice("data_format", self.data_format, ("channels_last", "channels_first"))

    def call(self, inputs):
        axis = -1 if self.data_format == "channels_last" else -3
        return self.backend.numpy.flip(self.backend.cast(inputs, self.compute_dtype), axis=axis)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


@keras.saving.register_keras_serializable(package="keras_resvit")
class PixelMean(keras.layers.Layer):
    """Subtracts the per-pixel mean image of the training data (He et al. 2016, Section 4.2:
    "the per-pixel mean subtracted"; Krizhevsky et al. 2012).

    The mean image (height x width x channels) is a non-trainable weight saved with the model;
    `adapt` computes it. `kr.train` adapts a model's un-adapted `PixelMean` from the training
    images before any augmentation (datasets of `kr.data.load_dataset` carry them), and
    refuses to train one it cannot adapt, rather than subtracting a zero mean; `kr.predict`,
    the evaluations and `kr.export` refuse a model whose mean was never set.

    It belongs in the model: inside `tf.data` it runs only with the TensorFlow backend (on
    the others, a graph traced before `adapt` would keep the mean it saw then).

    Raises:
        ValueError: when called inside `tf.data` (a TensorFlow graph) under JAX or PyTorch.

    Example:
    >>> import keras
    >>> from keras_resvit.layers.normalization import PixelMean
    >>> import numpy as np
    >>> layer = PixelMean()
    >>> layer.adapt(np.stack([np.zeros((2, 2, 3)), np.full((2, 2, 3), 10.0)]))
    >>> float(keras.ops.max(layer(np.full((1, 2, 2, 3), 7.0))))
    2.0
    """

    def build(self, input_shape):
        if None in tuple(input_shape[1:]):
            raise ValueError(
                f"PixelMean needs a fixed image size; got input shape {tuple(input_shape)}. "
                "Build the model with a fixed input_shape, e.g. (32, 32, 3)."
            )
        self.mean = self.add_weight(
            name="mean", shape=tuple(input_shape[1:]), initializer="zeros", trainable=False
        )
        # Images the mean was computed from: 0 until `adapt`.
        self.count = self.add_weight(name="count", shape=(), initializer="zeros", trainable=False)

    def __call__(self, inputs, *args, **kwargs):
        # A TensorFlow tensor, not a JAX tracer inside a TF graph (jax2tf export).
        if backend() != "tensorflow" and in_tf_graph() and "tensorflow" in type(inputs).__module__:
            raise ValueError(
                f"PixelMean layer {self.name!r} cannot run inside tf.data with the "
                f"{backend()!r} backend: its mean image is a weight of the model. Keep it in "
                "the model (preprocessing='pixel_mean'), or use the tensorflow backend."
            )
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs):
        return inputs - keras.ops.cast(self.mean, inputs.dtype)

    @property
    def adapted(self) -> bool:
        """Whether `adapt` has set the mean."""
        return self.built and float(keras.ops.convert_to_numpy(self.count)) > 0

    def adapt(self, data):
        """Sets the mean image from `data`: an array of images (N, H, W, C), or an iterable
        of such batches or of (images, labels) batches (a `tf.data.Dataset`)."""
        import numpy as np

        if hasattr(data, "shape"):
            data = [data]
        total, count = 0.0, 0
        for batch in data:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            images = np.asarray(images, "float64")
            if images.ndim != 4:
                raise ValueError(
                    f"PixelMean.adapt: data of shape {images.shape} is not valid; expected "
                    "images (N, height, width, channels) or batches of them (one image x is "
                    "the batch x[None])."
                )
            total = total + images.sum(axis=0)
            count += len(images)
        if not count:
            raise ValueError("PixelMean.adapt: data holds no images.")
        mean = total / count
        if not self.built:
            self.build((None, *mean.shape))
        if tuple(mean.shape) != tuple(self.mean.shape):
            raise ValueError(
                f"PixelMean.adapt: images of shape {mean.shape} do not match the layer's "
                f"{tuple(self.mean.shape)}."
            )
        self.mean.assign(mean.astype("float32"))
        self.count.assign(float(count))

    def compute_output_shape(self, input_shape):
        return input_shape


def _standardize(mean, std, name):
    variance = [s * s for s in std]
    return keras.layers.Normalization(mean=list(mean), variance=variance, name=name)


def preprocessing_layers(preset, name="preprocessing"):
    """Returns the layers that map raw 0-255 RGB pixels to the preset's input range.

    Args:
        preset: one of `NORMALIZATION_PRESETS` ("imagenet", "inception", "cifar", "caffe" or None).
        name: name of the (last) layer.

    Returns:
        A list of Keras layers, empty for `None`.

    Raises:
        ValueError: for an unknown preset.
    """
    if preset is None:
        return []
    if preset == "imagenet":
        return [_standardize(IMAGENET_MEAN, IMAGENET_STD, name)]
    if preset == "cifar":
        return [_standardize(CIFAR_MEAN, CIFAR_STD, name)]
    if preset == "pixel_mean":
        return [PixelMean(name=name)]
    if preset == "inception":
        return [keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=name)]
    if preset == "caffe":
        return [
            ReverseChannels(name=f"{name}_bgr"),
            _standardize(CAFFE_MEAN_BGR, (1.0, 1.0, 1.0), name),
        ]
    valid = ", ".join(repr(p) for p in NORMALIZATION_PRESETS)
    raise ValueError(f"preprocessing={preset!r} is not a known preset; valid: {valid}.")


__getattr__ = deprecated_names(
    __name__, {"PRESETS": ("NORMALIZATION_PRESETS", NORMALIZATION_PRESETS)}
)
