"""Without TensorFlow (a JAX-only GPU image): models build and train on arrays, on digits and
on image folders (read by the PyDataset loader), and the features that need `tf.data` say so in
one ImportError."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from keras_resvit.base.lazy import LazyModule

# A finder ahead of all others makes every `import tensorflow...` raise ImportError, as on a
# machine without it. (`sys.modules["tensorflow"] = None` would not do: Keras takes a
# "tensorflow" key in sys.modules as TensorFlow being in use.)
SCRIPT = textwrap.dedent(
    """
    import json, sys, tempfile
    from pathlib import Path

    class NoTensorFlow:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "tensorflow":
                raise ImportError(f"No module named {name!r}")

    sys.meta_path.insert(0, NoTensorFlow())
    import keras
    import numpy as np
    from PIL import Image
    import keras_resvit as kr

    reply = {"tensorflow_imported": "tensorflow" in sys.modules}
    keras.utils.set_random_seed(0)
    model = kr.build_resnet(
        depth=8, stem="cifar", input_shape=(8, 8, 3), num_classes=2, width=0.25
    )
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (8, 8, 8, 3)).astype("float32")
    y = np.arange(8) % 2
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    reply["losses"] = history.history["loss"]

    train = kr.data.load_dataset("digits", "train", batch_size=64)
    test = kr.data.load_dataset("digits", "test", batch_size=64)
    model = kr.build_resnet(
        depth=8, stem="cifar", input_shape=(32, 32, 3), num_classes=10, width=0.25
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss="sparse_categorical_crossentropy",
    )
    history = model.fit(train, epochs=3, validation_data=test, verbose=0)
    reply["digits"] = {
        "type": type(train).__name__,
        "losses": history.history["loss"],
        "val_losses": history.history["val_loss"],
    }

    root = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    for c, name in enumerate(("dark", "light")):
        (root / name).mkdir()
        for i in range(4):
            pixels = 40 + 140 * c + rng.integers(0, 40, (20 + i, 18, 3))
            Image.fromarray(pixels.astype("uint8")).save(root / name / f"{i}.png")
    folder = kr.data.load_dataset(
        root, "train", image_size=16, batch_size=4, augment="inception_crop"
    )
    model = kr.build_resnet(
        depth=8, stem="cifar", input_shape=(16, 16, 3), num_classes=2, width=0.25
    )
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    history = model.fit(folder, epochs=2, verbose=0)
    reply["folder"] = {
        "type": type(folder).__name__,
        "class_names": folder.class_names,
        "losses": history.history["loss"],
    }
    # kr.train on arrays (read by an ImageLoader here) and on the folder's loader.
    x, y = kr.data.load_digits()[0]
    keras.utils.set_random_seed(0)
    small = kr.build_resnet(8, stem="cifar", width=0.5)
    run = root / "run"
    history = kr.train(
        small, (x[:128], y[:128]), val_data=(x[128:160], y[128:160]), batch_size=32,
        epochs=2, output_dir=run, verbose=0,
    )
    reply["train"] = {
        "losses": history.history["loss"],
        "val_accuracy": history.history["val_accuracy"],
        "files": sorted(p.name for p in run.iterdir() if not p.name.startswith(".")),
    }
    model = kr.build_resnet(
        depth=8, stem="cifar", input_shape=(16, 16, 3), num_classes=2, width=0.25
    )
    history = kr.train(model, folder, epochs=1, output_dir=root / "run2", verbose=0)
    reply["train_folder"] = history.summary["steps"]
    from keras_resvit.cli import main

    main(["train", "--model", "resnet20", "--data", "digits", "--epochs", "1",
          "--batch-size", "128", "--output", str(root / "cli")])
    reply["cli_files"] = sorted(p.name for p in (root / "cli").iterdir())
    for name, kwargs in (("tfds", {"source": "tfds:cifar10"}), ("tf.data", {"loader": "tf.data"})):
        try:
            kr.data.load_dataset(**kwargs)
        except ImportError as error:
            reply[name] = str(error)
    reply["tensorflow_imported_after"] = "tensorflow" in sys.modules
    print(json.dumps(reply))
    """
)


def test_jax_trains_without_tensorflow(backend):
    pytest.importorskip("jax")
    if backend != "jax":
        pytest.skip("a JAX subprocess whatever the backend: run once, in the JAX pass")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**os.environ, "KERAS_BACKEND": "jax"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reply = json.loads(result.stdout.strip().splitlines()[-1])
    assert not reply["tensorflow_imported"] and not reply["tensorflow_imported_after"]
    assert len(reply["losses"]) == 2 and all(loss > 0 for loss in reply["losses"])
    digits = reply["digits"]
    assert digits["type"] == "ImageLoader"
    losses = digits["losses"]
    assert all(0 < loss < 10 for loss in losses + digits["val_losses"])
    assert losses[0] > losses[1] > losses[2]
    folder = reply["folder"]
    assert folder["type"] == "ImageLoader" and folder["class_names"] == ["dark", "light"]
    assert len(folder["losses"]) == 2 and all(0 < loss < 10 for loss in folder["losses"])
    train = reply["train"]
    assert len(train["losses"]) == 2 and all(0 < loss < 10 for loss in train["losses"])
    assert len(train["val_accuracy"]) == 2
    assert {"best.keras", "last.keras", "config.json", "history.csv"} <= set(train["files"])
    assert reply["train_folder"] == 2  # 8 images, batches of 4
    assert {"last.keras", "curves.png"} <= set(reply["cli_files"])
    assert "model.tflite" not in reply["cli_files"]
    assert "tfds:cifar10" in reply["tfds"] and "pip install tensorflow" in reply["tfds"]
    assert "needs the `tensorflow` package" in reply["tf.data"]
    assert "pip install tensorflow" in reply["tf.data"]


def test_lazy_module_imports_on_first_use():
    lazy = LazyModule("json", "json", "this test")
    assert lazy.dumps([1]) == "[1]"
    missing = LazyModule("no_such_module_kr", "no-such-package", "The feature X")
    with pytest.raises(ImportError, match="The feature X needs the `no_such_module_kr` package"):
        _ = missing.anything
