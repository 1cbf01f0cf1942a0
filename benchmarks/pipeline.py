"""Input-pipeline throughput of each augmentation preset, next to what a model consumes.

Prints images/s of `load_dataset(..., augment=preset)` at 32 and 224 pixels under the current
Keras backend, and the training throughput of resnet20 (32, batch 128) / resnet50 (224, batch
16), trained as `kr.train` trains them (see train_throughput.py), on the same machine, so one
can see whether the pipeline keeps the model fed (goal: >= 3x).

    KERAS_BACKEND=jax python benchmarks/pipeline.py --images 1024
"""

import argparse
import json
import time

import keras
import numpy as np
from train_throughput import PAIRS, fit_rate

import keras_resvit as kr
from keras_resvit.data.augmentation import AUGMENTATION_PRESETS
from keras_resvit.training.recipes import get_recipe
from keras_resvit.training.train import compile_model

MODELS = {32: "resnet20", 224: "resnet50"}
# Source images a bit larger than the output, as photos are before cropping.
SOURCE_SIZE = {32: (36, 36), 224: (256, 320)}


def pipeline_throughput(preset, size, images, batch_size):
    height, width = SOURCE_SIZE[size]
    pixels = np.random.default_rng(0).integers(0, 256, (images, height, width, 3), np.uint8)
    labels = np.arange(images) % 10
    ds = kr.data.load_dataset(
        (pixels, labels), "train", image_size=size, batch_size=batch_size, augment=preset
    )
    for _ in ds.take(1):  # trace the graph before timing
        pass
    # Timed to the last batch: the iterator's teardown afterwards waits for tf.data's
    # autotuning thread (see train_throughput.py), which is not the pipeline's throughput.
    start = end = time.perf_counter()
    count = 0
    for batch, _ in ds:
        count += int(batch.shape[0])
        end = time.perf_counter()
    return count / (end - start)


def training_throughput(name, steps):
    size, batch_size, _, recipe = PAIRS[name]
    model = kr.create_model(name, input_shape=(size, size, 3), num_classes=10)
    compile_model(model, get_recipe(recipe), batch_size, 10_000)
    x = np.random.default_rng(0).uniform(0, 255, (batch_size, size, size, 3)).astype("float32")
    return fit_rate(model, x, np.arange(batch_size) % 10, steps)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="images per preset and size")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the model's")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224], choices=[32, 224])
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    print(f"backend {keras.backend.backend()}; images/s (higher is better)")
    rows = []
    for size in args.sizes:
        model = MODELS[size]
        fed = training_throughput(model, args.train_steps)
        print(f"\n{size}x{size}: {model} trains at {fed:8.1f} images/s")
        for preset in AUGMENTATION_PRESETS:
            batch_size = args.batch_size or PAIRS[model][1]
            rate = pipeline_throughput(preset, size, args.images, batch_size)
            print(f"  {preset:16s} {rate:8.1f} images/s  ({rate / fed:5.1f}x the model)")
            rows.append(dict(size=size, model=model, model_rate=fed, preset=preset, rate=rate))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(dict(backend=keras.backend.backend(), rows=rows), file, indent=1)


if __name__ == "__main__":
    main()
