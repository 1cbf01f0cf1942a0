"""CutMix as its paper's code and timm draw it (Yun et al. 2019): the mixing weight from
Beta(alpha, alpha), a box of side sqrt(1 - weight) around a uniformly drawn centre, clipped to
the image, and the label weight corrected to the pixels actually pasted.

`keras.layers.CutMix` differs in three ways that change the labels a model learns from: its
`factor` is not the paper's alpha (it draws alpha from [0, factor], so `factor=1` gives
U-shaped weights, not the paper's uniform ones, and alpha > 1 is refused), its box always lies
wholly inside the image, and its label weight is the unrounded box's area while whole pixels
are pasted (at 32 x 32 pixels off by 0.015 on average, up to 0.06).
"""

import keras

from keras_resvit.base.validation import check_number


@keras.saving.register_keras_serializable(package="keras_resvit")
class CutMix(keras.layers.CutMix):
    """`keras.layers.CutMix` with the paper's draw: for each image, a weight `lam` from
    Beta(`alpha`, `alpha`); a box reaching `int(H * sqrt(1 - lam)) // 2` rows and
    `int(W * sqrt(1 - lam)) // 2` columns either side of a uniformly drawn pixel, clipped to
    the image, holding the pixels of another image of the batch (a random pairing); the
    labels mixed by the share of pixels each image keeps (`1 - box area / image area`, the
    paper's code's and timm's "corrected" weight, exact for the pasted whole pixels). Each
    image draws its own weight and box (timm's "elem" mode; the paper's code draws one per
    batch).

    Inputs are dicts of batched "images" and one-hot / soft "labels", as for Keras' layer.

    Args:
        alpha: the Beta concentration, > 0 (1: the weight is uniform on [0, 1], the paper's).
        seed, data_format: as `keras.layers.CutMix`.

    Example:
    >>> from keras_resvit.layers.cutmix import CutMix
    >>> import numpy as np
    >>> images = np.stack([np.zeros((8, 8, 3)), np.ones((8, 8, 3))]).astype("float32")
    >>> out = CutMix(seed=1)({"images": images, "labels": np.eye(2, dtype="float32")})
    >>> pasted = (np.asarray(out["images"]) != images)[..., 0].mean(axis=(1, 2))
    >>> kept = np.diagonal(np.asarray(out["labels"]))  # each image's own label weight
    >>> bool(np.allclose(kept, 1 - pasted, atol=1e-6))
    True
    """

    def __init__(self, alpha=1.0, seed=None, data_format=None, **kwargs):
        check_number("CutMix: alpha", alpha, 0)
        kwargs.pop("factor", None)  # Keras' argument; alpha is this layer's
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        self.alpha = float(alpha)

    def get_random_transformation(self, data, training=True, seed=None):
        if not training:
            return None
        images = data["images"] if isinstance(data, dict) else data
        shape = self.backend.shape(images)
        if len(shape) == 3:
            return None
        ops, random = self.backend.numpy, self.backend.random
        dtype = self.compute_dtype
        batch = shape[0]
        seed = seed or self._get_seed_generator(self.backend._backend)
        lam = random.beta((batch,), self.alpha, self.alpha, seed=seed, dtype=dtype)
        side = ops.sqrt(1.0 - lam)
        inside, area = [], 1.0
        for axis in (self.height_axis, self.width_axis):
            length = self.backend.cast(shape[axis], dtype)  # a tensor where sizes vary
            half = ops.floor(ops.floor(length * side) / 2)
            centre = ops.floor(random.uniform((batch,), dtype=dtype, seed=seed) * length)
            low = ops.clip(centre - half, 0, length)[:, None]
            high = ops.clip(centre + half, 0, length)[:, None]
            pixels = ops.arange(0, shape[axis], dtype=dtype)[None, :]
            inside.append(ops.logical_and(pixels >= low, pixels < high))  # (batch, length)
            area = area * (high[:, 0] - low[:, 0]) / length
        # The box's whole pixels, and 1 - their share: the label weight of the image kept.
        masks = ops.logical_and(inside[0][:, :, None], inside[1][:, None, :])
        masks = ops.expand_dims(masks, 1 if self.data_format == "channels_first" else -1)
        order = random.shuffle(ops.arange(0, batch, dtype="int32"), seed=seed)
        return {"permutation_order": order, "batch_masks": masks, "mix_weight": 1.0 - area}

    def get_config(self):
        config = super().get_config()
        config.pop("factor", None)
        return {**config, "alpha": self.alpha}
