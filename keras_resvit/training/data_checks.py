"""The checks of `train()`'s data: the training and validation datasets (arrays loaded), their
batches, labels and images against the model, and the run's length; each fails with one clear
ValueError before the run's output folder is touched."""

import math
import sys
import warnings
from types import SimpleNamespace

import keras
import numpy as np

from keras_resvit.base.files import check_output_path
from keras_resvit.base.lazy import tf
from keras_resvit.base.validation import check_seed
from keras_resvit.data.checks import (
    check_batch_fits,
    check_class_count,
    check_class_names_match,
    check_pixels,
    check_unaugmented,
    split_message,
)
from keras_resvit.data.datasets import load_dataset
from keras_resvit.data.in_memory import as_arrays
from keras_resvit.training.schedules import recipe_steps


def check_data(train_data, val_data, output_dir, spec, *, epochs, steps, batch_size, seed):
    """(output folder path, the run's data): `train_data` and `val_data` as checked datasets
    (arrays loaded), the first training batch, the batches per epoch and the run's length."""
    check_seed(seed)  # before the arrays' read, which would name train_data for it
    # Arrays were checked whole when read (a range warning given there once).
    warned = {"range"} if isinstance(train_data, tuple) else None
    train_data = _as_dataset("train_data", train_data, "train", batch_size or spec.batch_size, seed)
    out = check_output_path("output_dir", output_dir, folder=True)
    first_batch, steps_per_epoch, soft_labels = _dataset_info(train_data)
    check_pixels("train_data images", first_batch[0], warned=warned)
    # A dataset split by process (`load_dataset` with several processes) holds this
    # process's part of each global batch.
    global_batch = int(first_batch[0].shape[0]) * getattr(train_data, "process_count", 1)
    if batch_size is not None:  # arrays fewer than one batch
        check_batch_fits(batch_size, global_batch, "training images")
    _warn_smaller_batch(getattr(train_data, "batch_size", None), global_batch)
    if val_data is not None:
        val_data = _as_dataset("val_data", val_data, "test", global_batch, seed)
        check_dataset("val_data", val_data)
    epochs, total_steps = _run_length(spec, epochs, steps, global_batch, steps_per_epoch)
    return out, SimpleNamespace(
        train=train_data,
        val=val_data,
        first_batch=first_batch,
        batch_size=global_batch,
        steps_per_epoch=steps_per_epoch,
        soft_labels=soft_labels,
        epochs=epochs,
        total_steps=total_steps,
    )


def _warn_smaller_batch(asked, global_batch):
    """A dataset of `load_dataset` (or an `ImageLoader`) of fewer images than its batch size
    gives one smaller batch, which the run takes for its batch and scales the learning rate
    to: said, where it was silent."""
    if isinstance(asked, int) and not isinstance(asked, bool) and global_batch < asked:
        warnings.warn(
            f"train_data was read with batch_size={asked}, but holds only {global_batch} "
            f"training images: the run trains on batches of {global_batch} and scales the "
            f"recipe's learning rate to that batch. Pass batch_size={global_batch} or less to "
            "read it, or more images.",
            stacklevel=4,
        )


def is_py_dataset(data) -> bool:
    """Whether `data` is a `keras.utils.PyDataset` (e.g. `kr.data.ImageLoader`)."""
    return isinstance(data, keras.utils.PyDataset)


def _first_py_batch(argument, data):
    """Batch 0 of a `PyDataset` as NumPy (images, labels), its length and structure checked."""
    try:
        steps = len(data)
    except TypeError:
        steps = None
    if not isinstance(steps, int) or steps <= 0:
        raise ValueError(
            f"{argument} ({type(data).__name__}) has {steps} batches per epoch; a PyDataset "
            "must have a finite, positive len()."
        )
    batch = data[0]
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(
            f"{argument}[0] is {type(batch).__name__}; expected a batch (images, labels)."
        )
    images, labels = (keras.ops.convert_to_numpy(x) for x in batch)
    _check_structure(argument, images.shape, labels.shape, labels.dtype)
    return images, labels


def _check_structure(argument, image_shape, label_shape, label_dtype):
    if len(image_shape) != 4:
        raise ValueError(
            f"{argument} yields images of shape {tuple(image_shape)}; expected batches of "
            "(images (batch, height, width, channels), labels): batch the dataset, e.g. with "
            ".batch(32)."
        )
    dtype = np.dtype(getattr(label_dtype, "as_numpy_dtype", label_dtype))
    rank, integer = len(label_shape), dtype.kind in "iu"
    valid = (rank == 1 and (integer or dtype.kind == "f")) or (
        rank == 2 and dtype.kind == "f" and label_shape[-1] != 1
    )
    if not valid:
        raise ValueError(
            f"{argument} has labels of dtype {getattr(label_dtype, 'name', dtype.name)} and "
            f"shape {tuple(label_shape)}; "
            "expected class indices (batch,) or float class probabilities (batch, classes). "
            "Squeeze (batch, 1) labels, cast one-hot labels to float32."
        )


def check_dataset(argument, data):
    if is_py_dataset(data):
        _first_py_batch(argument, data)
        return
    if not _is_tf_dataset(data):
        raise ValueError(
            f"{argument} of type {type(data).__name__} is not valid; pass a batched "
            "tf.data.Dataset or a keras.utils.PyDataset of (images, labels) (e.g. from "
            "kr.data.load_dataset), or an (images, labels) tuple of arrays."
        )
    spec = data.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        three = isinstance(spec, tuple) and len(spec) == 3
        remedy = (
            "drop the third element (sample weights are not read: train() weighs every "
            "example alike), e.g. .map(lambda x, y, w: (x, y))"
            if three
            else "batch the dataset, e.g. with .batch(32)"
        )
        raise ValueError(
            f"{argument} yields {spec}; expected batches of (images (batch, height, width, "
            f"channels), labels): {remedy}."
        )
    if not all(isinstance(part, tf.TensorSpec) for part in spec):
        raise ValueError(
            f"{argument} yields {spec}; expected batches of (images, labels), each one tensor "
            "(images (batch, height, width, channels)), not a dict or nested structure: map "
            "it to a pair, e.g. .map(lambda x, y: (x['image'], y))."
        )
    labels = spec[1]
    _check_structure(argument, spec[0].shape, labels.shape, labels.dtype)


def _is_tf_dataset(data) -> bool:
    # Without TensorFlow installed nothing is a tf.data.Dataset (and it is not imported).
    return "tensorflow" in sys.modules and isinstance(data, tf.data.Dataset)


def _as_dataset(argument, data, split, batch_size, seed):
    """`data` as a dataset: an (images, labels) tuple of arrays goes through
    `kr.data.load_dataset` (shuffled every epoch for training, never augmented), whose
    `provenance` (a hash of the arrays) lets a run resume only on the same arrays."""
    if not isinstance(data, tuple):
        return data
    images = labels = None
    if len(data) == 2:
        images, labels = as_arrays(*data, argument=argument)
    if images is None or images.ndim != 4 or labels.shape != images.shape[:1] or not len(images):
        shapes = [getattr(np.asarray(a, dtype=object), "shape", None) for a in data]
        raise ValueError(
            f"{argument} holds {len(data)} arrays of shapes {shapes}; expected an (images, "
            "labels) pair of arrays: images (N, height, width, channels) and N integer class "
            "indices, N >= 1 (one-hot labels: labels.argmax(-1); grey images: add a channel "
            "axis, x[..., None])."
        )
    if images.shape[1] != images.shape[2]:
        raise ValueError(
            f"{argument} holds {images.shape[1]}x{images.shape[2]} images, not square; the "
            "data pipeline makes square images: resize or crop them to a square, or pass "
            "kr.data.load_dataset((images, labels), image_size=<int>) (each image's shorter "
            "side resized to it, then its central square kept)."
        )
    try:
        return load_dataset((images, labels), split, batch_size=batch_size, seed=seed)
    except ValueError as error:
        raise ValueError(f"{argument}: {error}") from None


def _dataset_info(train_data):
    if is_py_dataset(train_data):
        first = _first_py_batch("train_data", train_data)
        return first, len(train_data), first[1].ndim == 2
    check_dataset("train_data", train_data)
    steps = int(train_data.cardinality())
    if steps == tf.data.UNKNOWN_CARDINALITY:
        # An image folder drops files it cannot decode (as does .filter()): count one pass.
        steps = int(train_data.reduce(np.int64(0), lambda count, *_: count + 1))
    if steps <= 0:
        raise ValueError(
            f"train_data has {steps} batches per epoch; it must be finite and non-empty "
            "(do not .repeat() it: train() repeats it)."
        )
    first = tuple(t.numpy() for t in next(iter(train_data)))
    return first, steps, len(train_data.element_spec[1].shape) == 2


def _run_length(recipe, epochs, steps, batch_size, steps_per_epoch):
    """(epochs, total steps) of a run: `steps` or `epochs` as given, else the recipe's."""
    if steps is None and epochs is None:
        steps = recipe_steps(recipe, batch_size)
    if steps is None:
        epochs = recipe.epochs if epochs is None else epochs
        return epochs, epochs * steps_per_epoch
    return math.ceil(steps / steps_per_epoch), steps


def check_labels(model, train_data, labels, soft_labels):
    """Labels the classifier cannot score fail here, not as a backend error (TensorFlow) or
    a silently wrong loss (JAX) in the middle of `fit`."""
    classes = model.output_shape[-1]
    if soft_labels:
        if labels.shape[-1] != classes:
            raise ValueError(
                f"train_data has soft labels over {labels.shape[-1]} classes but the model's "
                f"classifier has {classes} outputs; use kr.replace_head(model, "
                f"{labels.shape[-1]})."
            )
        return
    declared = getattr(train_data, "num_classes", None) or 0
    low, high = int(labels.min()), max(int(labels.max()), declared - 1)
    if low < 0 or high >= classes:
        labelled = f"from {low} to {high}" if low < 0 else f"up to {high}"
        raise ValueError(
            f"train_data has labels {labelled} but the model's classifier has "
            f"{classes} outputs (valid labels 0 to {classes - 1}); use "
            f"kr.replace_head(model, {high + 1}) or num_classes={high + 1}."
        )


def check_channels(argument, model, batch_shape):
    wanted, given = model.input_shape[-1], batch_shape[-1]
    if wanted is not None and given is not None and wanted != given:
        if len(batch_shape) == 4 and batch_shape[1] == wanted:
            raise ValueError(
                f"{argument} has images of shape {tuple(batch_shape)}: channels first, it "
                "seems (Keras, and the models here, take channels last); transpose them, "
                "e.g. .map(lambda x, y: (tf.transpose(x, (0, 2, 3, 1)), y))."
            )
        raise ValueError(
            f"{argument} has {given}-channel images but the model takes {wanted} channels; "
            "load RGB images (kr.data.load_dataset converts a folder's grey images to RGB; "
            "grey arrays: np.repeat(x, 3, axis=-1)) or build the model with "
            f"input_shape=(height, width, {given})."
        )


def check_val_data(val_data, model, train_data):
    """Validation data the model cannot score fails before the first epoch, not after it."""
    py_dataset = is_py_dataset(val_data)
    if not py_dataset and int(val_data.cardinality()) == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            "val_data repeats forever; pass a finite dataset (do not .repeat() it): each "
            "epoch validates on all of it."
        )
    check_unaugmented("val_data", val_data, "validation scores (and best.keras)")
    classes = model.output_shape[-1]
    check_class_count("val_data", val_data, classes)
    check_class_names_match(
        "val_data",
        getattr(val_data, "class_names", None),
        getattr(train_data, "class_names", None),
        "train_data",
    )
    if py_dataset:
        first, labels = _first_py_batch("val_data", val_data)
        labels = labels.shape
    else:
        labels = val_data.element_spec[1].shape
        first = next(iter(val_data.take(1)), None)
        if first is None:
            raise ValueError("val_data is empty; pass a dataset with at least one batch, or None.")
        first = first[0].numpy()
    if len(labels) == 2 and labels[-1] not in (None, classes):
        raise ValueError(
            f"val_data has soft labels over {labels[-1]} classes but the model's classifier "
            f"has {classes} outputs."
        )
    wanted = tuple(model.input_shape[1:3])
    check_pixels("val_data images", first)
    shape = first.shape
    check_channels("val_data", model, shape)
    given = shape[1:3]
    if None not in wanted and given != wanted:
        raise ValueError(
            f"val_data has {given[0]}x{given[1]} images but the model takes "
            f"{wanted[0]}x{wanted[1]}; load it with image_size={wanted[0]}."
        )


def split_over(placement, dataset=None) -> int:
    """The devices each batch of `dataset` is split over under `placement`: under a JAX
    distribution (`keras.distribution`), its replicas over the processes that read the
    dataset's batches (a share per process, or Keras' split of global batches); 1 where a
    batch of any size trains (one device; TensorFlow's strategies split uneven batches).
    Without `dataset`, for the batches each process feeds `fit`."""
    if placement.distribution is None:
        return 1
    readers = placement.processes if dataset is None else getattr(dataset, "process_count", 1)
    return max(1, placement.num_replicas // readers)


def check_last_batches(data, placement):
    """Refuses, before training, data whose epochs end in a batch that the run's devices
    cannot split evenly (`split_over`): JAX fails on it at the end of the first epoch (an
    `IndivisibleError`) or of its validation; a run of `steps` that stops before the first
    epoch's last batch is let through. Data that counts its examples (`kr.data`'s,
    which say `examples`, `batch_size` and `drop_remainder`) is checked here; other data
    batch by batch (`check_batches`)."""
    for argument, dataset in (("train_data", data.train), ("val_data", data.val)):
        examples = getattr(dataset, "examples", None)
        if examples is None or getattr(dataset, "drop_remainder", False):
            continue
        divisor = split_over(placement, dataset)
        batch = dataset.batch_size // getattr(dataset, "process_count", 1)
        last = examples % batch
        if argument == "train_data" and data.total_steps <= examples // batch:
            continue  # a run of `steps` that stops before the first epoch's last batch
        if last % divisor:
            raise ValueError(split_message(argument, "the last batch of each epoch", last, divisor))
