"""What each `keras-resvit` command does once its arguments are parsed (`keras_resvit.cli`
parses them): one call into the public API, then printing.

`keras_resvit.cli` imports this module only to run a command, and every function here imports
the package when it runs: `--help` loads none of it.
"""

import contextlib
from pathlib import Path

from keras_resvit.cli_train import run_train as _run_train
from keras_resvit.cli_train import size_options

# The commands, as `keras_resvit.cli` names them (`args.run`); `train` has its own module.
__all__ = [
    "run_evaluate",
    "run_export",
    "run_few_shot",
    "run_info",
    "run_list",
    "run_plot",
    "run_predict",
    "run_train",
]


def run_list(args):
    from keras_resvit.models.registry import get_spec, list_models

    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"pattern={args.pattern!r} matches no model; try 'resnet*' or 'vit_*'.")
    if not args.weights:
        for name in names:
            print(f"{name:<16} {get_spec(name).description}")
        return
    from keras_resvit.weights.catalog import CATALOG, describe

    listed = False
    for name in names:
        entries = [entry for entry in CATALOG if name in entry.models]
        if entries:
            listed = True
            print(name)
            for entry in entries:
                print(f"  {describe(entry)}")
    if not listed:
        raise ValueError(
            f"no model matching {args.pattern!r} has published weights; `keras-resvit list "
            "--weights` lists those that have."
        )


def run_info(args):
    import keras_resvit as kr

    if args.name.endswith(".keras") or Path(args.name).expanduser().is_file():
        if args.image_size:
            raise ValueError(
                f"--image-size applies to a registry name; the model file {args.name} has its "
                "own size (kr.resize_vit gives a ViT another)."
            )
        model = kr.load_model(args.name)
    else:
        overrides = size_options(args.name, args.image_size) if args.image_size else {}
        model = kr.create_model(args.name, **overrides)
    size = model.input_shape[1:]
    any_size = None in size[:2]
    shown = f"any size, {size[2]} channels of" if any_size else f"{size[0]}x{size[1]}x{size[2]}"
    print(f"model:          {args.name}")
    print(f"input:          {shown} raw pixels (0-255)")
    print(f"output:         {model.output_shape[-1]} classes")
    print(
        f"parameters:     {kr.count_params(model):,} trainable, "
        f"{kr.count_params(model, trainable_only=False):,} total"
    )
    if any_size:
        print("multiply-adds:  per image size; `info` of a fixed size: kr.resize_vit first")
    else:
        print(f"multiply-adds:  {kr.count_macs(model) / 1e9:.3f} G per image")


# The data arguments of `load_dataset` and `kr.evaluation` as `evaluate` and `few-shot`
# name them.
EVALUATE_FLAGS = {
    "source": "--data",
    "train": "--data",
    "test": "--data",
    "split": "--split",
    "validation_split": "--validation-split",
    "batch_size": "--batch-size",
    "shots": "--shots",
    "l2_regularization": "--l2",
    "seed": "--seed",
}


def run_evaluate(args):
    with _named_as(EVALUATE_FLAGS):  # the API's arguments, as the command's
        _run_evaluate(args)


def _run_evaluate(args):
    import keras_resvit as kr
    from keras_resvit.base.class_names import read_class_names
    from keras_resvit.data import checks
    from keras_resvit.data.folder_layout import FOLDER_SPLITS, split_folder
    from keras_resvit.data.loader_choice import ALL_EXAMPLES
    from keras_resvit.models.common import check_classifier

    with _named_as({"path": "MODEL"}):
        model = kr.load_model(args.model)
    check_classifier(model, "evaluate scores class labels")
    instead = "score it in Python: model.evaluate on batches of its shape"
    size = checks.loadable_side(model, f"evaluate {args.model}", instead, any_size=False)
    classes = model.output_shape[-1]
    scales = _evaluation_scales(args, size)
    own_folder = split_folder(args.data, args.split) if args.split in FOLDER_SPLITS else None
    if args.validation_split is not None and args.split != "train" and own_folder:
        raise ValueError(
            f"--validation-split {args.validation_split} would have no effect: --data "
            f"{args.data} has its own {own_folder.name}/ folder, which is read whole; drop it."
        )
    args.split_seed = 0  # the seed of a folder's hold-out draw: load_dataset's default
    # A split that a run's held-out share decides: the validation images where the folder has
    # no validation/ of its own, and the training images (all but that share) then too.
    shared = args.split == "validation" and not own_folder
    shared = shared or args.split == "train" and split_folder(args.data, "validation") is None
    if args.validation_split is None and shared:
        args.validation_split, args.split_seed = _run_validation_split(args)
    elif shared:
        _check_given_split(args)
    augment = None if scales else _evaluation_transform(args)
    data = kr.data.load_dataset(
        args.data,
        args.split,
        validation_split=args.validation_split,
        seed=args.split_seed,
        image_size=max(scales) if scales else size,
        batch_size=args.batch_size,
        augment=augment,  # an evaluation split: the preset's evaluation transform only
        crop_ratio=1.0 if scales else None,  # multi-crop resizes and crops the whole images
        training=False,  # an evaluation read, even of the training split
        loader_options=ALL_EXAMPLES,  # every process scores every example
    )
    argument = f"--data {args.data}"
    checks.check_class_count(argument, data, classes)
    model_names = read_class_names(args.model)
    checks.check_class_names_match(argument, data.class_names, model_names, args.model)
    where = f"{args.model} on {args.data} ({args.split})"
    if scales:
        if Path(args.data).expanduser().is_dir() and args.data != "digits":  # an image folder
            data = _whole_images(args)  # its images at their own size and aspect
        with checks.data_errors():
            result = kr.evaluation.multi_crop_evaluate(
                model, data, scales=scales, crops=args.crops, batch_size=args.batch_size
            )
        views = f"{args.crops} crop{'s' if args.crops == 'ten' else ''} at shorter sides {scales}"
        figures = ", ".join(f"top-{key[3:]} accuracy {value:.4f}" for key, value in result.items())
        print(f"{where}, {views}: {figures}")
        return
    loss, accuracy = _plain_evaluate(model, data, classes, argument)
    # kr.data's evaluation view: photos center-cropped (0.875), images near the model's
    # size resized whole (`transforms.evaluation_crop_ratio`).
    transform = f"evaluation transform of {augment}" if augment else "evaluation view"
    print(f"{where}, {transform}: accuracy {accuracy:.4f}, cross-entropy {loss:.4f}")


def _evaluation_transform(args):
    """The augmentation preset whose evaluation transform `evaluate` reads the images with:
    --augment's, or for "auto" the one the model's run validated with (the `config.json` of
    a `train` run beside the model file names it), else None (the evaluation view)."""
    import re

    from keras_resvit.data.augmentation import AUGMENTATION_PRESETS

    if args.augment not in ("auto", "none", *AUGMENTATION_PRESETS):
        raise ValueError(
            f"--augment {args.augment!r} is not valid; valid: auto (the run's), none (the "
            f"evaluation view), or a preset: {', '.join(AUGMENTATION_PRESETS)}."
        )
    if args.augment != "auto":
        return None if args.augment == "none" else args.augment
    config = _run_config(args)
    if config is None:
        return None
    # The data's provenance (`kr.data`): "<origin>, image_size=..., augment=<preset>, ...".
    described = str(config.get("val_data") or config.get("data") or "")
    found = re.findall(r", augment=(\w+)", described)
    return found[-1] if found and found[-1] in AUGMENTATION_PRESETS else None


def _crop_ratio(args):
    """The crop ratio that `predict` and `plot` read images with: 1.0 (whole images) where
    --augment (or the model's run) names a whole-image preset, else None (the evaluation
    view), as `evaluate` reads them."""
    from keras_resvit.data.transforms import WHOLE_IMAGE_PRESETS

    return 1.0 if _evaluation_transform(args) in WHOLE_IMAGE_PRESETS else None


def _run_config(args):
    """The `config.json` of the `train` run beside the model file, or None (also for a
    model that is no file: NAME:WEIGHTS)."""
    import json

    from keras_resvit.training.run_folder import CONFIG_FILE, TRAIN, run_kind

    model = Path(args.model).expanduser()
    folder = model.parent
    if not model.is_file() or run_kind(folder) != TRAIN:
        return None
    return json.loads((folder / CONFIG_FILE).read_text())


def _recorded_split(args):
    """(files listed, share held out, seed) of the image folder the model's run held a
    share of out (its `config.json`), or None."""
    import re

    described = str((_run_config(args) or {}).get("data") or "")
    found = re.findall(r", (\d+) files, validation_split=([0-9.]+)", described)
    if not found:
        return None
    seeds = re.findall(r", seed=(\d+)", described)
    return int(found[-1][0]), float(found[-1][1]), int(seeds[-1]) if seeds else 0


def _check_given_split(args):
    """Warns when --validation-split is not the share the model's run held out: another
    share's held-out images include some the run trained on."""
    import warnings

    recorded = _recorded_split(args)
    if recorded is not None and recorded[1] != args.validation_split:
        warnings.warn(
            f"--validation-split {args.validation_split} but the model's run held out "
            f"{recorded[1]} of {args.data} (its config.json): the images scored include some "
            "it trained on, and its accuracy reads high; drop the flag to score the run's own "
            "held-out images.",
            stacklevel=2,
        )


def _run_validation_split(args):
    """The share of its image folder that the model's run held out (`train
    --validation-split`, recorded in its `config.json`) and the seed of that draw, or
    (None, 0); says so when found, and warns when the folder's training images are no longer
    those the run listed (then its held-out split may hold images the run trained on)."""
    import warnings

    from keras_resvit.data.folders import list_image_folder

    recorded = _recorded_split(args)
    if recorded is None:
        return None, 0
    listed, share, seed = recorded
    print(
        f"holding out {share:.0%} of {args.data} as the model's run did (its config.json; "
        "--validation-split sets another share)"
    )
    with warnings.catch_warnings():  # the skipped files are named when the split is read
        warnings.simplefilter("ignore")
        count = len(list_image_folder(args.data, "train", validation_split=share, seed=seed)[0])
    if count != listed:
        warnings.warn(
            f"--data {args.data} holds {count} training images where the model's run listed "
            f"{listed}: images were added or removed since, so the held-out split may hold "
            "images of those classes that the run trained on.",
            stacklevel=2,
        )
    return share, seed


def _whole_images(args):
    """A folder's images one at a time, at their own size and aspect, with their labels: the
    multi-crop test resizes each image's shorter side to each scale and crops the crops from
    the whole of it (He et al.), where a dataset of one size would have cut it square."""
    import warnings

    import numpy as np

    from keras_resvit.data.folders import list_image_folder
    from keras_resvit.data.loaders import read_image

    with warnings.catch_warnings():  # the skipped files were named when the split was read
        warnings.simplefilter("ignore")
        paths, labels, _ = list_image_folder(
            args.data,
            args.split,
            validation_split=args.validation_split,
            seed=args.split_seed,
            complete=True,
        )
    for path, label in zip(paths, labels, strict=True):
        try:
            pixels = read_image(path)
        except OSError as error:
            raise ValueError(f"image {path!r} cannot be decoded: {error}") from None
        yield pixels[None].astype("float32"), np.array([label])


def _evaluation_scales(args, size):
    """The multi-crop test's scales (a tuple), or None for a plain `model.evaluate`."""
    if args.crops is None:
        if args.scales is not None:
            raise ValueError(
                "--scales is only read by the multi-crop test; add --crops center|ten."
            )
        return None
    from keras_resvit.data.transforms import CROP_RATIO

    scales = tuple(args.scales or (round(size / CROP_RATIO),))
    if min(scales) < size:
        raise ValueError(
            f"--scales {' '.join(map(str, scales))} is not valid; valid: shorter sides >= the "
            f"model's input size {size}."
        )
    return scales


def _plain_evaluate(model, data, classes, argument):
    from keras_resvit.data import checks
    from keras_resvit.models.common import score_activation
    from keras_resvit.training.model_setup import cross_entropy

    # The cross-entropy of the softmax over the classes (of logits, log-probabilities alike,
    # or of the scores normalized to sum to 1, a sigmoid's too), the same on every backend,
    # whichever loss trained the model (a binary cross-entropy recipe's is in its run's
    # history.csv). A tanh or relu classifier has no probabilities: refused.
    from_logits = score_activation(model) in ("linear", "log_softmax")
    loss = cross_entropy(from_logits, sparse=not checks.has_soft_labels(data))
    model.compile(loss=loss, metrics=["accuracy"])
    with checks.data_errors():
        return model.evaluate(checks.check_batches(data, classes, argument), verbose=0)


def run_few_shot(args):
    import keras_resvit as kr

    is_file = args.model.endswith(".keras")
    with _named_as({"path": "MODEL", "name": "MODEL"}):
        model = kr.load_model(args.model) if is_file else kr.create_model(args.model)
    with _named_as({k: v for k, v in EVALUATE_FLAGS.items() if k != "split"}):  # no --split
        accuracies = kr.evaluation.few_shot(
            model,
            args.data,
            args.data,
            shots=args.shots,
            l2_regularization=args.l2,
            seed=args.seed,
            batch_size=args.batch_size,
            validation_split=args.validation_split,
        )
    from keras_resvit.data.folder_layout import scoring_split
    from keras_resvit.data.sources import FOLDER, source_kind

    scored = ""
    folder = args.validation_split is None and source_kind(args.data) == FOLDER
    if folder and scoring_split(args.data) == "validation":  # kr.evaluation.few_shot's too
        scored = ", scored on its validation images (it has no test/ folder)"
    print(f"{args.model} few-shot linear probe on {args.data}{scored} (seed {args.seed})")
    print("shots  accuracy")
    for shots, accuracy in accuracies.items():
        print(f"{shots:>5}  {accuracy:.4f}")


def run_export(args):
    import keras_resvit as kr
    from keras_resvit.export import export_summary

    if args.quantization == "int8" and args.calibration is None:
        raise ValueError(
            "--quantization int8 needs --calibration SOURCE (digits, tfds:NAME or an image "
            "folder): images to calibrate the activation ranges on."
        )
    with _named_as(EXPORT_FLAGS):  # the API's arguments, as the command's
        result = kr.export(
            args.model,
            args.output,
            format=args.format,
            quantization=args.quantization,
            representative_data=args.calibration,
            overwrite=args.overwrite,
        )
    print(export_summary(result))


# `kr.export`'s arguments as `keras-resvit export` names them.
EXPORT_FLAGS = {
    "model_or_path": "MODEL",
    "path": "OUTPUT",
    "representative_data": "--calibration",
    "quantization": "--quantization",
    "format": "--format",
    "overwrite": "--overwrite",
}


# `kr.train`'s (and its data's) arguments as `keras-resvit train` names them.
TRAIN_FLAGS = {
    "train_data": "--data",
    "recipe": "--recipe",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "image_size": "--image-size",
    "num_classes": "--num-classes",
    "learning_rate": "--learning-rate",
    "ema": "--ema",
    "save_every": "--save-every",
    "precision": "--precision",
    "distribution": "--distribution",
    "output_dir": "--output",
}


def run_train(args):
    with _named_as(TRAIN_FLAGS):  # the API's arguments, as the command's
        _run_train(args)


def _flags(message, flags):
    """`message` with each API argument of `flags` named as the command's flag ("path='x'"
    as "OUTPUT 'x'"; "representative_data", a name no sentence uses, also bare)."""
    import re

    for name, flag in flags.items():
        message = re.sub(rf"(?<![\w.-]){name}=", f"{flag} ", message)
        if "_" in name:
            message = re.sub(rf"(?<![\w.-]){name}\b", flag, message)
    return message


def run_predict(args):
    from keras_resvit.predict import predict

    results = predict(args.model, args.images, top_k=args.top_k, crop_ratio=_crop_ratio(args))
    for image, top in zip(args.images, results, strict=True):
        best = ", ".join(
            f"{c['name'] if c['name'] is not None else c['index']} {c['score']:.3f}" for c in top
        )
        print(f"{image}: {best}")


# The plotting functions' arguments as `keras-resvit plot` names them; the model file's, read
# first, as MODEL.
PLOT_FLAGS = {
    "history": "HISTORY",
    "path": "--output",
    "layer": "--layer",
    "class_index": "--class-index",
    "discard_ratio": "--discard-ratio",
    "head_fusion": "--head-fusion",
    "top_k": "--top-k",
}


@contextlib.contextmanager
def _named_as(flags):
    """Errors of the API's arguments raised inside, with the command's names (`_flags`)."""
    try:
        yield
    except (ValueError, FileNotFoundError) as error:
        raise type(error)(_flags(str(error), flags)) from None


def run_plot(args):
    from keras_resvit import viz

    if args.plot is None:
        with _named_as(PLOT_FLAGS):
            viz.plot_history(args.history, args.output)
    else:
        from keras_resvit.base.class_names import check_class_names, read_class_names
        from keras_resvit.data.image_files import load_images
        from keras_resvit.files import load_model

        with _named_as({"path": "MODEL"}):
            model = load_model(args.model)
            names = read_class_names(args.model)
            check_class_names(names, model.output_shape[-1], args.model)
        shape = model.input_shape
        images = load_images(args.images, tuple(shape[1:3]), shape[-1], _crop_ratio(args))
        options = {key: getattr(args, key) for key in args.options}
        plot = getattr(viz, args.plot)
        with _named_as(PLOT_FLAGS):
            plot(model, images, args.output, class_names=names, **options)
    print(f"wrote {args.output}")
