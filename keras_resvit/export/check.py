"""The images an export is calibrated and checked on, and the check itself: the artifact is
run on them and compared with the Keras model's outputs.
"""

import importlib.util
import warnings
from pathlib import Path

import keras
import numpy as np

from keras_resvit.artifacts import RUNNERS
from keras_resvit.base.lazy import tf
from keras_resvit.data.checks import check_pixels
from keras_resvit.data.image_files import load_images

# Check criteria: max abs difference of outputs for float artifacts (for probabilities; times
# the largest |output| where it is above 1, as logits and features: round-off is relative),
# top-1 agreement for integer weights, whose probabilities move by more than round-off.
TOLERANCES = {None: 1e-4, "float16": 1e-2}
MIN_TOP1_AGREEMENT = 0.95
CALIBRATION_SAMPLES = 128
# Random images for a check without representative data. With representative data the check
# runs on all of it: on 32 images a 95% criterion passes one miss and fails two, so a model
# whose true agreement is 97% would fail one check in four.
CHECK_SAMPLES = 32
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def input_size(model):
    if isinstance(model.output_shape, list) or len(model.inputs) != 1:
        raise ValueError(
            f"model {model.name!r} has {len(model.inputs)} input(s) and "
            f"{len(model.outputs)} output(s); export takes a model with one image input and "
            "one output."
        )
    shape = tuple(model.input_shape[1:])
    if any(d is None for d in shape):
        raise ValueError(
            f"model input_shape={shape} must be fixed to export: export "
            "kr.resize_vit(model, image_size) for a ViT of any input size, or rebuild the model "
            "with input_shape=(height, width, channels)."
        )
    return shape


def representative_images(data, model, count: int = CALIBRATION_SAMPLES) -> np.ndarray:
    """Up to `count` float32 images at the model's input size from any data source.

    Args:
        data: a folder of image files (searched recursively), a `kr.data.load_dataset`
            source ("digits", `(images, labels)` arrays; its "test" split, not augmented), a
            `tf.data.Dataset` of images or `(images, labels)` (batched or not), or an array
            of images.
        model: the model whose input size the images are resized to.
        count: how many images to take.

    Returns:
        An array `(n, height, width, channels)` of raw 0-255 pixels.
    """
    from keras_resvit import data as kr_data
    from keras_resvit.data.datasets import source_named
    from keras_resvit.data.loader_choice import ALL_EXAMPLES

    height, width, channels = input_size(model)
    if isinstance(data, (str, Path)) and Path(data).is_file():
        raise ValueError(
            f"representative_data={str(data)!r} is a file; pass a folder of images, 'digits', "
            "(images, labels) arrays, an image array or a tf.data.Dataset."
        )
    if isinstance(data, np.ndarray):
        images = data
    elif isinstance(data, (str, Path)) and Path(data).is_dir():
        files = sorted(p for p in Path(data).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"representative_data={str(data)!r} holds no image files.")
        # Evenly spaced files, so that every class folder contributes.
        picks = np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int)
        images = load_images(
            [files[i] for i in sorted(set(picks))], (height, width), channels=channels
        )
    else:
        if not isinstance(data, tf.data.Dataset):
            with source_named("representative_data"):
                data = kr_data.load_dataset(
                    data, "test", image_size=height, batch_size=32, loader_options=ALL_EXAMPLES
                )
        batches, total = [], 0
        for element in data:
            batch = np.asarray(element[0] if isinstance(element, (tuple, list)) else element)
            batch = batch[None] if batch.ndim == 3 else batch
            batches.append(batch)
            total += len(batch)
            if total >= count:
                break
        images = np.concatenate(batches) if batches else np.zeros((0, height, width, channels))
    if images.ndim != 4 or len(images) == 0 or images.shape[-1] != channels:
        hint = " (one image: pass image[None], a batch of one)" if images.ndim == 3 else ""
        raise ValueError(
            f"representative_data gave images of shape {images.shape}{hint}; valid: a batch "
            f"(N, H, W, {channels}) of N >= 1 images with {channels} channels."
        )
    images = images[:count].astype("float32")
    # Calibrating on [0, 1] images would quantize for the wrong range, and the check, which
    # runs on these images, would not see it.
    check_pixels("representative_data images", images, scaled_is_error=True)
    if images.shape[1:3] != (height, width):
        images = tf.image.resize(images, (height, width)).numpy()
    return images


def check_artifact(model, artifact, format, quantization, calibration):
    """Runs the artifact on sample images; returns the figures or raises RuntimeError."""
    if format == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        return {"checked": False, "reason": "onnxruntime is not installed"}
    if calibration is not None:
        images = calibration
    else:
        shape = input_size(model)
        images = np.random.default_rng(0).uniform(0, 255, (CHECK_SAMPLES, *shape))
        images = images.astype("float32")
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    broken = ~np.isfinite(expected.reshape(len(expected), -1)).all(axis=1)
    if broken.any():
        raise ValueError(
            f"model {model.name!r} itself gives NaN or infinite outputs for {broken.sum()} of "
            f"{len(images)} sample images: its weights are broken (a diverged run?), and so "
            "would be any export of it. Export a checkpoint from before (best.keras) instead."
        )
    actual = RUNNERS[format](artifact, images)
    if np.ptp(expected) == 0:
        warnings.warn(
            f"model {model.name!r} gives the same output {expected.flat[0]:.4g} for every class "
            "of every sample image (a zero-initialized classifier, as after kr.replace_head of "
            "a ViT?): the export's check compares nothing but that constant. Train the model "
            "first, or check the exported backbone (include_top=False).",
            stacklevel=3,
        )
    difference = float(np.abs(actual - expected).max())
    agreement = float(np.mean(actual.argmax(-1) == expected.argmax(-1)))
    figures = {
        "checked": True,
        "samples": len(images),
        "max_abs_difference": difference,
        "top1_agreement": agreement,
    }
    if quantization in TOLERANCES:
        tolerance = TOLERANCES[quantization]
        scale = max(1.0, float(np.abs(expected).max()))
        passed = difference < tolerance * scale
        criterion = f"max abs difference < {tolerance:.0e}"
        if scale > 1:
            criterion = (
                f"max abs difference < {tolerance * scale:.1e}, {tolerance:.0e} x the largest "
                f"|output| {scale:.3g}"
            )
    else:
        passed = agreement >= MIN_TOP1_AGREEMENT
        criterion = f"top-1 agreement >= {MIN_TOP1_AGREEMENT:.0%}"
    if passed and np.ptp(expected) == 0:  # nothing compared: not called checked
        return {"checked": False, "reason": "the model's outputs are one constant"}
    if not passed:
        # Random pixels put many images near a decision boundary, where a quantized model's
        # small differences flip the top class: real images are the fair check.
        remedy = (
            ""
            if calibration is not None or quantization in TOLERANCES
            else "; these were random pixels: check on real images with representative_data= "
            "(keras-resvit export --calibration FOLDER)"
        )
        raise RuntimeError(
            f"{format} export (quantization={quantization}) fails its check ({criterion}): max "
            f"abs difference {difference:.2e}, top-1 agreement {agreement:.1%} on "
            f"{len(images)} sample images{remedy}."
        )
    return {**figures, "criterion": criterion}
