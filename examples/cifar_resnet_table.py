r"""The CIFAR-10 table of He et al. (2016, Table 6): ResNet-20/32/44/56/110 test error.

Runs the paper's protocol (Section 4.2) for each depth and seed: option-A ResNets trained on
45k images with 5k held out for validation, SGD 0.9 with coupled weight decay 1e-4, lr 0.1 at
batch 128 divided by 10 at 32k and 48k iterations, stop at 64k (`recipe="resnet_cifar"`;
ResNet-110 and deeper warm up at 0.01 for 400 iterations: `resnet_cifar_warmup`),
pad-crop-flip augmentation. Prints mean +- std test error over the seeds next to the paper's,
optionally with the plain nets of the degradation figure, and writes `table.csv` and
`table.md` into --output, beside one run folder per net and seed.

CPU-friendly run (the bundled digits for 3 epochs; a few minutes on 2 cores; digits are far
easier than CIFAR-10, so the errors are not comparable to the paper's):
    python examples/cifar_resnet_table.py --output runs/cifar_table

The paper's protocol (CIFAR-10 through tensorflow-datasets, an image folder with train/ and
test/, or an .npz with x_train, y_train, x_test, y_test; an accelerator):
    python examples/cifar_resnet_table.py --data tfds:cifar10 --seeds 0 1 2 3 4 \
        --plain-depths 20 32 44 56 --output runs/cifar_table
"""

import argparse
from pathlib import Path

# He et al. (2016), Table 6: CIFAR-10 test error (%) of the option-A ResNets (110: the best
# of 5 runs; their mean is 6.61 +- 0.16), and Figure 6 (left) for the plain nets, which the
# paper plots without a table.
PAPER_TEST_ERROR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}
PAPER_TRAIN_IMAGES = 45_000  # the rest of CIFAR-10's 50k training images is validation
WARMUP_FROM_DEPTH = 110


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", default="digits", help="digits, tfds:cifar10, a folder or an .npz"
    )
    parser.add_argument(
        "--depths",
        type=int,
        nargs="+",
        default=[20, 32, 44, 56, 110],
        help="6n+2 depths of the ResNets (default: 20 32 44 56 110; 1202 when asked)",
    )
    parser.add_argument(
        "--plain-depths",
        type=int,
        nargs="*",
        default=[],
        help="also train these plain nets (the degradation figure: 20 32 44 56)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="default: 0")
    length = parser.add_mutually_exclusive_group()
    length.add_argument(
        "--epochs", type=int, help="default: 3 on digits, else the paper's 64k iterations"
    )
    length.add_argument("--steps", type=int, help="optimizer steps instead of epochs")
    parser.add_argument("--batch-size", type=int, default=128, help="default: 128 (the paper)")
    parser.add_argument(
        "--split",
        choices=["paper", "all"],
        default="paper",
        help="paper: train on 45k, validate on 5k (default); all: train on every image",
    )
    parser.add_argument("--output", default="runs/cifar_table", help="output folder")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace finished runs in the output folder"
    )
    return parser.parse_args(argv)


def load_splits(kr, args, seed):
    """(train, validation or None, test) datasets; `validation` is the paper's 5k hold-out."""
    source, common = args.data, {"batch_size": args.batch_size, "seed": seed}
    augment = None if source == "digits" else "resnet_cifar"  # flips would change digits
    if source.endswith(".npz"):
        import numpy as np

        with np.load(source) as arrays:
            train_arrays = (arrays["x_train"], arrays["y_train"])
            source_test = (arrays["x_test"], arrays["y_test"])
        source = train_arrays
    else:
        source_test = source
    test = kr.data.load_dataset(source_test, "test", **common)
    if args.split == "all" or source == "digits":
        return kr.data.load_dataset(source, "train", augment=augment, **common), None, test
    if isinstance(source, str) and source.startswith("tfds:"):
        splits = (f"train[:{PAPER_TRAIN_IMAGES}]", f"train[{PAPER_TRAIN_IMAGES}:]")
        train = kr.data.load_dataset(source, splits[0], augment=augment, **common)
        validation = kr.data.load_dataset(source, splits[1], training=False, **common)
        return train, validation, test
    if isinstance(source, tuple):
        images, labels = source
        held_out = len(images) // 10
        train = kr.data.load_dataset(
            (images[:-held_out], labels[:-held_out]), "train", augment=augment, **common
        )
        validation = kr.data.load_dataset(
            (images[-held_out:], labels[-held_out:]), "test", **common
        )
        return train, validation, test
    # An image folder: train/ split 90/10 (45k/5k on CIFAR-10), test/ for the test error.
    fraction = {"validation_split": 0.1, "image_size": 32}
    train = kr.data.load_dataset(
        Path(source) / "train", "train", augment=augment, **fraction, **common
    )
    validation = kr.data.load_dataset(Path(source) / "train", "validation", **fraction, **common)
    test = kr.data.load_dataset(source, "test", image_size=32, crop_ratio=1.0, **common)
    return train, validation, test


def main(argv=None):
    args = parse_args(argv)
    # Imported after parsing, so that --help answers without loading TensorFlow.
    import keras_resvit as kr
    from keras_resvit.base.files import write_csv, write_text
    from keras_resvit.base.output_folders import output_folder

    if args.epochs is None and args.steps is None and args.data == "digits":
        args.epochs = 3
    nets = [(depth, False) for depth in args.depths]
    nets += [(depth, True) for depth in args.plain_depths]
    # Locked, and refusing a table of the user's before any training.
    with output_folder("--output", args.output, ["table.csv", "table.md"]) as folder:
        runs = []
        for seed in args.seeds:
            data = load_splits(kr, args, seed)
            runs += [train_net(kr, depth, plain, seed, data, args) for depth, plain in nets]
        rows = summarize(runs)
        folder.start_writing()
        write_csv(Path(args.output) / "table.csv", rows)
        write_text(Path(args.output) / "table.md", markdown_table(rows, args))
    print(markdown_table(rows, args))
    print(f"wrote {Path(args.output) / 'table.csv'} and table.md")


def train_net(kr, depth, plain, seed, data, args):
    """One net and seed of the table: trained with the paper's recipe, its test error."""
    train, validation, test = data
    model = kr.build_resnet(depth, stem="cifar", plain=plain, num_classes=train.num_classes)
    recipe = "resnet_cifar_warmup" if depth >= WARMUP_FROM_DEPTH else "resnet_cifar"
    history = kr.train(
        model,
        train,
        recipe=recipe,
        epochs=args.epochs,
        steps=args.steps,
        val_data=validation if validation is not None else test,
        output_dir=Path(args.output) / f"{model.name}-seed{seed}",
        seed=seed,
        overwrite=args.overwrite,
        verbose=2,
    )
    trained = history.model
    trained.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    test_accuracy = trained.evaluate(test, verbose=0)[1]
    return {
        "net": model.name,
        "depth": depth,
        "plain": plain,
        "seed": seed,
        "params": kr.count_params(model),
        "train_error": 100 * (1 - history.history["accuracy"][-1]),
        "test_error": 100 * (1 - test_accuracy),
    }


def summarize(runs):
    """One row per net: mean and standard deviation over its seeds."""
    import numpy as np

    rows = []
    for net in dict.fromkeys(run["net"] for run in runs):
        mine = [run for run in runs if run["net"] == net]
        test = np.array([run["test_error"] for run in mine])
        train = np.array([run["train_error"] for run in mine])
        paper = None if mine[0]["plain"] else PAPER_TEST_ERROR.get(mine[0]["depth"])
        rows.append(
            {
                "net": net,
                "params": mine[0]["params"],
                "seeds": len(mine),
                "test_error": round(float(test.mean()), 2),
                "test_error_std": round(float(test.std()), 2),
                "train_error": round(float(train.mean()), 2),
                "paper_test_error": paper,
            }
        )
    return rows


def markdown_table(rows, args):
    length = f"{args.epochs} epochs" if args.epochs else f"{args.steps or '64k'} steps"
    lines = [
        f"{args.data}, {length} of batch {args.batch_size}, split {args.split!r}:",
        "",
        "| net | params | seeds | test error % | train error % | paper test error % |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        paper = row["paper_test_error"]
        lines.append(
            f"| {row['net']} | {row['params']:,} | {row['seeds']} | {row['test_error']:.2f} ± "
            f"{row['test_error_std']:.2f} | {row['train_error']:.2f} | "
            f"{'-' if paper is None else f'{paper:.2f}'} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
