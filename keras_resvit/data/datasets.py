"""Dataset sources as `tf.data` pipelines of raw 0-255 RGB pixels and labels.

`tf.data` serves every backend: Keras' `fit` consumes it under TensorFlow, JAX and PyTorch, and
the Keras augmentation layers run TensorFlow ops inside it whatever the backend.
Pipeline: source -> decode -> (cache) -> shuffle -> augment (train) or evaluation transform
-> batch -> MixUp/CutMix (train, soft labels) -> prefetch.
"""

import hashlib
from pathlib import Path

import numpy as np

from keras_resvit.base.lazy import tf
from keras_resvit.base.validation import check_choice, check_int, check_number
from keras_resvit.data.augmentation import Mixing, get_augmentation
from keras_resvit.data.checks import check_pixels
from keras_resvit.data.folders import folder_dataset, list_image_folder, typical_shorter_side
from keras_resvit.data.preprocessing import evaluation_crop_ratio, evaluation_transform

SOURCES = ("digits", "tfds:<name>", "an image folder path", "(images, labels) arrays")
SPLITS = ("train", "test")
SHUFFLE_BUFFER = 10_000  # elements held when shuffling decoded images
CACHE_BYTES = 1 << 30  # auto-cache decoded images up to 1 GiB
FOLDER_CACHE_BYTES = 100 << 20  # ... i.e. folders up to ~100 MB of compressed files
SIZE_SAMPLE = 16  # images of a tfds dataset of varying size read to find their typical size
# Augmentation presets whose training views are whole images (resized to the output, then
# padded and cropped back): their evaluation resizes whole images too, whatever their size.
WHOLE_IMAGE_PRESETS = ("resnet_cifar",)


def load_digits(image_size: int = 32, test_fraction: float = 0.2, seed: int = 0):
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 images), needing no network.

    The 0-16 grey levels are scaled to 0-255, upsampled bilinearly to `image_size` and
    repeated to three channels so that every model's RGB preprocessing applies.

    Args:
        image_size: output height and width (>= 8).
        test_fraction: share of the images held out, stratified by class.
        seed: seed of the train/test split.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: float32 images (N, size, size, 3) in
        [0, 255] and int32 labels 0-9.

    Example:
    >>> (x, y), _ = load_digits()
    >>> x.shape[1:], int(y.max())
    ((32, 32, 3), 9)
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size={image_size!r} must be an int >= 8 (digits are 8x8).")
    digits = sklearn_digits()
    images = digits.images.astype("float32")[..., None] * (255.0 / 16.0)
    images = tf.image.resize(images, (image_size, image_size), method="bilinear").numpy()
    images = np.clip(np.repeat(images, 3, axis=-1), 0.0, 255.0)
    labels = digits.target.astype("int32")
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    return (x_train, y_train), (x_test, y_test)


def _arrays(source, split, image_size):
    """(images, labels, class_names) held in memory."""
    if isinstance(source, str):
        check_choice("split", split, SPLITS)
        train, test = load_digits(image_size or 32)
        images, labels = train if split == "train" else test
        return images, labels, [str(i) for i in range(10)]
    check_choice("split", split, SPLITS)
    if not isinstance(source, (tuple, list)) or len(source) != 2:
        raise ValueError(f"source of type {type(source).__name__} is not valid; valid: {SOURCES}.")
    images, labels = (np.asarray(a) for a in source)
    if images.ndim != 4 or len(images) != len(labels) or labels.ndim != 1 or not len(images):
        raise ValueError(
            f"source arrays have shapes {images.shape} and {labels.shape}; expected images "
            "(N, height, width, channels) and N integer labels, N >= 1."
        )
    if not np.issubdtype(images.dtype, np.number) or np.issubdtype(
        images.dtype, np.complexfloating
    ):
        raise ValueError(
            f"source images have dtype {images.dtype}; expected real pixel values (0-255)."
        )
    if np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating):
        bad = labels[(labels < 0) | (np.mod(labels, 1) != 0)]
    else:
        bad = labels
    if len(bad):
        raise ValueError(
            f"source labels must be class indices 0, 1, 2, ...; found {bad[0].item()!r} "
            f"(dtype {labels.dtype})."
        )
    labels = labels.astype("int32")
    images = images.astype("float32")
    check_pixels("source images", images)
    return images, labels, [str(i) for i in range(int(labels.max()) + 1)]


def _digest(*arrays) -> str:
    """A short hash of the arrays' bytes (read in place, not copied)."""
    digest = hashlib.blake2b(digest_size=8)
    for array in arrays:
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def _tfds(name, split, data_dir, shuffle):
    """(dataset of (uint8 RGB, int32), class_names, fixed (H, W) or None, cache-worthy)."""
    import tensorflow_datasets as tfds

    try:
        ds, info = tfds.load(
            name,
            split=split,
            data_dir=data_dir,
            as_supervised=True,
            with_info=True,
            shuffle_files=shuffle,
        )
    except tfds.core.registered.DatasetNotFoundError as error:
        raise ValueError(
            f"source='tfds:{name}' is not a tensorflow-datasets name; see tfds.list_builders()."
        ) from error
    image_key, label_key = info.supervised_keys
    image_shape = info.features[image_key].shape
    label = info.features[label_key]
    names = list(label.names) if hasattr(label, "names") else None
    if image_shape[-1] == 1:
        ds = ds.map(lambda x, y: (tf.image.grayscale_to_rgb(x), y))
    ds = ds.map(lambda x, y: (x, tf.cast(y, "int32")))
    fixed = tuple(image_shape[:2]) if None not in image_shape[:2] else None
    count = int(ds.cardinality())
    small = fixed is not None and count > 0 and count * fixed[0] * fixed[1] * 3 <= CACHE_BYTES
    return ds, names, fixed, small


def _shorter_side(fixed, paths, tfds_dataset):
    """The source images' typical shorter side: their fixed size, else the median over a
    sample, read from a folder's file headers or from a tfds dataset's first images."""
    if fixed is not None:
        return min(fixed)
    if paths is not None:
        return typical_shorter_side(paths)
    sides = tfds_dataset.take(SIZE_SAMPLE).map(lambda x, y: tf.reduce_min(tf.shape(x)[:2]))
    return float(np.median(list(sides.as_numpy_iterator())))


def _folder_is_small(paths):
    total = 0
    for path in paths:
        total += Path(path).stat().st_size
        if total > FOLDER_CACHE_BYTES:
            return False
    return True


def _folder(source, split, validation_split, seed, strict, cache, shuffle):
    """(dataset of (uint8 RGB, int32), listed paths, class_names, origin) of an image folder."""
    if (
        isinstance(source, str)
        and not any(c in source for c in "/\\~")
        and not Path(source).exists()
    ):
        raise ValueError(f"source={source!r} is not a known source; valid: {list(SOURCES)}.")
    paths, labels, class_names = list_image_folder(
        source, split, validation_split=validation_split, seed=seed, strict=strict
    )
    origin = f"folder {str(Path(source).expanduser().resolve())!r}[{split}], "
    origin += f"{len(paths)} files, validation_split={validation_split}"
    cache = _folder_is_small(paths) if cache is None else cache
    if shuffle and cache:
        # The listing is sorted by class, and a cached dataset is shuffled in a buffer of at
        # most SHUFFLE_BUFFER images: cache it in a random order, or a larger folder would
        # give batches of one or two classes.
        order = np.random.default_rng(seed).permutation(len(paths))
        paths, labels = [paths[i] for i in order], [labels[i] for i in order]
    ds = folder_dataset(paths, labels, shuffle=shuffle and not cache, seed=seed, strict=strict)
    if cache:
        ds = ds.cache()
        ds = ds.shuffle(min(len(paths), SHUFFLE_BUFFER), seed=seed) if shuffle else ds
    return ds, paths, class_names, origin


def _mix_batches(ds, mixing, num_classes, seed, parallel_calls):
    """Soft labels: smoothed one-hot, then MixUp or CutMix (one per batch, at random)."""
    mixup, cutmix = mixing.layers(seed)
    smoothing = mixing.label_smoothing

    def mix(images, labels):
        soft = tf.one_hot(labels, num_classes) * (1.0 - smoothing) + smoothing / num_classes
        data = {"images": images, "labels": soft}
        if mixup is None or cutmix is None:
            out = (mixup or cutmix)(data)
            return out["images"], out["labels"]
        # Only the chosen one runs: both layers draw from their own seed state in the branch.
        use_cutmix = tf.random.uniform((), seed=seed) < mixing.cutmix_prob
        out = tf.cond(use_cutmix, lambda: cutmix(dict(data)), lambda: mixup(dict(data)))
        return out["images"], out["labels"]

    return ds.map(mix, num_parallel_calls=parallel_calls)


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
) -> "tf.data.Dataset":
    """A batched, prefetched `tf.data.Dataset` of (float32 pixels in [0, 255], labels).

    Training splits ("train..." names) are shuffled and augmented; other splits (and training
    splits without `augment`) get the evaluation transform: the shorter side resized to
    `image_size / crop_ratio`, then the central `image_size` square. Unless `crop_ratio` is
    given, the crop ratio follows the images' size (`preprocessing.evaluation_crop_ratio`):
    photos much larger than the output (typical shorter side >= `image_size / 0.875`, e.g.
    >= 256 for 224) get the standard 0.875 center crop; images about the output size or
    smaller (CIFAR's 32x32 at 32, or upsampled for fine-tuning) are resized whole (1.0), as
    training saw them. With a whole-image training preset (`WHOLE_IMAGE_PRESETS`:
    resnet_cifar) named in `augment`, evaluation resizes whole images whatever their size.
    The typical size is the fixed size of arrays and tfds datasets, or the median shorter
    side of a sample of a folder's files (from their headers) or of a tfds dataset's first
    images. The dataset carries `class_names` and `num_classes` attributes, to be saved with
    the model, and a known number of batches (a folder's listed files).

    Args:
        source: "digits" (embedded, no network); "tfds:<name>" (tensorflow-datasets, e.g.
            "tfds:cifar10"); a folder with one sub-folder of JPEG/PNG images per class; or an
            `(images, labels)` pair of arrays.
        split: "train" or "test" for digits and arrays; "train", "validation" or "test" for a
            folder; any tensorflow-datasets split ("train[:90%]") for tfds.
        image_size: output height and width. Default: 32 for digits, the source's own size for
            arrays and fixed-size tfds datasets; required for folders and other tfds datasets.
        batch_size: examples per batch.
        augment: None, a preset name in `augmentation.PRESETS` or a Keras layer mapping one
            image to an `image_size` image; applied to training splits only. On another split
            it names the training preset that the evaluation transform matches (see above).
        mixing: the preset's MixUp/CutMix (True), none (False), or a `Mixing`; training splits
            only. With mixing, labels are float32 (batch, num_classes) and sum to 1.
        shuffle: shuffle every epoch; default True for training splits.
        seed: seed of the shuffle, the augmentation and a folder's hold-out split.
        drop_remainder: drop the last partial batch (static batch shape, for TPUs).
        cache: keep decoded images in memory; default when they fit (~1 GiB).
        crop_ratio: evaluation center-crop ratio in (0, 1]; 1.0 resizes whole images. Default:
            from the training preset and the images' size (see above).
        validation_split: fraction of a folder without split sub-folders held out as its
            "validation" / "test" split.
        data_dir: tensorflow-datasets data folder.
        strict: raise on a non-image, corrupt, oversized (`image_files.MAX_IMAGE_PIXELS`) or
            truncated file in a folder instead of skipping it with a warning; finding
            truncated files reads every file whole when the folder is listed. Without it, a
            listed file that fails to decode is replaced by another image of the folder, so
            that an epoch keeps the listed count (`folders.folder_dataset`).
        deterministic: reproducible augmentation for a given `seed`. The random layers keep
            their state in one variable, so parallel calls draw in a racy order (two calls
            reading the state at once draw the same transformation: a few percent of the images
            on average, in bursts), and reading ahead draws for batches a partial iteration
            drops; this runs them on one thread,
            batch by batch as they are asked for (slower).

    Returns:
        A `tf.data.Dataset` of (images, labels): int32 labels (N,), or soft labels (N, classes).
        Its attributes `class_names`, `num_classes` and `provenance` (where the examples come
        from and how they are read: `train()` resumes a run only on the same data) describe it;
        `unaugmented` holds the same images without augmentation or mixing, batched (`train()`
        computes a `PixelMean` from it).

    Raises:
        ValueError: for an unknown source, split or preset, a bad argument, or a folder that is
            empty, has one class, or (strict) holds an unusable image file; arrays with NaN or
            infinite pixels.
        FileNotFoundError: for a folder path that does not exist.

    Example:
    >>> ds = load_dataset("digits", "test", batch_size=8)
    >>> tuple(next(iter(ds))[0].shape), ds.num_classes
    ((8, 32, 32, 3), 10)
    """
    check_int("batch_size", batch_size)
    check_int("image_size", image_size, none_ok=True)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed={seed!r} must be an int.")
    check_number("crop_ratio", crop_ratio, 0, 1, include_high=True, none_ok=True)
    if not isinstance(mixing, (bool, Mixing)):
        raise ValueError(f"mixing={mixing!r} is not valid; pass True, False or a Mixing.")
    training = isinstance(split, str) and split.startswith("train")
    shuffle = training if shuffle is None else shuffle
    paths = raw = None
    if isinstance(source, str) and source.startswith("tfds:"):
        ds, class_names, fixed, small = _tfds(source[5:], split, data_dir, shuffle)
        raw = ds
        cache = small if cache is None else cache
        ds = ds.cache() if cache else ds
        ds = ds.shuffle(SHUFFLE_BUFFER, seed=seed) if shuffle else ds
        origin = f"{source}[{split}], {int(ds.cardinality())} examples"
    elif isinstance(source, (str, Path)) and source != "digits":
        ds, paths, class_names, origin = _folder(
            source, split, validation_split, seed, strict, cache, shuffle
        )
        fixed = None
    else:
        images, labels, class_names = _arrays(source, split, image_size)
        origin = (
            f"{'digits' if source == 'digits' else 'arrays'}[{split}] {_digest(images, labels)}"
        )
        fixed = images.shape[1:3]
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True) if shuffle else ds
    num_classes = len(class_names) if class_names else None
    if image_size is None:
        if fixed is None:
            raise ValueError(
                f"image_size=None is not valid for source={source!r}, whose images vary in "
                "size; pass a positive int."
            )
        if fixed[0] != fixed[1] and augment is not None:
            raise ValueError(f"image_size=None: pass an int for non-square {fixed} images.")
        image_size = int(fixed[0])

    layer, preset_mixing = get_augmentation(augment, image_size, seed=seed)
    random_calls = None if deterministic else tf.data.AUTOTUNE
    resized = fixed is None or tuple(fixed) != (image_size, image_size)

    def plain(ratio):
        if not resized:
            return ds.map(lambda x, y: (tf.cast(x, "float32"), y))
        resize = evaluation_transform(image_size, ratio)
        return ds.map(lambda x, y: (resize(x), y), num_parallel_calls=tf.data.AUTOTUNE)

    if training and layer is not None:
        # Statistics of the training images (PixelMean) see them whole, as the augmentation
        # presets do, not center-cropped.
        unaugmented = plain(crop_ratio or 1.0).batch(batch_size)
        ds = ds.map(lambda x, y: (layer(x), y), num_parallel_calls=random_calls)
    else:
        if crop_ratio is None and resized and augment not in WHOLE_IMAGE_PRESETS:
            crop_ratio = evaluation_crop_ratio(_shorter_side(fixed, paths, raw), image_size)
        ds = plain(crop_ratio or 1.0)
        unaugmented = ds.batch(batch_size)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    mixing = preset_mixing if mixing is True else (mixing or None)
    if training and mixing is not None and (mixing.mixup_alpha or mixing.cutmix_alpha):
        if num_classes is None:
            raise ValueError(f"mixing needs class labels; source={source!r} has none.")
        ds = _mix_batches(ds, mixing, num_classes, seed, random_calls)
    if deterministic:
        # Reading ahead (a prefetch, or a map fused with its batch) would draw the random
        # layers' numbers for batches that a partial iteration (a peek at the first batch)
        # then drops, a racy count: batches are made only when asked for.
        options = tf.data.Options()
        for name in ("inject_prefetch", "map_and_batch_fusion", "map_parallelization"):
            setattr(options.experimental_optimization, name, False)
        ds = ds.with_options(options)
    else:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    ds.class_names, ds.num_classes = list(class_names or []), num_classes
    ds.unaugmented = unaugmented  # the same images, evaluation-transformed (for statistics)
    # What the examples are and how they are read: a run resumes only on the same data.
    augmentation = augment if augment is None or isinstance(augment, str) else type(augment)
    ds.provenance = f"{origin}, image_size={image_size}, augment={augmentation}, seed={seed}"
    return ds
