"""Checks every picture shares: the model, class names, the PNG path and the pixels are refused
with one ValueError naming the argument and its value, before any work or file."""

import re

import keras
import numpy as np
import pytest

import keras_resvit as kr
from tests.conftest import random_images, tiny_vit

# TINY_VIT and the ResNet below: 32 px images, 5 classes.
CLASSES = 5
NAMES = list("abcde")
PLOTS = {
    "plot_attention": "vit",
    "plot_grad_cam": "resnet",
    "plot_predictions": "vit",
}
ANALYSES = {"rollout_matrices": "vit", "attention_rollout": "vit", "grad_cam": "resnet"}


@pytest.fixture(scope="module")
def models():
    return {
        "vit": tiny_vit(),
        "resnet": kr.build_resnet(8, stem="cifar", input_shape=(32, 32, 3), num_classes=CLASSES),
    }


@pytest.fixture
def images():
    return random_images(2, 32, 32)


def _message(*words):
    """A pattern for `pytest.raises(match=)`: `words` in this order on the message's line."""
    return ".*".join(map(re.escape, words))


def _unbuilt():
    return keras.Sequential([keras.layers.Dense(CLASSES)])


@pytest.mark.parametrize("function", [*ANALYSES, *PLOTS])
@pytest.mark.parametrize(
    "model, words",
    [
        (None, ["model of type NoneType", "keras.Model"]),
        ("resnet20", ["model of type str", "keras.Model"]),
        (_unbuilt, ["model='sequential", "no defined input shape"]),
    ],
)
def test_a_model_that_is_not_a_built_keras_model_is_refused(
    images, tmp_path, function, model, words
):
    model = model() if callable(model) else model
    path = tmp_path / "out.png"
    arguments = (path,) if function in PLOTS else ()
    with pytest.raises(ValueError, match=_message(*words)):
        getattr(kr.viz, function)(model, images, *arguments)
    assert not path.exists()


@pytest.mark.parametrize("plot", PLOTS)
@pytest.mark.parametrize(
    "class_names, words",
    [
        (
            {str(i): name for i, name in enumerate(NAMES)},
            ["class_names={'0': 'a'", "list of strings"],
        ),
        ({i + 5: name for i, name in enumerate(NAMES)}, ["class_names={5: 'a'", "list of strings"]),
        (5, ["class_names=5 ", "list of strings"]),
        ("abcde", ["class_names='abcde'", "list of strings"]),
        (list(range(CLASSES)), ["class_names=[0, 1, 2, 3, 4]", "list of strings"]),
        ([], ["class_names=[]", "one name per class"]),
        (np.array([NAMES]), ["class_names=array([[", "list of strings"]),
        (["a", "b", "c"], ["class_names list 3 classes", "the model has 5 outputs"]),
        (np.array([*NAMES, "f"]), ["class_names list 6 classes", "the model has 5 outputs"]),
    ],
)
def test_class_names_must_be_one_string_per_class(
    models, images, tmp_path, plot, class_names, words
):
    path = tmp_path / "out.png"
    with pytest.raises(ValueError, match=_message(*words)):
        getattr(kr.viz, plot)(models[PLOTS[plot]], images, path, class_names=class_names)
    assert not path.exists()


@pytest.mark.parametrize("plot", PLOTS)
@pytest.mark.parametrize(
    "class_names",
    [NAMES, tuple(NAMES), np.array(NAMES)],
    ids=lambda names: type(names).__name__,
)
def test_class_names_title_the_panels(models, images, tmp_path, monkeypatch, plot, class_names):
    titles = []

    def show_image(ax, image, heatmap=None, title=None):
        titles.append(title)

    monkeypatch.setattr(f"{getattr(kr.viz, plot).__module__}.show_image", show_image)
    model = models[PLOTS[plot]]
    getattr(kr.viz, plot)(model, images, tmp_path / "out.png", class_names=class_names)
    assert len(titles) == len(images)
    # Every line names a class (plot_predictions lists the top 3, each with its score).
    for title in titles:
        assert all(line.split(":")[0] in NAMES for line in title.split("\n"))


@pytest.mark.parametrize("plot", [*PLOTS, "plot_history"])
@pytest.mark.parametrize(
    "path, words", [(None, ["path=None", "not a path"]), (5, ["path=5", "not a path"])]
)
def test_a_path_that_is_not_a_path_is_refused(models, images, plot, path, words):
    history = ({"loss": [1.0, 0.5]},)
    arguments = history if plot == "plot_history" else (models[PLOTS[plot]], images)
    with pytest.raises(ValueError, match=_message(*words)):
        getattr(kr.viz, plot)(*arguments, path)


@pytest.mark.parametrize("function", [*ANALYSES, *PLOTS])
def test_nan_pixels_are_refused(models, images, tmp_path, function):
    # A NaN pixel would give all-NaN scores: blank heatmaps and an arbitrary "top" class.
    images[1, 3, 4, 0] = np.nan
    model = models[{**ANALYSES, **PLOTS}[function]]
    arguments = (tmp_path / "out.png",) if function in PLOTS else ()
    with pytest.raises(ValueError, match=r"images hold NaN or infinite pixels \(image 1"):
        getattr(kr.viz, function)(model, images, *arguments)
