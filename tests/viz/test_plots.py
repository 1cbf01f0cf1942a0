"""Predictions and training-curve figures: PNGs of the expected pixel size, clear errors."""

import keras
import numpy as np
import pytest
from matplotlib.image import imread

import keras_resvit as kr
from keras_resvit.base.files import write_csv
from keras_resvit.viz import curves
from keras_resvit.viz.figures import DPI, LINE_INCHES, PANEL_INCHES
from tests.conftest import random_images, tiny_vit

PANEL = round(PANEL_INCHES * DPI)


@pytest.mark.parametrize("top_k, lines", [(3, 3), (9, 5)])
def test_predictions_grid_has_a_panel_per_image_and_a_line_per_class(tmp_path, top_k, lines):
    # TINY_VIT has 5 classes, so top_k=9 lists 5 lines.
    path = kr.viz.plot_predictions(
        tiny_vit(), random_images(3, 32, 32), tmp_path / "p.png", top_k=top_k
    )
    assert imread(path).shape == (round((PANEL_INCHES + lines * LINE_INCHES) * DPI), 3 * PANEL, 4)


def test_curves_from_history_csv_and_dict(tmp_path):
    csv = tmp_path / "history.csv"
    csv.write_text(
        "epoch,accuracy,learning_rate,loss,val_accuracy,val_loss\n"
        "0,0.5,0.1,1.5,0.6,1.2\n1,0.8,0.01,0.6,0.85,0.5\n"
    )
    # One 4.5 x 3.5 inch panel per curve (loss, accuracy, learning rate) at 100 dpi.
    assert imread(kr.viz.plot_history(csv, tmp_path / "c.png")).shape[:2] == (350, 3 * 450)
    history = {"loss": [2.0, 1.0, 0.5]}
    assert imread(kr.viz.plot_history(history, tmp_path / "d.png")).shape[:2] == (350, 450)


def _curves(monkeypatch, history, path, **options):
    """{panel title: {curve label: (y values, marker)}} of the figure plot_history draws."""
    figures = []
    save_png = curves.save_png
    monkeypatch.setattr(curves, "save_png", lambda f, p: figures.append(f) or save_png(f, p))
    kr.viz.plot_history(history, path, **options)
    (figure,) = figures
    return {
        ax.get_title(): {
            line.get_label(): (line.get_ydata(), line.get_marker()) for line in ax.lines
        }
        for ax in figure.axes
    }


def test_a_csv_column_blank_in_its_first_rows_is_drawn(tmp_path, monkeypatch):
    # The history writer leaves a blank cell in an epoch without that value: validation every
    # other epoch starts at epoch 2.
    rows = [
        {"epoch": e, "loss": 2.0 / e, **({"val_loss": 1.0 / e} if e % 2 == 0 else {})}
        for e in range(1, 6)
    ]
    csv = write_csv(tmp_path / "history.csv", rows)
    assert csv.read_text().splitlines()[:2] == ["epoch,loss,val_loss", "1,2.0,"]
    drawn = _curves(monkeypatch, csv, tmp_path / "c.png")
    np.testing.assert_allclose(drawn["loss"]["train"][0], [2.0, 1.0, 2 / 3, 0.5, 0.4])
    validation, marker = drawn["loss"]["validation"]
    np.testing.assert_allclose(validation, [np.nan, 0.5, np.nan, 0.25, np.nan])
    # Each value lies between gaps, so only a marker shows it.
    assert marker == "."


def test_a_history_of_fit_with_validation_freq_is_drawn_at_its_validated_epochs(
    tmp_path, monkeypatch
):
    # fit(validation_freq=2) records one val_loss per validated epoch: the curves were
    # refused as of different lengths.
    (x, y), _ = kr.data.load_digits(8)
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(
        x[:64], y[:64], validation_data=(x[:32], y[:32]), epochs=5, validation_freq=2, verbose=0
    )
    assert len(history.history["val_loss"]) == 2
    with pytest.raises(ValueError, match=r"as many as its train curve .*validation_freq=N"):
        kr.viz.plot_history(history, tmp_path / "c.png")
    drawn = _curves(monkeypatch, history, tmp_path / "c.png", validation_freq=2)
    validation, marker = drawn["loss"]["validation"]
    expected = [np.nan, history.history["val_loss"][0], np.nan, history.history["val_loss"][1]]
    np.testing.assert_allclose(validation, [*expected, np.nan])
    assert marker == "."
    with pytest.raises(ValueError, match=r"or 1: one per epoch validated"):
        kr.viz.plot_history(history, tmp_path / "c.png", validation_freq=3)
    with pytest.raises(ValueError, match="validation_freq=0 must be a positive int"):
        kr.viz.plot_history(history, tmp_path / "c.png", validation_freq=0)


def test_a_one_epoch_run_draws_its_values(tmp_path, monkeypatch):
    # A line of one point draws nothing: curves.png of `train --epochs 1` had empty panels.
    history = {"loss": [2.0], "val_loss": [1.5], "learning_rate": [0.1]}
    drawn = _curves(monkeypatch, history, tmp_path / "c.png")
    assert drawn["loss"]["train"][1] == drawn["loss"]["validation"][1] == "."
    assert [marker for _, marker in drawn["learning rate"].values()] == ["."]


def test_none_nan_and_infinities_are_gaps(tmp_path, monkeypatch):
    history = {"loss": [2.0, np.nan, np.inf, 0.5], "val_loss": (None, 1.0, 0.8, 0.6)}
    drawn = _curves(monkeypatch, history, tmp_path / "c.png")["loss"]
    np.testing.assert_array_equal(drawn["train"][0], [2.0, np.nan, np.inf, 0.5])
    np.testing.assert_array_equal(drawn["validation"][0], [np.nan, 1.0, 0.8, 0.6])
    # Whole curves stay plain lines.
    whole = {"loss": np.array([2.0, 1.0]), "accuracy": [0, 1]}
    drawn = _curves(monkeypatch, whole, tmp_path / "d.png")
    assert drawn["accuracy"]["train"][1] == drawn["loss"]["train"][1] == "None"


def test_a_history_of_a_resumed_fit_is_drawn_at_its_epochs(tmp_path, monkeypatch):
    figures = []
    save_png = curves.save_png
    monkeypatch.setattr(curves, "save_png", lambda f, p: figures.append(f) or save_png(f, p))
    history = keras.callbacks.History()  # what fit(initial_epoch=3, epochs=5) returns
    history.epoch, history.history = [3, 4], {"loss": [0.9, 0.8], "val_loss": [1.0, 0.9]}
    kr.viz.plot_history(history, tmp_path / "c.png")
    kr.viz.plot_history(history.history, tmp_path / "d.png")  # a dict has no epoch numbers
    (resumed,), (plain,) = (figure.axes[0].lines[:1] for figure in figures)
    assert list(resumed.get_xdata()) == [4, 5]
    assert list(figures[0].axes[0].lines[1].get_xdata()) == [4, 5]  # validation
    assert list(plain.get_xdata()) == [1, 2]


@pytest.mark.parametrize(
    "plot, arguments, error, words",
    [
        ("predictions", {"top_k": 0}, ValueError, ["top_k=0"]),
        ("predictions", {"path": "p.jpg"}, ValueError, ["p.jpg", ".png"]),
        ("predictions", {"images": np.zeros((1, 8, 8, 3))}, ValueError, ["(1, 8, 8, 3)"]),
        # Features, not class scores: their top dimensions would be plotted as classes.
        ("predictions", {"model": "features"}, ValueError, ["'avg_pool'", "not a classifier"]),
        ("history", {"history": "missing.csv"}, FileNotFoundError, ["missing.csv"]),
        ("history", {"history": {"epoch": [0]}}, ValueError, ["['epoch']", "loss"]),
        ("history", {"history": {"loss": []}}, ValueError, ["history['loss']=[]", "per epoch"]),
        # A string or a dict iterates to characters or keys, which would plot as numbers.
        ("history", {"history": {"loss": "12"}}, ValueError, ["history['loss']='12'", "numbers"]),
        ("history", {"history": {"loss": b"12"}}, ValueError, ["history['loss']=b'12'"]),
        ("history", {"history": {"loss": ["1.5", "0.7"]}}, ValueError, ["['1.5', '0.7']"]),
        ("history", {"history": {"loss": {"1": 2.0}}}, ValueError, ["{'1': 2.0}", "numbers"]),
        ("history", {"history": {"loss": [[1.0, 0.5]]}}, ValueError, ["[[1.0, 0.5]]", "numbers"]),
        ("history", {"history": {"loss": [True, False]}}, ValueError, ["[True, False]"]),
        ("history", {"history": {"loss": [1.0, "a"]}}, ValueError, ["[1.0, 'a']", "numbers"]),
        ("history", {"history": {"loss": 1.5}}, ValueError, ["history['loss']=1.5", "numbers"]),
        (
            "history",
            {"history": {"loss": [1.0, 0.5], "val_loss": "12"}},
            ValueError,
            ["history['val_loss']='12'", "2, as many as its train curve"],
        ),
    ],
)
def test_bad_input_raises_one_clear_error(tmp_path, plot, arguments, error, words):
    if plot == "predictions":
        call = kr.viz.plot_predictions
        arguments = {"model": tiny_vit(), "images": random_images(1, 32, 32), **arguments}
        if arguments["model"] == "features":
            arguments["model"] = kr.build_resnet(
                8, stem="cifar", include_top=False, pooling="avg", input_shape=(32, 32, 3)
            )
    else:
        call = kr.viz.plot_history
    path = tmp_path / arguments.pop("path", "out.png")
    with pytest.raises(error) as raised:
        call(**arguments, path=path)
    for word in words:
        assert word in str(raised.value)
    assert not path.exists()


def test_paths_expand_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "history.csv").write_text("epoch,loss\n0,1.5\n1,0.7\n")
    assert kr.viz.plot_history("~/history.csv", "~/curves.png") == tmp_path / "curves.png"
    assert imread(tmp_path / "curves.png").shape[:2] == (350, 450)
