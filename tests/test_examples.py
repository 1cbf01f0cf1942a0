"""The example scripts: `--help` answers, and each runs end to end on tiny settings."""

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_resvit as kr
from tests.weights.test_vit_npz import make_checkpoint

EXAMPLES = Path(__file__).parents[1] / "examples"
NAMES = sorted(path.stem for path in EXAMPLES.glob("*.py"))
DIGITS_TRAIN = 1437  # scikit-learn's 1,797 digits less the 20% test split
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_example(name, *argv):
    """Runs `examples/<name>.py`'s main() in this process (TensorFlow is loaded once)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main([str(a) for a in argv])
    return module


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", NAMES)
def test_help_answers(name):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # The docstring's commands: a CPU-friendly run and the paper-scale flags.
    assert f"examples/{name}.py" in result.stdout
    assert "--output" in result.stdout
    # Every line of the docstring shows, its commands' line continuations too.
    source = (EXAMPLES / f"{name}.py").read_text()
    for line in source.split('"""')[1].splitlines()[1:]:
        assert line.strip() in result.stdout, line


@pytest.mark.slow
@pytest.mark.one_backend(
    "tensorflow",
    reason="the example's curves from short runs; the recipe trains on both backends in "
    "tests/training (measured 10 s here, 44 s under JAX)",
)
def test_resnet_degradation_writes_curves(tmp_path, capsys):
    run_example(
        "resnet_degradation",
        "--depths",
        8,
        "--epochs",
        2,
        "--batch-size",
        128,
        "--output",
        tmp_path,
    )
    rows = read_csv(tmp_path / "degradation.csv")
    assert [(r["net"], int(r["epoch"])) for r in rows] == [
        ("plain8", 1),
        ("plain8", 2),
        ("resnet8", 1),
        ("resnet8", 2),
    ]
    steps = -(-DIGITS_TRAIN // 128)
    assert [int(r["iteration"]) for r in rows] == [steps, 2 * steps] * 2
    for net in ("plain8", "resnet8"):
        history = read_csv(tmp_path / net / "history.csv")
        curve = [r for r in rows if r["net"] == net]
        for row, epoch in zip(curve, history, strict=True):
            assert float(row["train_error"]) == pytest.approx(100 * (1 - float(epoch["accuracy"])))
            assert float(row["test_error"]) == pytest.approx(
                100 * (1 - float(epoch["val_accuracy"]))
            )
        # Two epochs of the paper's recipe lower the training loss of both nets.
        assert float(history[1]["loss"]) < float(history[0]["loss"])
    assert (tmp_path / "degradation.png").read_bytes()[:8] == PNG_MAGIC
    assert "resnet8" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.one_backend(
    "tensorflow",
    reason="the example's table (seeds, means, the paper's column) from short runs; the "
    "recipe trains on both backends in tests/training (measured 81 s here, 141 s under JAX)",
)
def test_cifar_resnet_table_prints_paper_column(tmp_path, capsys):
    run_example(
        "cifar_resnet_table",
        # Three steps: one history row each, and test errors that can differ between seeds
        # (after one whole epoch every net measured predicted one class of ten: 90.00 +- 0).
        *("--depths", 8, 20, "--plain-depths", 8, "--seeds", 0, 1, "--steps", 3),
        *("--output", tmp_path),
    )
    rows = {row["net"]: row for row in read_csv(tmp_path / "table.csv")}
    assert list(rows) == ["resnet8", "resnet20", "plain8"]
    assert int(rows["resnet8"]["params"]) == kr.count_params(kr.build_resnet(8, stem="cifar"))
    # The mean and spread of the two seeds' final test errors (here the test split validates).
    errors = []
    for seed in (0, 1):
        (epoch,) = read_csv(tmp_path / f"resnet8-seed{seed}" / "history.csv")
        errors.append(100 * (1 - float(epoch["val_accuracy"])))
    assert float(rows["resnet8"]["seeds"]) == 2
    assert float(rows["resnet8"]["test_error"]) == pytest.approx(np.mean(errors), abs=0.01)
    assert float(rows["resnet8"]["test_error_std"]) == pytest.approx(np.std(errors), abs=0.01)
    # The paper's column: 8.75 for ResNet-20, none for ResNet-8 or any plain net.
    assert rows["resnet20"]["paper_test_error"] == "8.75"
    assert rows["resnet8"]["paper_test_error"] == rows["plain8"]["paper_test_error"] == ""
    printed = capsys.readouterr().out
    line = next(line for line in printed.splitlines() if line.startswith("| resnet8 "))
    assert line.split("|")[-2].strip() == "-"
    assert (tmp_path / "table.md").read_text() in printed


def test_cifar_resnet_table_holds_out_the_papers_validation_split(tmp_path):
    spec = importlib.util.spec_from_file_location("table", EXAMPLES / "cifar_resnet_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    images = np.random.default_rng(0).uniform(0, 255, (60, 32, 32, 3)).astype("float32")
    labels = np.arange(60) % 10
    np.savez(tmp_path / "c.npz", x_train=images, y_train=labels, x_test=images[:20],
             y_test=labels[:20])  # fmt: skip
    args = table.parse_args(["--data", str(tmp_path / "c.npz"), "--batch-size", "4"])
    train, validation, test = table.load_splits(kr, args, seed=0)
    counts = [sum(int(x.shape[0]) for x, _ in ds) for ds in (train, validation, test)]
    assert counts == [54, 6, 20]  # 90% trains, 10% validates: the paper's 45k/5k
    assert table.parse_args(["--data", "tfds:cifar10"]).split == "paper"


@pytest.mark.slow
def test_finetune_reads_the_architecture_from_a_checkpoint_file(tmp_path):
    arrays = make_checkpoint(np.random.default_rng(0))  # 16 px, patch 8, 5 classes
    np.savez(tmp_path / "vit.npz", **arrays)
    output = tmp_path / "run"
    run_example(
        "finetune",
        "--weights",
        tmp_path / "vit.npz",
        "--image-size",
        32,
        "--batch-size",
        64,
        "--epochs",
        1,
        "--output",
        output,
    )
    model = kr.load_model(output / "last.keras")
    assert model.input_shape == (None, 32, 32, 3)
    assert model.output_shape == (None, 10)
    # The learning rate is still warming up after one epoch: the weights stay near the
    # checkpoint's (a fresh class token would be zeros).
    token = keras.ops.convert_to_numpy(model.get_layer("class_token").weights[0])
    np.testing.assert_allclose(token, arrays["cls"], atol=0.05)
    assert np.abs(arrays["cls"]).max() > 0.2
    (epoch,) = read_csv(output / "history.csv")
    assert 0.0 <= float(epoch["val_accuracy"]) <= 1.0


# The example's reading of weights, folder and recipe, once per family: each family trains on
# both backends in tests/training.
_FINETUNE_ONCE = "the example's steps; its calls are tested on both backends"


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        pytest.param("vit_ti16", marks=pytest.mark.one_backend("jax", reason=_FINETUNE_ONCE)),
        pytest.param(
            "resnet18", marks=pytest.mark.one_backend("tensorflow", reason=_FINETUNE_ONCE)
        ),
    ],
)
def test_finetune_starts_from_pretrained_weights_on_an_image_folder(tmp_path, name, capsys):
    from tests.test_cli import write_image_folder
    from tests.weights.torch_layout import resnet_state_dict, vit_state_dict

    # Stand-in published weights: the registry model's own layout, in timm's format.
    source = kr.create_model(name)
    state = (vit_state_dict if name.startswith("vit") else resnet_state_dict)(source)
    np.savez(tmp_path / "pretrained.npz", **state)
    data = tmp_path / "photos"
    write_image_folder(data / "train", per_class=8)
    write_image_folder(data / "test", per_class=2, seed=1)
    example = run_example(
        "finetune", "--model", name, "--weights", tmp_path / "pretrained.npz", "--data", data,
        "--image-size", 32, "--batch-size", 8, "--epochs", 1, "--output", tmp_path / "run",
    )  # fmt: skip
    recipe = "vit_finetune" if name.startswith("vit") else "bit_finetune"
    assert f"({recipe})" in capsys.readouterr().out
    # Before training: the pre-trained weights at 32 px, a zero-initialized 3-class head.
    model = example.pretrained_model(kr, name, str(tmp_path / "pretrained.npz"), 32, 3)
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 3)
    layer = "encoder_block1_mlp_dense1" if name.startswith("vit") else "stage2_block1_conv1"
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer(layer).kernel),
        keras.ops.convert_to_numpy(source.get_layer(layer).kernel),
    )
    trained = kr.load_model(tmp_path / "run" / "last.keras")
    assert trained.output_shape == (None, 3)
    (epoch,) = read_csv(tmp_path / "run" / "history.csv")
    assert 0.0 <= float(epoch["val_accuracy"]) <= 1.0


@pytest.mark.slow
def test_export_tflite_writes_checked_files(tmp_path, capsys):
    model = kr.build_resnet(8, stem="cifar")
    model.save(tmp_path / "model.keras")
    (images, _), _ = kr.data.load_digits()
    image = tmp_path / "digit.png"
    keras.utils.save_img(image, images[0])
    run_example(
        "export_tflite",
        tmp_path / "model.keras",
        "--quantization",
        "float32",
        "float16",
        "--output",
        tmp_path / "tflite",
        "--images",
        image,
    )
    float32, float16 = (tmp_path / "tflite" / f"model_{q}.tflite" for q in ("float32", "float16"))
    assert float16.stat().st_size < 0.7 * float32.stat().st_size
    out = capsys.readouterr().out
    assert "model_float32.tflite" in out and "model_float16.tflite" in out
    assert out.count("digit.png") == 2  # one prediction per file


@pytest.mark.slow
def test_train_imagenet_on_mock_tfds(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    output = tmp_path / "run"
    with tfds.testing.mock_data(num_examples=16):
        run_example(
            "train_imagenet",
            "--model",
            "resnet20",
            "--image-size",
            32,
            "--batch-size",
            8,
            "--epochs",
            1,
            "--output",
            output,
        )
    config = json.loads((output / "config.json").read_text())
    assert config["recipe"] == "resnet_imagenet"
    assert config["batch_size"] == 8 and config["steps_per_epoch"] == 2
    model = kr.load_model(output / "last.keras")
    assert model.input_shape == (None, 32, 32, 3)
    assert model.output_shape == (None, 1000)
    assert len(read_csv(output / "history.csv")) == 1


def test_examples_never_overwrite_a_users_file_of_the_same_name(tmp_path):
    (tmp_path / "table.csv").write_text("the user's table")
    with pytest.raises(ValueError, match="holds table.csv, which keras_resvit did not write"):
        run_example("cifar_resnet_table", "--depths", "8", "--epochs", "1", "--output", tmp_path)
    assert (tmp_path / "table.csv").read_text() == "the user's table"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]
