"""Layers of masked patch prediction, the ViT paper's self-supervised objective (Appendix B.1.2).

Half of the patch embeddings are corrupted (80% replaced by a learned [mask] embedding, 10% by
another patch's embedding, 10% kept), and the encoder predicts the 3-bit mean colour of every
corrupted patch: 512 classes.
"""

import keras
from keras import ops

from keras_resvit.base.validation import check_int, check_number

MAX_COLOUR_BITS = 8  # the bits of a channel of 0-255 images


@keras.saving.register_keras_serializable(package="keras_resvit")
class PatchCorruption(keras.layers.Layer):
    """Corrupts a random `rate` of the patch embeddings of each image, BERT-style.

    Exactly `round(rate * tokens)` patches per image are picked, at least one (there is
    always a patch to predict; the paper picks 50%); each is replaced by the
    learned [mask] embedding with probability `mask_fraction`, by the embedding of another
    patch of the same image with probability `random_fraction`, and kept otherwise (the model
    must still predict it). Randomness comes from a `keras.random.SeedGenerator`, so the layer
    runs inside compiled train steps on every backend. It corrupts in training and inference
    alike: it only exists in the pre-training model.

    Input `(batch, tokens, dim)`; outputs the corrupted embeddings and a float mask
    `(batch, tokens)`, 1 where a patch was picked.

    Args:
        rate: fraction of patches picked per image, in (0, 1]: a rate of 0 would leave the
            pre-training nothing to predict.
        mask_fraction: share of the picked patches replaced by the [mask] embedding, in [0, 1].
        random_fraction: share replaced by another patch's embedding, in [0, 1]; with
            `mask_fraction` at most 1 (the rest is kept).
        seed: optional random seed.

    Raises:
        ValueError: for arguments outside these ranges, or inputs that are not
            `(batch, tokens, dim)` with a fixed number of tokens.
    """

    def __init__(self, rate=0.5, mask_fraction=0.8, random_fraction=0.1, seed=None, **kwargs):
        check_number("PatchCorruption: rate", rate, 0, 1, include_high=True)
        for argument, value in (
            ("mask_fraction", mask_fraction),
            ("random_fraction", random_fraction),
        ):
            check_number(
                f"PatchCorruption: {argument}", value, 0, 1, include_low=True, include_high=True
            )
        if mask_fraction + random_fraction > 1 + 1e-9:  # 0.7 + 0.3 may round above 1
            raise ValueError(
                f"PatchCorruption: mask_fraction={mask_fraction!r} and "
                f"random_fraction={random_fraction!r} must add up to at most 1 (shares of the "
                "picked patches)."
            )
        check_int("PatchCorruption: seed", seed, 0, none_ok=True)
        super().__init__(**kwargs)
        self.rate = rate
        self.mask_fraction = mask_fraction
        self.random_fraction = random_fraction
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[1] is None:
            raise ValueError(
                f"PatchCorruption: inputs of shape {tuple(input_shape)} are not valid; expected "
                "patch embeddings (batch, tokens, dim) with a fixed number of tokens."
            )
        # Drawn like the position embeddings of the reference ViT, N(0, 0.02).
        self.mask_token = self.add_weight(
            shape=(1, 1, input_shape[-1]),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="mask_token",
        )

    def call(self, inputs):
        tokens = inputs.shape[1]
        shape = (ops.shape(inputs)[0], tokens)
        picked_count = max(1, round(self.rate * tokens))
        scores = keras.random.uniform(shape, seed=self.seed_generator)
        # The rank of each random score: the `picked_count` lowest ranks are picked.
        ranks = ops.argsort(ops.argsort(scores, axis=1), axis=1)
        picked = ranks < picked_count
        kind = keras.random.uniform(shape, seed=self.seed_generator)
        use_mask = ops.logical_and(picked, kind < self.mask_fraction)
        use_other = ops.logical_and(
            picked,
            ops.logical_and(
                kind >= self.mask_fraction, kind < self.mask_fraction + self.random_fraction
            ),
        )
        # A non-zero offset modulo the length always points at another patch.
        offset = keras.random.randint(shape, 1, max(tokens, 2), seed=self.seed_generator)
        other = (ops.arange(tokens)[None] + offset) % tokens
        others = ops.take_along_axis(inputs, ops.expand_dims(other, -1), axis=1)
        mask_token = ops.cast(self.mask_token, inputs.dtype)
        corrupted = ops.where(ops.expand_dims(use_mask, -1), mask_token, inputs)
        corrupted = ops.where(ops.expand_dims(use_other, -1), others, corrupted)
        return corrupted, ops.cast(picked, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape, tuple(input_shape[:2])

    def get_config(self):
        return {
            **super().get_config(),
            "rate": self.rate,
            "mask_fraction": self.mask_fraction,
            "random_fraction": self.random_fraction,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="keras_resvit")
class PatchColourClasses(keras.layers.Layer):
    """The quantized mean colour of every patch of raw 0-255 images, as a class index.

    Each channel's mean over a patch is quantized to `bits` bits and the three codes are
    combined: `red * 2^(2 bits) + green * 2^bits + blue` (512 classes for 3 bits). Patches are
    ordered row by row, like the ViT's patch tokens.

    Input `(batch, height, width, 3)`; output int32 `(batch, patches)`.

    Args:
        patch_size: patch side in pixels; height and width are multiples of it.
        bits: bits per channel, 1 to 8.

    Raises:
        ValueError: for bad arguments, or images that are not RGB `(batch, height, width, 3)`
            of a fixed size that `patch_size` divides.
    """

    def __init__(self, patch_size, bits=3, **kwargs):
        check_int("PatchColourClasses: patch_size", patch_size)
        check_int("PatchColourClasses: bits", bits)
        if bits > MAX_COLOUR_BITS:
            raise ValueError(
                f"PatchColourClasses: bits={bits!r} must be an int in [1, {MAX_COLOUR_BITS}] "
                "(0-255 pixels have 8 bits per channel)."
            )
        super().__init__(**kwargs)
        self.patch_size = patch_size
        self.bits = bits

    def _check_images(self, shape):
        shape = tuple(shape)
        if len(shape) != 4 or shape[-1] != 3 or None in shape[1:3]:
            raise ValueError(
                f"PatchColourClasses: images of shape {shape} are not valid; expected RGB "
                "images (batch, height, width, 3) of a fixed size."
            )
        if shape[1] % self.patch_size or shape[2] % self.patch_size:
            raise ValueError(
                f"PatchColourClasses: images of {shape[1]}x{shape[2]} pixels do not split into "
                f"patches of patch_size={self.patch_size}; height and width must be multiples "
                "of it."
            )

    def call(self, images):
        self._check_images(images.shape)
        height, width, channels = images.shape[1:]
        patch, levels = self.patch_size, 2**self.bits
        grid = (height // patch, width // patch)
        x = ops.reshape(images, (-1, grid[0], patch, grid[1], patch, channels))
        means = ops.mean(ops.cast(x, "float32"), axis=(2, 4))
        codes = ops.clip(ops.floor(means * (levels / 256.0)), 0, levels - 1)
        weights = ops.convert_to_tensor([levels**2, levels, 1], "float32")
        classes = ops.sum(codes * weights, axis=-1)
        return ops.cast(ops.reshape(classes, (-1, grid[0] * grid[1])), "int32")

    def compute_output_spec(self, images):
        self._check_images(images.shape)
        patches = (images.shape[1] // self.patch_size) * (images.shape[2] // self.patch_size)
        return keras.KerasTensor((images.shape[0], patches), dtype="int32")

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size, "bits": self.bits}


@keras.saving.register_keras_serializable(package="keras_resvit")
class MaskedPatchLoss(keras.layers.Layer):
    """Adds the cross-entropy of the corrupted patches' colour predictions as the model's loss.

    Inputs `[logits (batch, patches, classes), classes (batch, patches), mask (batch,
    patches)]`; the loss averages over the patches where the mask is 1 (uncorrupted patches
    are not predicted, as in BERT). Returns the logits unchanged.
    """

    def call(self, inputs):
        logits, targets, mask = inputs
        logits = ops.cast(logits, "float32")
        mask = ops.cast(mask, "float32")
        entropy = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
        self.add_loss(ops.sum(entropy * mask) / ops.maximum(ops.sum(mask), 1.0))
        return logits

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]
