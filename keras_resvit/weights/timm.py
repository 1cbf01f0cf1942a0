"""timm / torchvision state dicts (ResNet v1.5 and ViT) into our models.

A state dict is a mapping `{name: array}` in PyTorch's layout: convolution kernels are
(out, in, height, width), linear weights (out, in). Our kernels are (height, width, in, out)
and (in, out), so every kernel is transposed; BatchNorm's running statistics and epsilon
(1e-5), the symmetric padding of strided convolutions, the LayerNorm epsilon (1e-6) and the
exact-erf GELU are the same on both sides, so outputs agree to float32 round-off. timm's fused
`qkv` projection is split into the query, key and value kernels of Keras'
`MultiHeadAttention`, `(hidden, heads, head_dim)`. ViT options are read from the keys:
registers (`reg_token`), LayerScale (`blocks.N.ls1/ls2.gamma`: DeiT III, CaiT), QK-norm
(`attn.q_norm/k_norm`), a class token without a position embedding (`no_embed_class`,
DeiT III: its embedding of ours is zero), no class token (average pooling, `global_pool="avg"`),
the final norm after pooling (`fc_norm`) and the attention-pooling head (`attn_pool`, timm's
`AttentionPoolLatent`: SigLIP; its fused `kv` is split as `qkv` is).

A bottleneck ResNet's state dict reads the same whether its net strides a downsampling
block's 3x3 conv (v1.5: torchvision, timm) or its first 1x1 (v1: the paper, keras.applications),
so it is taken for v1.5, and a v1 model of ours refuses it unless the caller says `version="v1"`.

Files are read by `state_dicts.read_state_dict`, never through pickle.
"""

import os
import re

import keras
import numpy as np

from keras_resvit.base.files import as_path
from keras_resvit.models.registry import check_overrides
from keras_resvit.models.resnet import IMAGENET_DEPTHS, IMAGENET_FILTERS, build_resnet
from keras_resvit.models.vit import build_vit
from keras_resvit.models.vit_config import builds_any_size
from keras_resvit.models.vit_resize import resize_vit
from keras_resvit.weights.common import (
    assign_weights,
    check_bottleneck_stride,
    check_target,
    refuse_build_arguments,
)
from keras_resvit.weights.state_dicts import read_state_dict
from keras_resvit.weights.timm_layout import BATCHNORM, DENSE, known_family, put
from keras_resvit.weights.timm_vit import check_vit_state_dict, vit_arguments, vit_values

# torchvision/timm ResNet module -> our layer (`{p}` is our block prefix).
_RESNET_BLOCK = {
    r"conv(\d)": "{p}_conv{0}",
    r"bn(\d)": "{p}_bn{0}",
    r"downsample\.0": "{p}_shortcut_conv",
    r"downsample\.1": "{p}_shortcut_bn",
    r"se\.fc1": "{p}_se_reduce",
    r"se\.fc2": "{p}_se_expand",
}
_RESNET_KEY = re.compile(r"layer(\d)\.(\d+)\.(.+)\.(\w+)$")


def resnet_values(state_dict: dict) -> dict:
    """Our `{variable path: array}` for a torchvision/timm ResNet (v1.5) state dict.

    Raises:
        ValueError: the state dict has keys this mapping does not know.
    """
    values, unknown = {}, []
    for key, array in state_dict.items():
        array = np.asarray(array)
        module, _, parameter = key.rpartition(".")
        match = _RESNET_KEY.match(key)
        if module in ("conv1", "fc"):
            put(
                values,
                "stem_conv" if module == "conv1" else "predictions",
                parameter,
                array,
                DENSE,
            )
        elif module == "bn1":
            put(values, "stem_bn", parameter, array, BATCHNORM)
        elif match:
            prefix = f"stage{match[1]}_block{int(match[2]) + 1}"
            for pattern, target in _RESNET_BLOCK.items():
                inner = re.fullmatch(pattern, match[3])
                if inner:
                    renames = BATCHNORM if "bn" in target else DENSE
                    put(values, target.format(*inner.groups(), p=prefix), match[4], array, renames)
                    break
            else:
                unknown.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"the state dict has keys that no layer of our ResNet matches: {unknown[:5]}; it "
            "is not a torchvision/timm ResNet."
        )
    return values


def resnet_arguments(state_dict: dict) -> dict:
    """`build_resnet` arguments that reproduce a torchvision/timm ResNet state dict."""
    blocks = {}
    for match in filter(None, map(_RESNET_KEY.match, state_dict)):
        stage, block = int(match[1]), int(match[2]) + 1
        blocks[stage] = max(blocks.get(stage, 0), block)
    kind = "bottleneck" if "layer1.0.conv3.weight" in state_dict else "basic"
    plan = (kind, tuple(blocks[s] for s in sorted(blocks)))
    depth = next((d for d, p in IMAGENET_DEPTHS.items() if p == plan), None)
    if depth is None:
        raise ValueError(
            f"the state dict's {kind} blocks per stage {plan[1]} match no ResNet depth; valid: "
            f"{ {d: p[1] for d, p in IMAGENET_DEPTHS.items()} }."
        )
    fc = state_dict.get("fc.weight")
    return {
        "depth": depth,
        "width": np.shape(state_dict["conv1.weight"])[0] / IMAGENET_FILTERS[0],
        "se_ratio": 1 / 16 if "layer1.0.se.fc1.weight" in state_dict else None,
        "include_top": fc is not None,
        "num_classes": 1000 if fc is None else int(np.shape(fc)[0]),
    }


def load_timm(
    source, *, model: keras.Model | None = None, version: str | None = None, **kwargs
) -> keras.Model:
    """Loads a timm / torchvision ResNet (v1.5) or timm ViT state dict into our model.

    Args:
        source: a mapping `{name: array}` in PyTorch's layout, or a file that
            `read_state_dict` reads (`.safetensors`, `.npz`, `.pth`).
        model: fill this model of ours instead of building one; its architecture must match
            (for a ViT, its number of heads is used). Build arguments (`**kwargs`) cannot be
            combined with it.
        version: a ResNet state dict's layout: None or "v1.5" (torchvision's and timm's
            ResNets stride a downsampling bottleneck's 3x3 conv), or "v1" for a port of the
            paper's net (the stride on its first 1x1). The state dict's shapes are the same in
            both, so a v1 `model` (e.g. "resnet50v1") is refused unless `version="v1"` says
            the state dict is one.
        **kwargs: build arguments that replace those read from the state dict, e.g.
            `image_size=384` (position embeddings are resampled; None: any input size, the
            embeddings kept for the checkpoint's grid) or `preprocessing=`
            ("imagenet" for ResNets and "inception" for ViTs are the builders' defaults; use
            the normalization the checkpoint was trained with).

    Returns:
        A `keras.Model` taking raw 0-255 pixels.

    Raises:
        ValueError: `source` is neither a dict nor a path, neither layout, an incomplete or
            malformed state dict, a build argument the family's builder does not have,
            `model` of the other family, of another ResNet version, or with build arguments,
            or the weights do not fit `model` (naming the layer and the shapes).

    Example:
    >>> # A state dict downloaded from the Hugging Face Hub (timm/resnet50.a1_in1k):
    >>> from keras_resvit.weights.timm import load_timm
    >>> model = load_timm("resnet50.safetensors")  # doctest: +SKIP
    """
    if isinstance(source, dict):
        name, state_dict = "a state dict", source
    else:
        if not isinstance(source, (str, os.PathLike)):
            raise ValueError(
                f"source={source!r} is not valid; pass a state dict ({{name: array}}) or the "
                f"path of one (a str or pathlib.Path; got {type(source).__name__})."
            )
        source = as_path("source", source)
        name, state_dict = f"state dict {source.name!r}", read_state_dict(source)
    family = known_family(state_dict, name)
    if version not in (None, "v1.5", "v1"):
        raise ValueError(f"version={version!r} is not valid; expected None, 'v1.5' or 'v1'.")
    if version is not None:  # a build argument of ResNets; refused below for a ViT
        kwargs["version"] = version
    if model is not None:
        check_target(model, family == "vit", f"{name} (timm {family})")
        # `version` says what the state dict is; only a ViT's is a build argument.
        refuse_build_arguments(
            {k: v for k, v in kwargs.items() if k != "version" or family == "vit"}, {}
        )
        if family == "resnet":
            hint = ", or pass version='v1' if the state dict is a port of a v1 net"
            check_bottleneck_stride(model, version or "v1.5", name, hint)
    else:
        try:
            check_overrides(family, kwargs)
        except ValueError as error:
            raise ValueError(f"{name} holds a timm {family}: {error}") from None
    if family == "vit":
        check_vit_state_dict(state_dict, name)
    # A ViT of any input size keeps the checkpoint's grid: built at its size, opened after.
    opened = family == "vit" and "image_size" in kwargs and builds_any_size(kwargs["image_size"])
    if opened:
        kwargs = {k: v for k, v in kwargs.items() if k != "image_size"}
    if model is None:
        model = _build(family, state_dict, name, kwargs)
    values = resnet_values(state_dict) if family == "resnet" else vit_values(state_dict, model)
    if not any(layer.name == "predictions" for layer in model.layers):
        # A feature extractor drops the checkpoint's classifier.
        values = {k: v for k, v in values.items() if not k.startswith("predictions/")}
    optional = () if "predictions/kernel" in values else ("predictions/",)
    model = assign_weights(model, values, f"timm {family} {name}", optional)
    return resize_vit(model, (None, None)) if opened else model


def _build(family, state_dict, name, kwargs):
    """Our model of the state dict's architecture, `kwargs` replacing what it says."""
    ambiguous = {"cls_token", "fc_norm.weight"} <= set(state_dict)
    if family == "vit" and ambiguous and "pooling" not in kwargs:
        raise ValueError(
            f"{name} has a class token and fc_norm: timm pools such checkpoints by "
            "averaging the patch tokens (MAE, BEiT fine-tuning), which our models do "
            'without a class token; pass pooling="token" if it pools its class token.'
        )
    arguments = resnet_arguments if family == "resnet" else vit_arguments
    builder = build_resnet if family == "resnet" else build_vit
    kwargs = {**arguments(state_dict), **kwargs}
    if kwargs.get("num_heads", 1) is None:
        raise ValueError(
            f"{name} has width {kwargs['hidden_size']}, none of our ViT variants'; pass "
            "num_heads= (timm's head count is not stored in the state dict)."
        )
    return builder(**kwargs)
