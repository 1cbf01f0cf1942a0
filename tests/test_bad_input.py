"""Catalogue of bad inputs across the API, the CLI, data sources, training and export.

Each entry gets exactly one exception of a documented type (ValueError, FileNotFoundError) whose
message names the argument, the value given and what would be valid; through the CLI the same
mistakes print one line on stderr and exit with 2 (usage or input) or 1 (runtime failure).
"""

import json
import struct
import zipfile
import zlib
from dataclasses import dataclass
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_resvit as kr
from keras_resvit.cli import main
from keras_resvit.training.recipes import get_recipe
from tests.conftest import random_images, tiny_vit


@dataclass(frozen=True)
class Case:
    """`call(bad)` raises `expected` (an exception type), or is a CLI argv whose `main` returns
    `expected` (an exit code); `words` must all appear in the message."""

    id: str
    call: object
    expected: object
    words: tuple


def _png(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(random_images(1, 8, 8, seed=seed)[0].astype("uint8")).numpy())


def _huge_png(path, side=20_000):
    """A valid PNG header declaring side x side pixels: a few bytes that would decode to
    1.2 GB. Only the header is needed: nothing may decode it."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    ihdr = struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + ihdr + b"\x00\x00\x00\x00IEND\xaeB`\x82")


def _unsafe_callable(source, path):
    """A copy of the .keras file `source` whose config names `os.system` as an activation."""
    with zipfile.ZipFile(source) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    dense = next(entry for entry in config["config"]["layers"] if entry["class_name"] == "Dense")
    dense["config"]["activation"] = {
        "module": "os",
        "class_name": "function",
        "config": "system",
        "registered_name": "system",
    }
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """Cheap bad inputs on disk: corrupt and unsafe model files, broken image folders."""
    tmp = tmp_path_factory.mktemp("bad")
    model = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=3)
    model.save(tmp / "m.keras")
    data = (tmp / "m.keras").read_bytes()
    (tmp / "truncated.keras").write_bytes(data[: len(data) // 2])
    images = keras.Input((16, 16, 3))
    keras.Model(images, keras.layers.Lambda(lambda x: x * 2.0)(images)).save(tmp / "lambda.keras")
    (tmp / "corrupt.tflite").write_bytes(b"\x00garbage" * 16)
    (tmp / "corrupt.npz").write_bytes(b"PK\x03\x04garbage")
    (tmp / "corrupt.h5").write_bytes(b"\x89HDF\r\n\x1a\ngarbage")
    (tmp / "notes.txt").write_text("not an image")
    (tmp / "a_folder.tflite").mkdir()
    (tmp / "empty").mkdir()
    _png(tmp / "one_class" / "cat" / "a.png")
    for name in ("cat", "dog"):
        _png(tmp / "corrupt_folder" / name / "a.png")
    (tmp / "corrupt_folder" / "dog" / "broken.jpg").write_bytes(b"not a jpeg")
    for name in ("cat", "dog"):
        _png(tmp / "truncated_folder" / name / "a.png")
    jpeg = tf.io.encode_jpeg(random_images(1, 8, 8)[0].astype("uint8")).numpy()
    (tmp / "truncated_folder" / "dog" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    for name in ("cat", "dog"):
        _png(tmp / "huge_folder" / name / "a.png")
    _huge_png(tmp / "huge_folder" / "dog" / "bomb.png")
    _huge_png(tmp / "bomb.png")
    # A PNG signature, then garbage: its "size" (read where IHDR would be) is no size at all.
    (tmp / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage bytes, no chunks" * 4)
    model.save(tmp / "named.keras")
    (tmp / "named.classes.json").write_text('["cat", "dog"')
    model.save(tmp / "other.keras")
    model.save(tmp / "named3.keras")
    (tmp / "named3.classes.json").write_text(json.dumps(["ant", "bee", "cow"]))
    (tmp / "other.classes.json").write_text(json.dumps([str(i) for i in range(10)]))
    _unsafe_callable(tmp / "m.keras", tmp / "callable.keras")
    for name in ("cat", "dog", "fox"):
        _png(tmp / "split_folder" / "train" / name / "a.png")
    for name in ("cat", "cow"):
        _png(tmp / "split_folder" / "test" / name / "a.png")
    for name in ("cat", "fox"):
        _png(tmp / "cat_fox_folder" / name / "a.png")
        for split in ("train", "test"):
            _png(tmp / "cat_fox_split" / split / name / "a.png")
    features = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), include_top=False)
    features.save(tmp / "features.keras")
    (tmp / "junk.pth").write_bytes(b"\x80\x02junk")
    (tmp / "garbage.safetensors").write_bytes(b"\xff" * 100)
    (tmp / "empty.pth").write_bytes(b"")
    (tmp / "user_folder").mkdir()
    (tmp / "user_folder" / "notes.txt").write_text("mine")
    (tmp / "run_of_user").mkdir()
    (tmp / "run_of_user" / "history.csv").write_text("mine")
    x, y = random_images(8, 16, 16), np.arange(8) % 3
    return SimpleNamespace(
        tmp=tmp,
        model=model,
        ds=kr.data.load_dataset((x, y), "train", batch_size=4),
        x=x,
        y=y,
    )


def _train(bad, model=None, data=None, **kwargs):
    kwargs = {"epochs": 1, "output_dir": bad.tmp / "run", "verbose": 0, **kwargs}
    return kr.train(
        bad.model if model is None else model, bad.ds if data is None else data, **kwargs
    )


def _nan_classifier():
    """A classifier whose weights went NaN: every score it gives is NaN."""
    model = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=3)
    kernel = model.get_layer("predictions").kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    return model


def _quantized_classifier(mode="int8"):
    model = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=3)
    model.quantize(mode)
    return model


def _cat_dog_fox_classifier():
    model = kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=3)
    kr.files.set_class_names(model, ["cat", "dog", "fox"])
    return model


def _named_dataset(names):
    data = kr.data.load_dataset((random_images(4, 16, 16), np.arange(4) % 2), batch_size=2)
    data.class_names = names
    return data


def _dense_after_the_classifier():
    inputs = keras.Input((4,))
    scores = keras.layers.Dense(3, name="predictions")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="after")(scores))


V = ValueError
F = FileNotFoundError
CASES = [
    # Model builders: shapes the net cannot downsample, patch sizes, unknown names and values.
    Case("resnet_depth", lambda b: kr.build_resnet(21), V, ("depth=21", "[18, 34, 50")),
    Case("resnet_cifar_depth", lambda b: kr.build_resnet(21, stem="cifar"), V, ("6n+2",)),
    Case(
        "hybrid_backbone_a_list",
        lambda b: kr.build_hybrid_vit(["r50"]),
        V,
        ("backbone=['r50'] is not valid", "'r50_stage4'"),
    ),
    Case(
        "hybrid_unknown_keyword",
        lambda b: kr.build_hybrid_vit("r50", "Ti/16", image_size=32, stride=2),
        TypeError,
        ("build_hybrid_vit() got an unexpected keyword argument 'stride'", "'num_registers'"),
    ),
    Case(
        "vit_variant_superscript_patch",
        lambda b: kr.build_vit("B/\u00b2", image_size=32),
        V,
        ("variant='B/\u00b2' is not a ViT variant",),
    ),
    Case(
        "replace_head_output_after_the_classifier",
        lambda b: kr.replace_head(_dense_after_the_classifier(), 5),
        V,
        ("gives its output from layer(s) ['after']", "one output is the 'predictions'"),
    ),
    Case(
        "resize_vit_patch_of_a_lora_patch_embedding",
        lambda b: kr.resize_vit(kr.enable_lora(tiny_vit(), 2, ("conv",)), patch_size=4),
        V,
        ("patch_size=4", "has LoRA factors", "kr.merge_lora(model)"),
    ),
    Case(
        "position_embeddings_prefix_negative",
        lambda b: kr.models.vit.resample_position_embeddings(
            np.zeros((1, 17, 8)), (2, 2), num_prefix_tokens=-1
        ),
        V,
        ("num_prefix_tokens=-1", ">= 0"),
    ),
    Case(
        "position_embeddings_old_grid_mismatch",
        lambda b: kr.models.vit.resample_position_embeddings(
            np.zeros((1, 17, 8)), (2, 2), old_grid=(3, 3), num_prefix_tokens=1
        ),
        V,
        ("old_grid=(3, 3) holds 9 tokens", "has 16"),
    ),
    Case(
        "pi_resize_kernel_size_zero",
        lambda b: kr.models.vit.pi_resize_kernel(np.ones((4, 4, 3, 8)), 0),
        V,
        ("new_size=0", "positive int"),
    ),
    Case(
        "ten_crop_size_zero",
        lambda b: kr.data.ten_crop(b.x, 0),
        V,
        ("crop_size=0", "positive int"),
    ),
    Case(
        "ten_crop_one_image",
        lambda b: kr.data.ten_crop(b.x[0], 8),
        V,
        ("images of shape (16, 16, 3) are not a batch", "x[None]"),
    ),
    Case(
        "resize_shorter_side_zero",
        lambda b: kr.data.transforms.resize_shorter_side(b.x, 0),
        V,
        ("size=0", "positive int"),
    ),
    Case(
        "augmentation_seed_negative",
        lambda b: kr.data.get_augmentation("deit", 32, seed=-1),
        V,
        ("seed=-1", "[0, 2**32)"),
    ),
    Case(
        "write_class_names_a_string",
        lambda b: kr.files.write_class_names(b.tmp / "m.keras", "cat"),
        V,
        ("class_names='cat' must be a list of strings",),
    ),
    Case(
        "write_class_names_no_file_name",
        lambda b: kr.files.write_class_names("", ["a", "b"]),
        V,
        ("model_path=''", "is empty"),
    ),
    Case(
        "read_class_names_of_a_missing_file",
        lambda b: kr.files.read_class_names(b.tmp / "missing.h5"),
        F,
        ("model_path=", "missing.h5", "does not exist"),
    ),
    Case(
        "set_class_names_without_a_model",
        lambda b: kr.files.set_class_names(None, ["a"]),
        V,
        ("model of type NoneType", "keras.Model"),
    ),
    Case(
        "image_loader_fewer_class_names_than_labels",
        lambda b: kr.data.ImageLoader(images=b.x, labels=b.y, class_names=["a"], batch_size=2),
        V,
        ("class_names lists 1 classes", "labels go up to"),
    ),
    Case(
        "cli_few_shot_negative_seed",
        lambda b: ["few-shot", "resnet20", "--seed", "-1"],
        2,
        ("--seed", "'-1' is not valid", "[0, 2**32)"),
    ),
    Case(
        "multi_crop_evaluate_nan_scores",
        lambda b: kr.evaluation.multi_crop_evaluate(
            _nan_classifier(), (random_images(2, 16, 16), np.arange(2)), scales=(16,)
        ),
        V,
        ("model 'resnet8' gives NaN or infinite scores", "row 0"),
    ),
    Case(
        "predict_nan_scores",
        lambda b: kr.predict(_nan_classifier(), [b.tmp / "one_class" / "cat" / "a.png"]),
        V,
        ("model 'resnet8' gives NaN or infinite scores",),
    ),
    Case(
        "multi_crop_evaluate_other_classes",
        lambda b: kr.evaluation.multi_crop_evaluate(
            _cat_dog_fox_classifier(), _named_dataset(["cat", "fox"]), scales=(16,)
        ),
        V,
        ("data has classes ['cat', 'fox']", "label 1 means 'fox' in one and 'dog'"),
    ),
    Case(
        "few_shot_test_of_other_classes",
        lambda b: kr.evaluation.few_shot(
            kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=3),
            _named_dataset(["cat", "dog", "fox"]),
            _named_dataset(["cat", "fox"]),
            shots=1,
        ),
        V,
        ("test has classes ['cat', 'fox']", "label 1 means 'fox'"),
    ),
    Case(
        "few_shot_folders_of_other_classes",
        lambda b: kr.evaluation.few_shot(
            kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=3),
            b.tmp / "split_folder",
            b.tmp / "cat_fox_split",
            shots=1,
        ),
        V,
        ("test has classes ['cat', 'fox']", "['cat', 'dog', 'fox']", "label 1 means 'fox'"),
    ),
    Case(
        "grad_cam_of_a_quantized_classifier",
        lambda b: kr.viz.grad_cam(_quantized_classifier(), random_images(1, 16, 16)),
        V,
        ("quantized classifier (int8)", "before model.quantize"),
    ),
    Case(
        "cli_list_weights_of_models_without_any",
        lambda b: ["list", "--weights", "plain*"],
        2,
        ("no model matching 'plain*' has published weights",),
    ),
    Case(
        "cli_train_augment_none_capitalized",
        lambda b: ["train", "--augment", "None", "--output", str(b.tmp / "run")],
        2,
        ("--augment 'None' is not valid", "auto (the recipe's), none, or a preset"),
    ),
    Case(
        "cli_train_empty_data",
        lambda b: ["train", "--data", "", "--output", str(b.tmp / "run")],
        2,
        ("--data", "'' is not valid", "source or path"),
    ),
    Case(
        "cli_plot_empty_output",
        lambda b: ["plot", "curves", str(b.tmp / "history.csv"), "--output", " "],
        2,
        ("--output", "' ' is not valid"),
    ),
    Case("vgg_depth_float", lambda b: kr.build_vgg(16.0), V, ("depth=16.0 is not valid", "16")),
    Case(
        "vgg_pooling_with_its_classifier",
        lambda b: kr.build_vgg(11, input_shape=(32, 32, 3), num_classes=3, pooling="max"),
        V,
        ("pooling='max' applies only with include_top=False",),
    ),
    Case(
        "efficientnet_pooling_with_its_classifier",
        lambda b: kr.build_efficientnetv2("s", num_classes=3, pooling="avg"),
        V,
        ("pooling='avg' applies only with include_top=False",),
    ),
    Case(
        "resnet_input_too_small",
        lambda b: kr.build_resnet(18, input_shape=(16, 16, 3)),
        V,
        ("input_shape=(16, 16, 3)", "downsamples 32x", ">= 32"),
    ),
    Case(
        "resnet_input_rank",
        lambda b: kr.build_resnet(18, input_shape=(224, 224)),
        V,
        ("input_shape=(224, 224)", "(height, width, channels)"),
    ),
    Case(
        "resnet_input_float_size",
        lambda b: kr.build_resnet(20, stem="cifar", input_shape=(32.0, 32, 3)),
        V,
        ("input_shape=(32.0, 32, 3)", "int"),
    ),
    Case(
        "resnet_grey_with_rgb_preprocessing",
        lambda b: kr.build_resnet(18, input_shape=(64, 64, 1)),
        V,
        ("1 channels", "preprocessing='imagenet'", "needs 3"),
    ),
    Case("resnet_version", lambda b: kr.build_resnet(version="v3"), V, ("version='v3'", "'v2'")),
    Case("resnet_shortcut", lambda b: kr.build_resnet(shortcut="E"), V, ("shortcut='E'", "'D'")),
    Case("resnet_norm", lambda b: kr.build_resnet(norm="layer"), V, ("norm='layer'", "'group'")),
    Case("resnet_width", lambda b: kr.build_resnet(width=0), V, ("width=0", "positive")),
    Case("resnet_se_ratio", lambda b: kr.build_resnet(se_ratio=2), V, ("se_ratio=2", "(0, 1]")),
    Case(
        "resnet_include_top_string",
        lambda b: kr.build_resnet(include_top="no"),
        V,
        ("include_top='no'", "True or False"),
    ),
    Case(
        "resnet_num_classes",
        lambda b: kr.build_resnet(num_classes=0),
        V,
        ("num_classes=0", "positive int"),
    ),
    Case(
        "resnet_activation",
        lambda b: kr.build_resnet(classifier_activation="softmaxx"),
        V,
        ("classifier_activation='softmaxx'", "'softmax'"),
    ),
    Case(
        "vit_patch_does_not_divide",
        lambda b: kr.build_vit("Ti/16", image_size=40),
        V,
        ("image_size=40", "patch_size=16", "multiple of 16"),
    ),
    Case("vit_variant", lambda b: kr.build_vit("b/16"), V, ("variant='b/16'", "'B/16'")),
    Case(
        "vit_heads_do_not_divide_width",
        lambda b: kr.build_vit(
            None, hidden_size=30, num_layers=1, num_heads=4, mlp_dim=8, patch_size=8, image_size=32
        ),
        V,
        ("hidden_size=30", "num_heads=4"),
    ),
    Case("vit_dropout", lambda b: kr.build_vit(dropout=1.5), V, ("dropout=1.5", "[0, 1)")),
    Case(
        "vit_all_tokens_with_classifier",
        lambda b: kr.build_vit(pooling=None),
        V,
        ("pooling=None", "include_top=False"),
    ),
    Case(
        "vit_position_embedding",
        lambda b: kr.build_vit(position_embedding="rope"),
        V,
        ("position_embedding='rope'", "'sincos2d'"),
    ),
    # Registry and model utilities.
    Case(
        "unknown_model_name",
        lambda b: kr.create_model("resnet05"),
        V,
        ("name='resnet05'", "'resnet50'"),
    ),
    Case(
        "unknown_override",
        lambda b: kr.create_model("resnet20", depht=20),
        V,
        ("depht=20", "'depth'"),
    ),
    Case("list_models_pattern", lambda b: kr.list_models(5), V, ("pattern=5", "glob")),
    Case(
        "replace_head_classes",
        lambda b: kr.replace_head(b.model, 0),
        V,
        ("num_classes=0", "positive int"),
    ),
    # Class counts of a label that is an ID: a head of 10**9 outputs (256 GB of weights).
    Case(
        "replace_head_classes_of_an_id",
        lambda b: kr.replace_head(b.model, 10**9),
        V,
        ("num_classes=1000000000", "1 to 1,048,576", "np.unique"),
    ),
    Case(
        "create_model_classes_of_an_id",
        lambda b: kr.create_model("resnet20", num_classes=10**9),
        V,
        ("num_classes=1000000000", "1 to 1,048,576"),
    ),
    Case(
        "build_vit_classes_of_an_id",
        lambda b: kr.build_vit("Ti/16", image_size=32, num_classes=2**20 + 1),
        V,
        ("num_classes=1048577", "1 to 1,048,576"),
    ),
    Case(
        "replace_head_of_a_name",
        lambda b: kr.replace_head("resnet20", 10),
        V,
        ("model of type str", "keras.Model"),
    ),
    Case(
        "resize_vit_patch",
        lambda b: kr.resize_vit(tiny_vit(), 36),
        V,
        ("image_size=36", "patch size 8"),
    ),
    Case("resize_vit_of_a_resnet", lambda b: kr.resize_vit(b.model, 32), V, ("not a ViT",)),
    Case("count_macs_of_a_name", lambda b: kr.count_macs("resnet20"), V, ("model of type str",)),
    # Model files: missing, truncated, unsafe, wrong suffix, corrupt, another architecture.
    Case(
        "load_missing_file",
        lambda b: kr.load_model(b.tmp / "missing.keras"),
        F,
        ("missing.keras", ".keras file"),
    ),
    Case(
        "load_truncated_keras",
        lambda b: kr.load_model(b.tmp / "truncated.keras"),
        V,
        ("truncated.keras", "truncated or corrupt"),
    ),
    Case(
        "load_unsafe_lambda",
        lambda b: kr.load_model(b.tmp / "lambda.keras"),
        V,
        ("lambda.keras", "untrusted source", "kr.load_model(path, safe_mode=False)"),
    ),
    Case(
        "load_wrong_suffix",
        lambda b: kr.load_model(b.tmp / "corrupt.npz"),
        V,
        ("corrupt.npz", "suffix '.npz'", ".keras"),
    ),
    Case(
        "weights_of_another_architecture",
        lambda b: kr.create_model("resnet20", weights=b.tmp / "m.keras"),
        V,
        ("weights=", "m.keras", "does not fit model 'resnet20'"),
    ),
    Case(
        "weights_truncated_keras",
        lambda b: kr.create_model("resnet20", weights=b.tmp / "truncated.keras"),
        V,
        ("weights=", "truncated.keras", "truncated or corrupt"),
    ),
    Case(
        "weights_corrupt_npz",
        lambda b: kr.create_model("vit_ti16", weights=b.tmp / "corrupt.npz"),
        V,
        # NumPy's own words would suggest unpickling the file.
        ("weights=", "corrupt.npz", "not a readable .npz: its bytes are not a zip archive"),
    ),
    Case(
        "weights_corrupt_h5",
        lambda b: kr.create_model("resnet50", weights=b.tmp / "corrupt.h5"),
        V,
        ("weights=", "corrupt.h5", "not a readable HDF5"),
    ),
    Case(
        "predict_corrupt_tflite",
        lambda b: kr.predict(b.tmp / "corrupt.tflite", [b.tmp / "notes.txt"]),
        V,
        ("corrupt.tflite", "not a readable TF Lite file"),
    ),
    Case(
        "predict_undecodable_image",
        lambda b: kr.predict(b.tmp / "m.keras", [b.tmp / "notes.txt"]),
        V,
        ("notes.txt", "cannot be decoded: Unknown image file format. One of JPEG"),
    ),
    Case(
        "predict_one_path_not_a_list",
        lambda b: kr.predict(b.tmp / "m.keras", str(b.tmp / "notes.txt")),
        V,
        ("image_paths=", "notes.txt", "list of image files"),
    ),
    Case(
        "predict_top_k",
        lambda b: kr.predict(b.tmp / "m.keras", [b.tmp / "notes.txt"], top_k=0),
        V,
        ("top_k=0", "positive int"),
    ),
    # Data sources: folders, arrays, arguments.
    Case(
        "folder_empty",
        lambda b: kr.data.load_dataset(b.tmp / "empty", image_size=8),
        V,
        ("empty", "0 class sub-folder(s)", "at least 2 classes"),
    ),
    Case(
        "folder_one_class",
        lambda b: kr.data.load_dataset(b.tmp / "one_class", image_size=8),
        V,
        ("one_class", "1 class", "at least 2"),
    ),
    Case(
        "folder_corrupt_image_strict",
        lambda b: kr.data.load_dataset(b.tmp / "corrupt_folder", image_size=8, strict=True),
        V,
        ("broken.jpg", "strict=True"),
    ),
    Case(
        "folder_missing",
        lambda b: kr.data.load_dataset(b.tmp / "nowhere", image_size=8),
        F,
        ("nowhere", "no such folder"),
    ),
    Case(
        "labels_negative",
        lambda b: kr.data.load_dataset((b.x[:3], np.array([0, -1, 1]))),
        V,
        ("labels", "class indices", "-1"),
    ),
    Case(
        "labels_fractional",
        lambda b: kr.data.load_dataset((b.x[:3], np.array([0.0, 1.5, 1.0]))),
        V,
        ("labels", "class indices", "1.5"),
    ),
    Case(
        "images_without_channels",
        lambda b: kr.data.load_dataset((b.x[:3, ..., 0], b.y[:3])),
        V,
        ("(3, 16, 16)", "(N, height, width, channels)"),
    ),
    Case(
        "images_of_different_sizes",
        lambda b: kr.data.load_dataset(([b.x[0], b.x[1, :8, :8]], b.y[:2])),
        V,
        ("source images are arrays of different shapes", "image_size="),
    ),
    Case(
        "images_of_strings",
        lambda b: kr.data.load_dataset((np.full((2, 4, 4, 3), "x"), np.array([0, 1]))),
        V,
        ("dtype <U1", "pixel values"),
    ),
    Case("data_source_name", lambda b: kr.data.load_dataset("digitz"), V, ("source='digitz'",)),
    Case("data_split", lambda b: kr.data.load_dataset("digits", "val"), V, ("split='val'",)),
    Case(
        "data_dir_of_a_source_that_does_not_read_it",
        lambda b: kr.data.load_dataset("digits", data_dir=str(b.tmp)),
        V,
        ("data_dir=", "tensorflow-datasets sources", "source='digits' does not read it"),
    ),
    Case(
        "data_batch_size",
        lambda b: kr.data.load_dataset("digits", batch_size=0),
        V,
        ("batch_size=0", "positive int"),
    ),
    Case(
        "data_augment",
        lambda b: kr.data.load_dataset("digits", augment="randaug"),
        V,
        ("augment='randaug'", "'resnet_cifar'"),
    ),
    # Training.
    Case("train_epochs_zero", lambda b: _train(b, epochs=0), V, ("epochs=0", "positive int")),
    Case("train_epochs_negative", lambda b: _train(b, epochs=-3), V, ("epochs=-3", "positive")),
    Case("train_save_every", lambda b: _train(b, save_every=-1), V, ("save_every=-1",)),
    Case("train_recipe", lambda b: _train(b, recipe="sgd"), V, ("recipe='sgd'", "resnet_cifar")),
    Case(
        "vgg_dropout_without_its_head",
        lambda b: kr.build_vgg(11, include_top=False, dropout=0.9),
        V,
        ("dropout=0.9", "include_top=False leaves out"),
    ),
    Case(
        "vit_drop_path_of_a_single_block",
        lambda b: tiny_vit(num_layers=1, drop_path=0.5),
        V,
        ("drop_path=0.5 has no effect with num_layers=1", "drop_path=0.0"),
    ),
    Case(
        "create_model_hybrid_override_typo",
        lambda b: kr.create_model("r50_vit_b16", widht=2),
        V,
        ("override widht=2 is not an argument of build_hybrid_vit", "'hidden_size'"),
    ),
    Case(
        "create_model_vit_input_shape",
        lambda b: kr.create_model("vit_ti16", input_shape=(32, 32, 3)),
        V,
        ("override input_shape=(32, 32, 3) is not an argument of build_vit", "'image_size'"),
    ),
    Case(
        "resnet_width_of_no_filter",
        lambda b: kr.build_resnet(20, stem="cifar", width=0.01),
        V,
        ("width=0.01 leaves the first stage 0.16 filters", "width >= 0.0625 (1/16)"),
    ),
    Case(
        "resnet_channels_first_input_shape",
        lambda b: kr.build_resnet(20, stem="cifar", input_shape=(3, 32, 32)),
        V,
        ("input_shape=(3, 32, 32) reads as channels first", "input_shape=(32, 32, 3)"),
    ),
    Case(
        "train_sigmoid_head_with_a_softmax_recipe",
        lambda b: _train(
            b,
            kr.build_resnet(
                8, stem="cifar", input_shape=(16, 16, 3), classifier_activation="sigmoid"
            ),
        ),
        V,
        ("ends in a sigmoid", "softmax over the classes", 'classifier_activation="softmax"'),
    ),
    Case("train_verbose", lambda b: _train(b, verbose="loud"), V, ("verbose='loud'", "'auto'")),
    Case(
        "masked_patches_verbose",
        lambda b: kr.pretrain_masked_patches(tiny_vit(), (b.x, b.y), epochs=1, verbose=5),
        V,
        ("verbose=5", "'auto', 0, 1, 2"),
    ),
    Case(
        "train_learning_rate",
        lambda b: _train(b, learning_rate=-0.1),
        V,
        ("learning_rate=-0.1", "> 0"),
    ),
    Case("train_ema", lambda b: _train(b, ema=2.0), V, ("ema=2.0", "(0, 1)")),
    Case(
        "train_distribution",
        lambda b: _train(b, distribution="gpus"),
        V,
        ("distribution='gpus'", "'auto'"),
    ),
    Case(
        "train_precision", lambda b: _train(b, precision="fp8"), V, ("precision='fp8'", "'float32'")
    ),
    Case(
        "train_labels_out_of_range",
        lambda b: _train(
            b, kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=2)
        ),
        V,
        ("labels up to 2", "2 outputs", "replace_head"),
    ),
    Case(
        "train_unbatched_data",
        lambda b: _train(b, data=b.ds.unbatch()),
        V,
        ("train_data", "batch the dataset"),
    ),
    Case(
        "train_data_of_dicts",
        lambda b: _train(b, data=b.ds.map(lambda x, y: ({"image": x}, y))),
        V,
        ("train_data yields", "not a dict", "x['image']"),
    ),
    Case(
        "train_data_with_sample_weights",
        lambda b: _train(b, data=b.ds.map(lambda x, y: (x, y, y * 0 + 1))),
        V,
        ("train_data yields", "drop the third element"),
    ),
    Case(
        "train_data_channels_first",
        lambda b: _train(b, data=b.ds.map(lambda x, y: (tf.transpose(x, (0, 3, 1, 2)), y))),
        V,
        ("train_data has images of shape (4, 3, 16, 16)", "channels first"),
    ),
    Case(
        "load_dataset_validation_split_of_arrays",  # named by their shapes, not their values
        lambda b: kr.data.load_dataset((b.x, b.y), "train", validation_split=0.2),
        V,
        ("arrays of shapes [(8, 16, 16, 3), (8,)]> has its own splits",),
    ),
    Case(
        "load_dataset_missing_bare_folder_name",
        lambda b: kr.data.load_dataset("flowers_nowhere", "train"),
        V,
        ("source='flowers_nowhere' is neither a known source nor an existing folder",),
    ),
    Case("train_empty_data", lambda b: _train(b, data=b.ds.take(0)), V, ("0 batches",)),
    Case(
        "train_val_data_list",
        lambda b: _train(b, val_data=[b.x, b.y]),
        V,
        ("val_data of type list", "tf.data.Dataset"),
    ),
    Case(
        "train_output_dir_is_a_file",
        lambda b: _train(b, output_dir=b.tmp / "notes.txt"),
        V,
        ("output_dir=", "notes.txt", "not a folder"),
    ),
    Case(
        "train_output_dir_empty",
        lambda b: _train(b, output_dir=""),
        V,
        ("output_dir=''", "is empty", "current folder"),
    ),
    Case(
        "train_output_dir_under_a_file",
        lambda b: _train(b, output_dir=b.tmp / "notes.txt" / "run"),
        V,
        ("output_dir=", "cannot be written", "is a file"),
    ),
    # Export.
    Case(
        "export_format",
        lambda b: kr.export(b.model, b.tmp / "x.tflite", format="coreml"),
        V,
        ("format='coreml'", "'onnx'"),
    ),
    Case(
        "export_int8_without_data",
        lambda b: kr.export(b.model, b.tmp / "x.tflite", quantization="int8"),
        V,
        ("representative_data", "digits"),
    ),
    Case(
        "export_calibration_nothing_reads",
        lambda b: kr.export(b.model, b.tmp / "x.tflite", representative_data=b.x, check=False),
        V,
        ("representative_data", "quantization=None and check=False", "nothing would read it"),
    ),
    Case(
        "export_truncated_keras",
        lambda b: kr.export(b.tmp / "truncated.keras", b.tmp / "x.tflite"),
        V,
        ("model_or_path=", "truncated.keras", "truncated or corrupt"),
    ),
    Case(
        "export_missing_keras",
        lambda b: kr.export(b.tmp / "missing.keras", b.tmp / "x.tflite"),
        F,
        ("missing.keras",),
    ),
    Case(
        "export_unsafe_keras",
        lambda b: kr.export(b.tmp / "lambda.keras", b.tmp / "x.tflite"),
        V,
        ("lambda.keras", "safe_mode=False"),
    ),
    Case(
        "export_output_is_a_folder",
        lambda b: kr.export(b.model, b.tmp / "a_folder.tflite"),
        V,
        ("path=", "a_folder.tflite", "is a folder"),
    ),
    Case(
        "export_output_under_a_file",
        lambda b: kr.export(b.model, b.tmp / "notes.txt" / "x.tflite"),
        V,
        ("path=", "cannot be written", "is a file"),
    ),
    Case(
        "export_unknown_input_size",
        lambda b: kr.export(
            kr.build_resnet(8, stem="cifar", input_shape=(None, None, 3)), b.tmp / "x.tflite"
        ),
        V,
        ("input_shape=(None, None, 3)", "fixed"),
    ),
    Case(
        "export_saved_model_over_user_files",
        lambda b: kr.export(b.model, b.tmp / "user_folder", format="saved_model"),
        V,
        ("path=", "user_folder", "not an earlier SavedModel", "notes.txt"),
    ),
    Case(
        "export_saved_model_to_a_file_name",
        lambda b: kr.export(b.model, b.tmp / "x.tflite", format="saved_model"),
        V,
        ("x.tflite", "writes a folder"),
    ),
    # Files and data the package must not trust blindly.
    Case(
        "load_unsafe_callable",
        lambda b: kr.load_model(b.tmp / "callable.keras"),
        V,
        ("callable.keras", "refused as unsafe", "'system'", "custom_objects"),
    ),
    Case(
        "predict_corrupt_class_names",
        lambda b: kr.predict(b.tmp / "named.keras", [b.tmp / "notes.txt"]),
        V,
        ("named.classes.json", "unreadable or corrupt", "not JSON", "JSON list of class names"),
    ),
    Case(
        "predict_class_names_of_another_model",
        lambda b: kr.predict(b.tmp / "other.keras", [b.tmp / "one_class" / "cat" / "a.png"]),
        V,
        ("other.classes.json", "10 classes", "3 outputs"),
    ),
    Case(
        "export_class_names_count",
        lambda b: kr.export(b.model, b.tmp / "x.tflite", class_names=["cat", "dog"]),
        V,
        ("class_names list 2 classes", "3 outputs"),
    ),
    Case(
        "predict_decompression_bomb",
        lambda b: kr.predict(b.tmp / "m.keras", [b.tmp / "bomb.png"]),
        V,
        ("bomb.png", "20000x20000 pixels", "MAX_IMAGE_PIXELS"),
    ),
    Case(
        "export_a_file_to_a_path_ending_with_a_slash",
        lambda b: kr.export(b.model, f"{b.tmp}/slash.tflite/"),
        V,
        ("slash.tflite/'", "ends with a slash", "format='tflite' writes a file"),
    ),
    Case(
        "predict_with_a_model_of_another_type",
        lambda b: kr.predict(object(), [b.tmp / "bomb.png"]),
        V,
        ("model of type object", "keras.Model", ".tflite", "NAME:WEIGHTS"),
    ),
    Case(
        "predict_with_a_folder",
        lambda b: kr.predict(b.tmp / "one_class", [b.tmp / "bomb.png"]),
        V,
        ("one_class' is a folder", "kr.export"),
    ),
    Case(
        "predict_png_with_a_garbage_header",
        lambda b: kr.predict(b.tmp / "m.keras", [b.tmp / "garbage.png"]),
        V,
        ("garbage.png", "cannot be decoded", "Invalid PNG"),
    ),
    Case(
        "folder_decompression_bomb_strict",
        lambda b: kr.data.load_dataset(b.tmp / "huge_folder", image_size=8, strict=True),
        V,
        ("bomb.png", "20000x20000 pixels", "strict=True"),
    ),
    Case(
        "folder_truncated_jpeg_strict",
        lambda b: kr.data.load_dataset(b.tmp / "truncated_folder", image_size=8, strict=True),
        V,
        ("cut.jpg", "truncated", "strict=True"),
    ),
    Case(
        "images_with_nan_pixels",
        lambda b: kr.data.load_dataset((np.where(b.x == b.x[3, 0, 0, 0], np.nan, b.x), b.y)),
        V,
        ("NaN or infinite pixels", "image 3"),
    ),
    Case(
        "train_model_without_classifier",
        lambda b: _train(
            b,
            kr.build_resnet(
                8, stem="cifar", input_shape=(16, 16, 3), include_top=False, pooling="avg"
            ),
        ),
        V,
        ("GlobalAveragePooling2D", "not a classifier", "include_top=True"),
    ),
    Case(
        "train_val_data_of_another_size",
        lambda b: _train(b, val_data=kr.data.load_dataset((b.x[:, :8, :8], b.y), "test")),
        V,
        ("val_data has 8x8 images", "takes 16x16", "image_size=16"),
    ),
    Case(
        "train_val_data_with_more_classes",
        lambda b: _train(b, val_data=kr.data.load_dataset((b.x, np.arange(8) % 5), "test")),
        V,
        ("val_data has 5 classes", "3 outputs"),
    ),
    Case(
        "train_over_user_files",
        lambda b: _train(b, output_dir=b.tmp / "run_of_user"),
        V,
        ("output_dir=", "run_of_user", "history.csv", "did not write"),
    ),
    Case("train_overwrite", lambda b: _train(b, overwrite="yes"), V, ("overwrite='yes'",)),
    Case(
        "train_tensorboard_not_installed",
        lambda b: _train(b, tensorboard=True),
        ImportError,
        ("tensorboard=True", "pip install tensorboard"),
    ),
    Case(
        "train_val_data_augmented",
        lambda b: _train(b, val_data=kr.data.load_dataset((b.x, b.y), augment="resnet_cifar")),
        V,
        ("val_data is augmented", "validation scores", "training=False"),
    ),
    Case(
        "multi_crop_evaluate_augmented_data",
        lambda b: kr.evaluation.multi_crop_evaluate(
            b.model, kr.data.load_dataset((b.x, b.y), augment="resnet_cifar"), scales=(16,)
        ),
        V,
        ("data is augmented", "the accuracies", "training=False"),
    ),
    Case(
        "few_shot_of_an_augmented_test_split",
        lambda b: kr.evaluation.few_shot(
            b.model, b.ds, kr.data.load_dataset((b.x, b.y), augment="resnet_cifar"), shots=1
        ),
        V,
        ("test is augmented", "training=False"),
    ),
    Case(
        "load_dataset_of_oblong_arrays_without_a_size",
        lambda b: kr.data.load_dataset((b.x[:, :, :12], b.y)),
        V,
        ("image_size=None", "images are 16x12, not square", "image_size=<int>"),
    ),
    Case(
        "train_on_oblong_arrays",
        lambda b: _train(b, data=(b.x[:, :, :12], b.y)),
        V,
        ("train_data holds 16x12 images, not square", "image_size=<int>"),
    ),
    Case(
        "load_dataset_of_a_file",
        lambda b: kr.data.load_dataset(b.tmp / "corrupt.npz"),
        V,
        ("corrupt.npz' is a file, not a folder", "(images, labels)", "np.load"),
    ),
    Case(
        "load_dataset_of_a_digits_path",
        lambda b: kr.data.load_dataset(b.tmp / "digits"),
        FileNotFoundError,
        ("digits': no such folder", "the string 'digits'"),
    ),
    Case(
        "load_dataset_training_not_a_bool",
        lambda b: kr.data.load_dataset("digits", training="no"),
        V,
        ("training='no'",),
    ),
    Case(
        "load_dataset_drop_remainder_of_no_batch",
        lambda b: kr.data.load_dataset("digits", "test", batch_size=512, drop_remainder=True),
        V,
        ("360 examples per process make no batch of 512", "drop_remainder=True"),
    ),
    Case(
        "train_val_data_empty",
        lambda b: _train(b, val_data=b.ds.take(0)),
        V,
        ("val_data is empty",),
    ),
    Case(
        "train_val_data_repeating_forever",
        lambda b: _train(b, val_data=b.ds.repeat()),
        V,
        ("val_data repeats forever", "finite"),
    ),
    Case(
        "train_val_data_of_other_classes",
        lambda b: _train(
            b,
            kr.build_resnet(8, stem="cifar", input_shape=(16, 16, 3), num_classes=5),
            data=kr.data.load_dataset(b.tmp / "split_folder", image_size=16, batch_size=2),
            val_data=kr.data.load_dataset(b.tmp / "cat_fox_folder", "train", image_size=16),
        ),
        V,
        ("val_data has classes ['cat', 'fox']", "['cat', 'dog', 'fox']", "label 1 means 'fox'"),
    ),
    Case(
        "train_labels_of_shape_batch_1",
        lambda b: _train(b, data=tf.data.Dataset.from_tensor_slices((b.x, b.y[:, None])).batch(4)),
        V,
        ("labels of dtype int64 and shape (None, 1)", "Squeeze"),
    ),
    Case(
        "train_string_labels",
        lambda b: _train(
            b, data=tf.data.Dataset.from_tensor_slices((b.x, b.y.astype(str))).batch(4)
        ),
        V,
        ("labels of dtype string", "class indices"),
    ),
    Case(
        "train_integer_one_hot_labels",
        lambda b: _train(
            b, data=tf.data.Dataset.from_tensor_slices((b.x, np.eye(3, dtype=int)[b.y])).batch(4)
        ),
        V,
        ("labels of dtype int64 and shape (None, 3)", "cast one-hot labels to float32"),
    ),
    Case(
        "folder_split_with_a_class_train_lacks",
        lambda b: kr.data.load_dataset(b.tmp / "split_folder", "test", image_size=8),
        V,
        ("['cow']", "train", "classes of the training split"),
    ),
    Case(
        "predict_with_a_feature_model",
        lambda b: kr.predict(b.tmp / "features.keras", [b.tmp / "one_class" / "cat" / "a.png"]),
        V,
        ("not a classifier", "predict ranks classes"),
    ),
    Case(
        "export_calibration_in_zero_one",
        lambda b: kr.export(
            b.model, b.tmp / "x.tflite", quantization="int8", representative_data=b.x / 255.0
        ),
        V,
        ("representative_data images range from", "multiply [0, 1] images by 255"),
    ),
    Case(
        "export_calibration_is_a_file",
        lambda b: kr.export(
            b.model, b.tmp / "x.tflite", quantization="int8", representative_data=b.tmp / "bomb.png"
        ),
        V,
        ("representative_data=", "bomb.png", "is a file"),
    ),
    Case(
        "multi_crop_labels_out_of_range",
        lambda b: kr.evaluation.multi_crop_evaluate(
            b.model, (b.x[:2], np.array([0, 7])), scales=(16,)
        ),
        V,
        ("labels [0 7]", "[0, 3)"),
    ),
    Case(
        "few_shot_test_classes_the_pool_lacks",
        lambda b: kr.evaluation.few_shot(b.model, (b.x, b.y % 2), (b.x[:4], b.y[:4]), shots=1),
        V,
        (
            "test has classes ['0', '1', '2'] but train has ['0', '1']",
            "3 classes where train has 2, so label 2 ('2') names no class of train",
        ),
    ),
    Case(
        "few_shot_unnamed_test_classes_the_pool_lacks",
        lambda b: kr.evaluation.few_shot(
            b.model,
            tf.data.Dataset.from_tensor_slices((b.x, b.y % 2)).batch(8),
            tf.data.Dataset.from_tensor_slices((b.x[:4], b.y[:4])).batch(4),
            shots=1,
        ),
        V,
        ("test has labels [2] that train lacks", "classes it was fit on ([0, 1])"),
    ),
    Case(
        "few_shot_one_class",
        lambda b: kr.evaluation.few_shot(b.model, (b.x, b.y * 0), (b.x, b.y * 0), shots=1),
        V,
        ("train has labels of one class (0)", "at least two"),
    ),
    Case(
        "few_shot_missing_folder_named_by_its_argument",
        lambda b: kr.evaluation.few_shot(b.model, (b.x, b.y), b.tmp / "no_such_dir", shots=1),
        F,
        ("test='", "no_such_dir': no such folder"),
    ),
    Case(
        "export_calibration_folder_missing_named_by_its_argument",
        lambda b: kr.export(
            b.model,
            b.tmp / "calibrated.tflite",
            quantization="int8",
            representative_data="tfds:",
        ),
        V,
        ("representative_data='tfds:'", "tfds:<name>"),
    ),
    Case(
        "pretrain_missing_folder_named_by_its_argument",
        lambda b: kr.pretrain_masked_patches(tiny_vit(), b.tmp / "no_such_dir", epochs=1),
        F,
        ("data='", "no_such_dir': no such folder"),
    ),
    Case(
        "export_of_a_keras_quantized_model_to_tflite",
        lambda b: kr.export(_quantized_classifier(), b.tmp / "quantized.tflite"),
        V,
        ("is quantized by model.quantize (int8)", "format='tflite'", 'quantization="int8"'),
    ),
    Case(
        "lora_on_a_float8_model",
        lambda b: kr.enable_lora(_quantized_classifier("float8"), 2, ("head",)),
        V,
        ("layer 'predictions' is quantized (float8)", "before model.quantize"),
    ),
    Case(
        "few_shot_nan_pixels",
        lambda b: kr.evaluation.few_shot(
            b.model, (np.full_like(b.x, np.nan), b.y), (b.x, b.y), shots=1
        ),
        V,
        ("NaN or infinite pixels",),
    ),
    Case(
        "weights_junk_pth",
        lambda b: kr.create_model("resnet18", weights=b.tmp / "junk.pth"),
        V,
        ("junk.pth", "not a readable state dict"),
    ),
    Case(
        "weights_empty_pth",
        lambda b: kr.create_model("resnet18", weights=b.tmp / "empty.pth"),
        V,
        ("empty.pth", "not a readable state dict"),
    ),
    Case(
        "train_grey_images_for_an_rgb_model",
        lambda b: _train(b, data=kr.data.load_dataset((b.x[..., :1], b.y), batch_size=4)),
        V,
        ("train_data has 1-channel images", "takes 3 channels"),
    ),
    Case(
        "train_one_class",
        lambda b: kr.train("resnet20", (b.x, b.y * 0), epochs=1, output_dir=b.tmp / "one"),
        V,
        ("train_data has labels of one class", "at least two"),
    ),
    # /proc takes no new folders, even from root (whom file modes do not stop).
    Case(
        "cli_train_output_that_cannot_be_created",
        lambda b: ["train", "--output", "/proc/keras_resvit_run", "--epochs", "1"],
        2,
        ("--output: the folder '/proc/keras_resvit_run' cannot be created",),
    ),
    Case(
        "save_model_into_a_folder_that_cannot_be_created",
        lambda b: kr.files.save_model(b.model, "/proc/keras_resvit/m.keras"),
        V,
        ("path: the folder '/proc/keras_resvit' cannot be created", "a folder you can write"),
    ),
    Case(
        "arrays_channels_first",
        lambda b: kr.data.load_dataset((np.zeros((4, 3, 8, 8)), np.arange(4) % 2)),
        V,
        ("(4, 3, 8, 8): channels first", "images.transpose(0, 2, 3, 1)", "(4, 8, 8, 3)"),
    ),
    Case(
        "masked_patches_batch_over_the_data",
        lambda b: kr.pretrain_masked_patches(tiny_vit(), (b.x, b.y), epochs=1, batch_size=100),
        V,
        ("batch_size=100 is larger than the 8 images of data", "at most 8"),
    ),
    Case(
        "masked_patches_over_user_files",
        lambda b: kr.pretrain_masked_patches(
            tiny_vit(), (b.x, b.y), epochs=1, output_dir=b.tmp / "run_of_user"
        ),
        V,
        ("output_dir=", "run_of_user", "history.csv", "did not write"),
    ),
    Case(
        "export_class_names_not_strings",
        lambda b: kr.export(b.model, b.tmp / "x.tflite", class_names=[0, 1, 2]),
        V,
        ("class_names=[0, 1, 2]", "list of strings"),
    ),
    Case(
        "export_calibration_with_nan",
        lambda b: kr.export(
            b.model,
            b.tmp / "x.tflite",
            quantization="int8",
            representative_data=np.full((2, 16, 16, 3), np.nan, "float32"),
        ),
        V,
        ("representative_data", "NaN"),
    ),
    # The CLI: one line on stderr, exit code 2 for usage and input errors, 1 at runtime.
    Case(
        "cli_evaluate_data_with_more_classes",
        lambda b: ["evaluate", str(b.tmp / "m.keras"), "--data", "digits"],
        2,
        ("--data digits has 10 classes", "3 outputs"),
    ),
    Case(
        "cli_evaluate_unknown_augment",
        lambda b: ["evaluate", str(b.tmp / "m.keras"), "--augment", "resnet_cifr"],
        2,
        ("--augment 'resnet_cifr'", "auto", "resnet_cifar"),
    ),
    Case(
        "cli_evaluate_validation_split_of_a_split_folder",
        lambda b: [
            "evaluate",
            str(b.tmp / "m.keras"),
            "--data",
            str(b.tmp / "split_folder"),
            "--split",
            "test",
            "--validation-split",
            "0.2",
        ],  # fmt: skip
        2,
        ("--validation-split 0.2 would have no effect", "own test/ folder"),
    ),
    Case(
        "load_dataset_validation_split_of_digits",
        lambda b: kr.data.load_dataset("digits", "test", validation_split=0.2),
        V,
        ("validation_split=0.2", "source='digits' has its own splits"),
    ),
    Case(
        "cli_export_suffix_contradicts_format",
        lambda b: ["export", str(b.tmp / "m.keras"), str(b.tmp / "y.tflite"), "--format", "onnx"],
        2,
        ("y.tflite", ".onnx"),
    ),
    Case(
        "cli_export_int8_without_calibration",  # named as the command's flags, not the API's
        lambda b: [
            "export",
            str(b.tmp / "m.keras"),
            str(b.tmp / "y.tflite"),
            "--quantization",
            "int8",
        ],  # fmt: skip
        2,
        ("--quantization int8 needs --calibration", "digits"),
    ),
    Case(
        "cli_export_missing_model",
        lambda b: ["export", str(b.tmp / "none.keras"), str(b.tmp / "y.tflite")],
        2,
        ("MODEL '", "none.keras' is not a file"),
    ),
    Case(
        "cli_export_unknown_suffix",
        lambda b: ["export", str(b.tmp / "m.keras"), str(b.tmp / "y.h5")],
        2,
        ("y.h5", ".tflite or .onnx file, or a folder"),
    ),
    Case(
        "cli_evaluate_a_feature_model",
        lambda b: ["evaluate", str(b.tmp / "features.keras"), "--data", "digits"],
        2,
        ("not a classifier", "evaluate scores class labels"),
    ),
    Case(
        "cli_evaluate_data_of_other_class_names",
        lambda b: [
            "evaluate",
            str(b.tmp / "named3.keras"),
            "--data",
            str(b.tmp / "split_folder" / "train"),
            "--split",
            "train",
        ],
        2,
        ("--data", "['cat', 'dog', 'fox']", "['ant', 'bee', 'cow']", "label 0 means"),
    ),
    Case(
        "cli_plot_curves_of_a_model_file",
        lambda b: ["plot", "curves", str(b.tmp / "m.keras"), "--output", str(b.tmp / "c.png")],
        2,
        ("m.keras", "not a history.csv"),
    ),
    Case("cli_unknown_model", lambda b: ["info", "resnet05"], 2, ("name='resnet05'", "resnet50")),
    Case("cli_no_match", lambda b: ["list", "nothing*"], 2, ("pattern='nothing*'",)),
    Case(
        "cli_image_too_small",
        lambda b: ["info", "resnet50", "--image-size", "8"],
        2,
        ("input_shape=(8, 8, 3)", ">= 32"),
    ),
    Case(
        "cli_zero_epochs",
        lambda b: ["train", "--epochs", "0"],
        2,
        ("--epochs", "'0'", "positive int"),
    ),
    Case(
        "cli_negative_batch_size",
        lambda b: ["evaluate", "m.keras", "--batch-size", "-4"],
        2,
        ("--batch-size", "'-4'", "positive int"),
    ),
    Case("cli_unknown_command", lambda b: ["fit"], 2, ("invalid choice", "'fit'", "train")),
    Case(
        "cli_missing_model_file",
        lambda b: ["evaluate", str(b.tmp / "missing.keras")],
        2,
        ("missing.keras", "not a file"),
    ),
    Case(
        "cli_unsafe_model_file",
        lambda b: ["export", str(b.tmp / "lambda.keras"), str(b.tmp / "x.tflite")],
        2,
        ("lambda.keras", "safe_mode=False"),
    ),
    Case(
        "cli_corrupt_tflite",
        lambda b: ["predict", str(b.tmp / "corrupt.tflite"), str(b.tmp / "notes.txt")],
        2,
        ("corrupt.tflite", "TF Lite"),
    ),
    # Values that used to pass silently or fail deep inside NumPy, TensorFlow or pathlib.
    Case(
        "labels_beyond_int32",
        lambda b: kr.data.load_dataset((b.x[:3], np.array([0, 2**32 + 1, 1]))),
        V,
        ("labels", "below 1,048,576", "4294967297", "np.unique"),
    ),
    Case(
        # A label that is an ID: its 10**9 + 1 implied class names filled the memory until
        # the process was killed.
        "labels_that_are_ids",
        lambda b: kr.data.load_dataset((b.x[:3], np.array([0, 10**9, 1]))),
        V,
        ("labels", "1000000000", "np.unique(labels, return_inverse=True)"),
    ),
    Case(
        "labels_that_are_ids_through_train",
        lambda b: _train(b, data=(b.x[:3], np.array([0, 10**9, 1]))),
        V,
        ("labels", "1000000000", "np.unique"),
    ),
    Case(
        "data_seed_negative",
        lambda b: kr.data.load_dataset("digits", seed=-1),
        V,
        ("seed=-1", "[0, 2**32)"),
    ),
    Case("train_seed_negative", lambda b: _train(b, seed=-1), V, ("seed=-1", "[0, 2**32)")),
    Case(
        "folder_seed_not_an_int",
        lambda b: kr.data.list_image_folder(b.tmp / "cat_fox_folder", seed=[1]),
        V,
        ("seed=[1]", "[0, 2**32)"),
    ),
    Case(
        "data_crop_ratio_tiny",
        lambda b: kr.data.load_dataset("digits", "test", crop_ratio=1e-6),
        V,
        ("crop_ratio=1e-06", "[0.25, 1]"),
    ),
    Case(
        "data_tfds_no_name", lambda b: kr.data.load_dataset("tfds:"), V, ("'tfds:'", "tfds:<name>")
    ),
    Case(
        "numpy_int_num_classes",
        lambda b: kr.build_resnet(8, stem="cifar", num_classes=np.int64(10)),
        V,
        ("num_classes=np.int64(10)", "positive int", "pass .item()"),
    ),
    # Every argument a config saves names a NumPy scalar alike (depth and widths had no hint).
    Case(
        "numpy_int_depth",
        lambda b: kr.build_resnet(np.int64(8), stem="cifar"),
        V,
        ("depth=np.int64(8)", "pass .item()"),
    ),
    Case(
        "numpy_float_se_ratio",
        lambda b: kr.build_resnet(8, stem="cifar", se_ratio=np.float32(0.25)),
        V,
        ("se_ratio=np.float32(0.25)", "pass .item()"),
    ),
    Case(
        "numpy_int_in_input_shape",
        lambda b: kr.build_resnet(8, stem="cifar", input_shape=(np.int64(32), 32, 3)),
        V,
        ("input_shape=(np.int64(32), 32, 3)", "tuple(map(int, shape))"),
    ),
    Case(
        "numpy_int_vit_image_size",
        lambda b: kr.build_vit("Ti/16", image_size=np.int64(32)),
        V,
        ("image_size=np.int64(32)", "pass .item()"),
    ),
    Case(
        "recipe_learning_rate_negative",
        lambda b: _train(b, recipe=get_recipe("resnet_cifar", learning_rate=-0.1)),
        V,
        ("Recipe: learning_rate=-0.1", "> 0"),
    ),
    Case(
        "train_output_dir_none",
        lambda b: _train(b, output_dir=None),
        V,
        ("output_dir=None", "str or pathlib.Path"),
    ),
    Case("export_path_none", lambda b: kr.export(b.model, None), V, ("path=None", "not a path")),
    Case("load_model_none", lambda b: kr.load_model(5), V, ("path=5", "not a path")),
    Case(
        "load_model_custom_objects_list",
        lambda b: kr.load_model(b.tmp / "m.keras", custom_objects=[abs]),
        V,
        ("custom_objects=[<built-in function abs>]", "a dict"),
    ),
    Case(
        "predict_pixels_for_paths",
        lambda b: kr.predict(b.tmp / "m.keras", b.x[:2]),
        V,
        ("image_paths=", "list of image files", "model.predict(images)"),
    ),
    Case(
        "digits_test_fraction",
        lambda b: kr.data.load_digits(test_fraction=1.5),
        V,
        ("test_fraction=1.5", "[0.006, 0.994]"),
    ),
    Case("digits_seed", lambda b: kr.data.load_digits(seed="a"), V, ("seed='a'", "int")),
    Case(
        "model_name_not_a_str",
        lambda b: kr.create_model(["resnet20"]),
        V,
        ("name=['resnet20']", "a registry name (a str)"),
    ),
    Case(
        "mixing_smoothing_bool",
        lambda b: kr.data.Mixing(label_smoothing=True),
        V,
        ("Mixing: label_smoothing=True", "[0, 1]"),
    ),
    # Layers: values that trained on NaN or dropped the wrong tokens without a word.
    Case("layer_drop_path_one", lambda b: kr.layers.DropPath(1.0), V, ("rate=1.0", "[0, 1)")),
    Case(
        "layer_drop_tokens_negative",
        lambda b: kr.layers.DropTokens(-1, 1),
        V,
        ("DropTokens: start=-1", ">= 0"),
    ),
    Case(
        "layer_drop_tokens_beyond_the_tokens",
        lambda b: kr.layers.DropTokens(4, 3)(keras.ops.ones((2, 5, 8))),
        V,
        ("DropTokens", "(2, 5, 8)", "start + num_tokens=7"),
    ),
    Case(
        "layer_class_token_rank",
        lambda b: kr.layers.ClassToken()(keras.ops.ones((2, 8))),
        V,
        ("ClassToken", "(2, 8)", "(batch, tokens, dim)"),
    ),
    Case(
        "layer_token_pooling_rank",
        lambda b: kr.layers.TokenPooling()(keras.ops.ones((2, 8))),
        V,
        ("TokenPooling", "(2, 8)", "(batch, tokens, dim)"),
    ),
    Case(
        "layer_attention_rank",
        lambda b: kr.layers.MultiHeadSelfAttention(2, 4)(
            keras.ops.ones((2, 8)), keras.ops.ones((2, 8))
        ),
        V,
        ("MultiHeadSelfAttention", "(2, 8)", "(batch, tokens, dim)"),
    ),
    Case(
        "augment_reversed_value_range",
        lambda b: kr.layers.ColorJitter(0.1, value_range=(255, 0)),
        V,
        ("ColorJitter: value_range=(255, 0)", "low < high"),
    ),
    Case(
        "augment_equalization_bins",
        lambda b: kr.layers.Equalization(bins=0),
        V,
        ("Equalization: bins=0", ">= 2"),
    ),
    Case(
        "augment_negative_op_count",
        lambda b: kr.layers.KerasRandAugment(num_ops=-1),
        V,
        ("KerasRandAugment: num_ops=-1", ">= 0"),
    ),
    Case(
        "crop_interpolation",
        lambda b: kr.layers.RandomResizedCrop(4, 4, interpolation="bogus"),
        V,
        ("RandomResizedCrop: interpolation='bogus'", "'bilinear'"),
    ),
    Case(
        "crop_rank_two",
        lambda b: kr.layers.RandomResizedCrop(4, 4)(keras.ops.ones((8, 8))),
        V,
        ("RandomResizedCrop: images of shape (8, 8)", "(height, width, channels)"),
    ),
    Case(
        "blur_negative_kernel",
        lambda b: kr.layers.IsotropicGaussianBlur(kernel_size=-3),
        V,
        ("IsotropicGaussianBlur: kernel_size=-3", "positive odd int"),
    ),
    Case(
        "blur_nan_sigma",
        lambda b: kr.layers.IsotropicGaussianBlur(sigma=float("nan")),
        V,
        ("IsotropicGaussianBlur: sigma=nan", "0 <= min <= max"),
    ),
    Case(
        "blur_reversed_sigma",
        lambda b: kr.layers.IsotropicGaussianBlur(sigma=(2.0, 0.1)),
        V,
        ("IsotropicGaussianBlur: sigma=(2.0, 0.1)", "0 <= min <= max"),
    ),
    Case(
        "layer_register_tokens_zero",
        lambda b: kr.layers.RegisterTokens(0),
        V,
        ("num_registers=0", "positive int"),
    ),
    Case(
        "layer_scale_nan",
        lambda b: kr.layers.LayerScale(float("nan")),
        V,
        ("LayerScale: init_value=nan", "number"),
    ),
    Case(
        "layer_zero_pad_fewer_filters",
        lambda b: kr.layers.ZeroPadShortcut(2)(keras.ops.ones((1, 4, 4, 4))),
        V,
        ("filters=2", "(1, 4, 4, 4)", "at most 2 channels"),
    ),
    Case(
        "layer_position_kind",
        lambda b: kr.layers.PositionEmbedding((2, 2), kind="bogus"),
        V,
        ("kind='bogus'", "'learned'", "'sincos2d'"),
    ),
    Case(
        "layer_position_grid_mismatch",
        lambda b: kr.layers.PositionEmbedding((3, 3))(keras.ops.ones((2, 5, 8))),
        V,
        ("(2, 5, 8)", "grid_size=(3, 3)", "(batch, 10, dim)"),
    ),
    Case(
        "layer_std_conv_epsilon",
        lambda b: kr.layers.StdConv2D(4, 3, epsilon=-1.0),
        V,
        ("StdConv2D: epsilon=-1.0", "> 0"),
    ),
    Case(
        "pixel_mean_one_image",
        lambda b: kr.layers.preprocessing_layers("pixel_mean")[-1].adapt(b.x[0]),
        V,
        ("PixelMean.adapt", "(16, 16, 3)", "x[None]"),
    ),
    # Weights and evaluation helpers.
    Case("list_weights_unknown", lambda b: kr.list_weights("resnet5O"), V, ("'resnet5O'",)),
    Case(
        "weights_not_a_name_or_path",
        lambda b: kr.create_model("resnet20", weights=5),
        V,
        ("weights=5", "weights file path"),
    ),
    Case(
        "weights_unreadable_safetensors",
        lambda b: kr.create_model("resnet20", weights=b.tmp / "garbage.safetensors"),
        V,
        ("garbage.safetensors", "not a readable state dict"),
    ),
    Case(
        "least_squares_penalty",
        lambda b: kr.evaluation.least_squares_accuracy(
            np.ones((4, 3)), [0, 1, 0, 1], np.ones((2, 3)), [0, 1], l2_regularization=0
        ),
        V,
        ("l2_regularization=0", "> 0"),
    ),
    Case(
        "least_squares_one_class",
        lambda b: kr.evaluation.least_squares_accuracy(
            np.ones((4, 3)), [1, 1, 1, 1], np.ones((2, 3)), [1, 1]
        ),
        V,
        ("y has labels of one class (1)", "at least two classes"),
    ),
    Case(
        "least_squares_test_classes_not_fit",
        lambda b: kr.evaluation.least_squares_accuracy(
            np.eye(4, 3), [0, 1, 0, 1], np.ones((2, 3)), [5, 7]
        ),
        V,
        ("y_test has labels [5, 7] that y lacks", "([0, 1])"),
    ),
    Case(
        "least_squares_widths",
        lambda b: kr.evaluation.least_squares_accuracy(
            np.ones((4, 3)), [0, 1, 0, 1], np.ones((2, 5)), [0, 1]
        ),
        V,
        ("x has 3 features", "x_test 5"),
    ),
    Case(
        "masked_pretraining_any_size_vit",
        lambda b: kr.pretrain_masked_patches(
            kr.build_vit("Ti/16", image_size=None, patch_size=4, num_classes=3), "digits"
        ),
        V,
        ("takes images of any size", "kr.resize_vit"),
    ),
    Case(
        "curves_of_text",
        lambda b: kr.viz.plot_history({"loss": "abc"}, b.tmp / "curves.png"),
        V,
        ("history['loss']='abc'", "list of numbers"),
    ),
    Case(
        "curves_not_a_history",
        lambda b: kr.viz.plot_history([1, 2, 3], b.tmp / "curves.png"),
        V,
        ("history=[1, 2, 3]", "History"),
    ),
    Case(
        "curves_of_unequal_lengths",
        lambda b: kr.viz.plot_history(
            {"loss": [1.0, 0.5], "val_loss": [0.9]}, b.tmp / "curves.png"
        ),
        V,
        ("history['val_loss']=[0.9]", "2, as many as its train curve"),
    ),
    Case(
        "few_shot_one_hot_labels",
        lambda b: kr.evaluation.few_shot_indices(np.eye(2, 10), 1),
        V,
        ("labels of shape (2, 10)", "argmax(-1)"),
    ),
    Case(
        "cli_export_misspelt_suffix",
        lambda b: ["export", str(b.tmp / "m.keras"), str(b.tmp / "out.onx")],
        2,
        ("out.onx", "did you mean '.onnx'"),
    ),
    Case(
        "cli_evaluate_a_held_out_split_without_its_share",
        lambda b: [
            "evaluate",
            str(b.tmp / "m.keras"),
            "--data",
            str(b.tmp / "cat_fox_folder"),
            "--split",
            "validation",
        ],
        2,
        ("--split 'validation'", "--validation-split <fraction>"),
    ),
]


# True/False arguments across the API refuse what only looks like a flag ("no" is truthy):
# (id, call with the bad value, the argument's name as the message gives it).
FLAGS = [
    ("data_shuffle", lambda b, v: kr.data.load_dataset("digits", shuffle=v), "shuffle"),
    ("data_drop", lambda b, v: kr.data.load_dataset("digits", drop_remainder=v), "drop_remainder"),
    ("data_strict", lambda b, v: kr.data.load_dataset("digits", strict=v), "strict"),
    (
        "data_deterministic",
        lambda b, v: kr.data.load_dataset("digits", deterministic=v),
        "deterministic",
    ),
    ("data_cache", lambda b, v: kr.data.load_dataset("digits", cache=v), "cache"),
    (
        "list_strict",
        lambda b, v: kr.data.list_image_folder(b.tmp / "cat_fox_folder", strict=v),
        "strict",
    ),
    ("count_params", lambda b, v: kr.count_params(b.model, trainable_only=v), "trainable_only"),
    ("load_safe_mode", lambda b, v: kr.load_model(b.tmp / "m.keras", safe_mode=v), "safe_mode"),
    ("export_check", lambda b, v: kr.export(b.model, b.tmp / "flag.tflite", check=v), "check"),
    (
        "export_verbose",
        lambda b, v: kr.export(b.model, b.tmp / "flag.tflite", verbose=v),
        "verbose",
    ),
    ("train_tensorboard", lambda b, v: _train(b, tensorboard=v), "tensorboard"),
    (
        "recipe_pre_logits",
        lambda b, v: get_recipe("deit", pre_logits=v),
        "Recipe: pre_logits",
    ),
    (
        "attention_qk_norm",
        lambda b, v: kr.layers.MultiHeadSelfAttention(2, 8, qk_norm=v),
        "qk_norm",
    ),
    (
        "position_dynamic",
        lambda b, v: kr.layers.PositionEmbedding((2, 2), dynamic_size=v),
        "dynamic_size",
    ),
    (
        "center_crop_antialias",
        lambda b, v: kr.layers.ResizeCenterCrop(8, 8, antialias=v),
        "antialias",
    ),
    (
        "resized_crop_antialias",
        lambda b, v: kr.layers.RandomResizedCrop(8, 8, antialias=v),
        "antialias",
    ),
]


@pytest.mark.parametrize("value", ["no", 1])
@pytest.mark.parametrize("call, name", [f[1:] for f in FLAGS], ids=[f[0] for f in FLAGS])
def test_a_flag_that_is_not_true_or_false_is_named(call, name, value, bad):
    with pytest.raises(ValueError) as error:
        call(bad, value)
    message = str(error.value)
    assert f"{name}={value!r} must be True" in message, message
    assert not (bad.tmp / "flag.tflite").exists()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_one_clear_error(case, bad, capsys):
    if isinstance(case.expected, int):
        code = main(case.call(bad))
        err = capsys.readouterr().err.strip()
        assert code == case.expected, err
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        message = err
    else:
        with pytest.raises(Exception) as info:  # noqa: PT011 - the exact type is checked below
            case.call(bad)
        assert type(info.value) is case.expected, repr(info.value)
        message = str(info.value)
    for word in case.words:
        assert word in message, message
    # No backend internals: TensorFlow's op wrappers, JAX's traces.
    for internal in ("[Op:", "{{function_node", "jax.errors", "Traced<"):
        assert internal not in message, message


def test_ctrl_c_in_the_cli_is_one_line_and_exit_code_130(bad, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(kr, "train", interrupted)
    assert main(["train", "--output", str(bad.tmp / "interrupted")]) == 130
    err = capsys.readouterr().err.strip()
    assert err == "keras-resvit train: interrupted; run the same command again to resume"
    with pytest.raises(KeyboardInterrupt):
        main(["--debug", "train", "--output", str(bad.tmp / "interrupted")])


def test_cli_runtime_failure_is_one_line_with_exit_code_1(bad, capsys, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(kr, "export", disk_full)
    argv = ["export", str(bad.tmp / "m.keras"), str(bad.tmp / "m.tflite")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err == "keras-resvit export: OSError: [Errno 28] No space left on device"
    with pytest.raises(OSError, match="No space left"):
        main(["--debug", *argv])
