"""Argument checks shared by every module: one clear `ValueError` naming the argument, the bad
value and what would be valid."""

import keras


def check_choice(argument, value, valid):
    if value not in valid:
        raise ValueError(f"{argument}={value!r} is not valid; expected one of {list(valid)}.")


def check_bool(argument, value):
    # A string such as "no" is truthy: refuse it rather than build the other model.
    if not isinstance(value, bool):
        raise ValueError(f"{argument}={value!r} must be True or False.")


def check_model(argument, value):
    if not isinstance(value, keras.Model):
        raise ValueError(
            f"{argument} of type {type(value).__name__} is not valid; pass a keras.Model "
            "(kr.create_model(name) builds one, kr.load_model(path) loads one)."
        )
