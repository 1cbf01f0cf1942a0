"""ResNet options beyond the 2015 papers: ResNet-D (deep stem, average-pool shortcuts),
zero-initialized residual branches and stochastic depth. Parameter counts against timm's
published ones, the new computations against plain NumPy, save/load, head replacement and
TF Lite export."""

import math

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.layers import DropPath
from tests.conftest import assert_save_load_identical, random_images

# One worker builds this module's fixtures once (pytest-xdist --dist loadgroup).
pytestmark = pytest.mark.xdist_group("resnet_options")

# timm's published sizes of its ResNet-D models, in millions (huggingface/pytorch-image-models,
# results/results-imagenet.csv, column param_count: resnet18d.ra2_in1k 11.71, resnet34d 21.82,
# resnet50d.a1_in1k 25.58, resnet101d 44.57, resnet152d 60.21; the resnet50d model card:
# 25.6). To the unit: ResNet-50's 25,557,032 (torchvision) with the deep stem's 19,232 more.
TIMM_RESNET_D_PARAMS_M = {18: 11.71, 34: 21.82, 50: 25.58, 101: 44.57, 152: 60.21}
RESNET50D_PARAMS = 25_557_032 + 19_232  # 25,576,264
EPSILON = 1e-5  # the blocks' BatchNorm epsilon (torchvision's)


def small_resnet_d(**overrides):
    """ResNet-18-D at a quarter width on 36 px: stage 2 starts on a 9x9 map, an odd size."""
    options = {
        "stem": "deep",
        "shortcut": "D",
        "width": 0.25,
        "input_shape": (36, 36, 3),
        "num_classes": 5,
    }
    return kr.build_resnet(18, **{**options, **overrides})


@pytest.fixture(scope="module")
def all_options_model():
    """ResNet-18-D with every option (built once: building is most of a test's time on JAX),
    its BatchNorms randomized so that the zero-initialized branches are not zero."""
    model = small_resnet_d(zero_init_residual=True, drop_path=0.1)
    randomize_normalization(model)
    return model


def randomize_normalization(model, seed=0):
    """Random BatchNorm scales, offsets and statistics (zero-initialized scales included)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, channels),
                    rng.normal(0, 0.1, channels),
                    rng.normal(0, 0.1, channels),
                    rng.uniform(0.5, 1.5, channels),
                ]
            )


def outputs(model, layer_outputs, x, training=False):
    """The given tensors of `model`'s graph on `x`, as NumPy arrays."""
    probe = keras.Model(model.input, list(layer_outputs))
    values = probe(x, training=training)
    values = values if isinstance(values, (list, tuple)) else [values]
    return [keras.ops.convert_to_numpy(y) for y in values]


# Plain-NumPy references, NHWC, float64.
def np_conv2d(x, kernel, stride, pad):
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = kernel.shape[:2]
    h, w = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], h, w, kernel.shape[-1]))
    for i in range(kh):
        for j in range(kw):
            rows = slice(i, i + stride * (h - 1) + 1, stride)
            cols = slice(j, j + stride * (w - 1) + 1, stride)
            out += x[:, rows, cols] @ kernel[i, j]
    return out


def np_batch_norm(x, layer):
    gamma, beta, mean, variance = (np.asarray(w, "float64") for w in layer.get_weights())
    return (x - mean) / np.sqrt(variance + EPSILON) * gamma + beta


def np_max_pool_3x3_stride2_pad1(x):
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    h, w = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
    offsets = [(i, j) for i in range(3) for j in range(3)]
    windows = [x[:, i : i + 2 * h - 1 : 2, j : j + 2 * w - 1 : 2] for i, j in offsets]
    return np.max(windows, axis=0)


def np_avg_pool_2x2_ceil(x):
    """PyTorch's AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False): a last window that
    overhangs an odd size averages the pixels it holds."""
    height, width = x.shape[1:3]
    out = np.zeros((x.shape[0], math.ceil(height / 2), math.ceil(width / 2), x.shape[3]))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            out[:, i, j] = x[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean(axis=(1, 2))
    return out


def relu(x):
    return np.maximum(x, 0)


def tiny_cifar_net(**options):
    """ResNet-8 (CIFAR stem, 3 blocks) at half width on 8 px: the tests below share its shapes,
    so that JAX compiles its operations once."""
    options = {"depth": 8, "stem": "cifar", **options}
    return kr.build_resnet(**options, width=0.5, input_shape=(8, 8, 3), num_classes=3)


@pytest.mark.parametrize("depth", sorted(TIMM_RESNET_D_PARAMS_M))
def test_resnet_d_registry_names_have_timms_parameter_counts(depth):
    with keras.StatelessScope(initialize_variables=False):
        model = kr.create_model(f"resnet{depth}d")
        count = kr.count_params(model)
        plain_count = kr.count_params(kr.build_resnet(depth))
    assert model.name == f"resnet{depth}d" and model.output_shape == (None, 1000)
    assert round(count / 1e6, 2) == TIMM_RESNET_D_PARAMS_M[depth]
    # The average-pool shortcuts have the strided projections' weights; the stem adds 19,232.
    assert count - plain_count == 19_232
    if depth == 50:
        assert count == RESNET50D_PARAMS


def test_deep_stem_and_average_pool_shortcut_structure():
    with keras.StatelessScope(initialize_variables=False):
        model = kr.create_model("resnet50d", input_shape=(64, 64, 3))
    stem = [model.get_layer(f"stem_conv{i}") for i in (1, 2, 3)]
    assert [c.kernel.shape[:2] for c in stem] == [(3, 3)] * 3
    assert [c.filters for c in stem] == [32, 32, 64]  # timm's stem_width=32
    assert [c.strides for c in stem] == [(2, 2), (1, 1), (1, 1)]
    # The strided conv pads symmetrically by 1, as PyTorch's padding=1.
    assert model.get_layer("stem_conv1_pad").padding == ((1, 1), (1, 1))
    assert "stem_conv" not in [layer.name for layer in model.layers]
    pools = [layer for layer in model.layers if layer.name.endswith("_shortcut_avg_pool")]
    # Stage 1's projection changes only the width (64 -> 256): no pool, as in timm.
    assert [p.name for p in pools] == [f"stage{s}_block1_shortcut_avg_pool" for s in (2, 3, 4)]
    assert all(p.pool_size == (2, 2) and p.strides == (2, 2) for p in pools)
    shortcut_convs = [layer for layer in model.layers if layer.name.endswith("_shortcut_conv")]
    assert len(shortcut_convs) == 4 and all(c.strides == (1, 1) for c in shortcut_convs)


def test_deep_stem_and_average_pool_shortcut_match_numpy(all_options_model):
    model = all_options_model
    x = random_images(2, 36, 36)
    stem_in, stem_out, block_in, shortcut = outputs(
        model,
        [
            model.get_layer("stem_conv1_pad").input,
            model.get_layer("stem_pool").output,
            model.get_layer("stage1_block2_out").output,
            model.get_layer("stage2_block1_shortcut_bn").output,
        ],
        x,
    )
    layer = model.get_layer
    y = np.asarray(stem_in, "float64")
    for i, stride in ((1, 2), (2, 1), (3, 1)):
        y = np_conv2d(y, np.asarray(layer(f"stem_conv{i}").kernel), stride, 1)
        y = relu(np_batch_norm(y, layer(f"stem_bn{i}" if i < 3 else "stem_bn")))
    expected_stem = np_max_pool_3x3_stride2_pad1(y)
    np.testing.assert_allclose(stem_out, expected_stem, rtol=1e-4, atol=1e-4)

    assert block_in.shape[1:3] == (9, 9)  # odd: the pool's last window overhangs
    pooled = np_avg_pool_2x2_ceil(np.asarray(block_in, "float64"))
    projected = np_conv2d(pooled, np.asarray(layer("stage2_block1_shortcut_conv").kernel), 1, 0)
    expected = np_batch_norm(projected, layer("stage2_block1_shortcut_bn"))
    assert shortcut.shape == expected.shape == (2, 5, 5, 32)
    np.testing.assert_allclose(shortcut, expected, rtol=1e-4, atol=1e-4)


def residual_branches(model):
    """{block: (shortcut tensor, residual tensor, block output tensor)} for every block."""
    found = {}
    for layer in model.layers:
        if layer.name.endswith("_add"):
            block = layer.name[: -len("_add")]
            out = layer.output
            if f"{block}_out" in [m.name for m in model.layers]:
                out = model.get_layer(f"{block}_out").output
            found[block] = (*layer.input, out)
    return found


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"depth": 11, "block": "bottleneck", "shortcut": "D", "se_ratio": 0.25},
        {"version": "v2"},
        {"depth": 11, "block": "bottleneck", "version": "v2"},
        {"norm": "group", "weight_standardization": True},
    ],
    ids=["basic", "bottleneck_D_se", "basic_v2", "bottleneck_v2", "group_norm_ws"],
)
def test_zero_init_residual_makes_every_block_its_shortcut(options):
    model = tiny_cifar_net(**options, zero_init_residual=True)
    blocks = residual_branches(model)
    assert len(blocks) == 3
    tensors = [t for triple in blocks.values() for t in triple]
    x = random_images(4, 8, 8)
    for training in (False, True):
        values = outputs(model, tensors, x, training=training)
        for k, block in enumerate(blocks):
            shortcut, residual, out = values[3 * k : 3 * k + 3]
            assert not np.any(residual), block  # the branch outputs exactly 0
            expected = shortcut if options.get("version") == "v2" else relu(shortcut)
            np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_without_zero_init_residual_the_branches_are_not_zero():
    model = tiny_cifar_net()
    residuals = [triple[1] for triple in residual_branches(model).values()]
    assert all(np.any(r) for r in outputs(model, residuals, random_images(4, 8, 8)))


def test_zero_init_residual_zeroes_only_the_branch_ends():
    with keras.StatelessScope(initialize_variables=False):
        model = kr.create_model("resnet50d", zero_init_residual=True, input_shape=(64, 64, 3))
    initializers = {
        layer.name: type(layer.gamma_initializer).__name__
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    }
    zeroed = sorted(name for name, kind in initializers.items() if kind == "Zeros")
    assert zeroed == sorted(
        f"stage{s}_block{b}_bn3" for s, n in enumerate((3, 4, 6, 3), 1) for b in range(1, n + 1)
    )
    assert {kind for name, kind in initializers.items() if name not in zeroed} == {"Ones"}


def test_drop_path_rates_follow_timms_linear_rule():
    with keras.StatelessScope(initialize_variables=False):
        model = kr.create_model("resnet50d", drop_path=0.05, input_shape=(64, 64, 3))
    blocks = [f"stage{s}_block{b}" for s, n in enumerate((3, 4, 6, 3), 1) for b in range(1, n + 1)]
    names = [layer.name for layer in model.layers]
    # timm: block i of n gets drop_path_rate * i / (n - 1); a rate of 0 gets no layer.
    assert f"{blocks[0]}_drop_path" not in names
    for i, block in enumerate(blocks[1:], start=1):
        layer = model.get_layer(f"{block}_drop_path")
        assert isinstance(layer, DropPath)
        assert layer.rate == pytest.approx(0.05 * i / 15)
    assert model.get_layer("stage4_block3_drop_path").rate == pytest.approx(0.05)


def test_drop_path_changes_nothing_at_inference():
    with_drop = tiny_cifar_net(drop_path=0.5)
    without = tiny_cifar_net()
    randomize_normalization(with_drop)
    without.set_weights(with_drop.get_weights())  # DropPath has no weights
    x = random_images(4, 8, 8)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(with_drop(x, training=False)),
        keras.ops.convert_to_numpy(without(x, training=False)),
    )


def test_drop_path_drops_whole_branches_per_example_with_the_rate():
    model = tiny_cifar_net(drop_path=0.5)
    layer = model.get_layer("stage3_block1_drop_path")
    assert layer.rate == 0.5  # the last of three blocks
    probe = keras.Model(model.input, [layer.input, layer.output])
    calls = [probe(random_images(64, 8, 8, seed=k), training=True) for k in range(6)]
    branch, dropped = (
        np.concatenate([keras.ops.convert_to_numpy(c[i]) for c in calls]) for i in (0, 1)
    )
    batch = len(branch)  # 384 examples
    assert np.all(np.any(branch.reshape(batch, -1), axis=1))
    kept = np.any(dropped.reshape(batch, -1), axis=1)
    # A kept branch is scaled by 1 / (1 - rate), a dropped one is zero: the expectation is kept.
    np.testing.assert_allclose(dropped[kept], branch[kept] / 0.5, rtol=1e-5, atol=1e-6)
    assert not np.any(dropped[~kept])
    # Binomial(384, 0.5): 4 standard deviations are 0.102.
    assert abs((1 - kept.mean()) - 0.5) < 0.1, kept.mean()


@pytest.mark.parametrize("shortcut", ["C", "D"])
def test_downsample_last_keeps_the_projection_shortcuts(shortcut):
    """keras.applications' layout subsamples the identity of a block that changes only the
    size; option C projects every shortcut and D average-pools then projects, there too."""
    with keras.StatelessScope(initialize_variables=False):
        model = kr.build_resnet(14, stem="cifar", shortcut=shortcut, downsample="last")
    names = [layer.name for layer in model.layers]
    # The stride-2 blocks: the last of stages 1 and 2, each keeping its width.
    for block in ("stage1_block2", "stage2_block2"):
        assert f"{block}_shortcut_pool" not in names
        assert f"{block}_shortcut_conv" in names
        assert (f"{block}_shortcut_avg_pool" in names) == (shortcut == "D")
    strides = model.get_layer("stage1_block2_shortcut_conv").strides
    assert strides == ((2, 2) if shortcut == "C" else (1, 1))


@pytest.mark.parametrize(
    "stem, depth, width", [("imagenet", 18, 64), ("cifar", 20, 16), ("deep", 18, 64)]
)
def test_stem_bias_adds_a_bias_to_every_stem(stem, depth, width):
    with keras.StatelessScope(initialize_variables=False):
        plain = kr.build_resnet(depth, stem=stem, input_shape=(32, 32, 3))
        biased = kr.build_resnet(depth, stem=stem, input_shape=(32, 32, 3), stem_bias=True)
    last = "stem_conv3" if stem == "deep" else "stem_conv"
    assert biased.get_layer(last).use_bias and not plain.get_layer(last).use_bias
    assert biased.count_params() - plain.count_params() == width


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"stem": "deeper"}, ["stem='deeper'", "'imagenet'", "'cifar'", "'deep'"]),
        ({"shortcut": "E"}, ["shortcut='E'", "'B'", "'D'"]),
        ({"zero_init_residual": "yes"}, ["zero_init_residual='yes'", "True or False"]),
        ({"drop_path": 1.0}, ["drop_path=1.0", "[0, 1)"]),
        ({"drop_path": -0.1}, ["drop_path=-0.1", "[0, 1)"]),
        ({"drop_path": True}, ["drop_path=True", "[0, 1)"]),
        ({"plain": True, "zero_init_residual": True}, ["zero_init_residual=True", "plain=True"]),
        ({"plain": True, "drop_path": 0.1}, ["drop_path=0.1", "plain=True"]),
        (
            {"version": "v2", "weight_standardization": True, "zero_init_residual": True},
            ["zero_init_residual=True", "version='v2'", "weight_standardization=True"],
        ),
    ],
)
def test_bad_options_raise_one_clear_value_error(kwargs, words):
    with pytest.raises(ValueError) as info:
        kr.build_resnet(50, **kwargs)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_all_options_survive_keras_file_and_replace_head(all_options_model, tmp_path):
    model = all_options_model
    x = random_images(2, 36, 36, seed=1)
    restored = assert_save_load_identical(model, tmp_path, x)
    rates = {layer.name: layer.rate for layer in model.layers if isinstance(layer, DropPath)}
    assert {layer.name: layer.rate for layer in restored.layers if isinstance(layer, DropPath)} == (
        rates
    )
    assert len(rates) == 7
    head = kr.replace_head(restored, 3)
    assert head.output_shape == (None, 3)
    features = "avg_pool"
    np.testing.assert_allclose(
        *outputs(head, [head.get_layer(features).output], x),
        *outputs(model, [model.get_layer(features).output], x),
        rtol=1e-5,
        atol=1e-6,
    )
    assert {layer.name: layer.rate for layer in head.layers if isinstance(layer, DropPath)} == rates


def test_all_options_export_to_tflite_and_pass_its_check(all_options_model, tmp_path):
    result = kr.export(all_options_model, tmp_path / "resnet_d.tflite")
    assert result["checked"] and result["top1_agreement"] == 1.0
    assert result["max_abs_difference"] < 1e-4


def test_keras_hub_export_refuses_resnet_d():
    # keras-hub's ResNetBackbone (v1.5) has the 7x7 stem and strided projections: weights of
    # the same shapes would load into it and compute something else.
    with keras.StatelessScope(initialize_variables=False):
        model = kr.create_model("resnet18d", input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="resnet18d.*7x7 stem, strided projections"):
        kr.weights.to_keras_hub(model)
