"""`kr.train` on the embedded digits: learns, writes its files atomically."""

import csv
import json

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.files import save_model
from keras_resvit.training.recipes import RECIPES
from keras_resvit.training.train import learning_rate_schedule


@pytest.fixture(scope="module")
def digits():
    (x, y), (xt, yt) = kr.data.load_digits()
    train = kr.data.load_dataset((x[:768], y[:768]), "train", batch_size=64)
    test = kr.data.load_dataset((xt[:128], yt[:128]), "test", batch_size=64)
    return train, test


def test_train_learns_digits_and_writes_outputs(digits, tmp_path):
    train, test = digits
    history = kr.train("resnet20", train, epochs=4, val_data=test, output_dir=tmp_path, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.6 * losses[0]
    assert history.history["accuracy"][-1] > 0.5
    for name in ("last.keras", "best.keras", "history.csv", "config.json"):
        assert (tmp_path / name).is_file()
    rows = list(csv.DictReader((tmp_path / "history.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["loss"]) == pytest.approx(losses[-1])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["recipe"] == "resnet_cifar" and config["batch_size"] == 64
    assert config["backend"] == keras.backend.backend()
    best = keras.saving.load_model(tmp_path / "best.keras", safe_mode=True)
    accuracy = float(
        np.mean(
            np.argmax(best.predict(test, verbose=0), -1)
            == np.concatenate([np.asarray(y) for _, y in test])
        )
    )
    assert accuracy == pytest.approx(max(history.history["val_accuracy"]), abs=1e-6)


def test_recipe_schedule_scales_with_batch_and_decays_tenfold():
    schedule = learning_rate_schedule(RECIPES["resnet_cifar"], batch_size=64, steps=100)
    rates = [float(schedule(step)) for step in (0, 49, 51, 76)]
    np.testing.assert_allclose(rates, [0.05, 0.05, 0.005, 0.0005], rtol=1e-6)


def test_failed_save_keeps_the_previous_file(tmp_path):
    model = kr.create_model("resnet20")
    path = save_model(model, tmp_path / "last.keras")
    before = path.read_bytes()

    class Broken(keras.Model):
        def save(self, *args, **kwargs):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_model(Broken(), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.keras"]


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"recipe": "sgd"}, ["recipe='sgd'", "resnet_cifar"]),
        ({"epochs": 0}, ["epochs=0", "positive"]),
    ],
)
def test_bad_train_arguments(digits, tmp_path, kwargs, words):
    with pytest.raises(ValueError) as info:
        kr.train("resnet20", digits[0], output_dir=tmp_path, **kwargs)
    for word in words:
        assert word in str(info.value)


def test_output_dir_that_is_a_file(digits, tmp_path):
    target = tmp_path / "file"
    target.write_text("keep")
    with pytest.raises(ValueError, match="output_dir=.*not a folder"):
        kr.train("resnet20", digits[0], epochs=1, output_dir=target)
    assert target.read_text() == "keep"
