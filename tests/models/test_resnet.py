"""ResNet family: the papers' parameter and multiply-add counts, structure, training, saving."""

import inspect

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.layers import StdConv2D, ZeroPadShortcut
from keras_resvit.models.registry import get_spec
from tests.conftest import (
    assert_save_load_identical,
    outputs_on_other_backend,
    random_images,
    train_steps_lower_loss,
)
from tests.test_registry_sweep import COUNT_ONLY as SWEEP_COUNT_ONLY

# Multiply-adds of the paper's Table 1 (224x224) and resnet20 at 32x32.
PAPER_MACS = [
    ("resnet18", {}, 1.8e9),
    ("resnet34", {}, 3.6e9),
    ("resnet50", {"version": "v1"}, 3.8e9),
    ("resnet50", {}, 4.1e9),
    ("resnet101", {"version": "v1"}, 7.6e9),
    ("resnet152", {"version": "v1"}, 11.3e9),
    ("resnet101", {}, 7.6e9),
    ("resnet152", {}, 11.3e9),
    ("resnet20", {}, 41e6),
]
# Too large to build twice per backend in the quick suite.
HEAVY = {
    "resnet1202",
    "bit_r50x2",
    "bit_r50x3",
    "bit_r101x1",
    "bit_r101x3",
    "bit_r152x1",
    "bit_r152x2",
    "bit_r152x4",
    "bit_r200x3",
}
# Blocks per stage: He et al. (2015), Table 1, and ResNet-200 of He et al. (2016), "Identity
# Mappings in Deep Residual Networks".
BIT_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}
# timm's published sizes of the BiT models it has, in millions with a 1000-way head (model
# cards of resnetv2_{depth}x{width}_bit.goog_in21k_ft_in1k).
TIMM_BIT_PARAMS_M = {
    (50, 1): 25.5,
    (50, 3): 217.3,
    (101, 1): 44.5,
    (101, 3): 387.9,
    (152, 2): 236.3,
    (152, 4): 936.5,
}


def resnet_names():
    return [n for n in kr.list_models() if get_spec(n).family == "resnet"]


def cifar(name):
    return get_spec(name).kwargs.get("stem") == "cifar"


def layer_types(model):
    return {type(layer) for layer in model.layers}


@pytest.mark.slow
@pytest.mark.one_backend(
    "jax",
    reason="structure (the same layers as resnet20, 1202 deep) and a file round trip, "
    "checked for smaller nets on both backends; half the time of the TensorFlow pass",
)
def test_resnet1202_parameter_count_forward_and_reload(tmp_path):
    model = kr.create_model("resnet1202")
    assert kr.count_params(model) == 19_421_274
    x = random_images(1, 32, 32)
    out = keras.ops.convert_to_numpy(model(x, training=False))
    assert out.shape == (1, 10)
    model.save(tmp_path / "r1202.keras")
    restored = kr.load_model(tmp_path / "r1202.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(x)), out, rtol=1e-5)


@pytest.mark.parametrize("name, overrides, paper", PAPER_MACS)
def test_multiply_adds_within_five_percent_of_paper(name, overrides, paper):
    macs = kr.count_macs(kr.create_model(name, **overrides))
    assert abs(macs - paper) / paper < 0.05, macs


def test_v1_strides_first_1x1_and_v15_strides_3x3():
    v1 = kr.build_resnet(50, version="v1", input_shape=(64, 64, 3))
    v15 = kr.build_resnet(50, version="v1.5", input_shape=(64, 64, 3))
    assert v1.get_layer("stage2_block1_conv1").strides == (2, 2)
    assert v1.get_layer("stage2_block1_conv2").strides == (1, 1)
    assert v15.get_layer("stage2_block1_conv1").strides == (1, 1)
    assert v15.get_layer("stage2_block1_conv2").strides == (2, 2)
    # v1 does less work: the 3x3 runs on the subsampled map.
    assert kr.count_macs(v1) < kr.count_macs(v15)


def shortcut_convs(model):
    return [layer.name for layer in model.layers if layer.name.endswith("shortcut_conv")]


def test_shortcut_options():
    a = kr.build_resnet(20, stem="cifar", shortcut="A")
    b = kr.build_resnet(20, stem="cifar", shortcut="B")
    c = kr.build_resnet(20, stem="cifar", shortcut="C")
    assert shortcut_convs(a) == []
    assert sum(isinstance(layer, ZeroPadShortcut) for layer in a.layers) == 2
    # B projects only where the shape changes: the first block of stages 2 and 3.
    assert shortcut_convs(b) == ["stage2_block1_shortcut_conv", "stage3_block1_shortcut_conv"]
    assert len(shortcut_convs(c)) == 9
    assert kr.count_params(a) < kr.count_params(b) < kr.count_params(c)


def test_imagenet_default_is_option_b():
    model = kr.create_model("resnet18")
    assert shortcut_convs(model) == [f"stage{s}_block1_shortcut_conv" for s in (2, 3, 4)]


@pytest.mark.parametrize("name", ["plain20", "plain18"])
def test_plain_twins_have_no_shortcuts(name):
    plain = kr.create_model(name)
    twin = kr.create_model(name.replace("plain", "resnet"))
    assert keras.layers.Add not in layer_types(plain)
    assert keras.layers.Add in layer_types(twin)
    # Same convolutions; only the projection shortcuts (if any) differ.
    plain_convs = [layer.name for layer in plain.layers if isinstance(layer, keras.layers.Conv2D)]
    twin_convs = [layer.name for layer in twin.layers if isinstance(layer, keras.layers.Conv2D)]
    assert plain_convs == [n for n in twin_convs if not n.endswith("shortcut_conv")]


def test_preactivation_v2_structure():
    model = kr.create_model("resnet50v2", input_shape=(64, 64, 3))
    # Pre-activation: the stem has no norm; the block's input is normalized first; a final
    # norm-ReLU precedes pooling.
    names = [layer.name for layer in model.layers]
    assert "stem_bn" not in names
    assert "stage1_block1_bn0" in names and "post_bn" in names
    assert "stage1_block1_bn3" not in names


def test_bit_uses_groupnorm_and_weight_standardization():
    bit = kr.create_model("bit_r50x1", input_shape=(64, 64, 3))
    types = layer_types(bit)
    assert not any(issubclass(t, keras.layers.BatchNormalization) for t in types)
    assert keras.layers.GroupNormalization in types
    convs = [layer for layer in bit.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(isinstance(layer, StdConv2D) for layer in convs)
    # GroupNorm has as many parameters as BatchNorm: same count as the v2 net.
    v2 = kr.create_model("resnet50v2", input_shape=(64, 64, 3))
    assert kr.count_params(bit) == kr.count_params(v2) == 25_549_352


def test_width_multiplier_scales_filters():
    wide = kr.build_resnet(50, version="v2", width=2, input_shape=(64, 64, 3), include_top=False)
    assert wide.output_shape == (None, 2, 2, 4096)
    assert wide.get_layer("stem_conv").filters == 128


def test_se_adds_the_papers_extra_parameters():
    # Hu et al. (2018), Section 4: SE adds (2/r) * sum_s N_s * C_s^2 weights (N_s blocks of
    # C_s output channels in stage s), a count without biases; ours have two bias vectors per
    # block, of C_s / r and C_s entries.
    se = kr.create_model("se_resnet50")
    base = kr.create_model("resnet50")
    blocks, channels = (3, 4, 6, 3), (256, 512, 1024, 2048)
    weights = sum(2 * n * c * c // 16 for n, c in zip(blocks, channels, strict=True))
    biases = sum(n * (c + c // 16) for n, c in zip(blocks, channels, strict=True))
    se_layers = [layer for layer in se.layers if "_se_" in layer.name and layer.weights]
    assert sum(np.prod(layer.kernel.shape) for layer in se_layers) == weights == 2_514_944
    assert sum(np.prod(layer.bias.shape) for layer in se_layers) == biases
    assert kr.count_params(se) - kr.count_params(base) == weights + biases
    assert kr.count_params(se) == 28_088_024  # the SE paper's 28.09M


def bit_parameters(depth, width, classes=1000):
    """A BiT ResNet's parameters counted by hand: the 7x7 stem (no bias), per pre-activation
    bottleneck two GroupNorm vectors before each conv (1x1, 3x3, 1x1 expanding 4x), a 1x1
    projection in each stage's first block, the final GroupNorm and the classifier."""
    total, channels = 7 * 7 * 3 * 64 * width, 64 * width
    for stage, blocks in enumerate(BIT_BLOCKS[depth]):
        mid = 64 * 2**stage * width
        for block in range(blocks):
            total += 2 * channels + channels * mid + 2 * mid + 9 * mid * mid + 2 * mid
            total += 4 * mid * mid + (channels * 4 * mid if block == 0 else 0)
            channels = 4 * mid
    return total + 2 * channels + channels * classes + classes


@pytest.mark.parametrize("depth_width", sorted(TIMM_BIT_PARAMS_M))
def test_bit_parameter_formula_matches_timm(depth_width):
    assert round(bit_parameters(*depth_width) / 1e6, 1) == TIMM_BIT_PARAMS_M[depth_width]


# Large registry models: their structure (parameters, shapes) is the same on every backend and
# their layers compute on both backends in smaller models, so one pass checks them.
STRUCTURE = "structure of a large model, the same on every backend"


@pytest.mark.parametrize("name", ["bit_r50x1", "bit_r152x1", "bit_r50x2", "bit_r200x3"])
def test_vit_scaling_study_resnets_have_bit_parameter_counts(name):
    # Dosovitskiy et al. (2021), Section 4.4: R50x1, R50x2, R101x1, R152x1, R152x2 and R200x3,
    # BiT-style. timm has no R50x2, R152x1 or R200x3, so they are checked against the formula
    # that gives timm's sizes above. Weights with shapes and no values: R200x3's 568M weights
    # allocate nothing.
    depth, width = (int(part) for part in name.removeprefix("bit_r").split("x"))
    with keras.StatelessScope(initialize_variables=False):
        model = kr.create_model(name)
        assert kr.count_params(model) == bit_parameters(depth, width)
    assert model.get_layer("stem_conv").filters == 64 * width


def test_cifar_bottleneck_depth_rule():
    model = kr.build_resnet(29, stem="cifar", block="bottleneck", version="v2")
    assert model.output_shape == (None, 10)
    assert model.get_layer("stage3_block3_conv3").filters == 256
    # A depth only 9n+2 fits, and the pre-activation paper's ResNet-164 (1.7M parameters, its
    # Table 2; 6n+2 fits 164 too, with 2.6M), take bottlenecks without block=.
    assert kr.count_params(kr.build_resnet(29, stem="cifar", version="v2")) == kr.count_params(
        model
    )
    resnet164 = kr.build_resnet(164, stem="cifar", version="v2")
    assert round(kr.count_params(resnet164) / 1e6, 1) == 1.7
    assert resnet164.get_layer("stage3_block18_conv3").filters == 256
    with pytest.raises(ValueError, match="6n\\+2 .*; or pass block='bottleneck'"):
        kr.build_resnet(29, stem="cifar", block="basic")


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        ({"include_top": False}, (None, 7, 7, 2048)),
        ({"include_top": False, "pooling": "avg"}, (None, 2048)),
        ({"include_top": False, "pooling": "max"}, (None, 2048)),
        ({"num_classes": 7, "classifier_activation": None}, (None, 7)),
        ({"input_shape": (None, None, 3)}, (None, 1000)),
    ],
)
def test_keras_applications_arguments(kwargs, shape):
    assert kr.build_resnet(50, **kwargs).output_shape == shape


def test_max_pooling_head():
    model = kr.build_resnet(18, pooling="max", input_shape=(64, 64, 3))
    assert isinstance(model.get_layer("max_pool"), keras.layers.GlobalMaxPooling2D)


# tests/test_registry_sweep.py runs the other ResNets on a small input (with gradients, a new
# head and a round trip); these it checks by their parameter count only.
@pytest.mark.parametrize(
    "name", [n for n in resnet_names() if n not in HEAVY and n in SWEEP_COUNT_ONLY]
)
def test_registry_names_left_to_the_sweeps_count_run_forward(name):
    size = 32 if cifar(name) else 64
    model = kr.create_model(name, input_shape=(size, size, 3))
    out = keras.ops.convert_to_numpy(model(random_images(2, size, size), training=False))
    assert out.shape == (2, 10 if cifar(name) else 1000)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)
    assert np.isfinite(out).all()


# bit_r101x3 and bit_r152x4 (hundreds of millions of parameters) take the code paths of bit_r50x3
# and bit_r152x2 with other registry numbers; building them would cost a minute of the suite.
@pytest.mark.slow
@pytest.mark.one_backend("tensorflow", reason=STRUCTURE)
@pytest.mark.parametrize("name", ["bit_r101x1", "bit_r50x3", "bit_r152x2"])
def test_heavy_registry_names_run_forward(name):
    model = kr.create_model(name, input_shape=(32, 32, 3), num_classes=10)
    out = keras.ops.convert_to_numpy(model(random_images(1, 32, 32), training=False))
    assert out.shape == (1, 10) and np.isfinite(out).all()


@pytest.mark.parametrize("name", ["resnet20", "plain20"])
def test_training_steps_lower_the_loss(name):
    model = kr.create_model(name)
    x = random_images(16, 32, 32)
    y = np.arange(16) % 10
    first, last = train_steps_lower_loss(model, x, y, steps=10)
    assert last < 0.7 * first, (first, last)


@pytest.mark.parametrize(
    "build",
    [
        lambda: kr.create_model("resnet20"),
        lambda: kr.build_resnet(
            18, input_shape=(64, 64, 3), num_classes=5, se_ratio=1 / 16, preprocessing="caffe"
        ),
        lambda: kr.create_model("bit_r50x1", input_shape=(64, 64, 3), num_classes=3),
    ],
    ids=["resnet20_optionA", "se_resnet18_caffe", "bit_r50x1"],
)
def test_keras_file_round_trip_is_identical(build, tmp_path):
    model = build()
    size = model.input_shape[1]
    # Move BatchNorm statistics away from their initial values so they are checked too.
    model(random_images(4, size, size), training=True)
    assert_save_load_identical(model, tmp_path, random_images(2, size, size, seed=1))


def test_keras_file_reloads_on_the_other_backend(tmp_path):
    model = kr.create_model("resnet20")
    x = random_images(2, 32, 32)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    actual = outputs_on_other_backend(model, x, tmp_path)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"depth": 21, "stem": "cifar"}, ["depth=21", "6n+2", "20"]),
        ({"depth": 20}, ["depth=20", 'stem="cifar"', "18"]),
        ({"depth": 50, "shortcut": "E"}, ["shortcut='E'", "'A'", "'B'", "'C'", "'D'"]),
        ({"depth": 50, "pooling": "mean"}, ["pooling='mean'", "'avg'", "'max'"]),
        ({"depth": 50, "input_shape": (16, 16, 3)}, ["input_shape=(16, 16, 3)", ">= 32"]),
        ({"depth": 20, "stem": "cifar", "input_shape": (2, 2, 3)}, ["input_shape", ">= 4"]),
        ({"depth": 50, "input_shape": (224, 224)}, ["input_shape=(224, 224)", "channels"]),
        ({"depth": 50, "input_shape": (64, 64, 1)}, ["1 channels", "preprocessing='imagenet'"]),
        ({"depth": 50, "version": "v3"}, ["version='v3'", "'v1.5'", "'v2'"]),
        ({"depth": 50, "stem": "tiny"}, ["stem='tiny'", "'imagenet'", "'cifar'"]),
        ({"depth": 50, "block": "basic"}, ["block='basic'", "'bottleneck'"]),
        ({"depth": 50, "norm": "layer"}, ["norm='layer'", "'group'"]),
        ({"depth": 50, "width": 0}, ["width=0", "positive"]),
        ({"depth": 50, "se_ratio": 16}, ["se_ratio=16", "1/16"]),
        ({"depth": 50, "num_classes": 0}, ["num_classes=0", "positive"]),
        ({"depth": 50, "classifier_activation": "nope"}, ["classifier_activation='nope'"]),
        ({"depth": 50, "preprocessing": "vgg"}, ["preprocessing='vgg'", "'caffe'"]),
        ({"depth": 20, "stem": "cifar", "plain": True, "shortcut": "A"}, ["plain=True"]),
        ({"depth": "50"}, ["depth='50'", "int"]),
    ],
)
def test_bad_arguments_raise_one_clear_value_error(kwargs, words):
    with pytest.raises(ValueError) as info:
        kr.build_resnet(**kwargs)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_unknown_name_suggests_close_registry_names():
    with pytest.raises(ValueError, match="resnet50") as info:
        kr.create_model("resnet05")
    assert "name='resnet05'" in str(info.value)
    with pytest.raises(ValueError, match="'se_resnet50'"):
        kr.create_model("se-resnet50")


def test_list_models_filters_by_pattern():
    assert kr.list_models("plain*") == [
        "plain110",
        "plain18",
        "plain20",
        "plain32",
        "plain34",
        "plain44",
        "plain56",
    ]
    assert {"resnet20", "resnet1202", "bit_r152x4", "se_resnet101"} <= set(kr.list_models())


def test_override_replaces_a_registry_argument_and_the_name_says_what_was_built():
    # resnet20's entry fixes depth=20; an override replaces it rather than clashing, and the
    # model (its .keras file, a run's config.json) is not called ResNet-20.
    model = kr.create_model("resnet20", depth=8)
    assert model.name == "resnet8"
    assert kr.count_params(model) == kr.count_params(kr.build_resnet(depth=8, stem="cifar"))
    assert kr.count_params(model) < 269_722  # resnet20's
    # The registry name of what was built, where there is one.
    assert kr.create_model("resnet20", depth=32).name == "resnet32"
    assert kr.create_model("resnet20", plain=True).name == "plain20"
    assert kr.create_model("plain20", plain=False).name == "resnet20"
    assert kr.create_model("resnet50v2", version="v1", input_shape=(32, 32, 3)).name == "resnet50v1"
    assert kr.create_model("vit_b16", variant="Ti/16", image_size=32).name == "vit_ti16"
    # Overrides of what the name leaves open keep it.
    assert kr.create_model("resnet20", num_classes=3, drop_path=0.1).name == "resnet20"
    assert kr.create_model("resnet20", se_ratio=0.25).name == "se_resnet20"
    assert kr.create_model("vit_ti16", image_size=32, dropout=0.1).name == "vit_ti16"
    # A ViT of another patch size or widths is named as build_vit names it.
    assert kr.create_model("vit_ti16", image_size=32, patch_size=8).name == "vit_ti8"
    assert kr.create_model("vit_ti16", image_size=32, num_layers=2).name == "vit_d192_l2_16"
    # Every argument the registry names tell apart by, also where it takes a builder's default.
    small = {"input_shape": (32, 32, 3)}
    assert kr.create_model("resnet50v1", version="v1.5", **small).name == "resnet50"
    assert kr.create_model("se_resnet50", se_ratio=None, **small).name == "resnet50"
    assert kr.create_model("resnet50d", stem="imagenet", shortcut="B", **small).name == "resnet50"
    assert kr.create_model("resnet18", stem="deep", shortcut="D", **small).name == "resnet18d"
    assert kr.create_model("resnet50", plain=True, **small).name == "plain50"
    assert kr.create_model("resnet20", width=2).name == "resnet20_x2"
    assert kr.create_model("bit_r50x1", width=3, **small).name == "bit_r50x3"
    hybrid = {"image_size": 32, "num_layers": 1}
    assert kr.create_model("r50_vit_b16", variant="Ti/16", **hybrid).name == "r50_vit_d192_l1_16"
    assert kr.create_model("r50_vit_b16", patch_size=32, **hybrid).name == "r50_vit_d768_l1_32"


def test_each_registry_name_is_the_name_its_builder_gives():
    """`create_model` leaves the naming to the builder once an override changes what a name
    stands for, so the builders must name every registered architecture by its registry
    name (checked without building: `resnet_name`, `vit_size_name`)."""
    from keras_resvit.models.registry import REGISTRY
    from keras_resvit.models.resnet import resnet_name
    from keras_resvit.models.resnet_blocks import BlockConfig
    from keras_resvit.models.vit_config import vit_config, vit_size_name

    defaults = {k: p.default for k, p in inspect.signature(kr.build_resnet).parameters.items()}
    checked = 0
    for name, spec in REGISTRY.items():
        if spec.family == "resnet":
            a = {**defaults, **spec.kwargs}
            cfg = BlockConfig(
                **{k: a[k] for k in ("version", "shortcut", "plain", "se_ratio", "norm")},
                weight_standardization=a["weight_standardization"],
            )
            built = resnet_name(a["depth"], a["stem"], cfg, a["width"])
        elif spec.family == "vit":
            cfg = vit_config(spec.kwargs["variant"])
            built = f"vit_{vit_size_name(spec.kwargs['variant'], cfg)}{cfg.patch_size}"
        else:
            continue
        assert built == name
        checked += 1
    assert checked >= 40


def test_v1_registry_names_are_the_papers_bottleneck():
    """`resnet50v1`: the stride on the first 1x1 (the paper); `resnet50`: on the 3x3 (v1.5)."""
    paper = kr.create_model("resnet50v1", input_shape=(64, 64, 3))
    modern = kr.create_model("resnet50", input_shape=(64, 64, 3))
    assert kr.count_params(paper) == kr.count_params(modern) == 25_557_032
    assert paper.get_layer("stage2_block1_conv1").strides == (2, 2)
    assert paper.get_layer("stage2_block1_conv2").strides == (1, 1)
    assert modern.get_layer("stage2_block1_conv1").strides == (1, 1)
    assert modern.get_layer("stage2_block1_conv2").strides == (2, 2)
    assert {"resnet101v1", "resnet152v1"} <= set(kr.list_models("resnet*v1"))
