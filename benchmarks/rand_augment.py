"""RandAugment on real photos: how much it changes them, next to timm's, and its images/s.

For each image of a folder (e.g. a JPEG copy of CIFAR-10), the mean absolute pixel change
(0-255) made by `keras_resvit.layers.RandAugment` as the `deit` preset configures it (timm's
`rand-m9-mstd0.5-inc1`), by timm's own `rand_augment_transform` on the same PIL images (when
timm is importable, or its `auto_augment.py` is given), and by `KerasRandAugment` at the factor
0.9 the presets used before. Prints the distribution of the change per image, and the
images/s of both Keras layers inside `tf.data` under the current backend.

    KERAS_BACKEND=jax python benchmarks/rand_augment.py --folder CIFAR-10-images/test --images 2000
"""

import argparse
import importlib.util
import pathlib
import random
import time

import numpy as np
import tensorflow as tf
from PIL import Image

from keras_resvit.layers import KerasRandAugment, RandAugment
from keras_resvit.layers.rand_augment import IMAGENET_FILL

PERCENTILES = (10, 25, 50, 75, 90)


def read_images(folder, count, seed=0):
    paths = sorted(pathlib.Path(folder).rglob("*.jpg")) + sorted(
        pathlib.Path(folder).rglob("*.png")
    )
    if not paths:
        raise SystemExit(f"--folder {folder!r} holds no .jpg or .png images")
    paths = random.Random(seed).sample(paths, min(count, len(paths)))
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    if len({image.shape for image in images}) > 1:
        raise SystemExit("the images must share one size (as CIFAR-10's 32x32 do)")
    return np.stack(images)


def keras_changes(layer, images):
    ds = tf.data.Dataset.from_tensor_slices(images.astype("float32")).map(layer)
    out = np.stack(list(ds.as_numpy_iterator()))
    return np.abs(out - images).mean(axis=(1, 2, 3))


def timm_changes(images, module_path, seed=0):
    if module_path:
        spec = importlib.util.spec_from_file_location("timm_auto_augment", module_path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        try:
            from timm.data import auto_augment as module
        except ImportError:
            return None
    # Pillow >= 10 refuses posterize(bits=0), which timm's increasing posterize asks for at
    # magnitude 10 (older Pillow gave a black image; so does keras_resvit's).
    posterize = module.ImageOps.posterize

    def posterize_zero(image, bits):
        return image.point(lambda _: 0) if bits == 0 else posterize(image, bits)

    module.ImageOps.posterize = posterize_zero
    random.seed(seed)
    np.random.seed(seed)
    hparams = {"img_mean": IMAGENET_FILL, "interpolation": Image.Resampling.BILINEAR}
    transform = module.rand_augment_transform("rand-m9-mstd0.5-inc1", hparams)
    out = np.stack([np.asarray(transform(Image.fromarray(image))) for image in images])
    return np.abs(out.astype("float32") - images).mean(axis=(1, 2, 3))


def throughput(layer, images, repeats=3):
    ds = tf.data.Dataset.from_tensor_slices(images.astype("float32")).map(layer)
    for _ in ds.take(1):  # trace first
        pass
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        count = sum(1 for _ in ds)
        rates.append(count / (time.perf_counter() - start))
    return float(np.median(rates))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", required=True, help="a folder of same-size photos")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--timm-auto-augment", default=None, help="path of timm's auto_augment.py")
    args = parser.parse_args()
    images = read_images(args.folder, args.images)
    ours = RandAugment(num_ops=2, magnitude=9, magnitude_std=0.5, seed=0)
    keras_layer = KerasRandAugment(value_range=(0, 255), num_ops=2, factor=0.9, seed=0)
    rows = {
        "keras_resvit RandAugment (m9, mstd0.5, inc1)": keras_changes(ours, images),
        "timm rand-m9-mstd0.5-inc1": timm_changes(images, args.timm_auto_augment),
        "KerasRandAugment (factor 0.9)": keras_changes(keras_layer, images),
    }
    print(f"{len(images)} images of {images.shape[1:]} from {args.folder}")
    header = " | ".join(f"p{p}" for p in PERCENTILES)
    print(f"| mean absolute change per image (0-255) | mean | {header} | unchanged |")
    print("|---|---|" + "---|" * len(PERCENTILES) + "---|")
    for name, changes in rows.items():
        if changes is None:
            print(f"| {name} | (timm not importable) |")
            continue
        cells = " | ".join(f"{v:.1f}" for v in np.percentile(changes, PERCENTILES))
        print(f"| {name} | {changes.mean():.1f} | {cells} | {(changes < 0.5).mean():.2f} |")
    for name, layer in (("RandAugment", ours), ("KerasRandAugment", keras_layer)):
        print(f"{name}: {throughput(layer, images):.0f} images/s in tf.data")


if __name__ == "__main__":
    main()
