"""timm ViT state dicts: our model's variables and build arguments from a state dict's keys
(see `timm`). timm's fused `qkv` projection is split into the query, key and value kernels of
Keras' `MultiHeadAttention`, `(hidden, heads, head_dim)`; the options (registers, LayerScale,
QK-norm, `no_embed_class`, average pooling, `fc_norm`, the attention-pooling head) are read from
the keys."""

import math
import re

import keras
import numpy as np

from keras_resvit.layers.vit_layers import PositionEmbedding
from keras_resvit.models.vit import VARIANTS, resample_position_embeddings
from keras_resvit.weights.timm_layout import DENSE, LAYERNORM, put

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
    "attn_pool.norm": ("map_norm", LAYERNORM),
    "attn_pool.mlp.fc1": ("map_mlp_dense1", DENSE),
    "attn_pool.mlp.fc2": ("map_mlp_dense2", DENSE),
    "fc_norm": ("fc_norm", LAYERNORM),
}


def position_prefix(state_dict) -> int:
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
        values[f"{prefix}/{name}/{DENSE[parameter]}"] = shaped.reshape(
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
        put(values, target, parameter, array, renames)
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
            prefix = position_prefix(state_dict)
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
            renames = {"gamma": "gamma", **LAYERNORM}
            values[f"{target}/{renames[parameter]}"] = array
        elif module == "patch_embed.proj":
            put(values, "patch_embedding", parameter, array, DENSE)
        elif module in ("norm", "head", "pre_logits.fc"):
            target = {"norm": "encoder_norm", "head": "predictions"}.get(module, "pre_logits")
            put(values, target, parameter, array, LAYERNORM if module == "norm" else DENSE)
        elif match and match[2] == "attn.qkv":
            prefix = f"encoder_block{int(match[1]) + 1}_attention"
            values.update(_heads_split(array, parameter, heads, ("query", "key", "value"), prefix))
        elif match and match[2] == "attn.proj" and parameter == "weight":
            target = f"encoder_block{int(match[1]) + 1}_attention/attention_output/kernel"
            values[target] = _output_kernel(array, heads)
        elif (pooled := _attention_pool(key, array, heads)) is not None:
            values.update(pooled)
        elif match and match[2] in _VIT_BLOCK:
            renames = LAYERNORM if match[2].startswith("norm") else DENSE
            target = f"encoder_block{int(match[1]) + 1}_{_VIT_BLOCK[match[2]]}"
            put(values, target, parameter, array, renames)
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
    tokens = np.shape(state_dict["pos_embed"])[1] - position_prefix(state_dict)
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


def check_vit_state_dict(state_dict, name):
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
    tokens = np.shape(state_dict["pos_embed"])[1] - position_prefix(state_dict)
    if tokens < 1 or math.isqrt(tokens) ** 2 != tokens:
        raise ValueError(
            f"{name}: 'pos_embed' has shape {np.shape(state_dict['pos_embed'])}, whose "
            f"{tokens} tokens after the class token form no square grid; a timm ViT's is "
            "(1, [1 +] height * width, hidden)."
        )
