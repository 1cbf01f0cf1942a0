"""Image folders: one sub-folder per class of JPEG, PNG, GIF (first frame) or BMP files -- the
formats of `keras.utils.image_dataset_from_directory` -- read into `tf.data`. As there and in
torchvision's `ImageFolder`, an EXIF orientation tag is not applied: a photo stored sideways
with a tag to rotate it is read sideways (rotate such files first).

Files are checked by their bytes when the folder is listed, so that a non-image, corrupt,
oversized (`image_files.MAX_IMAGE_PIXELS`) or, with `strict=True`, truncated file is reported
by name (skipped with a warning, or an error with `strict=True`) instead of failing in the
middle of an epoch.
"""

import hashlib
import os
import statistics
import sys
import warnings
from pathlib import Path

from keras_resvit.base.lazy import tf
from keras_resvit.base.validation import check_bool, check_seed
from keras_resvit.data.checks import assertion
from keras_resvit.data.folder_layout import (
    EXTENSIONS,
    FOLDER_SPLITS,
    class_dirs,
    class_files,
    class_root_of,
    refuse_files_of_two_classes,
    split_folder,
    stray_images,
)
from keras_resvit.data.image_files import image_dimensions, image_problem
from keras_resvit.data.tf_random import shuffled

MAX_NAMED = 5  # skipped files named in one warning
SIZE_SAMPLE = 64  # files whose headers give a folder's typical image size


def _problem(path, strict):
    if path.suffix.lower() not in EXTENSIONS:
        return f"not a {', '.join(EXTENSIONS[:-1])} or {EXTENSIONS[-1]} file"
    return image_problem(path, complete=strict)


def _held_out(files, class_dir, count, seed) -> set:
    """The `count` of a class's `files` held out: those first in the order of a hash of the
    seed and each file's path within `class_dir`. A file's place in that order depends on its
    own name only, so images added to (or removed from) one class move no file of another
    class, and of their own class at most the few that the count and the order shift; a
    draw from one random stream over every class moved files of every later class."""

    def key(path):
        name = path.relative_to(class_dir).as_posix()
        return hashlib.sha256(f"{seed}:{name}".encode()).digest()

    return set(sorted(files, key=key)[:count])


def list_image_folder(
    root, split="train", *, validation_split=None, seed=0, strict=False, complete=None
):
    """Lists the images of a class-per-sub-folder tree and their labels.

    The classes are the sub-folders of `root/split` when it exists, else of the training
    images: `root/train`, or `root` when it has no split folders. Of those, `validation_split`
    holds out that share of every class (the same files for every seed-equal call, at least
    one image on either side; a class of one image stays in training, with a warning; images
    added to one class leave every other class's split as it was) as the
    "validation" / "test" split, the rest being "train". A "validation" or "test" folder beside
    a "train" folder takes the training split's classes and labels, so it may lack a class but
    not add one. A split's folder is named as the split, or, when it holds class folders, by
    a common name of it in any case (`folder_layout.SPLIT_FOLDER_NAMES`: "Train/", "training/",
    "val/", "valid/", "Test/"); split folders without a training folder, and an image linked
    into two classes, are refused rather than read as classes.

    Args:
        root: the folder.
        split: "train", "validation" or "test".
        validation_split: fraction in (0, 1) of the training images held out as the splits
            that have no folder of their own.
        seed: seed of the hold-out draw.
        strict: raise on a non-image, corrupt, oversized or truncated file instead of skipping
            it with a warning; finding truncated files reads every file whole.
        complete: read each listed file whole to skip (with the warning) a truncated one;
            default `strict`. An evaluation split should: a truncated file would otherwise
            fail to decode while the split is read.

    Returns:
        `(paths, labels, class_names)`: lists of file paths and int labels, and the sorted
        class names.

    Raises:
        FileNotFoundError: when `root` does not exist.
        ValueError: for an empty folder, a single class, a class with no image, a bad file
            with `strict=True`, a split with a class the training split lacks, or a bad
            `split` / `validation_split`.

    Example:
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from keras_resvit.data.folders import list_image_folder
    >>> for name in ("daisy", "rose"):
    ...     Path("flowers", name).mkdir(parents=True)
    ...     Image.new("RGB", (8, 8)).save(f"flowers/{name}/1.png")
    >>> paths, labels, names = list_image_folder("flowers/")
    >>> names, list(labels)
    (['daisy', 'rose'], [0, 1])
    """
    root = Path(root).expanduser()
    if root.is_file():
        raise ValueError(
            f"source={str(root)!r} is a file, not a folder; pass a folder of one sub-folder of "
            "images per class, or the file's arrays as an (images, labels) pair (an .npz: "
            "with np.load(path) as f: (f['x_train'], f['y_train']))."
        )
    if not root.is_dir():
        hint = " (the bundled digits: the string 'digits')" if root.name == "digits" else ""
        raise FileNotFoundError(f"source={str(root)!r}: no such folder{hint}.")
    if split not in FOLDER_SPLITS:
        raise ValueError(f"split={split!r} is not valid for a folder; valid: {FOLDER_SPLITS}.")
    check_bool("strict", strict)
    check_bool("complete", complete, none_ok=True)
    check_seed(seed)
    if validation_split is not None and not (
        isinstance(validation_split, float) and 0.0 < validation_split < 1.0
    ):
        raise ValueError(f"validation_split={validation_split!r} must be a float in (0, 1).")
    class_root, hold_out = class_root_of(root, split, validation_split)
    listed_dirs = class_dirs(class_root)
    names = [d.name for d in listed_dirs]
    train_folder = split_folder(root, "train")
    if class_root != root and split != "train" and train_folder is not None:
        # A split folder may lack a class: its labels are the training split's, so that
        # label i means the same class in every split.
        names = [d.name for d in class_dirs(train_folder)]
        unknown = [d.name for d in listed_dirs if d.name not in names]
        if unknown:
            raise ValueError(
                f"source={str(class_root)!r} has class folder(s) {unknown} that "
                f"{str(train_folder)!r} lacks; every split's classes must be classes of "
                "the training split."
            )
    if len(names) < 2:
        raise ValueError(
            f"source={str(class_root)!r} has {len(listed_dirs)} class sub-folder(s); an image "
            "folder needs one sub-folder per class and at least 2 classes."
        )
    paths, labels, skipped, alone = [], [], [], []
    owners = {}  # each real file's class: a file linked into two classes has two labels
    for class_dir in listed_dirs:
        label = names.index(class_dir.name)
        files, broken = class_files(class_dir)
        for path in files:
            owners.setdefault(os.path.realpath(path), []).append((class_dir.name, path))
        skipped += [
            f"{path} (a link to {'a folder holding its class' if path.is_dir() else 'nothing'})"
            for path in broken
        ]
        good = []
        for path in files:
            problem = _problem(path, strict)
            if problem:
                skipped.append(f"{path} ({problem})")
            else:
                good.append(path)
        if not good:
            raise ValueError(
                f"source={str(class_root)!r}: class folder {class_dir.name!r} has no JPEG, "
                "PNG, GIF or BMP image."
            )
        if hold_out and len(good) == 1:
            alone.append(class_dir.name)
            good = good if split == "train" else []
        elif hold_out:
            # At least one image of each class on either side.
            count = min(max(1, round(validation_split * len(good))), len(good) - 1)
            held = _held_out(good, class_dir, count, seed)
            want_held = split != "train"
            good = [p for p in good if (p in held) == want_held]
        if complete and not strict:  # only the files kept: strict read every file whole
            truncated = [p for p in good if _problem(p, True)]
            skipped += [f"{p} (truncated)" for p in truncated]
            good = [p for p in good if p not in truncated]
        paths += [str(p) for p in good]
        labels += [label] * len(good)
    refuse_files_of_two_classes(class_root, owners)
    stray = stray_images(class_root)
    if stray:
        warnings.warn(
            f"{len(stray)} image file(s) of {str(class_root)!r} lie beside its class folders, "
            f"in no class, and are not read: {', '.join(p.name for p in stray[:MAX_NAMED])}"
            f"{' ...' if len(stray) > MAX_NAMED else ''}; move each into its class's folder.",
            stacklevel=3,
        )
    if skipped:
        named = ", ".join(skipped[:MAX_NAMED])
        more = f" and {len(skipped) - MAX_NAMED} more" if len(skipped) > MAX_NAMED else ""
        message = f"{len(skipped)} file(s) that are not usable images: {named}{more}"
        if strict:
            raise ValueError(f"source={str(class_root)!r} has {message} (strict=True).")
        warnings.warn(f"Skipping {message}.", stacklevel=3)
    if not paths:
        raise ValueError(
            f"split={split!r} of {str(class_root)!r} with validation_split={validation_split} "
            "has no image: every class holds one image, kept for training; pass a folder with "
            "more images per class, or a validation/ or test/ folder."
        )
    if alone:
        warnings.warn(
            f"validation_split={validation_split}: class folder(s) {alone[:MAX_NAMED]} of "
            f"{str(class_root)!r} hold one image each, kept for training; the held-out split "
            "has none of them.",
            stacklevel=3,
        )
    return paths, labels, names


def decode_image(path):
    """Reads a JPEG, PNG, GIF (its first frame) or BMP file into a (H, W, 3) uint8 tensor (grey
    images become RGB)."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image.set_shape((None, None, 3))
    return image


def typical_shorter_side(paths, sample: int = SIZE_SAMPLE) -> float:
    """The median shorter side, in pixels, of up to `sample` listed files spread over `paths`,
    read from their headers (nothing is decoded)."""
    step = max(1, len(paths) // sample)
    return statistics.median(min(image_dimensions(path)) for path in paths[::step][:sample])


def folder_dataset(paths, labels, *, shuffle, seed, strict=False):
    """Shuffles the (cheap) file list, then decodes in parallel; one example per listed file.

    The dataset has exactly `len(paths)` examples and says so (a known cardinality: Keras knows
    an epoch's length from the first epoch on). A file that passed the listing's checks can
    still fail to decode (truncated, when not `strict`, or corrupt inside): unless `strict`,
    it is dropped with TensorFlow's warning rather than stopping training, and its place is
    taken by the first image of the next pass over the files (reshuffled), so that the count
    stays exact. Only when more than half of the files fail does an epoch end early, with
    TensorFlow's "expected to contain N elements" error. With `strict`, the read stops at
    such a file with an error that names it (`_decoded`).
    """
    count = len(paths)
    ds = tf.data.Dataset.from_tensor_slices((_path_tensor(paths), tf.constant(labels, "int32")))
    if shuffle:
        ds = shuffled(ds, count, seed)
    ds = _decoded(ds, lambda path, label: path, strict)
    ds = ds.map(lambda image, path, label: (image, label))
    return _keeping_count(ds, count, strict).apply(tf.data.experimental.assert_cardinality(count))


def _decoded(items, path_of, strict):
    """`items`, a dataset of tuples naming a file each (`path_of(*item)`), as one of
    (decoded image, *item), decoded in parallel, in order.

    Unless `strict`, a file that fails to decode is dropped with TensorFlow's warning, which
    names no file. With `strict`, the first one stops the read with an error naming the file
    (a `ValueError` inside `checks.data_errors`), where TensorFlow's own ("Invalid PNG data")
    names none: each item goes with its position and its predecessor's file, and an end marker
    follows the last one; once the failed items are dropped, the item after a gap names the
    file before it.
    """
    decode = lambda *item: (decode_image(path_of(*item)), *item)  # noqa: E731
    if not strict:
        # TensorFlow's warning names no file; naming it (the position scan of the strict
        # read) cost a quarter of the folder pipeline's throughput, so only strict reads do.
        ds = items.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.ignore_errors(log_warning=True)
    marked = items.map(lambda *item: (False, item))
    marked = marked.concatenate(items.take(1).map(lambda *item: (True, item)))

    def number(state, element):
        position, previous = state
        return (position + 1, path_of(*element[1])), (position, previous, *element)

    def read(position, previous, end, item):
        empty = lambda: tf.zeros((0, 0, 3), "uint8")  # noqa: E731
        image = tf.cond(end, empty, lambda: decode_image(path_of(*item)))
        return image, position, previous, end, item

    def check(expected, element):
        _, position, previous, *_ = element
        message = "image {} cannot be decoded: its bytes are damaged; remove or replace it."
        with tf.control_dependencies([assertion(position == expected, message, previous)]):
            return tf.identity(position + 1), element

    start = (tf.constant(0, "int64"), tf.constant(b""))
    ds = marked.scan(start, number).map(read, tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors().scan(tf.constant(0, "int64"), check)
    ds = ds.filter(lambda image, position, previous, end, item: tf.logical_not(end))
    return ds.map(lambda image, position, previous, end, item: (image, *item))


def _path_tensor(paths):
    """`paths` as a tensor of the file system's bytes: a name that is not UTF-8 (which Python
    holds with surrogate escapes) reaches the file, where a str tensor could not hold it."""
    # `os.fsencode`, spelt out: inside a traced tf.data function AutoGraph would try to
    # convert the library function (and warn that it cannot read its source).
    encoding, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
    return tf.constant([str(path).encode(encoding, errors) for path in paths], tf.string)


def _keeping_count(decoded, count, strict):
    """`decoded` (a dataset of decoded files, those that fail dropped unless `strict`), with,
    unless `strict`, the places of the dropped ones taken by the first examples of another
    pass over it: `count` examples in all."""
    if strict:
        return decoded
    return decoded.repeat(2).take(count)


def fetch_files(paths, labels, places, *, strict=False):
    """`places`, a dataset of (index into `paths`, seed), as one of (decoded image, label,
    seed): the files read at any place and in any order (`epochs`). As in `folder_dataset`, a
    file that fails to decode is dropped (unless `strict`) and the first elements of `places`
    are read again after the last to keep their count; each keeps its seed."""
    with tf.device("/CPU:0"):
        paths, labels = _path_tensor(paths), tf.constant(labels, "int32")

    decoded = _decoded(places, lambda index, seed: tf.gather(paths, index), strict)
    decoded = decoded.map(lambda image, index, seed: (image, tf.gather(labels, index), seed))
    return _keeping_count(decoded, places.cardinality(), strict)
