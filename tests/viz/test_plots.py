"""Predictions and training-curve figures: PNGs of the expected pixel size, clear errors."""

import numpy as np
import pytest
from matplotlib.image import imread

import keras_resvit as kr
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
