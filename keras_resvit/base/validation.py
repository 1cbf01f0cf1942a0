"""Argument checks shared by every module: one clear `ValueError` naming the argument, the bad
value and what would be valid.

Each check returns nothing and raises `ValueError("<argument>=<value!r> must be ...")`; `None`
passes where `none_ok=True` (an argument whose default is None). Booleans are refused where a
number is asked for (`True` is an `int` to Python, never a size or a rate to a user).

>>> from keras_resvit.base.validation import check_int, check_number
>>> check_int("epochs", 3)
>>> check_int("epochs", 0)
Traceback (most recent call last):
ValueError: epochs=0 must be a positive int.
>>> check_number("dropout", 0.1, low=0, high=1, include_low=True)
>>> check_number("dropout", 1.0, low=0, high=1, include_low=True)
Traceback (most recent call last):
ValueError: dropout=1.0 must be a number in [0, 1).
"""

import math

from keras_resvit.base.lazy import keras

# Classes are at most this many: 2**20, more than any classification dataset has
# (ImageNet-21k: 21,841), where one output and one name per class still fit in memory. A
# larger label is an ID, not a class index.
MAX_CLASSES = 2**20


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def numpy_hint(value) -> str:
    """For a NumPy scalar, which a model's config could not save, or a tuple or list holding
    one: how to pass it; "" for any other value."""
    if isinstance(value, (tuple, list)):
        if any(numpy_hint(item) for item in value):
            return " (it holds NumPy scalars: pass Python numbers, e.g. tuple(map(int, shape)))"
        return ""
    if type(value).__module__ != "numpy" or isinstance(value, (int, float)):
        return ""  # np.float64 is a float
    return f" (a Python {'int' if 'int' in type(value).__name__ else 'float'}: pass .item())"


def check_num_classes(argument: str, value) -> None:
    """`value` must be a class count: a positive int up to `MAX_CLASSES`."""
    check_int(argument, value)
    if value > MAX_CLASSES:
        raise ValueError(
            f"{argument}={value!r} is more classes than any dataset has; valid: 1 to "
            f"{MAX_CLASSES:,} (labels that are IDs map to class indices with "
            "np.unique(labels, return_inverse=True)[1])."
        )


def check_int(argument: str, value, minimum: int = 1, *, none_ok: bool = False) -> None:
    """`value` must be an int >= `minimum` (a "positive int" for the default 1)."""
    if none_ok and value is None:
        return
    if not _is_int(value) or value < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{argument}={value!r} must be {what}{numpy_hint(value)}.")


def check_number(
    argument: str,
    value,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    include_low: bool = False,
    include_high: bool = False,
    none_ok: bool = False,
) -> None:
    """`value` must be a finite real number between `low` and `high` (bounds excluded unless
    `include_low` / `include_high`)."""
    if none_ok and value is None:
        return
    above = _is_number(value) and (value >= low if include_low else value > low)
    below = _is_number(value) and (value <= high if include_high else value < high)
    if not (above and below):
        interval = _interval(low, high, include_low, include_high)
        raise ValueError(f"{argument}={value!r} must be a number {interval}{numpy_hint(value)}.")


def _interval(low, high, include_low, include_high):
    if high == math.inf:
        return f">= {low}" if include_low else f"> {low}"
    if low == -math.inf:
        return f"<= {high}" if include_high else f"< {high}"
    return f"in {'[' if include_low else '('}{low}, {high}{']' if include_high else ')'}"


def check_seed(value) -> None:
    """`value` must be a random seed: an int in [0, 2**32), as NumPy and Keras take."""
    if not _is_int(value) or not 0 <= value < 2**32:
        raise ValueError(f"seed={value!r} must be an int in [0, 2**32).")


def check_value_range(layer: str, value_range) -> tuple:
    """`value_range` must be (low, high), two finite numbers with low < high: the pixel range
    of an image layer's inputs. Returns it as floats."""
    if not (
        isinstance(value_range, (tuple, list))
        and len(value_range) == 2
        and all(_is_number(v) for v in value_range)
        and value_range[0] < value_range[1]
    ):
        raise ValueError(
            f"{layer}: value_range={value_range!r} must be two numbers (low, high) with "
            "low < high, e.g. (0, 255)."
        )
    return tuple(float(v) for v in value_range)


def check_rate(argument: str, value, *, none_ok: bool = False) -> None:
    """`value` must be a probability of dropping or mixing: a number in [0, 1)."""
    check_number(argument, value, 0, 1, include_low=True, none_ok=none_ok)


def check_choice(argument: str, value, valid) -> None:
    """`value` must be one of `valid`, and of its type: 16.0 is not the choice 16, nor True
    the choice 1."""

    def same(choice):
        kind = type(value) is type(choice) or isinstance(value, str) and isinstance(choice, str)
        return kind and value == choice

    try:
        found = any(same(choice) for choice in valid)
    except (TypeError, ValueError):  # an array, whose == gives no one truth value
        found = False
    if not found:
        raise ValueError(f"{argument}={value!r} is not valid; expected one of {list(valid)}.")


def check_verbose(value) -> None:
    """`value` must be one of `model.fit`'s verbosities: "auto", 0 (silent), 1 (progress bar)
    or 2 (one line per epoch); False and True, which `fit` takes as 0 and 1, pass too."""
    if not isinstance(value, bool):
        check_choice("verbose", value, ("auto", 0, 1, 2))


def check_bool(argument: str, value, *, none_ok: bool = False) -> None:
    """`value` must be True or False (or None, with `none_ok`: "decide for me"): a string such
    as "no" is truthy, so it is refused rather than taken for True."""
    if none_ok and value is None:
        return
    if not isinstance(value, bool):
        choices = "True, False or None" if none_ok else "True or False"
        raise ValueError(f"{argument}={value!r} must be {choices}.")


def check_model(argument: str, value) -> None:
    """`value` must be a `keras.Model`."""
    if not isinstance(value, keras.Model):
        raise ValueError(
            f"{argument} of type {type(value).__name__} is not valid; pass a keras.Model "
            "(kr.create_model(name) builds one, kr.load_model(path) loads one)."
        )


def check_finite_scores(model_name: str, scores, what: str = "images") -> None:
    """A model's scores must be finite: NaN or infinite scores would rank the classes, and
    count as hits or misses, by accident.

    Raises:
        ValueError: naming the model and the first row (image) whose scores are not finite.
    """
    import numpy as np

    scores = np.asarray(scores)
    finite = np.isfinite(scores.reshape(len(scores), -1)).all(axis=-1)
    if not finite.all():
        row = int(np.argmin(finite))
        raise ValueError(
            f"model {model_name!r} gives NaN or infinite scores for {what} (row {row}, "
            f"{int((~finite).sum())} in all): its weights are not finite, or its computation "
            "overflows (try float32); no class ranking can be read from them."
        )


def refuse_arguments(layer, kwargs, names, instead):
    """A Keras parent's argument that `layer` does not take (its `get_config` leaves it out):
    one clear error rather than an argument silently ignored."""
    for name in names:
        if name in kwargs:
            raise ValueError(
                f"{layer}: {name}={kwargs[name]!r} is not an argument of {layer}; {instead}."
            )


def check_channels_last(data_format, layer):
    """A layer that runs on channels-last images only: `data_format` (None: Keras' setting)
    must be "channels_last"; returns it."""
    data_format = data_format or keras.config.image_data_format()
    if data_format != "channels_last":
        raise ValueError(
            f"{layer}: data_format={data_format!r} is not supported; valid: 'channels_last'."
        )
    return data_format
