"""Original ViT `.npz` checkpoints load into our ViT and match a NumPy reference forward pass."""

import keras
import numpy as np
import pytest
from scipy.special import erf

import keras_resvit as kr
from keras_resvit.weights import load_vit_npz, load_weights
from tests.conftest import random_images
from tests.weights.helpers import assert_close

pytestmark = pytest.mark.one_backend(
    "tensorflow",
    reason="a NumPy conversion; the converted model's computation is tested on both backends in "
    "tests/models",
)

HIDDEN, HEADS, MLP, PATCH, GRID, CLASSES = 32, 4, 64, 8, 2, 5


def make_checkpoint(rng, *, layers=2, cls=True, pre_logits=None, head=True):
    """Random arrays in google-research/vision_transformer's key layout and shapes."""

    def normal(*shape, scale=0.2):
        return (rng.normal(0, scale, shape)).astype("float32")

    arrays = {
        "embedding/kernel": normal(PATCH, PATCH, 3, HIDDEN, scale=0.05),
        "embedding/bias": normal(HIDDEN),
        "Transformer/posembed_input/pos_embedding": normal(1, GRID * GRID + int(cls), HIDDEN),
        "Transformer/encoder_norm/scale": 1 + normal(HIDDEN),
        "Transformer/encoder_norm/bias": normal(HIDDEN),
    }
    if cls:
        arrays["cls"] = normal(1, 1, HIDDEN)
    head_dim = HIDDEN // HEADS
    for i in range(layers):
        block = f"Transformer/encoderblock_{i}"
        for norm in ("LayerNorm_0", "LayerNorm_2"):
            arrays[f"{block}/{norm}/scale"] = 1 + normal(HIDDEN)
            arrays[f"{block}/{norm}/bias"] = normal(HIDDEN)
        attention = f"{block}/MultiHeadDotProductAttention_1"
        for name in ("query", "key", "value"):
            arrays[f"{attention}/{name}/kernel"] = normal(HIDDEN, HEADS, head_dim)
            arrays[f"{attention}/{name}/bias"] = normal(HEADS, head_dim)
        arrays[f"{attention}/out/kernel"] = normal(HEADS, head_dim, HIDDEN)
        arrays[f"{attention}/out/bias"] = normal(HIDDEN)
        arrays[f"{block}/MlpBlock_3/Dense_0/kernel"] = normal(HIDDEN, MLP)
        arrays[f"{block}/MlpBlock_3/Dense_0/bias"] = normal(MLP)
        arrays[f"{block}/MlpBlock_3/Dense_1/kernel"] = normal(MLP, HIDDEN)
        arrays[f"{block}/MlpBlock_3/Dense_1/bias"] = normal(HIDDEN)
    width = HIDDEN
    if pre_logits:
        arrays["pre_logits/kernel"] = normal(HIDDEN, pre_logits)
        arrays["pre_logits/bias"] = normal(pre_logits)
        width = pre_logits
    if head:
        arrays["head/kernel"] = normal(width, CLASSES, scale=1.0)
        arrays["head/bias"] = normal(CLASSES)
    return arrays


def _layer_norm(x, p):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]


def _params(arrays, prefix):
    return {k[len(prefix) + 1 :]: v for k, v in arrays.items() if k.startswith(prefix + "/")}


def reference_forward(arrays, images):
    """The original ViT's forward pass in float64 NumPy (exact-erf GELU, as Keras uses)."""
    a = {k: v.astype("float64") for k, v in arrays.items()}
    x = images.astype("float64") / 127.5 - 1.0
    n, h, w, c = x.shape
    patches = x.reshape(n, h // PATCH, PATCH, w // PATCH, PATCH, c).transpose(0, 1, 3, 2, 4, 5)
    tokens = (
        patches.reshape(n, -1, PATCH * PATCH * c) @ a["embedding/kernel"].reshape(-1, HIDDEN)
        + a["embedding/bias"]
    )
    if "cls" in a:
        tokens = np.concatenate([np.repeat(a["cls"], n, axis=0), tokens], axis=1)
    x = tokens + a["Transformer/posembed_input/pos_embedding"]
    i = 0
    while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in a:
        block = _params(a, f"Transformer/encoderblock_{i}")
        y = _layer_norm(x, _params(block, "LayerNorm_0"))
        att = _params(block, "MultiHeadDotProductAttention_1")
        q, k, v = (
            np.einsum("nsd,dhk->nshk", y, att[f"{m}/kernel"]) + att[f"{m}/bias"]
            for m in ("query", "key", "value")
        )
        logits = np.einsum("nqhk,nshk->nhqs", q, k) / np.sqrt(q.shape[-1])
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        y = np.einsum("nhqs,nshk->nqhk", weights, v)
        x = x + np.einsum("nqhk,hkd->nqd", y, att["out/kernel"]) + att["out/bias"]
        y = _layer_norm(x, _params(block, "LayerNorm_2"))
        y = y @ block["MlpBlock_3/Dense_0/kernel"] + block["MlpBlock_3/Dense_0/bias"]
        y = 0.5 * y * (1 + erf(y / np.sqrt(2)))
        x = x + y @ block["MlpBlock_3/Dense_1/kernel"] + block["MlpBlock_3/Dense_1/bias"]
        i += 1
    x = _layer_norm(x, _params(a, "Transformer/encoder_norm"))
    x = x[:, 0] if "cls" in a else x.mean(axis=1)
    if "pre_logits/kernel" in a:
        x = np.tanh(x @ a["pre_logits/kernel"] + a["pre_logits/bias"])
    logits = x @ a["head/kernel"] + a["head/bias"]
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    return probabilities / probabilities.sum(-1, keepdims=True)


def _save(tmp_path, arrays, name="ViT-custom.npz"):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "options", [{}, {"pre_logits": 16}, {"cls": False}], ids=["token", "pre_logits", "gap"]
)
def test_npz_matches_numpy_reference(tmp_path, options):
    arrays = make_checkpoint(np.random.default_rng(0), **options)
    model = load_weights(_save(tmp_path, arrays))
    assert model.input_shape == (None, GRID * PATCH, GRID * PATCH, 3)
    x = random_images(3, GRID * PATCH, GRID * PATCH)
    assert_close(model(x), reference_forward(arrays, x))
    assert float(np.abs(keras.ops.convert_to_numpy(model(x))).max()) > 1.5 / CLASSES


def test_other_grid_is_resampled_as_resize_vit(tmp_path):
    path = _save(tmp_path, make_checkpoint(np.random.default_rng(1)))
    native = load_vit_npz(path)
    larger = load_vit_npz(path, image_size=3 * PATCH)
    assert larger.input_shape == (None, 3 * PATCH, 3 * PATCH, 3)
    x = random_images(2, 3 * PATCH, 3 * PATCH)
    assert_close(larger(x), kr.resize_vit(native, 3 * PATCH)(x), tolerance=1e-6)


def test_checkpoint_without_head_fills_a_feature_extractor(tmp_path):
    path = _save(tmp_path, make_checkpoint(np.random.default_rng(2), head=False))
    model = load_vit_npz(path)
    assert "predictions" not in [layer.name for layer in model.layers]
    assert model.output_shape == (None, HIDDEN)


def test_checkpoint_of_another_architecture_names_layer_and_shapes(tmp_path):
    path = _save(tmp_path, make_checkpoint(np.random.default_rng(3)))
    ours = kr.build_vit("Ti/8", image_size=GRID * PATCH, num_classes=CLASSES)
    with pytest.raises(ValueError, match=r"'patch_embedding'.*\(8, 8, 3, 192\).*\(8, 8, 3, 32\)"):
        load_vit_npz(path, model=ours)


@pytest.mark.parametrize(
    "content, words",
    [
        ({"a": np.zeros(2)}, ["not an original ViT checkpoint", "embedding/kernel"]),
        (None, [".npz"]),
    ],
)
def test_files_that_are_not_vit_checkpoints(tmp_path, content, words):
    path = tmp_path / "other.npz"
    if content is None:
        path.write_bytes(b"not a zip")
    else:
        np.savez(path, **content)
    with pytest.raises(ValueError) as info:
        load_vit_npz(path)
    for word in words:
        assert word in str(info.value)


def _without(*keys):
    return lambda arrays: {k: v for k, v in arrays.items() if k not in keys}


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            _without("Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel"),
            r"'ViT-custom\.npz' is not a complete.*lacks \['Transformer/encoderblock_1/MlpBl",
        ),
        (_without("embedding/bias"), r"not a complete.*lacks \['embedding/bias'\]"),
        (_without("head/bias"), r"not a complete.*lacks \['head/bias'\]"),
        (
            _without(*[f"Transformer/encoderblock_0/LayerNorm_0/{p}" for p in ("scale", "bias")]),
            r"not a complete.*encoderblock_0/LayerNorm_0/bias",
        ),
    ],
    ids=["block_kernel", "embedding_bias", "head_bias", "block0_norm"],
)
def test_an_incomplete_checkpoint_names_the_missing_arrays(tmp_path, edit, message):
    path = _save(tmp_path, edit(make_checkpoint(np.random.default_rng(4))))
    with pytest.raises(ValueError, match=message):
        load_vit_npz(path)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"model": "x"}, "model of type str is not valid; pass a keras.Model"),
        ({"model": "resnet"}, r"model='resnet20' is a ResNet, but an original ViT checkpoint"),
        ({"model": "vit", "image_size": 64}, "image_size=64 cannot be combined with model="),
        (
            {"model": "vit", "classifier_activation": None, "preprocessing": "imagenet"},
            "classifier_activation=None, preprocessing='imagenet' cannot be combined with model=",
        ),
    ],
    ids=["str", "resnet", "image_size", "head_and_preprocessing"],
)
def test_a_wrong_model_or_ignored_build_arguments_are_refused(tmp_path, arguments, message):
    path = _save(tmp_path, make_checkpoint(np.random.default_rng(5)))
    models = {
        "resnet": lambda: kr.create_model("resnet20"),
        "vit": lambda: kr.build_vit("Ti/8", image_size=GRID * PATCH, num_classes=CLASSES),
    }
    model = arguments["model"]
    arguments = {**arguments, "model": models[model]() if model in models else model}
    with pytest.raises(ValueError, match=message):
        load_vit_npz(path, **arguments)


@pytest.mark.parametrize(
    "path, message",
    [
        (None, r"path=None is not a path; pass a str or pathlib\.Path \(got NoneType\)"),
        (3, r"path=3 is not a path"),
        ("empty.npz", r"path='empty\.npz' is not a readable \.npz archive: the file is empty"),
    ],
    ids=["none", "int", "empty"],
)
def test_bad_paths_are_named(tmp_path, monkeypatch, path, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=message):
        load_vit_npz(path)
