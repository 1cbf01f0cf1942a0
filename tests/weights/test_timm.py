"""timm / torchvision state dicts (ResNet v1.5, ViT) load into our models with the same outputs."""

from pathlib import Path

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.weights import load_timm, load_weights, read_state_dict
from tests.conftest import random_images
from tests.weights.helpers import assert_close, randomize
from tests.weights.torch_layout import resnet_state_dict, vit_state_dict

pytestmark = pytest.mark.one_backend(
    "tensorflow",
    reason="a NumPy conversion; the converted model's computation is tested on both backends in "
    "tests/models",
)

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


def _torch_resnet(state, x):
    """torchvision's ResNet forward (v1.5: the stride on the 3x3 conv) on a state dict."""
    import torch
    import torch.nn.functional as F

    def conv_bn(y, conv, bn, stride=1):
        weight = state[f"{conv}.weight"]
        y = F.conv2d(y, weight, stride=stride, padding=weight.shape[-1] // 2)
        stats = [state[f"{bn}.{k}"] for k in ("running_mean", "running_var", "weight", "bias")]
        return F.batch_norm(y, *stats, training=False, eps=1e-5)

    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    y = (torch.from_numpy(x).permute(0, 3, 1, 2) / 255 - mean[:, None, None]) / std[:, None, None]
    y = F.max_pool2d(F.relu(conv_bn(y, "conv1", "bn1", 2)), 3, stride=2, padding=1)
    blocks = {tuple(map(int, k[5:].split(".")[:2])) for k in state if k.startswith("layer")}
    for stage, index in sorted(blocks):
        block, stride = f"layer{stage}.{index}", 2 if index == 0 and stage > 1 else 1
        convs = sorted({k.split(".")[2] for k in state if k.startswith(f"{block}.conv")})
        shortcut = y
        if f"{block}.downsample.0.weight" in state:
            shortcut = conv_bn(y, f"{block}.downsample.0", f"{block}.downsample.1", stride)
        for i, conv in enumerate(convs, start=1):
            # Basic blocks stride their first conv, bottlenecks their 3x3 (second) conv.
            strided = (i == 2) if len(convs) == 3 else (i == 1)
            y = conv_bn(y, f"{block}.{conv}", f"{block}.bn{i}", stride if strided else 1)
            y = F.relu(y) if i < len(convs) else y
        y = F.relu(y + shortcut)
    logits = F.linear(y.mean((2, 3)), state["fc.weight"], state["fc.bias"])
    return torch.softmax(logits, -1).numpy()


def _torch_vit(state, x, heads):
    """timm's VisionTransformer forward (pre-norm blocks; the class token, registers,
    LayerScale, QK-norm, `no_embed_class`, average pooling (no class token), fc_norm and the
    attention pool when the state dict has them) on a state dict."""
    import torch
    import torch.nn.functional as F

    def norm(y, name):
        return F.layer_norm(y, y.shape[-1:], state[f"{name}.weight"], state[f"{name}.bias"], 1e-6)

    def linear(y, name):
        return F.linear(y, state[f"{name}.weight"], state[f"{name}.bias"])

    y = torch.from_numpy(x).permute(0, 3, 1, 2) / 127.5 - 1  # timm's mean = std = 0.5
    weight = state["patch_embed.proj.weight"]
    y = F.conv2d(y, weight, state["patch_embed.proj.bias"], stride=weight.shape[-1])
    y = y.flatten(2).transpose(1, 2)
    cls = [state["cls_token"].expand(len(y), -1, -1)] if "cls_token" in state else []
    if state["pos_embed"].shape[1] == y.shape[1]:  # no_embed_class: the grid only
        y = torch.cat([*cls, y + state["pos_embed"]], 1)
    else:
        y = torch.cat([*cls, y], 1) + state["pos_embed"]
    registers = [state["reg_token"].expand(len(y), -1, -1)] if "reg_token" in state else []
    # Registers after the class token, without position embeddings.
    y = torch.cat([y[:, : len(cls)], *registers, y[:, len(cls) :]], 1)
    prefix = len(cls) + (registers[0].shape[1] if registers else 0)

    def scale(y, name):
        return y * state[name] if name in state else y

    for i in range(len({k.split(".")[1] for k in state if k.startswith("blocks.")})):
        block = f"blocks.{i}"
        batch, tokens, width = y.shape
        qkv = linear(norm(y, f"{block}.norm1"), f"{block}.attn.qkv")
        q, k, v = qkv.reshape(batch, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4)
        if f"{block}.attn.q_norm.weight" in state:
            q, k = norm(q, f"{block}.attn.q_norm"), norm(k, f"{block}.attn.k_norm")
        attention = F.scaled_dot_product_attention(q, k, v)
        attention = linear(
            attention.transpose(1, 2).reshape(batch, tokens, width), f"{block}.attn.proj"
        )
        y = y + scale(attention, f"{block}.ls1.gamma")
        hidden = F.gelu(linear(norm(y, f"{block}.norm2"), f"{block}.mlp.fc1"))
        y = y + scale(linear(hidden, f"{block}.mlp.fc2"), f"{block}.ls2.gamma")
    if "norm.weight" in state:
        y = norm(y, "norm")
    if "attn_pool.latent" in state:  # timm's AttentionPoolLatent
        q = linear(state["attn_pool.latent"].expand(len(y), -1, -1), "attn_pool.q")
        k, v = linear(y, "attn_pool.kv").reshape(len(y), -1, 2, heads, width // heads).unbind(2)
        q = q.reshape(len(y), 1, heads, -1).transpose(1, 2)
        pooled = F.scaled_dot_product_attention(q, k.transpose(1, 2), v.transpose(1, 2))
        pooled = linear(pooled.transpose(1, 2).reshape(len(y), 1, width), "attn_pool.proj")
        hidden = F.gelu(linear(norm(pooled, "attn_pool.norm"), "attn_pool.mlp.fc1"))
        y = (pooled + linear(hidden, "attn_pool.mlp.fc2"))[:, 0]
    elif "cls_token" in state:
        y = y[:, 0]
    else:  # global_pool="avg": the patch tokens after the registers
        y = y[:, prefix:].mean(1)
    if "fc_norm.weight" in state:
        y = norm(y, "fc_norm")
    return torch.softmax(linear(y, "head"), -1).numpy()


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "vit_ti16"])
def test_pth_file_matches_a_torch_forward_pass(name, tmp_path):
    """A `.pth` saved by `torch.save` loads through `torch.load(weights_only=True)` into the
    registry model, whose outputs match the same tensors run through PyTorch's functional ops."""
    torch = pytest.importorskip("torch")
    if name.startswith("vit"):
        size, source, overrides = 16, _random_vit(), {"image_size": 16, **VIT}
        state = vit_state_dict(source)
    else:
        size, overrides = 32, {"input_shape": (32, 32, 3)}
        source = randomize(kr.build_resnet(int(name[6:]), num_classes=7, **overrides))
        state = resnet_state_dict(source)
    path = tmp_path / f"{name}.pth"
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, path)
    model = kr.create_model(name, weights=path, **overrides)
    x = random_images(2, size, size)
    tensors = torch.load(path, weights_only=True)
    if name.startswith("vit"):
        expected = _torch_vit(tensors, x, VIT["num_heads"])
    else:
        expected = _torch_resnet(tensors, x)
    # A ViT of other widths than ViT-Ti's is named by its own.
    size_name = f"vit_d{VIT['hidden_size']}_l{VIT['num_layers']}_{VIT['patch_size']}"
    assert model.name == (size_name if name.startswith("vit") else name)
    assert model.output_shape == (None, expected.shape[-1])
    assert_close(model(x), expected, tolerance=1e-5)


def test_deit3_registers_and_qk_norm_state_dicts_match_a_torch_forward_pass():
    """timm's layouts of LayerScale (`ls1/ls2.gamma`: DeiT III, CaiT), registers (`reg_token`),
    QK-norm (`attn.q_norm/k_norm`) and a class token without a position embedding
    (`no_embed_class`: DeiT III) load into the builder's options, read from the state dict."""
    torch = pytest.importorskip("torch")
    source = _random_vit(num_registers=2, layer_scale_init=0.5, qk_norm=True)
    embeddings = source.get_layer("position_embedding").embeddings
    embeddings.assign(
        keras.ops.concatenate([keras.ops.zeros_like(embeddings[:, :1]), embeddings[:, 1:]], 1)
    )
    state = vit_state_dict(source, no_embed_class=True)
    assert state["pos_embed"].shape[1] == 4 and state["blocks.0.ls1.gamma"].shape == (32,)
    model = load_timm(state, num_heads=4)
    layer = model.get_layer("encoder_block1_attention")
    assert layer.qk_norm and model.get_layer("register_tokens").num_registers == 2
    x = random_images(2, 16, 16)
    expected = _torch_vit({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, x, 4)
    assert_close(model(x), expected, tolerance=1e-5)
    assert_close(model(x), source(x), tolerance=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        {"pooling": "gap", "num_registers": 2},  # timm's vit_*_reg4_gap_*: no class token
        {"pooling": "gap", "fc_norm": True},  # global_pool="avg" with fc_norm
        {"pooling": "map", "qk_norm": True},  # SigLIP's attention pool (AttentionPoolLatent)
    ],
    ids=["gap-registers", "gap-fc-norm", "map"],
)
def test_pooling_heads_state_dicts_match_a_torch_forward_pass(options):
    """timm's average pooling (no class token), fc_norm and attention pool load into the
    pooling the state dict implies, with the outputs of timm's forward pass."""
    torch = pytest.importorskip("torch")
    source = _random_vit(**options)
    state = vit_state_dict(source)  # no class token: the embeddings are the grid's
    model = load_timm(state, num_heads=4)
    layers = {layer.name for layer in model.layers}
    assert ("map_probe" in layers) == (options["pooling"] == "map")
    assert ("fc_norm" in layers) == options.get("fc_norm", False)
    assert "class_token" not in layers and model.count_params() == source.count_params()
    x = random_images(2, 16, 16)
    expected = _torch_vit({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, x, 4)
    assert_close(model(x), expected, tolerance=1e-5)
    assert_close(model(x), source(x), tolerance=1e-5)


def test_ambiguous_or_unequal_pooling_heads_are_refused():
    with_class_token = vit_state_dict(_random_vit(fc_norm=True))
    with pytest.raises(ValueError, match='class token and fc_norm.*pooling="token"'):
        load_timm(with_class_token, num_heads=4)
    model = load_timm(with_class_token, num_heads=4, pooling="token")
    assert model.get_layer("fc_norm") is not None
    registers = vit_state_dict(_random_vit(pooling="map", num_registers=1))
    with pytest.raises(ValueError, match="attn_pool.*patch tokens only"):
        load_timm(registers, num_heads=4)


class _TouchOnLoad:
    """Unpickling this object calls `Path.touch`: a reader that unpickles creates the file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


def test_pth_objects_are_never_unpickled(tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "unpickled"
    torch.save({"conv1.weight": _TouchOnLoad(marker)}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"'evil\.pth'.*never unpickled"):
        kr.create_model("resnet18", weights=tmp_path / "evil.pth")
    assert not marker.exists()
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, tmp_path / "nested.pth")
    with pytest.raises(ValueError, match=r"'nested\.pth'.*\['state_dict'\].*flat"):
        kr.create_model("resnet18", weights=tmp_path / "nested.pth")


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


def _vit_state(edit=lambda state: state):
    return edit(dict(vit_state_dict(_random_vit())))


@pytest.mark.parametrize(
    "source, message",
    [
        (None, r"source=None is not valid; pass a state dict .*got NoneType"),
        ([1, 2], r"source=\[1, 2\] is not valid; pass a state dict .*got list"),
        (
            lambda: _vit_state(lambda s: {k: v for k, v in s.items() if k != "pos_embed"}),
            r"a state dict is not a complete timm ViT state dict: it lacks \['pos_embed'\]",
        ),
        (
            lambda: _vit_state(
                lambda s: {**s, "patch_embed.proj.weight": s["patch_embed.proj.weight"][0]}
            ),
            r"'patch_embed\.proj\.weight' has shape \(3, 8, 8\); a timm ViT's is \(hidden, "
            r"channels, patch, patch\)",
        ),
    ],
    ids=["none", "list", "no_pos_embed", "3d_patch_kernel"],
)
def test_bad_sources_are_named(source, message):
    with pytest.raises(ValueError, match=message):
        load_timm(source() if callable(source) else source)


@pytest.mark.parametrize(
    "family, model, arguments, message",
    [
        ("vit", "resnet", {}, r"model='resnet20' is a ResNet, but a state dict \(timm vit\)"),
        ("resnet", "vit", {}, r"model='.*' is a ViT, but a state dict \(timm resnet\)"),
        ("vit", "x", {}, "model of type str is not valid"),
        ("vit", "vit", {"image_size": 64}, "image_size=64 cannot be combined with model="),
        ("resnet", "resnet", {"num_classes": 3}, "num_classes=3 cannot be combined with model="),
        ("vit", "vit", {"image_size": None}, "image_size=None cannot be combined with model="),
    ],
    ids=["vit_into_resnet", "resnet_into_vit", "str", "image_size", "num_classes", "any_size"],
)
def test_a_wrong_model_or_ignored_build_arguments_are_refused(family, model, arguments, message):
    resnet = kr.build_resnet(18, input_shape=(32, 32, 3))
    state = _vit_state() if family == "vit" else resnet_state_dict(resnet)
    models = {"resnet": kr.create_model("resnet20"), "vit": _random_vit()}
    with pytest.raises(ValueError, match=message):
        load_timm(state, model=models.get(model, model), **arguments)
