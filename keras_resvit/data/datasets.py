"""Dataset sources as `tf.data` pipelines of raw 0-255 RGB pixels and labels.

`tf.data` serves every backend: Keras' `fit` consumes it under TensorFlow, JAX and PyTorch, and
the Keras augmentation layers run TensorFlow ops inside it whatever the backend.
Pipeline: source (one reader per kind, `SOURCES`) -> this process's share (several processes:
file names, array rows or tfds sub-splits, before anything is decoded) -> decode -> (cache) ->
shuffle -> (repeated augmentation: each example several times) -> augment (train, each
example from its own seed: `element_seeds`) or evaluation transform -> batch -> MixUp/CutMix
(train, soft labels, each batch from its own seed) -> prefetch. A training split of arrays, an
image folder or a tfds dataset read into memory makes each epoch from a key instead
(`epochs.Epochs`): the order of the share and every seed follow from the place in the run,
read from any step at once.
Without TensorFlow, digits, arrays and image folders are read by `loaders.ImageLoader` (a
`keras.utils.PyDataset`) into the same batches.
"""

import contextlib
import math
import os

import keras

from keras_resvit.base.backend import dtype_policy
from keras_resvit.base.lazy import tf
from keras_resvit.base.processes import process_count, process_index
from keras_resvit.base.validation import check_bool, check_int, check_number, check_seed
from keras_resvit.data.augmentation import MIXING, Mixing, get_augmentation
from keras_resvit.data.checks import shown_source
from keras_resvit.data.element_seeds import next_seed, seeded_map
from keras_resvit.data.epochs import Epochs
from keras_resvit.data.loader_choice import check_repeats, check_shard, choose_loader
from keras_resvit.data.loaders import ImageLoader
from keras_resvit.data.sources import (
    FOLDER,
    SOURCES,
    evaluation_read,
    is_training_split,
    loader_examples,
    source_kind,
)
from keras_resvit.data.transforms import (
    check_crop_ratio,
    evaluation_ratio,
    output_size,
    pipeline_transforms,
)


def _repeated(ds, repeats):
    """Each epoch: the first ceil(N / repeats) examples of the (shuffled) epoch, each `repeats`
    times in a row, N in all (timm's `RepeatAugSampler` on one process; several processes
    repeat their own shares)."""
    count = int(ds.cardinality())
    if count < 0:  # tf.data.INFINITE_CARDINALITY or UNKNOWN_CARDINALITY
        raise ValueError(
            f"repeated_augmentation={repeats} needs a source of known size; this one's number "
            "of examples is unknown."
        )
    copies = lambda x, y: tf.data.Dataset.from_tensors((x, y)).repeat(repeats)  # noqa: E731
    return ds.take(math.ceil(count / repeats)).flat_map(copies).take(count)


def _mixer(mixing, num_classes, seed):
    """A function of a batch: soft labels, smoothed one-hot, then MixUp or CutMix (one per
    batch, at random), drawing from the batch's seed (`element_seeds`)."""
    mixup, cutmix = mixing.layers(seed)
    smoothing = mixing.label_smoothing

    def mix(images, labels):
        soft = tf.one_hot(labels, num_classes) * (1.0 - smoothing) + smoothing / num_classes
        data = {"images": images, "labels": soft}
        if mixup is None or cutmix is None:
            out = (mixup or cutmix)(data)
            return out["images"], out["labels"]
        # Only the chosen one runs.
        use_cutmix = tf.random.stateless_uniform((), seed=next_seed()) < mixing.cutmix_prob
        out = tf.cond(use_cutmix, lambda: cutmix(dict(data)), lambda: mixup(dict(data)))
        return out["images"], out["labels"]

    return mix


def _read_ahead(ds, deterministic):
    """`ds` prefetched; or, `deterministic`, made batch by batch as asked for (no prefetch,
    no map fused with its batch or run in parallel)."""
    if not deterministic:
        return ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    for name in ("inject_prefetch", "map_and_batch_fusion", "map_parallelization"):
        setattr(options.experimental_optimization, name, False)
    return ds.with_options(options)


def _provenance(origin, image_size, augment, seed, repeats=1, **read):
    """What the examples are and how they are read: a run resumes only on the same data.
    `read`: the other settings that change the batches (mixing, shuffle, crop_ratio,
    drop_remainder, training), named where they are not their defaults (True, the split's
    own, None, False, the split's own)."""
    augmentation = augment if augment is None or isinstance(augment, str) else type(augment)
    text = f"{origin}, image_size={image_size}, augment={augmentation}, seed={seed}"
    text += f", repeated_augmentation={repeats}" if repeats > 1 else ""
    defaults = {"mixing": True, "shuffle": None, "crop_ratio": None, "drop_remainder": False}
    defaults["training"] = None
    for name, default in defaults.items():
        value = read.get(name, default)
        text += "" if value == default else f", {name}={value!r}"
    return text


def _mixing_setting(mixing, augment):
    """True where `mixing` mixes the batches as `augment`'s preset does, else the mixing that
    applies (a `Mixing`, or None for none)."""
    preset = MIXING.get(augment) if isinstance(augment, str) else None
    applied = preset if mixing is True else (mixing or None)
    if applied is not None and not (applied.mixup_alpha or applied.cutmix_alpha):
        applied = None  # mixes nothing
    return True if applied == preset else applied


def _part(options, workers=False) -> tuple:
    """(process_index, process_count): this process's share of the examples, from the loader
    options, else the run's processes, each reading its share of every batch: JAX's, and for
    tf.data (`workers`) TensorFlow's workers of `TF_CONFIG` too."""
    explicit = {"process_index", "process_count"} & set(options)
    if not explicit and (workers or keras.backend.backend() == "jax"):
        return process_index(), process_count()
    return options.get("process_index", 0), options.get("process_count", 1)


def _py_dataset(source, split, training, *, image_size, augment, crop_ratio, settings, **options):
    """`load_dataset`'s batches by a `loaders.ImageLoader`; `options` are its arguments."""
    seed, strict = options["seed"], options["strict"]
    evaluation = evaluation_read(training, options["shuffle"])
    data, origin, fixed, shorter_side = loader_examples(
        source,
        split,
        image_size,
        options.pop("validation_split"),
        seed,
        strict,
        options.pop("cache"),
        evaluation,
    )
    image_size = output_size(image_size, fixed, shown_source(source))
    resized = fixed is None or tuple(fixed) != (image_size, image_size)
    augmented = training and augment is not None
    ratio = evaluation_ratio(crop_ratio, augmented, resized, augment, shorter_side, image_size)
    get_augmentation(augment, image_size)  # a bad `augment` fails on every split, as in tf.data
    options["process_index"], options["process_count"] = _part(options)
    options["strict"] = strict or evaluation
    loader = ImageLoader(
        **data,
        image_size=image_size,
        augment=augment if augmented else None,
        crop_ratio=ratio,
        **options,
    )
    loader.provenance = _provenance(
        origin, image_size, augment, seed, options.get("repeated_augmentation", 1), **settings
    )
    return loader


@contextlib.contextmanager
def source_named(argument: str):
    """Inside, an error of `load_dataset` about its `source` names the caller's `argument`
    instead ("representative_data='x': no such folder.", not "source='x': ...")."""
    try:
        yield
    except (ValueError, TypeError, FileNotFoundError) as error:
        if type(error) not in (ValueError, TypeError, FileNotFoundError):
            raise
        if "source=" not in str(error):
            raise
        raise type(error)(str(error).replace("source=", f"{argument}=")) from None


@dtype_policy("float32")  # pixels in float32 whatever a global mixed policy says
def load_dataset(
    source="digits",
    split: str = "train",
    *,
    image_size: int | None = None,
    batch_size: int = 32,
    augment=None,
    mixing: Mixing | bool = True,
    shuffle: bool | None = None,
    seed: int = 0,
    drop_remainder: bool = False,
    cache: bool | None = None,
    crop_ratio: float | None = None,
    validation_split: float | None = None,
    data_dir: str | None = None,
    strict: bool = False,
    deterministic: bool = False,
    loader: str = "auto",
    loader_options: dict | None = None,
    repeated_augmentation: int = 1,
    training: bool | None = None,
) -> "tf.data.Dataset | ImageLoader":
    """A batched, prefetched `tf.data.Dataset` of (float32 pixels in [0, 255], labels), or,
    without TensorFlow, a `keras.utils.PyDataset` of the same batches (`loader`).

    Training splits ("train..." names, unless `training=False`) are shuffled and augmented;
    other splits (and training splits without `augment`) get the evaluation transform: the
    shorter side resized to `image_size / crop_ratio`, then the central `image_size` square.
    Unless `crop_ratio` is given, the crop ratio follows the images' size
    (`preprocessing.evaluation_crop_ratio`): photos much larger than the output (typical
    shorter side >= `image_size / 0.875`, e.g. >= 256 for 224) get the standard 0.875 center
    crop; images about the output size or smaller (CIFAR's 32x32 at 32, or upsampled for
    fine-tuning) are resized whole (1.0), as training saw them. With a whole-image training
    preset (`WHOLE_IMAGE_PRESETS`: resnet_cifar) named in `augment`, evaluation resizes whole
    images whatever their size. The typical size is the fixed size of arrays, tfds datasets and
    folders of images of one size, or the median shorter side of a sample of a folder's files
    (from their headers) or of a tfds dataset's first images. The dataset carries `class_names`
    and `num_classes` attributes, to be saved with the model, and a known number of batches (a
    folder's listed files).

    `loader="py_dataset"` (the choice of "auto" where TensorFlow is not installed, as on a
    JAX-only GPU image) reads digits, arrays and image folders with a `loaders.ImageLoader`:
    the same examples and transforms (non-augmented batches equal tf.data's: exactly for
    arrays and PNG files, within a few levels for JPEG files, whose decoders differ), files
    decoded by Pillow in `workers` threads, augmentation layers run on the Keras backend one
    image at a time, and a shard per process for multi-process data parallelism
    (`loader_options`).

    Args:
        source: "digits" (embedded, no network); "tfds:<name>" (tensorflow-datasets, e.g.
            "tfds:cifar10"); a folder with one sub-folder of JPEG/PNG/GIF/BMP images per
            class; or an `(images, labels)` pair of arrays.
        split: "train" or "test" for digits and arrays; "train", "validation" or "test" for a
            folder; any tensorflow-datasets split ("train[:90%]") for tfds.
        image_size: output height and width. Default: 32 for digits, the source's own size for
            arrays, fixed-size tfds datasets and folders decoded into memory (below, `cache`)
            of square images; required for other folders and tfds datasets, and for images
            that are not square.
        batch_size: examples per batch.
        augment: None, a preset name in `augmentation.AUGMENTATION_PRESETS` or a Keras layer
            mapping one image to an `image_size` image; applied to training splits only. On
            another split it names the training preset that the evaluation transform matches
            (see above).
        mixing: the preset's MixUp/CutMix (True), none (False), or a `Mixing`; training splits
            only. With mixing, labels are float32 (batch, num_classes) and sum to 1.
        shuffle: shuffle every epoch; default True for training splits.
        seed: seed of the shuffle, the augmentation and a folder's hold-out split.
        drop_remainder: drop the last partial batch (static batch shape, for TPUs).
        cache: keep decoded images in memory; default when they fit (~1 GiB of pixels; for
            a folder, ~100 MB of files). A folder of images all of one size and a tfds
            dataset of fixed-size images are then decoded into memory at once and read as
            arrays are; a training split of another folder decodes its files every epoch
            (each epoch reads them in an order of its own, from any step: `from_step`,
            below). `cache=False` decodes every epoch, and streams a tfds dataset from its
            files.
        crop_ratio: evaluation center-crop ratio in [0.25, 1]; 1.0 resizes whole images. Default:
            from the training preset and the images' size (see above).
        validation_split: fraction of a folder's training images (`train/`, or the folder
            itself) held out as its "validation" / "test" split where it has no such folder;
            other sources have their own splits and refuse it.
        data_dir: tensorflow-datasets data folder.
        strict: raise on a non-image, corrupt, oversized (`image_files.MAX_IMAGE_PIXELS`) or
            truncated file in a folder instead of skipping it with a warning; finding
            truncated files reads every file whole when the folder is listed. Without it, a
            listed file of a shuffled training split that fails to decode is replaced by
            another image of the folder, so that an epoch keeps the listed count
            (`folders.folder_dataset`); any other read (an evaluation's) skips truncated
            files, with the warning, and stops at a file that fails to decode, where a
            stand-in would be scored twice.
        deterministic: make the batches one at a time on one thread, as they are asked for
            (slower; for debugging). tf.data batches are reproducible for a given `seed`
            either way: each example's random layers draw from a seed of its own
            (`element_seeds`), whatever thread transforms it, the same on every backend and
            whatever TensorFlow's global seed (`tf_random`); so are the py_dataset loader's,
            whose images draw from seeds of their batch's (with the backend's random ops:
            other draws under TensorFlow and JAX). With that loader this requires one worker
            (its default).
        loader: "auto" (tf.data where TensorFlow is installed, else "py_dataset"), "tf.data",
            or "py_dataset" (`loaders.ImageLoader`; no tfds sources; `data_dir` does not
            apply; `cache` decodes a folder of one-size images into memory as above, and
            the files of any other folder are decoded every epoch).
        loader_options: a dict of `ImageLoader` arguments among `loader_choice.LOADER_OPTIONS`:
            for "py_dataset", `workers`, `use_multiprocessing` and `max_queue_size` (batches
            made in parallel); for both loaders, `process_index` and `process_count`: this
            process's share of the examples, which reads `batch_size // process_count` of every
            batch of `batch_size` (default: under JAX the run's processes,
            `kr.training.process_index()` and `process_count()`; for tf.data under TensorFlow
            also the workers of `TF_CONFIG`'s cluster). tf.data shares out the
            listed files, array rows or tfds sub-splits (`tfds.even_splits`) before decoding,
            the same ones every epoch (the py_dataset loader deals out each epoch's
            permutation); the last N % process_count examples are read by none, so that every
            process makes as many batches; repeated augmentation repeats within a share.
        repeated_augmentation: a training split's epoch reads ceil(N / r) of its N examples r
            times each, augmented independently, and keeps N examples (repeated augmentation,
            Hoffer et al. 2020 and Berman et al. 2019, as timm's `RepeatAugSampler`: the copies
            follow each other); the recipes `rsb_a1`, `rsb_a2` and `deit3` use 3. 1: none.
        training: read `split` as training data (shuffled, augmented, mixed, repeated) or,
            False, as evaluation data (in order, the evaluation transform, each example
            once). Default: True for split names that start with "train". Pass False for
            validation data held out of a training split, e.g. tfds' "train[45000:]".

    Returns:
        A `tf.data.Dataset`, or an `ImageLoader` (a `keras.utils.PyDataset`: `len` is the
        batches per epoch, `loader[i]` the i-th batch as NumPy arrays), of (images, labels):
        int32 labels (N,), or soft labels (N, classes). Its attributes `class_names`,
        `num_classes` and `provenance` (where the examples come from and how they are read:
        `train()` resumes a run only on the same data; the same for both loaders) describe it,
        `augmented` whether its batches are augmented or mixed (a training read with
        `augment` or mixing: `train()` refuses it as `val_data`, the evaluations as data to
        score), `process_index` and `process_count` its share, `examples` its examples per epoch
        (None where unknown: a folder of files some of which may not decode), `batch_size`
        and `drop_remainder` as given; `unaugmented` holds the images of all
        processes, each once, without augmentation or mixing, batched (`train()` computes a
        `PixelMean` from it). A training split of arrays, a folder or a tfds dataset read
        into memory also has `from_step(step)`: the endless run of epochs `train()` reads,
        from its `step`-th batch on (epoch e's order and draws given by (seed, e) and the
        place in it), made at once without reading what comes before; iterating the dataset
        itself gives one epoch per pass, in an order of its own.

    Raises:
        ValueError: for an unknown source, split, preset or loader, a bad argument, or a folder
            that is empty, has one class, or (strict) holds an unusable image file; arrays with
            NaN or infinite pixels; a tfds source with loader="py_dataset".
        FileNotFoundError: for a folder path that does not exist.
        ImportError: without TensorFlow, for a tfds source or loader="tf.data".
        ConnectionError: a tfds source that is not in `data_dir` yet and cannot be downloaded
            (after tensorflow-datasets' retries, about 3 minutes without network).

    Example:
    >>> from keras_resvit.data.datasets import load_dataset
    >>> ds = load_dataset("digits", "test", batch_size=8)
    >>> tuple(next(iter(ds))[0].shape), ds.num_classes
    ((8, 32, 32, 3), 10)
    """
    check_int("batch_size", batch_size)
    check_int("image_size", image_size, none_ok=True)
    check_seed(seed)
    check_crop_ratio(crop_ratio, none_ok=True)
    check_number("validation_split", validation_split, 0, 1, none_ok=True)
    if validation_split is not None and source_kind(source) != FOLDER:
        raise ValueError(
            f"validation_split={validation_split!r} holds out part of an image folder; "
            f"source={shown_source(source)} has its own splits (read its 'test' split), so "
            "it would have no effect."
        )
    flags = {"drop_remainder": drop_remainder, "strict": strict, "deterministic": deterministic}
    for name, value in flags.items():
        check_bool(name, value)
    for name, value in (("shuffle", shuffle), ("cache", cache)):
        check_bool(name, value, none_ok=True)
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise ValueError(
            f"data_dir={data_dir!r} is not valid; pass a folder path (str or pathlib.Path) "
            "or None (tensorflow-datasets' default folder)."
        )
    if data_dir is not None and source_kind(source) != "tfds:<name>":
        raise ValueError(
            f"data_dir={str(data_dir)!r} is the folder of tensorflow-datasets sources "
            f"('tfds:<name>'); source={shown_source(source)} does not read it: drop it."
        )
    if not isinstance(mixing, (bool, Mixing)):
        raise ValueError(f"mixing={mixing!r} is not valid; pass True, False or a Mixing.")
    check_bool("training", training, none_ok=True)
    named = is_training_split(split)
    training = named if training is None else training
    shuffle = training if shuffle is None else shuffle
    settings = {  # what else changes the batches, for the provenance
        "training": None if training == named else training,
        "mixing": _mixing_setting(mixing, augment) if training else True,
        "shuffle": None if shuffle == training else shuffle,
        "crop_ratio": crop_ratio,
        "drop_remainder": drop_remainder,
    }
    # Evaluation splits read each example once; any shuffle setting is then fine.
    check_repeats(repeated_augmentation, shuffle or not training)
    repeats = repeated_augmentation if training else 1
    tfds = source_kind(source) == "tfds:<name>"
    if choose_loader(loader, source, tfds, loader_options, deterministic) == "py_dataset":
        return _py_dataset(
            source,
            split,
            training,
            image_size=image_size,
            augment=augment,
            crop_ratio=crop_ratio,
            validation_split=validation_split,
            cache=cache,
            batch_size=batch_size,
            mixing=mixing if training else False,
            shuffle=shuffle,
            seed=seed,
            drop_remainder=drop_remainder,
            strict=strict,
            repeated_augmentation=repeats,
            settings=settings,
            **(loader_options or {}),
        )
    part = _part(loader_options or {}, workers=True)
    check_shard(batch_size, *part)
    read = SOURCES[source_kind(source)](
        source,
        split,
        image_size=image_size,
        shuffle=shuffle,
        seed=seed,
        cache=cache,
        validation_split=validation_split,
        data_dir=data_dir,
        strict=strict,
        training=training,
        part=part,
    )
    num_classes = len(read.class_names) if read.class_names else None
    image_size = output_size(image_size, read.fixed, shown_source(source))
    # Each process draws its own augmentations (the same seed would repeat them across shares).
    own_seed = seed + part[0]
    layer, preset_mixing = get_augmentation(augment, image_size, seed=own_seed)
    random_calls = None if deterministic else tf.data.AUTOTUNE
    transform, plain = pipeline_transforms(
        read, layer if training else None, image_size, augment, crop_ratio
    )
    mixing = preset_mixing if mixing is True else (mixing or None)
    mix = None
    if training and mixing is not None and (mixing.mixup_alpha or mixing.cutmix_alpha):
        if num_classes is None:
            raise ValueError(f"mixing needs class labels; source={shown_source(source)} has none.")
        mix = _mixer(mixing, num_classes, own_seed)
    per_process = batch_size // part[1]
    if training and read.fetch is not None:
        epochs = Epochs(
            read, transform, per_process, own_seed, shuffle, repeats, mix, drop_remainder,
            random_calls,
        )  # fmt: skip
        ds = _read_ahead(epochs.dataset(), deterministic)
        ds.from_step = lambda step, each=None: _read_ahead(epochs.run(step, each), deterministic)
    else:
        examples = _repeated(read.ds, repeats) if repeats > 1 else read.ds
        if training and layer is not None:
            examples = seeded_map(examples, transform, own_seed, random_calls)
        else:
            examples = examples.map(plain, num_parallel_calls=tf.data.AUTOTUNE)
        ds = examples.batch(per_process, drop_remainder=drop_remainder)
        if mix is not None:
            ds = seeded_map(ds, mix, own_seed, random_calls, stream=1)
        ds = _read_ahead(ds, deterministic)
    ds.class_names, ds.num_classes = list(read.class_names or []), num_classes
    ds.process_index, ds.process_count = part
    # This process's examples per epoch (each epoch's last batch holds the remainder).
    count = read.count if read.count is not None else int(read.ds.cardinality())
    ds.examples = count if count >= 0 else None
    if drop_remainder and ds.examples is not None and ds.examples < per_process:
        raise ValueError(
            f"{ds.examples} examples per process make no batch of {per_process} "
            "(drop_remainder=True); pass a smaller batch_size."
        )
    ds.batch_size, ds.drop_remainder = batch_size, drop_remainder
    ds.augmented = training and (layer is not None or mix is not None)
    # All processes' images, each once, evaluation-transformed (for statistics).
    whole = read.whole() if read.whole is not None else read.ds
    ds.unaugmented = whole.map(plain, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    ds.provenance = _provenance(read.origin, image_size, augment, seed, repeats, **settings)
    return ds
