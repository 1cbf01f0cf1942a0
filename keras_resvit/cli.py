"""`keras-resvit` console script: parse arguments, call the public API, print."""

import argparse
import os
import sys


def _list(args):
    import keras_resvit as kr

    names = kr.list_models(args.pattern)
    if not names:
        raise ValueError(f"pattern={args.pattern!r} matches no model; try 'resnet*' or 'vit_*'.")
    from keras_resvit.models.registry import get_spec

    for name in names:
        print(f"{name:<16} {get_spec(name).description}")


def _info(args):
    import keras_resvit as kr

    overrides = {}
    if args.image_size:
        overrides["input_shape"] = (args.image_size, args.image_size, 3)
    model = kr.create_model(args.name, **overrides)
    size = model.input_shape[1:]
    print(f"model:          {args.name}")
    print(f"input:          {size[0]}x{size[1]}x{size[2]} raw pixels (0-255)")
    print(f"output:         {model.output_shape[-1]} classes")
    print(
        f"parameters:     {kr.count_params(model):,} trainable, "
        f"{kr.count_params(model, trainable_only=False):,} total"
    )
    print(f"multiply-adds:  {kr.count_macs(model) / 1e9:.3f} G per image")


def _train(args):
    import keras_resvit as kr

    model = kr.create_model(args.model)
    size = model.input_shape[1]
    train = kr.data.load_dataset(args.data, "train", image_size=size, batch_size=args.batch_size)
    test = kr.data.load_dataset(args.data, "test", image_size=size, batch_size=args.batch_size)
    kr.train(
        model,
        train,
        recipe=args.recipe,
        epochs=args.epochs,
        val_data=test,
        output_dir=args.output,
        verbose=2,
    )
    _, accuracy = model.evaluate(test, verbose=0)
    print(f"test accuracy {accuracy:.4f}; saved {os.path.join(args.output, 'last.keras')}")
    if args.tflite:
        result = kr.export(model, os.path.join(args.output, "model.tflite"), format="tflite")
        print(
            f"exported {result['path']} (max abs difference vs Keras "
            f"{result['max_abs_difference']:.1e})"
        )


def _parser():
    parser = argparse.ArgumentParser(
        prog="keras-resvit", description="ResNets and Vision Transformers for Keras 3."
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("list", help="list registered model names")
    p.add_argument("pattern", nargs="?", default=None, help="glob filter, e.g. 'resnet*'")
    p.set_defaults(run=_list)

    p = commands.add_parser("info", help="parameters and multiply-adds of a model")
    p.add_argument("name")
    p.add_argument("--image-size", type=int, default=None)
    p.set_defaults(run=_info)

    p = commands.add_parser("train", help="train a model (default: resnet20 on digits)")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--data", default="digits", help="dataset source (default: digits, offline)")
    p.add_argument("--recipe", default="resnet_cifar")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--output", default="runs/digits")
    p.add_argument(
        "--no-tflite",
        dest="tflite",
        action="store_false",
        help="skip the TF Lite export of the trained model",
    )
    p.set_defaults(run=_train)
    return parser


def main(argv=None) -> int:
    """Entry point; returns the exit code (2: bad usage or input, 1: runtime failure)."""
    args = _parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, IsADirectoryError) as error:
        if args.debug:
            raise
        print(f"keras-resvit {args.command}: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - one line for users, traceback with --debug
        if args.debug:
            raise
        print(f"keras-resvit {args.command}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
