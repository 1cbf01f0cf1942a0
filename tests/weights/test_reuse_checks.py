"""Bad input to the weights writers and readers gets one clear error before any work: a user's
files in a preset folder are never replaced, options keras-hub cannot hold and files no
converter reads are named, the cache's setting is named, and sizes are checked by type."""

import json

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.weights import download
from keras_resvit.weights.keras_hub import save_keras_hub_preset
from tests.conftest import random_images, tiny_vit
from tests.weights.helpers import assert_close, randomize

pytestmark = pytest.mark.one_backend(
    "tensorflow",
    reason="weights are NumPy arrays checked by Python; tests/weights/test_named_weights.py loads "
    "them on both backends",
)

_HUB_CONFIG = {
    "module": "keras_hub.src.models.gemma.gemma_backbone",
    "class_name": "GemmaBackbone",
    "config": {},
    "registered_name": "keras_hub>GemmaBackbone",
}


@pytest.mark.parametrize(
    "name, content",
    [
        ("config.json", '{"lr": 0.001}\n'),
        ("config.json", "not json at all"),
        ("config.json", json.dumps(_HUB_CONFIG)),  # a preset, but of a backbone we never write
        ("metadata.json", '{"author": "me"}\n'),
    ],
    ids=["own_config", "not_json", "other_backbone", "own_metadata"],
)
def test_a_users_config_json_is_never_taken_for_an_earlier_preset(tmp_path, name, content):
    pytest.importorskip("keras_hub")
    folder = tmp_path / "mycfg"
    if name == "metadata.json":  # beside a preset's config.json, the user's own metadata
        save_keras_hub_preset(tiny_vit(), folder)
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(content)
    before = sorted(path.name for path in folder.iterdir())
    with pytest.raises(ValueError, match=rf"folder='.*mycfg' holds {name}, which is not the"):
        save_keras_hub_preset(tiny_vit(), folder)
    assert (folder / name).read_text() == content
    assert sorted(path.name for path in folder.iterdir()) == before


def test_a_preset_written_earlier_is_replaced(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    folder = save_keras_hub_preset(tiny_vit(), tmp_path / "preset")
    model = randomize(tiny_vit())
    assert save_keras_hub_preset(model, folder) == folder
    backbone = keras_hub.models.Backbone.from_preset(str(folder))
    features = keras.Model(model.input, model.get_layer("encoder_norm").output)
    x = random_images(2, 32, 32)
    assert_close(backbone(x / 127.5 - 1.0), features(x))


@pytest.mark.parametrize(
    "option, value, valid",
    [
        ("pooling", "gap", "pooling='token' or None"),
        ("position_embedding", "sincos2d", "position_embedding='learned'"),
        ("pooling", "map", "pooling='token' or None"),
        ("num_registers", 2, "num_registers=0"),
    ],
)
def test_vit_options_keras_hub_cannot_hold_are_named(tmp_path, option, value, valid):
    pytest.importorskip("keras_hub")
    model = tiny_vit(**{option: value})
    message = rf"has {option}={value!r}, which keras-hub's ViTBackbone cannot hold; .*{valid}"
    with pytest.raises(ValueError, match=message):
        save_keras_hub_preset(model, tmp_path / "preset")
    assert not (tmp_path / "preset").exists()


def test_a_whole_model_in_legacy_hdf5_is_named_with_what_to_pass(tmp_path):
    path = tmp_path / "legacy.h5"
    kr.create_model("resnet20").save(path)  # Keras' legacy whole-model HDF5
    with pytest.raises(ValueError) as info:
        kr.create_model("resnet20", weights=path)
    message = str(info.value)
    assert message.startswith(f"weights={str(path)!r} is a whole Keras model saved in the legacy")
    assert "model.save('x.keras')" in message and ".weights.h5" in message
    assert "source=" not in message and "architecture=" not in message


def test_a_keras_applications_resnet_saved_whole_in_legacy_hdf5_still_loads(tmp_path):
    source = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=6)
    randomize(source).save(tmp_path / "x.h5")  # the layer names, not the file name, tell
    model = kr.create_model("resnet50", weights=tmp_path / "x.h5", input_shape=(32, 32, 3))
    x = random_images(2, 32, 32)
    assert_close(model(x), source(keras.applications.resnet.preprocess_input(x.copy())))
    # Its classifier's classes are the file's; others give a new classifier.
    other = kr.create_model(
        "resnet50", weights=tmp_path / "x.h5", input_shape=(32, 32, 3), num_classes=4
    )
    assert other.output_shape == (None, 4)


@pytest.mark.parametrize("variable", [download.HOME_VARIABLE, "KERAS_HOME"])
def test_a_cache_home_that_is_a_file_is_named_before_any_download(tmp_path, monkeypatch, variable):
    home = tmp_path / "user.txt"
    home.write_text("mine")
    monkeypatch.delenv(download.HOME_VARIABLE, raising=False)
    monkeypatch.setenv(variable, str(home))
    monkeypatch.setenv(download.MIRROR_VARIABLE, "http://127.0.0.1:9")  # nothing listens

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(keras.utils, "get_file", no_download)
    with pytest.raises(ValueError) as info:
        kr.create_model("resnet50", weights="imagenet")
    assert str(info.value).startswith(
        f"{variable}={str(home)!r} cannot hold the weights cache "
        f"'{home}/models/keras_resvit': {str(home)!r} is a file, not a folder."
    )
    assert home.read_text() == "mine"


@pytest.mark.parametrize("patch_size", [8.0, 16.0, "8"])
def test_resize_vit_checks_the_patch_size_type_even_when_it_equals_the_model_s(patch_size):
    model = tiny_vit()  # patch 8
    with pytest.raises(ValueError, match=rf"patch_size={patch_size!r} must be a positive int"):
        kr.resize_vit(model, patch_size=patch_size)


@pytest.mark.parametrize("image_size", [32.0, "32"])
def test_resize_vit_checks_the_image_size_type_even_when_it_equals_the_model_s(image_size):
    with pytest.raises(ValueError, match=rf"image_size={image_size!r} must be an int"):
        kr.resize_vit(tiny_vit(), image_size)


@pytest.mark.parametrize("preset", [None, "inception", "caffe"])
def test_a_keras_file_brings_its_preprocessing_unless_overridden(tmp_path, preset):
    """The weights of a `.keras` file were trained behind its preprocessing: a registry model
    built around them takes it (else its outputs silently differ from the file's model)."""
    source = kr.create_model("resnet20", preprocessing=preset, classifier_activation=None)
    randomize(source)
    source.save(tmp_path / "mine.keras")
    x = random_images(4, 32, 32)
    created = kr.create_model(
        "resnet20", classifier_activation=None, weights=tmp_path / "mine.keras"
    )
    assert_close(created(x), source(x))
    overridden = kr.create_model(
        "resnet20",
        preprocessing="cifar",
        classifier_activation=None,
        weights=tmp_path / "mine.keras",
    )
    assert overridden.get_layer("preprocessing").get_config()["mean"] == [
        125.307,
        122.961,
        113.8575,
    ]
    difference = np.abs(keras.ops.convert_to_numpy(overridden(x) - source(x))).max()
    assert difference > 1e-2


def test_a_keras_file_of_unknown_preprocessing_is_named(tmp_path):
    model = kr.create_model("resnet20", preprocessing="inception")
    config = model.get_config()
    layer = next(x for x in config["layers"] if x["config"]["name"] == "preprocessing")
    layer["config"]["scale"] = 0.5  # a user's own normalization, under our layer's name
    keras.Model.from_config(config).save(tmp_path / "custom.keras")
    with pytest.raises(ValueError, match=r"custom.keras.*preprocessing layers.*kr.load_model"):
        kr.create_model("resnet20", weights=tmp_path / "custom.keras")
