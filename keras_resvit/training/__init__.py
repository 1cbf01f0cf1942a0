"""Training: recipes, the one `train()` entry point over `model.fit`, and `initialize()`, which
joins this process to a run of several (`keras_resvit.base.processes`)."""

from keras_resvit.base.processes import initialize, is_chief, process_count, process_index
from keras_resvit.training.recipes import RECIPES, Recipe
from keras_resvit.training.train import train

__all__ = [
    "RECIPES",
    "Recipe",
    "initialize",
    "is_chief",
    "process_count",
    "process_index",
    "train",
]
