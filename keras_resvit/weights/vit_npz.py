"""Original ViT checkpoints (google-research/vision_transformer `.npz`) into our ViT.

The checkpoints are flat `.npz` archives of the Flax parameters, e.g.
`Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel` of shape
`(hidden, heads, head_dim)`, which is exactly the layout of Keras' `MultiHeadAttention`
kernels, so every array is copied as it is. The architecture (width, depth, heads, MLP size,
patch size, pre-logits, classes) is read from the shapes; a position grid other than the
target's is resampled as `resize_vit` does.

The MLP's GELU is the exact (erf) one, as timm's ports of these checkpoints compute it; the
authors' Flax code calls `nn.gelu`, whose default is the tanh approximation (at most 4.7e-4
apart per activation: a 3-block ViT's logits 6e-4 apart, more with depth). Fine-tuning and
evaluation here use the exact GELU throughout (`keras_resvit.layers.gelu`).
"""

import math
import re
from pathlib import Path

import keras

from keras_resvit.layers.vit_layers import PositionEmbedding
from keras_resvit.models.vit import build_vit, resample_position_embeddings
from keras_resvit.models.vit_config import any_size
from keras_resvit.models.vit_resize import resize_vit
from keras_resvit.weights.common import (
    assign_weights,
    check_target,
    read_npz_arrays,
    refuse_build_arguments,
)

POSEMB = "Transformer/posembed_input/pos_embedding"
_REQUIRED = ("embedding/kernel", POSEMB, "Transformer/encoder_norm/scale")
# Our layer suffix -> the checkpoint's module inside `Transformer/encoderblock_{i}/`.
_BLOCK_MODULES = {
    "norm1": "LayerNorm_0",
    "attention/query": "MultiHeadDotProductAttention_1/query",
    "attention/key": "MultiHeadDotProductAttention_1/key",
    "attention/value": "MultiHeadDotProductAttention_1/value",
    "attention/attention_output": "MultiHeadDotProductAttention_1/out",
    "norm2": "LayerNorm_2",
    "mlp_dense1": "MlpBlock_3/Dense_0",
    "mlp_dense2": "MlpBlock_3/Dense_1",
}
# Flax names LayerNorm parameters scale/bias, Keras gamma/beta.
_PARAMETER = {"scale": "gamma", "bias": "beta"}


def read_npz(path) -> dict:
    """The arrays of an original ViT `.npz` (no pickle), or ValueError for other files."""
    arrays = read_npz_arrays(path, "a ViT .npz")
    name = Path(path).name
    missing = [key for key in _REQUIRED if key not in arrays]
    if missing:
        raise ValueError(
            f"path={name!r} is not an original ViT checkpoint: it lacks {missing} "
            "(google-research/vision_transformer key layout)."
        )
    missing = sorted(_expected_keys(arrays) - set(arrays))
    if missing:
        raise ValueError(
            f"path={name!r} is not a complete original ViT checkpoint: it lacks "
            f"{missing[:5]}{' ...' if len(missing) > 5 else ''} (truncated or edited)."
        )
    return arrays


def _expected_keys(arrays) -> set:
    """The keys a checkpoint with `arrays`' blocks, pre-logits and head must have: every
    parameter of blocks 0 to the last one found."""
    keys = {"embedding/kernel", "embedding/bias", POSEMB}
    keys |= {"Transformer/encoder_norm/scale", "Transformer/encoder_norm/bias"}
    blocks = [
        int(m[1]) for m in map(re.compile(r"Transformer/encoderblock_(\d+)/").match, arrays) if m
    ]
    for block in range(max(blocks, default=0) + 1):
        for module in _BLOCK_MODULES.values():
            names = ("scale", "bias") if module.startswith("LayerNorm") else ("kernel", "bias")
            keys |= {f"Transformer/encoderblock_{block}/{module}/{name}" for name in names}
    for flax in ("pre_logits", "head"):
        if f"{flax}/kernel" in arrays or f"{flax}/bias" in arrays:
            keys |= {f"{flax}/kernel", f"{flax}/bias"}
    return keys


def npz_architecture(arrays: dict) -> dict:
    """`build_vit` arguments that reproduce a checkpoint, read from its array shapes."""
    patch, _, _, hidden = arrays["embedding/kernel"].shape
    block_key = re.compile(r"Transformer/encoderblock_(\d+)/")
    blocks = {int(m[1]) for m in map(block_key.match, arrays) if m}
    block0 = "Transformer/encoderblock_0"
    heads = arrays[f"{block0}/MultiHeadDotProductAttention_1/query/kernel"].shape[1]
    prefix = 1 if "cls" in arrays else 0
    tokens = arrays[POSEMB].shape[1] - prefix
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"the checkpoint's {tokens} position embeddings are not a square grid.")
    pre_logits = arrays.get("pre_logits/kernel")
    head = arrays.get("head/kernel")
    return {
        "hidden_size": int(hidden),
        "num_layers": len(blocks),
        "num_heads": int(heads),
        "mlp_dim": int(arrays[f"{block0}/MlpBlock_3/Dense_0/kernel"].shape[1]),
        "patch_size": int(patch),
        "image_size": side * int(patch),
        "pooling": "token" if prefix else "gap",
        "representation_size": None if pre_logits is None else int(pre_logits.shape[1]),
        "include_top": head is not None,
        "num_classes": 1000 if head is None else int(head.shape[1]),
    }


def npz_values(arrays: dict, model: keras.Model) -> dict:
    """Our `{variable path: array}` for `model` from a checkpoint's arrays.

    Raises:
        ValueError: the checkpoint has arrays this mapping does not know.
    """
    values, used = {}, set()

    def take(key, target):
        values[target] = arrays[key]
        used.add(key)

    take("embedding/kernel", "patch_embedding/kernel")
    take("embedding/bias", "patch_embedding/bias")
    if "cls" in arrays:
        take("cls", "class_token/token")
    layer = next(layer for layer in model.layers if isinstance(layer, PositionEmbedding))
    prefix = 1 if "cls" in arrays else 0
    values["position_embedding/embeddings"] = resample_position_embeddings(
        arrays[POSEMB], layer.grid_size, num_prefix_tokens=prefix
    )
    used.add(POSEMB)
    pattern = re.compile(r"Transformer/encoderblock_(\d+)/(.+)/(\w+)$")
    modules = {module: ours for ours, module in _BLOCK_MODULES.items()}
    for key in arrays:
        match = pattern.match(key)
        if match and match[2] in modules:
            parameter = _PARAMETER[match[3]] if match[2].startswith("LayerNorm") else match[3]
            take(key, f"encoder_block{int(match[1]) + 1}_{modules[match[2]]}/{parameter}")
    take("Transformer/encoder_norm/scale", "encoder_norm/gamma")
    take("Transformer/encoder_norm/bias", "encoder_norm/beta")
    has_head = any(layer.name == "predictions" for layer in model.layers)
    # A checkpoint's head is dropped for a feature extractor (a model without classifier).
    for flax, ours in (("pre_logits", "pre_logits"), ("head", "predictions")):
        if f"{flax}/kernel" in arrays and (flax != "head" or has_head):
            take(f"{flax}/kernel", f"{ours}/kernel")
            take(f"{flax}/bias", f"{ours}/bias")
    unknown = sorted(set(arrays) - used - {"head/kernel", "head/bias"})
    if unknown:
        raise ValueError(
            f"the checkpoint has arrays that model {model.name!r} has no place for: "
            f"{unknown[:5]}; it belongs to another architecture."
        )
    return values


def load_vit_npz(
    path,
    *,
    image_size: int | tuple | None = None,
    model: keras.Model | None = None,
    classifier_activation: str | None = "softmax",
    preprocessing: str | None = "inception",
) -> keras.Model:
    """Loads an original ViT `.npz` checkpoint into our ViT.

    Args:
        path: a `.npz` with the google-research/vision_transformer key layout (ViT-Ti...H,
            token or GAP pooling, with or without pre-logits and head).
        image_size: resolution of the new model; default the checkpoint's. Position
            embeddings are resampled bicubically when the grid differs. `(None, None)`: any
            input size, the embeddings kept for the checkpoint's grid (see `resize_vit`).
        model: fill this ViT of ours instead of building one (its own resolution and head
            are kept; a checkpoint head of another size raises). The build arguments below
            cannot be combined with it.
        classifier_activation: activation of the built model's classifier.
        preprocessing: normalization inside the built model; the checkpoints expect [-1, 1]
            inputs ("inception").

    Returns:
        A `keras.Model` taking raw 0-255 pixels.

    Raises:
        ValueError: the file is not an original ViT checkpoint (or lacks arrays), `model` is
            not a ViT of ours or comes with build arguments, or the checkpoint does not fit
            `model` (naming the layer and the expected and found shapes).

    Example:
    >>> # A checkpoint downloaded from the ViT authors' bucket (gs://vit_models/imagenet21k/):
    >>> from keras_resvit.weights.vit_npz import load_vit_npz
    >>> model = load_vit_npz("ViT-B_16.npz", image_size=384)  # doctest: +SKIP
    """
    if model is not None:
        check_target(model, True, "an original ViT checkpoint")
        refuse_build_arguments(
            {
                "image_size": image_size,
                "classifier_activation": classifier_activation,
                "preprocessing": preprocessing,
            },
            {"image_size": None, "classifier_activation": "softmax", "preprocessing": "inception"},
        )
    arrays = read_npz(path)
    opened = any_size(image_size)  # built at the checkpoint's size, opened after
    if model is None:
        kwargs = npz_architecture(arrays)
        if image_size is not None and not opened:
            kwargs["image_size"] = image_size
        model = build_vit(
            None,
            classifier_activation=classifier_activation,
            preprocessing=preprocessing,
            **kwargs,
        )
    optional = () if "head/kernel" in arrays else ("predictions/",)
    values = npz_values(arrays, model)
    model = assign_weights(model, values, f"ViT checkpoint {Path(path).name!r}", optional)
    return resize_vit(model, (None, None)) if opened else model
