"""Training: recipes, and the one `train()` entry point over `model.fit`."""

from keras_resvit.training.recipes import RECIPES, Recipe
from keras_resvit.training.train import train

__all__ = ["RECIPES", "Recipe", "train"]
