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

import math
import os
import re

import keras
import numpy as np

from keras_resvit.base.files import as_path
from keras_resvit.layers.vit_layers import PositionEmbedding
from keras_resvit.models.registry import check_overrides
from keras_resvit.models.resnet import IMAGENET_DEPTHS, IMAGENET_FILTERS, build_resnet
from keras_resvit.models.vit import VARIANTS, build_vit, resample_position_embeddings
from keras_resvit.models.vit_config import builds_any_size
from keras_resvit.models.vit_resize import resize_vit
from keras_resvit.weights.common import (
    assign_weights,
    check_bottleneck_stride,
    check_target,
    refuse_build_arguments,
)
from keras_resvit.weights.state_dicts import read_state_dict

# PyTorch parameter -> Keras variable, per layer kind.
_BATCHNORM = {
    "weight": "gamma",
    "bias": "beta",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
}
_LAYERNORM = {"weight": "gamma", "bias": "beta"}
_DENSE = {"weight": "kernel", "bias": "bias"}
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
_VIT_BLOCK = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attn.proj": "attention/attention_output",
    "mlp.fc1": "mlp_dense1",
    "mlp.fc2": "mlp_dense2",
}
_VIT_KEY = re.compile(r"blocks\.(\d+)\.(.+)\.(\w+)$")
# LayerScale (timm's `init_values`: DeiT III, CaiT) and QK-norm: timm module -> our layer.
_VIT_OPTIONS = {
    "ls1": "{p}_attention_layer_scale",
    "ls2": "{p}_mlp_layer_scale",
    "attn.q_norm": "{p}_attention/query_norm",
    "attn.k_norm": "{p}_attention/key_norm",
}
# timm's head modules (the attention pool's norm and MLP, fc_norm) -> our layers.
_HEAD_LAYERS = {
    "attn_pool.norm": ("map_norm", _LAYERNORM),
    "attn_pool.mlp.fc1": ("map_mlp_dense1", _DENSE),
    "attn_pool.mlp.fc2": ("map_mlp_dense2", _DENSE),
    "fc_norm": ("fc_norm", _LAYERNORM),
}
_IGNORED = ("num_batches_tracked",)


def state_dict_family(state_dict: dict) -> str | None:
    """ "resnet" or "vit" from the key layout, None for neither."""
    if "conv1.weight" in state_dict and "layer1.0.conv1.weight" in state_dict:
        return "resnet"
    if "patch_embed.proj.weight" in state_dict and "blocks.0.attn.qkv.weight" in state_dict:
        return "vit"
    return None


def known_family(state_dict: dict, name: str) -> str:
    """`state_dict_family`, or a ValueError naming `name` (the file, for the message)."""
    family = state_dict_family(state_dict)
    if family is None:
        raise ValueError(
            f"{name} is neither a torchvision/timm ResNet (keys 'conv1.weight', "
            "'layer1.0.conv1.weight', ...) nor a timm ViT ('patch_embed.proj.weight', "
            f"'blocks.0.attn.qkv.weight', ...); found keys {sorted(state_dict)[:5]}."
        )
    return family


def _conv_kernel(weight):
    return np.transpose(weight, (2, 3, 1, 0))  # OIHW -> HWIO


def _put(values, target, parameter, array, renames):
    if parameter not in _IGNORED:
        kernel = parameter == "weight" and renames is _DENSE
        if kernel and array.ndim == 4:
            array = _conv_kernel(array)
        elif kernel:
            array = array.T
        values[f"{target}/{renames[parameter]}"] = array


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
            _put(
                values,
                "stem_conv" if module == "conv1" else "predictions",
                parameter,
                array,
                _DENSE,
            )
        elif module == "bn1":
            _put(values, "stem_bn", parameter, array, _BATCHNORM)
        elif match:
            prefix = f"stage{match[1]}_block{int(match[2]) + 1}"
            for pattern, target in _RESNET_BLOCK.items():
                inner = re.fullmatch(pattern, match[3])
                if inner:
                    renames = _BATCHNORM if "bn" in target else _DENSE
                    _put(values, target.format(*inner.groups(), p=prefix), match[4], array, renames)
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


def _position_prefix(state_dict) -> int:
    """Tokens before the grid in timm's `pos_embed`: 1 with a class token that has a position
    embedding, 0 without a class token or with `no_embed_class` (DeiT III), whose grid alone
    fills it (a square)."""
    if "cls_token" not in state_dict:
        return 0
    tokens = np.shape(state_dict["pos_embed"])[1]
    return 0 if math.isqrt(tokens) ** 2 == tokens else 1


def _num_heads(model):
    layer = next(
        layer for layer in model.layers if isinstance(layer, keras.layers.MultiHeadAttention)
    )
    return layer.num_heads


def _heads_split(array, parameter, heads, names, prefix):
    """A fused PyTorch projection (`qkv`, `kv`) as the per-head kernels or biases of Keras'
    `MultiHeadAttention` sublayers `names` under `prefix`."""
    values = {}
    for name, part in zip(names, np.split(array, len(names)), strict=True):
        # Rows of a PyTorch linear are outputs, ordered head by head.
        shaped = part.T if parameter == "weight" else part
        values[f"{prefix}/{name}/{_DENSE[parameter]}"] = shaped.reshape(
            *shaped.shape[:-1], heads, -1
        )
    return values


def _output_kernel(array, heads):
    """A PyTorch output projection (out, in) as `MultiHeadAttention`'s (heads, head_dim, out)."""
    return array.T.reshape(heads, -1, array.shape[0])


def _attention_pool(key, array, heads):
    """Our head's `{variable path: array}` for one `attn_pool.*` or `fc_norm.*` key, or None."""
    module, _, parameter = key.rpartition(".")
    if key == "attn_pool.latent":
        return {"map_probe/probe": array}
    if module == "attn_pool.q":
        return _heads_split(array, parameter, heads, ("query",), "map_attention")
    if module == "attn_pool.kv":
        return _heads_split(array, parameter, heads, ("key", "value"), "map_attention")
    if module == "attn_pool.proj":
        target = "map_attention/attention_output"
        return (
            {f"{target}/kernel": _output_kernel(array, heads)}
            if parameter == "weight"
            else {f"{target}/bias": array}
        )
    if module in _HEAD_LAYERS:
        values = {}
        target, renames = _HEAD_LAYERS[module]
        _put(values, target, parameter, array, renames)
        return values
    return None


def vit_values(state_dict: dict, model: keras.Model) -> dict:
    """Our `{variable path: array}` for `model` from a timm `vit_*` state dict.

    The number of heads (absent from the state dict) and the position grid are `model`'s; a
    grid of another size is resampled as `resize_vit` does.

    Raises:
        ValueError: the state dict has keys this mapping does not know.
    """
    heads = _num_heads(model)
    values, unknown = {}, []
    for key, array in state_dict.items():
        array = np.asarray(array)
        module, _, parameter = key.rpartition(".")
        match = _VIT_KEY.match(key)
        if key == "cls_token":
            values["class_token/token"] = array
        elif key == "pos_embed":
            grid = next(layer for layer in model.layers if isinstance(layer, PositionEmbedding))
            prefix = _position_prefix(state_dict)
            array = resample_position_embeddings(array, grid.grid_size, num_prefix_tokens=prefix)
            # timm's no_embed_class: the class token has no position embedding, ours zero.
            missing = grid.num_prefix_tokens - prefix
            values["position_embedding/embeddings"] = np.concatenate(
                [np.zeros((1, max(missing, 0), array.shape[-1]), array.dtype), array], axis=1
            )
        elif key == "reg_token":
            values["register_tokens/tokens"] = array
        elif match and match[2] in _VIT_OPTIONS:
            target = _VIT_OPTIONS[match[2]].format(p=f"encoder_block{int(match[1]) + 1}")
            renames = {"gamma": "gamma", **_LAYERNORM}
            values[f"{target}/{renames[parameter]}"] = array
        elif module == "patch_embed.proj":
            _put(values, "patch_embedding", parameter, array, _DENSE)
        elif module in ("norm", "head", "pre_logits.fc"):
            target = {"norm": "encoder_norm", "head": "predictions"}.get(module, "pre_logits")
            _put(values, target, parameter, array, _LAYERNORM if module == "norm" else _DENSE)
        elif match and match[2] == "attn.qkv":
            prefix = f"encoder_block{int(match[1]) + 1}_attention"
            values.update(_heads_split(array, parameter, heads, ("query", "key", "value"), prefix))
        elif match and match[2] == "attn.proj" and parameter == "weight":
            target = f"encoder_block{int(match[1]) + 1}_attention/attention_output/kernel"
            values[target] = _output_kernel(array, heads)
        elif (pooled := _attention_pool(key, array, heads)) is not None:
            values.update(pooled)
        elif match and match[2] in _VIT_BLOCK:
            renames = _LAYERNORM if match[2].startswith("norm") else _DENSE
            target = f"encoder_block{int(match[1]) + 1}_{_VIT_BLOCK[match[2]]}"
            _put(values, target, parameter, array, renames)
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"the state dict has keys that no layer of model {model.name!r} matches: "
            f"{unknown[:5]}; it is not a timm ViT of this layout (learned position embeddings, "
            "class token, average or attention pooling, registers, LayerScale, QK-norm, "
            "fc_norm)."
        )
    return values


def vit_arguments(state_dict: dict) -> dict:
    """`build_vit` arguments that reproduce a timm `vit_*` state dict (heads: ours for D)."""
    hidden, _, patch, _ = np.shape(state_dict["patch_embed.proj.weight"])
    layers = {int(m[1]) for m in filter(None, map(_VIT_KEY.match, state_dict))}
    heads = next((v["num_heads"] for v in VARIANTS.values() if v["hidden_size"] == hidden), None)
    tokens = np.shape(state_dict["pos_embed"])[1] - _position_prefix(state_dict)
    head, pre_logits = state_dict.get("head.weight"), state_dict.get("pre_logits.fc.weight")
    pooling = (
        "map"
        if "attn_pool.latent" in state_dict
        else "token"
        if "cls_token" in state_dict
        else "gap"
    )
    registers = int(np.shape(state_dict.get("reg_token", np.zeros((1, 0))))[1])
    if pooling == "map" and (registers or "cls_token" in state_dict):
        raise ValueError(
            "the state dict's attention pool (attn_pool) reads its class or register tokens "
            'too, as timm\'s does; our MAP head (pooling="map") reads the patch tokens only, so '
            "this checkpoint has no equal model here."
        )
    options = {
        "pooling": pooling,
        "fc_norm": "fc_norm.weight" in state_dict,
        "num_registers": registers,
        # Any value builds the LayerScale weights; the state dict's replace them.
        "layer_scale_init": 1e-5 if "blocks.0.ls1.gamma" in state_dict else None,
        "qk_norm": "blocks.0.attn.q_norm.weight" in state_dict,
    }
    return {
        **options,
        "variant": None,
        "hidden_size": int(hidden),
        "num_layers": len(layers),
        "num_heads": heads,
        "mlp_dim": int(np.shape(state_dict["blocks.0.mlp.fc1.weight"])[0]),
        "patch_size": int(patch),
        "image_size": int(round(tokens**0.5)) * int(patch),
        "representation_size": None if pre_logits is None else int(np.shape(pre_logits)[0]),
        "include_top": head is not None,
        "num_classes": 1000 if head is None else int(np.shape(head)[0]),
    }


def _check_vit_state_dict(state_dict, name):
    """The arrays `vit_arguments` and `vit_values` read must be there, of their PyTorch rank,
    the position embeddings a square grid (after a class token)."""
    ranks = {"patch_embed.proj.weight": 4, "pos_embed": 3, "blocks.0.mlp.fc1.weight": 2}
    missing = [key for key in ranks if key not in state_dict]
    if missing:
        raise ValueError(f"{name} is not a complete timm ViT state dict: it lacks {missing}.")
    shapes = {
        "patch_embed.proj.weight": "(hidden, channels, patch, patch)",
        "pos_embed": "(1, tokens, hidden)",
        "blocks.0.mlp.fc1.weight": "(mlp_dim, hidden)",
    }
    for key, rank in ranks.items():
        if np.ndim(state_dict[key]) != rank:
            raise ValueError(
                f"{name}: {key!r} has shape {np.shape(state_dict[key])}; a timm ViT's is "
                f"{shapes[key]}."
            )
    tokens = np.shape(state_dict["pos_embed"])[1] - _position_prefix(state_dict)
    if tokens < 1 or math.isqrt(tokens) ** 2 != tokens:
        raise ValueError(
            f"{name}: 'pos_embed' has shape {np.shape(state_dict['pos_embed'])}, whose "
            f"{tokens} tokens after the class token form no square grid; a timm ViT's is "
            "(1, [1 +] height * width, hidden)."
        )


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
        _check_vit_state_dict(state_dict, name)
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
