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
    from keras_resvit.models.common import is_vit
    from keras_resvit.training.recipes import get_recipe

    recipe = get_recipe(args.recipe)
    model = kr.create_model(args.model)
    # A recipe's resolution (vit_finetune: 384) applies to ViTs, which resize_vit adapts.
    size = args.image_size or model.input_shape[1]
    if args.image_size is None and recipe.image_size and is_vit(model):
        size = recipe.image_size
    augment = args.augment
    if augment == "auto":
        # The recipe's augmentation, except on digits, which flips and crops would change.
        augment = None if args.data == "digits" else recipe.augment
    train = kr.data.load_dataset(
        args.data,
        "train",
        image_size=size,
        batch_size=args.batch_size,
        augment=None if augment == "none" else augment,
    )
    test = kr.data.load_dataset(args.data, "test", image_size=size, batch_size=args.batch_size)
    history = kr.train(
        model,
        train,
        recipe=args.recipe,
        epochs=args.epochs,
        val_data=test,
        output_dir=args.output,
        learning_rate=args.learning_rate,
        distribution=args.distribution,
        precision=args.precision,
        save_every=args.save_every,
        verbose=1 if sys.stdout.isatty() else 2,
    )
    summary = history.summary
    _, accuracy = model.evaluate(test, verbose=0)
    print(
        f"\n{summary['model']}: {summary['epochs']} epochs in {summary['seconds']:.0f} s "
        f"({summary['images_per_second']:.0f} images/s)"
    )
    print(f"test accuracy {accuracy:.4f} (last), {summary['best_val_accuracy']:.4f} (best)")
    print(f"saved {args.output}/last.keras, best.keras, history.csv, curves.png, config.json")
    if args.tflite:
        result = kr.export(
            os.path.join(args.output, "last.keras"),
            os.path.join(args.output, "model.tflite"),
            format="tflite",
        )
        print(
            f"exported {result['path']} (max abs difference vs Keras "
            f"{result['max_abs_difference']:.1e})"
        )


def _evaluate(args):
    import keras_resvit as kr

    model = kr.load_model(args.model)
    size = model.input_shape[1]
    data = kr.data.load_dataset(args.data, args.split, image_size=size, batch_size=args.batch_size)
    soft = len(data.element_spec[1].shape) == 2
    loss = "categorical_crossentropy" if soft else "sparse_categorical_crossentropy"
    model.compile(loss=loss, metrics=["accuracy"])
    loss, accuracy = model.evaluate(data, verbose=0)
    print(f"{args.model} on {args.data} ({args.split}): accuracy {accuracy:.4f}, loss {loss:.4f}")


def _export(args):
    import keras_resvit as kr

    kr.export(
        args.model,
        args.output,
        format=args.format,
        quantization=args.quantization,
        representative_data=args.calibration,
    )


def _predict(args):
    from keras_resvit.predict import predict

    results = predict(args.model, args.images, top_k=args.top_k)
    for image, top in zip(args.images, results, strict=True):
        best = ", ".join(
            f"{c['name'] if c['name'] is not None else c['index']} {c['score']:.3f}" for c in top
        )
        print(f"{image}: {best}")


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

    p = commands.add_parser(
        "train", help="train a model; with no arguments resnet20 on the bundled digits"
    )
    p.add_argument("--model", default="resnet20", help="registry name (default: resnet20)")
    p.add_argument("--data", default="digits", help="dataset source (default: digits, offline)")
    p.add_argument("--recipe", default="resnet_cifar", help="training recipe")
    p.add_argument("--epochs", type=int, default=10, help="default: 10")
    p.add_argument("--batch-size", type=int, default=64, help="global batch size")
    p.add_argument("--image-size", type=int, default=None, help="default: the model's")
    p.add_argument("--learning-rate", type=float, default=None, help="override the recipe's")
    p.add_argument(
        "--augment",
        default="auto",
        help="preset name, none, or auto (the recipe's; none on digits)",
    )
    p.add_argument(
        "--distribution", default="auto", help="auto, none, tpu, mirrored, data_parallel"
    )
    p.add_argument("--precision", default="auto", help="auto, float32, mixed_float16, ...")
    p.add_argument("--save-every", type=int, default=None, help="resume checkpoint every N steps")
    p.add_argument("--output", default="runs/digits", help="output folder (default: runs/digits)")
    p.add_argument(
        "--no-tflite",
        dest="tflite",
        action="store_false",
        help="skip the TF Lite export of the trained model",
    )
    p.set_defaults(run=_train)

    p = commands.add_parser("evaluate", help="accuracy of a saved model on a dataset")
    p.add_argument("model", help="a .keras file")
    p.add_argument("--data", default="digits")
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(run=_evaluate)

    p = commands.add_parser("export", help="export a .keras file to TF Lite, SavedModel or ONNX")
    p.add_argument("model", help="a .keras file")
    p.add_argument("output", help="a .tflite or .onnx file, or a SavedModel folder")
    p.add_argument("--format", default="tflite", help="tflite (default), saved_model, onnx")
    p.add_argument("--quantization", default=None, help="TF Lite: float16, dynamic or int8")
    p.add_argument(
        "--calibration", default=None, help="int8 calibration images: digits or an image folder"
    )
    p.set_defaults(run=_export)

    p = commands.add_parser("predict", help="top-k classes of images with a .keras or .tflite")
    p.add_argument("model", help="a .keras or .tflite file")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, GIF)")
    p.add_argument("--top-k", type=int, default=5)
    p.set_defaults(run=_predict)
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
