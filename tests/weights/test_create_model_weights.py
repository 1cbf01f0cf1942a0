"""`create_model(name, weights=path)`: the converter is picked from the file; bad files say why."""

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.weights import load_weights, read_state_dict, weights_format
from tests.conftest import random_images
from tests.weights.helpers import assert_close, randomize
from tests.weights.test_vit_npz import (
    CLASSES,
    GRID,
    HIDDEN,
    PATCH,
    make_checkpoint,
    reference_forward,
)
from tests.weights.torch_layout import resnet_state_dict

pytestmark = pytest.mark.one_backend(
    "tensorflow",
    reason="weights are NumPy arrays set by Python; tests/weights/test_named_weights.py loads them "
    "on both backends",
)

SHAPE = (32, 32, 3)
SMALL_VIT = {"hidden_size": HIDDEN, "num_layers": 2, "num_heads": 4, "mlp_dim": 64}


def test_timm_resnet_state_dict_and_its_head(tmp_path):
    source = randomize(kr.build_resnet(18, input_shape=SHAPE, num_classes=7))
    path = tmp_path / "resnet18.a1_in1k.npz"
    np.savez(path, **resnet_state_dict(source))
    model = kr.create_model("resnet18", weights=path, input_shape=SHAPE)
    assert model.name == "resnet18" and model.output_shape == (None, 7)
    x = random_images(2, *SHAPE)
    assert_close(model(x), source(x), tolerance=1e-5)


def test_original_vit_checkpoint_matches_numpy_reference(tmp_path):
    arrays = make_checkpoint(np.random.default_rng(0), pre_logits=16)
    path = tmp_path / "ViT-custom.npz"
    np.savez(path, **arrays)
    size = GRID * PATCH
    model = kr.create_model(
        "vit_ti16", weights=path, image_size=size, patch_size=PATCH, **SMALL_VIT
    )
    assert model.output_shape == (None, CLASSES)
    x = random_images(2, size, size)
    assert_close(model(x), reference_forward(arrays, x))


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_own_files(tmp_path, suffix):
    source = randomize(kr.create_model("resnet20"))
    path = tmp_path / f"resnet20{suffix}"
    source.save(path) if suffix == ".keras" else source.save_weights(path)
    model = kr.create_model("resnet20", weights=path)
    x = random_images(2, *SHAPE)
    assert_close(model(x), source(x), tolerance=1e-6)
    with pytest.raises(ValueError, match=rf"weights='.*resnet20{suffix}'.*'resnet32'"):
        kr.create_model("resnet32", weights=path)


def test_keras_applications_weights_get_its_layout(tmp_path):
    source = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    randomize(source)
    path = tmp_path / "x.weights.h5"  # a name that says nothing: the content tells
    source.save_weights(path)
    model = kr.create_model("resnet50", weights=path, input_shape=(64, 64, 3), num_classes=10)
    x = random_images(2, 64, 64)
    expected = source(keras.applications.resnet.preprocess_input(x.copy()))
    assert_close(model(x), expected)
    # Named by what the weights made it: a v1 net, not the registry's v1.5 "resnet50".
    assert model.name == "resnet50v1"
    with pytest.raises(ValueError, match="keras.applications ResNet50 weights.*version='v2'"):
        kr.create_model("resnet50v2", weights=path)
    # Arguments the weights fix are not overridden: the model would load them and compute
    # other outputs (version="v1.5": logits 1.6 apart on a scale of 2.8).
    with pytest.raises(ValueError, match=r"version='v1.5' does not fit weights=.*version='v1'"):
        kr.create_model("resnet50", weights=path, input_shape=(64, 64, 3), version="v1.5")


def test_keras3_weights_of_a_keras_applications_v2_resnet(tmp_path):
    # Keras 3 names saved layers by class ("conv2d_12"): the convolutions give the depth, the
    # batch norms v1 or v2. This file used to be taken for one of ours ("Layer 'stem_conv'
    # expected 1 variables, but received 2").
    source = randomize(keras.applications.ResNet50V2(weights=None, input_shape=(32, 32, 3)))
    source.save_weights(tmp_path / "mine.weights.h5")
    path = str(tmp_path / "mine.weights.h5")
    model = kr.create_model("resnet50v2", weights=path, input_shape=(32, 32, 3))
    x = random_images(2, 32, 32)
    expected = source(keras.applications.resnet_v2.preprocess_input(x.copy()))
    assert_close(model(x), expected)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"weights='.*nothing\.npz'.*\.safetensors"):
        kr.create_model("resnet18", weights=tmp_path / "nothing.npz")
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(ValueError, match=r"weights='.*w\.txt'.*'\.txt'.*\.keras"):
        kr.create_model("resnet18", weights=tmp_path / "w.txt")
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(
        ValueError, match=r"neither an original ViT checkpoint.*nor a timm state dict"
    ):
        kr.create_model("resnet18", weights=tmp_path / "other.npz")


def test_weights_of_another_architecture(tmp_path):
    path = tmp_path / "resnet18.npz"
    np.savez(path, **resnet_state_dict(kr.build_resnet(18, input_shape=SHAPE)))
    with pytest.raises(ValueError, match=r"'stem_conv'.*\(7, 7, 3, 128\).*\(7, 7, 3, 64\)"):
        kr.create_model("resnet18", weights=path, input_shape=SHAPE, width=2)
    with pytest.raises(ValueError, match=r"weights=.*has no weights for.*stage1_block3"):
        kr.create_model("resnet34", weights=path, input_shape=SHAPE)
    with pytest.raises(ValueError, match="holds resnet weights.*do not fit a vit model"):
        kr.create_model("vit_ti16", weights=path)


def test_keras_3_weights_named_plain_h5_load_as_keras_3_weights(tmp_path):
    source = randomize(kr.create_model("resnet20"))
    source.save_weights(tmp_path / "resnet20.weights.h5")
    (tmp_path / "resnet20.weights.h5").rename(tmp_path / "resnet20.h5")
    model = kr.create_model("resnet20", weights=tmp_path / "resnet20.h5")
    x = random_images(2, *SHAPE)
    assert_close(model(x), source(x), tolerance=1e-6)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: weights_format("empty.npz"), r"weights='empty\.npz' is not a readable \.npz"),
        (lambda: load_weights("empty.npz"), r"weights='empty\.npz' is not a readable \.npz"),
        (
            lambda: kr.create_model("resnet20", weights="empty.npz"),
            r"weights='empty\.npz' is not a readable \.npz: the file is empty",
        ),
        # NumPy takes other bytes for a pickle and says to unpickle them: never suggested.
        (
            lambda: kr.create_model("vit_ti16", weights="text.npz"),
            r"weights='text\.npz' is not a readable \.npz: its bytes are not a zip archive of",
        ),
        (lambda: read_state_dict("text.npz"), r"'text\.npz' .*: its bytes are not a zip archive"),
        (lambda: weights_format(None), r"weights=None is not a path; pass a str or pathlib"),
        (lambda: load_weights(None), r"path=None is not a path; pass a str or pathlib"),
        (lambda: read_state_dict(None), r"path=None is not a path; pass a str or pathlib"),
        (lambda: read_state_dict(["w.npz"]), r"path=\['w\.npz'\] is not a path"),
    ],
    ids=["format_empty", "load_empty", "create_empty", "create_text", "read_text", "format_none",
         "load_none", "read_none", "read_list"],
)  # fmt: skip
def test_empty_files_and_non_paths_are_named(tmp_path, monkeypatch, call, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "text.npz").write_bytes(b"not an archive")
    with pytest.raises(ValueError, match=message):
        call()


def _features(model, x):
    inner = keras.Model(model.input, model.get_layer("predictions").input)
    return keras.ops.convert_to_numpy(inner(x))


def test_a_vit_checkpoint_fixes_its_resolution_and_other_classes_get_a_new_head(tmp_path):
    """The checkpoint's grid of position embeddings is its resolution; `num_classes=` other
    than its head's loads every other weight under a new (zero, for a ViT) classifier, as
    timm's and keras-hub's `num_classes` do."""
    path = tmp_path / "ViT-custom.npz"
    np.savez(path, **make_checkpoint(np.random.default_rng(0)))
    size = GRID * PATCH
    model = kr.create_model("vit_ti16", weights=path, patch_size=PATCH, **SMALL_VIT)
    assert model.input_shape == (None, size, size, 3) and model.output_shape == (None, CLASSES)
    x = random_images(2, size, size)
    other = kr.create_model("vit_ti16", weights=path, num_classes=3, patch_size=PATCH, **SMALL_VIT)
    assert (
        other.output_shape == (None, 3)
        and not other.get_layer("predictions").get_weights()[0].any()
    )
    np.testing.assert_array_equal(_features(other, x), _features(model, x))
    larger = kr.create_model(
        "vit_ti16", weights=path, num_classes=3, image_size=2 * size, patch_size=PATCH, **SMALL_VIT
    )
    assert larger.input_shape == (None, 2 * size, 2 * size, 3)
    resized = kr.resize_vit(model, 2 * size)
    big = random_images(2, 2 * size, 2 * size)
    assert_close(_features(larger, big), _features(resized, big), tolerance=1e-6)


def test_our_keras_file_gives_its_classes_and_names_or_a_new_head(tmp_path):
    source = randomize(kr.create_model("resnet20", num_classes=7))
    kr.files.set_class_names(source, list("abcdefg"))
    kr.files.save_model(source, tmp_path / "r20.keras")
    model = kr.create_model("resnet20", weights=tmp_path / "r20.keras")
    x = random_images(2, *SHAPE)
    assert_close(model(x), source(x), tolerance=1e-6)
    assert kr.files.model_class_names(model) == list("abcdefg")
    other = kr.create_model("resnet20", weights=tmp_path / "r20.keras", num_classes=3)
    assert other.output_shape == (None, 3) and kr.files.model_class_names(other) is None
    np.testing.assert_array_equal(_features(other, x), _features(model, x))


def test_keras_applications_weights_fix_their_classes_and_other_classes_get_a_new_head(
    tmp_path,
):
    source = randomize(
        keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    )
    path = tmp_path / "x.weights.h5"
    source.save_weights(path)
    model = kr.create_model("resnet50", weights=path, input_shape=(64, 64, 3))
    assert model.output_shape == (None, 10)
    other = kr.create_model("resnet50", weights=path, input_shape=(64, 64, 3), num_classes=5)
    assert other.output_shape == (None, 5)
    assert (model.name, other.name) == ("resnet50v1", "resnet50v1")
    x = random_images(2, 64, 64)
    np.testing.assert_array_equal(_features(other, x), _features(model, x))
