"""Custom layers used by the builders, every one registered for `.keras` saving, and
`squeeze_excite`, a block of standard Keras layers for any functional model."""

from keras_resvit.base.deprecation import deprecated_names
from keras_resvit.base.keras_fixes import recover_from_errors_in_fit
from keras_resvit.layers import vit_layers
from keras_resvit.layers.baseline_layers import LocalResponseNormalization
from keras_resvit.layers.crops import (
    RandomPadCrop,
    RandomResizedCrop,
    RandomScaleCrop,
    ResizeCenterCrop,
)
from keras_resvit.layers.cutmix import CutMix
from keras_resvit.layers.erasing import NoiseErasing
from keras_resvit.layers.keras_rand_augment import Equalization, KerasRandAugment
from keras_resvit.layers.lighting import PCALighting
from keras_resvit.layers.normalization import (
    NORMALIZATION_PRESETS,
    ReverseChannels,
    preprocessing_layers,
)
from keras_resvit.layers.rand_augment import RandAugment
from keras_resvit.layers.resnet_layers import (
    FusedBatchNormalization,
    PointwiseConv2D,
    SlicedMaxPooling2D,
    StdConv2D,
    ZeroPadShortcut,
)
from keras_resvit.layers.squeeze_excite import squeeze_excite
from keras_resvit.layers.three_augment import (
    ColorJitter,
    IsotropicGaussianBlur,
    ThreeAugment,
    ThresholdSolarization,
)
from keras_resvit.layers.vit_layers import (
    ClassToken,
    ClosedFormLayerNormalization,
    DropPath,
    MultiHeadSelfAttention,
    PatchEmbedding,
    PositionEmbedding,
    TokenPooling,
    gelu,
)
from keras_resvit.layers.vit_option_layers import DropTokens, LayerScale, ProbeToken, RegisterTokens

__all__ = [
    "NORMALIZATION_PRESETS",
    "ClassToken",
    "CutMix",
    "DropPath",
    "DropTokens",
    "Equalization",
    "FusedBatchNormalization",
    "LayerScale",
    "ClosedFormLayerNormalization",
    "LocalResponseNormalization",
    "MultiHeadSelfAttention",
    "NoiseErasing",
    "PatchEmbedding",
    "PCALighting",
    "ColorJitter",
    "IsotropicGaussianBlur",
    "KerasRandAugment",
    "ThreeAugment",
    "ThresholdSolarization",
    "PointwiseConv2D",
    "PositionEmbedding",
    "ProbeToken",
    "RandAugment",
    "RandomPadCrop",
    "RandomResizedCrop",
    "RandomScaleCrop",
    "RegisterTokens",
    "ResizeCenterCrop",
    "ReverseChannels",
    "SlicedMaxPooling2D",
    "StdConv2D",
    "TokenPooling",
    "ZeroPadShortcut",
    "gelu",
    "preprocessing_layers",
    "squeeze_excite",
]

__getattr__ = deprecated_names(
    __name__,
    {
        "PRESETS": ("NORMALIZATION_PRESETS", NORMALIZATION_PRESETS),
        "FusedLayerNormalization": (
            "ClosedFormLayerNormalization",
            vit_layers.FusedLayerNormalization,
        ),
    },
)

# Every model of the package is built from these layers: importing them (which loads Keras)
# applies the package's correction to Keras' JAX trainer, whichever module a user imports.
recover_from_errors_in_fit()
