"""Dataset sources read into `tf.data`: one reader per kind of source (`SOURCES`), each giving
this process's share of the examples as (uint8 RGB pixels, int32 label), decoded, cached and
shuffled as asked (`load_dataset` transforms and batches them).

Several processes of one run each read a share before anything is decoded: every N-th listed
file or array row from the process's index, or an equal tfds sub-split.
"""

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keras_resvit.base.files import first_line
from keras_resvit.base.lazy import tf
from keras_resvit.base.validation import check_choice
from keras_resvit.data.checks import data_errors
from keras_resvit.data.folders import (
    fetch_files,
    folder_dataset,
    list_image_folder,
    typical_shorter_side,
)
from keras_resvit.data.image_files import image_dimensions
from keras_resvit.data.in_memory import checked_arrays, digest, load_digits
from keras_resvit.data.loaders import read_listed
from keras_resvit.data.tf_random import shuffled

SPLITS = ("train", "test")
SHUFFLE_BUFFER = 10_000  # elements held when shuffling decoded images
CACHE_BYTES = 1 << 30  # auto-cache decoded images up to 1 GiB
FOLDER_CACHE_BYTES = 100 << 20  # ... i.e. folders up to ~100 MB of compressed files
SIZE_SAMPLE = 16  # images of a tfds dataset of varying size read to find their typical size
FOLDER = "an image folder path"  # the `source_kind` of a folder
VALID_SOURCES = "'digits', 'tfds:NAME', the path of an image folder, or (images, labels) arrays"


@dataclass
class Source:
    """A source read by its reader: this process's share of the examples, decoded, cached
    and shuffled as asked."""

    ds: "tf.data.Dataset"  # of (RGB pixels, int32 label), unbatched
    class_names: list | None
    fixed: tuple | None  # the images' (height, width) when all share it
    origin: str  # where the examples come from (all processes'), for the `provenance`
    shorter_side: Callable[[], float]  # the images' typical shorter side, read when asked
    whole: Callable[[], "tf.data.Dataset"] | None = None  # all processes' examples, when
    # `ds` is a share: what statistics (`PixelMean`) read, the same in every process
    count: int | None = None  # the examples of the share, when `fetch` reads any of them
    fetch: Callable[["tf.data.Dataset"], "tf.data.Dataset"] | None = None  # a dataset of
    # (index in the share, seed) -> one of (pixels, label, seed), the share's index-th
    # examples: what `epochs.Epochs` reads an epoch with, in any order from any place


def _share(items, part):
    """A process's share of a list or array, `part` = (index, count): every count-th item from
    `index`, all shares of one length (the last len(items) % count items are in none)."""
    index, count = part
    return items[: len(items) - len(items) % count][index::count]


def _shuffle_seed(seed, part):
    """The seed of a process's shuffle of its share: one of its own. Shares deal out every
    count-th example, so with one order for all the k-th examples of the shares (neighbours
    in the source: a folder lists its files class by class) would meet in the same global
    batch every epoch. One process shuffles with `seed` itself."""
    return seed + part[0]


def _arrays_origin(name, split, images, labels):
    return f"{name}[{split}] {digest(images, labels)}"


def _in_memory(name, split, images, labels, class_names, shuffle, seed, part, origin=None):
    """A `Source` over arrays held in memory, this process's share (`part`) of their rows;
    `origin` by default names them by their contents' digest."""
    origin = origin or _arrays_origin(name, split, images, labels)
    whole = None
    if part[1] > 1:  # statistics read every row (one process reads its `ds`: no second copy)
        whole = lambda: tf.data.Dataset.from_tensor_slices((images, labels))  # noqa: E731
    share = _share(images, part), _share(labels, part)
    return _share_in_memory(*share, class_names, shuffle, seed, part, origin, whole)


def _share_in_memory(images, labels, class_names, shuffle, seed, part, origin, whole):
    """A `Source` over a process's share (`part`) of the examples, held in memory as
    `images` and `labels`; `whole` reads all processes' examples."""
    with tf.device("/CPU:0"):  # an input pipeline's tensors, not an accelerator's
        shared = tf.constant(images), tf.constant(labels)
    ds = tf.data.Dataset.from_tensor_slices(shared)
    count = len(shared[1])
    if shuffle:
        ds = shuffled(ds, count, _shuffle_seed(seed, part))

    def fetch(places):
        read = lambda i, s: (tf.gather(shared[0], i), tf.gather(shared[1], i), s)  # noqa: E731
        return places.map(read, num_parallel_calls=tf.data.AUTOTUNE)

    fixed = images.shape[1:3]
    return Source(ds, class_names, fixed, origin, lambda: min(fixed), whole, count, fetch)


def _read_digits(source, split, *, image_size, shuffle, seed, part, **_):
    check_choice("split", split, SPLITS)
    train, test = load_digits(image_size or 32)
    images, labels = train if split == "train" else test
    names = [str(i) for i in range(10)]
    return _in_memory("digits", split, images, labels, names, shuffle, seed, part)


def _array_pair(source, split):
    """`source`, checked to be an (images, labels) pair read with a valid split."""
    check_choice("split", split, SPLITS)
    if not isinstance(source, (tuple, list)) or len(source) != 2:
        raise ValueError(
            f"source of type {type(source).__name__} is not valid; valid: {VALID_SOURCES}."
        )
    return source


def _read_arrays(source, split, *, shuffle, seed, part, **_):
    images, labels = checked_arrays(*_array_pair(source, split))
    class_names = [str(i) for i in range(int(labels.max()) + 1)]
    return _in_memory("arrays", split, images, labels, class_names, shuffle, seed, part)


def _load_tfds(source, split, data_dir, shuffle, seed=None):
    """(dataset of (uint8 RGB, int32), info) of a tensorflow-datasets split; `shuffle`: its
    files in an order drawn from `seed` (else tensorflow-datasets draws one per run)."""
    import requests
    import tensorflow_datasets as tfds

    try:
        ds, info = tfds.load(
            source[5:],
            split=split,
            data_dir=data_dir,
            as_supervised=True,
            with_info=True,
            shuffle_files=shuffle,
            read_config=tfds.ReadConfig(shuffle_seed=seed if shuffle else None),
        )
    except tfds.core.registered.DatasetNotFoundError as error:
        raise ValueError(
            f"source='{source}' is not a tensorflow-datasets name; see tfds.list_builders()."
        ) from error
    except (requests.RequestException, tfds.download.DownloadError) as error:
        # A first load downloads (with tensorflow-datasets' retries: minutes without network).
        text = first_line(error)
        errno = re.search(r"\[Errno -?\d+\] [^'\")]+", text)  # "[Errno 111] Connection refused"
        reason = errno[0] if errno else text if len(text) <= 150 else text[:150] + "..."
        raise ConnectionError(
            f"source={source!r}: tensorflow-datasets could not download it "
            f"({type(error).__name__}: {reason}). Without network, prepare it where there is "
            "one and pass that data_dir=, or read an image folder or arrays."
        ) from None
    except ValueError as error:
        if "builder name" not in str(error):
            raise
        raise ValueError(
            f"source={source!r} does not name a tensorflow-datasets dataset; valid: "
            "'tfds:<name>' or 'tfds:<name>/<config>:<version>', e.g. 'tfds:cifar10'."
        ) from None
    if info.features[info.supervised_keys[0]].shape[-1] == 1:
        ds = ds.map(lambda x, y: (tf.image.grayscale_to_rgb(x), y))
    return ds.map(lambda x, y: (x, tf.cast(y, "int32"))), info


def _read_tfds(source, split, *, data_dir, shuffle, cache, seed, part, **_):
    """A tensorflow-datasets dataset ("tfds:<name>") as (uint8 RGB, int32): read into memory
    when its images are of one size and fit in `CACHE_BYTES` (several processes then take
    every P-th row, as of arrays), else streamed from its files (several processes read
    equal sub-splits of `split`)."""
    import tensorflow_datasets as tfds

    raw, info = _load_tfds(source, split, data_dir, False)  # in the split's order
    count = int(raw.cardinality())
    origin = f"{source}[{split}], {count} examples"
    image_key, label_key = info.supervised_keys
    image_shape = info.features[image_key].shape
    label = info.features[label_key]
    class_names = list(label.names) if hasattr(label, "names") else None
    fixed = tuple(image_shape[:2]) if None not in image_shape[:2] else None
    small = fixed is not None and count > 0 and count * fixed[0] * fixed[1] * 3 <= CACHE_BYTES
    if small and cache is not False:
        # Read once into memory, in the split's order: then, as arrays, each training epoch
        # is made from its key (`epochs.Epochs`) and a resumed run starts at its step.
        images, labels = _read_all(raw, fixed, count)
        return _in_memory(source, split, images, labels, class_names, shuffle, seed, part, origin)
    whole = None
    if part[1] > 1:
        shares = tfds.even_splits(split, part[1], drop_remainder=True)
        raw = _load_tfds(source, shares[part[0]], data_dir, shuffle, _shuffle_seed(seed, part))[0]
        whole = lambda: _load_tfds(source, split, data_dir, False)[0]  # noqa: E731
    elif shuffle:  # its files in an order of each pass's own
        raw = _load_tfds(source, split, data_dir, True, _shuffle_seed(seed, part))[0]
    ds = raw.cache() if cache else raw
    ds = shuffled(ds, SHUFFLE_BUFFER, _shuffle_seed(seed, part)) if shuffle else ds
    if fixed is not None:
        return Source(ds, class_names, fixed, origin, lambda: min(fixed), whole)
    return Source(ds, class_names, None, origin, lambda: _sampled_shorter_side(raw), whole)


def _read_all(ds, fixed, count):
    """The (image, label) pairs of `ds` (at most `count`) as two NumPy arrays, filled in place:
    (N, *fixed, 3) uint8 and (N,) int32."""
    images, labels = np.empty((count, *fixed, 3), "uint8"), np.empty((count,), "int32")
    filled = 0
    with data_errors():  # a file that fails to decode, by name
        for x, y in ds.take(count).batch(1024).as_numpy_iterator():
            images[filled : filled + len(y)], labels[filled : filled + len(y)] = x, y
            filled += len(y)
    return images[:filled], labels[:filled]


def _sampled_shorter_side(ds):
    """The median shorter side of the first `SIZE_SAMPLE` images of `ds`."""
    sides = ds.take(SIZE_SAMPLE).map(lambda x, y: tf.reduce_min(tf.shape(x)[:2]))
    return float(np.median(list(sides.as_numpy_iterator())))


def _one_size(paths):
    """The (height, width) of every file of `paths` when they share it (read from their
    headers) and their decoded pixels fit in `CACHE_BYTES`; else None."""
    size = None
    for path in paths:
        dimensions = image_dimensions(path)
        if dimensions is None or size not in (None, dimensions):
            return None
        size = dimensions
    if size is None or len(paths) * size[0] * size[1] * 3 > CACHE_BYTES:
        return None
    return size[1], size[0]


def _folder_is_small(paths):
    total = 0
    for path in paths:
        total += Path(path).stat().st_size
        if total > FOLDER_CACHE_BYTES:
            return False
    return True


def _folder_cache(paths, cache):
    """(whether a folder's images are kept in memory: `cache`, by default when its files are
    small; their one (height, width) when they are then decoded into memory at once, else
    None): the same choice for both loaders."""
    cache = _folder_is_small(paths) if cache is None else cache
    return cache, _one_size(paths) if cache else None


def is_training_split(split) -> bool:
    """Whether `split` names training data ("train", "train[:90%]", ...)."""
    return isinstance(split, str) and split.startswith("train")


def evaluation_read(training, shuffle) -> bool:
    """Whether a read is an evaluation's, not a shuffled training split's: a file that fails
    to decode then stops it (a stand-in image, what training reads in its place, would be
    scored twice and the figure be wrong without a word), and a truncated file is skipped,
    with a warning, when the files are listed (each is read whole)."""
    return not (training and shuffle)


def _list_folder(source, split, validation_split, seed, strict, evaluation):
    """(paths, labels, class names, origin, whether a file that fails to decode stops the
    read) of a folder of one sub-folder of images per class; `evaluation`: see
    `evaluation_read`."""
    complete = strict or evaluation
    if (
        isinstance(source, str)
        and not any(c in source for c in "/\\~")
        and not Path(source).exists()
    ):
        raise ValueError(
            f"source={source!r} is neither a known source nor an existing folder; valid: "
            f"{VALID_SOURCES}."
        )
    paths, labels, class_names = list_image_folder(
        source, split, validation_split=validation_split, seed=seed, strict=strict,
        complete=complete,
    )  # fmt: skip
    origin = f"folder {str(Path(source).expanduser().resolve())!r}[{split}], "
    origin += f"{len(paths)} files, validation_split={validation_split}"
    return paths, labels, class_names, origin, complete


def _read_folder(
    source, split, *, validation_split, seed, strict, cache, shuffle, training, part, **_
):
    """A folder of one sub-folder of images per class, cached when its files are small (and
    then, when they are all of one size, decoded into memory at once); several processes
    decode only their share of the listed files."""
    paths, labels, class_names, origin, strict = _list_folder(
        source, split, validation_split, seed, strict, evaluation_read(training, shuffle)
    )
    whole = None
    if part[1] > 1:
        listed = paths, labels
        whole = lambda: folder_dataset(*listed, shuffle=False, seed=seed, strict=strict)  # noqa: E731
        paths, labels = _share(paths, part), _share(labels, part)
    cache, fixed = _folder_cache(paths, cache)
    if fixed is not None:
        # Files of one size whose pixels fit: decoded once into memory, then read as arrays
        # are (each training epoch made from its key, `epochs.Epochs`), not decoded anew.
        decoded = folder_dataset(paths, labels, shuffle=False, seed=seed, strict=strict)
        images, labels = _read_all(decoded, fixed, len(paths))
        return _share_in_memory(images, labels, class_names, shuffle, seed, part, origin, whole)
    shuffle_seed = _shuffle_seed(seed, part)
    if shuffle and cache:
        # The listing is sorted by class, and a cached dataset is shuffled in a buffer of at
        # most SHUFFLE_BUFFER images: cache it in a random order, or a larger folder would
        # give batches of one or two classes.
        order = np.random.default_rng(shuffle_seed).permutation(len(paths))
        paths, labels = [paths[i] for i in order], [labels[i] for i in order]
    ds = folder_dataset(
        paths, labels, shuffle=shuffle and not cache, seed=shuffle_seed, strict=strict
    )
    if cache:
        ds = ds.cache()
        ds = shuffled(ds, min(len(paths), SHUFFLE_BUFFER), shuffle_seed) if shuffle else ds
    shorter_side = lambda: typical_shorter_side(paths)  # noqa: E731
    fetch = functools.partial(fetch_files, paths, labels, strict=strict)
    return Source(ds, class_names, None, origin, shorter_side, whole, len(paths), fetch)


# Each kind of source (as users name it) and its reader: reader(source, split, **options)
# -> `Source`, `options` being `load_dataset`'s arguments that concern reading.
SOURCES = {
    "digits": _read_digits,
    "tfds:<name>": _read_tfds,
    FOLDER: _read_folder,
    "(images, labels) arrays": _read_arrays,
}


def source_kind(source):
    """The `SOURCES` name of `source`."""
    if isinstance(source, str) and source.startswith("tfds:"):
        return "tfds:<name>"
    if isinstance(source, (str, Path)) and source != "digits":
        return FOLDER
    return "digits" if isinstance(source, str) else "(images, labels) arrays"


def loader_examples(source, split, image_size, validation_split, seed, strict, cache, evaluation):
    """(`ImageLoader` arguments, origin, fixed size or None, typical shorter side function) of
    digits, arrays or an image folder, read without TensorFlow (`load_dataset`'s py_dataset
    loader). A folder's files are decoded into memory at once as in `_read_folder`: when
    `cache` (default: they are small) and they are all of one size whose pixels fit.
    `evaluation`: see `evaluation_read`."""
    kind = source_kind(source)
    if kind == FOLDER:
        paths, labels, class_names, origin, strict = _list_folder(
            source, split, validation_split, seed, strict, evaluation
        )
        fixed = _folder_cache(paths, cache)[1]
        if fixed is not None:
            images, failed = np.empty((len(paths), *fixed, 3), "uint8"), set()
            labels = np.array(labels)
            for row in range(len(paths)):  # a file that fails to decode: its stand-in's label
                images[row], read = read_listed(paths, row, strict, failed)
                labels[row] = labels[read]
            data = {"images": images, "labels": labels, "class_names": class_names}
            return data, origin, fixed, lambda: min(fixed)
        data = {"paths": paths, "labels": labels, "class_names": class_names}
        return data, origin, None, lambda: typical_shorter_side(paths)
    if kind == "digits":
        check_choice("split", split, SPLITS)
        train, test = load_digits(image_size or 32)
        images, labels = train if split == "train" else test
    else:
        images, labels = checked_arrays(*_array_pair(source, split))
    origin = _arrays_origin(kind if kind == "digits" else "arrays", split, images, labels)
    fixed = images.shape[1:3]
    return {"images": images, "labels": labels}, origin, fixed, lambda: min(fixed)
