"""`keras-resvit plot`: each kind writes a PNG and exits 0; bad input exits 2 with one line."""

from pathlib import Path

import keras
import pytest
from matplotlib.image import imread

import keras_resvit as kr
from keras_resvit.base.class_names import write_class_names
from keras_resvit.cli import main
from tests.conftest import random_images, tiny_vit


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A saved ResNet-8 (16 px) with class names, a saved tiny ViT, two images, a history."""
    folder = tmp_path_factory.mktemp("plot_cli")
    resnet = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=5)
    resnet.save(folder / "resnet.keras")
    write_class_names(folder / "resnet.keras", list("abcde"))
    tiny_vit().save(folder / "vit.keras")
    images = [str(folder / f"image{i}.png") for i in range(2)]
    for path, pixels in zip(images, random_images(2, 24, 24), strict=True):
        keras.utils.save_img(path, pixels)
    (folder / "history.csv").write_text("epoch,loss,accuracy\n0,1.5,0.5\n1,0.7,0.8\n")
    return folder, images


@pytest.mark.parametrize(
    "kind, model, options",
    [
        ("gradcam", "resnet.keras", ["--class-index", "2"]),
        ("attention", "vit.keras", ["--head-fusion", "max"]),
        ("predictions", "vit.keras", ["--top-k", "2"]),
        ("predictions", "resnet.keras", []),
    ],
)
def test_plot_writes_a_png(files, tmp_path, capsys, kind, model, options):
    folder, images = files
    output = tmp_path / f"{kind}.png"
    assert main(["plot", kind, str(folder / model), *images, "--output", str(output)]) == 0
    assert f"wrote {output}" in capsys.readouterr().out
    # Two image panels side by side, 200 px each.
    assert imread(output).shape[1] == 400


def test_plot_curves(files, tmp_path):
    folder, _ = files
    output = tmp_path / "curves.png"
    assert main(["plot", "curves", str(folder / "history.csv"), "--output", str(output)]) == 0
    assert imread(output).shape[:2] == (350, 2 * 450)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["gradcam", "vit.keras", "image0.png"], ["is a ViT"]),
        (["attention", "resnet.keras", "image0.png"], ["is not a ViT"]),
        (["predictions", "resnet.keras", "missing.png"], ["missing.png", "is not a file"]),
        (["gradcam", "resnet.keras", "image0.png", "--class-index", "7"], ["--class-index 7"]),
        (["curves", "missing.csv"], ["missing.csv"]),
        (["predictions", "resnet.keras", "image0.png", "--top-k", "0"], ["--top-k", "'0'"]),
    ],
)
def test_bad_input_exits_2_with_one_line(files, tmp_path, capsys, argv, words):
    folder, _ = files
    kind, *rest = argv
    rest = [str(folder / a) if a.endswith((".keras", ".png", ".csv")) else a for a in rest]
    output = tmp_path / "out.png"
    assert main(["plot", kind, *rest, "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for word in words:
        assert word in err
    assert not output.exists()


def test_a_plot_replaces_only_its_own_figure(files, tmp_path, capsys):
    """A user's image at --output (here the plot's own input) is left as it is; a figure the
    package wrote is replaced."""
    folder, images = files
    photo = tmp_path / "photo.png"
    photo.write_bytes(Path(images[0]).read_bytes())
    before = photo.read_bytes()
    argv = ["plot", "gradcam", str(folder / "resnet.keras"), str(photo), "--output", str(photo)]
    assert main(argv) == 2
    assert "is not a figure keras_resvit wrote" in capsys.readouterr().err
    assert photo.read_bytes() == before
    curves = ["plot", "curves", str(folder / "history.csv"), "--output", str(tmp_path / "c.png")]
    assert main(curves) == 0 and main(curves) == 0  # its own figure, replaced
    assert imread(tmp_path / "c.png").shape[:2] == (350, 2 * 450)
