"""Every builder's `dtype=`: the layers' dtype policy, as keras-hub's `dtype=`; the classifier's
outputs stay float32 under a mixed policy; saved with the model; the global policy untouched."""

import json

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.models.common import leaf_layers
from keras_resvit.training.model_setup import compile_model
from keras_resvit.training.recipes import get_recipe
from tests.conftest import TINY_VIT, random_images

BUILDS = {
    "resnet": lambda **kw: kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), **kw),
    "vit": lambda **kw: kr.build_vit(**{**TINY_VIT, **kw}),
    "hybrid_vit": lambda **kw: kr.build_hybrid_vit(
        "r50", "Ti/16", image_size=32, num_classes=10, **kw
    ),
    "vgg": lambda **kw: kr.build_vgg(11, input_shape=(32, 32, 3), num_classes=10, **kw),
    "alexnet": lambda **kw: kr.build_alexnet(num_classes=10, **kw),
    "efficientnetv2": lambda **kw: kr.build_efficientnetv2(
        "s", input_shape=(32, 32, 3), num_classes=10, **kw
    ),
}


def _policies(model):
    """{policy name: layers} over the model's leaf layers but its classifier."""
    found = {}
    for layer in leaf_layers(model):
        if layer.name != "predictions" and not isinstance(layer, keras.layers.InputLayer):
            found.setdefault(layer.dtype_policy.name, []).append(layer.name)
    return found


# The same decorator gives each builder its dtype: the larger builds run in one pass.
ONE_PASS = pytest.mark.one_backend("tensorflow", reason="the same policy code as resnet and vit")


@pytest.mark.parametrize(
    "family",
    [
        pytest.param(family, marks=() if family in ("resnet", "vit") else ONE_PASS)
        for family in sorted(BUILDS)
    ],
)
def test_every_builder_builds_in_the_dtype_it_is_given(family):
    build = BUILDS[family]
    reference = build()
    mixed = build(dtype="mixed_bfloat16")
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left alone
    assert list(_policies(reference)) == ["float32"]
    assert list(_policies(mixed)) == ["mixed_bfloat16"], _policies(mixed)
    head = mixed.get_layer("predictions")
    assert head.dtype_policy.name == "float32" and mixed.output.dtype == "float32"
    assert [layer.name for layer in mixed.layers].count("predictions") == 1
    assert mixed.count_params() == reference.count_params()
    assert {w.dtype for w in mixed.weights} == {"float32"}  # mixed: float32 weights


def test_a_16_bit_model_computes_what_its_float32_twin_does():
    reference = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=4)
    half = kr.build_resnet(
        8, stem="cifar", input_shape=(16, 16, 3), num_classes=4, dtype=keras.DTypePolicy("bfloat16")
    )
    assert {str(w.dtype) for w in half.weights if "kernel" in w.path} == {"bfloat16"}
    half.set_weights(reference.get_weights())
    x = random_images(4, 16, 16)
    expected = keras.ops.convert_to_numpy(reference(x))
    got = keras.ops.convert_to_numpy(keras.ops.cast(half(x), "float32"))
    np.testing.assert_allclose(got, expected, atol=0.05)  # bfloat16: 8 significant bits
    assert np.abs(got - expected).max() > 0  # not float32 in disguise


def test_the_dtype_is_saved_with_the_model(tmp_path):
    model = kr.build_vit(**TINY_VIT, dtype="mixed_float16")
    x = random_images(2, 32, 32)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert _policies(loaded) == _policies(model)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6
    )
    # A reloaded functional model has the default policy itself; its layers decide: training
    # it wraps the optimizer in a loss scale as for the model built mixed_float16.
    assert loaded.dtype_policy.name == "float32"
    compile_model(loaded, get_recipe("vit_finetune"), 8, 10)
    assert isinstance(loaded.optimizer, keras.optimizers.LossScaleOptimizer)


def test_create_model_takes_the_dtype_with_weights_from_a_file(tmp_path):
    trained = kr.create_model("resnet20", num_classes=3)
    trained(random_images(4, 32, 32), training=True)  # BatchNorm statistics of their own
    trained.save(tmp_path / "w.keras")
    model = kr.create_model(
        "resnet20", num_classes=3, weights=tmp_path / "w.keras", dtype="mixed_bfloat16"
    )
    assert list(_policies(model)) == ["mixed_bfloat16"]
    x = random_images(2, 32, 32, seed=1)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(trained(x)), atol=0.05
    )


@pytest.mark.parametrize("dtype", ["int8", "float64", "bf16", 16, keras.DTypePolicy("float64")])
def test_a_bad_dtype_is_one_error_naming_it(dtype):
    with pytest.raises(ValueError, match=r"dtype=.* is not valid; expected None .*mixed_bfloat16"):
        kr.build_resnet(20, stem="cifar", dtype=dtype)
    with pytest.raises(ValueError, match=r"dtype="):
        kr.create_model("vit_ti16", dtype=dtype)


def test_a_failing_build_leaves_the_global_policy_alone():
    with pytest.raises(ValueError, match="depth"):
        kr.build_resnet(21, stem="cifar", dtype="mixed_float16")
    assert keras.config.dtype_policy().name == "float32"


def test_train_checks_the_precision_against_the_layers_policy(tmp_path):
    model = kr.build_resnet(
        8, stem="cifar", input_shape=(16, 16, 3), num_classes=2, dtype="mixed_bfloat16"
    )
    data = (random_images(8, 16, 16), np.arange(8) % 2)
    with pytest.raises(
        ValueError, match="precision='float32' but the model was built with 'mixed_bfloat16'"
    ):
        kr.train(model, data, steps=1, batch_size=8, output_dir=tmp_path / "a", precision="float32")
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")  # its own policy: the default
    history = kr.train(
        loaded, data, steps=1, batch_size=8, output_dir=tmp_path / "b", precision="mixed_bfloat16"
    )
    assert np.isfinite(history.history["loss"]).all()
    # "auto" (float32 on this CPU) trains a built model in its own precision, and the run's
    # record says so (it said the precision "auto" would pick for a model built by name).
    kr.train(loaded, data, steps=1, batch_size=8, output_dir=tmp_path / "c")
    assert json.loads((tmp_path / "c" / "config.json").read_text())["precision"] == (
        "mixed_bfloat16"
    )
