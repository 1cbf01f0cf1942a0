"""Our weights exported to timm / torchvision key layouts, written independently of the converters
so that a round trip through them checks every name, transpose and head split."""

import re

import keras
import numpy as np

_RESNET = (
    (r"stem_conv/kernel", "conv1.weight"),
    (r"stem_bn/(\w+)", r"bn1.\1"),
    (r"stage(\d)_block(\d+)_conv(\d)/kernel", r"layer\1.{b}.conv\3.weight"),
    (r"stage(\d)_block(\d+)_bn(\d)/(\w+)", r"layer\1.{b}.bn\3.\4"),
    (r"stage(\d)_block(\d+)_shortcut_conv/kernel", r"layer\1.{b}.downsample.0.weight"),
    (r"stage(\d)_block(\d+)_shortcut_bn/(\w+)", r"layer\1.{b}.downsample.1.\3"),
    (r"predictions/kernel", "fc.weight"),
    (r"predictions/bias", "fc.bias"),
)
_BN = {
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}


def _torch_array(array):
    if array.ndim == 4:
        return array.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    return array.T if array.ndim == 2 else array


def resnet_state_dict(model):
    """torchvision's `resnet*` state dict of one of our v1.5 ResNets."""
    state = {}
    for variable in model.weights:
        array = keras.ops.convert_to_numpy(variable)
        for pattern, template in _RESNET:
            match = re.fullmatch(pattern, variable.path)
            if match:
                block = int(match[2]) - 1 if match.re.groups > 1 else 0
                key = match.expand(template).format(b=block)
                head, _, last = key.rpartition(".")
                state[f"{head}.{_BN.get(last, last)}"] = _torch_array(array)
                break
        else:
            raise AssertionError(f"no torchvision name for {variable.path}")
    for key in [k for k in state if k.endswith("running_var")]:
        state[key.replace("running_var", "num_batches_tracked")] = np.array(7, "int64")
    return state


def _map_head(w, hidden):
    """timm's `attn_pool.*` (AttentionPoolLatent) of our MAP head."""
    attention = "map_attention"
    kernel = lambda name: w[f"{attention}/{name}/kernel"].reshape(hidden, hidden).T  # noqa: E731
    bias = lambda name: w[f"{attention}/{name}/bias"].reshape(-1)  # noqa: E731
    state = {
        "attn_pool.latent": w["map_probe/probe"],
        "attn_pool.q.weight": kernel("query"),
        "attn_pool.q.bias": bias("query"),
        "attn_pool.kv.weight": np.concatenate([kernel("key"), kernel("value")]),
        "attn_pool.kv.bias": np.concatenate([bias("key"), bias("value")]),
        "attn_pool.proj.weight": w[f"{attention}/attention_output/kernel"].reshape(-1, hidden).T,
        "attn_pool.proj.bias": w[f"{attention}/attention_output/bias"],
        "attn_pool.norm.weight": w["map_norm/gamma"],
        "attn_pool.norm.bias": w["map_norm/beta"],
    }
    for index in (1, 2):
        state[f"attn_pool.mlp.fc{index}.weight"] = w[f"map_mlp_dense{index}/kernel"].T
        state[f"attn_pool.mlp.fc{index}.bias"] = w[f"map_mlp_dense{index}/bias"]
    return state


def vit_state_dict(model, no_embed_class=False):
    """timm's `vit_*` state dict of one of our ViTs (learned embeddings; a class token,
    registers, LayerScale, QK-norm, fc_norm and the MAP head when the model has them).
    `no_embed_class`: timm's layout without a position embedding for the class token (DeiT
    III), whose row of ours is dropped."""
    w = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    position = w["position_embedding/embeddings"]
    norm = "fc_norm" if "fc_norm/gamma" in w else "norm"
    state = {
        "patch_embed.proj.weight": w["patch_embedding/kernel"].transpose(3, 2, 0, 1),
        "patch_embed.proj.bias": w["patch_embedding/bias"],
        "pos_embed": position[:, 1:] if no_embed_class else position,
        f"{norm}.weight": w[f"{'fc' if norm == 'fc_norm' else 'encoder'}_norm/gamma"],
        f"{norm}.bias": w[f"{'fc' if norm == 'fc_norm' else 'encoder'}_norm/beta"],
        "head.weight": w["predictions/kernel"].T,
        "head.bias": w["predictions/bias"],
    }
    if "class_token/token" in w:
        state["cls_token"] = w["class_token/token"]
    if "map_probe/probe" in w:
        state.update(_map_head(w, position.shape[-1]))
    i = 1
    while f"encoder_block{i}_norm1/gamma" in w:
        ours, theirs = f"encoder_block{i}", f"blocks.{i - 1}"
        hidden = w[f"{ours}_norm1/gamma"].shape[0]
        attention = f"{ours}_attention"
        for norm in ("norm1", "norm2"):
            state[f"{theirs}.{norm}.weight"] = w[f"{ours}_{norm}/gamma"]
            state[f"{theirs}.{norm}.bias"] = w[f"{ours}_{norm}/beta"]
        qkv = [
            w[f"{attention}/{m}/kernel"].reshape(hidden, hidden).T
            for m in ("query", "key", "value")
        ]
        state[f"{theirs}.attn.qkv.weight"] = np.concatenate(qkv)
        state[f"{theirs}.attn.qkv.bias"] = np.concatenate(
            [w[f"{attention}/{m}/bias"].reshape(-1) for m in ("query", "key", "value")]
        )
        state[f"{theirs}.attn.proj.weight"] = (
            w[f"{attention}/attention_output/kernel"].reshape(-1, hidden).T
        )
        state[f"{theirs}.attn.proj.bias"] = w[f"{attention}/attention_output/bias"]
        for index in (1, 2):
            state[f"{theirs}.mlp.fc{index}.weight"] = w[f"{ours}_mlp_dense{index}/kernel"].T
            state[f"{theirs}.mlp.fc{index}.bias"] = w[f"{ours}_mlp_dense{index}/bias"]
        for index, branch in ((1, "attention"), (2, "mlp")):
            if f"{ours}_{branch}_layer_scale/gamma" in w:
                state[f"{theirs}.ls{index}.gamma"] = w[f"{ours}_{branch}_layer_scale/gamma"]
        for name, ours_norm in (("q_norm", "query_norm"), ("k_norm", "key_norm")):
            if f"{attention}/{ours_norm}/gamma" in w:
                state[f"{theirs}.attn.{name}.weight"] = w[f"{attention}/{ours_norm}/gamma"]
                state[f"{theirs}.attn.{name}.bias"] = w[f"{attention}/{ours_norm}/beta"]
        i += 1
    if "register_tokens/tokens" in w:
        state["reg_token"] = w["register_tokens/tokens"]
    return state
