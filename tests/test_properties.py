"""Property-based tests of the builders (hypothesis): any valid configuration builds, runs and
survives a `.keras` round trip; any invalid one raises ValueError naming the argument.

Examples are drawn deterministically (`derandomize=True`) and kept tiny (4-37 px, a few
channels, a few distinct shapes so that JAX reuses its compiled ops), so the whole module
runs in well under a minute.
"""

import math
import tempfile
from pathlib import Path

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keras_resvit as kr
from keras_resvit.models.resnet import NORMS, SHORTCUTS, STEMS, VERSIONS
from keras_resvit.models.vit import POOLINGS
from tests.conftest import random_images

SETTINGS = {
    "deadline": None,
    "derandomize": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
VALID_EXAMPLES = 5
INVALID_EXAMPLES = 150


@st.composite
def resnet_configs(draw):
    """Small ResNets of either stem: any version, shortcut, norm, SE, width and input size the
    stride allows (>= 4 px for the CIFAR stem, >= 32 px for the ImageNet stem)."""
    stem = draw(st.sampled_from(STEMS))
    plain = draw(st.booleans())
    if stem == "cifar":
        block = draw(st.sampled_from(["basic", "bottleneck"]))
        depth = 8 if block == "basic" else 11  # 6n+2 / 9n+2 with n = 1
        width, sizes = draw(st.sampled_from([0.25, 0.5])), st.sampled_from([4, 7, 12])
    else:
        block, depth = "basic", 18
        width, sizes = 0.125, st.sampled_from([32, 37])
    return {
        "depth": depth,
        "stem": stem,
        "block": block,
        "input_shape": (draw(sizes), draw(sizes), 3),
        "num_classes": draw(st.integers(1, 5)),
        "pooling": draw(st.sampled_from(["avg", "max"])),
        "version": draw(st.sampled_from(VERSIONS)),
        "plain": plain,
        "shortcut": None if plain else draw(st.sampled_from(SHORTCUTS)),
        "norm": draw(st.sampled_from(NORMS)),
        "weight_standardization": draw(st.booleans()),
        "se_ratio": draw(st.sampled_from([None, 0.25, 0.5])),
        "width": width,
    }


@st.composite
def vit_configs(draw):
    """Small ViTs: patch sizes that divide the (possibly non-square) image, widths divisible by
    the heads, one or two blocks, either pooling and position embedding."""
    patch = draw(st.sampled_from([2, 4, 8]))
    heads = draw(st.sampled_from([1, 2, 4]))
    hidden = heads * draw(st.sampled_from([4, 8]))  # a multiple of 4: sincos2d needs one
    pooling = draw(st.sampled_from(["token", "gap"]))
    return {
        "variant": None,
        "image_size": (patch * draw(st.integers(1, 3)), patch * draw(st.integers(1, 3))),
        "patch_size": patch,
        "hidden_size": hidden,
        "num_heads": heads,
        "num_layers": draw(st.integers(1, 2)),
        "mlp_dim": draw(st.sampled_from([8, 16])),
        "pooling": pooling,
        "position_embedding": draw(st.sampled_from(["learned", "sincos2d"])),
        "representation_size": draw(st.sampled_from([None, 8])),
        "drop_path": draw(st.sampled_from([0.0, 0.1])),
        "num_classes": draw(st.integers(1, 5)),
    }


def _check_forward_and_round_trip(model, height, width, num_classes):
    images = random_images(2, height, width, seed=1)
    outputs = keras.ops.convert_to_numpy(model(images, training=False))
    assert outputs.shape == (2, num_classes)
    assert np.isfinite(outputs).all()
    np.testing.assert_allclose(outputs.sum(-1), 1.0, rtol=1e-5)  # softmax head
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        restored = kr.load_model(path)
    again = keras.ops.convert_to_numpy(restored(images, training=False))
    np.testing.assert_allclose(again, outputs, rtol=1e-5, atol=1e-6)


@settings(max_examples=VALID_EXAMPLES, **SETTINGS)
@given(config=resnet_configs())
def test_random_valid_resnets_build_run_and_reload(config):
    model = kr.build_resnet(**config)
    height, width, _ = config["input_shape"]
    _check_forward_and_round_trip(model, height, width, config["num_classes"])


@settings(max_examples=VALID_EXAMPLES, **SETTINGS)
@given(config=vit_configs())
def test_random_valid_vits_build_run_and_reload(config):
    model = kr.build_vit(**config)
    height, width = config["image_size"]
    _check_forward_and_round_trip(model, height, width, config["num_classes"])


def _not_in(valid):
    return st.text(max_size=6).filter(lambda text: text not in valid)


NON_NUMBERS = st.sampled_from(["1", None, [1], True])
BAD_FRACTIONS = st.one_of(
    st.floats(max_value=-1e-9),
    st.floats(min_value=1.0001),
    st.sampled_from([math.nan, "0.1", [0.1], True]),
)
# One bad value per argument: wrong type, out of range, non-finite or an unknown choice.
BAD_RESNET = {
    "depth": st.one_of(
        st.integers(-50, 200).filter(lambda d: d < 8 or (d - 2) % 6),  # 6n+2 is valid
        st.sampled_from(["20", 20.0, None]),
    ),
    "input_shape": st.one_of(
        st.tuples(st.integers(-4, 3), st.integers(4, 16), st.just(3)),
        st.tuples(st.integers(4, 16), st.integers(4, 16)),
        st.tuples(st.integers(4, 16), st.integers(4, 16), st.integers(-3, 0)),
        st.just((16.0, 16, 3)),
    ),
    "num_classes": st.one_of(st.integers(-5, 0), st.sampled_from([2.5, "10", True])),
    "version": _not_in(VERSIONS),
    "shortcut": _not_in(SHORTCUTS),
    "norm": _not_in(NORMS),
    "stem": _not_in(STEMS),
    "pooling": _not_in(("avg", "max")),
    "width": st.one_of(
        st.floats(max_value=0.0), st.sampled_from([math.nan, math.inf, "2"]), NON_NUMBERS
    ),
    "se_ratio": BAD_FRACTIONS,
    "plain": st.sampled_from(["yes", 1, None]),
    "classifier_activation": st.sampled_from(["softmaxx", "relu6x", 3]),
}
BAD_VIT = {
    "image_size": st.one_of(st.integers(-8, 0), st.integers(9, 15), st.just((16, 16, 3))),
    "patch_size": st.one_of(st.integers(-4, 0), st.sampled_from([3, 5, 6, 7, 2.0])),
    "num_heads": st.one_of(st.integers(-2, 0), st.sampled_from([3, 5, 6, 7])),
    "num_layers": st.one_of(st.integers(-3, 0), NON_NUMBERS),
    "mlp_dim": st.one_of(st.integers(-3, 0), NON_NUMBERS),
    "pooling": _not_in(POOLINGS),
    "position_embedding": _not_in(("learned", "sincos2d")),
    "dropout": BAD_FRACTIONS,
    "attention_dropout": BAD_FRACTIONS,
    "drop_path": BAD_FRACTIONS,
    "representation_size": st.one_of(st.integers(-4, 0), st.just(2.5)),
    "num_classes": st.one_of(st.integers(-5, 0), st.just("3")),
    "include_top": st.sampled_from(["no", 0, None]),
}
VALID_RESNET = {"depth": 8, "stem": "cifar", "input_shape": (16, 16, 3), "width": 0.25}
# image_size 16 with patch 8 and 8 channels over 4 heads; a bad patch (3-7) or head count
# (3, 5, 6, 7) does not divide them.
VALID_VIT = {
    "variant": None,
    "image_size": 16,
    "patch_size": 8,
    "hidden_size": 8,
    "num_heads": 4,
    "num_layers": 1,
    "mlp_dim": 8,
}


def _assert_value_error_naming(builder, valid, argument, value):
    with pytest.raises(ValueError) as info:
        builder(**{**valid, argument: value})
    message = str(info.value)
    # A bad head count is reported against the width it must divide.
    assert argument in message or (argument == "num_heads" and "hidden_size" in message), message


@settings(max_examples=INVALID_EXAMPLES, **SETTINGS)
@given(data=st.data(), argument=st.sampled_from(sorted(BAD_RESNET)))
def test_random_invalid_resnet_arguments_raise_value_error(data, argument):
    value = data.draw(BAD_RESNET[argument], label=argument)
    _assert_value_error_naming(kr.build_resnet, VALID_RESNET, argument, value)


@settings(max_examples=INVALID_EXAMPLES, **SETTINGS)
@given(data=st.data(), argument=st.sampled_from(sorted(BAD_VIT)))
def test_random_invalid_vit_arguments_raise_value_error(data, argument):
    value = data.draw(BAD_VIT[argument], label=argument)
    _assert_value_error_naming(kr.build_vit, VALID_VIT, argument, value)
