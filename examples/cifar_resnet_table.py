"""The CIFAR-10 table of He et al. (2016, Table 6): ResNet-20/32/44/56/110 test error.

Trains each CIFAR ResNet (option-A shortcuts) with the paper's recipe (`resnet_cifar`: SGD 0.9,
lr 0.1 at batch 128 divided by 10 at 50% and 75% of training, weight decay 1e-4, pad-crop-flip
augmentation on CIFAR) and prints its parameters and final test error next to the paper's.
Also writes the table as `table.csv` into --output, beside one run folder per net.

CPU-friendly run (the bundled digits for 3 epochs; a few minutes on 2 cores; digits are far
easier than CIFAR-10, so the errors are not comparable to the paper's):
    python examples/cifar_resnet_table.py --output runs/cifar_table

The paper's setting (CIFAR-10, 64k iterations of batch 128, about 182 epochs; an accelerator;
the paper trained on 45k images and held 5k out, this trains on all 50k):
    python examples/cifar_resnet_table.py --data tfds:cifar10 --epochs 182 --batch-size 128 \
        --output runs/cifar_table
"""

import argparse
from pathlib import Path

# He et al. (2016), Table 6: CIFAR-10 test error (%) of the option-A ResNets.
PAPER_TEST_ERROR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="digits", help="dataset source (default: digits)")
    parser.add_argument(
        "--depths",
        type=int,
        nargs="+",
        default=[20, 32, 44, 56, 110],
        help="6n+2 depths (default: 20 32 44 56 110)",
    )
    parser.add_argument("--epochs", type=int, default=3, help="default: 3 (the paper: 182)")
    parser.add_argument("--batch-size", type=int, default=128, help="default: 128 (the paper)")
    parser.add_argument("--seed", type=int, default=0, help="weights and shuffling seed")
    parser.add_argument("--output", default="runs/cifar_table", help="output folder")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace finished runs in the output folder"
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # Imported after parsing, so that --help answers without loading TensorFlow.
    import keras_resvit as kr
    from keras_resvit.files import write_csv
    from keras_resvit.output_folders import output_folder

    # Flips and crops would change digits; CIFAR gets the paper's pad-crop-flip.
    augment = None if args.data == "digits" else "resnet_cifar"
    train = kr.data.load_dataset(
        args.data, "train", batch_size=args.batch_size, augment=augment, seed=args.seed
    )
    test = kr.data.load_dataset(args.data, "test", batch_size=args.batch_size)
    # Locked, and refusing a table.csv of the user's before any training.
    with output_folder("--output", args.output, ["table.csv"]) as folder:
        rows = [train_depth(kr, depth, train, test, args) for depth in args.depths]
        folder.start_writing()
        path = Path(args.output) / "table.csv"
        write_csv(path, rows)
    print_table(rows, args)
    print(f"wrote {path}")


def train_depth(kr, depth, train, test, args):
    """One net of the table: trained with the paper's recipe, its test error."""
    model = kr.build_resnet(depth, stem="cifar", num_classes=train.num_classes)
    history = kr.train(
        model,
        train,
        recipe="resnet_cifar",
        epochs=args.epochs,
        val_data=test,
        output_dir=Path(args.output) / model.name,
        seed=args.seed,
        overwrite=args.overwrite,
        verbose=2,
    )
    return {
        "depth": depth,
        "params": kr.count_params(model),
        "test_error": 100 * (1 - history.history["val_accuracy"][-1]),
        "paper_test_error": PAPER_TEST_ERROR.get(depth),
    }


def print_table(rows, args):
    print(f"\n{args.data}, {args.epochs} epochs of batch {args.batch_size}:")
    print(f"{'net':<12} {'params':>10} {'test error %':>13} {'paper (CIFAR-10) %':>19}")
    for row in rows:
        paper = row["paper_test_error"]
        paper = "-" if paper is None else f"{paper:.2f}"
        print(
            f"ResNet-{row['depth']:<5} {row['params']:>10,} {row['test_error']:>13.2f} {paper:>19}"
        )


if __name__ == "__main__":
    main()
