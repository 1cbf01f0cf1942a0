"""One serializable learning-rate schedule for every recipe: warm-up, then step/cosine/linear."""

import math

import keras
from keras import ops

from keras_resvit.base.validation import check_choice, check_int, check_number
from keras_resvit.training.recipes import get_recipe


@keras.saving.register_keras_serializable(package="keras_resvit")
class RecipeSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear (or constant) warm-up to `peak`, then step, cosine or linear decay to the end.

    Args:
        peak: learning rate after warm-up (a number > 0).
        total_steps: length of training in optimizer steps (a positive int).
        warmup_steps: warm-up length in steps (an int >= 0).
        decay: "step", "cosine" or "linear".
        decay_at: step boundaries of a "step" schedule (each divides by 10): a list of ints
            >= 0 in non-decreasing order (a boundary given twice divides by 100 there).
        warmup_learning_rate: hold this rate (a number > 0) during warm-up instead of
            ramping linearly.

    Raises:
        ValueError: an argument of another type or out of its range.
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
        check_choice("RecipeSchedule: decay", decay, ("step", "cosine", "linear"))
        check_number("RecipeSchedule: peak", peak, 0)
        check_int("RecipeSchedule: total_steps", total_steps)
        check_int("RecipeSchedule: warmup_steps", warmup_steps, 0)
        check_number("RecipeSchedule: warmup_learning_rate", warmup_learning_rate, 0, none_ok=True)
        if (
            not isinstance(decay_at, (tuple, list))
            or any(not isinstance(b, int) or isinstance(b, bool) or b < 0 for b in decay_at)
            or list(decay_at) != sorted(decay_at)
        ):
            raise ValueError(
                f"RecipeSchedule: decay_at={decay_at!r} is not valid; expected a list of step "
                "boundaries, sorted ints >= 0, e.g. [32000, 48000], or () for none."
            )
        # Settings another decay or no warm-up would ignore, refused as `Recipe` does.
        if decay_at and decay != "step":
            raise ValueError(
                f"RecipeSchedule: decay_at={list(decay_at)} applies to decay='step' only; "
                f"decay={decay!r} ignores it: drop it, or use decay='step'."
            )
        if warmup_learning_rate is not None and not warmup_steps:
            raise ValueError(
                f"RecipeSchedule: warmup_learning_rate={warmup_learning_rate} needs a warm-up; "
                "pass warmup_steps > 0, or drop it."
            )
        self.peak = float(peak)
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.decay = decay
        self.decay_at = tuple(decay_at)
        self.warmup_learning_rate = (
            None if warmup_learning_rate is None else float(warmup_learning_rate)
        )

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

    Args:
        recipe: a `Recipe` or a recipe's name.
        global_batch_size: images per optimizer step over all replicas (a positive int).
        total_steps: optimizer steps of the whole run (a positive int).

    Raises:
        ValueError: an unknown recipe, a "plateau" recipe, or a size that is not a positive
            int.

    Example:
    >>> from keras_resvit.training.schedules import recipe_schedule
    >>> from keras_resvit.training.recipes import RECIPES
    >>> s = recipe_schedule(RECIPES["resnet_cifar"], 128, 64_000)
    >>> [round(float(s(k)), 4) for k in (0, 31_999, 32_000, 48_000)]
    [0.1, 0.1, 0.01, 0.001]
    """
    recipe = get_recipe(recipe)
    check_int("global_batch_size", global_batch_size)
    check_int("total_steps", total_steps)
    if recipe.schedule == "plateau":
        raise ValueError(
            "a 'plateau' schedule is no function of the step: it follows the validation "
            "accuracy; train() starts at the recipe's rate and lowers it with "
            "keras_resvit.training.fitting.plateau_callback (keras.callbacks.ReduceLROnPlateau)."
        )
    scale = global_batch_size / recipe.batch_size
    # A warm-up of >= 1 counts steps of the reference batch; below 1, a fraction of training.
    warmup = recipe.warmup / scale if recipe.warmup >= 1 else recipe.warmup * total_steps
    # A run too short for one warm-up step has no warm-up rate.
    warmup_rate = recipe.warmup_learning_rate if round(warmup) else None
    return RecipeSchedule(
        recipe.learning_rate * scale,
        total_steps,
        warmup_steps=round(warmup),
        decay=recipe.schedule,
        # A boundary at step 0 would skip the peak rate (a run of one step: round(0.5) = 0).
        decay_at=[max(1, round(f * total_steps)) for f in recipe.decay_at],
        warmup_learning_rate=None if warmup_rate is None else warmup_rate * scale,
    )


def recipe_steps(recipe, global_batch_size: int) -> int | None:
    """The recipe's own run length in steps of `global_batch_size` (None: it counts epochs).

    Example:
    >>> from keras_resvit.training.schedules import recipe_steps
    >>> from keras_resvit.training.recipes import RECIPES
    >>> recipe_steps(RECIPES["resnet_cifar"], 128), recipe_steps(RECIPES["resnet_cifar"], 256)
    (64000, 32000)
    """
    recipe = get_recipe(recipe)
    check_int("global_batch_size", global_batch_size)
    if recipe.steps is None:
        return None
    return max(1, round(recipe.steps * recipe.batch_size / global_batch_size))
