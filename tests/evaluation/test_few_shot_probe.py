"""Few-shot linear evaluation: accuracy of trained features, parity with a NumPy reference,
determinism, the CLI table and argument errors."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_resvit as kr
from keras_resvit.base.model_files import save_model
from keras_resvit.cli import main
from keras_resvit.evaluation import few_shot_probe
from keras_resvit.evaluation.few_shot_probe import BIAS_CONSTANT, STD_EPSILON, few_shot_indices

# One worker builds this module's fixtures once (pytest-xdist --dist loadgroup).
pytestmark = pytest.mark.xdist_group("few_shot_probe")

SHOTS = (1, 5, 10, 25)


@pytest.fixture(scope="module")
def trained():
    """A depth-8 CIFAR ResNet after one epoch on digits (measured 10-shot accuracy ~0.8),
    with its few-shot accuracies."""
    keras.utils.set_random_seed(0)
    (x, y), (x_test, y_test) = kr.data.load_digits()
    model = kr.build_resnet(8, stem="cifar")
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="sparse_categorical_crossentropy"
    )
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    accuracies = kr.evaluation.few_shot(model, (x, y), (x_test, y_test), shots=SHOTS)
    return model, (x, y), (x_test, y_test), accuracies


def reference_accuracy(x, y, x_test, y_test, l2):
    """Ridge regression as an augmented least-squares problem: min |X W - T|^2 + l2 |W|^2."""
    mean, std = x.mean(axis=0), x.std(axis=0) + STD_EPSILON

    def design(features):
        return np.hstack([(features - mean) / std, np.full((len(features), 1), BIAS_CONSTANT)])

    classes = np.unique(y)
    targets = 2.0 * (y[:, None] == classes) - 1.0
    a = np.vstack([design(x), np.sqrt(l2) * np.eye(x.shape[1] + 1)])
    b = np.vstack([targets, np.zeros((x.shape[1] + 1, len(classes)))])
    weights = np.linalg.lstsq(a, b, rcond=None)[0]
    return np.mean(classes[np.argmax(design(x_test) @ weights, axis=1)] == y_test)


def test_few_shot_beats_chance_and_equals_numpy_reference(trained):
    model, train, test, accuracies = trained
    assert list(accuracies) == list(SHOTS)
    # Ten classes: chance is 0.1.
    assert accuracies[10] > 0.6 and accuracies[25] > 0.6
    assert accuracies[25] > accuracies[1]
    x_pool, y_pool = kr.evaluation.extract_features(model, train)
    x_test, y_test = kr.evaluation.extract_features(model, test)
    assert x_pool.shape == (len(train[0]), 64) and x_pool.dtype == np.float64
    np.testing.assert_array_equal(y_pool, train[1])
    for shots in SHOTS:
        chosen = few_shot_indices(y_pool, shots, seed=0)
        assert np.bincount(y_pool[chosen]).tolist() == [shots] * 10
        expected = reference_accuracy(x_pool[chosen], y_pool[chosen], x_test, y_test, 2.0**10)
        assert abs(accuracies[shots] - expected) <= 1e-6


def test_a_py_dataset_gives_the_same_accuracies(trained):
    # What load_dataset gives without TensorFlow: a keras.utils.PyDataset of the same batches.
    model, train, test, accuracies = trained
    loaders = [kr.data.ImageLoader(*split, batch_size=64) for split in (train, test)]
    got = kr.evaluation.few_shot(model, *loaders, shots=SHOTS)
    assert got == pytest.approx(accuracies, abs=1e-6)


def test_cli_prints_the_same_accuracies(trained, tmp_path, capsys):
    model, _, _, accuracies = trained
    model.save(tmp_path / "m.keras")
    assert main(["few-shot", str(tmp_path / "m.keras"), "--shots", "1", "10"]) == 0
    rows = re.findall(r"^\s+(\d+)\s+([0-9.]+)$", capsys.readouterr().out, re.MULTILINE)
    assert {int(s): float(a) for s, a in rows} == pytest.approx(
        {1: accuracies[1], 10: accuracies[10]}, abs=1e-4
    )


def test_a_folder_without_a_test_split_holds_one_out(trained, tmp_path, capsys):
    # A folder of one sub-folder per class: `few-shot` read its "test" split, which it
    # lacks, and had no --validation-split to hold one out.
    model, (x, y), _, _ = trained
    for i in np.concatenate([np.flatnonzero(y == c)[:4] for c in range(10)]):
        folder = tmp_path / "digits" / f"class{y[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        keras.utils.save_img(folder / f"{i}.png", x[i])
    model.save(tmp_path / "m.keras")
    expected = kr.evaluation.few_shot(
        model, tmp_path / "digits", tmp_path / "digits", 1, validation_split=0.5
    )
    command = ["few-shot", str(tmp_path / "m.keras"), "--data", str(tmp_path / "digits")]
    assert main([*command, "--shots", "1"]) == 2
    assert "few-shot: --validation-split" in capsys.readouterr().err
    assert main([*command, "--shots", "1", "--validation-split", "0.5"]) == 0
    rows = re.findall(r"^\s+(\d+)\s+([0-9.]+)$", capsys.readouterr().out, re.MULTILINE)
    assert {int(s): float(a) for s, a in rows} == pytest.approx(expected, abs=1e-4)


def test_a_folder_of_train_and_val_is_scored_on_its_val_images(trained, tmp_path, capsys):
    # A folder of train/ and val/ without test/: few-shot read a "test" split it lacks, and
    # --validation-split was refused because of the val/ folder: no way to run it.
    model, (x, y), _, _ = trained
    for split, start in (("train", 0), ("val", 4)):
        for i in np.concatenate([np.flatnonzero(y == c)[start : start + 4] for c in range(10)]):
            folder = tmp_path / "digits" / split / f"class{y[i]}"
            folder.mkdir(parents=True, exist_ok=True)
            keras.utils.save_img(folder / f"{i}.png", x[i])
    model.save(tmp_path / "m.keras")
    read = {"image_size": 32, "shuffle": False, "mixing": False, "training": False}
    splits = [kr.data.load_dataset(tmp_path / "digits", s, **read) for s in ("train", "validation")]
    expected = kr.evaluation.few_shot(model, *splits, (1, 2))
    assert kr.evaluation.few_shot(model, tmp_path / "digits", tmp_path / "digits", (1, 2)) == (
        pytest.approx(expected, abs=1e-6)
    )
    command = ["few-shot", str(tmp_path / "m.keras"), "--data", str(tmp_path / "digits")]
    assert main([*command, "--shots", "1", "2"]) == 0
    out = capsys.readouterr().out
    assert "scored on its validation images" in out
    rows = re.findall(r"^\s+(\d+)\s+([0-9.]+)$", out, re.MULTILINE)
    assert {int(s): float(a) for s, a in rows} == pytest.approx(expected, abs=1e-4)
    # evaluate's default split (test) names the split it has.
    assert main(["evaluate", str(tmp_path / "m.keras"), "--data", str(tmp_path / "digits")]) == 2
    assert "--split validation" in capsys.readouterr().err


def test_subsets_are_seeded_nested_and_stratified():
    labels = np.random.default_rng(0).integers(0, 5, 200)
    first = few_shot_indices(labels, 10, seed=3)
    np.testing.assert_array_equal(first, few_shot_indices(labels, 10, seed=3))
    assert not np.array_equal(first, few_shot_indices(labels, 10, seed=4))
    # The 5-shot images are among the 10-shot ones, five per class.
    five = few_shot_indices(labels, 5, seed=3)
    assert set(five) <= set(first)
    assert np.bincount(labels[five]).tolist() == [5] * 5


def test_few_shot_indices_refuses_a_seed_that_repeats_nothing():
    # seed=None drew other subsets on every call: "the same seed gives the same subsets".
    for seed in (None, True, -1, 2**32):
        with pytest.raises(ValueError, match=f"seed={seed!r} must be an int"):
            few_shot_indices(np.arange(40) % 4, 2, seed=seed)


def test_least_squares_primal_and_dual_agree():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 8)), np.arange(30) % 3
    x_test, y_test = rng.normal(size=(20, 8)), np.arange(20) % 3
    # 30 examples > 9 columns: primal; 6 examples < 9 columns: dual.
    for rows in (slice(None), slice(0, 6)):
        expected = reference_accuracy(x[rows], y[rows], x_test, y_test, 0.5)
        actual = kr.evaluation.least_squares_accuracy(x[rows], y[rows], x_test, y_test, 0.5)
        assert actual == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"shots": (0,)}, ["shots=0", "positive"]),
        ({"shots": (True,)}, ["shots=True"]),
        ({"shots": ()}, ["shots=()"]),
        ({"shots": 2.0}, ["shots=2.0", "positive ints"]),
        ({"shots": np.array(2.0)}, ["shots=2.0", "positive ints"]),
        ({"shots": None}, ["shots=None", "positive ints"]),
        ({"seed": None}, ["seed=None", "[0, 2**32)"]),
        ({"seed": -1}, ["seed=-1"]),
        ({"seed": "x"}, ["seed='x'"]),
        ({"shots": (5, 50)}, ["shots=50", "has"]),
        ({"l2_regularization": 0.0}, ["l2_regularization=0.0"]),
        ({"layer": "nope"}, ["layer='nope'"]),
    ],
)
def test_bad_arguments_raise_one_clear_error(kwargs, words):
    (x, y), (x_test, y_test) = kr.data.load_digits()
    model = kr.build_resnet(8, stem="cifar")
    with pytest.raises(ValueError) as error:
        kr.evaluation.few_shot(model, (x[:100], y[:100]), (x_test[:20], y_test[:20]), **kwargs)
    for word in words:
        assert word in str(error.value)


@pytest.fixture(scope="module")
def small():
    """An untrained depth-8 CIFAR ResNet, 100 digits to draw from and 20 to test on."""
    (x, y), (x_test, y_test) = kr.data.load_digits()
    return kr.build_resnet(8, stem="cifar"), x[:100], y[:100], (x_test[:20], y_test[:20])


def test_a_0d_array_of_shots_is_one_count(small):
    model, x, y, test = small
    expected = kr.evaluation.few_shot(model, (x, y), test, 5)
    assert kr.evaluation.few_shot(model, (x, y), test, np.array(5)) == expected


class Batches(keras.utils.PyDataset):
    """Two batches of 32 of whatever `make(images, labels)` gives."""

    def __init__(self, x, y, make):
        super().__init__()
        self.x, self.y, self.make = x, y, make

    def __len__(self):
        return 2

    def __getitem__(self, index):
        rows = slice(32 * index, 32 * (index + 1))
        return self.make(self.x[rows], self.y[rows])


NOT_PAIRS = {
    "weights": lambda x, y: (x, y, np.ones(len(y), "float32")),
    "dict": lambda x, y: {"images": x, "labels": y},
    "images_only": lambda x, y: x,
}


@pytest.mark.parametrize("kind", ["tf.data", "PyDataset"])
@pytest.mark.parametrize("make", NOT_PAIRS.values(), ids=list(NOT_PAIRS))
def test_batches_that_are_not_images_and_labels_are_refused(small, kind, make):
    model, x, y, test = small
    if kind == "tf.data":
        train = tf.data.Dataset.from_tensor_slices(make(x, y)).batch(32)
    else:
        train = Batches(x, y, make)
    with pytest.raises(ValueError, match=r"^train dataset yields elements shaped .*; expected"):
        kr.evaluation.few_shot(model, train, test, 1)


@pytest.mark.parametrize("kind", ["tf.data", "PyDataset"])
def test_test_batches_that_are_not_pairs_are_refused_before_any_features(small, kind, monkeypatch):
    model, x, y, (x_test, y_test) = small
    make = NOT_PAIRS["dict"]
    if kind == "tf.data":
        test = tf.data.Dataset.from_tensor_slices(make(x_test, y_test)).batch(32)
    else:
        test = Batches(x_test, y_test, make)
    extracted = []
    monkeypatch.setattr(
        few_shot_probe, "extract_features", lambda *args, **kwargs: extracted.append(args)
    )
    with pytest.raises(ValueError, match=r"^test dataset yields elements shaped \{"):
        kr.evaluation.few_shot(model, (x, y), test, 1)
    assert not extracted  # refused before the training pool's features were computed


def test_a_batch_with_fewer_labels_than_images_is_refused(small):
    model, x, y, _ = small
    data = Batches(x, y, lambda images, labels: (images, labels[:30]))
    with pytest.raises(ValueError, match="train batch 1 has 32 images and 30 labels"):
        kr.evaluation.extract_features(model, data)


def test_dataset_labels_must_be_class_indices(small):
    model, x, _, _ = small

    def dataset(label):
        return tf.data.Dataset.from_tensor_slices((x[:64], np.full(64, label, "float32")))

    # 2.9 was read as class 2.
    with pytest.raises(ValueError, match=r"train batch 1 labels .* class indices.* found 2\.9 "):
        kr.evaluation.extract_features(model, dataset(2.9).batch(32))
    # Whole numbers are class indices in any dtype, as in the (images, labels) array source.
    _, labels = kr.evaluation.extract_features(model, dataset(2.0).batch(32))
    assert labels.dtype == np.int64 and labels.tolist() == [2] * 64


@pytest.mark.parametrize("labels, found", [([0.5, 0.5, 1.5, 1.5], "0.5"), ([np.nan, 1, 1], "nan")])
def test_few_shot_indices_refuses_labels_that_are_not_class_indices(labels, found):
    with pytest.raises(ValueError, match=f"^labels must be class indices .*; found {found} "):
        few_shot_indices(np.array(labels), 1)
    assert few_shot_indices(np.array([0.0, 1.0, 1.0]), 1).tolist()[0] == 0


@pytest.mark.parametrize("argument", ["y", "y_test"])
def test_least_squares_refuses_nan_labels(argument):
    rng = np.random.default_rng(0)
    labels = {"y": np.arange(6.0) % 2, "y_test": np.arange(4.0) % 2}
    labels[argument][1] = np.nan
    with pytest.raises(ValueError, match=f"^{argument} must be class indices .*; found nan "):
        kr.evaluation.least_squares_accuracy(
            rng.normal(size=(6, 3)), labels["y"], rng.normal(size=(4, 3)), labels["y_test"]
        )


def test_least_squares_refuses_features_that_are_not_numbers():
    with pytest.raises(ValueError, match=r"^x is not valid \(could not convert .*features"):
        kr.evaluation.least_squares_accuracy([["a"]], [0], np.zeros((2, 1)), [0, 0])


def test_cli_evaluate_checks_the_data_against_the_class_names_inside_the_model(tmp_path, capsys):
    # No side file: the names saved inside the .keras file are the model's.
    for name in ("cat", "dog", "fox"):
        (tmp_path / "data" / name).mkdir(parents=True)
        keras.utils.save_img(tmp_path / "data" / name / "a.png", np.full((8, 8, 3), 128.0))
    model = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=3)
    save_model(model, tmp_path / "ours.keras", class_names=["cat", "dog", "fox"])
    save_model(model, tmp_path / "other.keras", class_names=["ant", "bee", "cow"])
    argv = ["--data", str(tmp_path / "data"), "--split", "train", "--batch-size", "3"]
    assert main(["evaluate", str(tmp_path / "other.keras"), *argv]) == 2
    err = capsys.readouterr().err
    assert "['cat', 'dog', 'fox']" in err and "['ant', 'bee', 'cow']" in err
    assert main(["evaluate", str(tmp_path / "ours.keras"), *argv]) == 0
    assert "accuracy" in capsys.readouterr().out
