"""Fixtures of the training tests."""

import pytest

import keras_resvit as kr


@pytest.fixture(scope="module")
def arrays():
    """64 training and 32 test digits, as arrays."""
    (x, y), (xt, yt) = kr.data.load_digits()
    return (x[:64], y[:64]), (xt[:32], yt[:32])
