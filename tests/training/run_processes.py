"""One process of a training run that tests start several of (tests/training/test_processes.py).

The test sets the process group in the environment (`KERAS_DISTRIBUTION_*` for JAX, `TF_CONFIG`
for TensorFlow) and the simulated devices (`XLA_FLAGS`); every process trains the same
`kr.train` call into the same output folder. Prints one JSON line: this process's index and
count, the run's per-epoch losses and the checksum of the saved `last.keras` (process 0).
"""

import argparse
import json
import os
from pathlib import Path


class Die:
    """A user callback that kills the process after step `step` (a machine lost mid-run)."""

    def __new__(cls, step):
        import keras

        class _Die(keras.callbacks.Callback):
            steps = 0

            def on_train_batch_end(self, batch, logs=None):
                self.steps += 1
                if self.steps >= step:
                    os._exit(3)

        return _Die()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", required=True)
    parser.add_argument("--distribution", default="auto")
    parser.add_argument("--model", default="resnet8", help="resnet8 or gn_resnet8")
    parser.add_argument(
        "--data",
        nargs="+",
        default=["arrays"],
        help="arrays (load_dataset, tf.data), loader (an ImageLoader), dataset (a plain "
        "tf.data); with several, one run each into OUTPUT/KIND, in one process group",
    )
    parser.add_argument("--validate", action="store_true", help="validation data of --data's kind")
    parser.add_argument("--shuffle", action="store_true", help="shuffle --data arrays every epoch")
    parser.add_argument("--examples", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--save-every", type=int, default=None)
    parser.add_argument("--die-after", type=int, default=None, help="kill after this step")
    args = parser.parse_args()

    import keras_resvit as kr

    index, count = kr.training.process_index(), kr.training.process_count()
    if len(args.data) == 1:
        reply = _train(args, args.data[0], args.output, index, count)
    else:
        runs = {}
        for kind in args.data:
            runs[kind] = _train(args, kind, os.path.join(args.output, kind), index, count)
        reply = {"index": index, "runs": runs}
    print(json.dumps(reply))


def _train(args, kind, output, index, count):
    """One `kr.train` run of `kind`'s data into `output`: this process's reply."""
    import keras
    import numpy as np

    import keras_resvit as kr

    (x, y), _ = kr.data.load_digits()
    # Random pixels: well-conditioned enough for losses to agree across layouts to 1e-4.
    pixels = np.random.default_rng(0).uniform(0, 255, x.shape).astype("float32")
    held_out = pixels[args.examples : args.examples + 64], y[args.examples : args.examples + 64]
    x, y = pixels[: args.examples], y[: args.examples]
    val = None
    if kind == "arrays":  # tf.data: each process (or TF worker) reads its share
        data = kr.data.load_dataset(
            (x, y), "train", batch_size=args.batch_size, shuffle=args.shuffle
        )
        assert (data.process_index, data.process_count) == (index, count)
        if args.validate:
            val = kr.data.load_dataset(held_out, "test", batch_size=args.batch_size)
    elif kind == "loader":  # an ImageLoader: under JAX each process reads its share
        data = kr.data.load_dataset(
            (x, y), "train", batch_size=args.batch_size, shuffle=False, loader="py_dataset"
        )
        shares = (index, count) if keras.backend.backend() == "jax" else (0, 1)
        assert (data.process_index, data.process_count) == shares
    else:
        import tensorflow as tf

        def batches(images, labels):
            return tf.data.Dataset.from_tensor_slices((images, labels.astype("int32")))

        data = batches(x, y).batch(args.batch_size)
        if args.validate:
            val = batches(*held_out).batch(args.batch_size)
    keras.utils.set_random_seed(0)  # the same initial weights in every process and run
    norm = "group" if args.model == "gn_resnet8" else "batch"
    model = kr.build_resnet(8, stem="cifar", norm=norm, input_shape=(32, 32, 3), num_classes=10)
    callbacks = [] if args.die_after is None else [Die(args.die_after)]
    history = kr.train(
        model,
        data,
        val_data=val,
        epochs=args.epochs,
        output_dir=output,
        distribution=args.distribution,
        save_every=args.save_every,
        learning_rate=0.01,
        callbacks=callbacks,
        verbose=0,
    )
    reply = {"index": index, "count": count, "loss": history.history["loss"]}
    reply["val_loss"] = history.history.get("val_loss")
    reply["resumed_from_step"] = history.summary["resumed_from_step"]
    if index == 0:
        final = kr.load_model(Path(output, "last.keras"))
        weights = [keras.ops.convert_to_numpy(w) for w in final.weights]
        reply["checksum"] = float(sum(np.abs(w).sum() for w in weights))
        reply["config"] = json.loads(Path(output, "config.json").read_text())
    return reply


if __name__ == "__main__":
    main()
