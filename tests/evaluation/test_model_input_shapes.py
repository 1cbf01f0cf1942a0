"""Models of any input size, of one channel or of a non-square input, through the commands and
functions that read image files for them (predict, plot, evaluate, export calibration) and the
multi-crop tests: each scores them as they are, or refuses them in one line."""

import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from matplotlib.image import imread
from PIL import Image

import keras_resvit as kr
from keras_resvit.cli import main
from keras_resvit.data.image_files import load_images
from keras_resvit.predict import predict
from tests.conftest import random_images, tiny_vit


def _write(path, height, width, channels=3, seed=0):
    pixels = random_images(1, height, width, channels=channels, seed=seed)[0].astype("uint8")
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(path)
    return str(path)


def test_predict_scores_each_image_at_its_own_size_for_a_model_of_any_size(tmp_path):
    model = kr.build_resnet(8, stem="cifar", input_shape=(None, None, 3), num_classes=4)
    paths = [_write(tmp_path / "a.png", 20, 24), _write(tmp_path / "b.png", 32, 16, seed=1)]
    results = predict(model, paths, top_k=4)
    for path, top in zip(paths, results, strict=True):
        pixels = np.asarray(Image.open(path), "float32")[None]
        expected = keras.ops.convert_to_numpy(model(pixels))[0]
        got = {entry["index"]: entry["score"] for entry in top}
        np.testing.assert_allclose([got[i] for i in range(4)], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("height, width", [(120, 160), (40, 20), (24, 30), (32, 32)])
def test_files_are_read_for_a_model_as_evaluation_reads_them(tmp_path, height, width):
    """`kr.predict` (and plots, export calibration) see a file's pixels as `load_dataset`'s
    evaluation of a folder of it: a photo's 0.875 center crop, a small image resized whole
    with its aspect kept, never stretched to the model's shape."""
    stripes = np.zeros((height, width, 3), "uint8")
    stripes[:, ::2] = 255  # what a resize without antialiasing aliases
    stripes[:, : width // 8, 1:] = 0  # a red band on the left, which the crop cuts
    stripes[..., 2] = np.linspace(0, 255, height)[:, None]  # blue rises down the image
    for split, name in (("train", "a"), ("train", "b"), ("test", "a")):
        (tmp_path / split / name).mkdir(parents=True)
        Image.fromarray(stripes).save(tmp_path / split / name / "x.png")
    evaluated = kr.data.load_dataset(tmp_path, "test", image_size=32)
    expected = np.asarray(next(iter(evaluated))[0])[0]
    actual = load_images([tmp_path / "test" / "a" / "x.png"], (32, 32))[0]
    np.testing.assert_allclose(actual, expected, atol=1e-4)
    if (height, width) == (120, 160):  # a photo: cropped, the band's pixels mostly gone
        assert actual[:, :3, 1].mean() > 60
    cropped = actual
    # A whole-image preset's evaluation, and a given ratio, through `crop_ratio`.
    for options, ratio in (({"augment": "resnet_cifar"}, 1.0), ({"crop_ratio": 0.6}, 0.6)):
        evaluated = kr.data.load_dataset(tmp_path, "test", image_size=32, **options)
        expected = np.asarray(next(iter(evaluated))[0])[0]
        actual = load_images([tmp_path / "test" / "a" / "x.png"], (32, 32), crop_ratio=ratio)[0]
        np.testing.assert_allclose(actual, expected, atol=1e-4, err_msg=str(options))
        if (height, width) == (120, 160) and ratio == 1.0:  # the whole height: blue from 0
            assert actual[0, :, 2].mean() < 10 < 12 < cropped[0, :, 2].mean()


def test_predict_and_plot_read_images_as_the_models_run_evaluated_them(
    tmp_path, capsys, monkeypatch
):
    """A model trained with a whole-image preset (resnet_cifar) is evaluated on whole images;
    `predict` and `plot` of a file of its run read them so too (--augment auto), where a
    photo would otherwise be center-cropped."""
    for name in ("cat", "dog"):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i in range(3):
            _write(tmp_path / "pets" / name / f"{i}.png", 48, 64, seed=i + 3 * len(name))
    data = kr.data.load_dataset(
        tmp_path / "pets", "train", image_size=16, augment="resnet_cifar", batch_size=6
    )
    model = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=2)
    kr.train(model, data, epochs=1, output_dir=tmp_path / "run", verbose=0)
    run_model = str(tmp_path / "run" / "last.keras")
    image = str(tmp_path / "pets" / "cat" / "0.png")

    def printed(*argv):
        assert main(["predict", *argv, image, "--top-k", "1"]) == 0
        return capsys.readouterr().out

    trained = kr.load_model(run_model)
    whole, cropped = (predict(trained, [image], top_k=1, crop_ratio=r)[0][0] for r in (1.0, None))
    assert whole["score"] != pytest.approx(cropped["score"], abs=1e-4)  # the views differ
    assert f"{whole['score']:.3f}" in printed(run_model)  # auto: the run's preset
    assert f"{cropped['score']:.3f}" in printed(run_model, "--augment", "none")
    # A copy outside the run folder has no run to ask: the evaluation view, unless named.
    (tmp_path / "copy.keras").write_bytes(Path(run_model).read_bytes())
    assert f"{cropped['score']:.3f}" in printed(str(tmp_path / "copy.keras"))
    copy = str(tmp_path / "copy.keras")
    assert f"{whole['score']:.3f}" in printed(copy, "--augment", "resnet_cifar")
    # plot gives its figure the same whole image.
    seen = []
    monkeypatch.setattr(kr.viz, "plot_predictions", lambda m, images, *a, **k: seen.append(images))
    out = str(tmp_path / "p.png")
    assert main(["plot", "predictions", run_model, image, "--output", out]) == 0
    np.testing.assert_allclose(seen[0], load_images([image], (16, 16), crop_ratio=1.0))
    with pytest.raises(ValueError, match=r"crop_ratio=0\.1 .*0\.25"):
        predict(trained, [image], crop_ratio=0.1)


def test_load_images_keeps_own_sizes_for_none_and_refuses_a_mixed_batch(tmp_path):
    same = [_write(tmp_path / "a.png", 20, 24), _write(tmp_path / "b.png", 20, 24, seed=1)]
    assert load_images(same, (None, None)).shape == (2, 20, 24, 3)
    assert load_images(same, (None, 12)).shape == (2, 20, 12, 3)
    other = _write(tmp_path / "c.png", 8, 8)
    with pytest.raises(ValueError, match=r"images of different sizes \(.*'.*c.png': 8x8\)"):
        load_images([*same, other], (None, None))


def test_plot_reads_images_with_the_model_channels_and_own_size(tmp_path, capsys):
    grey = kr.build_resnet(
        8, stem="cifar", input_shape=(16, 16, 1), num_classes=3, preprocessing=None
    )
    grey.save(tmp_path / "grey.keras")
    image = _write(tmp_path / "rgb.png", 20, 20)
    output = tmp_path / "gradcam.png"
    argv = ["plot", "gradcam", str(tmp_path / "grey.keras"), image, "--output", str(output)]
    assert main(argv) == 0
    assert imread(output).shape[1] == 200  # one image panel
    any_size = kr.build_resnet(8, stem="cifar", input_shape=(None, None, 3), num_classes=3)
    any_size.save(tmp_path / "any.keras")
    argv[2], argv[-1] = str(tmp_path / "any.keras"), str(tmp_path / "any.png")
    assert main(argv) == 0 and (tmp_path / "any.png").is_file()


@pytest.mark.parametrize(
    "input_shape", [(None, None, 3), (16, 20, 3), (16, 16, 1)], ids=["any", "oblong", "grey"]
)
def test_evaluate_refuses_a_model_input_it_cannot_read_for(tmp_path, capsys, input_shape):
    preprocessing = None if input_shape[-1] == 1 else "cifar"
    model = kr.build_resnet(
        8, stem="cifar", input_shape=input_shape, num_classes=10, preprocessing=preprocessing
    )
    model.save(tmp_path / "m.keras")
    for extra in ([], ["--crops", "ten"]):
        assert main(["evaluate", str(tmp_path / "m.keras"), "--data", "digits", *extra]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and f"takes images of shape {input_shape}" in error[0]
        assert "RGB images at one side for it, (S, S, 3);" in error[0]


@pytest.mark.parametrize("input_shape", [(16, 20, 3), (16, 16, 1)], ids=["oblong", "grey"])
def test_few_shot_refuses_a_source_it_cannot_read_for_the_model(input_shape):
    model = kr.build_resnet(
        8, stem="cifar", input_shape=input_shape, num_classes=10, preprocessing=None
    )
    (x, y), _ = kr.data.load_digits()
    with pytest.raises(ValueError, match=rf"train: model .* shape {re.escape(str(input_shape))}"):
        kr.evaluation.few_shot(model, (x[:50], y[:50]), (x[:20], y[:20]), shots=1)
    # Batches of the wrong shape, given as a dataset, are named too.
    batches = tf.data.Dataset.from_tensor_slices((x[:50], y[:50])).batch(25)
    with pytest.raises(ValueError, match=r"train batch 1 has images of shape \(32, 32, 3\)"):
        kr.evaluation.few_shot(model, batches, batches, shots=1)


def test_few_shot_reads_a_source_at_its_own_size_for_a_model_of_any_size():
    model = kr.build_resnet(8, stem="cifar", input_shape=(None, None, 3), num_classes=10)
    (x, y), _ = kr.data.load_digits()
    accuracies = kr.evaluation.few_shot(model, (x[:60], y[:60]), (x[:30], y[:30]), shots=(1, 2))
    assert sorted(accuracies) == [1, 2] and all(0 <= a <= 1 for a in accuracies.values())


def test_export_calibrates_a_grey_model_on_a_folder(tmp_path):
    for i in range(4):
        (tmp_path / "data" / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        _write(tmp_path / "data" / "ab"[i % 2] / f"{i}.png", 20, 20, seed=i)
    grey = kr.build_resnet(
        8, stem="cifar", input_shape=(16, 16, 1), num_classes=2, preprocessing=None
    )
    result = kr.export(
        grey,
        tmp_path / "grey.tflite",
        format="tflite",
        quantization="int8",
        representative_data=tmp_path / "data",
    )
    assert result["checked"] and result["samples"] == 4


def test_multi_crop_scales_that_would_exhaust_memory_are_refused():
    model = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=4)
    images = np.zeros((3, 20, 24, 3), "float32")
    words = r"shorter side 100000 makes 3 20x24 image\(s\) 100000x120000, 36,000,000,000 pix"
    with pytest.raises(ValueError, match=words):
        kr.evaluation.multi_crop_predict(model, images, scales=(100_000,))
    with pytest.raises(ValueError, match=words):
        kr.evaluation.fully_convolutional_predict(model, images, scales=(16, 100_000))
    # The limit counts the batch: the same scale passes one image at a time.
    small = kr.evaluation.fully_convolutional_predict(model, images[:1], scales=(64,))
    assert small.shape == (1, 4)


def test_multi_crop_of_a_vit_of_any_size_names_the_way_to_fix_its_size():
    vit = tiny_vit(image_size=None, num_classes=3)
    with pytest.raises(ValueError, match=r"kr.resize_vit\(model, image_size=...\)"):
        kr.evaluation.multi_crop_predict(vit, np.zeros((2, 40, 40, 3)), scales=(36,))
    fixed = kr.resize_vit(vit, image_size=32)
    scores = kr.evaluation.multi_crop_predict(fixed, np.zeros((2, 40, 40, 3)), scales=(36,))
    assert scores.shape == (2, 3)
