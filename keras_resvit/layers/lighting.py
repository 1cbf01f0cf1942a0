"""AlexNet's PCA lighting augmentation, which the ResNet paper's ImageNet recipe uses."""

import math

import keras

from keras_resvit.base.validation import (
    check_channels_last,
    check_number,
    check_value_range,
    refuse_arguments,
)

# The principal components of ImageNet's RGB pixels on the [0, 1] scale, as fb.resnet.torch
# publishes them (computed on a subset of the training images): eigenvalues and, per row,
# the R, G and B entries of the three eigenvectors (one eigenvector per column).
IMAGENET_EIGENVALUES = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGENVECTORS = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


@keras.saving.register_keras_serializable(package="keras_resvit")
class PCALighting(keras.layers.RandomBrightness):
    """Krizhevsky et al. (2012), Section 4.1: adds `V @ (alpha * eigenvalues)` to every pixel.

    Each image draws `alpha ~ N(0, alpha_std)` per principal component of the dataset's RGB
    pixels and is shifted along those components, "an important property of natural images,
    namely that object identity is invariant to changes in the intensity and color of the
    illumination". He et al. (2016) train their ImageNet nets with it ("the standard color
    augmentation in [21]"). A Keras image layer: at inference it passes images through (in its
    compute dtype), and inside `tf.data` it runs TensorFlow ops whatever the backend.

    Args:
        alpha_std: standard deviation of the per-component scale (AlexNet: 0.1).
        eigenvalues: the three eigenvalues, on the [0, 1] pixel scale.
        eigenvectors: 3x3, eigenvector `j` in column `j`.
        value_range: the images' pixel range, (low, high) with low < high; the shift is
            scaled to it and the result clipped to it. The result is in the layer's compute
            dtype (float32) whatever the images' (uint8 pixels are shifted as floats).
        seed: seed of the random draws.
        data_format: "channels_last" (the only one supported) or None for Keras' setting.

    Raises:
        ValueError: for `factor`, the argument of `keras.layers.RandomBrightness` this layer
            does not take (`alpha_std` sets the strength), for a `value_range` that is not
            (low, high) with low < high, and for images that are not RGB (3 channels, last
            axis).

    Example:
    >>> from keras_resvit.layers.lighting import PCALighting
    >>> import numpy as np
    >>> layer = PCALighting(seed=0)
    >>> tuple(layer(np.full((2, 4, 4, 3), 128.0), training=True).shape)
    (2, 4, 4, 3)
    """

    def __init__(
        self,
        alpha_std=0.1,
        eigenvalues=IMAGENET_EIGENVALUES,
        eigenvectors=IMAGENET_EIGENVECTORS,
        value_range=(0, 255),
        seed=None,
        data_format=None,
        **kwargs,
    ):
        refuse_arguments(
            "PCALighting",
            kwargs,
            ("factor",),
            "the lighting's strength is alpha_std (AlexNet: 0.1)",
        )
        data_format = check_channels_last(data_format, "PCALighting")
        check_value_range("PCALighting", value_range)
        super().__init__(
            factor=0.0, value_range=value_range, seed=seed, data_format=data_format, **kwargs
        )
        check_number("PCALighting: alpha_std", alpha_std, 0, include_low=True)
        values, vectors = _components(eigenvalues, eigenvectors)
        self.alpha_std = float(alpha_std)
        self.eigenvalues = values
        self.eigenvectors = vectors

    def get_random_transformation(self, data, training=True, seed=None):
        images = data["images"] if isinstance(data, dict) else data
        shape = self.backend.shape(images)
        rank = len(shape)
        if rank not in (3, 4):
            raise ValueError(
                f"PCALighting: images must have rank 3 or 4; got shape {tuple(shape)}."
            )
        if images.shape[-1] not in (None, 3):
            raise ValueError(
                f"PCALighting: images of shape {tuple(images.shape)} have {images.shape[-1]} "
                "channels; the lighting shifts RGB colours: valid are images with 3 channels "
                "(last axis)."
            )
        batch = (1,) if rank == 3 else (shape[0],)
        delta_shape = (1, 1, 3) if rank == 3 else (shape[0], 1, 1, 3)
        if not training or not self.alpha_std:
            return {"rgb_delta": self.backend.numpy.zeros(delta_shape)}
        if seed is None:
            seed = self._get_seed_generator(self.backend._backend)
        alpha = self.backend.random.normal((*batch, 3), stddev=self.alpha_std, seed=seed)
        scaled = alpha * self.backend.convert_to_tensor(self.eigenvalues)
        # delta[n, i] = sum_j V[i, j] * alpha[n, j] * lambda[j], on the pixel range.
        vectors = self.backend.convert_to_tensor(self.eigenvectors)
        delta = self.backend.numpy.matmul(scaled, self.backend.numpy.transpose(vectors))
        delta = delta * (self.value_range[1] - self.value_range[0])
        return {"rgb_delta": self.backend.numpy.reshape(delta, delta_shape)}

    def transform_images(self, images, transformation, training=True):
        # Keras' RandomBrightness adds the shift in the images' dtype: uint8 pixels wrapped
        # around (black became white) or lost their negative shifts.
        images = self.backend.cast(images, self.compute_dtype)
        if not training:
            return images
        delta = self.backend.cast(transformation["rgb_delta"], self.compute_dtype)
        return self.backend.numpy.clip(images + delta, *self.value_range)

    def get_config(self):
        config = super().get_config()
        config.pop("factor", None)
        return {
            **config,
            "alpha_std": self.alpha_std,
            "eigenvalues": self.eigenvalues,
            "eigenvectors": self.eigenvectors,
        }


def _components(eigenvalues, eigenvectors):
    """`eigenvalues` and `eigenvectors` as lists of floats, or a ValueError naming them: 3
    finite eigenvalues of a covariance (none negative) and a finite 3x3 matrix."""
    try:
        values = [float(v) for v in eigenvalues]
        vectors = [[float(v) for v in row] for row in eigenvectors]
    except (TypeError, ValueError):
        values = vectors = None
    if (
        values is None
        or len(values) != 3
        or len(vectors) != 3
        or any(len(row) != 3 for row in vectors)
        or not all(math.isfinite(v) for v in values + sum(vectors, []))
        or min(values) < 0
    ):
        raise ValueError(
            f"PCALighting: eigenvalues={eigenvalues!r} and eigenvectors={eigenvectors!r}; "
            "valid are the principal components of RGB pixels: 3 eigenvalues of their "
            "covariance (finite, none negative) and a finite 3x3 matrix of eigenvectors, one "
            "per column."
        )
    return values, vectors
