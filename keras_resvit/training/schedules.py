"""One serializable learning-rate schedule for every recipe: warm-up, then step/cosine/linear."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_resvit")
class RecipeSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear (or constant) warm-up to `peak`, then step, cosine or linear decay to the end.

    Args:
        peak: learning rate after warm-up.
        total_steps: length of training in optimizer steps.
        warmup_steps: warm-up length.
        decay: "step", "cosine" or "linear".
        decay_at: step boundaries of a "step" schedule (each divides by 10).
        warmup_learning_rate: hold this rate during warm-up instead of ramping linearly.
    """

    def __init__(
        self,
        peak,
        total_steps,
        warmup_steps=0,
        decay="step",
        decay_at=(),
        warmup_learning_rate=None,
    ):
        if decay not in ("step", "cosine", "linear"):
            raise ValueError(
                f"RecipeSchedule: decay={decay!r} is not valid; valid: 'step', 'cosine', 'linear'."
            )
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay = decay
        self.decay_at = tuple(int(b) for b in decay_at)
        self.warmup_learning_rate = warmup_learning_rate

    def __call__(self, step):
        step = ops.cast(step, "float32")
        if self.decay == "step":
            drops = sum(ops.cast(step >= b, "float32") for b in self.decay_at)
            after = self.peak * ops.power(0.1, drops)
        else:
            span = max(self.total_steps - self.warmup_steps, 1)
            t = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
            shape = 0.5 * (1.0 + ops.cos(math.pi * t)) if self.decay == "cosine" else 1.0 - t
            after = self.peak * shape
        if not self.warmup_steps:
            return after
        if self.warmup_learning_rate is None:
            warm = self.peak * (step + 1.0) / self.warmup_steps
        else:
            warm = ops.full_like(step, self.warmup_learning_rate)
        return ops.where(step < self.warmup_steps, warm, after)

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "decay": self.decay,
            "decay_at": list(self.decay_at),
            "warmup_learning_rate": self.warmup_learning_rate,
        }


def recipe_schedule(recipe, global_batch_size: int, total_steps: int) -> RecipeSchedule:
    """The recipe's schedule for a run: rates scaled by `global_batch_size / recipe.batch_size`,
    a warm-up given in steps of the reference batch scaled inversely, fractions of training
    turned into steps.

    Example:
    >>> from keras_resvit.training.recipes import RECIPES
    >>> s = recipe_schedule(RECIPES["resnet_cifar"], 128, 64_000)
    >>> [round(float(s(k)), 4) for k in (0, 31_999, 32_000, 48_000)]
    [0.1, 0.1, 0.01, 0.001]
    """
    if recipe.schedule == "plateau":
        raise ValueError(
            "a 'plateau' schedule is no function of the step: it follows the validation "
            "accuracy; train() starts at the recipe's rate and lowers it with "
            "keras_resvit.training.fitting.plateau_callback (keras.callbacks.ReduceLROnPlateau)."
        )
    scale = global_batch_size / recipe.batch_size
    # A warm-up of >= 1 counts steps of the reference batch; below 1, a fraction of training.
    warmup = recipe.warmup / scale if recipe.warmup >= 1 else recipe.warmup * total_steps
    warmup_rate = recipe.warmup_learning_rate
    return RecipeSchedule(
        recipe.learning_rate * scale,
        total_steps,
        warmup_steps=round(warmup),
        decay=recipe.schedule,
        decay_at=[round(f * total_steps) for f in recipe.decay_at],
        warmup_learning_rate=None if warmup_rate is None else warmup_rate * scale,
    )


def recipe_steps(recipe, global_batch_size: int) -> int | None:
    """The recipe's own run length in steps of `global_batch_size` (None: it counts epochs).

    Example:
    >>> from keras_resvit.training.recipes import RECIPES
    >>> recipe_steps(RECIPES["resnet_cifar"], 128), recipe_steps(RECIPES["resnet_cifar"], 256)
    (64000, 32000)
    """
    if recipe.steps is None:
        return None
    return max(1, round(recipe.steps * recipe.batch_size / global_batch_size))
