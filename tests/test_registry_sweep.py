"""One sweep over the registry, as timm's tests/test_models.py does for every model.

Every name of `kr.list_models()` has its documented parameter count (one table, below; the
models are built without allocating their weights). Every name light enough for two CPU cores
is also built on a small input and checked: finite probabilities, a non-zero gradient for every
trainable weight from one training-mode step of a cross-entropy loss, `kr.replace_head` and a
`.keras` round trip with identical outputs.
"""

import math

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.base.backend import gradient
from keras_resvit.models.registry import get_spec
from tests.conftest import assert_save_load_identical, random_images

# Documented parameter counts at each name's registry defaults (1000 classes at 224, the CIFAR
# nets 10 classes at 32), trainable weights. Integers are exact; floats are published sizes in
# millions, compared after rounding to one decimal.
PARAMS = {
    # He et al. (2015) / torchvision (reference/papers.md). The "v1" names stride the bottleneck
    # on its first 1x1 instead of its 3x3: the same parameters.
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnet50v1": 25_557_032,
    "resnet101v1": 44_549_160,
    "resnet152v1": 60_192_808,
    # ResNet-D (timm's resnet{depth}d): the ResNet's count and the deep stem's 19,232 more
    # weights (three 3x3 convs of 3->32->32->64, 28,512, and two 32-channel BatchNorms, 128,
    # for the 7x7 conv's 9,408); timm publishes 11.71, 21.82, 25.58, 44.57 and 60.21 million
    # (results/results-imagenet.csv; tests/models/test_resnet_options.py compares).
    "resnet18d": 11_708_744,
    "resnet34d": 21_816_904,
    "resnet50d": 25_576_264,
    "resnet101d": 44_568_392,
    "resnet152d": 60_212_040,
    # CIFAR-10, option A (Table 6 of the paper; reference/papers.md). Option A's shortcuts have
    # no parameters, so the plain twins count the same.
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "resnet1202": 19_421_274,
    "plain20": 269_722,
    "plain32": 464_154,
    "plain44": 658_586,
    "plain56": 853_018,
    "plain110": 1_727_962,
    # Pre-activation ResNet-50 and its BiT twin (GroupNorm has BatchNorm's two trainable vectors):
    # tests/models/test_resnet.py, test_bit_uses_groupnorm_and_weight_standardization.
    "resnet50v2": 25_549_352,
    "bit_r50x1": 25_549_352,
    # The ViT paper's scaling-study ResNets, BiT-style, that timm does not have: bit_parameters()
    # of tests/models/test_resnet.py, the formula that gives timm's sizes of the others.
    "bit_r50x2": 97_988_712,
    "bit_r152x1": 60_185_128,
    "bit_r200x3": 568_633_000,
    # timm's published sizes (resnetv2_{depth}x{width}_bit model cards; test_resnet.py).
    "bit_r50x3": 217.3,
    "bit_r101x1": 44.5,
    "bit_r101x3": 387.9,
    "bit_r152x2": 236.3,
    "bit_r152x4": 936.5,
    # SE-ResNet-50, r = 16: the SE paper's 28.09M (guides/squeeze_excitation.md, test_resnet.py).
    "se_resnet50": 28_088_024,
    # timm / big_vision, a 1000-way linear head at 224 (reference/papers.md).
    "vit_ti16": 5_717_416,
    "vit_s16": 22_050_664,
    "vit_s32": 22_878_952,
    "vit_b8": 86_576_872,
    "vit_b16": 86_567_656,
    "vit_b32": 88_224_232,
    "vit_l16": 304_326_632,
    "vit_l32": 306_535_400,
    "vit_h14": 632_045_800,
    # Derived from ResNet-50's and ViT-B/16's counts in tests/models/test_hybrid.py.
    "r50_vit_b16": 98_659_112,
    "r50_vit_b32": 110_945_832,
    # Seed baselines (reference/papers.md). AlexNet as published (Krizhevsky et al. 2012,
    # Figure 2, at 227): conv1 34,944 + conv2 307,456 (two groups) + conv3 885,120 + conv4
    # 663,936 + conv5 442,624 (two groups) + fc 37,752,832 + 16,781,312 + 4,097,000 =
    # 60,965,224 (the paper's "60 million parameters").
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "alexnet": 61_100_840,
    "alexnet_paper": 60_965_224,
}
# keras.applications' published sizes count every weight, BatchNorm statistics included:
# EfficientNetV2-S 21,612,360 (README; test_baselines.py compares with keras.applications), -M
# 54.4M and -L 119.0M (the table of keras.io/api/applications).
ALL_WEIGHTS = {"efficientnetv2_s": 21_612_360, "efficientnetv2_m": 54.4, "efficientnetv2_l": 119.0}
# No published count to check: the plain ImageNet nets (the paper gives none, and the registry's
# resnet18/34 have option-B projections that plain18/34 lack), the pre-activation
# ResNet-101/152 and SE-ResNet-101.
UNDOCUMENTED = {"plain18", "plain34", "resnet101v2", "resnet152v2", "se_resnet101"}

# Names left to the parameter count: checking one on the small input costs 10-80 s on two CPU
# cores (on JAX mostly compiling its gradient step), and the file is to stay within about three
# minutes per backend. They are deeper or wider builds of checked names' code paths:
# resnet34/plain34 and the 101/152-layer ResNets stack the blocks of resnet18/plain18,
# resnet50/50v1/50v2 and se_resnet50; the ResNet-D names beyond resnet18d stack its stem and
# shortcuts on those blocks; the BiT models deepen and widen bit_r50x1 (200M-940M
# weights from x3 on); vit_s16, ViT-B, ViT-L (300M) and ViT-H (632M) deepen and widen vit_ti16
# and vit_s32; vgg19 deepens vgg16; alexnet (61M weights at the 224 px it needs) is
# alexnet_paper in one tower. resnet1202 (1,202 layers) has its own slow forward and round-trip
# test in tests/models/test_resnet.py. Checked here on no name: the hybrids (R50+ViT-B, 100M
# weights; tests/models/test_hybrid.py builds small ones) and EfficientNetV2 (keras.applications'
# model, 500-1,000 layers; tests/models/test_baselines.py runs it on 32 px).
COUNT_ONLY = {
    "alexnet",
    "bit_r50x2",
    "bit_r50x3",
    "bit_r101x1",
    "bit_r101x3",
    "bit_r152x1",
    "bit_r152x2",
    "bit_r152x4",
    "bit_r200x3",
    "efficientnetv2_s",
    "efficientnetv2_m",
    "efficientnetv2_l",
    "plain34",
    "r50_vit_b16",
    "r50_vit_b32",
    "resnet34",
    "resnet34d",
    "resnet50d",
    "resnet101",
    "resnet101d",
    "resnet101v1",
    "resnet101v2",
    "resnet152",
    "resnet152v1",
    "resnet152v2",
    "resnet152d",
    "resnet1202",
    "se_resnet101",
    "vgg19",
    "vit_s16",
    "vit_b8",
    "vit_b16",
    "vit_b32",
    "vit_l16",
    "vit_l32",
    "vit_h14",
}
# Checked on the small input with the slow tests only (10-30 s each on JAX).
SLOW = {"bit_r50x1", "se_resnet50", "vgg16"}
NAMES = kr.list_models()
CLASSES = 5
# XLA's lowest optimization level for the one compiled gradient step of a model on JAX: on CPU
# compiling is most of the cost, three to six times less than at the default level.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def cifar(name):
    return get_spec(name).kwargs.get("stem") == "cifar"


def test_every_name_has_a_count_or_a_reason_and_its_checks():
    documented = PARAMS.keys() | ALL_WEIGHTS.keys()
    assert not PARAMS.keys() & ALL_WEIGHTS.keys()
    assert not documented & UNDOCUMENTED
    assert sorted(documented | UNDOCUMENTED) == NAMES
    assert (COUNT_ONLY | SLOW) - set(NAMES) == set()
    assert not COUNT_ONLY & SLOW


@pytest.mark.parametrize("name", sorted(set(NAMES) - UNDOCUMENTED))
def test_parameter_count_is_the_documented_count(name):
    # Variables created in a stateless scope that does not initialize them have shapes and no
    # values: counting bit_r152x4 (936M weights) allocates nothing. The conftest fixture's
    # clear_session then drops them.
    with keras.StatelessScope(initialize_variables=False):
        model = kr.create_model(name)
        trainable = kr.count_params(model)
        every = kr.count_params(model, trainable_only=False)
    assert model.name == name
    assert model.output_shape == (None, 10 if cifar(name) else 1000)
    if cifar(name):
        assert model.input_shape == (None, 32, 32, 3)
    if name in ALL_WEIGHTS:
        count, expected = every, ALL_WEIGHTS[name]
    else:
        count, expected = trainable, PARAMS[name]
    if isinstance(expected, float):
        assert round(count / 1e6, 1) == expected, count
    else:
        assert count == expected


def small_model(name):
    """`name`'s registry architecture on a small input, with a 5-way head."""
    spec = get_spec(name)
    if spec.family in ("vit", "hybrid_vit"):
        # A 2x2 grid of patches (for the hybrids, of the backbone's feature map).
        patch = int(spec.kwargs["variant"].split("/")[1])
        return kr.create_model(name, image_size=2 * patch, num_classes=CLASSES)
    # AlexNet's classifier needs a 6x6 map after pool5: 223 px for torchvision's layout, 67 px
    # for the paper's; the others take 32 px.
    size = {"alexnet": 224, "alexnet_paper": 67}.get(name, 32)
    return kr.create_model(name, input_shape=(size, size, 3), num_classes=CLASSES)


def perturb_zero_weights(model, seed=0):
    """Zero-initialized weights (the ViT's classifier and class token, biases) get small random
    values: a zero classifier kernel would block every gradient behind it."""
    rng = np.random.default_rng(seed)
    for weight in model.trainable_variables:
        if not np.any(keras.ops.convert_to_numpy(weight.value)):
            weight.assign(rng.normal(0, 0.02, weight.shape).astype("float32"))


def weight_gradients(model, x, y):
    """{weight path: gradient} of the mean cross-entropy of one training-mode forward pass, by
    the backend's autodiff (the package's `gradient`, on the weights as one flat vector)."""
    weights = model.trainable_variables
    shapes = [tuple(w.shape) for w in weights]
    splits = np.cumsum([math.prod(s) for s in shapes])[:-1].tolist()
    flat = np.concatenate([keras.ops.convert_to_numpy(w.value).ravel() for w in weights])
    fixed = [v.value for v in model.non_trainable_variables]

    def loss(vector):
        parts = keras.ops.split(vector, splits)
        values = [keras.ops.reshape(p, s) for p, s in zip(parts, shapes, strict=True)]
        probs, _ = model.stateless_call(values, fixed, x, training=True)
        return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, probs))

    compute = lambda vector: gradient(loss, vector)  # noqa: E731
    if keras.backend.backend() == "jax" and not cifar(model.name):
        import jax

        # One compiled program: op by op, JAX compiles each operation of a model on its own.
        # The CIFAR nets stay op by op: their depths share every operation, compiled once.
        compute = jax.jit(compute).lower(flat).compile(compiler_options=FAST_COMPILE)
    grads = np.split(keras.ops.convert_to_numpy(compute(flat)), splits)
    return {w.path: g for w, g in zip(weights, grads, strict=True)}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
        for n in sorted(set(NAMES) - COUNT_ONLY)
    ],
)
def test_small_input_forward_gradients_head_and_round_trip(name, tmp_path):
    model = small_model(name)
    assert model.name == name and model.output_shape == (None, CLASSES)
    size = model.input_shape[1]
    x = random_images(2, size, size)
    perturb_zero_weights(model)

    probs = keras.ops.convert_to_numpy(model(x, training=False))
    assert probs.shape == (2, CLASSES) and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-5)

    # Eight images: of two, BatchNorm in training mode maps a 1x1 feature map (the last stage of
    # a ResNet-50 at 32 px) to +-1 whatever its input; what passes back is rounding error.
    grads = weight_gradients(model, random_images(8, size, size, seed=2), np.arange(8) % CLASSES)
    assert all(np.isfinite(g).all() for g in grads.values())
    no_gradient = [path for path, g in grads.items() if not np.any(g)]
    assert not no_gradient, f"{len(no_gradient)} of {len(grads)} weights: {no_gradient[:5]}"

    head = kr.replace_head(model, 3)
    assert head.output_shape == (None, 3)
    new = keras.ops.convert_to_numpy(head(x, training=False))
    assert new.shape == (2, 3) and np.isfinite(new).all()

    # Move BatchNorm statistics off their initial values so that the round trip checks them.
    model(random_images(2, size, size, seed=1), training=True)
    assert_save_load_identical(model, tmp_path, x)
