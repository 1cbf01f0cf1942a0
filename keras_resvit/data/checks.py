"""Every batch checked inside the input pipeline, so that no number is computed on bad data.

A label the classifier cannot score trains silently on JAX (the loss takes whatever the
one-hot of an out-of-range index gives) and fails on TensorFlow with a bare "Graph execution
error" deep in `fit`; a NaN pixel turns the loss into NaN, which reads like a diverging
learning rate. `check_batches` adds one cheap map to a `tf.data` pipeline (a few reductions per
batch, on the pipeline's threads, no host round-trip per step) that fails on the first bad
batch, and `data_errors` turns that failure into one `ValueError` naming the argument, the
batch, the bad value and what is valid. `CheckedBatches` does the same for a
`keras.utils.PyDataset` (`kr.data.ImageLoader`), in NumPy, as each batch is made.
"""

import contextlib
import re
import sys
import warnings

import keras
import numpy as np

from keras_resvit.base.lazy import tf
from keras_resvit.base.validation import MAX_CLASSES

# Brackets the message inside TensorFlow's "assertion failed: [...]" text.
_BEGIN, _END = "<<keras_resvit: ", " >>"


def assertion(condition, message, *values):
    """An assertion op whose failure carries `message` formatted with `values` ("{}"), which
    `data_errors` turns into a `ValueError` with that message."""
    text = tf.strings.format(_BEGIN + message + _END, values, summarize=4)
    return tf.debugging.Assert(condition, [text])


def check_batches(data, num_classes: int, argument: str, image_shape=None, split_over=1):
    """`data` with each batch of (images, labels) checked as it is produced.

    Checks that every pixel is finite, that integer labels lie in [0, num_classes) (float
    labels must also be whole numbers), that soft labels are finite and non-negative (their
    width is the model's to check: it is the same in every batch), with `image_shape`, that
    images a dataset declares of unknown size are of that shape, and that every batch splits
    evenly over `split_over` devices. Batches are numbered from 1 within an epoch.

    Args:
        data: a batched `tf.data.Dataset` of (images, labels), or a `keras.utils.PyDataset`
            (checked by `CheckedBatches`).
        num_classes: the classifier's number of outputs.
        argument: the caller's name for `data`, for the message ("train_data").
        image_shape: the model's `(height, width, channels)` (None sizes take any), or None.
        split_over: the devices each batch is split over (`training.data_checks.split_over`).

    Returns:
        The checked dataset; iterate it inside `data_errors()` for a clear error.

    Example:
    >>> from keras_resvit.data.checks import data_errors, check_batches
    >>> import numpy as np
    >>> import tensorflow as tf
    >>> ds = tf.data.Dataset.from_tensor_slices((np.zeros((4, 8, 8, 3)), [0, 1, 2, 5]))
    >>> with data_errors():
    ...     list(check_batches(ds.batch(2), 3, "data"))  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ValueError: data: batch 2 has label 5, but the model has 3 classes ...
    """
    if isinstance(data, keras.utils.PyDataset):
        return CheckedBatches(data, num_classes, argument, image_shape=image_shape)
    declared = data.element_spec[0].shape
    unchecked = image_shape is not None and (
        declared.rank != len(image_shape) + 1
        or any(n is not None and declared[i + 1] is None for i, n in enumerate(image_shape))
    )
    label_spec = data.element_spec[1]
    soft = len(label_spec.shape) == 2
    integral = label_spec.dtype.is_integer

    def check(index, batch):
        images, labels = batch
        batch_number = index + 1
        checks = []
        if images.dtype.is_floating:
            # An image's sum is NaN or infinite exactly when one of its pixels is (0-255
            # pixels cannot overflow a float32 sum): one cheap reduction per batch.
            sums = tf.reduce_sum(tf.cast(images, "float32"), axis=[1, 2, 3])
            finite = tf.math.is_finite(sums)
            first = tf.argmin(tf.cast(finite, "int32"))
            checks.append(
                assertion(
                    tf.reduce_all(finite),
                    f"{argument}: batch {{}} has NaN or infinite pixels (image {{}} of the "
                    "batch); models take finite raw pixels 0-255: fix or drop those images.",
                    batch_number,
                    first + 1,
                )
            )
        if unchecked:  # a size the dataset leaves open, which the model fixes
            shape, count = tf.shape(images)[1:], len(image_shape)
            padded = tf.concat([shape, tf.zeros([count], shape.dtype)], 0)[:count]
            fits = tf.size(shape) == count
            for axis, size in enumerate(image_shape):
                if size is not None:
                    fits &= padded[axis] == size
            checks.append(
                assertion(
                    fits,
                    f"{argument}: batch {{}} has images of shape {{}}, but the model takes "
                    f"{tuple(image_shape)} (None: any size); give every batch the model's size.",
                    batch_number,
                    shape,
                )
            )
        if split_over > 1 and data.element_spec[0].shape[0] is None:
            size = tf.shape(images)[0]
            checks.append(
                assertion(
                    size % split_over == 0,
                    split_message(argument, "batch {}", "{}", split_over),
                    batch_number,
                    size,
                )
            )
        if soft:
            checks.append(
                assertion(
                    tf.reduce_all(tf.math.is_finite(labels) & (labels >= 0)),
                    f"{argument}: batch {{}} has soft labels that are negative or not finite; "
                    "soft labels are class probabilities.",
                    batch_number,
                )
            )
        else:
            bad = (labels < 0) | (labels >= num_classes)
            if not integral:
                bad |= tf.math.floor(labels) != labels
            value = tf.gather(labels, tf.argmax(tf.cast(bad, "int32")))
            message = _label_message(argument, "{}", "{}", num_classes)
            checks.append(assertion(~tf.reduce_any(bad), message, batch_number, value))
        with tf.control_dependencies(checks):
            return tf.identity(images), tf.identity(labels)

    return data.enumerate().map(check, num_parallel_calls=tf.data.AUTOTUNE)


class BatchError(ValueError):
    """A batch that fails `check_batch`: its message names the data, the batch and the value."""


def has_soft_labels(data) -> bool:
    """Whether the batches of `data` (a `tf.data.Dataset`, or a `keras.utils.PyDataset`: its
    batch 0) hold soft labels (batch, classes) rather than class indices (batch,)."""
    if isinstance(data, keras.utils.PyDataset):
        return np.ndim(data[0][1]) == 2
    return len(data.element_spec[1].shape) == 2


def split_message(argument, batch, size, split_over):
    """What a batch of `size` examples that `split_over` devices cannot share is told."""
    return (
        f"{argument}: {batch} holds {size} examples, which the run's {split_over} devices "
        "cannot split evenly (each takes an equal share of every batch). Load the data with "
        "drop_remainder=True (kr.data.load_dataset, kr.data.ImageLoader), or give each epoch "
        f"a multiple of {split_over} examples beyond its whole batches."
    )


def _label_message(argument, number, value, num_classes):
    return (
        f"{argument}: batch {number} has label {value}, but the model has {num_classes} "
        f"classes (valid labels: the integers 0 to {num_classes - 1}); fix the labels, or give "
        "the model as many classes as the data has (kr.replace_head)."
    )


def check_batch(
    argument: str, number: int, images, labels, num_classes: int, image_shape=None
) -> None:
    """`check_batches`' checks of one batch in hand (NumPy arrays), batch `number` (from 1),
    and that it is not empty, has a label per image and, where `image_shape` is given (the
    model's `(height, width, channels)`, None for any), images of that shape; raises a
    `BatchError` (a `ValueError`).

    Example:
    >>> import numpy as np
    >>> from keras_resvit.data.checks import check_batch
    >>> check_batch("data", 2, np.zeros((2, 4, 4, 3)), np.array([0, 5]), 3)
    ... # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    BatchError: data: batch 2 has label 5, but the model has 3 classes ...
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim == 0 or len(images) == 0 or labels.ndim == 0 or len(labels) != len(images):
        raise BatchError(
            f"{argument}: batch {number} holds images of shape {images.shape} and labels of "
            f"shape {labels.shape}; every batch holds one or more images and a label each (a "
            "PyDataset's len() counts only batches it can make)."
        )
    if image_shape is not None and not image_shape_fits(images.shape[1:], image_shape):
        raise BatchError(
            f"{argument}: batch {number} holds images of shape {images.shape[1:]}, but the "
            f"model takes {tuple(image_shape)}; every batch must have the model's size."
        )
    if images.dtype.kind == "f":
        finite = np.isfinite(images.reshape(len(images), -1).sum(axis=1, dtype="float64"))
        if not finite.all():
            raise BatchError(
                f"{argument}: batch {number} has NaN or infinite pixels (image "
                f"{np.argmin(finite) + 1} of the batch); models take finite raw pixels 0-255: "
                "fix or drop those images."
            )
    if labels.ndim == 2:
        if not (np.isfinite(labels) & (labels >= 0)).all():
            raise BatchError(
                f"{argument}: batch {number} has soft labels that are negative or not finite; "
                "soft labels are class probabilities."
            )
        return
    bad = (labels < 0) | (labels >= num_classes)
    if labels.dtype.kind == "f":
        bad |= ~np.isfinite(labels) | (np.floor(labels) != labels)
    if bad.any():
        value = labels[np.argmax(bad)]
        value = int(value) if float(value).is_integer() else float(value)
        raise BatchError(_label_message(argument, number, value, num_classes))


def image_shape_fits(shape, expected) -> bool:
    """Whether images of `shape` (height, width, channels) are of the `expected` one, whose
    None sizes take any."""
    return len(shape) == len(expected) and all(
        n is None or n == m for n, m in zip(expected, shape, strict=True)
    )


class CheckedBatches(keras.utils.PyDataset):
    """The batches of a `keras.utils.PyDataset` of (images, labels), each checked by
    `check_batch` as it is made (on the data's own workers), with one-hot labels where
    `one_hot`.

    Epochs are counted from `epoch`: a data with an `epoch` attribute (`kr.data.ImageLoader`)
    reads that epoch's batches, so a run that starts at epoch 5 reads what epoch 5 of an
    uninterrupted run read. The data's `on_epoch_end` runs after each epoch read, not when
    `fit` starts (where Keras also calls it).

    Args:
        data: the `PyDataset` (e.g. `kr.data.ImageLoader`).
        num_classes: the classifier's number of outputs.
        argument: the caller's name for `data`, for the messages ("train_data").
        one_hot: give integer labels as float32 one-hot rows.
        image_shape: the model's `(height, width, channels)` (None for any), which every
            batch's images must have.
        split_over: the devices each batch is split over, which must divide its size.
        epoch: the epoch read first.
        start: the first batch read of that epoch (a resume inside an epoch); later epochs
            start at batch 0.
    """

    def __init__(
        self,
        data,
        num_classes,
        argument,
        *,
        one_hot=False,
        image_shape=None,
        split_over=1,
        epoch=0,
        start=0,
    ):
        # The data's own parallelism (defaults where its __init__ skipped PyDataset's).
        super().__init__(
            getattr(data, "workers", 1),
            getattr(data, "use_multiprocessing", False),
            getattr(data, "max_queue_size", 10),
        )
        self.data, self.num_classes, self.argument = data, num_classes, argument
        self.one_hot, self.epoch, self.start, self._reading = one_hot, epoch, start, False
        self.image_shape, self.split_over = image_shape, split_over
        if hasattr(data, "epoch"):
            data.epoch = epoch

    def __len__(self):
        return len(self.data) - self.start

    def __getitem__(self, index):
        index += self.start
        images, labels = self.data[index]
        check_batch(self.argument, index + 1, images, labels, self.num_classes, self.image_shape)
        if len(images) % self.split_over:
            batch = f"batch {index + 1}"
            raise BatchError(split_message(self.argument, batch, len(images), self.split_over))
        labels = np.asarray(labels)
        if self.one_hot and labels.ndim == 1:
            labels = np.eye(self.num_classes, dtype="float32")[labels.astype("int64")]
        return images, labels

    def on_epoch_begin(self):
        self._reading = True
        self.data.on_epoch_begin()

    def on_epoch_end(self):
        if not self._reading:  # `fit` starting: no epoch was read
            return
        self._reading, self.start, self.epoch = False, 0, self.epoch + 1
        self.data.on_epoch_end()
        if hasattr(self.data, "epoch"):
            self.data.epoch = self.epoch


# Beyond these, values are no 8-bit pixels however resampled (bicubic and Lanczos overshoot
# stays far inside): 16-bit images (0-65535), or another unit.
_NOT_PIXELS = (-256.0, 512.0)


def check_pixels(
    argument: str, images, *, scaled_is_error: bool = False, warned: set | None = None
) -> None:
    """Checks a batch of images in hand (an array): NaN or infinite pixels raise, and so do
    values far outside 0-255 (16-bit images); a range other than raw 0-255 pixels (models
    normalize inside, so [0, 1] or standardized images would train and predict on the wrong
    scale) warns, or raises with `scaled_is_error` (beyond a pixel of resampling overshoot).
    `warned`: a set shared by the checks of one read's batches, which then warns once.

    Example:
    >>> import numpy as np
    >>> from keras_resvit.data.checks import check_pixels
    >>> check_pixels("images", np.full((1, 2, 2, 3), np.nan))  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ValueError: images hold NaN or infinite pixels (image 0, 1 in all); ...
    """
    images = np.asarray(images)
    if images.size == 0:
        return
    # A NaN or infinite pixel makes its image's sum NaN or infinite.
    finite = np.isfinite(images.reshape(len(images), -1).sum(axis=1, dtype="float64"))
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{argument} hold NaN or infinite pixels (image {bad[0]}, {len(bad)} in all); "
            "models take finite raw pixels 0-255: fix or drop those images."
        )
    low, high = float(images.min()), float(images.max())
    if low < _NOT_PIXELS[0] or high > _NOT_PIXELS[1]:
        raise ValueError(
            f"{argument} range from {low:g} to {high:g}, which are no 8-bit pixels; models "
            "take raw pixels 0-255 (scale 16-bit images, 0-65535, by 255 / 65535)."
        )
    if low >= 0.0 and high <= 255.0 and not 0.0 < high <= 1.0:
        return
    message = (
        f"{argument} range from {low:g} to {high:g}; models take raw pixels 0-255 and "
        "normalize inside (multiply [0, 1] images by 255; do not standardize them)."
    )
    if scaled_is_error and (high <= 1.0 or low < -1.0 or high > 256.0):
        raise ValueError(message)
    if warned is None or "range" not in warned:
        warnings.warn(message, stacklevel=3)
    if warned is not None:
        warned.add("range")


def check_unaugmented(argument: str, data, use: str) -> None:
    """`data` (a `load_dataset` dataset or an `ImageLoader`) must not be augmented or mixed:
    scores of `use` on augmented images would be wrong without a word.

    Raises:
        ValueError: its batches are augmented or mixed (its `augmented` attribute).
    """
    if getattr(data, "augmented", False) is True:
        raise ValueError(
            f"{argument} is augmented (read as a training split with augment= or mixing): "
            f"{use} would be computed on augmented images. Read it as evaluation data: "
            "kr.data.load_dataset(..., training=False), or a split that is not named "
            "'train...'."
        )


def check_class_names_match(argument: str, names, reference, what: str) -> None:
    """Label i must mean the same class in `names` (of `argument`) and in `reference` (of
    `what`): a dataset whose folder lacks a class, or another dataset's classes, would
    otherwise be scored against the wrong labels. Either list missing: nothing to compare.

    Raises:
        ValueError: the lists disagree at an index, or `names` has more classes.
    """
    if not names or not reference:
        return
    names, reference = [str(n) for n in names], [str(n) for n in reference]
    both = (
        f"{argument} has classes {names[:6]}{' ...' if len(names) > 6 else ''} but {what} "
        f"has {reference[:6]}{' ...' if len(reference) > 6 else ''}"
    )
    advice = "Use data of the same classes, in the same order."
    for index, name in enumerate(names):
        if index >= len(reference):
            single = index == len(names) - 1
            extra = f"label {index}" if single else f"labels {index}-{len(names) - 1}"
            shown = ", ".join(map(repr, names[index : index + 3]))
            raise ValueError(
                f"{both}: {len(names)} classes where {what} has {len(reference)}, so {extra} "
                f"({shown}{' ...' if len(names) > index + 3 else ''}) "
                f"{'names' if single else 'name'} no class of {what}. {advice}"
            )
        if name != reference[index]:
            raise ValueError(
                f"{both}: label {index} means {name!r} in one and {reference[index]!r} in the "
                f"other. {advice}"
            )


def loadable_side(model, argument: str, instead: str, *, any_size: bool = True):
    """The image side at which `load_dataset` reads images for `model`, which it reads square
    and RGB: the model's side, or None (a model of any input size, where `any_size` allows it:
    the source's own size). Another input (oblong, grey) is refused naming `argument`, the
    model's input and `instead`, the way to score such a model."""
    _, height, width, channels = model.input_shape
    square = height == width and (height is not None or any_size)
    if square and channels == 3:
        return height
    shown = "(S, S, 3) or (None, None, 3)" if any_size else "(S, S, 3)"
    raise ValueError(
        f"{argument}: model {model.name!r} takes images of shape {(height, width, channels)} "
        f"(None: any size), but kr.data reads RGB images at one side for it, {shown}; "
        f"{instead}."
    )


def check_class_count(argument: str, data, num_classes: int) -> None:
    """Refuses, before any batch is read, a dataset that declares more classes (its
    `num_classes`, set by `kr.data.load_dataset`) than the classifier has outputs."""
    declared = getattr(data, "num_classes", None)
    if declared is not None and declared > num_classes:
        raise ValueError(
            f"{argument} has {declared} classes but the model's classifier has {num_classes} "
            f"outputs (labels 0 to {num_classes - 1}); use data of the model's classes, or "
            f"kr.replace_head(model, {declared}) and train it."
        )


@contextlib.contextmanager
def data_errors():
    """Turns a failed `check_batches` assertion or `CheckedBatches` check, however the backend
    wraps it, into one `ValueError` with the check's message."""
    try:
        yield
    except Exception as error:
        # Only TensorFlow raises `check_batches`' failures (and it may be absent).
        if "tensorflow" not in sys.modules or not isinstance(error, tf.errors.InvalidArgumentError):
            raise
        found = re.search(re.escape(_BEGIN) + r"(.*?)" + re.escape(_END), str(error), re.S)
        # A `CheckedBatches` batch failed inside the tf.data pipeline Keras made of it.
        found = found or re.search(r"BatchError: (.*)", str(error))
        if found is None:
            raise
        raise ValueError(_unescaped(found[1])) from None


def _unescaped(text):
    """`text` as it was before TensorFlow's error message escaped it (C escapes: a file name's
    quotes and bytes)."""
    if "\\" not in text:
        return text
    raw = text.encode("utf-8").decode("unicode_escape").encode("latin-1")
    return raw.decode("utf-8", "replace")


def check_class_indices(argument: str, labels: np.ndarray) -> None:
    """`labels` (an array) must be class indices 0, 1, 2, ...: whole numbers of an int or float
    dtype below `MAX_CLASSES` (a larger label is an ID, not an index: the classes it implies,
    one name and one output each, would not fit in memory)."""
    if labels.dtype.kind in "iuf":
        bad = labels[
            ~np.isfinite(labels)
            | (labels < 0)
            | (labels >= MAX_CLASSES)
            | (np.floor(labels) != labels)
        ]
    else:
        bad = labels.ravel()
    if len(bad):
        ids = ""
        if labels.dtype.kind in "iuf" and np.isfinite(bad[0]) and bad[0] >= MAX_CLASSES:
            ids = (
                "; labels that are IDs map to indices with "
                "np.unique(labels, return_inverse=True)[1]"
            )
        raise ValueError(
            f"{argument} must be class indices 0, 1, 2, ... (below {MAX_CLASSES:,}, more classes "
            f"than any dataset has); found {bad[0]!s} (dtype {labels.dtype}){ids}."
        )


def check_batch_fits(batch_size: int, count: int, what: str) -> None:
    """A batch of `batch_size` needs at least as many examples: `count` `what` ("training
    images") make one smaller batch, which a run would take for the size asked."""
    if count < batch_size:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {count} {what}; valid: at most {count} "
            "(a batch would silently be all of them)."
        )


def shown_source(source) -> str:
    """`source` as a message names it: a name or path quoted, arrays by their shapes (their
    values would fill the message)."""
    if isinstance(source, tuple):
        shapes = [tuple(np.shape(part)) for part in source]
        return f"<(images, labels) arrays of shapes {shapes}>"
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        return repr(str(source))
    return f"<{type(source).__name__}>"
