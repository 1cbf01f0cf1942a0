"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): a frozen
kernel W plus a trainable low-rank update B A of rank r (Section 4.1), B starting at zero so
the adapted model starts as the pretrained one; merged into W for inference at no cost."""

import warnings

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.models.lora import enable_lora, merge_lora
from tests.conftest import random_images, tiny_vit

RANK = 2


def _resnet8():
    return kr.build_resnet(8, stem="cifar", num_classes=5)


def _bottleneck_resnet():
    # BiT's layers: weight-standardized StdConv2D (1x1 ones computed as PointwiseConv2D)
    # with GroupNorm.
    return kr.build_resnet(
        11,
        stem="cifar",
        block="bottleneck",
        weight_standardization=True,
        norm="group",
        num_classes=5,
    )


# Hand counts, rank 2. Tiny ViT: width 32, 4 heads of 8, MLP 64, 2 blocks, 5 classes.
# Query/key/value kernels (32, 4, 8): A (32, 4, r), B (r, 8) -> r * (128 + 8) = 272 each;
# output kernel (4, 8, 32) -> r * (32 + 32) = 128; MLP 32->64 and 64->32 -> 192 each.
VIT_ATTENTION_MLP = 2 * (3 * 272 + 128 + 2 * 192)  # 2656
VIT_HEAD = 32 * 5 + 5  # the classifier, kept trainable
# ResNet-8 (CIFAR stem, option-A shortcuts): 3x3 convs 3->16, 16->16 (x2), 16->32, 32->32,
# 32->64, 64->64; a k x k conv (in -> out) gets r * (k*k*in + out).
RESNET8_CONV = 2 * (
    (27 + 16) + 2 * (144 + 16) + (144 + 32) + (288 + 32) + (288 + 64) + (576 + 64)
)  # 3702
RESNET8_HEAD = 64 * 5 + 5

CASES = {
    "vit": (tiny_vit, ("attention", "mlp")),
    "resnet8": (_resnet8, ("conv",)),
    "bottleneck": (_bottleneck_resnet, ("conv",)),
}


def _trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _snapshot(model):
    return {w.path: _numpy(w).copy() for w in model.weights}


def _fit(model, steps=3, seed=0):
    x = random_images(8, 32, 32, seed=seed)
    y = np.arange(8) % 5
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=8, epochs=steps, verbose=0, shuffle=False)


@pytest.mark.parametrize(
    "build, targets, expected",
    [
        (tiny_vit, ("attention", "mlp"), VIT_ATTENTION_MLP + VIT_HEAD),
        (tiny_vit, ("mlp",), 2 * 2 * 192 + VIT_HEAD),
        (tiny_vit, ("head",), RANK * (32 + 5)),
        (_resnet8, ("conv",), RESNET8_CONV + RESNET8_HEAD),
        (_resnet8, ("conv", "head"), RESNET8_CONV + RANK * (64 + 5)),
    ],
)
def test_trainable_parameters_are_the_hand_count(build, targets, expected):
    model = build()
    total = model.count_params()
    enable_lora(model, RANK, targets)
    assert _trainable_count(model) == expected
    # Only LoRA factors were added.
    lora = sum(int(np.prod(w.shape)) for w in model.weights if "lora_kernel" in w.path)
    assert model.count_params() == total + lora


def test_train_head_false_trains_lora_factors_only():
    model = enable_lora(tiny_vit(), RANK, train_head=False)
    assert _trainable_count(model) == VIT_ATTENTION_MLP


@pytest.mark.parametrize("case", sorted(CASES))
def test_training_changes_only_lora_factors_and_the_head(case):
    build, targets = CASES[case]
    model = build()
    x = random_images(4, 32, 32, seed=1)
    expected = _numpy(model(x, training=False))
    enable_lora(model, RANK, targets)
    np.testing.assert_array_equal(_numpy(model(x, training=False)), expected)
    before = _snapshot(model)
    _fit(model)
    after = _snapshot(model)
    changed = {path for path in before if not np.array_equal(before[path], after[path])}
    allowed = {p for p in before if "lora_kernel" in p or p.startswith("predictions/")}
    assert changed <= allowed
    assert any(p.endswith("lora_kernel_b") for p in changed)


@pytest.mark.parametrize("case", sorted(CASES))
def test_merged_model_matches_and_has_the_original_parameter_count(case):
    build, targets = CASES[case]
    model = build()
    total = model.count_params()
    enable_lora(model, RANK, targets, alpha=4)
    _fit(model)
    x = random_images(4, 32, 32, seed=2)
    merged = merge_lora(model)
    np.testing.assert_allclose(
        _numpy(merged(x, training=False)), _numpy(model(x, training=False)), atol=1e-5
    )
    assert merged.count_params() == total
    assert not any("lora" in w.path for w in merged.weights)
    assert _trainable_count(merged) == sum(int(np.prod(w.shape)) for w in build().trainable_weights)


@pytest.mark.parametrize("case", ["vit", "resnet8"])
def test_keras_file_round_trip_keeps_outputs_and_lora(case, tmp_path):
    build, targets = CASES[case]
    model = enable_lora(build(), RANK, targets, alpha=4)
    _fit(model)
    x = random_images(4, 32, 32, seed=3)
    path = tmp_path / "lora.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True, compile=False)
    np.testing.assert_allclose(
        _numpy(restored(x, training=False)), _numpy(model(x, training=False)), atol=1e-5
    )
    lora = [w for w in restored.weights if "lora_kernel" in w.path]
    assert lora and all(w.trainable for w in lora)
    assert {w.path for w in lora} == {w.path for w in model.weights if "lora_kernel" in w.path}
    # Enabling again with the same arguments re-attaches the factors (a fresh A; the file's B
    # is zero) and freezes the rest as before: same count, same outputs, training goes on.
    enable_lora(restored, RANK, targets, alpha=4)
    assert _trainable_count(restored) == _trainable_count(model)
    np.testing.assert_allclose(
        _numpy(restored(x, training=False)), _numpy(model(x, training=False)), atol=1e-5
    )
    before = _snapshot(restored)
    _fit(restored, seed=4)
    after = _snapshot(restored)
    changed = {p for p in before if not np.array_equal(before[p], after[p])}
    assert changed and all("lora_kernel" in p or p.startswith("predictions/") for p in changed)
    assert any(p.endswith("lora_kernel_b") for p in changed)


@pytest.mark.parametrize("case", ["vit", "resnet8"])
def test_merged_model_exports_to_tflite(case, tmp_path):
    build, targets = CASES[case]
    model = enable_lora(build(), RANK, targets)
    _fit(model, steps=2)
    result = kr.export(merge_lora(model), tmp_path / "m.tflite")
    assert (tmp_path / "m.tflite").exists()
    assert result["checked"]


def test_registry_model_takes_lora():
    model = kr.create_model("resnet20")
    enable_lora(model, 1, ("conv",), train_head=False)
    assert _trainable_count(model) > 0
    assert all("lora_kernel" in w.path for w in model.trainable_weights)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rank": 0}, "rank=0"),
        ({"rank": RANK, "targets": ("attention", "ffn")}, "targets=('attention', 'ffn')"),
        ({"rank": RANK, "targets": ()}, "targets=()"),
        ({"rank": RANK, "alpha": -1}, "alpha=-1"),
        ({"rank": RANK, "targets": ("head",), "train_head": True}, "train_head=True"),
        ({"rank": RANK, "train_head": "yes"}, "train_head='yes'"),
    ],
)
def test_bad_arguments_raise_one_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        enable_lora(tiny_vit(), **kwargs)


def test_targets_without_layers_and_merging_without_lora_raise():
    with pytest.raises(ValueError, match="matches no layer"):
        enable_lora(_resnet8(), RANK, ("attention",))
    with pytest.raises(ValueError, match="no LoRA layer"):
        merge_lora(_resnet8())
    model = enable_lora(tiny_vit(), RANK)
    with pytest.raises(ValueError, match="rank=3"):
        enable_lora(model, 3)


def test_a_sequential_and_a_nested_model_merge_to_the_same_outputs():
    x = random_images(2, 32, 32, seed=4)
    for model in (
        keras.Sequential([keras.Input((32, 32, 3)), tiny_vit()]),  # a ViT inside a Sequential
        keras.Model(*(lambda i: (i, tiny_vit()(i)))(keras.Input((32, 32, 3)))),  # nested
    ):
        enable_lora(model, RANK, ("mlp",))
        for variable in model.trainable_weights:  # updates that are not zero
            if variable.path.endswith("lora_kernel_b"):
                variable.assign(np.full(variable.shape, 0.05, "float32"))
        merged = merge_lora(model)
        np.testing.assert_allclose(_numpy(merged(x)), _numpy(model(x)), atol=1e-5)
        assert not any("lora" in w.path for w in merged.weights)


def test_a_model_without_a_graph_of_layers_is_named():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.predictions = keras.layers.Dense(3, name="predictions")

        def call(self, x):
            return self.predictions(x)

    model = Subclassed()
    model(np.ones((1, 4), "float32"))
    with pytest.raises(ValueError, match=r"model='\w+' \(Subclassed\) is not a functional model"):
        enable_lora(model, RANK, ("head",))
    with pytest.raises(ValueError, match=r"\(Subclassed\) is not a functional model: replace_head"):
        kr.replace_head(model, 5)


def _quantized_vit(mode):
    model = tiny_vit(classifier_activation=None)
    head = model.get_layer("predictions").kernel  # zeros, as the ViT paper's head
    head.assign(np.random.default_rng(0).normal(size=head.shape))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # layers without weights have nothing to quantize
        model.quantize(mode)
    return model


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_a_quantized_lora_model_merges_as_keras_saves_it(mode, tmp_path):
    """QLoRA: the update of a quantized kernel is merged and quantized again, as Keras saves
    it; the merged model follows the LoRA model, not the quantized model before LoRA."""
    model = enable_lora(_quantized_vit(mode), RANK, ("attention", "mlp"))
    x = random_images(4, 32, 32, seed=4)
    before = _numpy(model(x))
    rng = np.random.default_rng(1)
    for variable in model.weights:
        if variable.path.endswith("lora_kernel_b"):
            variable.assign(rng.normal(0, 0.3, variable.shape))
    adapted = _numpy(model(x))
    merged = merge_lora(model)
    assert not any("lora" in w.path for w in merged.weights)
    model.save(tmp_path / "qlora.keras")
    loaded = keras.saving.load_model(tmp_path / "qlora.keras")
    np.testing.assert_allclose(_numpy(merged(x)), _numpy(loaded(x)), atol=1e-5)
    rounding = np.abs(_numpy(merged(x)) - adapted).max()
    assert rounding < 0.2 * np.abs(before - adapted).max(), rounding


def test_lora_on_a_layer_quantized_without_lora_is_refused():
    model = _quantized_vit("float8")
    with pytest.raises(ValueError, match=r"is quantized \(float8\).*before model.quantize"):
        enable_lora(model, RANK, ("attention", "mlp"))


@pytest.mark.parametrize("case", ["vit", "resnet8"])
def test_enabling_again_with_another_alpha_is_refused_once_factors_trained(case):
    # A second `enable_lora` with another alpha (or the default) rescaled the trained update:
    # the outputs changed by 0.45 with no error.
    build, targets = CASES[case]
    model = enable_lora(build(), RANK, targets, alpha=16)
    enable_lora(model, RANK, targets, alpha=4)  # untrained (B is zero): outputs unchanged
    _fit(model)
    x = random_images(4, 32, 32, seed=3)
    before = _numpy(model(x, training=False))
    for alpha in (None, 16):
        with pytest.raises(ValueError, match=rf"alpha={alpha}.*trained with alpha=4"):
            enable_lora(model, RANK, targets, alpha=alpha)
    np.testing.assert_allclose(_numpy(model(x, training=False)), before)
    enable_lora(model, RANK, targets, alpha=4)  # the same alpha goes on training
    np.testing.assert_allclose(_numpy(model(x, training=False)), before, atol=1e-6)
