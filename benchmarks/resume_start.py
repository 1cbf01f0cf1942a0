"""How long a resumed run waits for its first batch: `from_step` against `Dataset.skip`.

A training split of arrays, an image folder or a tfds dataset read into memory makes the run's
batches from any step at once (`kr.data.load_dataset(...).from_step(step)`); a `Dataset.skip`
over the same pipeline makes every earlier batch again. Prints the seconds `load_dataset`
takes (a tfds dataset read into memory is read then), the seconds to the first batch of epoch
0 and of `--epoch` through `from_step`, the images/s of a whole epoch, and the wait a `skip`
to `--epoch` implies: it makes the batches it passes over at the pipeline's rate (timed over
`--skip-batches` batches). `--cache false` streams a tfds dataset from its files (no
`from_step`: only the skip is timed). `--loader py_dataset` times the TensorFlow-free loader
(`loaders.ImageLoader`), whose batches any epoch and index gives at once: no skip.

    python benchmarks/resume_start.py --source /data/cifar10 --image-size 32 --epoch 150
    python benchmarks/resume_start.py --source tfds:cifar10 --data-dir ~/tensorflow_datasets
    python benchmarks/resume_start.py --source /data/cifar10 --loader py_dataset
"""

import argparse
import time

import keras_resvit as kr


def first_batch_seconds(ds):
    start = time.perf_counter()
    next(iter(ds))
    return time.perf_counter() - start


def images_per_second(batches):
    start, count = time.perf_counter(), 0
    for _, labels in batches:
        count += int(labels.shape[0])
    return count / (time.perf_counter() - start)


def time_loader(loader, args, load_seconds):
    """The py_dataset loader's figures: its batch `index` of epoch `e` is `loader[index]`
    after `loader.epoch = e`."""
    print(f"{args.source}: {len(loader)} batches of {args.batch_size} per epoch")
    print(f"load_dataset: {load_seconds:.1f} s")
    for epoch in (0, args.epoch):
        loader.epoch = epoch
        start = time.perf_counter()
        loader[0]
        print(f"first batch of epoch {epoch} after {time.perf_counter() - start:.2f} s")
    loader.epoch = 0
    rate = images_per_second(loader[i] for i in range(len(loader)))
    print(f"a whole epoch: {rate:.0f} images/s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="digits", help="an image folder, tfds:NAME, digits")
    parser.add_argument("--data-dir", default=None, help="tensorflow-datasets data folder")
    parser.add_argument("--cache", choices=("auto", "false"), default="auto")
    parser.add_argument("--loader", choices=("tf.data", "py_dataset"), default="tf.data")
    parser.add_argument("--image-size", type=int, default=None, help="default: the source's")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--augment", default="resnet_cifar")
    parser.add_argument("--epoch", type=int, default=150, help="the epoch a run resumes at")
    parser.add_argument("--skip-batches", type=int, default=100)
    args = parser.parse_args()
    start = time.perf_counter()
    ds = kr.data.load_dataset(
        args.source,
        "train",
        image_size=args.image_size,
        batch_size=args.batch_size,
        augment=args.augment,
        data_dir=args.data_dir,
        cache=None if args.cache == "auto" else False,
        loader=args.loader,
    )
    if args.loader == "py_dataset":
        return time_loader(ds, args, time.perf_counter() - start)
    per_epoch = int(ds.cardinality())
    print(f"{args.source}: {per_epoch} batches of {args.batch_size} per epoch")
    print(f"load_dataset: {time.perf_counter() - start:.1f} s")
    for epoch in (0, args.epoch) if hasattr(ds, "from_step") else ():
        seconds = first_batch_seconds(ds.from_step(epoch * per_epoch))
        print(f"from_step: first batch of epoch {epoch} after {seconds:.2f} s")
    print(f"a whole epoch: {images_per_second(ds):.0f} images/s")
    skipped = images_per_second(ds.repeat().take(args.skip_batches))
    wait = args.epoch * per_epoch * args.batch_size / skipped
    print(f"skip: {skipped:.0f} images/s, so {wait / 60:.1f} min before epoch {args.epoch}")


if __name__ == "__main__":
    main()
