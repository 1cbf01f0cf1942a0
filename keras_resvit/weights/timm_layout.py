"""The layout of timm / torchvision state dicts: which family a state dict is, and how a
PyTorch parameter becomes a Keras variable (kernels transposed, BatchNorm and LayerNorm
parameters renamed). `timm` (ResNets, loading) and `timm_vit` (ViTs) map the modules."""

import numpy as np

# PyTorch parameter -> Keras variable, per layer kind.
BATCHNORM = {
    "weight": "gamma",
    "bias": "beta",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
}
LAYERNORM = {"weight": "gamma", "bias": "beta"}
DENSE = {"weight": "kernel", "bias": "bias"}
IGNORED = ("num_batches_tracked",)


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


def conv_kernel(weight):
    return np.transpose(weight, (2, 3, 1, 0))  # OIHW -> HWIO


def put(values, target, parameter, array, renames):
    if parameter not in IGNORED:
        kernel = parameter == "weight" and renames is DENSE
        if kernel and array.ndim == 4:
            array = conv_kernel(array)
        elif kernel:
            array = array.T
        values[f"{target}/{renames[parameter]}"] = array
