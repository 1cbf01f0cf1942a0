"""The papers' training augmentations as named presets of `keras.layers`.

Each preset is a plain function `(image_size, seed=None) -> keras.layers.Pipeline` that maps one
raw 0-255 image of any size to a float32 `image_size` x `image_size` image, for `dataset.map`.
`keras.layers.Pipeline` (not `keras.Sequential`) keeps the layers on TensorFlow ops inside
`tf.data` under every backend; a user's Sequential of preprocessing layers becomes one.
Presets with batch-level MixUp/CutMix also name a `Mixing`, applied by `load_dataset` after
batching (labels become soft).
"""

import dataclasses
import difflib
import functools

import keras
import numpy as np

from keras_resvit.base.backend import dtype_policy
from keras_resvit.base.deprecation import deprecated_names
from keras_resvit.base.validation import check_int, check_number, check_seed
from keras_resvit.data.pipelines import as_pipeline
from keras_resvit.layers.crops import (
    RandomPadCrop,
    RandomResizedCrop,
    RandomScaleCrop,
    ResizeCenterCrop,
)
from keras_resvit.layers.cutmix import CutMix
from keras_resvit.layers.erasing import NoiseErasing
from keras_resvit.layers.lighting import PCALighting
from keras_resvit.layers.normalization import CIFAR_MEAN, IMAGENET_MEAN
from keras_resvit.layers.rand_augment import RandAugment
from keras_resvit.layers.three_augment import BLUR_KERNEL_SIZE, ColorJitter, ThreeAugment

PIXELS = (0, 255)
# 3-Augment's blur reflects the border: half its kernel must be below the image's side.
_THREE_AUGMENT_SMALLEST = BLUR_KERNEL_SIZE // 2 + 1


@dataclasses.dataclass(frozen=True)
class Mixing:
    """Batch-level MixUp / CutMix with label smoothing; labels become soft (sum to 1).

    Attributes:
        mixup_alpha: Beta(alpha, alpha) concentration of MixUp (Zhang et al. 2018); 0 = off.
        cutmix_alpha: Beta(alpha, alpha) concentration of CutMix (Yun et al. 2019; the paper's
            box and label weight, `keras_resvit.layers.CutMix`); 0 = off.
        cutmix_prob: chance that a batch gets CutMix rather than MixUp when both are on.
        label_smoothing: mass spread uniformly over the classes before mixing.
    """

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    cutmix_prob: float = 0.5
    label_smoothing: float = 0.0

    def __post_init__(self):
        for name in ("mixup_alpha", "cutmix_alpha"):
            value = getattr(self, name)
            check_number(f"Mixing: {name}", value, 0, include_low=True)
        for name in ("cutmix_prob", "label_smoothing"):
            value = getattr(self, name)
            check_number(f"Mixing: {name}", value, 0, 1, include_low=True, include_high=True)

    @dtype_policy("float32")
    def layers(self, seed=None):
        """The Keras layers: `(mixup or None, cutmix or None)`, for {"images", "labels"} dicts."""
        mixup = keras.layers.MixUp(self.mixup_alpha, seed=seed) if self.mixup_alpha else None
        cutmix = CutMix(self.cutmix_alpha, seed=seed) if self.cutmix_alpha else None
        return mixup, cutmix


def layer_seeds(seed: int | None):
    """Distinct seeds, one per random layer of a pipeline, all drawn from `seed`.

    Keras layers given the same seed draw the same numbers: a preset passing its seed to both
    its crop and its flip would flip exactly the images shifted one way. None stays None (each
    layer picks its own).

    Example:
    >>> from keras_resvit.data.augmentation import layer_seeds
    >>> seeds = layer_seeds(0)
    >>> next(seeds) != next(seeds)
    True
    """
    rng = None if seed is None else np.random.default_rng(seed)
    while True:
        yield None if rng is None else int(rng.integers(2**31 - 1))


def _check_preset(image_size, seed, smallest=1):
    """A preset's own arguments, checked before its layers are made: Keras' `Resizing` takes
    a size of 0, a layer's own check names its `height`, and NumPy's seed error no argument."""
    check_int("image_size", image_size, smallest)
    if seed is not None:
        check_seed(seed)


def _flip(seed):
    return keras.layers.RandomFlip("horizontal", seed=seed)


def resnet_cifar(image_size: int = 32, seed: int | None = None) -> keras.layers.Pipeline:
    """He et al. (2016), Section 4.2: 4-pixel padding, random 32x32 crop, horizontal flip.

    The paper pads mean-subtracted images with zeros: here raw pixels are padded with
    CIFAR-10's mean colour, the same thing. The padding scales with the image (4 px at 32).
    Images of another size are resized first.

    Example:
    >>> from keras_resvit.data.augmentation import resnet_cifar
    >>> import numpy as np
    >>> tuple(resnet_cifar(32)(np.zeros((32, 32, 3), "float32")).shape)
    (32, 32, 3)
    """
    _check_preset(image_size, seed)
    seeds = layer_seeds(seed)
    return keras.layers.Pipeline(
        [
            keras.layers.Resizing(image_size, image_size),
            RandomPadCrop(
                max(1, round(4 * image_size / 32)), fill_value=CIFAR_MEAN, seed=next(seeds)
            ),
            _flip(next(seeds)),
        ],
        name="resnet_cifar",
    )


def _scale_crop_flip(image_size, seeds):
    """He et al.'s scale augmentation (shorter side in [256, 480] x size/224, a random square
    crop) and a horizontal flip, each with its own seed from `seeds`."""
    scale_range = (image_size * 256 / 224, image_size * 480 / 224)
    return [
        RandomScaleCrop(image_size, image_size, scale_range=scale_range, seed=next(seeds)),
        _flip(next(seeds)),
    ]


def resnet_imagenet(image_size: int = 224, seed: int | None = None) -> keras.layers.Pipeline:
    """He et al. (2016), Section 3.4: shorter side in [256, 480], random 224 crop, flip, and
    "the standard color augmentation in [21]": AlexNet's PCA lighting.

    The scale range follows the output (x 256/224 .. 480/224).

    Example:
    >>> from keras_resvit.data.augmentation import resnet_imagenet
    >>> import numpy as np
    >>> tuple(resnet_imagenet(224)(np.zeros((300, 400, 3), "float32")).shape)
    (224, 224, 3)
    """
    _check_preset(image_size, seed)
    seeds = layer_seeds(seed)
    return keras.layers.Pipeline(
        [
            *_scale_crop_flip(image_size, seeds),
            PCALighting(alpha_std=0.1, value_range=PIXELS, seed=next(seeds)),
        ],
        name="resnet_imagenet",
    )


def resnet_imagenet_jitter(image_size: int = 224, seed: int | None = None) -> keras.layers.Pipeline:
    """`resnet_imagenet`'s scale augmentation and flip with a colour jitter in place of PCA
    lighting: fb.resnet.torch's and torchvision's `ColorJitter(brightness=0.4, contrast=0.4,
    saturation=0.4)` (`keras_resvit.layers.ColorJitter`): three blends by factors from
    [0.6, 1.4] — with black (brightness multiplies), with the mean grey level (contrast) and
    with the grayscale image (saturation) — in a random order per image, each clipped to 0-255.

    fb.resnet.torch's ImageNet recipe (`datasets/imagenet.lua`) also differs in its crop (an
    Inception crop, `RandomSizedCrop`) and keeps PCA lighting (0.1) after the jitter, unclipped.
    (Keras' own layers are not this jitter: `RandomBrightness` adds to the pixels, and Keras
    3.15's `RandomContrast(0.4)` draws its factor from [1.0, 1.4], never lowering contrast.)

    Example:
    >>> from keras_resvit.data.augmentation import resnet_imagenet_jitter
    >>> import numpy as np
    >>> tuple(resnet_imagenet_jitter(224)(np.zeros((300, 400, 3), "float32")).shape)
    (224, 224, 3)
    """
    _check_preset(image_size, seed)
    seeds = layer_seeds(seed)
    return keras.layers.Pipeline(
        [
            *_scale_crop_flip(image_size, seeds),
            ColorJitter(0.4, 0.4, 0.4, value_range=PIXELS, seed=next(seeds)),
        ],
        name="resnet_imagenet_jitter",
    )


def alexnet(image_size: int = 224, seed: int | None = None) -> keras.layers.Pipeline:
    """Krizhevsky et al. (2012), Sections 2 and 4.1: the shorter side resized to 256 and the
    central 256x256 kept, then a random 224x224 patch, its horizontal reflection, and PCA
    lighting (alpha_std 0.1). The 256 follows the output (x 256/224); the paper's layout
    takes 227 pixels (`build_alexnet(layout="paper")`).

    Example:
    >>> from keras_resvit.data.augmentation import alexnet
    >>> import numpy as np
    >>> tuple(alexnet(227)(np.zeros((300, 400, 3), "float32")).shape)
    (227, 227, 3)
    """
    _check_preset(image_size, seed)
    seeds = layer_seeds(seed)
    return keras.layers.Pipeline(
        [
            ResizeCenterCrop(
                round(image_size * 256 / 224), round(image_size * 256 / 224), crop_ratio=1.0
            ),
            keras.layers.RandomCrop(image_size, image_size, seed=next(seeds)),
            _flip(next(seeds)),
            PCALighting(alpha_std=0.1, value_range=PIXELS, seed=next(seeds)),
        ],
        name="alexnet",
    )


def inception_crop(image_size: int = 224, seed: int | None = None) -> keras.layers.Pipeline:
    """Inception crop (area 0.08-1, aspect 3/4-4/3) and flip: the ViT paper's ImageNet recipe.

    Example:
    >>> from keras_resvit.data.augmentation import inception_crop
    >>> import numpy as np
    >>> tuple(inception_crop(64)(np.zeros((100, 80, 3), "float32")).shape)
    (64, 64, 3)
    """
    _check_preset(image_size, seed)
    seeds = layer_seeds(seed)
    return keras.layers.Pipeline(
        [RandomResizedCrop(image_size, image_size, seed=next(seeds)), _flip(next(seeds))],
        name="inception_crop",
    )


def _randaugment_pipeline(name, image_size, seed, erasing, **rand_augment):
    _check_preset(image_size, seed)
    seeds = layer_seeds(seed)
    layers = [
        RandomResizedCrop(image_size, image_size, seed=next(seeds)),
        _flip(next(seeds)),
        RandAugment(num_ops=2, value_range=PIXELS, seed=next(seeds), **rand_augment),
    ]
    if erasing:
        layers.append(NoiseErasing(erasing, value_range=PIXELS, seed=next(seeds)))
    return keras.layers.Pipeline(layers, name=name)


def deit(image_size: int = 224, seed: int | None = None) -> keras.layers.Pipeline:
    """Touvron et al. (2021), DeiT: inception crop, flip, RandAugment as timm's
    `rand-m9-mstd0.5-inc1` (2 operations, each with probability 0.5, magnitude 9 +- 0.5;
    `keras_resvit.layers.RandAugment`), timm's random erasing: p=0.25, one box of 2-33% of
    the area with a height / width ratio in [0.3, 3.3], per-pixel noise (its "pixel" mode;
    `keras_resvit.layers.NoiseErasing`).

    Batch-level MixUp 0.8 / CutMix 1.0 and label smoothing 0.1 come with it (`MIXING["deit"]`).

    Example:
    >>> from keras_resvit.data.augmentation import deit
    >>> import numpy as np
    >>> tuple(deit(32)(np.zeros((40, 40, 3), "float32")).shape)
    (32, 32, 3)
    """
    return _randaugment_pipeline("deit", image_size, seed, 0.25, magnitude=9, magnitude_std=0.5)


def vit(image_size: int = 224, seed: int | None = None) -> keras.layers.Pipeline:
    """Steiner et al. (2022), "How to train your ViT" (AugReg "medium"): inception crop, flip,
    RandAugment(2, 15) as big_vision's `randaug` (Google's TPU definitions, `increasing=False`:
    every chosen operation runs, at magnitude 15 on the 0-10 scale, unclipped, grey fill);
    MixUp 0.5 after batching (`MIXING["vit"]`). No erasing, CutMix or label smoothing in that
    recipe. big_vision's list also has Cutout (a grey square of side 0.54 of a 224 image at
    magnitude 15), which is not among these operations.

    Example:
    >>> from keras_resvit.data.augmentation import vit
    >>> import numpy as np
    >>> tuple(vit(32)(np.zeros((40, 40, 3), "float32")).shape)
    (32, 32, 3)
    """
    return _randaugment_pipeline(
        "vit", image_size, seed, 0.0, magnitude=15, magnitude_std=0.0, magnitude_max=15,
        prob=1.0, increasing=False, fill_value=128,
    )  # fmt: skip


def rsb(
    image_size: int = 224, seed: int | None = None, magnitude: int = 7
) -> keras.layers.Pipeline:
    """Wightman et al. (2021), "ResNet strikes back", Table 1: inception crop, flip and
    RandAugment as timm's `rand-m7-mstd0.5-inc1` (2 operations, each with probability 0.5,
    magnitude 7 +- 0.5; 6 for A3), no erasing or colour jitter. MixUp and CutMix come after
    batching (`MIXING["rsb_a1"]` ...).

    Example:
    >>> from keras_resvit.data.augmentation import rsb
    >>> import numpy as np
    >>> tuple(rsb(32)(np.zeros((40, 40, 3), "float32")).shape)
    (32, 32, 3)
    """
    return _randaugment_pipeline(
        "rsb", image_size, seed, 0.0, magnitude=magnitude, magnitude_std=0.5
    )


def deit3(image_size: int = 224, seed: int | None = None) -> keras.layers.Pipeline:
    """Touvron et al. (2022), DeiT III on ImageNet-1k: inception crop, flip, 3-Augment
    (grayscale, solarization or blur; `keras_resvit.layers.ThreeAugment`) and colour jitter 0.3
    (torchvision's; `keras_resvit.layers.ColorJitter`). MixUp 0.8 / CutMix 1.0 after batching
    (`MIXING["deit3"]`), no RandAugment, erasing or label smoothing.

    Example:
    >>> from keras_resvit.data.augmentation import deit3
    >>> import numpy as np
    >>> tuple(deit3(32)(np.zeros((40, 48, 3), "float32")).shape)
    (32, 32, 3)
    """
    _check_preset(image_size, seed, _THREE_AUGMENT_SMALLEST)
    seeds = layer_seeds(seed)
    return keras.layers.Pipeline(
        [
            RandomResizedCrop(image_size, image_size, seed=next(seeds)),
            _flip(next(seeds)),
            *_three_augment(seeds),
        ],
        name="deit3",
    )


def deit3_src(image_size: int = 224, seed: int | None = None) -> keras.layers.Pipeline:
    """DeiT III's Simple Random Crop (its ImageNet-21k pre-training): the shorter side resized
    to the output size, a random square crop after 4-pixel padding (at 224; scaled with the
    size), flip, 3-Augment and colour jitter 0.3. The reference pads by reflection; here with
    ImageNet's mean colour. CutMix 1.0 and label smoothing 0.1 after batching
    (`MIXING["deit3_src"]`).

    Example:
    >>> from keras_resvit.data.augmentation import deit3_src
    >>> import numpy as np
    >>> tuple(deit3_src(32)(np.zeros((40, 48, 3), "float32")).shape)
    (32, 32, 3)
    """
    _check_preset(image_size, seed, _THREE_AUGMENT_SMALLEST)
    seeds = layer_seeds(seed)
    side = (image_size, image_size)
    return keras.layers.Pipeline(
        [
            RandomScaleCrop(image_size, image_size, scale_range=side, seed=next(seeds)),
            RandomPadCrop(
                max(1, round(4 * image_size / 224)), fill_value=IMAGENET_MEAN, seed=next(seeds)
            ),
            _flip(next(seeds)),
            *_three_augment(seeds),
        ],
        name="deit3_src",
    )


def _three_augment(seeds):
    return [
        ThreeAugment(value_range=PIXELS, seed=next(seeds)),
        ColorJitter(0.3, 0.3, 0.3, value_range=PIXELS, seed=next(seeds)),
    ]


AUGMENTATION_PRESETS = {
    "resnet_cifar": resnet_cifar,
    "resnet_imagenet": resnet_imagenet,
    "resnet_imagenet_jitter": resnet_imagenet_jitter,
    "alexnet": alexnet,
    "inception_crop": inception_crop,
    "bit": inception_crop,  # with MixUp 0.1 (MIXING)
    "deit": deit,
    "vit": vit,
    "rsb_a1": rsb,
    "rsb_a2": rsb,
    "rsb_a3": functools.partial(rsb, magnitude=6),
    "deit3": deit3,
    "deit3_src": deit3_src,
}
MIXING = {
    "deit": Mixing(mixup_alpha=0.8, cutmix_alpha=1.0, cutmix_prob=0.5, label_smoothing=0.1),
    "vit": Mixing(mixup_alpha=0.5),
    # BiT-HyperRule (Kolesnikov et al. 2020): MixUp 0.1 for datasets of 20k images or more.
    "bit": Mixing(mixup_alpha=0.1),
    # "ResNet strikes back" (Table 1): MixUp 0.2 (A1) or 0.1, CutMix 1.0, one of them per batch
    # (timm's switch probability 0.5); A1 also smooths by 0.1.
    "rsb_a1": Mixing(mixup_alpha=0.2, cutmix_alpha=1.0, cutmix_prob=0.5, label_smoothing=0.1),
    "rsb_a2": Mixing(mixup_alpha=0.1, cutmix_alpha=1.0, cutmix_prob=0.5),
    "rsb_a3": Mixing(mixup_alpha=0.1, cutmix_alpha=1.0, cutmix_prob=0.5),
    # DeiT III (the reference's commands): ImageNet-1k MixUp 0.8 / CutMix 1.0, no smoothing;
    # ImageNet-21k CutMix 1.0 alone and smoothing 0.1.
    "deit3": Mixing(mixup_alpha=0.8, cutmix_alpha=1.0, cutmix_prob=0.5),
    "deit3_src": Mixing(cutmix_alpha=1.0, label_smoothing=0.1),
}


@dtype_policy("float32")  # pixels in float32 whatever a global mixed policy says
def get_augmentation(augment, image_size: int, seed: int | None = None):
    """Resolves `augment` into `(per-image layer or None, Mixing or None)`.

    Args:
        augment: None, a name in `AUGMENTATION_PRESETS`, a `keras.Sequential` of Keras preprocessing
            layers (turned into the `keras.layers.Pipeline` of the same layers, which runs
            inside `tf.data` under every backend), or another Keras layer (used as it is). No
            mixing but a preset's.
        image_size: output size of the preset.
        seed: seed of the random layers.

    Returns:
        `(layer, mixing)`.

    Raises:
        ValueError: for an unknown name, an object that is not a Keras layer, or a
            `keras.Sequential` holding a layer that is not a preprocessing layer.

    Example:
    >>> import keras
    >>> from keras_resvit.data.augmentation import get_augmentation
    >>> layer, mixing = get_augmentation("deit", 32)
    >>> mixing.label_smoothing
    0.1
    >>> flip = keras.Sequential([keras.layers.RandomFlip("horizontal")])
    >>> type(get_augmentation(flip, 32)[0]).__name__
    'Pipeline'
    """
    if augment is None:
        return None, None
    if isinstance(augment, keras.Sequential):
        return as_pipeline(augment), None
    if isinstance(augment, keras.layers.Layer):
        return augment, None
    if isinstance(augment, str) and augment in AUGMENTATION_PRESETS:
        if seed is not None:
            check_seed(seed)
        return AUGMENTATION_PRESETS[augment](image_size, seed=seed), MIXING.get(augment)
    close = difflib.get_close_matches(str(augment).lower(), AUGMENTATION_PRESETS, n=2, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"augment={augment!r} is not valid; pass None, a keras.layers.Layer or one of "
        f"{sorted(AUGMENTATION_PRESETS)}.{hint}"
    )


__getattr__ = deprecated_names(
    __name__, {"PRESETS": ("AUGMENTATION_PRESETS", AUGMENTATION_PRESETS)}
)
