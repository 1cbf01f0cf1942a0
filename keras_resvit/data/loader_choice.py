"""Which reader makes `load_dataset`'s batches (tf.data pipelines or an `ImageLoader`), and the
checks of a process's share of them, common to both readers."""

import importlib.util

from keras_resvit.base.validation import check_choice, check_int

# Readers of `load_dataset`'s batches: tf.data pipelines or an `ImageLoader`; "auto" takes
# tf.data where TensorFlow is installed. `loader_options`: the ImageLoader arguments it passes.
LOADERS = ("auto", "tf.data", "py_dataset")
SHARD_OPTIONS = ("process_index", "process_count")  # both loaders read a process's share
# Every example, in every process: what evaluations outside a distributed `fit` read.
ALL_EXAMPLES = {"process_index": 0, "process_count": 1}
LOADER_OPTIONS = ("workers", "use_multiprocessing", "max_queue_size", *SHARD_OPTIONS)


def check_shard(batch_size, process_index, process_count):
    """Checks a process's share of the batches: `process_index` of `process_count`, each
    reading `batch_size // process_count` examples of every batch of `batch_size`."""
    check_int("batch_size", batch_size)
    check_int("process_count", process_count)
    check_int("process_index", process_index, 0)
    if process_index >= process_count:
        raise ValueError(
            f"process_index={process_index} must be below process_count={process_count}."
        )
    if batch_size % process_count:
        raise ValueError(
            f"batch_size={batch_size} is not divisible by process_count={process_count}: each "
            "process reads batch_size // process_count examples of every batch; pass a "
            f"multiple of {process_count}."
        )


def check_repeats(repeated_augmentation, shuffle):
    """`repeated_augmentation` as a positive int, or ValueError; without shuffling every epoch
    would read the same first 1/r of the examples."""
    check_int("repeated_augmentation", repeated_augmentation)
    if repeated_augmentation > 1 and not shuffle:
        raise ValueError(
            f"repeated_augmentation={repeated_augmentation} with shuffle=False reads the same "
            f"first 1/{repeated_augmentation} of the examples every epoch; shuffle the "
            "training data (the default for training splits) or pass repeated_augmentation=1."
        )


def tensorflow_installed() -> bool:
    """Whether TensorFlow can be imported (found without importing it)."""
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


def choose_loader(loader: str, source, tfds: bool, loader_options, deterministic: bool) -> str:
    """The reader of `load_dataset(source, loader=loader, ...)`: "tf.data" or "py_dataset".

    Args:
        loader: a name in `LOADERS`; "auto" picks tf.data where TensorFlow is installed.
        source: the source, for messages.
        tfds: whether `source` is a tensorflow-datasets name, which only tf.data reads.
        loader_options: None, or a dict of `ImageLoader` arguments named in `LOADER_OPTIONS`.
        deterministic: whether `load_dataset` was asked for reproducible augmentation.

    Returns:
        "tf.data" or "py_dataset".

    Raises:
        ValueError: for an unknown loader or option, options other than `SHARD_OPTIONS` with
            tf.data, a tfds source with "py_dataset", or several workers with `deterministic`.
        ImportError: for a tfds source without TensorFlow.

    Example:
    >>> from keras_resvit.data.loader_choice import choose_loader
    >>> choose_loader("py_dataset", "digits", False, {"workers": 4}, False)
    'py_dataset'
    """
    check_choice("loader", loader, LOADERS)
    options = loader_options or {}
    if not isinstance(options, dict) or not set(options) <= set(LOADER_OPTIONS):
        raise ValueError(
            f"loader_options={loader_options!r} is not valid; pass a dict of ImageLoader "
            f"arguments among {list(LOADER_OPTIONS)}."
        )
    installed = tensorflow_installed()
    chosen = loader if loader != "auto" else "tf.data" if installed else "py_dataset"
    if chosen == "py_dataset" and tfds:
        if not installed:
            raise ImportError(
                f"source={source!r} needs the `tensorflow` and `tensorflow-datasets` packages, "
                "which are not installed: `pip install tensorflow tensorflow-datasets`. Without "
                "them, load_dataset reads 'digits', (images, labels) arrays and image folders."
            )
        raise ValueError(
            "loader='py_dataset' reads 'digits', (images, labels) arrays and image folders; "
            f"source={source!r} needs loader='tf.data' (or 'auto')."
        )
    if chosen == "tf.data" and not set(options) <= set(SHARD_OPTIONS):
        raise ValueError(
            f"loader_options={loader_options!r}: tf.data takes only {list(SHARD_OPTIONS)}; the "
            f"others apply to loader='py_dataset', but loader={loader!r} reads with tf.data "
            "here; pass loader='py_dataset'."
        )
    if chosen == "py_dataset" and deterministic and options.get("workers", 1) != 1:
        raise ValueError(
            "deterministic=True makes batches in order on one thread: with loader='py_dataset' "
            f"pass loader_options workers=1, not {options['workers']!r}."
        )
    return chosen
