"""The recipes' optimizers: SGD with the papers' coupled L2 decay, LAMB as timm trains with
it, and Keras' own optimizers.

Two kinds of weight decay:
- "coupled" (He et al. 2016, Krizhevsky et al. 2012, Caffe and Torch): `wd * w` is added to the
  gradient, so it passes through momentum. At momentum 0.9 its steady-state pull on a weight
  is `lr * wd * w / (1 - 0.9)`: ten times the decoupled one at the same `wd`. LAMB's own decay
  (You et al. 2020) is coupled too, one step later: `wd * w` joins the Adam update before the
  layer-wise trust ratio scales it (`CoupledDecayLamb`).
- "decoupled" (Loshchilov & Hutter, AdamW; the ViT and DeiT recipes): `w -= lr * wd * w`
  outside the moments, as Keras' `weight_decay` argument does.
"""

import numbers

import keras

from keras_resvit.base.validation import check_number
from keras_resvit.training.recipes import get_recipe


def _without_decoupled_decay(optimizer, kwargs, keras_name):
    """`kwargs` without `weight_decay`, which a coupled-decay optimizer refuses when set."""
    if kwargs.get("weight_decay"):
        raise ValueError(
            f"weight_decay={kwargs['weight_decay']!r}: {type(optimizer).__name__} decays "
            f"through `l2`; use keras.optimizers.{keras_name}(weight_decay=...) for decoupled "
            "decay."
        )
    return {key: value for key, value in kwargs.items() if key != "weight_decay"}


def _names(optimizer, exclude):
    """`exclude` as a tuple of names: one str is one name, not its characters."""
    if exclude is None:
        return ()
    names = (exclude,) if isinstance(exclude, str) else exclude
    if not isinstance(names, (tuple, list)) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(
            f"{type(optimizer).__name__}: exclude={exclude!r} is not valid; expected a name or "
            "a list of names (substrings of variable names), e.g. ['bias'], or () for none."
        )
    return tuple(names)


def _set_coupled_decay(optimizer, l2, exclude):
    check_number("l2", l2, 0, include_low=True)
    optimizer.l2 = float(l2)
    optimizer.exclude = _names(optimizer, exclude)
    if optimizer.exclude:
        optimizer.exclude_from_weight_decay(var_names=list(optimizer.exclude))


@keras.saving.register_keras_serializable(package="keras_resvit")
class CoupledDecaySGD(keras.optimizers.SGD):
    """`keras.optimizers.SGD` with L2 decay added to the gradient, as the ResNet papers train.

    Each step, for every variable `w` not excluded from weight decay, the gradient becomes
    `g + l2 * w` before momentum and the update (PyTorch's `SGD(weight_decay=l2)`, Caffe's
    `weight_decay`): the same as a `l2 / 2 * sum(w ** 2)` term in the loss, without touching
    the model. Gradient clipping, when set, applies before the decay is added, as there.

    Args:
        l2: decay coefficient (the papers' 1e-4 for ResNets, 5e-4 for AlexNet).
        exclude: substrings of variable names left undecayed, a list or one name (default
            none: the papers decay every parameter, batch-norm scales and offsets and biases
            included).
        **kwargs: arguments of `keras.optimizers.SGD` (its own decoupled `weight_decay`
            is refused: pick one mode).

    Example:
    >>> from keras_resvit.training.optimizers import CoupledDecaySGD
    >>> import keras
    >>> w = keras.Variable([1.0])
    >>> opt = CoupledDecaySGD(learning_rate=0.1, momentum=0.9, l2=0.5)
    >>> opt.apply([keras.ops.convert_to_tensor([0.0])], [w])
    >>> round(float(w.numpy()[0]), 4)  # 1 - 0.1 * (0 + 0.5 * 1)
    0.95
    """

    def __init__(self, *, l2=1e-4, exclude=(), **kwargs):
        super().__init__(**_without_decoupled_decay(self, kwargs, "SGD"))
        _set_coupled_decay(self, l2, exclude)

    def update_step(self, gradient, variable, learning_rate):
        if self.l2 and self._use_weight_decay(variable):
            gradient = gradient + keras.ops.cast(self.l2, variable.dtype) * variable
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config.pop("weight_decay", None)
        return {**config, "l2": self.l2, "exclude": list(self.exclude)}


@keras.saving.register_keras_serializable(package="keras_resvit")
class CoupledDecayLamb(keras.optimizers.Lamb):
    """LAMB (You et al. 2020, Algorithm 2) as timm's `Lamb`, which "ResNet strikes back" trains
    with (Wightman et al. 2021).

    Keras' `Lamb` decays outside its update (`weight_decay`, AdamW-style) and applies the
    trust ratio to every variable. Here, as in the paper's algorithm and timm, each variable
    `w` not excluded from weight decay takes the Adam direction `u = m_hat / (sqrt(v_hat) +
    epsilon)` plus `l2 * w`, rescaled by the trust ratio `||w|| / ||u + l2 * w||` (1 where
    either norm is 0); excluded variables (biases, normalization scales and offsets) take the
    plain Adam step, without trust ratio (timm's `always_adapt=False`). timm's `Lamb` also
    clips the global gradient norm at 1.0: pass `global_clipnorm=1.0` (the `rsb_*` recipes do).

    Args:
        l2: decay coefficient inside the update (the paper's "weight decay": 0.01 for RSB A1,
            0.02 for A2 and A3).
        exclude: substrings of variable names left undecayed and unadapted, a list or one
            name.
        epsilon: timm's 1e-6 (Keras' default is 1e-7).
        **kwargs: arguments of `keras.optimizers.Lamb` (its decoupled `weight_decay` is
            refused: pick one mode).

    Example:
    >>> from keras_resvit.training.optimizers import CoupledDecayLamb
    >>> import keras
    >>> w = keras.Variable([3.0, 4.0])
    >>> opt = CoupledDecayLamb(learning_rate=0.1, l2=0.5)
    >>> opt.apply([keras.ops.convert_to_tensor([1.0, -1.0])], [w])
    >>> [round(float(v), 4) for v in w.numpy()]  # one step of length lr * ||w|| = 0.5
    [2.5358, 3.8143]
    """

    def __init__(self, *, l2=0.01, exclude=(), epsilon=1e-6, **kwargs):
        super().__init__(epsilon=epsilon, **_without_decoupled_decay(self, kwargs, "Lamb"))
        _set_coupled_decay(self, l2, exclude)

    def update_step(self, gradient, variable, learning_rate):
        ops = keras.ops
        dtype = variable.dtype
        gradient = ops.cast(gradient, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, (gradient - m) * (1 - self.beta_1))
        self.assign_add(v, (ops.square(gradient) - v) * (1 - self.beta_2))
        m_hat = m / (1 - ops.power(ops.cast(self.beta_1, dtype), step))
        v_hat = v / (1 - ops.power(ops.cast(self.beta_2, dtype), step))
        update = m_hat / (ops.sqrt(v_hat) + self.epsilon)
        if self.l2 and self._use_weight_decay(variable):
            update = update + ops.cast(self.l2, dtype) * variable
            w_norm = ops.sqrt(ops.sum(ops.square(variable)))
            u_norm = ops.sqrt(ops.sum(ops.square(update)))
            ratio = ops.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, 1.0)
            update = update * ratio
        self.assign_sub(variable, ops.cast(learning_rate, dtype) * update)

    def get_config(self):
        config = super().get_config()
        config.pop("weight_decay", None)
        return {**config, "l2": self.l2, "exclude": list(self.exclude)}


def recipe_optimizer(recipe, learning_rate, ema=None):
    """The recipe's optimizer around `learning_rate` (a float or schedule).

    Args:
        recipe: a `Recipe` or a recipe's name: its optimizer, momentum/betas, clipping and
            weight decay (its `weight_decay`, `decay_mode` and `no_decay`).
        learning_rate: the learning rate (a number > 0) or `LearningRateSchedule` to use.
        ema: momentum of an exponential moving average of the weights, a number in (0, 1)
            (e.g. 0.9999); None keeps no average.

    Returns:
        A Keras optimizer.

    Raises:
        ValueError: an unknown recipe, a learning rate <= 0 or not finite, or `ema` outside
            (0, 1) (0 is refused rather than taken for "no average": pass None).

    Example:
    >>> from keras_resvit.training.optimizers import recipe_optimizer
    >>> from keras_resvit.training.recipes import get_recipe
    >>> type(recipe_optimizer(get_recipe("resnet_cifar"), 0.1)).__name__
    'CoupledDecaySGD'
    >>> type(recipe_optimizer(get_recipe("deit"), 5e-4)).__name__
    'AdamW'
    >>> type(recipe_optimizer("rsb_a2", 5e-3)).__name__  # a recipe's name
    'CoupledDecayLamb'
    """
    recipe = get_recipe(recipe)
    if isinstance(learning_rate, numbers.Real) and not isinstance(learning_rate, bool):
        learning_rate = float(learning_rate)  # a NumPy scalar too
    if learning_rate is None or isinstance(learning_rate, (bool, float, str)):
        check_number("learning_rate", learning_rate, 0)
    check_number("ema", ema, 0, 1, none_ok=True)
    common = {
        "learning_rate": learning_rate,
        "global_clipnorm": recipe.global_clipnorm,
        "use_ema": ema is not None,
        "ema_momentum": 0.99 if ema is None else ema,
    }
    coupled = recipe.decay_mode == "coupled" and recipe.weight_decay
    if recipe.optimizer == "sgd" and coupled:
        return CoupledDecaySGD(
            momentum=recipe.momentum, l2=recipe.weight_decay, exclude=recipe.no_decay, **common
        )
    betas = {"beta_1": recipe.beta_1, "beta_2": recipe.beta_2}
    if recipe.optimizer == "lamb" and coupled:
        return CoupledDecayLamb(l2=recipe.weight_decay, exclude=recipe.no_decay, **betas, **common)
    decay = recipe.weight_decay or None
    if recipe.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(momentum=recipe.momentum, weight_decay=decay, **common)
    elif recipe.optimizer == "lamb":
        optimizer = keras.optimizers.Lamb(**betas, weight_decay=decay, **common)
    else:
        optimizer = keras.optimizers.AdamW(**betas, weight_decay=decay or 0.0, **common)
    if recipe.no_decay:
        optimizer.exclude_from_weight_decay(var_names=list(recipe.no_decay))
    return optimizer
