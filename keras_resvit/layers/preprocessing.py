"""Normalization presets: models take raw pixels in [0, 255] and normalize inside.

Keeping normalization in the model makes a saved or exported model self-contained: a TF Lite
user feeds camera pixels, whatever preset the model was trained with.
"""

import keras

# Per-channel statistics on the 0-255 scale.
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
CIFAR_MEAN = (0.4914 * 255, 0.4822 * 255, 0.4465 * 255)
CIFAR_STD = (0.2470 * 255, 0.2435 * 255, 0.2616 * 255)
# keras.applications ResNet ("caffe" mode): BGR order, mean subtracted, no scaling.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

PRESETS = {
    "imagenet": "mean/std of ImageNet, RGB",
    "inception": "scaled to [-1, 1]",
    "cifar": "mean/std of CIFAR-10, RGB",
    "caffe": "RGB -> BGR, ImageNet mean subtracted (keras.applications ResNet weights)",
    None: "no normalization (the model sees raw 0-255 pixels)",
}

# Presets that need exactly three input channels.
RGB_PRESETS = ("imagenet", "cifar", "caffe")


@keras.saving.register_keras_serializable(package="keras_resvit")
class ReverseChannels(keras.layers.Layer):
    """Reverses the channel axis (RGB <-> BGR) of channels-last images."""

    def call(self, inputs):
        return keras.ops.flip(inputs, axis=-1)


def _standardize(mean, std, name):
    variance = [s * s for s in std]
    return keras.layers.Normalization(mean=list(mean), variance=variance, name=name)


def preprocessing_layers(preset, name="preprocessing"):
    """Returns the layers that map raw 0-255 RGB pixels to the preset's input range.

    Args:
        preset: one of `PRESETS` ("imagenet", "inception", "cifar", "caffe" or None).
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
    if preset == "inception":
        return [keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=name)]
    if preset == "caffe":
        return [
            ReverseChannels(name=f"{name}_bgr"),
            _standardize(CAFFE_MEAN_BGR, (1.0, 1.0, 1.0), name),
        ]
    valid = ", ".join(repr(p) for p in PRESETS)
    raise ValueError(f"preprocessing={preset!r} is not a known preset; valid: {valid}.")
