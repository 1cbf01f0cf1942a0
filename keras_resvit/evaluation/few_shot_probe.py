"""Few-shot linear evaluation of frozen features, as in the ViT paper (Dosovitskiy et al. 2021).

Section 4.1: "few-shot accuracies are obtained by solving a regularized least-squares regression
problem that maps the (frozen) representation of a subset of training images to {-1, 1}^K
target vectors". As in big_vision's evaluator: features are whitened with the statistics of the
few-shot subset, a large constant feature carries an almost unregularized bias, the subsets for
every shot count are the first images of one seeded permutation per class, and the ridge system
is solved in closed form in float64 on the smaller of its primal and dual sides.
"""

import reprlib

import keras
import numpy as np

from keras_resvit.base.validation import check_number, check_seed
from keras_resvit.data.checks import (
    check_class_indices,
    check_class_names_match,
    check_pixels,
    check_unaugmented,
    image_shape_fits,
    loadable_side,
)
from keras_resvit.data.datasets import load_dataset, source_named
from keras_resvit.data.folder_layout import scoring_split
from keras_resvit.data.loader_choice import ALL_EXAMPLES
from keras_resvit.data.sources import FOLDER, source_kind
from keras_resvit.models.features import representation_model as feature_model

# big_vision's constant bias feature: large, so its weight is barely regularized.
BIAS_CONSTANT = 100.0
# big_vision's default L2 regularization of the few-shot regression.
L2_REGULARIZATION = 2.0**10
# Added to the feature standard deviations (big_vision's whitening) against division by zero.
STD_EPSILON = 1e-5


def _dataset(data, split, model, batch_size, validation_split=None):
    """`data` as a dataset: a batched `tf.data.Dataset` or `keras.utils.PyDataset` as it is,
    else a `kr.data` source read in `split`, unshuffled, at the model's input size (with its
    `class_names`), an image folder's `validation_split` held out as its "test" split."""
    if isinstance(data, keras.utils.PyDataset) or hasattr(data, "element_spec"):
        check_unaugmented(split, data, "the features")
        return data
    held_out = {} if validation_split is None else {"validation_split": validation_split}
    read = split
    if split == "test" and validation_split is None and source_kind(data) == FOLDER:
        read = scoring_split(data)  # a folder of train/ and val/: its val/ images
    with source_named(split):
        return load_dataset(
            data,
            read,
            **held_out,
            image_size=loadable_side(model, split, "pass a batched tf.data.Dataset instead"),
            batch_size=batch_size,
            shuffle=False,
            mixing=False,
            loader_options=ALL_EXAMPLES,  # every process fits the same probe on every example
        )


def _batches(data, split):
    """The (images, labels) batches of a batched `tf.data.Dataset` (as NumPy) or a
    `keras.utils.PyDataset` (`kr.data.ImageLoader`: what `load_dataset` gives without
    TensorFlow), each checked to be such a pair before it is read as one."""
    if isinstance(data, keras.utils.PyDataset):
        return _checked_batches((data[i] for i in range(len(data))), split)
    _check_structure(data, split)  # refused before any batch is read
    return data.as_numpy_iterator()


def _check_structure(data, split):
    """Refuses `data` whose batches are not (images, labels) before any is read for features:
    a `tf.data` spec as it is, a `PyDataset` by its first batch."""
    if isinstance(data, keras.utils.PyDataset):
        if len(data):
            _check_batch(data[0], split)
    else:
        _check_batch(data.element_spec, split)


def _checked_batches(batches, split):
    for batch in batches:
        _check_batch(batch, split)
        yield batch


def _shape(part):
    """The shape of a batch's images or labels (an array, a tensor, a list of numbers or a
    `tf.data` spec); None for anything else (a dict, a nested tuple, an unknown rank)."""
    shape = getattr(part, "shape", None)
    if shape is None and isinstance(part, list):
        try:
            shape = np.shape(part)
        except ValueError:  # lists of different lengths
            return None
    if shape is None or getattr(shape, "rank", 0) is None:
        return None
    return tuple(shape)


def _structure(batch):
    """The shapes of what a dataset yields, for messages: `(..., ...)`, `{key: ...}` or one."""
    if isinstance(batch, dict):
        return "{" + ", ".join(f"{key!r}: {_structure(part)}" for key, part in batch.items()) + "}"
    if isinstance(batch, tuple):
        return "(" + ", ".join(_structure(part) for part in batch) + ")"
    shape = _shape(batch)
    return type(batch).__name__ if shape is None else str(shape)


def _check_batch(batch, split):
    """Refuses a batch, or a `tf.data` element spec, that is not a pair of images (batch,
    height, width, channels) and labels (batch,): a dict, images alone, a triple with weights."""
    pair = isinstance(batch, (tuple, list)) and len(batch) == 2
    images, labels = (_shape(part) for part in batch) if pair else (None, None)
    if images is not None and labels is not None:
        if len(images) == 4 and len(labels) == 1:
            return
        found = f"images {images} and labels {labels}"
    else:
        found = f"elements shaped {_structure(batch)}"
    raise ValueError(
        f"{split} dataset yields {found}; expected batches of images (batch, height, width, "
        "channels) and int labels."
    )


def _as_array(argument, value, expected, dtype=None):
    """`value` as an array, or one ValueError naming `argument` (ragged lists, strings where
    numbers are asked for)."""
    try:
        return np.asarray(value, dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{argument} is not valid ({error}); expected {expected}.") from None


def extract_features(
    model: keras.Model, data, *, layer: str | None = None, batch_size=64, split: str = "train"
):
    """Frozen features and labels of a whole dataset (inference mode).

    Feature maps are averaged over space and token sequences over tokens, so every
    representation is one vector per image.

    Args:
        model: a Keras model taking raw 0-255 pixels.
        data: a batched `tf.data.Dataset` or a `keras.utils.PyDataset` (`kr.data.ImageLoader`)
            of (images, int labels), or a `kr.data` source ("digits", "tfds:NAME", a folder,
            arrays), read in its "train" split, unshuffled (with or without TensorFlow).
        layer: see `feature_model`.
        batch_size: batch size when `data` is a source.
        split: the split read from a source, and the name of `data` in messages.

    Returns:
        `(features, labels)`: float64 array (N, dim) and int array (N,).

    Raises:
        ValueError: a bad model, layer or dataset (batches that are not (images, labels),
            labels that are not class indices 0, 1, 2, ...), or images with NaN pixels.

    Example:
    >>> import keras_resvit as kr
    >>> x, y = kr.evaluation.extract_features(kr.create_model("resnet20"), "digits")
    >>> x.shape
    (1437, 64)
    """
    extractor = feature_model(model, layer)
    features, labels, full = [], [], None
    batches = _batches(_dataset(data, split, model, batch_size), split)
    warned = set()  # one warning for the read, not one per batch
    for number, (images, batch_labels) in enumerate(batches, 1):
        images, batch_labels = np.asarray(images), np.asarray(batch_labels)
        if len(batch_labels) != len(images):
            raise ValueError(
                f"{split} batch {number} has {len(images)} images and {len(batch_labels)} "
                "labels; expected one label per image."
            )
        check_class_indices(f"{split} batch {number} labels", batch_labels)
        check_pixels(f"{split} batch {number} images", images, warned=warned)
        if not image_shape_fits(images.shape[1:], model.input_shape[1:]):
            raise ValueError(
                f"{split} batch {number} has images of shape {images.shape[1:]}, but model "
                f"{model.name!r} takes {model.input_shape[1:]} (None: any size)."
            )
        count = len(images)
        full = full or count
        if count < full:
            # Pad the last, smaller batch: a compiled predict function (JAX, XLA) is traced
            # again for every new batch shape.
            padding = np.zeros((full - count, *images.shape[1:]), images.dtype)
            images = np.concatenate([images, padding])
        output = np.asarray(extractor.predict_on_batch(images), "float64")[:count]
        features.append(output.reshape(count, -1, output.shape[-1]).mean(axis=1))
        labels.append(batch_labels)
    return np.concatenate(features), np.concatenate(labels).astype("int64")


def _check_shots(shots):
    if not isinstance(shots, (int, np.integer)) or isinstance(shots, bool) or shots < 1:
        raise ValueError(f"shots={shots!r} is not valid; expected positive ints, e.g. 1 5 10 25.")


def few_shot_indices(labels, shots: int, seed: int = 0) -> np.ndarray:
    """Indices of the first `shots` images of each class in one seeded permutation per class.

    The subsets are nested: the 5-shot images include the 1-shot image (as in big_vision).

    Raises:
        ValueError: `shots` is not a positive int, `seed` not an int in [0, 2**32), `labels`
            are not (N,) class indices, or a class has fewer than `shots` images.

    Example:
    >>> import numpy as np
    >>> from keras_resvit.evaluation.few_shot_probe import few_shot_indices
    >>> few_shot_indices(np.array([0, 1, 0, 1, 1]), 2).shape
    (4,)
    """
    _check_shots(shots)
    check_seed(seed)
    expected = "class indices (N,), N >= 1 (for one-hot labels, pass labels.argmax(-1))"
    labels = _as_array("labels", labels, expected)
    if labels.ndim != 1 or not len(labels):
        raise ValueError(f"labels of shape {labels.shape} are not valid; expected {expected}.")
    check_class_indices("labels", labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        if len(members) < shots:
            raise ValueError(
                f"shots={shots} needs {shots} training images per class, but class {cls} has "
                f"{len(members)}; use at most {len(members)} shots or a larger training set."
            )
        chosen.append(members[:shots])
    return np.concatenate(chosen)


def _with_bias(features, mean, std):
    whitened = (features - mean) / std
    return np.concatenate([whitened, np.full((len(whitened), 1), BIAS_CONSTANT)], axis=1)


def _check_classes(train_name, classes, test_name, test_labels):
    """A probe tells at least two classes apart, and scores only test labels it was fit on."""
    if len(classes) < 2:
        raise ValueError(
            f"{train_name} has labels of one class ({classes[0]}); a probe needs at least two "
            "classes to tell apart (its accuracy would be 1.0 whatever the features)."
        )
    unseen = np.setdiff1d(test_labels, classes)
    if len(unseen):
        raise ValueError(
            f"{test_name} has labels {unseen[:8].tolist()} that {train_name} lacks; a probe can "
            f"only predict the classes it was fit on ({reprlib.repr(classes.tolist())})."
        )


def least_squares_accuracy(x, y, x_test, y_test, l2_regularization=L2_REGULARIZATION) -> float:
    """Accuracy of the ridge regression from features to {-1, 1} one-vs-all class targets.

    Solves (X^T X + l2 I) W = X^T T when there are at least as many examples as features, else
    W = X^T (X X^T + l2 I)^-1 T (the same solution), in float64; a test image gets the class of
    its largest score.

    Args:
        x: training features (N, dim); y: their class indices (N,).
        x_test: test features (M, dim); y_test: their class indices (M,).
        l2_regularization: the ridge penalty, > 0.

    Returns:
        The test accuracy, a float in [0, 1].

    Raises:
        ValueError: a penalty that is not > 0, features that are not (N, dim) finite numbers
            with one label each, labels that are not class indices 0, 1, 2, ..., or train and
            test features of different widths.
    """
    check_number("l2_regularization", l2_regularization, 0)
    x = _as_array("x", x, "features (N, dim) of numbers", "float64")
    x_test = _as_array("x_test", x_test, "features (M, dim) of numbers", "float64")
    y = _as_array("y", y, "class indices (N,)")
    y_test = _as_array("y_test", y_test, "class indices (M,)")
    for name, features, labels in (("x", x, y), ("x_test", x_test, y_test)):
        if features.ndim != 2 or not len(features) or labels.shape != (len(features),):
            raise ValueError(
                f"{name} of shape {features.shape} with labels of shape {labels.shape} is not "
                "valid; expected features (N, dim), N >= 1, and N labels."
            )
        if not np.isfinite(features).all():
            raise ValueError(f"{name} holds NaN or infinite features.")
    check_class_indices("y", y)
    check_class_indices("y_test", y_test)
    if x.shape[1] != x_test.shape[1]:
        raise ValueError(
            f"x has {x.shape[1]} features per example and x_test {x_test.shape[1]}; expected "
            "the same features for both."
        )
    classes = np.unique(y)
    _check_classes("y", classes, "y_test", y_test)
    mean, std = x.mean(axis=0), x.std(axis=0) + STD_EPSILON
    x = _with_bias(x, mean, std)
    targets = np.where(y[:, None] == classes[None], 1.0, -1.0)
    num, dim = x.shape
    if num >= dim:
        weights = np.linalg.solve(x.T @ x + l2_regularization * np.eye(dim), x.T @ targets)
    else:
        weights = x.T @ np.linalg.solve(x @ x.T + l2_regularization * np.eye(num), targets)
    predictions = classes[np.argmax(_with_bias(x_test, mean, std) @ weights, axis=1)]
    return float(np.mean(predictions == y_test))


def few_shot(
    model: keras.Model,
    train,
    test,
    shots=(1, 5, 10, 25),
    *,
    l2_regularization: float = L2_REGULARIZATION,
    seed: int = 0,
    layer: str | None = None,
    batch_size: int = 64,
    validation_split: float | None = None,
) -> dict:
    """Few-shot linear-probe accuracy of a model's frozen features (ViT paper, Section 4.1).

    Features of every training and test image are computed once; for each shot count the
    regression is fitted on `shots` images per class (`few_shot_indices`) and scored on all
    test images. The same seed gives the same subsets and accuracies.

    Args:
        model: a Keras model taking raw 0-255 pixels (classifier or feature model).
        train: the pool the few-shot images are drawn from: a batched `tf.data.Dataset` or
            `keras.utils.PyDataset` of (images, int labels), or a `kr.data` source, read in
            its "train" split.
        test: the evaluation images: a dataset or a source, read in its "test" split (an
            image folder without a test/ sub-folder: its validation/ one, where it has one).
        shots: an int or a sequence of ints, images per class.
        l2_regularization: ridge penalty (big_vision's default 1024).
        seed: seed of the per-class permutations.
        layer: the representation layer (see `feature_model`).
        batch_size: batch size when `train`/`test` are sources.
        validation_split: for an image folder without a test/ (or validation/) sub-folder:
            the share of each class held out as its "test" split, the rest being "train"
            (`kr.data.load_dataset`'s, the same files as `train(validation_split=)` holds
            out); pass the folder as both `train` and `test`.

    Returns:
        A dict {shots: test accuracy}.

    Raises:
        ValueError: invalid shots (not positive, or more than a class has), seed, penalty,
            model, layer or data.

    Example:
    >>> import keras_resvit as kr
    >>> model = kr.create_model("resnet20")  # or kr.load_model("runs/digits/last.keras")
    >>> accuracies = kr.evaluation.few_shot(model, "digits", "digits", (1, 10))
    >>> sorted(accuracies), all(0 <= a <= 1 for a in accuracies.values())
    ([1, 10], True)
    """
    given = shots
    if isinstance(shots, np.ndarray) and shots.ndim == 0:
        shots = shots.item()  # np.array(5) is the count 5
    # One count, or a sequence of them; anything else is refused by `_check_shots`.
    many = isinstance(shots, (tuple, list, range, np.ndarray))
    shots = tuple(shots) if many else (shots,)
    if not shots:
        raise ValueError(f"shots={given!r} is empty; expected positive ints, e.g. (1, 5, 10, 25).")
    for count in shots:
        _check_shots(count)
    check_seed(seed)
    check_number("l2_regularization", l2_regularization, 0)
    feature_model(model, layer)
    train = _dataset(train, "train", model, batch_size, validation_split)
    test = _dataset(test, "test", model, batch_size, validation_split)
    for data, split in ((train, "train"), (test, "test")):
        _check_structure(data, split)  # the test data before any training features are made
    # Label i must mean one class in both (the datasets say which when they know).
    names = (getattr(data, "class_names", None) for data in (test, train))
    check_class_names_match("test", *names, "train")
    x_pool, y_pool = extract_features(model, train, layer=layer, batch_size=batch_size)
    x_test, y_test = extract_features(model, test, layer=layer, batch_size=batch_size, split="test")
    _check_classes("train", np.unique(y_pool), "test", y_test)
    results = {}
    for count in shots:
        chosen = few_shot_indices(y_pool, count, seed)
        results[int(count)] = least_squares_accuracy(
            x_pool[chosen], y_pool[chosen], x_test, y_test, l2_regularization
        )
    return results
