"""Weights that fit a model's shapes but not its computation are refused, and bad inputs to
the converters and the catalog are named: a v1.5 state dict or preset into a v1 ResNet, a
`.keras` file into a model built with other arguments, a preset under another registry name,
unreadable files, invalid catalog entries and build arguments."""

import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.weights import (
    NamedWeights,
    from_keras_applications,
    load_timm,
    read_state_dict,
    register_weights,
)
from tests.conftest import random_images
from tests.weights.helpers import assert_close, randomize
from tests.weights.torch_layout import resnet_state_dict, vit_state_dict

pytestmark = pytest.mark.one_backend(
    "tensorflow",
    reason="weights are NumPy arrays checked and set by Python; that a model computes the same on "
    "both backends is tested in tests/models",
)

SHAPE = (32, 32, 3)


@pytest.fixture(scope="module")
def resnet50_state_dict():
    """torchvision's layout of a v1.5 ResNet-50 (stride on the bottleneck's 3x3)."""
    return resnet_state_dict(randomize(kr.build_resnet(50, input_shape=SHAPE, num_classes=7)))


def test_a_torchvision_state_dict_is_refused_by_a_v1_resnet(tmp_path, resnet50_state_dict):
    path = tmp_path / "tv_r50.npz"
    np.savez(path, **resnet50_state_dict)
    with pytest.raises(ValueError, match=r"'resnet50v1' is a v1 ResNet .*'stage2_block1_conv1'"):
        kr.create_model("resnet50v1", weights=path, input_shape=SHAPE)
    v1 = kr.build_resnet(50, version="v1", input_shape=SHAPE, num_classes=7)
    with pytest.raises(ValueError, match=r"holds v1.5 weights.*version='v1'"):
        load_timm(resnet50_state_dict, model=v1)
    # Said knowingly (a port of a v1 net), it loads; built from the state dict, it is v1.
    assert load_timm(resnet50_state_dict, model=v1, version="v1") is v1
    built = load_timm(resnet50_state_dict, version="v1", input_shape=SHAPE)
    assert built.get_layer("stage2_block1_conv1").strides == (2, 2)
    with pytest.raises(ValueError, match="version='v2' is not valid"):
        load_timm(resnet50_state_dict, version="v2")


@pytest.mark.parametrize(
    "saved, name, overrides, message",
    [
        ({"name": "resnet20"}, "plain20", {}, r"only in the file: \['stage1_block1_add'.*plain"),
        (
            {"name": "resnet20", "classifier_activation": None},
            "resnet20",
            {},
            r"'predictions' has activation='linear' in the file, 'softmax'.*classifier_activation",
        ),
        ({"name": "resnet20"}, "resnet20", {"pooling": "max"}, r"only in the model: \['max_pool'"),
        (
            {"name": "resnet50", "input_shape": SHAPE},
            "resnet50v1",
            {"input_shape": SHAPE},
            r"'stage2_block1_conv1' has strides=\[1, 1\] in the file, \[2, 2\].*version",
        ),
        # A config key that a layer writes only away from its default: the QK-norm's
        # LayerNorms hold no kernel of the attention's, so the shapes alone loaded it.
        (
            {"name": "vit_ti16", "image_size": 32, "num_layers": 1, "qk_norm": True},
            "vit_ti16",
            {"image_size": 32, "num_layers": 1},
            r"has qk_norm=True in the file, its default False here",
        ),
    ],
)
def test_a_keras_file_refuses_a_model_of_other_arguments(tmp_path, saved, name, overrides, message):
    path = tmp_path / "saved.keras"
    kr.create_model(**saved).save(path)
    with pytest.raises(ValueError, match=rf"weights='.*saved.keras' \(keras\) .*{message}"):
        kr.create_model(name, weights=path, **overrides)


def test_a_keras_file_loads_with_its_arguments_and_training_only_options(tmp_path):
    source = randomize(kr.create_model("resnet20", classifier_activation=None))
    source.save(tmp_path / "logits.keras")
    model = kr.create_model(
        "resnet20",
        weights=tmp_path / "logits.keras",
        classifier_activation=None,
        drop_path=0.1,
        zero_init_residual=True,
    )
    x = random_images(2, *SHAPE)
    assert_close(model(x), source(x), tolerance=1e-6)


def test_a_vit_keras_file_keeps_its_grid_at_any_or_another_size(tmp_path):
    source = randomize(kr.create_model("vit_ti16", image_size=32, num_classes=5))
    source.save(tmp_path / "vti32.keras")
    x = random_images(2, 32, 32)
    for size, shape in ((None, (None, None, 3)), (32, SHAPE), (48, (48, 48, 3))):
        model = kr.create_model(
            "vit_ti16", weights=tmp_path / "vti32.keras", image_size=size, num_classes=5
        )
        assert model.input_shape == (None, *shape)
        if size != 48:
            assert_close(model(x), source(x), tolerance=1e-5)
    model = kr.create_model("vit_ti16", weights=tmp_path / "vti32.keras", num_classes=5)
    assert model.input_shape[1:] == SHAPE


def test_a_keras_hub_preset_never_replaces_the_requested_architecture(tmp_path):
    pytest.importorskip("keras_hub")
    from keras_resvit.weights import save_keras_hub_preset

    save_keras_hub_preset(kr.build_resnet(18, input_shape=SHAPE), tmp_path / "r18")
    with pytest.raises(ValueError, match=r"r18' \(keras_hub\) does not fit model 'resnet50'"):
        kr.create_model("resnet50", weights=tmp_path / "r18", input_shape=SHAPE)
    tiny = kr.build_vit(None, image_size=32, patch_size=8, hidden_size=32, num_layers=1,
                        num_heads=2, mlp_dim=64)  # fmt: skip
    save_keras_hub_preset(tiny, tmp_path / "tiny")
    with pytest.raises(ValueError, match=r"does not fit model 'vit_ti16'.*\(1, 1, 192\)"):
        kr.create_model("vit_ti16", weights=tmp_path / "tiny")
    save_keras_hub_preset(kr.build_resnet(50, input_shape=SHAPE), tmp_path / "r50")
    with pytest.raises(ValueError, match=r"'resnet50v1' is a v1 ResNet.*holds v1.5 weights"):
        kr.create_model("resnet50v1", weights=tmp_path / "r50", input_shape=SHAPE)


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin"])
def test_a_text_file_as_a_torch_state_dict_is_named(tmp_path, suffix):
    pytest.importorskip("torch")
    path = tmp_path / f"junk{suffix}"
    path.write_text("hello world\n")
    with pytest.raises(ValueError, match=rf"path='junk\{suffix}' is not a readable state dict"):
        read_state_dict(path)


_ENTRY = {
    "models": "resnet20",
    "tag": "checked",
    "url": "https://example.org/resnet20.weights.h5",
    "format": "keras",
    "image_size": 32,
    "num_classes": 10,
    "preprocessing": "cifar",
    "top1": None,
    "license": "MIT",
    "source": "a test",
}


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"build": {"depht": 20}}, r"entry.build=\{'depht': 20\}.*Did you mean 'depth'"),
        ({"hash": "zz", "hash_algorithm": "sha256"}, r"entry.hash='zz'.*hex sha256 .* 64"),
        ({"preprocessing": "foo"}, r"entry.preprocessing='foo'.*'imagenet'"),
        ({"license": 5}, r"entry.license=5 .*non-empty str"),
        ({"top1": "x"}, r"entry.top1='x' .*percentage"),
    ],
)
def test_invalid_catalog_entries_are_named_at_registration(fields, message):
    with pytest.raises(ValueError, match=message):
        register_weights(NamedWeights(**{**_ENTRY, **fields}))


def test_non_models_given_to_the_converters_are_named(tmp_path):
    pytest.importorskip("keras_hub")
    from keras_resvit.weights import save_keras_hub_preset, to_keras_hub

    for call in (lambda: to_keras_hub(3), lambda: save_keras_hub_preset(3, tmp_path / "x")):
        with pytest.raises(ValueError, match="model of type int is not valid"):
            call()
    with pytest.raises(ValueError, match="source=3 is not valid.*keras.Model"):
        from_keras_applications(3)


def test_unknown_build_arguments_and_malformed_position_embeddings_are_named():
    resnet = resnet_state_dict(kr.build_resnet(18, input_shape=SHAPE, num_classes=7))
    for keyword in ({"num_heads": 4}, {"bogus": 1}):
        (key,) = keyword
        with pytest.raises(ValueError, match=rf"{key}=.* not an argument of build_resnet.*'depth'"):
            load_timm(resnet, **keyword)
    vit = kr.build_vit(None, image_size=16, num_classes=5, hidden_size=32, num_layers=2,
                       num_heads=4, mlp_dim=64, patch_size=8)  # fmt: skip
    state_dict = vit_state_dict(vit)
    state_dict["pos_embed"] = state_dict["pos_embed"][:, :3]
    for model in (None, vit):
        with pytest.raises(ValueError, match=r"'pos_embed' has shape \(1, 3, 32\).*no square"):
            load_timm(state_dict, model=model, **({"num_heads": 4} if model is None else {}))


def test_a_keras_file_of_an_earlier_version_without_a_newer_option_loads(tmp_path):
    # A file saved before an option existed lacks its config key (the layer takes the
    # default when loaded): not another architecture. Keras 3 added `use_gate` and
    # `sliding_window` to MultiHeadAttention.
    import json
    import zipfile

    source = randomize(kr.create_model("vit_ti16", image_size=32, num_classes=5))
    source.save(tmp_path / "new.keras")
    with zipfile.ZipFile(tmp_path / "new.keras") as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    dropped = 0
    for layer in config["config"]["layers"]:
        for key in ("use_gate", "sliding_window"):
            dropped += layer["config"].pop(key, "absent") != "absent"
    assert dropped
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "old.keras", "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    model = kr.create_model("vit_ti16", weights=tmp_path / "old.keras", num_classes=5)
    x = random_images(2, 32, 32)
    assert_close(model(x), source(x), tolerance=1e-5)


def test_a_vit_keras_file_of_any_size_loads_at_any_or_a_fixed_size(tmp_path):
    # An any-size file was refused with its own arguments (its position embeddings read the
    # patch grid too), and failed in Keras at a fixed size (its grid was not read).
    arguments = {"num_layers": 2, "num_classes": 5}
    source = randomize(kr.create_model("vit_ti16", image_size=None, **arguments))
    source.save(tmp_path / "any.keras")
    x = random_images(2, 32, 32)
    for size in (None, 32):
        model = kr.create_model(
            "vit_ti16", weights=tmp_path / "any.keras", image_size=size, **arguments
        )
        assert model.input_shape[1] == size
        assert_close(model(x), source(x), tolerance=1e-5)
    # Without an override: the size of the file's grid of embeddings (14 x 16).
    model = kr.create_model("vit_ti16", weights=tmp_path / "any.keras", **arguments)
    assert model.input_shape[1:] == (224, 224, 3)


def test_a_vit_trained_with_attention_dropout_loads(tmp_path):
    # Attention dropout is training-only, as dropout and drop_path are.
    arguments = {"image_size": 32, "num_layers": 2, "num_classes": 5}
    source = randomize(kr.create_model("vit_ti16", attention_dropout=0.1, **arguments))
    source.save(tmp_path / "dropout.keras")
    model = kr.create_model("vit_ti16", weights=tmp_path / "dropout.keras", **arguments)
    x = random_images(2, 32, 32)
    assert_close(model(x), source(x), tolerance=1e-6)
