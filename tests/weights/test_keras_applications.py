"""keras.applications ResNets (50/101/152, 50V2/152V2) converted to ours give the same outputs."""

import re

import keras
import pytest

import keras_resvit as kr
from keras_resvit.weights import from_keras_applications, load_weights
from keras_resvit.weights.keras_applications import LAYOUTS
from tests.conftest import random_images
from tests.weights.helpers import assert_close, randomize

pytestmark = pytest.mark.one_backend(
    "tensorflow",
    reason="a NumPy conversion; the converted model's computation is tested on both backends in "
    "tests/models",
)

SHAPE = (64, 64, 3)
BLOCK = re.compile(r"stage\d_block\d+_conv3")  # one per bottleneck block


def _preprocess(architecture, x):
    module = (
        keras.applications.resnet_v2 if architecture.endswith("V2") else keras.applications.resnet
    )
    return module.preprocess_input(x.copy())


def _source(architecture, **kwargs):
    kwargs = {"weights": None, "input_shape": SHAPE, **kwargs}
    return randomize(getattr(keras.applications, architecture)(**kwargs))


@pytest.mark.parametrize(
    "architecture, blocks",
    [
        ("ResNet50", 16),
        ("ResNet50V2", 16),
        # The deeper nets differ only in blocks per stage (ResNet101V2 adds nothing that
        # ResNet101 and ResNet152V2 leave out); at 64 px they take seconds each.
        pytest.param("ResNet101", 33, marks=pytest.mark.slow),
        pytest.param("ResNet152", 50, marks=pytest.mark.slow),
        pytest.param("ResNet152V2", 50, marks=pytest.mark.slow),
    ],
)
def test_converted_resnet_matches_keras_applications(architecture, blocks):
    source = _source(architecture, classes=10, classifier_activation=None)
    model = from_keras_applications(source)
    assert model.output_shape == (None, 10)
    bottlenecks = [n for n in (layer.name for layer in model.layers) if BLOCK.fullmatch(n)]
    assert len(bottlenecks) == blocks
    x = random_images(2, *SHAPE)
    assert_close(model(x), source(_preprocess(architecture, x)))


def test_weights_file_without_top(tmp_path):
    source = _source("ResNet50V2", include_top=False)
    path = tmp_path / "resnet50v2_notop.weights.h5"
    source.save_weights(path)
    model = load_weights(path, input_shape=SHAPE)
    x = random_images(2, *SHAPE)
    assert_close(model(x), source(_preprocess("ResNet50V2", x)))


def test_weights_of_another_architecture_name_layer_and_shapes():
    source = _source("ResNet50", classes=10)
    ours = kr.build_resnet(50, input_shape=SHAPE, version="v1", preprocessing="caffe")
    with pytest.raises(ValueError, match=r"'predictions'.*\(2048, 1000\).*\(2048, 10\)"):
        from_keras_applications(source, model=ours)
    v2 = kr.build_resnet(50, input_shape=SHAPE, version="v2", num_classes=10)
    with pytest.raises(ValueError, match="another architecture"):
        from_keras_applications(source, model=v2)


def test_not_a_keras_applications_resnet():
    with pytest.raises(ValueError, match="not a keras.applications ResNet"):
        from_keras_applications(kr.create_model("resnet20"))


@pytest.mark.parametrize(
    "architecture, build, words",
    [
        # The same shapes: v1.5 strides the 3x3 where v1 strides the first 1x1 (before: the
        # weights loaded, logits 1.6 apart on a scale of 2.8, top-1 changed).
        (
            "ResNet50",
            {"version": "v1.5", "preprocessing": "caffe"},
            "strides 'stage2_block1_conv2'",
        ),
        # A V2 net that downsamples in each stage's first block, not its last.
        (
            "ResNet50V2",
            {"version": "v2", "preprocessing": "inception", "stem_bias": True},
            "where the weights' net strides 'stage1_block3_conv2'",
        ),
    ],
)
def test_a_target_that_computes_otherwise_is_refused(architecture, build, words):
    source = _source(architecture, include_top=False)
    model = kr.build_resnet(50, input_shape=SHAPE, include_top=False, **build)
    refused = f"model='{model.name}' is not built as.*{re.escape(words)}"
    with pytest.raises(ValueError, match=refused):
        from_keras_applications(source, model=model)
    # Built as the message says, it loads and computes the source's outputs; another
    # preprocessing (the registry's resnet50v1 normalizes as torchvision: logits 13.6 apart
    # on 16) loads with a warning.
    version = "v2" if architecture.endswith("V2") else "v1"
    right = kr.build_resnet(
        50, input_shape=SHAPE, include_top=False, version=version, **LAYOUTS[version]
    )
    x = random_images(2, *SHAPE)
    converted = from_keras_applications(source, model=right)
    assert_close(converted(x), source(_preprocess(architecture, x)))
    other = {**LAYOUTS[version], "preprocessing": "imagenet"}
    imagenet = kr.build_resnet(50, input_shape=SHAPE, include_top=False, version=version, **other)
    with pytest.warns(UserWarning, match="does not normalize its inputs as.*until fine-tuned"):
        from_keras_applications(source, model=imagenet)
