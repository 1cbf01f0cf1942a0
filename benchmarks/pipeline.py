"""Input-pipeline throughput of each augmentation preset, next to what a model consumes.

Prints images/s of `load_dataset(..., augment=preset)` at 32 and 224 pixels under the current
Keras backend, and the training throughput of resnet20 (32) / resnet50 (224) on the same
machine, so one can see whether the pipeline keeps the model fed (goal: >= 3x).

    KERAS_BACKEND=jax python benchmarks/pipeline.py --images 512
"""

import argparse
import time

import keras
import numpy as np

import keras_resvit as kr
from keras_resvit.data.augmentation import PRESETS

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
    start, count = time.perf_counter(), 0
    for batch, _ in ds:
        count += int(batch.shape[0])
    return count / (time.perf_counter() - start)


def training_throughput(name, size, batch_size, steps):
    model = kr.create_model(name, input_shape=(size, size, 3), num_classes=10)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (batch_size, size, size, 3)).astype("float32")
    y = np.arange(batch_size) % 10
    model.train_on_batch(x, y)  # compile / trace
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="images per preset and size")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224], choices=[32, 224])
    parser.add_argument("--train-steps", type=int, default=3)
    args = parser.parse_args()
    print(f"backend {keras.backend.backend()}; images/s (higher is better)")
    for size in args.sizes:
        model = MODELS[size]
        fed = training_throughput(model, size, args.batch_size, args.train_steps)
        print(f"\n{size}x{size}: {model} trains at {fed:8.1f} images/s")
        for preset in PRESETS:
            rate = pipeline_throughput(preset, size, args.images, args.batch_size)
            print(f"  {preset:16s} {rate:8.1f} images/s  ({rate / fed:5.1f}x the model)")


if __name__ == "__main__":
    main()
