"""Squeeze-and-excitation (Hu et al. 2018): channel gates any functional model can use."""

import keras


def squeeze_excite(x, ratio: float = 1 / 16, *, name: str | None = None):
    """Rescales each channel of a feature map by a gate computed from the whole map.

    Squeeze: global average pooling to one value per channel. Excitation: a bottleneck of two
    fully connected layers (C -> C * ratio, ReLU -> C, sigmoid), written as 1x1 convolutions
    on the pooled 1x1 map. The gates then multiply the input's channels. Hu et al. put it on a
    residual branch before the addition (SE-ResNet), on an Inception module's output
    (SE-Inception), or anywhere a block outputs channels; RCAN's channel attention (Zhang et
    al. 2018) is the same block. Standard Keras layers only, so a model saves and converts like
    any other; with `name` they are called `{name}_se_pool`, `{name}_se_reduce`,
    `{name}_se_expand` and `{name}_se_scale` (the names SE-ResNet's weight converters use).

    Parameters: C * int(C * ratio) * 2 weights (the paper's 2C^2/r per block) plus
    int(C * ratio) + C biases, which the paper's count leaves out.

    Args:
        x: a channels-last feature map (batch, height, width, channels) with known channels.
        ratio: the reduction as a fraction, 1/r (the paper's r = 16 gives 1/16); the bottleneck
            has `max(1, int(channels * ratio))` units.
        name: prefix of the layer names; None lets Keras name them.

    Returns:
        The gated feature map, of the shape of `x`.

    Raises:
        ValueError: `ratio` not in (0, 1], or `x` not a 4-D map with known channels.

    Example:
    >>> import keras
    >>> from keras_resvit.layers import squeeze_excite
    >>> inputs = keras.Input((8, 8, 64))
    >>> model = keras.Model(inputs, squeeze_excite(inputs, 1 / 16, name="block1"))
    >>> model.get_layer("block1_se_reduce").filters, model.count_params()
    (4, 580)
    """
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 < ratio <= 1:
        raise ValueError(f"ratio={ratio!r} must be in (0, 1], e.g. 1/16 (the paper's r = 16).")
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) != 4 or shape[-1] is None:
        raise ValueError(
            f"x of shape {shape} is not valid; expected a channels-last feature map "
            "(batch, height, width, channels) with known channels."
        )
    channels = shape[-1]

    def named(suffix):
        return f"{name}_se_{suffix}" if name is not None else None

    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=named("pool"))(x)
    s = keras.layers.Conv2D(
        max(1, int(channels * ratio)), 1, activation="relu", name=named("reduce")
    )(s)
    s = keras.layers.Conv2D(channels, 1, activation="sigmoid", name=named("expand"))(s)
    return keras.layers.Multiply(name=named("scale"))([x, s])
