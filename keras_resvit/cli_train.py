"""`keras-resvit train`: the data, model and output folder a command line asks for, then
`kr.train`, the curves, the results and the TF Lite export.

Imported by `keras_resvit.cli_commands` only when a command runs; every function here imports
the package when it runs.
"""

import contextlib
import json
import os
import re
import sys
from pathlib import Path

# Families whose builders take `image_size`; the others take `input_shape`.
VIT_FAMILIES = ("vit", "hybrid_vit")
# Share of a plain image folder (no train/ test/ sub-folders) held out for validation.
DEFAULT_VALIDATION_SPLIT = 0.1
# What the command writes into --output after `kr.train`: the curves, and the TF Lite export
# with its class names (`training.run_folder.CLI_FILES`).
CURVES = "curves.png"
EXPORTED = ("model.tflite", "model.classes.json")


def _family(name):
    from keras_resvit.models.registry import get_spec

    return get_spec(name).family


def size_options(name, size):
    """`create_model` keywords for `size` x `size` images: ViTs take `image_size`, the other
    families `input_shape`."""
    if _family(name) in VIT_FAMILIES:
        return {"image_size": size}
    return {"input_shape": (size, size, 3)}


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
    from keras_resvit.data.folder_layout import split_folder

    folder = _folder("--val-data", source)
    for split in ("validation", "test"):
        if split_folder(folder, split) is not None:
            return {"source": folder, "split": split}
    # All of a plain folder: its training split, read as evaluation data (`training=False`).
    return {"source": folder, "split": "train"}


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
    from keras_resvit.data.folder_layout import split_folder

    training_folder = split_folder(folder, "train")
    if training_folder is not None:
        held = [s for s in ("validation", "test") if split_folder(folder, s) is not None]
        if held and fraction is None:
            return train, {"source": folder, "split": held[0]}, None
        folder = training_folder  # a share of the training images is held out
    fraction = DEFAULT_VALIDATION_SPLIT if fraction is None else fraction
    note = f"holding out {fraction:.0%} of {folder} for validation (--validation-split)"
    held_out = {"source": folder, "validation_split": fraction}
    return {**held_out, "split": "train"}, {**held_out, "split": "validation"}, note


def _load_training_data(kr, args, splits, recipe, augment):
    """(training data, validation data, image size, why that size): --image-size; for a ViT
    the recipe's resolution; the data's own size; the model's for images of varying size."""
    train_split, val_split, _ = splits
    # Repeated augmentation applies to training splits only; validation reads each image once.
    repeats = recipe.repeated_augmentation
    options = {"batch_size": args.batch_size, "repeated_augmentation": repeats}
    size, why, train = args.image_size, "--image-size", None
    # A recipe's resolution (vit_finetune: 384) applies to ViTs, which train at any size.
    if not size and recipe.image_size and _family(args.model) in VIT_FAMILIES:
        size, why = recipe.image_size, f"the {args.recipe} recipe's"
    if not size and not _is_folder(args.data):
        with contextlib.suppress(ValueError):  # images of varying size: the model's own
            train = kr.data.load_dataset(**train_split, **options, augment=augment)
            size = getattr(train, "image_size", None)  # an ImageLoader (no TensorFlow)
            size = size or int(train.element_spec[0].shape[1])
            why = "from the data"
    if not size:
        size = kr.create_model(args.model).input_shape[1]
        why = "the model's default; --image-size sets another"
    if train is None:
        train = kr.data.load_dataset(**train_split, **options, image_size=size, augment=augment)
    # The preset names the evaluation transform that matches its training views (whole
    # images for resnet_cifar, a center crop otherwise).
    val = kr.data.load_dataset(
        **val_split, **options, image_size=size, augment=augment, training=False
    )
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
    options = {**recipe_model_options(args.model, args.recipe), **size_options(args.model, size)}
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
    print(
        f"model: {args.model} for {classes} classes ({classes_why}) at {size}x{size} ({why}), "
        f"recipe {args.recipe}"
    )
    return model


def _default_output(data):
    """runs/<the data's name>: runs/digits, runs/flowers, runs/cifar10."""
    name = data[5:] if data.startswith("tfds:") else Path(data).expanduser().resolve().name
    return os.path.join("runs", re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "data")


def _check_previous_run(output, overwrite):
    """Refuses, before any data is read, an --output that is not a writable folder or holds
    a run of another kind, and a finished run there without --overwrite; says when
    --overwrite replaces one. (`kr.train` says where an interrupted run resumes.)"""
    from keras_resvit.base.files import check_output_path
    from keras_resvit.training.run_folder import (
        CONFIG_FILE,
        RUN_FILES,
        TRAIN,
        check_run_kind,
    )

    folder = check_output_path("--output", output, folder=True)
    check_run_kind(
        "--output",
        folder,
        TRAIN,
        "pass another --output (--overwrite replaces only an earlier train run).",
    )
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


def _augmentation(args, recipe):
    """The --augment preset: "auto" is the recipe's, except on digits, which flips and crops
    would change; "none" is None."""
    from keras_resvit.data.augmentation import AUGMENTATION_PRESETS

    augment = args.augment
    if augment not in ("auto", "none", *AUGMENTATION_PRESETS):
        raise ValueError(
            f"--augment {augment!r} is not valid; valid: auto (the recipe's), none, or a preset: "
            f"{', '.join(AUGMENTATION_PRESETS)}."
        )
    if augment == "auto":
        augment = None if args.data == "digits" else recipe.augment
    return None if augment == "none" else augment


def _print_results(history, val_split, output):
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
    name = "test" if val_split["split"] == "test" else "validation"
    last = history.history["val_accuracy"][-1]
    print(f"{name} accuracy {last:.4f} (last), {summary['best_val_accuracy']:.4f} (best)")
    print(f"saved {output}/last.keras, best.keras, history.csv, curves.png, config.json")


def _export_tflite(kr, output):
    """Exports the run's last.keras to model.tflite beside it and prints the summary."""
    from keras_resvit.base.output_folders import output_folder
    from keras_resvit.export import export_summary

    with output_folder("--output", output, EXPORTED) as folder:
        folder.start_writing()
        result = kr.export(
            os.path.join(output, "last.keras"),
            os.path.join(output, "model.tflite"),
            format="tflite",
            overwrite=True,  # the run folder's own file (`output_folder` checked it)
        )
    print(f"{export_summary(result)}; from last.keras")


def _join_processes(kr, args):
    """Joins the run's process group before anything computes (`kr.training.initialize`);
    returns this process's index."""
    given = (args.coordinator_address, args.num_processes, args.process_id)
    if args.join_cluster or given != (None, None, None):
        kr.training.initialize(*given)
    index, count = kr.training.process_index(), kr.training.process_count()
    if count > 1:
        print(f"process {index} of {count}" + (": writes the output" if index == 0 else ""))
    return index


def run_train(args):
    import keras_resvit as kr
    from keras_resvit.data.loader_choice import tensorflow_installed
    from keras_resvit.training.recipes import get_recipe

    _family(args.model)  # unknown names fail before anything is read
    recipe = get_recipe(args.recipe)
    process = _join_processes(kr, args)
    output = args.output or _default_output(args.data)
    _check_previous_run(output, args.overwrite)
    if process == 0:  # what it writes after the run: a user's files of those names stop it now
        from keras_resvit.base.output_folders import output_folder

        with output_folder("--output", output, [CURVES, *(EXPORTED if args.tflite else [])]):
            pass
    splits = _splits(args)
    if splits[2]:
        print(splits[2])
    augment = _augmentation(args, recipe)
    train, val, size, why = _load_training_data(kr, args, splits, recipe, augment)
    history = kr.train(
        lambda: _model_for_data(kr, args, train, size, why),  # built in the run's precision
        train,
        recipe=args.recipe,
        epochs=args.epochs,
        val_data=val,
        output_dir=output,
        learning_rate=args.learning_rate,
        ema=args.ema,
        distribution=args.distribution,
        precision=args.precision,
        save_every=args.save_every,
        overwrite=args.overwrite,
        verbose=1 if sys.stdout.isatty() else 2,
    )
    if process != 0:  # process 0 writes and exports the run
        return
    from keras_resvit.base.output_folders import output_folder

    with output_folder("--output", output, [CURVES]) as folder:
        folder.start_writing()
        kr.viz.plot_history(history, Path(output) / CURVES)
    _print_results(history, splits[1], output)
    if args.tflite and not tensorflow_installed():
        print("no TF Lite export: it needs the `tensorflow` package (pip install tensorflow)")
    elif args.tflite:
        _export_tflite(kr, output)
