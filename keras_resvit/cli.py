"""`keras-resvit` console script: parse arguments, call the public API, print.

Nothing heavy is imported at module level: `--help` answers without loading Keras, and each
command imports the package when it runs. Unless `--verbose` (or `--debug`), the libraries'
start-up logs are silenced before TensorFlow loads, and warnings print as one line.
"""

import argparse
import contextlib
import json
import os
import re
import sys
import threading
import warnings
from pathlib import Path

# Families whose builders take `image_size`; the others take `input_shape`.
VIT_FAMILIES = ("vit", "hybrid_vit")
# Share of a plain image folder (no train/ test/ sub-folders) held out for validation.
DEFAULT_VALIDATION_SPLIT = 0.1
# Python loggers of the libraries, quieted to errors unless --verbose (AutoGraph's
# "could not transform" notices, JAX's platform fallbacks).
LIBRARY_LOGGERS = ("tensorflow", "jax", "absl")
# C++ notices printed straight to stderr whatever TF_CPP_MIN_LOG_LEVEL says: absl's lines from
# before its logging starts ("I0000 00:00:1796.. 1234 port.cc:153] oneDNN custom operations
# are on", CUDA drivers not found) and the TF Lite interpreter's delegate notice.
NOTICE = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog|[IWE]\d{4} [\d:.]+ +\d+ \S+:\d+\]"
    rb"|INFO: Created TensorFlow Lite|To enable the following instructions"
)


def _list(args):
    from keras_resvit.models.registry import get_spec, list_models

    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"pattern={args.pattern!r} matches no model; try 'resnet*' or 'vit_*'.")
    for name in names:
        print(f"{name:<16} {get_spec(name).description}")


def _family(name):
    from keras_resvit.models.registry import get_spec

    return get_spec(name).family


def _size_options(name, size):
    """`create_model` keywords for `size` x `size` images: ViTs take `image_size`, the other
    families `input_shape`."""
    if _family(name) in VIT_FAMILIES:
        return {"image_size": size}
    return {"input_shape": (size, size, 3)}


def _info(args):
    import keras_resvit as kr

    overrides = _size_options(args.name, args.image_size) if args.image_size else {}
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


def _is_folder(source):
    return source != "digits" and not source.startswith("tfds:")


def _folder(flag, source):
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{flag} {source!r} is not a folder; pass an image folder (one sub-folder of "
            "images per class), digits, or tfds:NAME (e.g. tfds:cifar10)."
        )
    return folder


def _validation_source(source):
    """`load_dataset` arguments for --val-data: a folder's validation/ or test/ sub-folder,
    else all of the folder; another source's test split."""
    if not _is_folder(source):
        return {"source": source, "split": "test"}
    folder = _folder("--val-data", source)
    for split in ("validation", "test"):
        if (folder / split).is_dir():
            return {"source": folder, "split": split}
    # All of a plain folder: read as a training split, without augmentation or shuffling.
    return {"source": folder, "split": "train", "shuffle": False}


def _splits(args):
    """`load_dataset` arguments of the training and the validation data, and a note saying
    what is held out (or None): --val-data where given; a folder's validation/ or test/
    sub-folder, else a share of its images; another source's test split."""
    fraction = args.validation_split
    if fraction is not None and args.val_data:
        raise ValueError(
            f"--validation-split {fraction} and --val-data {args.val_data} both choose the "
            "validation data; pass one."
        )
    if not _is_folder(args.data):
        if fraction is not None:
            raise ValueError(
                f"--validation-split {fraction} holds out part of an image folder; --data "
                f"{args.data} has its own test split (--val-data validates on another source)."
            )
        val = _validation_source(args.val_data or args.data)
        return {"source": args.data, "split": "train"}, val, None
    folder = _folder("--data", args.data)
    train = {"source": folder, "split": "train"}
    if args.val_data:
        return train, _validation_source(args.val_data), None
    if (folder / "train").is_dir():
        held = [s for s in ("validation", "test") if (folder / s).is_dir()]
        if held and fraction is None:
            return train, {"source": folder, "split": held[0]}, None
        folder = folder / "train"  # a share of the training images is held out
    fraction = DEFAULT_VALIDATION_SPLIT if fraction is None else fraction
    note = f"holding out {fraction:.0%} of {folder} for validation (--validation-split)"
    held_out = {"source": folder, "validation_split": fraction}
    return {**held_out, "split": "train"}, {**held_out, "split": "validation"}, note


def _load_training_data(kr, args, splits, recipe, augment):
    """(training data, validation data, image size, why that size): --image-size; for a ViT
    the recipe's resolution; the data's own size; the model's for images of varying size."""
    train_split, val_split, _ = splits
    options = {"batch_size": args.batch_size}
    size, why, train = args.image_size, "--image-size", None
    # A recipe's resolution (vit_finetune: 384) applies to ViTs, which train at any size.
    if not size and recipe.image_size and _family(args.model) in VIT_FAMILIES:
        size, why = recipe.image_size, f"the {args.recipe} recipe's"
    if not size and not _is_folder(args.data):
        with contextlib.suppress(ValueError):  # images of varying size: the model's own
            train = kr.data.load_dataset(**train_split, **options, augment=augment)
            size, why = int(train.element_spec[0].shape[1]), "from the data"
    if not size:
        size = kr.create_model(args.model).input_shape[1]
        why = "the model's default; --image-size sets another"
    if train is None:
        train = kr.data.load_dataset(**train_split, **options, image_size=size, augment=augment)
    val = kr.data.load_dataset(**val_split, **options, image_size=size)
    return train, val, size, why


def _model_for_data(kr, args, train, size, why):
    """The registry model built for the data: its class count and image size unless
    --num-classes / --image-size say otherwise; prints what was chosen."""
    classes, classes_why = args.num_classes, "--num-classes"
    if classes is None and train.num_classes:
        classes, classes_why = train.num_classes, "from the data"
    from keras_resvit.training.recipes import recipe_model_options

    # What the recipe sets in a model it is the paper's recipe for (a ViT's dropout and stochastic
    # depth, its pre-training head), as kr.train does for a model it builds by name.
    options = {**recipe_model_options(args.model, args.recipe), **_size_options(args.model, size)}
    if classes is not None:
        options["num_classes"] = classes
    try:
        model = kr.create_model(args.model, **options)
    except ValueError as error:
        raise ValueError(
            f"--model {args.model} cannot be built at {size}x{size} ({why}): {error}"
        ) from error
    if classes is None:
        classes, classes_why = model.output_shape[-1], "the model's default"
    print(f"model: {args.model} for {classes} classes ({classes_why}) at {size}x{size} ({why})")
    return model


def _default_output(data):
    """runs/<the data's name>: runs/digits, runs/flowers, runs/cifar10."""
    name = data[5:] if data.startswith("tfds:") else Path(data).expanduser().resolve().name
    return os.path.join("runs", re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "data")


def _check_previous_run(output, overwrite):
    """Refuses, before any data is read, to replace a finished run in --output without
    --overwrite, and says when --overwrite replaces one. (`kr.train` says where an
    interrupted run resumes.)"""
    from keras_resvit.training.run_folder import CONFIG_FILE, RUN_FILES

    folder = Path(output)
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return  # no run there; anything else in the way, kr.train names
    if not isinstance(config, dict) or "result" not in config:
        return
    finished = config["result"] is not None
    if overwrite:
        kind = "finished" if finished else "interrupted"
        print(f"replacing the {kind} run in {output} (--overwrite)")
    elif finished:
        files = [name for name in RUN_FILES if (folder / name).is_file()]
        files = ", ".join(files[:4]) + (", ..." if len(files) > 4 else "")
        raise ValueError(
            f"--output {output} holds a finished run ({files}); pass --overwrite to replace "
            "it, or another --output."
        )


def _train(args):
    import keras_resvit as kr
    from keras_resvit.training.recipes import get_recipe

    _family(args.model)  # unknown names fail before anything is read
    recipe = get_recipe(args.recipe)
    output = args.output or _default_output(args.data)
    _check_previous_run(output, args.overwrite)
    splits = _splits(args)
    if splits[2]:
        print(splits[2])
    augment = args.augment
    if augment == "auto":
        # The recipe's augmentation, except on digits, which flips and crops would change.
        augment = None if args.data == "digits" else recipe.augment
    augment = None if augment == "none" else augment
    train, val, size, why = _load_training_data(kr, args, splits, recipe, augment)
    model = _model_for_data(kr, args, train, size, why)
    history = kr.train(
        model,
        train,
        recipe=args.recipe,
        epochs=args.epochs,
        val_data=val,
        output_dir=output,
        learning_rate=args.learning_rate,
        distribution=args.distribution,
        precision=args.precision,
        save_every=args.save_every,
        overwrite=args.overwrite,
        verbose=1 if sys.stdout.isatty() else 2,
    )
    from keras_resvit.base.output_folders import output_folder

    with output_folder("--output", output, ["curves.png"]) as folder:
        folder.start_writing()
        kr.viz.plot_history(history, Path(output) / "curves.png")
    summary = history.summary
    ran = f"{summary['epochs']} epoch{'s' if summary['epochs'] > 1 else ''}"
    if summary["resumed_from_step"]:
        ran += f", resumed from step {summary['resumed_from_step']} of {summary['steps']},"
    print(
        f"\n{summary['model']}: {ran} in {summary['seconds']:.0f} s "
        f"({summary['images_per_second']:.0f} images/s)"
    )
    # The last epoch's validation is the trained model's accuracy: no second evaluation,
    # and no question of which model object `kr.train` trained (a ViT it resized, a clone
    # under a distribution strategy).
    name = "test" if splits[1]["split"] == "test" else "validation"
    last = history.history["val_accuracy"][-1]
    print(f"{name} accuracy {last:.4f} (last), {summary['best_val_accuracy']:.4f} (best)")
    print(f"saved {output}/last.keras, best.keras, history.csv, curves.png, config.json")
    if args.tflite:
        from keras_resvit.export import export_summary

        exported = ["model.tflite", "model.classes.json"]
        with output_folder("--output", output, exported) as folder:
            folder.start_writing()
            result = kr.export(
                os.path.join(output, "last.keras"),
                os.path.join(output, "model.tflite"),
                format="tflite",
            )
        print(export_summary(result))


def _evaluate(args):
    import keras

    import keras_resvit as kr
    from keras_resvit.base.class_names import read_class_names
    from keras_resvit.data import checks
    from keras_resvit.models.common import check_classifier, outputs_logits

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
    from keras_resvit.export import export_summary, format_from_path

    result = kr.export(
        args.model,
        args.output,
        format=args.format or format_from_path(args.output),
        quantization=args.quantization,
        representative_data=args.calibration,
    )
    print(export_summary(result))


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
        from keras_resvit.base.class_names import check_class_names, read_class_names
        from keras_resvit.base.model_files import load_model
        from keras_resvit.data.image_files import load_images

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


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not valid; expected a fraction between 0 and 1, e.g. 0.1"
        )
    return value


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
    parser.add_argument("--debug", action="store_true", help="show full tracebacks (and logs)")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show the libraries' logs and warnings (TensorFlow's start-up logs included)",
    )
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
    p.add_argument(
        "--data",
        default="digits",
        help="digits (default, offline), tfds:NAME, or an image folder: one sub-folder per "
        "class, or train/ and validation/ or test/ sub-folders of those",
    )
    p.add_argument(
        "--validation-split",
        type=_fraction,
        default=None,
        metavar="FRACTION",
        help="share of an image folder held out for validation (default: 0.1 where the folder "
        "has no validation/ or test/ sub-folder)",
    )
    p.add_argument(
        "--val-data",
        default=None,
        metavar="SOURCE",
        help="validation data from another source: a folder (its validation/ or test/ "
        "sub-folder, else all of it), digits or tfds:NAME (their test split)",
    )
    p.add_argument(
        "--num-classes",
        type=_positive_int,
        default=None,
        help="classifier size (default: the data's number of classes)",
    )
    p.add_argument("--recipe", default="resnet_cifar", help="training recipe")
    p.add_argument("--epochs", type=_positive_int, default=10, help="default: 10")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="global batch size")
    p.add_argument(
        "--image-size",
        type=_positive_int,
        default=None,
        help="height and width of the images and the model (default: the data's size, or "
        "the model's for images of varying size; a ViT recipe's resolution for ViTs)",
    )
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
    p.add_argument(
        "--output", default=None, help="output folder (default: runs/<data name>, e.g. runs/digits)"
    )
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


@contextlib.contextmanager
def _notices_dropped():
    """Passes on, line by line, what is written to file descriptor 2 in the block (C++ logs
    too), except the libraries' start-up notices (`NOTICE`)."""
    sys.stderr.flush()
    stderr = os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)

    def forward():
        with os.fdopen(read, "rb") as lines:
            for line in lines:
                if not NOTICE.match(line):
                    os.write(stderr, line)

    thread = threading.Thread(target=forward, daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(stderr, 2)  # closes the pipe's write end: the thread reads to its end
        thread.join(timeout=10)
        if not thread.is_alive():  # else a child process holds the pipe: leave its fd open
            os.close(stderr)


def _quiet():
    """Quiets the libraries' logs before they load, unless the user set
    TF_CPP_MIN_LOG_LEVEL: TensorFlow's and XLA's C++ logs to fatal errors (level 3, inherited
    by the export's subprocess), their Python loggers to errors; returns the context that
    drops the start-up notices no level governs (`_notices_dropped`)."""
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    # JAX sets "1" when it loads and finds the variable unset: not the user's choice.
    if level is not None and not (level == "1" and "jax" in sys.modules):
        return contextlib.nullcontext()
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import logging

    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    return _notices_dropped()


@contextlib.contextmanager
def _one_line_warnings(command):
    """Warnings print as `keras-resvit COMMAND: warning: ...` in the block. (Formatting, not
    showing: warnings that a caller records, as pytest does, stay recorded.)"""
    default = warnings.formatwarning

    def one_line(message, category, filename, lineno, line=None):
        return f"keras-resvit {command}: warning: {_one_line(message)}\n"

    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = default


def main(argv=None) -> int:
    """Entry point; returns the exit code (2: bad usage or input, 1: runtime failure, 130:
    interrupted by Ctrl-C)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit:  # usage errors (2) and --help (0) return like any other command
        return exit.code or 0
    verbose = args.verbose or args.debug
    try:
        # Progress, results and one-line errors only: the libraries' logs would bury the one
        # line an error prints.
        if verbose:
            args.run(args)
        else:
            with _quiet(), _one_line_warnings(args.command):
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
