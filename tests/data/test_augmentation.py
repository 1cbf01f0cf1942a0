"""Augmentation presets and crop layers, inside tf.data under the current backend."""

import math
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_resvit as kr
from keras_resvit.data import augmentation
from keras_resvit.layers import (
    Equalization,
    KerasRandAugment,
    PCALighting,
    RandomPadCrop,
    RandomResizedCrop,
    RandomScaleCrop,
)
from tests.conftest import assert_layer_round_trip, random_images


def _run_in_tf_data(layer, images):
    ds = tf.data.Dataset.from_tensor_slices(images).map(layer, num_parallel_calls=2)
    return np.stack(list(ds.as_numpy_iterator()))


@pytest.mark.parametrize("name", sorted(augmentation.AUGMENTATION_PRESETS))
def test_preset_runs_in_tf_data_with_shape_dtype_and_range(name):
    layer, _ = kr.data.get_augmentation(name, 24, seed=1)
    assert isinstance(layer, keras.layers.Pipeline)
    out = _run_in_tf_data(layer, random_images(6, 40, 36))
    assert out.shape == (6, 24, 24, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 255.0 and out.std() > 1.0
    config = keras.saving.serialize_keras_object(layer)
    restored = keras.saving.deserialize_keras_object(config)
    assert [type(x) for x in restored.layers] == [type(x) for x in layer.layers]


def test_pca_lighting_shifts_each_image_along_the_principal_components():
    """AlexNet's lighting: pixel += V @ (alpha * lambda) * 255, alpha ~ N(0, 0.1) per image."""
    from keras_resvit.layers.lighting import IMAGENET_EIGENVALUES, IMAGENET_EIGENVECTORS

    layer = PCALighting(seed=3)
    images = np.full((256, 3, 3, 3), 128.0, "float32")
    out = _run_in_tf_data(layer, images)
    shifts = out[:, 0, 0] - 128.0
    assert np.all(out == out[:, :1, :1])  # one colour shift per image, every pixel alike
    vectors, values = np.array(IMAGENET_EIGENVECTORS), np.array(IMAGENET_EIGENVALUES)
    alphas = np.linalg.solve(vectors, shifts.T / 255.0).T / values
    np.testing.assert_allclose(alphas.mean(0), 0.0, atol=0.03)
    np.testing.assert_allclose(alphas.std(0), 0.1, rtol=0.2)
    assert np.array_equal(np.asarray(layer(images[:2], training=False)), images[:2])
    clipped = np.asarray(PCALighting(alpha_std=5.0, seed=0)(np.full((8, 2, 2, 3), 250.0)))
    assert clipped.max() <= 255.0 and clipped.min() >= 0.0
    restored = PCALighting.from_config(layer.get_config())
    assert (restored.alpha_std, restored.eigenvalues) == (0.1, list(IMAGENET_EIGENVALUES))
    with pytest.raises(ValueError, match="alpha_std=-1 must be a number >= 0"):
        PCALighting(alpha_std=-1)
    with pytest.raises(ValueError, match=r"eigenvalues=\(1.0, 2.0\).*3 eigenvalues"):
        PCALighting(eigenvalues=(1.0, 2.0))


def test_the_papers_imagenet_augmentations_use_pca_lighting():
    for name in ("resnet_imagenet", "alexnet"):
        layer, _ = kr.data.get_augmentation(name, 64, seed=0)
        assert isinstance(layer.layers[-1], PCALighting), name
    jitter, _ = kr.data.get_augmentation("resnet_imagenet_jitter", 64, seed=0)
    assert not any(isinstance(x, PCALighting) for x in jitter.layers)


def test_the_jitter_preset_is_fb_resnet_torchs_colour_jitter_both_ways():
    # Keras 3.15's RandomContrast(0.4) draws from [1.0, 1.4]: the preset never lowered
    # contrast. fb.resnet.torch's jitter blends by factors from [0.6, 1.4].
    from keras_resvit.layers import ColorJitter

    jitter, _ = kr.data.get_augmentation("resnet_imagenet_jitter", 64, seed=0)
    (colour,) = [x for x in jitter.layers if isinstance(x, ColorJitter)]
    assert (colour.brightness, colour.contrast, colour.saturation) == (0.4, 0.4, 0.4)
    image = np.concatenate([np.full((32, 64, 3), 60.0), np.full((32, 64, 3), 180.0)])
    spreads = [
        float(np.ptp(keras.ops.convert_to_numpy(colour(image, training=True)))) for _ in range(40)
    ]
    assert min(spreads) < 0.8 * 120 and max(spreads) > 1.2 * 120


def _boxes(layer, height, width, draws):
    image = np.zeros((height, width, 3), "float32")
    boxes = [
        [int(v) for v in layer.get_random_transformation(image, training=True)]
        for _ in range(draws)
    ]
    return np.array(boxes, "float64")


def test_random_resized_crop_boxes_cover_the_area_and_aspect_ranges():
    height, width = 60, 80
    top, left, h, w = _boxes(RandomResizedCrop(16, 16, seed=3), height, width, 200).T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all() and (h >= 1).all()
    area, log_ratio = h * w / (height * width), np.log(w / h)
    # Rounding to whole pixels moves a box's area and ratio by a little.
    assert area.min() >= 0.07 and area.max() <= 1.0
    assert (np.abs(log_ratio) <= math.log(4 / 3) + 0.1).all()
    assert area.min() < 0.2 and area.max() > 0.7  # the whole range is used
    assert log_ratio.min() < math.log(0.85) and log_ratio.max() > math.log(1 / 0.85)
    assert 0.3 < np.mean(area) < 0.75  # uniform over [0.08, 1], less the boxes that don't fit


@pytest.mark.parametrize(
    "layer, height, width",
    [
        # Area 0.01-0.02 of ratio 0.01-100: about 7% of the draws rounded to 0 pixels wide.
        (RandomResizedCrop(16, 16, scale=(0.01, 0.02), ratio=(0.01, 100.0), seed=0), 32, 32),
        # The fallback of a 1-pixel-high image narrowed to ratio 0.1 rounded to 0 pixels.
        (RandomResizedCrop(4, 4, scale=(1.0, 1.0), ratio=(0.1, 0.1), seed=0), 1, 32),
        # A shorter side S of up to 1e6 for a 32-pixel image rounded the box to 0 pixels.
        (RandomScaleCrop(16, 16, scale_range=(16, 1e6), seed=0), 32, 32),
    ],
    ids=["extreme-ratios", "thin-fallback", "huge-scale"],
)
def test_a_crop_box_is_never_empty(layer, height, width):
    """torchvision keeps a drawn box only if 0 < w <= width and 0 < h <= height: a 0-pixel box
    failed the resize (TensorFlow's InvalidArgumentError, JAX's ZeroDivisionError)."""
    top, left, h, w = _boxes(layer, height, width, 150).T
    assert (h >= 1).all() and (w >= 1).all() and (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    out = _run_in_tf_data(layer, random_images(120, height, width))
    assert out.shape == (120, layer.height, layer.width, 3) and np.isfinite(out).all()


def test_random_resized_crop_falls_back_inside_thin_images():
    top, left, h, w = _boxes(RandomResizedCrop(8, 8, scale=(0.9, 1.0), seed=0), 4, 200, 20).T
    assert (left + w <= 200).all() and (top + h <= 4).all()
    assert np.allclose(w / h, 4 / 3, atol=0.5)  # the widest box the ratio range allows


def test_random_scale_crop_matches_the_paper_scale_range():
    short = 300
    layer = RandomScaleCrop(224, 224, scale_range=(256, 480), seed=2)
    top, left, h, w = _boxes(layer, short, 400, 100).T
    scale = 224 * short / h  # the shorter side the crop corresponds to
    assert scale.min() >= 255 and scale.max() <= 481 and scale.max() - scale.min() > 150
    assert (top + h <= short).all() and (left + w <= 400).all()


def test_random_pad_crop_is_an_integer_shift_within_padding():
    image = np.arange(1, 8 * 8 + 1, dtype="float32").reshape(8, 8, 1).repeat(3, -1)
    layer = RandomPadCrop(2, seed=4)
    shifts = set()
    for out in _run_in_tf_data(layer, np.stack([image] * 60)):
        (rows, cols) = np.nonzero(out[..., 0] == image[4, 4, 0])
        dy, dx = int(rows[0]) - 4, int(cols[0]) - 4
        shifted = np.roll(image, (dy, dx), (0, 1))
        valid = out[..., 0] != 0
        np.testing.assert_array_equal(out[valid], shifted[valid])
        shifts.add((dy, dx))
    assert {dy for dy, _ in shifts} == set(range(-2, 3))
    np.testing.assert_array_equal(layer(image, training=False), image)


def test_random_pad_crop_pads_with_the_fill_colour():
    """The paper pads mean-subtracted images with zeros: raw pixels pad with the mean colour."""
    image = np.full((8, 8, 3), 255.0, "float32")
    fill = (125.3, 123.0, 113.9)
    outs = _run_in_tf_data(RandomPadCrop(2, fill_value=fill, seed=1), np.stack([image] * 30))
    padded = outs[..., 0] != 255.0
    assert padded.any()
    for channel, value in enumerate(fill):
        np.testing.assert_allclose(outs[..., channel][padded], value, rtol=1e-6)
    preset = kr.data.get_augmentation("resnet_cifar", 32)[0].layers[1]
    assert preset.fill_value == pytest.approx([0.4914 * 255, 0.4822 * 255, 0.4465 * 255])
    restored = RandomPadCrop.from_config(preset.get_config())
    assert restored.fill_value == preset.fill_value and restored.padding == 4
    with pytest.raises(ValueError, match="fill_value=nan must be a finite number"):
        RandomPadCrop(2, fill_value=float("nan"))


def test_crop_layers_serialize_and_center_at_inference():
    layer = RandomResizedCrop(12, 10, scale=(0.2, 0.9), ratio=(0.5, 2.0), seed=7)
    config = keras.saving.serialize_keras_object(layer)
    assert config["registered_name"] == "keras_resvit>RandomResizedCrop"
    restored = keras.saving.deserialize_keras_object(config)
    assert restored.get_config() == layer.get_config()
    image = random_images(1, 20, 30)[0]
    out = keras.ops.convert_to_numpy(restored(image, training=False))
    assert out.shape == (12, 10, 3)
    for cls, kwargs in ((RandomScaleCrop, {"scale_range": (20, 30)}), (RandomPadCrop, {})):
        args = () if cls is RandomPadCrop else (12, 12)
        layer = cls(*args, **kwargs)
        again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert again.get_config() == layer.get_config()


def _rand_augment(seed=5):
    return KerasRandAugment(value_range=(0, 255), num_ops=2, factor=0.9, seed=seed)


def test_keras_rand_augment_in_tf_data_keeps_shape_dtype_and_range():
    out = _run_in_tf_data(_rand_augment(), random_images(12, 20, 20))
    assert out.shape == (12, 20, 20, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 255.0


def test_keras_rand_augment_is_deterministic_with_a_seed():
    images = random_images(6, 16, 16)

    def outputs():
        ds = tf.data.Dataset.from_tensor_slices(images).map(_rand_augment(seed=9))
        return np.stack(list(ds.as_numpy_iterator()))

    first, second = outputs(), outputs()
    np.testing.assert_array_equal(first, second)
    assert np.abs(first - images).max() > 1.0


@pytest.mark.parametrize("index", range(len(KerasRandAugment._AUGMENT_LAYERS)))
def test_keras_rand_augment_applies_exactly_the_chosen_op(index):
    name = KerasRandAugment._AUGMENT_LAYERS[index]
    layer, images = _rand_augment(), random_images(2, 16, 16)
    transformation = layer.get_random_transformation(images)
    transformation["layer_idxes"] = keras.ops.convert_to_tensor([index, index], "int32")
    op, params = getattr(layer, name), transformation["transforms"][name]
    expected = op.transform_images(op.transform_images(images, params), params)
    actual = layer.transform_images(images, transformation)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(actual), keras.ops.convert_to_numpy(expected), atol=1e-3
    )
    if name not in ("auto_contrast", "equalization"):  # uniform noise is already spread out
        assert not np.allclose(keras.ops.convert_to_numpy(actual), images, atol=1e-3)


def test_keras_rand_augment_matches_keras_for_the_same_draws():
    ours, images = _rand_augment(), random_images(3, 16, 16)
    theirs = keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.9)
    theirs.build(images.shape)
    for _ in range(3):
        transformation = ours.get_random_transformation(images)
        expected = theirs.transform_images(images, transformation)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(ours.transform_images(images, transformation)),
            keras.ops.convert_to_numpy(expected),
            atol=1e-3,
        )


@pytest.mark.parametrize(
    "value_range, images",
    [
        ((0, 255), random_images(1, 20, 20)[0]),
        ((0, 255), np.clip(np.random.default_rng(1).normal(90, 15, (2, 12, 12, 3)), 0, 255)),
        (
            (0, 255),
            np.concatenate([np.full((8, 8, 1), 3.0), random_images(1, 8, 8)[0, ..., :2]], -1),
        ),
        ((0, 1), random_images(1, 12, 12)[0] / 255.0),
    ],
    ids=["uniform", "batch-narrow", "one-flat-channel", "unit-range"],
)
def test_equalization_matches_keras(value_range, images):
    images = images.astype("float32")
    ours = Equalization(value_range=value_range)(images)
    theirs = keras.layers.Equalization(value_range=value_range)(images)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(theirs), atol=1e-5
    )
    assert not np.allclose(keras.ops.convert_to_numpy(ours), images)


def test_keras_rand_augment_runs_eagerly_after_tf_data_and_serializes():
    layer, images = _rand_augment(), random_images(4, 16, 16)
    _run_in_tf_data(layer, images)
    out = keras.ops.convert_to_numpy(layer(images))
    assert out.shape == images.shape and out.min() >= 0.0 and out.max() <= 255.0
    assert_layer_round_trip(layer, images, "keras_resvit>KerasRandAugment")


def test_mixing_gives_soft_labels_that_sum_to_one():
    images, labels = random_images(16, 24, 24), np.arange(16) % 4
    ds = kr.data.load_dataset(
        (images, labels), "train", batch_size=8, augment="deit", seed=1, deterministic=True
    )
    for x, y in ds:
        y = np.asarray(y)
        assert x.shape == (8, 24, 24, 3) and y.shape == (8, 4) and y.dtype == np.float32
        np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)
        assert y.min() >= 0.1 / 4 - 1e-6  # label smoothing 0.1 reaches every class
    cutmix_only = kr.data.Mixing(cutmix_alpha=1.0)
    ds = kr.data.load_dataset((images, labels), "train", batch_size=8, mixing=cutmix_only)
    y = np.concatenate([np.asarray(y) for _, y in ds])
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)


def test_seeded_augmentation_is_deterministic():
    images, labels = random_images(8, 30, 30), np.arange(8) % 2

    def first_batch():
        keras.utils.set_random_seed(0)
        ds = kr.data.load_dataset(
            (images, labels), "train", image_size=24, batch_size=8, augment="inception_crop",
            seed=3, deterministic=True,
        )  # fmt: skip
        return np.asarray(next(iter(ds))[0])

    np.testing.assert_array_equal(first_batch(), first_batch())


def test_a_layer_passes_through_without_mixing():
    flip = keras.layers.RandomFlip("horizontal")
    assert kr.data.get_augmentation(flip, 32) == (flip, None)
    assert kr.data.get_augmentation(None, 32) == (None, None)


def test_a_sequential_of_preprocessing_layers_runs_in_tf_data_as_a_pipeline():
    # A keras.Sequential converts its inputs to the backend's tensors, which fails inside
    # tf.data under JAX; the same layers in a Pipeline run there on every backend.
    flip = keras.layers.RandomFlip("horizontal", seed=0)
    inner = keras.Sequential([keras.layers.Rescaling(1.0)])
    augment = keras.Sequential([keras.Input((16, 16, 3)), flip, inner], name="mine")
    layer, mixing = kr.data.get_augmentation(augment, 16)
    assert isinstance(layer, keras.layers.Pipeline) and mixing is None
    assert layer.name == "mine" and layer.layers[0] is flip
    assert isinstance(layer.layers[1], keras.layers.Pipeline)
    images = random_images(32, 16, 16)
    out = _run_in_tf_data(layer, images)
    flipped = np.all(out == images[:, :, ::-1], axis=(1, 2, 3))
    kept = np.all(out == images, axis=(1, 2, 3))
    assert np.all(flipped | kept) and 0 < flipped.sum() < 32
    ds = kr.data.load_dataset(
        (images, np.arange(32) % 4), "train", batch_size=8, augment=augment, shuffle=False
    )
    assert next(iter(ds))[0].shape == (8, 16, 16, 3)


def test_a_sequential_holding_another_layer_is_refused():
    augment = keras.Sequential([keras.layers.RandomFlip(), keras.layers.Dense(3, name="head")])
    with pytest.raises(
        ValueError, match=r"augment=<Sequential name=.*> holds layer 'head' \(Dense\)"
    ):
        kr.data.get_augmentation(augment, 16)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: kr.data.get_augmentation("autoaugment", 32), ["augment='autoaugment'", "deit"]),
        (lambda: kr.data.get_augmentation(3, 32), ["augment=3", "keras.layers.Layer"]),
        (lambda: kr.data.Mixing(mixup_alpha=-1), ["mixup_alpha=-1", ">= 0"]),
        (lambda: kr.data.Mixing(label_smoothing=2), ["label_smoothing=2", "[0, 1]"]),
        (lambda: RandomResizedCrop(8, 8, scale=(0.5, 0.1)), ["scale=(0.5, 0.1)", "min <= max"]),
        (lambda: RandomScaleCrop(224, 224, scale_range=(100, 200)), ["scale_range", "224"]),
        (lambda: RandomPadCrop(-1), ["padding=-1", ">= 0"]),
        # An infinite ratio never cropped; an infinite scale gave 0-pixel boxes.
        (lambda: RandomResizedCrop(16, 16, ratio=(1, math.inf)), ["ratio=(1, inf)", "finite"]),
        (lambda: RandomResizedCrop(8, 8, scale=(0.1, math.nan)), ["scale=(0.1, nan)", "finite"]),
        (
            lambda: RandomScaleCrop(16, 16, scale_range=(32, math.inf)),
            ["RandomScaleCrop: scale_range=(32, inf)", "finite"],
        ),
        # JAX takes seeds in [0, 2**32) only, and failed at the first draw.
        (lambda: RandomResizedCrop(8, 8, seed=-1), ["seed=-1", "[0, 2**32)"]),
        (lambda: RandomPadCrop(4, seed=2**32), ["seed=4294967296", "[0, 2**32)"]),
    ],
)
def test_bad_augmentation_arguments(call, words):
    with pytest.raises(ValueError) as info:
        call()
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("name", sorted(augmentation.AUGMENTATION_PRESETS))
def test_a_preset_called_directly_checks_its_size_and_seed(name):
    """`resnet_cifar(0)` built a pipeline of 0x0 images (JAX) or a deep ResizeBilinear error
    (TensorFlow); a bad seed gave NumPy's error, which names no argument."""
    preset = augmentation.AUGMENTATION_PRESETS[name]
    smallest = 7 if name.startswith("deit3") else 1  # 3-Augment's 13-tap blur reflects
    valid = "a positive int" if smallest == 1 else "an int >= 7"
    for size in (0, -32, 24.0, None, smallest - 1):
        with pytest.raises(ValueError, match=rf"^image_size={size!r} must be {valid}\."):
            preset(size)
    for seed in (-1, 2**32, 1.5):
        with pytest.raises(ValueError, match=rf"^seed={seed!r} must be an int in \[0, 2\*\*32\)"):
            preset(24, seed=seed)
    assert isinstance(preset(smallest, seed=2**32 - 1), keras.layers.Pipeline)


def test_keras_cv_adapter_explains_the_missing_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_cv", None)  # as if not installed
    with pytest.raises(ImportError, match="keras-resvit\\[cv\\]"):
        kr.data.from_keras_cv("RandomCutout", height_factor=0.2, width_factor=0.2)


# keras-cv is the `cv` extra, installed by scripts/test.sh: these run on every backend.
def test_keras_cv_layer_drops_into_a_pipeline():
    pytest.importorskip("keras_cv", reason="the cv extra (pip install keras-resvit[cv])")
    cutout = kr.data.from_keras_cv("RandomCutout", height_factor=0.5, width_factor=0.5, seed=0)
    assert isinstance(cutout, keras.layers.Pipeline) and cutout.name == "keras_cv_RandomCutout"
    images = random_images(4, 32, 32) + 1.0  # no pixel is 0 before the cutout
    pipeline = keras.layers.Pipeline([RandomResizedCrop(24, 24, seed=0), cutout])
    out = _run_in_tf_data(pipeline, images)
    assert out.shape == (4, 24, 24, 3) and out.dtype == np.float32
    # RandomCutout fills a rectangle of up to half the height and width with 0 in every image.
    zeros = (out == 0).all(axis=-1).reshape(4, -1).sum(axis=1)
    assert (zeros > 0).all() and (zeros <= 12 * 12).all(), zeros
    uncut = _run_in_tf_data(keras.layers.Pipeline([RandomResizedCrop(24, 24, seed=0)]), images)
    assert (uncut > 0).all()


def test_keras_cv_instances_and_bad_layers():
    keras_cv = pytest.importorskip("keras_cv", reason="the cv extra")
    layer = keras_cv.layers.Grayscale(output_channels=3)
    wrapped = kr.data.from_keras_cv(layer)
    assert wrapped.layers == [layer]
    out = _run_in_tf_data(wrapped, random_images(2, 8, 8))
    np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-4)
    for name in ("NoSuchLayer", "__name__", "layers.Grayscale"):
        with pytest.raises(ValueError, match=f"layer='{name}' is not a layer class in keras_cv"):
            kr.data.from_keras_cv(name)
    with pytest.raises(ValueError, match=r"\['output_channels'\] are constructor arguments"):
        kr.data.from_keras_cv(layer, output_channels=1)  # would be ignored
    with pytest.raises(ValueError, match="pass a keras_cv layer"):
        kr.data.from_keras_cv(keras.layers.RandomFlip())


def test_preset_layers_draw_independently():
    """A preset's crop and flip draw from distinct seeds: with one shared seed, Keras' layers
    draw the same numbers and exactly the images shifted up would be flipped."""
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    ramp = np.stack([rows * 4 + 100, cols * 4 + 100, np.full((32, 32), 50)], -1)
    images = np.repeat(ramp[None].astype("uint8"), 512, 0)
    ds = kr.data.load_dataset(
        (images, np.zeros(512, "int32")), "train", batch_size=128, augment="resnet_cifar",
        seed=3, deterministic=True, shuffle=False,
    )  # fmt: skip
    out = np.concatenate([np.asarray(x) for x, _ in ds])
    shift = np.round((out[:, 16, 16, 0] - 100) / 4).astype(int) - 16  # row shift, -4 .. 4
    flipped = out[:, 16, 20, 1] < out[:, 16, 12, 1]
    assert set(shift) == set(range(-4, 5)) and 0.4 < flipped.mean() < 0.6
    for side in (shift < 0, shift > 0):  # both ways of shifting are flipped about half the time
        assert 0.3 < flipped[side].mean() < 0.7, (flipped[side].mean(), side.sum())


def test_deit_erasing_fills_boxes_with_normalized_noise_as_timm():
    """timm's RandomErasing(mode="pixel") fills with N(0, 1) of the normalized images: in pixels
    the dataset's mean plus its std times noise. Keras' fill (N(0, 1) x 255, clipped) left
    about half of the erased pixels black."""
    import tensorflow as tf

    from keras_resvit.layers import NoiseErasing
    from keras_resvit.layers.normalization import IMAGENET_MEAN, IMAGENET_STD

    layer, _ = kr.data.get_augmentation("deit", 32, seed=0)
    assert isinstance(layer.layers[-1], NoiseErasing) and layer.layers[-1].factor == (0.25, 0.25)
    images = np.full((400, 24, 24, 3), 7.0, "float32")
    erasing = NoiseErasing(1.0, seed=1)
    erased = keras.ops.convert_to_numpy(erasing(images, training=True))
    changed = erased != 7.0
    assert changed.any(axis=(1, 2, 3)).all()  # p=1: every image
    for channel in range(3):
        values = erased[..., channel][changed[..., channel]]
        assert abs(values.mean() - IMAGENET_MEAN[channel]) < 3
        assert abs(values.std() - IMAGENET_STD[channel]) < 0.1 * IMAGENET_STD[channel]
        assert np.mean(values == 0) < 0.05  # clipped at 0 (a z below -1.8); Keras: ~0.5
    # A fixed probability, inside tf.data whatever the backend, and the layer's config.
    quarter = NoiseErasing.from_config(NoiseErasing(0.25, seed=2).get_config())
    data = tf.data.Dataset.from_tensor_slices(images).map(lambda x: quarter(x, training=True))
    share = np.mean([(x != 7.0).any() for x in data.as_numpy_iterator()])
    assert 0.18 < share < 0.32
    with pytest.raises(ValueError, match=r"NoiseErasing: std=\(1, 2\) must be three"):
        NoiseErasing(std=(1, 2))
    with pytest.raises(ValueError, match="NoiseErasing: factor=1.5"):
        NoiseErasing(1.5)


def timm_box(rng, height, width, scale=(0.02, 1 / 3)):
    """(h, w) of timm's RandomErasing box (min_aspect 0.3, 10 tries), or None if none fits."""
    for _ in range(10):
        area = rng.uniform(*scale) * height * width
        aspect = np.exp(rng.uniform(np.log(0.3), np.log(1 / 0.3)))
        h, w = round(np.sqrt(area * aspect)), round(np.sqrt(area / aspect))
        if h < height and w < width:
            return h, w
    return None


def test_erasing_boxes_have_timms_areas_and_aspect_ratios():
    """A box's area is drawn from `scale` and its height / width log-uniformly from
    [0.3, 3.3] (timm, DeiT); Keras' draws each side alone, sqrt of a draw from `scale`."""
    from keras_resvit.layers import NoiseErasing

    height, width = 40, 60
    images = np.full((1500, height, width, 3), 7.0, "float32")
    erased = keras.ops.convert_to_numpy(NoiseErasing(1.0, seed=3)(images, training=True))
    changed = (erased != 7.0).any(axis=-1)
    rows, cols = changed.any(axis=2), changed.any(axis=1)
    h, w = rows.sum(axis=1), cols.sum(axis=1)
    assert (changed.sum(axis=(1, 2)) == h * w).all()  # one whole rectangle each
    assert (h < height).all() and (w < width).all() and (h > 0).all()
    rng = np.random.default_rng(0)
    boxes = np.array([timm_box(rng, height, width) for _ in range(20_000)])
    # Areas and log aspect ratios: means within ~2.5 standard errors of 1,500 draws.
    for ours, timm in ((h * w, boxes.prod(1)), (np.log(h / w), np.log(boxes[:, 0] / boxes[:, 1]))):
        np.testing.assert_allclose(np.mean(ours), np.mean(timm), atol=0.06 * np.std(timm))
        np.testing.assert_allclose(np.std(ours), np.std(timm), rtol=0.08)
    assert abs(np.mean(np.log(h / w))) < 0.1  # as often tall as wide, whatever the image's shape
    # Whole-pixel positions, each equally likely: boxes reach the first and the last row.
    tops = rows.argmax(axis=1)
    assert tops.min() == 0 and (tops + h).max() == height
    # A box as large as the image never fits: nothing erased.
    whole = NoiseErasing(1.0, scale=(1.0, 1.0), seed=0)(images[:8], training=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(whole), images[:8])


@pytest.mark.parametrize("loader", ["tf.data", "py_dataset"])
def test_pipelines_compute_in_float32_under_a_global_mixed_policy(loader):
    """A user's `keras.config.set_dtype_policy("mixed_bfloat16")` (for the model) leaves the
    pixels alone: evaluation images equal float32 ones (bfloat16 rounded them by up to 0.5
    levels) and every preset runs (NoiseErasing failed on a bfloat16 image)."""
    images, labels = random_images(8, 40, 40), np.arange(8) % 2
    options = {"image_size": 32, "batch_size": 8, "loader": loader}

    def first(split, **kwargs):
        ds = kr.data.load_dataset((images, labels), split, **options, **kwargs)
        return np.asarray((ds[0] if loader == "py_dataset" else next(iter(ds)))[0])

    expected = first("test")
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        np.testing.assert_array_equal(first("test"), expected)
        for preset in kr.data.AUGMENTATION_PRESETS:
            batch = first("train", augment=preset, seed=0)
            assert batch.dtype == np.float32 and np.isfinite(batch).all(), preset
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    finally:
        keras.config.set_dtype_policy("float32")
