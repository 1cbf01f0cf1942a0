"""timm / torchvision state dicts (ResNet v1.5, ViT) load into our models with the same outputs."""

import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.weights import load_timm, load_weights, read_state_dict
from tests.conftest import random_images
from tests.weights.helpers import assert_close, randomize
from tests.weights.torch_layout import resnet_state_dict, vit_state_dict

VIT = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "mlp_dim": 64, "patch_size": 8}


def _random_vit(**kwargs):
    model = kr.build_vit(None, image_size=16, num_classes=5, **VIT, **kwargs)
    rng = np.random.default_rng(0)
    for variable in model.weights:  # the head starts at zero; every weight must matter
        variable.assign(rng.normal(0, 0.3, tuple(variable.shape)).astype("float32"))
    return model


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_state_dict_round_trip(depth):
    source = randomize(kr.build_resnet(depth, input_shape=(32, 32, 3), num_classes=7))
    state = resnet_state_dict(source)
    assert state["conv1.weight"].shape == (64, 3, 7, 7)
    model = load_timm(state, input_shape=(32, 32, 3))
    assert model.output_shape == (None, 7)
    x = random_images(2, 32, 32)
    assert_close(model(x), source(x), tolerance=1e-5)


def test_vit_state_dict_round_trip_and_resampling():
    source = _random_vit()
    state = vit_state_dict(source)
    assert state["blocks.0.attn.qkv.weight"].shape == (96, 32)
    model = load_timm(state, num_heads=4)
    x = random_images(2, 16, 16)
    assert_close(model(x), source(x), tolerance=1e-5)
    larger = load_timm(state, num_heads=4, image_size=24)
    y = random_images(2, 24, 24)
    assert_close(larger(y), kr.resize_vit(source, 24)(y), tolerance=1e-5)


def test_vit_heads_are_read_from_the_target_model():
    source = _random_vit()
    wrong_heads = kr.build_vit(None, image_size=16, num_classes=5, **{**VIT, "num_heads": 2})
    model = load_timm(vit_state_dict(source), model=wrong_heads)
    x = random_images(1, 16, 16)
    assert not np.allclose(np.asarray(model(x)), np.asarray(source(x)), atol=1e-3)


def test_npz_state_dict_file(tmp_path):
    source = randomize(kr.build_resnet(18, input_shape=(32, 32, 3), num_classes=3))
    path = tmp_path / "resnet18.npz"
    np.savez(path, **resnet_state_dict(source))
    model = load_weights(path, input_shape=(32, 32, 3))
    x = random_images(2, 32, 32)
    assert_close(model(x), source(x), tolerance=1e-5)


def test_pth_file_through_torch_weights_only(tmp_path):
    torch = pytest.importorskip("torch")
    source = _random_vit()
    path = tmp_path / "vit.pth"
    torch.save(
        {k: torch.from_numpy(np.asarray(v)) for k, v in vit_state_dict(source).items()}, path
    )
    model = load_timm(path, num_heads=4)
    x = random_images(1, 16, 16)
    assert_close(model(x), source(x), tolerance=1e-5)


def test_readers_refuse_other_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        read_state_dict(tmp_path / "missing.safetensors")
    (tmp_path / "w.ckpt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"'\.ckpt'.*\.safetensors"):
        read_state_dict(tmp_path / "w.ckpt")
    with pytest.raises(ValueError, match="neither a torchvision/timm ResNet"):
        load_timm({"weight": np.zeros(2)})
    state = resnet_state_dict(kr.build_resnet(18, input_shape=(32, 32, 3)))
    state["layer1.0.extra.weight"] = np.zeros(2)
    with pytest.raises(ValueError, match="layer1.0.extra.weight"):
        load_timm(state)
