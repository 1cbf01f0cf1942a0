r"""Exports a trained model to TF Lite at every quantization and checks each file against Keras.

Writes `model_float32.tflite`, `model_float16.tflite`, `model_dynamic.tflite` (int8 weights,
float activations) and `model_int8.tflite` (full-integer, calibrated on `--calibration`
images) with the class names beside them, runs each in the TF Lite interpreter on the
calibration images and prints its size and its agreement with the Keras model: the largest
output difference (float32, float16) or the top-1 agreement (dynamic, int8). The exported
models take raw 0-255 pixels: normalization is inside them. Works from either backend.

CPU-friendly run (first train the default digits ResNet-20, about a minute):
    keras-resvit train --output runs/digits
    python examples/export_tflite.py runs/digits/last.keras --output runs/digits/tflite

A 224 px ImageNet model, calibrated on a folder of its validation images, with a prediction:
    python examples/export_tflite.py runs/resnet50/best.keras --calibration val_images/ \
        --output runs/resnet50/tflite --images cat.jpg
"""

import argparse
from pathlib import Path

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
SUFFIXES = (".tflite", ".classes.json")  # what each export writes


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", nargs="?", default="runs/digits/last.keras", help="a .keras file")
    parser.add_argument("--output", default=None, help="folder (default: <model folder>/tflite)")
    parser.add_argument(
        "--quantization",
        nargs="+",
        choices=QUANTIZATIONS,
        default=list(QUANTIZATIONS),
        help="which files to write (default: all four)",
    )
    parser.add_argument(
        "--calibration", default="digits", help="images: digits (default) or an image folder"
    )
    parser.add_argument("--images", nargs="*", default=[], help="image files to classify")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # Imported after parsing, so that --help answers without loading TensorFlow.
    import keras_resvit as kr
    from keras_resvit.base.output_folders import output_folder

    output = Path(args.output or Path(args.model).parent / "tflite")
    names = [f"model_{name}{suffix}" for name in args.quantization for suffix in SUFFIXES]
    # Locked, and refusing files of these names of the user's before any export.
    with output_folder("--output", output, names) as folder:
        folder.start_writing()
        export_all(kr, args, output)


def export_all(kr, args, output):
    print(f"{'file':<24} {'size KB':>9} {'max abs diff':>13} {'top-1 agreement':>16}")
    for name in args.quantization:
        path = output / f"model_{name}.tflite"
        result = kr.export(
            args.model,
            path,
            quantization=None if name == "float32" else name,
            representative_data=args.calibration,
            verbose=False,
        )
        print(
            f"{path.name:<24} {path.stat().st_size / 1024:>9.0f} "
            f"{result['max_abs_difference']:>13.1e} {result['top1_agreement']:>16.1%}"
        )
        predictions = kr.predict(path, args.images, top_k=1) if args.images else []
        for image, (best,) in zip(args.images, predictions, strict=True):
            label = best["name"] if best["name"] is not None else best["index"]
            print(f"    {image}: {label} ({best['score']:.3f})")


if __name__ == "__main__":
    main()
