"""Intermediate features: one owner of the layer names, for every family."""

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.models.features import (
    attention_layers,
    last_feature_map,
    representation_model,
    stage_outputs,
)
from tests.conftest import random_images, tiny_vit


def numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize(
    "name, overrides, levels",
    [
        ("resnet20", {}, {"P0": (32, 16), "P1": (16, 32), "P2": (8, 64)}),
        ("resnet18", {"input_shape": (64, 64, 3)}, {f"P{k}": (64 >> k, 0) for k in (2, 3, 4, 5)}),
        ("resnet50v2", {"input_shape": (64, 64, 3)}, {f"P{k}": (64 >> k, 0) for k in range(2, 6)}),
        ("bit_r50x1", {"input_shape": (64, 64, 3)}, {f"P{k}": (64 >> k, 0) for k in range(2, 6)}),
    ],
)
def test_feature_pyramid_names_stages_by_stride(name, overrides, levels):
    model = kr.create_model(name, num_classes=5, **overrides)
    size = model.input_shape[1]
    pyramid = kr.feature_pyramid(model)(random_images(2, size, size))
    assert list(pyramid) == list(levels)
    for key, (height, channels) in levels.items():
        assert pyramid[key].shape[1:3] == (height, height)
        assert channels == 0 or pyramid[key].shape[-1] == channels


@pytest.mark.parametrize(
    "overrides, sizes",
    [
        ({"input_shape": (40, 40, 3)}, (10, 5, 3, 2)),  # 40/3 and 40/2 both round to 2**4
        ({"input_shape": (33, 33, 3)}, (9, 5, 3, 2)),  # 33/5 and 33/3 both round to 2**3
        ({"input_shape": (None, None, 3)}, (10, 5, 3, 2)),  # any size, fed 40x40
        ({"input_shape": (None, 40, 3)}, (10, 5, 3, 2)),
        ({"input_shape": (40, 40, 3), "stem": "deep"}, (10, 5, 3, 2)),
    ],
)
def test_every_input_size_gives_every_stage_its_level(overrides, sizes):
    # He et al. (2016), Table 1: the stem downsamples 4x, stages 2-4 2x each: strides 4 ... 32.
    model = kr.build_resnet(18, num_classes=3, **overrides)
    pyramid = kr.feature_pyramid(model)
    stages = stage_outputs(model)
    assert list(pyramid.output) == ["P2", "P3", "P4", "P5"]
    for key, stage in zip(pyramid.output, stages, strict=True):
        assert pyramid.get_layer(stages[stage]).output is pyramid.output[key]
    size = overrides["input_shape"][0] or 40
    maps = pyramid(random_images(1, size, size))
    assert [maps[key].shape[1] for key in maps] == list(sizes)
    assert [maps[key].shape[2] for key in maps] == list(sizes)


@pytest.mark.parametrize("size, sizes", [(32, (32, 16, 8)), (33, (33, 17, 9)), (None, (33, 17, 9))])
def test_a_cifar_stem_keeps_the_input_resolution(size, sizes):
    # He et al. (2016), Section 4.2: the CIFAR net's 3x3 stem keeps the resolution, and its
    # three stages have strides 1, 2 and 4.
    model = kr.build_resnet(20, stem="cifar", input_shape=(size, size, 3), num_classes=3)
    pyramid = kr.feature_pyramid(model)
    assert list(pyramid.output) == ["P0", "P1", "P2"]
    maps = pyramid(random_images(1, 33 if size is None else size, 33 if size is None else size))
    assert tuple(maps[key].shape[1] for key in maps) == sizes


def test_stride_two_at_a_stages_end_takes_the_block_before_it():
    # keras.applications' ResNetV2 downsamples in a stage's last block, so stage 3 ends at
    # stride 32 as stage 4 does; each level is the last block at its stride (FPN's C_k).
    model = kr.build_resnet(
        50, version="v2", downsample="last", input_shape=(64, 64, 3), num_classes=3
    )
    pyramid = kr.feature_pyramid(model)
    expected = {
        "P2": "stage1_block2_add",
        "P3": "stage2_block3_add",
        "P4": "stage3_block5_add",
        "P5": "post_relu",
    }
    assert list(pyramid.output) == list(expected)
    for key, name in expected.items():
        assert pyramid.get_layer(name).output is pyramid.output[key]
    maps = pyramid(random_images(1, 64, 64))
    assert [maps[key].shape[1] for key in expected] == [16, 8, 4, 2]


@pytest.mark.parametrize("name", ["resnet20", "resnet50v2", "se_resnet50"])
def test_the_last_stage_is_what_the_classifier_pools(name):
    # Average-pooling the last feature map and applying the classifier reproduces the model.
    overrides = {} if name == "resnet20" else {"input_shape": (64, 64, 3)}
    model = kr.create_model(name, num_classes=5, **overrides)
    x = random_images(2, *model.input_shape[1:3])
    last = kr.intermediate_model(model, [list(kr.feature_layers(model))[-1]])
    key = list(kr.feature_layers(model))[-1]
    if name == "resnet50v2":  # its blocks end before the closing norm-ReLU
        assert (
            last_feature_map(model) == "post_relu" and stage_outputs(model)["stage4"] == "post_relu"
        )
        features = numpy(keras.Model(model.input, model.get_layer("post_relu").output)(x))
    else:
        features = numpy(last(x)[key])
    pooled = features.mean(axis=(1, 2))
    expected = numpy(model(x))
    np.testing.assert_allclose(numpy(model.get_layer("predictions")(pooled)), expected, atol=1e-5)


def test_vit_intermediates_are_every_blocks_tokens():
    vit = kr.build_vit("Ti/16", image_size=32, num_classes=5, num_layers=3)
    assert list(kr.feature_layers(vit)) == ["encoder_block1", "encoder_block2", "encoder_block3"]
    x = random_images(2, 32, 32)
    tokens = kr.intermediate_model(vit)(x)
    assert all(t.shape == (2, 5, 192) for t in tokens.values())  # class token + 4 patches
    assert not np.allclose(numpy(tokens["encoder_block1"]), numpy(tokens["encoder_block3"]))
    # The last block's class token, normalized and classified, is the model's output.
    head = vit.get_layer("predictions")
    head.kernel.assign(keras.random.normal(head.kernel.shape, seed=0))
    normalized = vit.get_layer("encoder_norm")(tokens["encoder_block3"])
    np.testing.assert_allclose(numpy(head(normalized[:, 0])), numpy(vit(x)), atol=1e-5)
    assert [norm.name for norm, _ in attention_layers(vit)] == [
        f"encoder_block{i}_norm1" for i in (1, 2, 3)
    ]


def test_the_hybrid_has_both_kinds_of_features():
    hybrid = kr.create_model("r50_vit_b16", image_size=64, num_classes=5)
    names = list(kr.feature_layers(hybrid))
    assert names[0] == "stage1_block1" and names[-1] == "encoder_block12"
    assert list(kr.feature_pyramid(hybrid).output) == ["P2", "P3", "P4"]


def one_block_vit():
    return tiny_vit(num_layers=1)


@pytest.mark.parametrize(
    "features",
    [["encoder_block1"], ("encoder_block1",), {"encoder_block1"}, iter(["encoder_block1"])],
    ids=["list", "tuple", "set", "iterator"],
)
def test_any_iterable_of_names_is_read_once(features):
    if not isinstance(features, list | tuple | set):
        features = (name for name in ["encoder_block1"])  # a generator can be read only once
    tokens = kr.intermediate_model(one_block_vit(), features)
    assert list(tokens.output) == ["encoder_block1"]


@pytest.mark.parametrize(
    "features, match",
    [
        (5, r"features=5 must be a non-empty list of feature names"),
        ([["encoder_block1"]], r"features=\[\['encoder_block1'\]\] must be a non-empty list"),
        ([], r"features=\[\] must be a non-empty list"),
        ((f for f in []), r"features=\[\] must be a non-empty list"),
        ("encoder_block1", r"features='encoder_block1' must .* e\.g\. \['encoder_block1'\]"),
        (b"encoder_block1", r"features=\[101, .*\] must be a non-empty list"),
        (["encoder_block1", None], r"features=\['encoder_block1', None\] must be"),
        (["encoder_block9"], r"features=\['encoder_block9'\] are not features"),
    ],
    ids=["int", "nested", "empty", "empty_generator", "str", "bytes", "none_inside", "unknown"],
)
def test_bad_features_are_named_with_the_valid_ones(features, match):
    with pytest.raises(ValueError, match=match) as info:
        kr.intermediate_model(one_block_vit(), features)
    assert "valid: ['encoder_block1']" in str(info.value)


@pytest.mark.parametrize("layer", [5, ["predictions"], np.array(["predictions"])])
def test_a_representation_layer_must_be_a_name(layer):
    with pytest.raises(ValueError, match=r"layer=.* is not a layer of model 'vit"):
        representation_model(one_block_vit(), layer)


@pytest.mark.parametrize(
    "function", [kr.feature_layers, kr.feature_pyramid, kr.intermediate_model, representation_model]
)
def test_a_model_must_be_a_keras_model(function):
    with pytest.raises(ValueError, match="model of type str is not valid; pass a keras.Model"):
        function("resnet20")


@pytest.mark.parametrize(
    "function", [kr.feature_layers, kr.feature_pyramid, kr.intermediate_model, representation_model]
)
def test_a_model_without_a_defined_input_is_refused(function):
    # An unbuilt Sequential has no graph of layer calls to read features from.
    with pytest.raises(ValueError, match=r"model='sequential.*' has no defined input \(an unbuilt"):
        function(keras.Sequential([keras.layers.Dense(3)]))


def test_bad_feature_requests():
    model = kr.create_model("resnet20")
    with pytest.raises(ValueError, match=r"features=\['stage9_block1'\] are not features"):
        kr.intermediate_model(model, ["stage9_block1"])
    with pytest.raises(ValueError, match="must be a non-empty list"):
        kr.intermediate_model(model, "stage1_block1")
    vit = kr.build_vit("Ti/16", image_size=32, num_classes=5, num_layers=1)
    with pytest.raises(ValueError, match="has no ResNet stages"):
        kr.feature_pyramid(vit)
    vgg = kr.build_vgg(11, input_shape=(32, 32, 3), num_classes=5, include_top=False)
    with pytest.raises(ValueError, match="has no ResNet or ViT blocks"):
        kr.feature_layers(vgg)
    with pytest.raises(ValueError, match="has no ResNet stages"):
        kr.feature_pyramid(vgg)
