"""BiT `.npz` checkpoints (google-research/big_transfer) load into our BiT ResNets and match a
NumPy forward pass of BiT's architecture written from big_transfer's `bit_jax/models.py`."""

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.weights import catalog, load_bit_npz, load_weights, weights_format
from tests.conftest import random_images
from tests.weights.helpers import assert_close
from tests.weights.test_named_weights import _publish, served  # noqa: F401 (a fixture)
from tests.weights.weights_server import mirror_path

pytestmark = pytest.mark.one_backend(
    "tensorflow",
    reason="a NumPy conversion; the converted model's computation is tested on both backends in "
    "tests/models",
)

# A tiny BiT: ResNet-50's units at half width (32..256 filters: every GroupNorm keeps BiT's 32
# groups), on 40 px images (odd maps after stage 2, so padding mistakes show).
UNITS, WIDTH, SIZE, CLASSES = (3, 4, 6, 3), 0.5, 40, 5
SMALL_BIT = {"width": WIDTH, "input_shape": (SIZE, SIZE, 3)}
ROOT = "resnet/root_block/standardized_conv2d/kernel"


def make_checkpoint(rng, *, units=UNITS, width=WIDTH, classes=CLASSES, head=True):
    """Random arrays in big_transfer's `.npz` key layout and shapes (bit_pytorch/models.py)."""

    def normal(*shape, loc=0.0, scale=0.2):
        return rng.normal(loc, scale, shape).astype("float32")

    def group_norm(prefix, channels):
        arrays[f"{prefix}/group_norm/gamma"] = 1 + normal(channels)
        arrays[f"{prefix}/group_norm/beta"] = normal(channels)

    root = int(64 * width)
    # Kernels with a mean: weight standardization must remove it.
    arrays = {ROOT: normal(7, 7, 3, root, loc=0.05)}
    channels = root
    for block, count in enumerate(units, start=1):
        mid = root * 2 ** (block - 1)
        for unit in range(1, count + 1):
            prefix = f"resnet/block{block}/unit{unit:02d}"
            shapes = {"a": (1, 1, channels, mid), "b": (3, 3, mid, mid), "c": (1, 1, mid, 4 * mid)}
            for part, shape in shapes.items():
                group_norm(f"{prefix}/{part}", shape[2])
                arrays[f"{prefix}/{part}/standardized_conv2d/kernel"] = normal(*shape, loc=0.05)
            if unit == 1:
                arrays[f"{prefix}/a/proj/standardized_conv2d/kernel"] = normal(
                    1, 1, channels, 4 * mid, loc=-0.05
                )
            channels = 4 * mid
    group_norm("resnet", channels)
    if head:
        arrays["resnet/head/conv2d/kernel"] = normal(1, 1, channels, classes, scale=0.1)
        arrays["resnet/head/conv2d/bias"] = normal(classes)
    return arrays


def _conv(x, kernel, stride=1):
    """BiT's StdConv2d: the kernel standardized (epsilon 1e-10), BiT's fixed padding."""
    mean, var = kernel.mean(axis=(0, 1, 2)), kernel.var(axis=(0, 1, 2))
    kernel = (kernel - mean) / np.sqrt(var + 1e-10)
    k = kernel.shape[0]
    x = np.pad(x, ((0, 0), ((k - 1) // 2, k // 2), ((k - 1) // 2, k // 2), (0, 0)))
    rows, cols = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
    out = 0.0
    for i in range(k):
        for j in range(k):
            window = x[
                :,
                i : i + stride * (rows - 1) + 1 : stride,
                j : j + stride * (cols - 1) + 1 : stride,
            ]
            out = out + np.tensordot(window, kernel[i, j], axes=([3], [0]))
    return out


def _group_norm_relu(x, a, prefix, groups=32):
    n, h, w, c = x.shape
    y = x.reshape(n, h, w, groups, c // groups)
    y = (y - y.mean(axis=(1, 2, 4), keepdims=True)) / np.sqrt(
        y.var(axis=(1, 2, 4), keepdims=True) + 1e-5
    )
    y = y.reshape(x.shape) * a[f"{prefix}/group_norm/gamma"] + a[f"{prefix}/group_norm/beta"]
    return np.maximum(y, 0.0)


def reference_logits(arrays, images):
    """BiT's ResNetV2 forward pass in float64 NumPy, on [-1, 1] inputs."""
    a = {k: v.astype("float64") for k, v in arrays.items()}
    x = _conv(images.astype("float64") / 127.5 - 1.0, a[ROOT], stride=2)
    # Root pooling: zero padding 1, then a 3x3/2 max pool (ConstantPad2d + MaxPool2d).
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    rows, cols = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
    x = np.max(
        [
            x[:, i : i + 2 * rows - 1 : 2, j : j + 2 * cols - 1 : 2]
            for i in range(3)
            for j in range(3)
        ],
        axis=0,
    )
    block = 1
    while f"resnet/block{block}/unit01/a/group_norm/gamma" in a:
        unit = 1
        while f"resnet/block{block}/unit{unit:02d}/a/group_norm/gamma" in a:
            p = f"resnet/block{block}/unit{unit:02d}"
            stride = 2 if block > 1 and unit == 1 else 1  # on the 3x3 conv and the projection
            out = _group_norm_relu(x, a, f"{p}/a")
            proj = a.get(f"{p}/a/proj/standardized_conv2d/kernel")
            shortcut = x if proj is None else _conv(out, proj, stride)
            y = _conv(out, a[f"{p}/a/standardized_conv2d/kernel"])
            y = _conv(
                _group_norm_relu(y, a, f"{p}/b"), a[f"{p}/b/standardized_conv2d/kernel"], stride
            )
            y = _conv(_group_norm_relu(y, a, f"{p}/c"), a[f"{p}/c/standardized_conv2d/kernel"])
            x = y + shortcut
            unit += 1
        block += 1
    x = _group_norm_relu(x, a, "resnet").mean(axis=(1, 2))
    return x @ a["resnet/head/conv2d/kernel"][0, 0] + a["resnet/head/conv2d/bias"]


def _softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _save(tmp_path, arrays, name="BiT-M-tiny.npz"):
    np.savez(tmp_path / name, **arrays)
    return tmp_path / name


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    arrays = make_checkpoint(np.random.default_rng(0))
    return arrays, _save(tmp_path_factory.mktemp("bit"), arrays)


def test_npz_matches_numpy_reference(checkpoint):
    arrays, path = checkpoint
    assert weights_format(path) == "bit_npz"
    x = random_images(2, SIZE, SIZE)
    expected = reference_logits(arrays, x)
    logits = load_bit_npz(path, input_shape=(SIZE, SIZE, 3), classifier_activation=None)
    assert logits.name == "bit_r50x0_5"
    assert_close(logits(x), expected)
    assert float(np.std(expected)) > 0.5  # logits that tell the classes apart
    probabilities = load_weights(path, input_shape=(SIZE, SIZE, 3))
    assert_close(probabilities(x), _softmax(expected))


def test_create_model_fills_the_registry_bit(checkpoint):
    arrays, path = checkpoint
    model = kr.create_model("bit_r50x1", weights=path, **SMALL_BIT)
    # The file fixes the head and BiT's [-1, 1] inputs.
    assert model.name == f"bit_r50x{WIDTH:g}".replace(".", "_")  # the width it has
    assert model.output_shape == (None, CLASSES)
    x = random_images(2, SIZE, SIZE, seed=1)
    assert_close(model(x), _softmax(reference_logits(arrays, x)))


@pytest.mark.parametrize("classes", [21843, 1000], ids=["bit_m_in21k", "ft_in1k"])
def test_21k_and_1k_heads_load(tmp_path, classes):
    arrays = make_checkpoint(np.random.default_rng(1), classes=classes)
    path = _save(tmp_path, arrays)
    model = kr.create_model("bit_r50x1", weights=path, classifier_activation=None, **SMALL_BIT)
    assert model.output_shape == (None, classes)
    x = random_images(1, SIZE, SIZE)
    assert_close(model(x), reference_logits(arrays, x))


def test_feature_extractors_and_headless_files(tmp_path, checkpoint):
    _, path = checkpoint
    features = kr.create_model("bit_r50x1", weights=path, include_top=False, **SMALL_BIT)
    assert features.output_shape == (None, 2, 2, 1024)
    headless = _save(tmp_path, make_checkpoint(np.random.default_rng(2), head=False))
    # Alone, a headless file gives BiT's pre-logits; a registry model keeps its new head.
    assert load_bit_npz(headless, input_shape=(SIZE, SIZE, 3)).output_shape == (None, 1024)
    model = kr.create_model("bit_r50x1", weights=headless, num_classes=7, **SMALL_BIT)
    assert model.output_shape == (None, 7)


def test_numbered_conv_scopes_read_as_big_vision_reads_them(tmp_path, checkpoint):
    arrays, path = checkpoint
    key = "resnet/block2/unit01/b/standardized_conv2d/kernel"
    renamed = {
        k.replace("standardized_conv2d/", "standardized_conv2d_7/"): v for k, v in arrays.items()
    }
    assert key not in renamed
    x = random_images(1, SIZE, SIZE)
    model = load_bit_npz(_save(tmp_path, renamed), input_shape=(SIZE, SIZE, 3))
    assert_close(model(x), load_bit_npz(path, input_shape=(SIZE, SIZE, 3))(x), tolerance=1e-6)


def test_another_architecture_names_key_layer_and_shapes(tmp_path, checkpoint):
    arrays, path = checkpoint
    # bit_r50x1 is twice as wide as the checkpoint.
    with pytest.raises(
        ValueError,
        match=r"key 'resnet/root_block/standardized_conv2d/kernel' has shape \(7, 7, 3, 32\), "
        r"but our layer 'stem_conv' expects 'stem_conv/kernel' of shape \(7, 7, 3, 64\)",
    ):
        kr.create_model("bit_r50x1", weights=path, input_shape=(SIZE, SIZE, 3))
    # A unit our model lacks, and units per block that no BiT has.
    extra = {**arrays, "resnet/block1/unit04/a/standardized_conv2d/kernel": np.zeros((1, 1, 4, 4))}
    ours = kr.create_model("bit_r50x1", num_classes=CLASSES, **SMALL_BIT)
    with pytest.raises(
        ValueError, match=r"key 'resnet/block1/unit04/a/standardized_conv2d/kernel'"
    ):
        load_bit_npz(_save(tmp_path, extra), model=ours)
    with pytest.raises(ValueError, match=r"\(4, 4, 6, 3\) units; a BiT ResNet has"):
        load_bit_npz(_save(tmp_path, extra))
    # A registry model that is not a BiT.
    with pytest.raises(ValueError, match=r"holds a BiT ResNet-50x0.5.*use a bit_\* registry name"):
        kr.create_model("resnet50v2", weights=path, input_shape=(SIZE, SIZE, 3))


def test_named_bit_weights_download_and_convert(served, tmp_path):  # noqa: F811
    arrays = make_checkpoint(np.random.default_rng(3), classes=1000)
    content = _save(tmp_path, arrays).read_bytes()
    entry = _publish(
        served, content, tag="bit_test", models=("bit_r50x1",), format="bit_npz",
        image_size=480, num_classes=1000,
    )  # fmt: skip
    # ResNets take any size: the fine-tune's 480 px is informational, not a build argument.
    assert entry.build_arguments("resnet") == {"preprocessing": "inception", "num_classes": 1000}
    model = kr.create_model("bit_r50x1", weights="bit_test", **SMALL_BIT)
    x = random_images(2, SIZE, SIZE)
    assert_close(model(x), _softmax(reference_logits(arrays, x)))
    assert served.requests[mirror_path(entry.url)] == 1
    assert keras.ops.convert_to_numpy(model(x)).shape == (2, 1000)


def test_the_catalog_lists_bit_m_and_its_fine_tunes():
    for name in ("bit_r50x1", "bit_r50x3", "bit_r101x1", "bit_r101x3", "bit_r152x2", "bit_r152x4"):
        in21k, in1k = (
            catalog.weights_info(name, tag) for tag in ("bit_m_in21k", "bit_m_in21k_ft_in1k")
        )
        assert in21k.format == in1k.format == "bit_npz"
        assert (in21k.num_classes, in1k.num_classes) == (21843, 1000)
        assert in21k.url.endswith(f"/BiT-M-R{name[5:]}.npz")
        assert in1k.url.endswith(f"/BiT-M-R{name[5:]}-ILSVRC2012.npz")


@pytest.mark.parametrize(
    "model, arguments, message",
    [
        ("x", {}, "model of type str is not valid; pass a keras.Model"),
        ("vit", {}, r"model='.*' is a ViT, but a BiT checkpoint holds a ResNet's weights"),
        ("resnet", {"input_shape": (64, 64, 3)}, r"input_shape=\(64, 64, 3\) cannot be combined"),
        ("resnet", {"preprocessing": "imagenet"}, "preprocessing='imagenet' cannot be combined"),
    ],
    ids=["str", "vit", "input_shape", "preprocessing"],
)
def test_a_wrong_model_or_ignored_build_arguments_are_refused(
    checkpoint, model, arguments, message
):
    models = {
        "vit": lambda: kr.build_vit(None, image_size=16, patch_size=8, hidden_size=32,
                                    num_layers=1, num_heads=2, mlp_dim=32),
        "resnet": lambda: kr.create_model("resnet20"),
    }  # fmt: skip
    model = models[model]() if model in models else model
    with pytest.raises(ValueError, match=message):
        load_bit_npz(checkpoint[1], model=model, **arguments)
