"""RandAugment against PIL (timm's operations on uint8 images) and timm's random draws."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from keras_resvit.data import augmentation
from keras_resvit.layers import RandAugment
from keras_resvit.layers.rand_augment import IMAGENET_FILL, OPERATIONS
from tests.conftest import assert_layer_round_trip, random_images

SIGNED = ("rotate", "color", "contrast", "brightness", "sharpness", "shear_x", "shear_y",
          "translate_x", "translate_y")  # fmt: skip
GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
ENHANCE = {
    "color": ImageEnhance.Color,
    "contrast": ImageEnhance.Contrast,
    "brightness": ImageEnhance.Brightness,
    "sharpness": ImageEnhance.Sharpness,
}


def _smooth_image(height=24, width=32, seed=0):
    """A uint8 photo-like image: smooth colour gradients, some texture, a few saturated pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype("float32")
    channels = [
        128 + 90 * np.sin(x / 5 + c) * np.cos(y / 7 - c) + rng.normal(0, 6, (height, width))
        for c in range(3)
    ]
    return np.clip(np.stack(channels, -1), 0, 255).round().astype("uint8")


def _pil(image, operation, magnitude, sign=1.0, increasing=True, fill=IMAGENET_FILL):
    """timm's `auto_augment` operations, written from its level functions, with PIL."""
    img, f = Image.fromarray(image), magnitude / 10
    bilinear = Image.Resampling.BILINEAR
    affine = {
        "shear_x": (1, sign * 0.3 * f, 0, 0, 1, 0),
        "shear_y": (1, 0, 0, sign * 0.3 * f, 1, 0),
        "translate_x": (1, 0, sign * 0.45 * f * img.size[0], 0, 1, 0),
        "translate_y": (1, 0, 0, 0, 1, sign * 0.45 * f * img.size[1]),
    }
    if operation in affine:
        out = img.transform(img.size, Image.AFFINE, affine[operation], bilinear, fillcolor=fill)
    elif operation == "rotate":
        out = img.rotate(sign * 30 * f, resample=bilinear, fillcolor=fill)
    elif operation in ENHANCE:
        factor = max(0.1, 1.0 + sign * 0.9 * f) if increasing else 1.8 * f + 0.1
        out = ENHANCE[operation](img).enhance(factor)
    elif operation == "posterize":
        bits = 4 - int(4 * f) if increasing else int(4 * f)
        out = ImageOps.posterize(img, bits) if bits < 8 else img
    elif operation == "solarize":
        out = ImageOps.solarize(img, 256 - int(256 * f) if increasing else int(256 * f))
    elif operation == "solarize_add":
        add = int(110 * f)
        out = img.point([min(255, i + add) if i < 128 else i for i in range(256)] * 3)
    else:
        out = {"auto_contrast": ImageOps.autocontrast, "equalize": ImageOps.equalize,
               "invert": ImageOps.invert}[operation](img)  # fmt: skip
    return np.asarray(out).astype("float32")


def _ours(layer, image, operation, magnitude, sign=1.0):
    out = layer.apply_operation(image.astype("float32"), operation, magnitude, sign < 0)
    return keras.ops.convert_to_numpy(out)


def _inside(image, operation, magnitude, sign):
    """Pixels read from well inside the image (within one pixel of its edge PIL clamps where
    Keras blends with the fill), and pixels read from well outside it."""
    white = np.full_like(image, 255)
    reach = _pil(white, operation, magnitude, sign, fill=(0, 0, 0))[..., 0]
    reach = np.pad(reach, 2, constant_values=128)  # the output border: neither
    height, width = reach.shape[0] - 4, reach.shape[1] - 4
    interior = np.ones((height, width), bool)
    exterior = np.ones((height, width), bool)
    for dy in range(5):
        for dx in range(5):
            window = reach[dy : dy + height, dx : dx + width]
            interior &= window == 255
            exterior &= window == 0
    return interior, exterior


CASES = [
    (op, m, s) for op in OPERATIONS for m in (4, 9) for s in ((1, -1) if op in SIGNED else (1,))
]


@pytest.mark.parametrize("operation, magnitude, sign", CASES)
def test_each_operation_matches_pil(operation, magnitude, sign):
    image = _smooth_image()
    layer = RandAugment()
    ours, pil = (
        _ours(layer, image, operation, magnitude, sign),
        _pil(image, operation, magnitude, sign),
    )
    assert not np.array_equal(pil, image.astype("float32")) or operation == "auto_contrast"
    if operation in GEOMETRIC:
        interior, exterior = _inside(image, operation, magnitude, sign)
        assert interior.mean() > 0.3
        np.testing.assert_allclose(ours[interior], pil[interior], atol=1.01)
        if exterior.any():
            np.testing.assert_allclose(ours[exterior], pil[exterior], atol=0.01)
    elif operation in ENHANCE or operation == "auto_contrast":
        # PIL rounds its degenerate images and truncates blends to whole levels.
        np.testing.assert_allclose(ours, pil, atol=1.5)
        assert np.abs(ours - pil).mean() < 0.75
    else:  # look-up tables on whole levels: the same
        np.testing.assert_array_equal(ours, pil)


@pytest.mark.parametrize("operation", ["posterize", "solarize", *ENHANCE])
@pytest.mark.parametrize("magnitude", [3, 8])
def test_not_increasing_operations_match_google_definitions(operation, magnitude):
    image = _smooth_image(seed=1)
    layer = RandAugment(increasing=False)
    expected = _pil(image, operation, magnitude, increasing=False)
    np.testing.assert_allclose(_ours(layer, image, operation, magnitude), expected, atol=1.5)


def test_equalize_matches_pil_on_narrow_flat_and_uniform_channels():
    rng = np.random.default_rng(3)
    image = (
        np.stack(
            [
                rng.normal(90, 4, (20, 20)).clip(0, 255),  # narrow
                np.full((20, 20), 7.0),  # a single level: unchanged
                rng.integers(0, 256, (20, 20)),  # spread out
            ],
            -1,
        )
        .round()
        .astype("uint8")
    )
    layer = RandAugment()
    np.testing.assert_array_equal(_ours(layer, image, "equalize", 0), _pil(image, "equalize", 0))
    batch = np.stack([image, _smooth_image(20, 20)]).astype("float32")  # per image, not batch
    out = keras.ops.convert_to_numpy(layer.apply_operation(batch, "equalize", 0))
    np.testing.assert_array_equal(out[1], _pil(batch[1].astype("uint8"), "equalize", 0))
    # Inside tf.data (TensorFlow's ops whatever the backend) the same.
    ds = tf.data.Dataset.from_tensors(batch).map(lambda x: layer.apply_operation(x, "equalize", 0))
    np.testing.assert_array_equal(next(iter(ds.as_numpy_iterator())), out)


def test_draws_follow_timm():
    # One call with many steps: the operations, whether each runs, magnitudes and signs.
    layer = RandAugment(num_ops=6000, magnitude=9, magnitude_std=0.5, seed=2)
    draws = layer.get_random_transformation(np.zeros((8, 8, 3), "float32"))
    operations, magnitudes, signs = (
        keras.ops.convert_to_numpy(draws[key]) for key in ("operations", "magnitudes", "signs")
    )
    skipped = operations == len(OPERATIONS)
    assert abs(skipped.mean() - 0.5) < 0.03
    counts = np.bincount(operations[~skipped], minlength=len(OPERATIONS))
    assert counts.min() > 0.6 * counts.mean() and counts.max() < 1.4 * counts.mean()
    assert magnitudes.min() >= 0.0 and magnitudes.max() <= 10.0
    # N(9, 0.5) clipped to [0, 10]: mean 8.996, standard deviation 0.49.
    assert magnitudes.mean() == pytest.approx(9.0, abs=0.04)
    assert magnitudes.std() == pytest.approx(0.49, abs=0.04)
    assert set(np.unique(signs)) == {-1.0, 1.0} and abs((signs > 0).mean() - 0.5) < 0.03
    uniform = RandAugment(num_ops=6000, magnitude=9, magnitude_std=math.inf, prob=1.0, seed=2)
    draws = uniform.get_random_transformation(np.zeros((8, 8, 3), "float32"))
    assert (keras.ops.convert_to_numpy(draws["operations"]) < len(OPERATIONS)).all()
    values = keras.ops.convert_to_numpy(draws["magnitudes"])
    assert values.mean() == pytest.approx(4.5, abs=0.15) and values.max() <= 9.0
    fixed = RandAugment(
        num_ops=50, magnitude=15, magnitude_std=0, magnitude_max=15, increasing=False
    )
    values = fixed.get_random_transformation(np.zeros((8, 8, 3), "float32"))["magnitudes"]
    assert (keras.ops.convert_to_numpy(values) == 15.0).all()


def test_a_call_applies_the_drawn_operations_in_order():
    images = np.stack([_smooth_image(), _smooth_image(seed=4)]).astype("float32")
    layer = RandAugment(num_ops=2)
    for first, second in (("rotate", "equalize"), ("solarize_add", "shear_y"), ("invert", None)):
        chosen = [OPERATIONS.index(first), OPERATIONS.index(second) if second else len(OPERATIONS)]
        draws = {
            "operations": keras.ops.convert_to_tensor(chosen, "int32"),
            "magnitudes": keras.ops.convert_to_tensor([6.5, 8.0]),
            "signs": keras.ops.convert_to_tensor([-1.0, 1.0]),
        }
        expected = layer.apply_operation(images, first, 6.5, negate=True)
        if second:
            expected = layer.apply_operation(expected, second, 8.0)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(layer.transform_images(images, draws)),
            keras.ops.convert_to_numpy(expected),
            atol=1e-4,
        )


def test_value_range_and_channels_first_give_the_same_images():
    image = _smooth_image().astype("float32")[None]
    for operation in ("rotate", "equalize", "sharpness", "posterize"):
        expected = keras.ops.convert_to_numpy(RandAugment().apply_operation(image, operation, 7))
        unit = RandAugment(value_range=(0, 1)).apply_operation(image / 255, operation, 7)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(unit) * 255, expected, atol=1e-3)
        first = RandAugment(data_format="channels_first").apply_operation(
            np.transpose(image, (0, 3, 1, 2)), operation, 7
        )
        np.testing.assert_allclose(
            np.transpose(keras.ops.convert_to_numpy(first), (0, 2, 3, 1)), expected, atol=1e-3
        )


def test_in_tf_data_each_image_draws_its_own_and_a_seed_repeats_them():
    images = np.repeat(_smooth_image()[None].astype("float32"), 8, axis=0)

    def outputs():
        layer = RandAugment(num_ops=2, magnitude=9, seed=11)
        ds = tf.data.Dataset.from_tensor_slices(images).map(layer, num_parallel_calls=1)
        return np.stack(list(ds.as_numpy_iterator())), layer

    first, layer = outputs()
    second, _ = outputs()
    np.testing.assert_array_equal(first, second)
    assert first.dtype == np.float32 and first.min() >= 0.0 and first.max() <= 255.0
    distinct = {first[i].tobytes() for i in range(len(first))}
    assert len(distinct) >= 6  # the same image, differently augmented
    # The layer still runs on the Keras backend afterwards.
    out = keras.ops.convert_to_numpy(layer(images[:2]))
    assert out.shape == images[:2].shape and out.max() <= 255.0


def test_presets_use_the_papers_settings():
    def settings(name):
        pipeline = augmentation.get_augmentation(name, 32)[0]
        (layer,) = [step for step in pipeline.layers if isinstance(step, RandAugment)]
        return (layer.num_ops, layer.magnitude, layer.magnitude_std, layer.magnitude_max,
                layer.prob, layer.increasing, layer.fill_value)  # fmt: skip

    timm = None  # the default: IMAGENET_FILL on RGB images (its grey level on others)
    assert settings("deit") == (2, 9.0, 0.5, 10.0, 0.5, True, timm)
    assert settings("rsb_a1") == (2, 7.0, 0.5, 10.0, 0.5, True, timm)
    assert settings("rsb_a3") == (2, 6.0, 0.5, 10.0, 0.5, True, timm)
    assert settings("vit") == (2, 15.0, 0.0, 15.0, 1.0, False, [128.0])


def test_serializes_and_passes_images_through_at_inference():
    layer, images = RandAugment(magnitude=7, seed=3), random_images(2, 12, 12)
    assert_layer_round_trip(layer, images, "keras_resvit>RandAugment")
    labels = np.array([3, 1])
    out = layer({"images": images, "labels": labels})
    assert np.array_equal(keras.ops.convert_to_numpy(out["labels"]), labels)
    assert keras.ops.convert_to_numpy(out["images"]).shape == images.shape


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"num_ops": -1}, "num_ops=-1"),
        ({"magnitude": -2}, "magnitude=-2"),
        ({"magnitude_std": -0.5}, "magnitude_std=-0.5"),
        ({"prob": 1.5}, "prob=1.5"),
        ({"interpolation": "bicubic"}, "interpolation='bicubic'"),
        ({"value_range": (255, 0)}, "value_range=(255, 0)"),
        ({"fill_value": (1, 2)}, "fill_value=(1, 2)"),
        ({"value_range": (0, 1), "fill_value": 128}, "fill_value=128"),
        ({"increasing": "yes"}, "increasing='yes'"),
    ],
)
def test_bad_arguments_are_named(kwargs, named):
    with pytest.raises(ValueError, match=named.replace("(", r"\(").replace(")", r"\)")):
        RandAugment(**kwargs)
    with pytest.raises(ValueError, match="operation='blur'"):
        RandAugment().apply_operation(random_images(1, 8, 8), "blur", 5)
