"""The papers' training recipes as plain data."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """Optimizer and schedule of a paper's recipe.

    Attributes:
        learning_rate: peak learning rate at `batch_size`; scaled linearly with the batch.
        batch_size: the paper's batch size.
        momentum: SGD momentum.
        weight_decay: decay on conv and dense kernels (not on norms and biases).
        epochs: default number of epochs.
        decay_at: fractions of training at which the learning rate is divided by 10.
    """

    learning_rate: float
    batch_size: int
    momentum: float
    weight_decay: float
    epochs: int
    decay_at: tuple[float, ...]


RECIPES = {
    # He et al. (2015), Section 4.2: lr 0.1, /10 at 32k and 48k of 64k iterations, batch 128,
    # momentum 0.9, weight decay 1e-4; 64k iterations of 128 on 45k images ~ 182 epochs.
    "resnet_cifar": Recipe(0.1, 128, 0.9, 1e-4, 182, (0.5, 0.75)),
}
