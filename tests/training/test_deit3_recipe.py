"""DeiT III (Touvron et al. 2022): 3-Augment, torchvision's colour jitter, the `deit3` and
`deit3_21k` recipes with the values of the reference's training commands."""

import collections
import itertools

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.data.augmentation import MIXING, get_augmentation
from keras_resvit.layers.three_augment import ColorJitter, IsotropicGaussianBlur, ThreeAugment
from keras_resvit.training.recipes import get_recipe, recipe_model_options

tf = pytest.importorskip("tensorflow")  # the presets run inside tf.data on every backend


def _image(seed=0, size=24):
    # Whole numbers, as decoded images are: solarization's threshold then falls between them.
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3)).astype("float32")


def _numpy_blur(image, sigma, size=13):
    """Separable Gaussian blur with reflected borders (NumPy reference)."""
    taps = np.arange(size) - size // 2
    kernel = np.exp(-(taps**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    pad = size // 2
    padded = np.pad(image, [(pad, pad), (pad, pad), (0, 0)], mode="reflect")
    rows = sum(k * padded[i : i + image.shape[0]] for i, k in enumerate(kernel))
    return sum(k * rows[:, i : i + image.shape[1]] for i, k in enumerate(kernel))


def _numpy_ops(image, sigma):
    gray = image @ np.array([0.2989, 0.587, 0.114])
    return {
        "random_grayscale": np.repeat(gray[..., None], 3, axis=-1),
        "solarization": np.where(image > 127.5, 255.0 - image, image),
        "gaussian_blur": _numpy_blur(image, sigma),
    }


def test_three_augment_applies_one_op_of_three_each_equal_to_numpy():
    layer = ThreeAugment(seed=0)
    image = _image()
    for index, name in enumerate(ThreeAugment._AUGMENT_LAYERS):
        transforms = {
            op: getattr(layer, op).get_random_transformation(image[None], seed=1)
            for op in ThreeAugment._AUGMENT_LAYERS
        }
        sigma = float(keras.ops.convert_to_numpy(transforms["gaussian_blur"]["blur_factor"])[0])
        transformation = {"transforms": transforms, "layer_idxes": np.array([index])}
        got = keras.ops.convert_to_numpy(layer.transform_images(image[None], transformation))
        want = _numpy_ops(image, sigma)[name]
        np.testing.assert_allclose(got[0], want, atol=0.05, err_msg=name)
        assert 0.1 <= sigma <= 2.0 + 1e-5


def test_the_blur_is_isotropic_and_reflects_the_border():
    layer = IsotropicGaussianBlur(factor=(1.0, 1.0), kernel_size=13, sigma=(0.1, 2.0), seed=3)
    for seed in range(3):
        transform = layer.get_random_transformation(np.zeros((1, 8, 8, 3)), seed=seed)
        sigma_y, sigma_x = keras.ops.convert_to_numpy(transform["blur_factor"])
        assert sigma_y == sigma_x
    flat = np.full((1, 16, 16, 3), 200.0, "float32")  # a flat image stays flat to its corners
    out = keras.ops.convert_to_numpy(layer(flat, training=True))
    np.testing.assert_allclose(out, flat, atol=1e-3)
    # Standard deviations above Keras' [0, 1] are drawn from the range given, and reload.
    wide = IsotropicGaussianBlur.from_config(IsotropicGaussianBlur(sigma=(1.5, 3.0)).get_config())
    assert wide.sigma == (1.5, 3.0)
    for seed in range(3):
        transform = wide.get_random_transformation(np.zeros((1, 8, 8, 3)), seed=seed)
        assert 1.5 <= float(keras.ops.convert_to_numpy(transform["blur_factor"])[0]) <= 3.0 + 1e-5


def test_each_op_is_chosen_a_third_of_the_time_inside_tf_data():
    layer = ThreeAugment(seed=7)
    image = _image(size=16)
    dataset = tf.data.Dataset.from_tensors(image).repeat(240).map(layer)
    counts = {"gray": 0, "solarized": 0, "blurred": 0}
    for out in dataset.as_numpy_iterator():
        if np.allclose(out[..., 0], out[..., 1]) and np.allclose(out[..., 1], out[..., 2]):
            counts["gray"] += 1
        elif np.allclose(out, np.where(image > 127.5, 255 - image, image)):
            counts["solarized"] += 1
        else:
            counts["blurred"] += 1
    assert all(50 <= count <= 110 for count in counts.values()), counts


def test_color_jitter_matches_torchvision_formulas_in_each_order():
    layer = ColorJitter(0.3, 0.3, 0.3)
    image = _image(seed=1)[None]
    factors = {"brightness": 1.2, "contrast": 0.8, "saturation": 1.25}
    gray = lambda v: (v @ np.array([0.299, 0.587, 0.114]))[..., None]  # noqa: E731
    steps = (
        lambda x: np.clip(x * 1.2, 0, 255),
        lambda x: np.clip(0.8 * x + 0.2 * gray(x).mean(), 0, 255),
        lambda x: np.clip(1.25 * x + (1 - 1.25) * gray(x), 0, 255),
    )
    outputs = []
    for order in itertools.permutations(range(3)):  # torchvision's random order
        transformation = {k: np.full((1, 1, 1, 1), v, "float32") for k, v in factors.items()}
        transformation["order"] = np.array([order])
        got = keras.ops.convert_to_numpy(layer.transform_images(image, transformation))
        x = image
        for step in order:
            x = steps[step](x)
        np.testing.assert_allclose(got, x, atol=1e-3)
        outputs.append(got)
    assert min(np.abs(a - b).max() for a, b in itertools.combinations(outputs, 2)) > 0.5
    drawn = layer.get_random_transformation(np.zeros((600, 4, 4, 3)), seed=0)
    for name in factors:
        values = keras.ops.convert_to_numpy(drawn[name])
        assert values.min() >= 0.7 and values.max() <= 1.3 and values.std() > 0.1
    orders = [tuple(o) for o in keras.ops.convert_to_numpy(drawn["order"]).tolist()]
    counts = collections.Counter(orders)
    assert set(counts) == set(itertools.permutations(range(3)))
    assert all(60 <= count <= 140 for count in counts.values()), counts


@pytest.mark.parametrize("preset", ["deit3", "deit3_src"])
def test_presets_run_in_tf_data_with_shape_dtype_and_range(preset):
    layer, mixing = get_augmentation(preset, 32, seed=0)
    images = np.stack([_image(seed, size=40) for seed in range(4)])
    dataset = tf.data.Dataset.from_tensor_slices(images).map(layer)
    for out in dataset.as_numpy_iterator():
        assert out.shape == (32, 32, 3) and out.dtype == np.float32
        assert out.min() >= 0 and out.max() <= 255
    assert mixing == MIXING[preset]
    restored = keras.layers.deserialize(keras.layers.serialize(ThreeAugment(seed=2)))
    assert isinstance(restored, ThreeAugment) and restored.num_ops == 1


def test_recipes_hold_the_reference_commands_values():
    # README_revenge.md, ViT-B ImageNet-1k: --opt fusedlamb --lr 3e-3 (unscaled) --batch 256 x 8
    # --epochs 800 --weight-decay 0.05 --sched cosine --warmup-epochs 5 --smoothing 0.0
    # --mixup .8 --cutmix 1.0 --drop-path 0.2 --bce-loss --repeated-aug --ThreeAugment
    # --color-jitter 0.3 --input-size 192; LayerScale init 1e-4 (models_v2).
    one_k = get_recipe("deit3")
    assert (one_k.optimizer, one_k.learning_rate, one_k.batch_size) == ("lamb", 3e-3, 2048)
    assert (one_k.epochs, one_k.schedule, one_k.warmup * one_k.epochs) == (800, "cosine", 5)
    assert (one_k.weight_decay, one_k.label_smoothing, one_k.global_clipnorm) == (0.05, 0, None)
    assert (one_k.mixup, one_k.cutmix, one_k.drop_path) == (0.8, 1.0, 0.2)
    assert (one_k.loss, one_k.repeated_augmentation, one_k.augment) == (
        "binary_cross_entropy", 3, "deit3",
    )  # fmt: skip
    assert (one_k.image_size, one_k.layer_scale_init) == (192, 1e-4)
    # ImageNet-21k: --lr 0.001 --epochs 240 --weight-decay 0.02 --smoothing 0.1 --mixup 0
    # --cutmix 1.0 --drop-path 0.1 --no-repeated-aug --src, softmax cross-entropy.
    in21k = get_recipe("deit3_21k")
    assert (in21k.learning_rate, in21k.epochs, in21k.weight_decay) == (1e-3, 240, 0.02)
    assert (in21k.label_smoothing, in21k.mixup, in21k.cutmix) == (0.1, 0.0, 1.0)
    assert (in21k.loss, in21k.repeated_augmentation, in21k.augment) == (
        "cross_entropy", 1, "deit3_src",
    )  # fmt: skip


def test_a_vit_built_by_name_gets_layer_scale_and_logits():
    options = recipe_model_options("vit_ti16", "deit3")
    assert options == {"drop_path": 0.2, "layer_scale_init": 1e-4, "classifier_activation": None}
    model = kr.create_model("vit_ti16", image_size=32, num_classes=3, num_layers=2, **options)
    scales = [w for w in model.weights if "layer_scale" in w.path]
    assert len(scales) == 4  # attention and MLP branch of each block
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scales[0]), 1e-4)
    assert model.get_layer("predictions").activation is keras.activations.linear
