"""The papers' training recipes as plain data.

Learning rates are given at the recipe's reference batch size and scale linearly with the
global batch size actually used (Goyal et al. 2017). Schedules are fractions of training, so a
recipe keeps its shape when the number of epochs changes.
"""

import dataclasses
import difflib
from dataclasses import dataclass

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("step", "cosine", "linear")


@dataclass(frozen=True)
class Recipe:
    """Optimizer, schedule and regularization of a paper's recipe.

    Attributes:
        optimizer: "sgd", "adam" or "adamw".
        learning_rate: peak learning rate at `batch_size`.
        batch_size: reference (global) batch size of the paper.
        epochs: default number of epochs.
        schedule: "step" (/10 at each `decay_at` fraction), "cosine" or "linear" decay.
        decay_at: fractions of training at which a "step" schedule divides by 10.
        warmup: linear warm-up length: a fraction of training if < 1, else steps.
        warmup_learning_rate: constant warm-up rate instead of a linear ramp (ResNet-110).
        momentum: SGD momentum.
        beta_1, beta_2: Adam moments.
        weight_decay: decay of kernels (norms, biases, class token and position embeddings are
            excluded).
        global_clipnorm: gradient clipping by global norm; None for none.
        label_smoothing: smoothing of one-hot targets.
        augment: name of the `keras_resvit.data` augmentation preset.
        mixup, cutmix: MixUp / CutMix alphas (0 for off).
        drop_path: stochastic depth for ViTs built by name.
        image_size: training resolution the recipe expects (None: the model's own).
    """

    optimizer: str
    learning_rate: float
    batch_size: int
    epochs: int
    schedule: str = "step"
    decay_at: tuple[float, ...] = ()
    warmup: float = 0.0
    warmup_learning_rate: float | None = None
    momentum: float = 0.9
    beta_1: float = 0.9
    beta_2: float = 0.999
    weight_decay: float = 0.0
    global_clipnorm: float | None = None
    label_smoothing: float = 0.0
    augment: str | None = None
    mixup: float = 0.0
    cutmix: float = 0.0
    drop_path: float = 0.0
    image_size: int | None = None


RECIPES = {
    # He et al. (2015), Sec. 4.2: SGD 0.9, lr 0.1 /10 at 32k and 48k, stop at 64k iterations of
    # batch 128 (~182 epochs of 45k images), weight decay 1e-4, pad-crop-flip augmentation.
    "resnet_cifar": Recipe(
        "sgd", 0.1, 128, 182, "step", (0.5, 0.75), weight_decay=1e-4, augment="resnet_cifar"
    ),
    # Sec. 3.4: SGD 0.9, batch 256, lr 0.1 /10 when the error plateaus (fixed at epochs 30
    # and 60 of 90, the common schedule), weight decay 1e-4, scale augmentation.
    "resnet_imagenet": Recipe(
        "sgd", 0.1, 256, 90, "step", (1 / 3, 2 / 3), weight_decay=1e-4, augment="resnet_imagenet"
    ),
    # Dosovitskiy et al. (2021), Sec. 4.1 / Table 3: Adam (0.9, 0.999), batch 4096, weight decay
    # 0.1, 10k linear warm-up steps then linear decay, clipping at global norm 1.
    "vit_pretrain": Recipe(
        "adamw",
        8e-4,
        4096,
        300,
        "linear",
        warmup=10_000,
        weight_decay=0.1,
        global_clipnorm=1.0,
        augment="vit",
    ),
    # Fine-tuning: SGD 0.9, batch 512, cosine decay, no weight decay, clipping at 1, usually
    # at a higher resolution than pre-training (resize_vit to 384).
    "vit_finetune": Recipe(
        "sgd",
        0.01,
        512,
        8,
        "cosine",
        warmup=500,
        global_clipnorm=1.0,
        augment="vit",
        image_size=384,
    ),
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
}


def get_recipe(name: str | Recipe, **overrides) -> Recipe:
    """A recipe by name (or a `Recipe`), with fields replaced by `overrides`.

    Raises:
        ValueError: unknown recipe (with close names) or unknown field.

    Example:
    >>> get_recipe("resnet_cifar", epochs=10).epochs
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
    return dataclasses.replace(recipe, **overrides)
