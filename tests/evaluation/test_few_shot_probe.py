"""Few-shot linear evaluation: accuracy of trained features, parity with a NumPy reference,
determinism, the CLI table and argument errors."""

import re

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.base.model_files import save_model
from keras_resvit.cli import main
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
