"""The papers' training recipes as plain data.

Learning rates and step counts are given at the recipe's reference batch size and scale with
the global batch size actually used (Goyal et al. 2017): the rate linearly, the number of
steps inversely, so a run sees the same number of images. Schedules are fractions of
training, so a recipe keeps its shape when the run's length changes.
"""

import dataclasses
import difflib

# The `Recipe` fields' valid values, named here too (e.g. `recipes.NO_DECAY`, the variables
# the ViT and DeiT recipes leave undecayed).
from keras_resvit.training.recipe_spec import (  # noqa: F401
    DECAY_MODES,
    LOSSES,
    NO_DECAY,
    OPTIMIZERS,
    SCHEDULES,
    Recipe,
)

# He et al. (2016), Section 4.2. The paper decays every parameter through the gradient (Caffe
# / Torch weight decay), batch-norm scales and offsets included.
_RESNET = {"decay_mode": "coupled", "no_decay": (), "weight_decay": 1e-4}

# He et al. (2016), Section 4.2: SGD 0.9, batch 128, lr 0.1 /10 at 32k and 48k, stop at 64k
# iterations (~182 epochs of the 45k training images), coupled weight decay 1e-4,
# pad-crop-flip augmentation.
_RESNET_CIFAR = Recipe(
    "sgd", 0.1, 128, 182, "step", (0.5, 0.75), steps=64_000, augment="resnet_cifar", **_RESNET
)
# Dosovitskiy et al. (2021), Sec. 4.1 and Table 3, ImageNet row: Adam (0.9, 0.999), batch 4096,
# lr 3e-3, 300 epochs, 10k linear warm-up steps then cosine decay, weight decay 0.3, dropout
# 0.1, clipping at global norm 1, the hidden tanh pre-training head, Inception crop and flip.
_VIT_PRETRAIN = Recipe(
    "adamw",
    3e-3,
    4096,
    300,
    "cosine",
    warmup=10_000,
    weight_decay=0.3,
    global_clipnorm=1.0,
    dropout=0.1,
    pre_logits=True,
    augment="inception_crop",
)
# Fine-tuning (Sec. 4.1, Appendix B.1.1): SGD 0.9, batch 512, cosine decay, no weight decay,
# clipping at 1, random crop and flip only, usually at a higher resolution than pre-training
# (resize_vit to 384).
_VIT_FINETUNE = Recipe(
    "sgd",
    0.01,
    512,
    8,
    "cosine",
    warmup=500,
    global_clipnorm=1.0,
    augment="inception_crop",
    image_size=384,
)

# Wightman et al. (2021), "ResNet strikes back", Table 1 (ResNet-50, tested at 224): LAMB at
# batch 2048, cosine decay after 5 warm-up epochs, binary cross-entropy, CutMix 1.0, no EMA,
# erasing or colour jitter. A1: 600 epochs, lr 5e-3, weight decay 0.01, label smoothing 0.1,
# stochastic depth 0.05, repeated augmentation, RandAugment 7/0.5, MixUp 0.2. A2: 300 epochs,
# weight decay 0.02, no smoothing, MixUp 0.1. A3: 100 epochs at 160 px, lr 8e-3, weight decay
# 0.02, RandAugment 6/0.5, MixUp 0.1, no stochastic depth or repeated augmentation.
# From the timm they trained with: LAMB's decay inside its update, its global gradient-norm
# clipping at 1.0, biases and normalization parameters neither decayed nor adapted, targets
# thresholded at 0.2 (`--bce-target-thresh`), three repeats (`--aug-repeats 3`).
_RSB = {
    "optimizer": "lamb",
    "batch_size": 2048,
    "schedule": "cosine",
    "decay_mode": "coupled",
    "global_clipnorm": 1.0,
    "loss": "binary_cross_entropy",
    "target_threshold": 0.2,
    "cutmix": 1.0,
}
_RSB_RECIPES = {
    "rsb_a1": Recipe(
        **_RSB,
        learning_rate=5e-3,
        epochs=600,
        warmup=5 / 600,
        weight_decay=0.01,
        label_smoothing=0.1,
        drop_path=0.05,
        repeated_augmentation=3,
        mixup=0.2,
        augment="rsb_a1",
        image_size=224,
    ),
    "rsb_a2": Recipe(
        **_RSB,
        learning_rate=5e-3,
        epochs=300,
        warmup=5 / 300,
        weight_decay=0.02,
        drop_path=0.05,
        repeated_augmentation=3,
        mixup=0.1,
        augment="rsb_a2",
        image_size=224,
    ),
    "rsb_a3": Recipe(
        **_RSB,
        learning_rate=8e-3,
        epochs=100,
        warmup=5 / 100,
        weight_decay=0.02,
        mixup=0.1,
        augment="rsb_a3",
        image_size=160,
    ),
}

# Touvron et al. (2022), "DeiT III: Revenge of the ViT", for ViT-B/16 as the reference's training
# commands give it (README_revenge.md): LAMB with its own decay, lr 3e-3 at batch 2048 (not
# scaled: --unscale-lr), cosine after a 5-epoch warm-up, no gradient clipping, stochastic depth
# 0.2 (ViT-S 0.05, L 0.45, H 0.6), LayerScale from 1e-4 (models_v2's init_values).
_DEIT3 = {
    "optimizer": "lamb",
    "batch_size": 2048,
    "schedule": "cosine",
    "decay_mode": "coupled",
    "cutmix": 1.0,
    "layer_scale_init": 1e-4,
}
_DEIT3_RECIPES = {
    # ImageNet-1k, 800 epochs (the paper's tables also 400) at 192 px, then 224 for testing
    # (a short fine-tune in the paper): binary cross-entropy on MixUp 0.8 / CutMix 1.0
    # targets, 3-Augment and colour jitter 0.3 after an inception crop, repeated augmentation.
    "deit3": Recipe(
        **_DEIT3,
        learning_rate=3e-3,
        epochs=800,
        warmup=5 / 800,
        weight_decay=0.05,
        drop_path=0.2,
        loss="binary_cross_entropy",
        repeated_augmentation=3,
        mixup=0.8,
        augment="deit3",
        image_size=192,
    ),
    # ImageNet-21k pre-training, 240 epochs at 224 px: softmax cross-entropy with smoothing 0.1,
    # CutMix alone, Simple Random Crop, lr 1e-3, weight decay 0.02, stochastic depth 0.1.
    "deit3_21k": Recipe(
        **_DEIT3,
        learning_rate=1e-3,
        epochs=240,
        warmup=5 / 240,
        weight_decay=0.02,
        label_smoothing=0.1,
        drop_path=0.1,
        augment="deit3_src",
        image_size=224,
    ),
}

RECIPES = {
    "resnet_cifar": _RESNET_CIFAR,
    # The same for ResNet-110 and deeper: lr 0.01 until the training error falls below 80%
    # ("about 400 iterations"), here for a fixed 400 iterations, then 0.1.
    "resnet_cifar_warmup": dataclasses.replace(
        _RESNET_CIFAR, warmup=400, warmup_learning_rate=0.01
    ),
    # Sec. 3.4: SGD 0.9, batch 256, lr 0.1 /10 when the error plateaus, 60x10^4 iterations
    # (120 epochs of ImageNet's 1.28M images), coupled weight decay 1e-4, scale augmentation
    # and AlexNet's PCA lighting.
    "resnet_imagenet": Recipe(
        "sgd", 0.1, 256, 120, "plateau", steps=600_000, augment="resnet_imagenet", **_RESNET
    ),
    # The common fixed form of that schedule (fb.resnet.torch, torchvision): /10 at epochs 30
    # and 60 of 90; colour jitter instead of PCA lighting.
    "resnet_imagenet_step": Recipe(
        "sgd", 0.1, 256, 90, "step", (1 / 3, 2 / 3), augment="resnet_imagenet_jitter", **_RESNET
    ),
    # Krizhevsky et al. (2012), Section 5: SGD 0.9, batch 128, weight decay 5e-4 inside the
    # update (coupled) on the weights (its update rule has no bias term; Caffe's reference
    # leaves biases undecayed), lr 0.01 /10 when the validation error stops improving (three
    # times in ~90 epochs), random crops, flips and PCA lighting.
    "alexnet": Recipe(
        "sgd",
        0.01,
        128,
        90,
        "plateau",
        decay_mode="coupled",
        no_decay=("bias",),
        weight_decay=5e-4,
        augment="alexnet",
    ),
    "vit_pretrain": _VIT_PRETRAIN,
    # Table 3, ImageNet-21k row (ViT-B; ViT-L trains 30 or 90 epochs): lr 1e-3, 90 epochs,
    # linear decay, weight decay 0.03, dropout 0.1.
    "vit_pretrain_in21k": dataclasses.replace(
        _VIT_PRETRAIN, learning_rate=1e-3, epochs=90, schedule="linear", weight_decay=0.03
    ),
    # Table 3, JFT-300M row (ViT-B; L/32 6e-4, L/16 4e-4, H/14 3e-4 and 14 epochs): lr 8e-4,
    # 7 epochs, linear decay, weight decay 0.1, no dropout.
    "vit_pretrain_jft": dataclasses.replace(
        _VIT_PRETRAIN,
        learning_rate=8e-4,
        epochs=7,
        schedule="linear",
        weight_decay=0.1,
        dropout=0.0,
    ),
    "vit_finetune": _VIT_FINETUNE,
    # Kolesnikov et al. (2020, BiT), Section 3.3, the BiT-HyperRule for fine-tuning a
    # pre-trained ResNet: SGD 0.9, lr 0.003 at batch 512, no weight decay, /10 at 30%, 60% and
    # 90% of training after a 500-step linear warm-up, MixUp 0.1; 10k steps for a medium
    # dataset (20k-500k images; 500 steps below 20k, where MixUp is off, 20k above 500k:
    # pass `steps=`), random crops and flips.
    "bit_finetune": Recipe(
        "sgd",
        0.003,
        512,
        8,
        "step",
        (0.3, 0.6, 0.9),
        steps=10_000,
        warmup=500,
        mixup=0.1,
        augment="bit",
    ),
    # The same with AugReg's strong augmentation (Steiner et al. 2022: RandAugment(2, 15) and
    # MixUp 0.5), a modern variant that helps long fine-tunes on small data.
    "vit_finetune_strong": dataclasses.replace(_VIT_FINETUNE, augment="vit", mixup=0.5),
    # Touvron et al. (DeiT): AdamW lr 5e-4 * batch/512, wd 0.05, cosine, 5 warm-up epochs of
    # 300, label smoothing 0.1, MixUp 0.8 / CutMix 1.0, drop path 0.1.
    "deit": Recipe(
        "adamw",
        5e-4,
        512,
        300,
        "cosine",
        warmup=5 / 300,
        weight_decay=0.05,
        label_smoothing=0.1,
        augment="deit",
        mixup=0.8,
        cutmix=1.0,
        drop_path=0.1,
    ),
    **_RSB_RECIPES,
    **_DEIT3_RECIPES,
}


def get_recipe(name: str | Recipe, **overrides) -> Recipe:
    """A recipe by name (or a `Recipe`), with fields replaced by `overrides`.

    Raises:
        ValueError: unknown recipe (with close names) or unknown field.

    Example:
    >>> from keras_resvit.training.recipes import get_recipe
    >>> get_recipe("deit", epochs=10).epochs
    10
    >>> get_recipe(get_recipe("vit_finetune", warmup=10)).warmup
    10
    """
    if isinstance(name, Recipe):
        return _replace(name, overrides)
    if not isinstance(name, str) or name not in RECIPES:
        close = difflib.get_close_matches(str(name), RECIPES, n=2, cutoff=0.4)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"recipe={name!r} is not known; valid: {sorted(RECIPES)}.{hint}")
    return _replace(RECIPES[name], overrides)


def _replace(recipe, overrides):
    fields = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"recipe overrides {unknown} are not Recipe fields; valid: {sorted(fields)}."
        )
    replaced = dataclasses.replace(recipe, **overrides)
    if "epochs" in overrides and "steps" not in overrides and replaced.steps is not None:
        raise ValueError(
            f"recipe override epochs={overrides['epochs']!r} has no effect: the recipe counts "
            f"optimizer steps (steps={replaced.steps}), which set its length; pass steps=None "
            "with it, steps= instead, or the run's own length to kr.train(epochs=...)."
        )
    return replaced


def recipe_model_options(name: str, recipe: str | Recipe) -> dict:
    """The `create_model` keywords a recipe sets in a model built by registry name: for ViTs,
    stochastic depth, dropout and the pre-training head (a tanh layer of the model's width, the
    ViT paper's Section 3.1); for ResNets, stochastic depth; for a binary cross-entropy recipe,
    a classifier that outputs logits (the loss applies one sigmoid per class). Other families:
    none. `kr.train` and `keras-resvit train` apply them to a model they build by name.

    >>> from keras_resvit.training.recipes import recipe_model_options
    >>> recipe_model_options("vit_b16", "vit_pretrain_in21k")
    {'dropout': 0.1, 'representation_size': 768}
    >>> recipe_model_options("vit_s16", "deit")
    {'drop_path': 0.1}
    >>> recipe_model_options("resnet50", "resnet_imagenet")
    {}
    >>> recipe_model_options("resnet50", "rsb_a2")
    {'drop_path': 0.05, 'classifier_activation': None}
    >>> recipe_model_options("vit_b16", "deit3")
    {'drop_path': 0.2, 'layer_scale_init': 0.0001, 'classifier_activation': None}
    """
    from keras_resvit.models.registry import get_spec
    from keras_resvit.models.vit import decode_variant

    recipe = get_recipe(recipe)
    spec = get_spec(name)
    vit = spec.family in ("vit", "hybrid_vit")
    options = {}
    if vit:
        options = {
            "drop_path": recipe.drop_path,
            "dropout": recipe.dropout,
            "layer_scale_init": recipe.layer_scale_init,
        }
    elif spec.family == "resnet":
        options = {"drop_path": recipe.drop_path}
    options = {key: value for key, value in options.items() if value}
    if recipe.pre_logits and vit:
        options["representation_size"] = decode_variant(spec.kwargs["variant"])["hidden_size"]
    if recipe.loss == "binary_cross_entropy":  # every builder takes classifier_activation
        options["classifier_activation"] = None
    return options
