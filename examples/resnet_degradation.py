r"""The degradation problem (He et al. 2016, Figure 6): deeper plain nets train worse.

Trains plain and residual CIFAR nets (3x3 stem, three stages of 16/32/64 filters, option-A
shortcuts) of each depth with the paper's CIFAR recipe (SGD 0.9, lr 0.1 at batch 128 divided by
10 at 50% and 75% of training, weight decay 1e-4) and draws training error (dashed) and test
error (solid) against iterations: plain nets in the left panel, ResNets in the right one.
Writes `degradation.png`, `degradation.csv` (net, epoch, iteration, errors) and one run folder
per net (checkpoints, history.csv) into --output.

CPU-friendly run (the bundled digits, upscaled to 32x32, 8 epochs of batch 64, i.e. 184
iterations at lr 0.05, the paper's rate scaled to the batch; about 10 minutes on 2 cores):
    KERAS_BACKEND=jax python examples/resnet_degradation.py --output runs/degradation

The paper's setting (CIFAR-10 with pad-crop-flip augmentation, 64k iterations of batch 128,
i.e. about 182 epochs of 45k images; needs an accelerator):
    python examples/resnet_degradation.py --data tfds:cifar10 --depths 20 32 44 56 \
        --epochs 182 --batch-size 128 --output runs/degradation_cifar10
"""

import argparse
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="digits", help="dataset source (default: digits)")
    parser.add_argument(
        "--depths", type=int, nargs="+", default=[20, 56], help="6n+2 depths (default: 20 56)"
    )
    parser.add_argument("--epochs", type=int, default=8, help="epochs per net (default: 8)")
    parser.add_argument("--batch-size", type=int, default=64, help="default: 64 (paper: 128)")
    parser.add_argument("--seed", type=int, default=0, help="weights and shuffling seed")
    parser.add_argument("--output", default="runs/degradation", help="output folder")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace finished runs in the output folder"
    )
    return parser.parse_args(argv)


def train_curves(kr, depth, plain, train, test, args):
    """Trains one net; returns its rows (net, epoch, iteration, train/test error in %)."""
    name = f"{'plain' if plain else 'resnet'}{depth}"
    model = kr.build_resnet(
        depth, stem="cifar", plain=plain, num_classes=train.num_classes, name=name
    )
    history = kr.train(
        model,
        train,
        recipe="resnet_cifar",
        epochs=args.epochs,
        val_data=test,
        output_dir=Path(args.output) / name,
        seed=args.seed,
        overwrite=args.overwrite,
        verbose=2,
    ).history
    steps = int(train.cardinality())
    return [
        {
            "net": name,
            "plain": plain,
            "depth": depth,
            "epoch": epoch + 1,
            "iteration": (epoch + 1) * steps,
            "train_error": 100 * (1 - history["accuracy"][epoch]),
            "test_error": 100 * (1 - history["val_accuracy"][epoch]),
        }
        for epoch in range(len(history["accuracy"]))
    ]


def plot(rows, path):
    """Figure 6's layout: training error dashed, test error solid, one colour per depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_resvit.base.files import atomic_path

    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, plain, title in ((axes[0], True, "plain"), (axes[1], False, "ResNet")):
        nets = dict.fromkeys(r["net"] for r in rows if r["plain"] == plain)
        for color, net in zip(plt.cm.tab10.colors, nets, strict=False):
            curve = [r for r in rows if r["net"] == net]
            x = [r["iteration"] for r in curve]
            label = f"{title}-{curve[0]['depth']}"
            ax.plot(x, [r["train_error"] for r in curve], "--", color=color, label=f"{label} train")
            ax.plot(x, [r["test_error"] for r in curve], "-", color=color, label=f"{label} test")
        ax.set_title(f"{title} networks")
        ax.set_xlabel("iterations")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("error (%)")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)


def main(argv=None):
    args = parse_args(argv)
    # Imported after parsing, so that --help answers without loading TensorFlow.
    import keras_resvit as kr
    from keras_resvit.base.files import write_csv
    from keras_resvit.base.output_folders import output_folder

    # Flips and crops would change digits; CIFAR gets the paper's pad-crop-flip.
    augment = None if args.data == "digits" else "resnet_cifar"
    train = kr.data.load_dataset(
        args.data, "train", batch_size=args.batch_size, augment=augment, seed=args.seed
    )
    test = kr.data.load_dataset(args.data, "test", batch_size=args.batch_size)
    output = Path(args.output)
    # Locked, and refusing files of these names of the user's before any training.
    with output_folder("--output", output, ["degradation.csv", "degradation.png"]) as folder:
        rows = []
        for plain in (True, False):
            for depth in args.depths:
                rows += train_curves(kr, depth, plain, train, test, args)
        folder.start_writing()
        write_csv(output / "degradation.csv", rows)
        plot(rows, output / "degradation.png")
    print(f"\n{'net':<10} {'train error %':>14} {'test error %':>13}  (after {args.epochs} epochs)")
    for row in rows:
        if row["epoch"] == args.epochs:
            print(f"{row['net']:<10} {row['train_error']:>14.2f} {row['test_error']:>13.2f}")
    print(f"wrote {output / 'degradation.png'} and {output / 'degradation.csv'}")


if __name__ == "__main__":
    main()
