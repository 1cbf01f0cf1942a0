"""The console script: one call into the API, one line on errors, exit codes 0/1/2."""

import pytest

from keras_resvit.cli import main


def test_list_filters_names(capsys):
    assert main(["list", "plain2*"]) == 0
    out = capsys.readouterr().out.split("\n")
    assert [line.split()[0] for line in out if line] == ["plain20"]


def test_info_prints_parameters_and_multiply_adds(capsys):
    assert main(["info", "resnet50"]) == 0
    out = capsys.readouterr().out
    assert "25,557,032 trainable" in out
    assert "4.089 G per image" in out


def test_info_resizes(capsys):
    assert main(["info", "resnet20", "--image-size", "64"]) == 0
    assert "64x64x3" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, words",
    [
        (["info", "resnet05"], ["name='resnet05'", "resnet50"]),
        (["list", "nothing*"], ["pattern='nothing*'"]),
        (["info", "resnet50", "--image-size", "8"], ["input_shape=(8, 8, 3)", ">= 32"]),
    ],
)
def test_errors_are_one_line_with_exit_code_2(capsys, argv, words):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for word in words:
        assert word in err


def test_debug_shows_the_exception():
    with pytest.raises(ValueError, match="resnet05"):
        main(["--debug", "info", "resnet05"])


def test_train_on_digits_saves_and_exports(tmp_path, capsys):
    code = main(["train", "--epochs", "1", "--output", str(tmp_path), "--batch-size", "128"])
    assert code == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "model.tflite" in out
    assert (tmp_path / "last.keras").is_file() and (tmp_path / "model.tflite").is_file()
