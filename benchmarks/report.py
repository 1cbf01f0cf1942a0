"""Runs every benchmark under both backends and rewrites benchmarks/README.md with the tables.

python benchmarks/report.py                 # the whole set (about an hour on 2 CPU cores)
python benchmarks/report.py --quick         # fewer steps and images, for a first look
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).parent
QUICK = " (--quick: 2 timed steps, one A/B round, so ratios are rough)"
BACKENDS = ("tensorflow", "jax")


def run(script, backend, json_path, *extra):
    """Runs one benchmark script in a fresh process (so each gets its backend) and reads it."""
    env = {**os.environ, "KERAS_BACKEND": backend}
    command = [sys.executable, str(HERE / script), "--json", str(json_path), *extra]
    print("$", "KERAS_BACKEND=" + backend, " ".join(command[1:]), flush=True)
    subprocess.run(command, env=env, check=True, cwd=HERE)
    return json.loads(Path(json_path).read_text())


def machine():
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("keras", "tensorflow", "jax", "keras-hub")
    )
    return f"{cpu}, {os.cpu_count()} cores visible; {versions}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value, digits=1):
    return "-" if value is None else f"{value:.{digits}f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default=str(HERE / "README.md"))
    args = parser.parse_args()
    # Full runs keep train_throughput's per-device step counts (3 on a CPU, 20 on an accelerator).
    steps = ["--steps", "2", "--repeats", "1"] if args.quick else ["--repeats", "5"]
    # The pipeline needs many batches per run (the first ones start its threads) even when quick.
    images = ["--images", "2048"] if args.quick else ["--images", "4096"]
    runs = ["--runs", "5"] if args.quick else ["--runs", "20"]
    train_rows, pipeline_rows, inference_rows, peaks = [], [], [], {}
    with tempfile.TemporaryDirectory() as folder:
        for backend in BACKENDS:
            result = run("train_throughput.py", backend, f"{folder}/train_{backend}.json", *steps)
            peaks[backend] = (result["matmul_peak_flops"], result["matmul_peak_size"])
            for row in result["rows"]:
                train_rows.append(
                    [
                        backend,
                        row["model"],
                        row["image_size"],
                        row["batch_size"],
                        fmt(row["ours"]),
                        fmt(row["anchor"]),
                        fmt(row["ratio"], 2),
                        f"{100 * row['flops_fraction']:.0f}%",
                    ]
                )
            result = run("pipeline.py", backend, f"{folder}/pipeline_{backend}.json", *images)
            for row in result["rows"]:
                pipeline_rows.append(
                    [
                        backend,
                        row["size"],
                        row["preset"],
                        fmt(row["rate"], 0),
                        f"{row['model']} {fmt(row['model_rate'])}",
                        fmt(row["rate"] / row["model_rate"], 1),
                    ]
                )
            result = run("inference.py", backend, f"{folder}/inference_{backend}.json", *runs)
            for row in result["rows"]:
                inference_rows.append(
                    [
                        backend,
                        row["model"],
                        fmt(row["keras_ms"]),
                        fmt(row["tflite_fp32_ms"]),
                        fmt(row["tflite_int8_ms"]),
                        fmt(row["tflite_fp32_ms"] / row["keras_ms"], 2),
                    ]
                )
    peak_text = ", ".join(
        f"{b} {peaks[b][0] / 1e9:.0f} GFLOP/s at {peaks[b][1]}^3" for b in BACKENDS
    )
    text = f"""# Benchmarks

Figures of the last `python benchmarks/report.py` run{QUICK if args.quick else ""}.
Speed is measured here, never asserted in tests.

Machine: {machine()}.

## Training throughput (`train_throughput.py`)
Images/s of `model.fit` steps on synthetic batches (timed inside `fit`, after a first step;
median of the A/B-alternated runs); ours compiled as `kr.train` does, the anchor
(keras.applications ResNet50, keras-hub ViTBackbone + dense head) as its documentation shows,
same backend, batch and optimizer. "Of peak": achieved
training FLOP/s (6 x forward multiply-adds per image) over a float32 matmul timed in the same
run ({peak_text}).

{
        table(
            [
                "backend",
                "model",
                "size",
                "batch",
                "ours img/s",
                "anchor img/s",
                "ours/anchor",
                "of peak",
            ],
            train_rows,
        )
    }

Why ours is faster, what was tried and not taken, the GPU runs and the bfloat16 opt-in:
[NOTES.md](NOTES.md), which `report.py` leaves alone.

## Input pipeline (`pipeline.py`)
Images/s of `kr.data.load_dataset(..., augment=preset)` from in-memory images, next to what
the model trains at on the same machine.

{table(["backend", "size", "preset", "img/s", "model trains at", "pipeline/model"], pipeline_rows)}

## Inference (`inference.py`)
Milliseconds per image at batch 1: Keras `predict_on_batch` on the backend, TF Lite float32 and
int8 (a ViT keeps its attention core in float32) with the interpreter on all cores.

{
        table(
            ["backend", "model", "keras ms", "tflite fp32 ms", "tflite int8 ms", "fp32/keras"],
            inference_rows,
        )
    }
"""
    output = Path(args.output)
    temporary = output.with_suffix(".md.tmp")
    temporary.write_text(text)
    temporary.replace(output)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
