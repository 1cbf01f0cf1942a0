"""Low-rank adaptation (Hu et al. 2021, LoRA) of our ViTs and ResNets, and its merge.

`enable_lora` adds trainable low-rank factors to chosen layers through Keras' own
`enable_lora` (Dense, EinsumDense, Conv2D and our subclasses of them;
`MultiHeadSelfAttention` applies it to its four projections) and freezes every other weight,
as in the paper; `merge_lora` folds the factors into the kernels for export.

A `.keras` file of a LoRA model holds, as Keras writes it, each kernel with its LoRA update
merged in and the LoRA factors set to zero when loaded: the loaded model gives the same
outputs and has its LoRA layers, but both factors at zero get no gradient. Call
`enable_lora` on it again with the same arguments to go on training: it draws a fresh
`lora_kernel_a` for those layers (outputs unchanged, `lora_kernel_b` stays zero) and freezes
the rest again (Keras saves no per-variable `trainable` flag, so biases come back trainable).
`kr.train` refuses a model whose LoRA factors are both zero, and its resume states keep the
LoRA layers' variables as they are (`training.lora_state`), so a killed run goes on adapting.

A model quantized with `model.quantize("int8")` or `"int4"` before `enable_lora` (QLoRA)
keeps its quantized kernels frozen; Keras saves such a kernel with its update merged and
quantized again, and `merge_lora` merges it the same way: the merged (or loaded) model's
outputs then differ from the LoRA model's by that rounding, as a quantized model's differ
from the float one's.
"""

import re

import keras
import numpy as np

from keras_resvit.base.class_names import model_class_names, set_class_names
from keras_resvit.base.validation import check_bool, check_int, check_model, check_number
from keras_resvit.layers.lora_layers import ProjectionSettings
from keras_resvit.models.common import functional_model, leaf_layers, rebuild_model

TARGETS = ("attention", "mlp", "conv", "head")
# The classifier of every builder (`models.common.predictions_layer`, keras.applications).
HEAD = "predictions"
LORA_VARIABLES = ("lora_kernel_a", "lora_kernel_b")
# The quantization modes (`model.quantize`) of Keras layers that take LoRA (QLoRA).
QUANTIZED_LORA = (None, "int8", "int4")
# The ViT's position-wise MLP: `encoder_block3_mlp_dense1`, `..._mlp_dense2`.
_MLP_DENSE = re.compile(r"_mlp_dense\d+$")


def _target(layer, targets):
    """The target of `targets` that `layer` belongs to, or None."""
    if "attention" in targets and isinstance(layer, ProjectionSettings):
        return "attention"
    mlp = isinstance(layer, keras.layers.Dense) and _MLP_DENSE.search(layer.name)
    if "mlp" in targets and mlp:
        return "mlp"
    if "conv" in targets and isinstance(layer, keras.layers.Conv2D):
        return "conv"
    if "head" in targets and layer.name == HEAD and hasattr(layer, "enable_lora"):
        return "head"
    return None


def _lora_leaves(layer):
    """The Keras layers that hold LoRA factors: an attention layer's four projections, or the
    layer itself."""
    return layer.projections() if isinstance(layer, ProjectionSettings) else [layer]


def _check_arguments(model, rank, targets, alpha, train_head):
    """Validates `enable_lora`'s arguments; returns the targets as a tuple."""
    functional_model(model, "merge_lora, which follows enable_lora,")
    check_int("rank", rank)
    check_number("alpha", alpha, 0, none_ok=True)
    if train_head is not None:
        check_bool("train_head", train_head)
    if isinstance(targets, str):
        targets = (targets,)
    if (
        not isinstance(targets, (tuple, list))
        or not targets
        or any(t not in TARGETS for t in targets)
    ):
        raise ValueError(f"targets={targets!r} is not valid; use a non-empty tuple of {TARGETS}.")
    if train_head and "head" in targets:
        raise ValueError(
            'train_head=True with "head" in targets: the classifier either trains fully or '
            "through LoRA; pass one of them."
        )
    return tuple(targets)


def _attach(layer, rank, alpha):
    """Enables LoRA on `layer`, or re-attaches it where a loaded file left both factors zero."""
    if not layer.lora_enabled:
        layer.enable_lora(rank, lora_alpha=alpha)
        return
    if layer.lora_rank != rank:
        raise ValueError(
            f"rank={rank} but layer {layer.name!r} already has LoRA of rank {layer.lora_rank}; "
            f"pass rank={layer.lora_rank} or start from a model without LoRA."
        )
    scale_numerator = alpha if alpha is not None else rank
    for leaf in _lora_leaves(layer):
        trained = np.any(keras.ops.convert_to_numpy(leaf.lora_kernel_b))
        if trained and float(leaf.lora_alpha) != float(scale_numerator):
            raise ValueError(
                f"alpha={alpha!r} (a scale of {scale_numerator}) but layer {layer.name!r} "
                f"holds LoRA factors trained with alpha={leaf.lora_alpha}: another alpha would "
                f"rescale their update and change the model's outputs; pass "
                f"alpha={leaf.lora_alpha}, or merge_lora first to start a new adaptation."
            )
    layer.lora_alpha = scale_numerator
    for leaf in _lora_leaves(layer):
        # Keras' Dense forgets `lora_alpha` when it is rebuilt from a file.
        leaf.lora_alpha = scale_numerator
        if _idle(leaf):
            _revive(leaf)


def _idle(leaf):
    """Whether both LoRA factors of `leaf` are zero (as a loaded file leaves them): neither
    gets a gradient, so training would never move them."""
    factors = (leaf.lora_kernel_a, leaf.lora_kernel_b)
    return not any(np.any(keras.ops.convert_to_numpy(f)) for f in factors)


def _revive(leaf):
    """A fresh `lora_kernel_a` for `leaf` (He-uniform, as `enable_lora` draws it); with
    `lora_kernel_b` at zero the outputs stay as they are."""
    a = leaf.lora_kernel_a
    a.assign(keras.initializers.HeUniform()(a.shape, dtype=a.dtype))


def _lora_leaf_layers(model):
    """The Keras layers of `model` that hold LoRA factors, in model order."""
    layers = (x for x in leaf_layers(model) if getattr(x, "lora_enabled", False))
    return [leaf for layer in layers for leaf in _lora_leaves(layer)]


def idle_lora_layers(model) -> list:
    """The names of `model`'s LoRA layers whose factors are both zero: a model loaded from a
    `.keras` (or weights) file, whose updates Keras merged into the kernels. Such a layer
    learns nothing until `enable_lora` draws its `lora_kernel_a` again."""
    return [leaf.name for leaf in _lora_leaf_layers(model) if _idle(leaf)]


def lora_variables(model) -> list:
    """Every variable of `model`'s LoRA layers (kernels, biases, quantization scales and the
    factors), in model order, to be saved as they are: Keras' own files hold each kernel with
    its update merged in and no factor (both load as zero), which loses the adaptation's state
    (a resume state keeps these beside its weights, `training.callbacks.ResumeCheckpoint`)."""
    return [variable for leaf in _lora_leaf_layers(model) for variable in leaf.weights]


def revive_lora(model) -> list:
    """Draws a fresh `lora_kernel_a` for each of `model`'s LoRA layers whose factors are both
    zero (`idle_lora_layers`), outputs unchanged; returns their names."""
    idle = [leaf for leaf in _lora_leaf_layers(model) if _idle(leaf)]
    for leaf in idle:
        _revive(leaf)
    return [leaf.name for leaf in idle]


def _check_quantization(layer):
    """Refuses a layer quantized in a mode whose Keras layers have no LoRA (float8: the
    first call fails deep in Keras; GPTQ, AWQ)."""
    for leaf in _lora_leaves(layer):
        mode = getattr(leaf, "quantization_mode", None)
        if mode not in QUANTIZED_LORA:
            raise ValueError(
                f"layer {leaf.name!r} is quantized ({mode}), and Keras' {mode} layers have no "
                f"LoRA; call enable_lora before model.quantize, or quantize in one of "
                f"{[m for m in QUANTIZED_LORA if m]}."
            )


def _freeze(model, adapted, head):
    """Only the LoRA factors of `adapted` layers and, if given, the whole `head` train."""
    adapted = {id(layer) for layer in adapted}
    for layer in leaf_layers(model):
        # Setting `trainable` on a layer sets it on all its variables, so freeze afterwards.
        layer.trainable = id(layer) in adapted or layer is head
        if id(layer) in adapted:
            for variable in layer.weights:
                if variable.name not in LORA_VARIABLES:
                    variable.trainable = False


def enable_lora(
    model: keras.Model,
    rank: int,
    targets: tuple = ("attention", "mlp"),
    alpha: float | None = None,
    *,
    train_head: bool | None = None,
) -> keras.Model:
    """Adds LoRA factors to the chosen layers of `model` and freezes everything else.

    Each target layer's kernel `W` is frozen and becomes `W + alpha / rank * A @ B` with
    trainable `A` (He-uniform) and `B` (zeros: the outputs are unchanged at first). A dense
    layer `(in, out)` gets `rank * (in + out)` parameters, a `k x k` convolution
    `rank * (k * k * in + out)`; the attention's query/key/value kernels `(dim, heads,
    head_dim)` get `rank * (dim * heads + head_dim)` each (Keras' `EinsumDense` LoRA), its
    output kernel `rank * (heads * head_dim + dim)`. Biases, norms, embeddings and BatchNorm
    statistics are frozen (BatchNorm then runs in inference mode), except the classifier with
    `train_head`. The model is changed in place; compile it afterwards.

    Args:
        model: a model from `build_vit`, `build_resnet`, `build_hybrid_vit` or `create_model`.
        rank: LoRA rank, a positive int.
        targets: any of "attention" (the ViT's query/key/value/output projections), "mlp" (its
            MLP's two dense layers), "conv" (every Conv2D: a ResNet's convolutions, a ViT's
            patch embedding), "head" (LoRA on the classifier "predictions").
        alpha: scale numerator; the update is scaled by `alpha / rank`. Default `rank`.
        train_head: keep the whole classifier trainable (as after `replace_head`). Default:
            True unless "head" is a target.

    Returns:
        `model`, with LoRA enabled.

    Raises:
        ValueError: an invalid argument, no layer of `model` matches `targets`, or one is
            quantized in a mode without LoRA (float8).

    Example:
    >>> from keras_resvit.models.lora import enable_lora
    >>> import keras_resvit as kr
    >>> model = kr.build_vit(None, image_size=16, patch_size=8, hidden_size=8, num_layers=1,
    ...                      num_heads=2, mlp_dim=16, num_classes=3)
    >>> model = enable_lora(model, rank=2, targets=("mlp",))
    >>> sum(int(w.numpy().size) for w in model.trainable_weights)  # 2*(8+16)*2 + 8*3+3
    123
    """
    targets = _check_arguments(model, rank, targets, alpha, train_head)
    adapted = [layer for layer in leaf_layers(model) if _target(layer, targets)]
    if not adapted:
        raise ValueError(
            f"targets={targets!r} matches no layer of model {model.name!r}; valid targets are "
            f"{TARGETS} (attention and mlp need a ViT, conv a convolutional net)."
        )
    for layer in adapted:
        _check_quantization(layer)
    for layer in adapted:
        _attach(layer, rank, alpha)
    keep_head = train_head if train_head is not None else "head" not in targets
    head = next((x for x in leaf_layers(model) if x.name == HEAD), None) if keep_head else None
    if train_head and head is None:
        raise ValueError(
            f'train_head=True but model {model.name!r} has no classifier named "{HEAD}".'
        )
    _freeze(model, adapted, head)
    return model


def _merged_weights(old, new):
    """`old`'s weights (a layer's, or a nested model's) without LoRA factors, each kernel with
    its update folded in."""
    merged = {}
    layers = leaf_layers(old) if isinstance(old, keras.Model) else [old]
    for layer in (x for x in layers if getattr(x, "lora_enabled", False)):
        for leaf in _lora_leaves(layer):
            for variable, value in _merged_kernel(leaf):
                merged[id(variable)] = keras.ops.convert_to_numpy(value)
    return [
        merged.get(id(v), keras.ops.convert_to_numpy(v))
        for v in old.weights
        if v.name not in LORA_VARIABLES
    ]


def _merged_kernel(leaf):
    """[(variable, merged value)] of a LoRA layer's kernel: float, or for a quantized layer
    (int8, int4) Keras' own merge (what it saves in a `.keras` file): the kernel dequantized,
    the update added, and quantized again with new scales."""
    variables = {v.name: v for v in leaf.weights}
    if getattr(leaf, "quantization_mode", None) is None:
        return [(variables["kernel"], leaf.kernel)]
    values = leaf._get_kernel_with_merged_lora()
    names = ("kernel", "kernel_scale", "kernel_zero")
    return [(variables[n], v) for n, v in zip(names, values, strict=True) if v is not None]


def merge_lora(model: keras.Model) -> keras.Model:
    """A new model with every LoRA update folded into its kernel and no LoRA weights.

    The result has the architecture and parameter count of the model before `enable_lora`,
    every layer trainable, and exports like any other model (`kr.export`).

    Args:
        model: a model with LoRA layers (from `enable_lora`, or loaded from a `.keras` file).

    Returns:
        A new `keras.Model` carrying `model`'s class names; `model` is left unchanged.

    Raises:
        ValueError: `model` has no LoRA layer, or is not a functional (or Sequential) model.

    Example:
    >>> from keras_resvit.models.lora import merge_lora, enable_lora
    >>> import keras_resvit as kr
    >>> model = kr.build_resnet(8, stem="cifar", num_classes=3)
    >>> merged = merge_lora(enable_lora(kr.build_resnet(8, stem="cifar", num_classes=3), 2,
    ...                                 targets=("conv",)))
    >>> merged.count_params() == model.count_params()
    True
    """
    check_model("model", model)
    if not any(getattr(x, "lora_enabled", False) for x in leaf_layers(model)):
        raise ValueError(f"model={model.name!r} has no LoRA layer to merge; enable_lora adds them.")
    names = model_class_names(model)
    model = functional_model(model, "merge_lora")
    config = model.get_config()
    _without_lora(config["layers"])
    merged = rebuild_model(model, config, _merged_weights)
    set_class_names(merged, names)
    return merged


def _without_lora(layers):
    """Removes LoRA from the layer configs `layers` (nested models' layers included) and
    makes every layer trainable."""
    for entry in layers:
        entry["config"].pop("lora_rank", None)
        entry["config"].pop("lora_alpha", None)
        entry["config"]["trainable"] = True
        _without_lora(entry["config"].get("layers", []))
