"""The `keras-resvit` command line: one `argparse` sub-parser per command, each naming the
function of `keras_resvit.cli_commands` that runs it. Building the parser imports neither the
package's models nor Keras, so `--help` answers at once."""

import argparse


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (exit code 2), like the API's errors."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _text(text):
    """A source or path: an empty one would name the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected a source or path")
    return text


def _positive_int(text):
    if not text.lstrip("+").isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected a positive int")
    return int(text)


def _seed(text):
    if not text.lstrip("+").isdigit() or not 0 <= int(text) < 2**32:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected an int in [0, 2**32)")
    return int(text)


def _fraction(example):
    """The argparse type of a fraction strictly between 0 and 1; `example` for its message."""

    def fraction(text):
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is None or not 0.0 < value < 1.0:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not valid; expected a fraction between 0 and 1, e.g. {example}"
            )
        return value

    return fraction


def _add_list(commands):
    p = commands.add_parser("list", help="list registered model names")
    p.add_argument("pattern", nargs="?", default=None, help="glob filter, e.g. 'resnet*'")
    p.add_argument(
        "--weights",
        action="store_true",
        help="list each model's published weights: name, format, resolution, classes, top-1, "
        "license (create_model(NAME, weights=...), predict NAME:WEIGHTS)",
    )
    p.set_defaults(run="run_list")


def _add_info(commands):
    p = commands.add_parser("info", help="parameters and multiply-adds of a model")
    p.add_argument("name", help="a registry name (keras-resvit list) or a .keras file")
    p.add_argument("--image-size", type=_positive_int, default=None)
    p.set_defaults(run="run_info")


def _add_train(commands):
    p = commands.add_parser(
        "train", help="train a model; with no arguments resnet20 on the bundled digits"
    )
    _add_train_data_arguments(p)
    _add_train_run_arguments(p)
    p.set_defaults(run="run_train")


def _add_validation_split(p, help):
    """The `--validation-split FRACTION` of an image folder that `train`, `evaluate` and
    `few-shot` read (`kr.data.load_dataset`'s `validation_split`)."""
    p.add_argument(
        "--validation-split", type=_fraction(0.1), default=None, metavar="FRACTION", help=help
    )


def _add_train_data_arguments(p):
    """`train`'s model and data: what is trained on what."""
    p.add_argument("--model", default="resnet20", help="registry name (default: resnet20)")
    p.add_argument(
        "--data",
        type=_text,
        default="digits",
        help="digits (default, offline), tfds:NAME, or an image folder: one sub-folder per "
        "class, or train/ and validation/ or test/ sub-folders of those",
    )
    _add_validation_split(
        p,
        "share of an image folder held out for validation (default: 0.1 where the folder "
        "has no validation/ or test/ sub-folder)",
    )
    p.add_argument(
        "--val-data",
        type=_text,
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


def _add_process_arguments(p):
    """`train`'s process group (JAX; TensorFlow reads TF_CONFIG)."""
    p.add_argument(
        "--coordinator-address",
        default=None,
        metavar="HOST:PORT",
        help="several processes (JAX): process 0's address, the same on every process "
        "(default: KERAS_DISTRIBUTION_JOB_ADDRESSES)",
    )
    p.add_argument(
        "--num-processes",
        type=_positive_int,
        default=None,
        help="several processes (JAX): how many (default: KERAS_DISTRIBUTION_NUM_PROCESSES)",
    )
    p.add_argument(
        "--process-id",
        type=int,
        default=None,
        help="several processes (JAX): this one's index, 0 to N-1; 0 writes the output "
        "(default: KERAS_DISTRIBUTION_PROCESS_ID)",
    )
    p.add_argument(
        "--join-cluster",
        action="store_true",
        help="join the process group JAX detects itself (a Cloud TPU pod slice, SLURM)",
    )


def _add_train_run_arguments(p):
    """`train`'s recipe, its overrides and the output folder."""
    p.add_argument(
        "--recipe",
        default="resnet_cifar",
        help="training recipe (default: resnet_cifar, the ResNet paper's CIFAR recipe, whatever "
        "the model), e.g. resnet_imagenet, deit (ViTs from scratch), vit_finetune, bit_finetune, "
        "rsb_a2; an unknown name lists them all",
    )
    p.add_argument("--epochs", type=_positive_int, default=10, help="default: 10")
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=64,
        help="global batch size (default: 64); the recipe's learning rate scales with it",
    )
    p.add_argument(
        "--image-size",
        type=_positive_int,
        default=None,
        help="height and width of the images and the model (default: the data's size, or "
        "the model's for images of varying size; a ViT recipe's resolution for ViTs)",
    )
    p.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help="override the recipe's peak learning rate, given at the recipe's batch size "
        "(128 for resnet_cifar) and scaled by --batch-size / that batch, as the recipe's is",
    )
    p.add_argument(
        "--ema",
        type=_fraction(0.9999),
        default=None,
        metavar="MOMENTUM",
        help="keep a moving average of the weights and BatchNorm statistics (e.g. 0.9999), "
        "which validation and the saved models use",
    )
    p.add_argument(
        "--augment",
        default="auto",
        help="preset name, none, or auto (the recipe's; none on digits)",
    )
    p.add_argument(
        "--distribution",
        default="auto",
        help="auto, none, tpu, mirrored, multi_worker (TensorFlow, TF_CONFIG), "
        "data_parallel or model_parallel (JAX)",
    )
    p.add_argument("--precision", default="auto", help="auto, float32, mixed_float16, ...")
    _add_process_arguments(p)
    p.add_argument(
        "--save-every", type=_positive_int, default=None, help="resume checkpoint every N steps"
    )
    p.add_argument(
        "--output",
        type=_text,
        default=None,
        help="output folder (default: runs/<data name>, e.g. runs/digits)",
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


def _add_evaluate(commands):
    p = commands.add_parser(
        "evaluate", help="accuracy and cross-entropy of a saved model on a dataset"
    )
    p.add_argument("model", help="a .keras file")
    p.add_argument("--data", type=_text, default="digits")
    p.add_argument("--split", default="test")
    _add_validation_split(
        p,
        "with --split validation: the share of an image folder that `train "
        "--validation-split` held out (the same files; default: the model's run's, from the "
        "config.json beside it); with --split train: the rest",
    )
    p.add_argument("--batch-size", type=_positive_int, default=64)
    _add_evaluation_augment(p)
    p.add_argument(
        "--crops",
        choices=("center", "ten"),
        default=None,
        help="the ResNet paper's multi-crop test: average the scores of the center crop or of "
        "ten crops (corners, center and flips) at each of --scales; prints top-1 and top-5",
    )
    p.add_argument(
        "--scales",
        type=_positive_int,
        nargs="+",
        default=None,
        metavar="SIDE",
        help="with --crops: shorter sides the images are resized to, each >= the model's "
        "input size (default: the input size / 0.875, e.g. 256 for 224)",
    )
    p.set_defaults(run="run_evaluate")


def _add_evaluation_augment(p):
    """--augment of the commands that score images as evaluation reads them."""
    p.add_argument(
        "--augment",
        default="auto",
        metavar="PRESET",
        help="read the images with this augmentation preset's evaluation transform (e.g. "
        "resnet_cifar: the whole image resized), or none (the evaluation view: a 0.875 center "
        "crop of photos, an image about the model's size resized whole); auto: the one the "
        "model's run validated with, where the model is a file of a run's folder (best.keras, "
        "last.keras, an export), else none",
    )


def _add_few_shot(commands):
    p = commands.add_parser(
        "few-shot", help="few-shot linear-probe accuracy of frozen features (ViT paper)"
    )
    p.add_argument("model", help="a .keras file or a registry name")
    p.add_argument(
        "--data", type=_text, default="digits", help="source of the train and test splits"
    )
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10, 25])
    p.add_argument("--l2", type=float, default=1024.0, help="ridge penalty (default: 1024)")
    _add_validation_split(
        p,
        "the share of an image folder without a test/ sub-folder held out as the test "
        "images (the same files as `train --validation-split` holds out)",
    )
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.set_defaults(run="run_few_shot")


def _add_export(commands):
    p = commands.add_parser("export", help="export a .keras file to TF Lite, SavedModel or ONNX")
    p.add_argument("model", help="a .keras file")
    p.add_argument("output", help="a .tflite or .onnx file, or a SavedModel folder")
    p.add_argument(
        "--format",
        choices=("tflite", "saved_model", "onnx"),
        default=None,
        help="default: from the output (.tflite, .onnx, a folder)",
    )
    p.add_argument(
        "--quantization",
        choices=("float16", "dynamic", "int8"),
        default=None,
        help="TF Lite only (default: float32)",
    )
    p.add_argument(
        "--calibration",
        default=None,
        metavar="SOURCE",
        help="int8 calibration images: digits, tfds:NAME or an image folder",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a model file or SavedModel at OUTPUT that keras-resvit did not export",
    )
    p.set_defaults(run="run_export")


def _add_predict(commands):
    p = commands.add_parser(
        "predict",
        help="top-k classes of images and their probabilities, with a .keras, .tflite or .onnx "
        "file",
    )
    p.add_argument(
        "model",
        help="a .keras, .tflite or .onnx file, or NAME:WEIGHTS, e.g. resnet50:imagenet (downloaded "
        "once; see list --weights)",
    )
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, GIF)")
    p.add_argument("--top-k", type=_positive_int, default=5)
    _add_evaluation_augment(p)
    p.set_defaults(run="run_predict")


def _add_plot(commands):
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


def _plot_parser(kinds, kind, plot, options, help):
    """A `plot` sub-command: `plot` names the `keras_resvit.viz` function, `options` the
    arguments passed on to it."""
    p = kinds.add_parser(kind, help=help)
    if plot:
        p.add_argument("model", help="a .keras file")
        p.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, GIF)")
        _add_evaluation_augment(p)
    p.add_argument("--output", type=_text, required=True, help="the .png file to write")
    p.set_defaults(run="run_plot", plot=plot, options=options)
    return p


# One function per sub-command, in the order `--help` lists them.
SUBCOMMANDS = (
    _add_list,
    _add_info,
    _add_train,
    _add_evaluate,
    _add_few_shot,
    _add_export,
    _add_predict,
    _add_plot,
)


def build_parser():
    """The `keras-resvit` parser: the global flags and one sub-parser per command."""
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
    for add in SUBCOMMANDS:
        add(commands)
    return parser
