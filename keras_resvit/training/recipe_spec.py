"""`Recipe`: the fields of a paper's training recipe (optimizer, schedule, regularization, the
model options it sets), each checked when a recipe is made. The papers' recipes are in
`recipes`."""

from dataclasses import dataclass, fields

from keras_resvit.base.validation import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_rate,
)
from keras_resvit.data.augmentation import AUGMENTATION_PRESETS, MIXING

OPTIMIZERS = ("sgd", "adam", "adamw", "lamb")
LOSSES = ("cross_entropy", "binary_cross_entropy")
SCHEDULES = ("step", "cosine", "linear", "plateau")
DECAY_MODES = ("coupled", "decoupled")
# Variables the ViT and DeiT recipes leave undecayed: norm scales and offsets, biases, the
# class token and position embeddings (substrings of variable names).
NO_DECAY = ("gamma", "beta", "bias", "token", "embeddings")


@dataclass(frozen=True)
class Recipe:
    """Optimizer, schedule and regularization of a paper's recipe (and the model options it
    sets in a model built by name).

    Attributes:
        optimizer: "sgd", "adam", "adamw" (both Adam names decay decoupled, as AdamW) or
            "lamb" (You et al. 2020; coupled decay is LAMB's own, inside its update:
            `keras_resvit.training.optimizers.CoupledDecayLamb`).
        learning_rate: peak learning rate at `batch_size`.
        batch_size: reference (global) batch size of the paper.
        epochs: default number of epochs, when `steps` is None.
        steps: default length in optimizer steps at `batch_size` (the papers that count
            iterations: 64k for the CIFAR ResNets); overrides `epochs` when set.
        schedule: "step" (/10 at each `decay_at` fraction), "cosine" or "linear" decay, or
            "plateau" (/10 when the validation accuracy, or without validation data the
            training loss, has not improved for `patience` epochs: the ResNet and AlexNet
            papers' ImageNet schedule).
        patience: epochs without improvement before a "plateau" schedule divides by 10.
        decay_at: fractions of training at which a "step" schedule divides by 10.
        warmup: linear warm-up length: a fraction of training if < 1, else steps at
            `batch_size`.
        warmup_learning_rate: constant warm-up rate instead of a linear ramp (ResNet-110),
            at `batch_size`.
        momentum: SGD momentum.
        beta_1, beta_2: Adam (and LAMB) moments. These three, and `patience`, set off their
            defaults for an optimizer or schedule that does not read them are refused.
        weight_decay: decay coefficient.
        decay_mode: "coupled" (L2 added to the gradient, through momentum: the ResNet and
            AlexNet papers; for LAMB, added to its update before the trust ratio) or
            "decoupled" (`w -= lr * wd * w`, AdamW: the ViT and DeiT recipes); see
            `keras_resvit.training.optimizers`.
        no_decay: substrings of variable names weight decay leaves alone.
        global_clipnorm: gradient clipping by global norm; None for none.
        label_smoothing: smoothing of one-hot targets.
        loss: "cross_entropy" (softmax: Keras' of logits, or
            `keras_resvit.training.losses.SoftmaxCrossentropy` of a softmax's probabilities,
            the same on every backend) or "binary_cross_entropy" (a sigmoid per class:
            `keras_resvit.training.losses.MultiLabelBinaryCrossentropy`; models built by name
            then output logits).
        target_threshold: binary cross-entropy's threshold on the (mixed) targets, or None.
        repeated_augmentation: how many differently augmented copies of each image an epoch
            holds (Hoffer et al. 2020, Berman et al. 2019: timm's `aug_repeats`), the epoch
            keeping its length: `kr.data.load_dataset(repeated_augmentation=)`, which
            `keras-resvit train` passes from the recipe.
        augment: name of the `keras_resvit.data` augmentation preset of the paper's input
            pipeline: `keras-resvit train` loads its data with it; with `kr.train`, pass it to
            `kr.data.load_dataset(augment=recipe.augment)`.
        mixup, cutmix: the MixUp / CutMix alphas of `augment`'s batch mixing (0 for off),
            recorded for reading: a recipe whose values differ from its preset's is refused.
        drop_path: stochastic depth for ViTs and ResNets built by name.
        dropout: dropout for ViTs built by name (the ViT paper's pre-training, Table 3).
        pre_logits: give ViTs built by name the pre-training head (a hidden tanh layer of the
            model's width before the classifier, the ViT paper's Section 3.1).
        image_size: training resolution the recipe expects (None: the model's own).
        layer_scale_init: LayerScale for ViTs built by name (`build_vit(layer_scale_init=)`:
            CaiT, DeiT III); None for none.
    """

    optimizer: str
    learning_rate: float
    batch_size: int
    epochs: int
    schedule: str = "step"
    decay_at: tuple[float, ...] = ()
    patience: int = 5
    warmup: float = 0.0
    warmup_learning_rate: float | None = None
    momentum: float = 0.9
    beta_1: float = 0.9
    beta_2: float = 0.999
    weight_decay: float = 0.0
    decay_mode: str = "decoupled"
    no_decay: tuple[str, ...] = NO_DECAY
    global_clipnorm: float | None = None
    label_smoothing: float = 0.0
    augment: str | None = None
    mixup: float = 0.0
    cutmix: float = 0.0
    drop_path: float = 0.0
    dropout: float = 0.0
    pre_logits: bool = False
    image_size: int | None = None
    steps: int | None = None
    loss: str = "cross_entropy"
    target_threshold: float | None = None
    repeated_augmentation: int = 1
    layer_scale_init: float | None = None

    def __post_init__(self):
        for field in ("decay_at", "no_decay"):  # a list given: kept as a tuple (hashable)
            if isinstance(getattr(self, field), list):
                object.__setattr__(self, field, tuple(getattr(self, field)))
        for field, valid in (
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("decay_mode", DECAY_MODES),
            ("loss", LOSSES),
        ):
            value = getattr(self, field)
            if value not in valid:
                raise ValueError(f"Recipe: {field}={value!r} is not valid; valid: {list(valid)}.")
        coupled = self.decay_mode == "coupled" and self.weight_decay
        if coupled and self.optimizer not in ("sgd", "lamb"):
            raise ValueError(
                f"Recipe: decay_mode='coupled' with optimizer={self.optimizer!r} is not "
                "supported; Adam recipes decay decoupled (AdamW), SGD and LAMB recipes either "
                "way."
            )
        if self.target_threshold is not None and self.loss != "binary_cross_entropy":
            raise ValueError(
                f"Recipe: target_threshold={self.target_threshold!r} needs "
                f"loss='binary_cross_entropy' (loss={self.loss!r})."
            )
        if self.schedule == "plateau" and self.warmup:
            raise ValueError(
                f"Recipe: schedule='plateau' has no warm-up (warmup={self.warmup!r}); use a "
                "'step' schedule with a warm-up instead."
            )
        self._check_numbers()
        self._check_applies()
        check_int("Recipe: steps", self.steps, none_ok=True)
        check_int("Recipe: patience", self.patience)
        check_int("Recipe: repeated_augmentation", self.repeated_augmentation)
        check_rate("Recipe: dropout", self.dropout)
        check_bool("Recipe: pre_logits", self.pre_logits)
        check_number("Recipe: layer_scale_init", self.layer_scale_init, 0, none_ok=True)
        names = self.no_decay
        if not isinstance(names, tuple) or not all(isinstance(n, str) and n for n in names):
            raise ValueError(
                f"Recipe: no_decay={names!r} must be a tuple of names (substrings of variable "
                "names), e.g. ('bias',), or () for none."
            )

    def _check_applies(self):
        """A field set off its default for an optimizer or schedule that does not read it (an
        Adam recipe's `momentum`, an SGD recipe's betas, a step schedule's `patience`) would
        have no effect: refused, naming where it applies."""
        defaults = {f.name: f.default for f in fields(Recipe)}
        uses = (
            ("momentum", "optimizer", ("sgd",)),
            ("beta_1", "optimizer", ("adam", "adamw", "lamb")),
            ("beta_2", "optimizer", ("adam", "adamw", "lamb")),
            ("patience", "schedule", ("plateau",)),
        )
        for name, owner, readers in uses:
            value = getattr(self, name)
            if value != defaults[name] and getattr(self, owner) not in readers:
                raise ValueError(
                    f"Recipe: {name}={value!r} has no effect with {owner}="
                    f"{getattr(self, owner)!r}; it applies to {owner} "
                    f"{' or '.join(repr(r) for r in readers)} only: leave it at its default "
                    f"({defaults[name]!r}) or change {owner}."
                )

    def _check_numbers(self):
        """The sizes, rates and coefficients: each a number in its range."""
        check_number("Recipe: learning_rate", self.learning_rate, 0)
        check_number("Recipe: warmup_learning_rate", self.warmup_learning_rate, 0, none_ok=True)
        for name in ("batch_size", "epochs"):
            check_int(f"Recipe: {name}", getattr(self, name))
        check_int("Recipe: image_size", self.image_size, none_ok=True)
        for name in ("momentum", "beta_1", "beta_2", "label_smoothing", "drop_path"):
            check_rate(f"Recipe: {name}", getattr(self, name))
        for name in ("warmup", "weight_decay", "mixup", "cutmix"):
            check_number(f"Recipe: {name}", getattr(self, name), 0, include_low=True)
        check_number("Recipe: global_clipnorm", self.global_clipnorm, 0, none_ok=True)
        check_number("Recipe: target_threshold", self.target_threshold, 0, 1, none_ok=True)
        fractions = self.decay_at
        if (
            not isinstance(fractions, (tuple, list))
            or any(
                not isinstance(f, (int, float)) or isinstance(f, bool) or not 0 < f < 1
                for f in fractions
            )
            or list(fractions) != sorted(set(fractions))
        ):
            raise ValueError(
                f"Recipe: decay_at={fractions!r} must be a tuple of increasing fractions of "
                "training in (0, 1), e.g. (0.5, 0.75)."
            )
        if self.augment is not None:
            check_choice("Recipe: augment", self.augment, AUGMENTATION_PRESETS)
        mixing = MIXING.get(self.augment)
        alphas = (mixing.mixup_alpha, mixing.cutmix_alpha) if mixing else (0.0, 0.0)
        if (self.mixup, self.cutmix) != alphas:
            raise ValueError(
                f"Recipe: mixup={self.mixup!r}, cutmix={self.cutmix!r} are not those of "
                f"augment={self.augment!r} ({alphas[0]}, {alphas[1]}): the augmentation preset "
                "mixes the batches, and these fields record its alphas; choose a preset that "
                "mixes as wanted (`keras_resvit.data.augmentation.MIXING`)."
            )
        if mixing and self.label_smoothing != mixing.label_smoothing:
            # The mixed labels arrive smoothed by the preset: the loss cannot smooth again.
            raise ValueError(
                f"Recipe: label_smoothing={self.label_smoothing!r} is not that of "
                f"augment={self.augment!r} ({mixing.label_smoothing}), whose batch mixing "
                "smooths the labels it mixes; choose a preset that smooths as wanted."
            )
        if self.warmup_learning_rate is not None and not self.warmup:
            raise ValueError(
                f"Recipe: warmup_learning_rate={self.warmup_learning_rate!r} needs a warm-up "
                "(warmup > 0) to apply to."
            )
        if self.decay_at and self.schedule != "step":
            raise ValueError(
                f"Recipe: decay_at={self.decay_at!r} applies to schedule='step' only, not "
                f"{self.schedule!r}; pass decay_at=() with it."
            )
