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
    from keras_resvit.models.registry import get_spec

    overrides = {}
    if args.image_size:
        size = args.image_size
        overrides = {"input_shape": (size, size, 3)}
        if get_spec(args.name).family in ("vit", "hybrid_vit"):  # ViTs are sized by image_size
            overrides = {"image_size": size}
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
        overwrite=args.overwrite,
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
        from keras_resvit.output_folders import output_folder

        exported = ["model.tflite", "model.classes.json"]
        with output_folder("--output", args.output, exported) as folder:
            folder.start_writing()
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
    import keras

    import keras_resvit as kr
    from keras_resvit.data import checks
    from keras_resvit.models.common import check_classifier, outputs_logits
    from keras_resvit.predict import read_class_names

    model = kr.load_model(args.model)
    check_classifier(model, "evaluate scores class labels")
    size, classes = model.input_shape[1], model.output_shape[-1]
    data = kr.data.load_dataset(args.data, args.split, image_size=size, batch_size=args.batch_size)
    argument = f"--data {args.data}"
    checks.check_class_count(argument, data, classes)
    model_names = read_class_names(args.model)
    checks.check_class_names_match(argument, data.class_names, model_names, args.model)
    soft = len(data.element_spec[1].shape) == 2
    losses = keras.losses
    loss = losses.CategoricalCrossentropy if soft else losses.SparseCategoricalCrossentropy
    model.compile(loss=loss(from_logits=outputs_logits(model)), metrics=["accuracy"])
    with checks.data_errors():
        loss, accuracy = model.evaluate(checks.check_batches(data, classes, argument), verbose=0)
    print(f"{args.model} on {args.data} ({args.split}): accuracy {accuracy:.4f}, loss {loss:.4f}")


def _few_shot(args):
    import keras_resvit as kr

    is_file = args.model.endswith(".keras")
    model = kr.load_model(args.model) if is_file else kr.create_model(args.model)
    accuracies = kr.evaluate.few_shot(
        model,
        args.data,
        args.data,
        shots=args.shots,
        l2_regularization=args.l2,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    print(f"{args.model} few-shot linear probe on {args.data} (seed {args.seed})")
    print("shots  accuracy")
    for shots, accuracy in accuracies.items():
        print(f"{shots:>5}  {accuracy:.4f}")


def _export(args):
    import keras_resvit as kr
    from keras_resvit.export import format_from_path

    kr.export(
        args.model,
        args.output,
        format=args.format or format_from_path(args.output),
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


def _plot(args):
    from keras_resvit import viz

    if args.plot is None:
        viz.plot_history(args.history, args.output)
    else:
        from keras_resvit.files import load_model
        from keras_resvit.predict import check_class_names, load_images, read_class_names

        model = load_model(args.model)
        names = read_class_names(args.model)
        check_class_names(names, model.output_shape[-1], args.model)
        images = load_images(args.images, tuple(model.input_shape[1:3]))
        options = {key: getattr(args, key) for key in args.options}
        plot = getattr(viz, args.plot)
        plot(model, images, args.output, class_names=names, **options)
    print(f"wrote {args.output}")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (exit code 2), like the API's errors."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text):
    if not text.lstrip("+").isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected a positive int")
    return int(text)


def _plot_parser(kinds, kind, plot, options, help):
    """A `plot` sub-command: `plot` names the `keras_resvit.viz` function, `options` the
    arguments passed on to it."""
    p = kinds.add_parser(kind, help=help)
    if plot:
        p.add_argument("model", help="a .keras file")
        p.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, GIF)")
    p.add_argument("--output", required=True, help="the .png file to write")
    p.set_defaults(run=_plot, plot=plot, options=options)
    return p


def _parser():
    parser = _Parser(
        prog="keras-resvit", description="ResNets and Vision Transformers for Keras 3."
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("list", help="list registered model names")
    p.add_argument("pattern", nargs="?", default=None, help="glob filter, e.g. 'resnet*'")
    p.set_defaults(run=_list)

    p = commands.add_parser("info", help="parameters and multiply-adds of a model")
    p.add_argument("name")
    p.add_argument("--image-size", type=_positive_int, default=None)
    p.set_defaults(run=_info)

    p = commands.add_parser(
        "train", help="train a model; with no arguments resnet20 on the bundled digits"
    )
    p.add_argument("--model", default="resnet20", help="registry name (default: resnet20)")
    p.add_argument("--data", default="digits", help="dataset source (default: digits, offline)")
    p.add_argument("--recipe", default="resnet_cifar", help="training recipe")
    p.add_argument("--epochs", type=_positive_int, default=10, help="default: 10")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="global batch size")
    p.add_argument("--image-size", type=_positive_int, default=None, help="default: the model's")
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
    p.add_argument(
        "--save-every", type=_positive_int, default=None, help="resume checkpoint every N steps"
    )
    p.add_argument("--output", default="runs/digits", help="output folder (default: runs/digits)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a finished or interrupted run in the output folder (default: refuse a "
        "finished run, resume an interrupted one)",
    )
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
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.set_defaults(run=_evaluate)

    p = commands.add_parser(
        "few-shot", help="few-shot linear-probe accuracy of frozen features (ViT paper)"
    )
    p.add_argument("model", help="a .keras file or a registry name")
    p.add_argument("--data", default="digits", help="source of the train and test splits")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10, 25])
    p.add_argument("--l2", type=float, default=1024.0, help="ridge penalty (default: 1024)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(run=_few_shot)

    p = commands.add_parser("export", help="export a .keras file to TF Lite, SavedModel or ONNX")
    p.add_argument("model", help="a .keras file")
    p.add_argument("output", help="a .tflite or .onnx file, or a SavedModel folder")
    p.add_argument(
        "--format",
        default=None,
        help="tflite, saved_model or onnx (default: from the output: .tflite, .onnx, a folder)",
    )
    p.add_argument("--quantization", default=None, help="TF Lite: float16, dynamic or int8")
    p.add_argument(
        "--calibration", default=None, help="int8 calibration images: digits or an image folder"
    )
    p.set_defaults(run=_export)

    p = commands.add_parser("predict", help="top-k classes of images with a .keras or .tflite")
    p.add_argument("model", help="a .keras or .tflite file")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, GIF)")
    p.add_argument("--top-k", type=_positive_int, default=5)
    p.set_defaults(run=_predict)

    p = commands.add_parser("plot", help="training curves, Grad-CAM, attention or predictions PNG")
    kinds = p.add_subparsers(dest="kind", required=True)
    p = _plot_parser(kinds, "curves", None, (), help="loss, accuracy and learning rate of a run")
    p.add_argument("history", help="a history.csv")
    p = _plot_parser(
        kinds, "gradcam", "plot_grad_cam", ("layer", "class_index"), help="ResNet heatmaps"
    )
    p.add_argument("--layer", default=None, help="feature map to explain (default: last block)")
    p.add_argument("--class-index", type=int, default=None, help="default: the predicted class")
    p = _plot_parser(
        kinds, "attention", "plot_attention", ("discard_ratio", "head_fusion"), help="ViT rollout"
    )
    p.add_argument("--discard-ratio", type=float, default=0.0)
    p.add_argument("--head-fusion", default="mean", help="mean (default), max or min")
    p = _plot_parser(kinds, "predictions", "plot_predictions", ("top_k",), help="top-k classes")
    p.add_argument("--top-k", type=_positive_int, default=3)
    return parser


def main(argv=None) -> int:
    """Entry point; returns the exit code (2: bad usage or input, 1: runtime failure, 130:
    interrupted by Ctrl-C)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit:  # usage errors (2) and --help (0) return like any other command
        return exit.code or 0
    if not args.debug:
        # TensorFlow's C++ start-up and op logs would bury the one line an error prints.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        args.run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        again = "; run the same command again to resume" if args.command == "train" else ""
        print(f"keras-resvit {args.command}: interrupted{again}", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as error:
        if args.debug:
            raise
        print(f"keras-resvit {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - one line for users, traceback with --debug
        if args.debug:
            raise
        message = f"{type(error).__name__}: {_one_line(error)}"
        print(f"keras-resvit {args.command}: {message}", file=sys.stderr)
        return 1
    return 0


def _one_line(error):
    return " ".join(str(error).split())


if __name__ == "__main__":
    sys.exit(main())
