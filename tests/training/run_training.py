"""Training runs executed in subprocesses by the tests (a fresh process per backend/device
setting). Prints one JSON line: per-epoch losses and a weight checksum."""

import argparse
import json
import os
from pathlib import Path


def _replicas_mean(variable):
    """A variable's value; under a TensorFlow strategy, the mean of its replicas' values."""
    import keras
    import numpy as np

    parts = getattr(variable.value, "values", None)
    if isinstance(parts, (tuple, list)):
        return np.mean([np.asarray(part.numpy()) for part in parts], axis=0)
    return keras.ops.convert_to_numpy(variable.value)


def StatisticsAfterEachStep():
    """A callback that keeps the replicas' mean BatchNorm statistics after each step."""
    import keras
    import numpy as np

    from keras_resvit.training.ema_statistics import moving_statistics

    class Record(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.steps = []

        def on_train_batch_end(self, batch, logs=None):
            model = self.model  # under JAX, the property syncs the state
            self.steps.append([_replicas_mean(v) for v in moving_statistics(model)])

        def error(self, saved, momentum):
            """Largest |saved statistic - its average over the steps| (Keras' rule: the first
            step's value, then momentum * average + (1 - momentum) * value)."""
            average = self.steps[0]
            for values in self.steps[1:]:
                pairs = zip(average, values, strict=True)
                average = [momentum * a + (1 - momentum) * v for a, v in pairs]
            got = [keras.ops.convert_to_numpy(v) for v in moving_statistics(saved)]
            assert len(got) == len(average) > 0
            return max(float(np.max(np.abs(g - a))) for g, a in zip(got, average, strict=True))

    return Record()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--distribution", nargs="+", default=["none"])
    parser.add_argument("--cpus", type=int, default=1, help="logical TF CPU devices")
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument(
        "--random-images",
        action="store_true",
        help="uniform random pixels instead of digits: well-conditioned enough "
        "for losses to agree across device layouts to 1e-4",
    )
    parser.add_argument(
        "--validation",
        type=int,
        default=0,
        help="validate on this many examples after the training ones, and report the "
        "saved model's loss on them",
    )
    parser.add_argument("--augment", default=None, help="an augmentation preset")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--save-every", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument(
        "--ema",
        type=float,
        default=None,
        help="average the weights with this momentum; report how far the saved model's "
        "BatchNorm statistics are from a NumPy average of the replicas' mean statistics "
        "after each step",
    )
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    if args.cpus > 1:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpus
        )
    import keras
    import numpy as np

    import keras_resvit as kr

    (x, y), _ = kr.data.load_digits()
    if args.random_images:
        x = np.random.default_rng(0).uniform(0, 255, x.shape).astype("float32")
    results = {}
    for distribution in args.distribution:
        # A new pipeline per run under the same global seed: the same shuffle order.
        keras.utils.set_random_seed(0)
        data = kr.data.load_dataset(
            (x[: args.examples], y[: args.examples]),
            "train",
            batch_size=args.batch_size,
            augment=args.augment,
            # tf.distribute rewrites the pipeline, which reseeds a shuffle: compare in order.
            shuffle=not args.random_images,
        )
        model = (
            kr.build_vit(
                image_size=32,
                patch_size=8,
                hidden_size=32,
                num_layers=2,
                num_heads=2,
                mlp_dim=64,
                num_classes=10,
                variant=None,
            )
            if args.model == "tiny_vit"
            else kr.build_resnet(8, stem="cifar", norm="group")
            if args.model == "gn_resnet8"
            else kr.build_resnet(8, stem="cifar")
            if args.model == "resnet8"
            else args.model
        )
        out = os.path.join(args.output, distribution)
        record = StatisticsAfterEachStep() if args.ema else None
        val = slice(args.examples, args.examples + args.validation)
        history = kr.train(
            model,
            data,
            epochs=args.epochs,
            output_dir=out,
            verbose=0,
            distribution=distribution,
            save_every=args.save_every,
            learning_rate=args.learning_rate,
            val_data=(x[val], y[val]) if args.validation else None,
            ema=args.ema,
            callbacks=[record] if record else None,
        )
        final = kr.load_model(os.path.join(out, "last.keras"))
        saved_val_loss = None
        if args.validation:
            scores = final.evaluate(x[val], y[val], batch_size=args.batch_size, verbose=0)
            saved_val_loss = scores[0]

        def checksum(m):
            return float(sum(np.abs(keras.ops.convert_to_numpy(w)).sum() for w in m.weights))

        results[distribution] = {
            "loss": history.history["loss"],
            "val_loss": history.history.get("val_loss"),
            "saved_val_loss": saved_val_loss,
            "weights": [keras.ops.convert_to_numpy(w).tolist() for w in final.weights[:2]],
            "checksum": checksum(final),
            # A model passed to train ends with the trained weights, also where it was cloned.
            "given_checksum": checksum(model) if isinstance(model, keras.Model) else None,
            "replicas": json.loads(Path(out, "config.json").read_text())["replicas"],
            "statistics_ema_error": record.error(final, args.ema) if record else None,
        }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
