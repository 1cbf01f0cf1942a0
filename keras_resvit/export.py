"""Export to TF Lite and SavedModel, checked against the Keras model's outputs.

Keras' own `model.export` does the conversion; it needs the TensorFlow backend, so under
another backend the model goes through a `.keras` file into a TensorFlow-backend subprocess
and the user never switches backends by hand.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np

from keras_resvit.files import atomic_path

FORMATS = {"tflite": "litert", "saved_model": "tf_saved_model"}
# Largest max-abs difference of outputs (probabilities) accepted from a float32 artifact.
FLOAT32_TOLERANCE = 1e-4


def _sample_inputs(model, count=4, seed=0):
    shape = model.input_shape[1:]
    if any(d is None for d in shape):
        raise ValueError(f"model input_shape={shape} must be fixed to export; rebuild with sizes.")
    return np.random.default_rng(seed).uniform(0, 255, (count, *shape)).astype("float32")


def _run_tflite(path, images):
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for image in images:
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out["index"])[0])
    return np.stack(outputs)


def _run_saved_model(path, images):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))  # keep a reference: its variables live in it
    return np.asarray(loaded.serve(images))


def _check(model, artifact, format):
    images = _sample_inputs(model)
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    run = _run_tflite if format == "tflite" else _run_saved_model
    difference = float(np.abs(run(artifact, images) - expected).max())
    if difference >= FLOAT32_TOLERANCE:
        raise RuntimeError(
            f"{format} export differs from the Keras model: max abs difference {difference:.2e} "
            f">= {FLOAT32_TOLERANCE:.0e} on {len(images)} sample images."
        )
    return difference


def _export_here(model, path, format, check):
    if format == "saved_model":
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        shutil.rmtree(tmp)
        try:
            model.export(str(tmp), format=FORMATS[format], verbose=False)
            difference = _check(model, tmp, format) if check else None
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return difference
    with atomic_path(path) as tmp:
        model.export(tmp, format=FORMATS[format], verbose=False)
        return _check(model, tmp, format) if check else None


def export(model_or_path, path, *, format: str = "tflite", check: bool = True) -> dict:
    """Exports a model (or a `.keras` file) and checks the artifact against Keras.

    Args:
        model_or_path: a `keras.Model` or the path of a `.keras` file (loaded in safe mode).
        path: output file (`.tflite`) or folder (SavedModel).
        format: "tflite" or "saved_model".
        check: run the artifact on sample images and compare with the Keras outputs; a max
            abs difference >= 1e-4 raises RuntimeError with the figures.

    Returns:
        `{"path": ..., "format": ..., "max_abs_difference": ...}`.

    Example:
    >>> import keras_resvit as kr
    >>> kr.export(kr.create_model("resnet20"), "/tmp/resnet20.tflite")  # doctest: +SKIP
    """
    if format not in FORMATS:
        raise ValueError(f"format={format!r} is not supported; valid: {sorted(FORMATS)}.")
    path = Path(path)
    if format == "tflite" and path.is_dir():
        raise ValueError(f"path={str(path)!r} is a folder; a TF Lite export needs a file path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    if keras.backend.backend() != "tensorflow":
        return _export_in_subprocess(model_or_path, path, format, check)
    model = model_or_path
    if not isinstance(model, keras.Model):
        source = Path(model_or_path)
        if not source.is_file():
            raise FileNotFoundError(f"model_or_path={str(source)!r} is not a file.")
        model = keras.saving.load_model(source, safe_mode=True)
    difference = _export_here(model, path, format, check)
    return {"path": str(path), "format": format, "max_abs_difference": difference}


def _export_in_subprocess(model_or_path, path, format, check):
    with tempfile.TemporaryDirectory() as tmp:
        source = model_or_path
        if isinstance(model_or_path, keras.Model):
            source = os.path.join(tmp, "model.keras")
            model_or_path.save(source)
        command = [sys.executable, "-m", "keras_resvit.export", str(source), str(path), format]
        command += [] if check else ["--no-check"]
        env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
        result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["(no output)"]
        raise RuntimeError(f"TensorFlow-backend export failed: {lines[-1]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    source, target, fmt = sys.argv[1:4]
    print(json.dumps(export(source, target, format=fmt, check="--no-check" not in sys.argv)))
