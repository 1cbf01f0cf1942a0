"""Inference latency per image: Keras `predict_on_batch` against TF Lite float32 and int8.

Each model is exported with `kr.export` (from any backend: TF Lite conversion runs in a
TensorFlow subprocess when needed) and timed at batch 1 with the TF Lite interpreter on all
cores, next to the Keras model on the current backend. Medians over `--runs` calls after a
warm-up.

    python benchmarks/inference.py --backend tensorflow
    python benchmarks/inference.py --backend jax --models resnet50 --runs 50
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

MODELS = ("resnet50", "vit_s16")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["tensorflow", "jax", "torch"], default=None)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--runs", type=int, default=20, help="timed calls per engine")
    parser.add_argument("--calibration", type=int, default=16, help="int8 calibration images")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    return parser.parse_args()


def median_seconds(fn, runs):
    fn()  # warm-up: tracing, compilation, allocation
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tflite_latency(path, image, runs):
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=os.cpu_count())
    interpreter.allocate_tensors()
    entry = interpreter.get_input_details()[0]

    def call():
        interpreter.set_tensor(entry["index"], image)
        interpreter.invoke()

    return median_seconds(call, runs)


def main():
    args = parse_args()
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    import keras
    import numpy as np

    import keras_resvit as kr

    print(f"backend {keras.backend.backend()}; milliseconds per image at batch 1 (lower is better)")
    print(
        f"{'model':10s} {'keras':>9s} {'tflite fp32':>12s} {'tflite int8':>12s} {'fp32/keras':>11s}"
    )
    rows = []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            model = kr.create_model(name)
            size = model.input_shape[1]
            image = rng.uniform(0, 255, (1, size, size, 3)).astype("float32")
            keras_s = median_seconds(lambda m=model, x=image: m.predict_on_batch(x), args.runs)
            fp32 = Path(folder) / f"{name}.tflite"
            int8 = Path(folder) / f"{name}_int8.tflite"
            kr.export(model, fp32, check=False, verbose=False)
            calibration = rng.uniform(0, 255, (args.calibration, size, size, 3)).astype("float32")
            kr.export(
                model,
                int8,
                quantization="int8",
                representative_data=calibration,
                check=False,
                verbose=False,
            )
            fp32_s = tflite_latency(fp32, image, args.runs)
            int8_s = tflite_latency(int8, image, args.runs)
            print(
                f"{name:10s} {1e3 * keras_s:9.1f} {1e3 * fp32_s:12.1f} {1e3 * int8_s:12.1f} "
                f"{fp32_s / keras_s:11.2f}",
                flush=True,
            )
            rows.append(
                dict(
                    model=name,
                    keras_ms=1e3 * keras_s,
                    tflite_fp32_ms=1e3 * fp32_s,
                    tflite_int8_ms=1e3 * int8_s,
                )
            )
            del model
            keras.backend.clear_session()
    if args.json:
        with open(args.json, "w") as file:
            json.dump(dict(backend=keras.backend.backend(), rows=rows), file, indent=1)


if __name__ == "__main__":
    main()
