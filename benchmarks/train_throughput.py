"""Training throughput of our models against keras.applications / keras-hub, in one run.

For each pair, both models train with `model.fit` on the same synthetic batches, same backend,
batch size and optimizer: ours compiled as `kr.train` compiles it
(`keras_resvit.training.train.compile_model`), the anchor as its documentation shows
(keras.applications ResNet50: `compile` defaults + `fit`; keras-hub `ViTBackbone` + a dense
head on the class token). Runs alternate A/B so that drifts of the machine hit both; the
median of the repeats is reported. Each run is timed from the end of its first step to the end
of its last one, inside `fit`: the first step of a `fit` call starts the input iterator, and
when `fit` returns, tearing the tf.data iterator down waits for tf.data's autotuning thread to
wake up (its period doubles from 10 ms, so the wait can reach the length of the whole call),
which a long training run pays once but a short timed run would count every time. Achieved
FLOP/s (3 x forward multiply-adds x 2 per image) is compared with a float32 (or bfloat16)
2048^3 matmul (8192^3 on an accelerator) timed in the same run.

    python benchmarks/train_throughput.py --backend jax
    python benchmarks/train_throughput.py --backend tensorflow --pairs resnet50 vit_s16
    python benchmarks/train_throughput.py --backend jax --precision mixed_bfloat16 \\
        --pairs vit_b16 --batch-size 256          # on a GPU: MFU against the bf16 peak
"""

import argparse
import json
import os
import statistics
import time

# name: (image size, batch size on CPU, batch size on an accelerator, recipe)
PAIRS = {
    "resnet20": (32, 128, 1024, "resnet_cifar"),
    "resnet50": (224, 16, 256, "resnet_imagenet"),
    "vit_ti16": (224, 32, 512, "deit"),
    "vit_s16": (224, 32, 512, "deit"),
    "vit_b16": (224, 32, 256, "deit"),
}
VIT_CONFIGS = {  # keras-hub ViTBackbone arguments of the same variants (Dosovitskiy et al.)
    "vit_ti16": dict(num_layers=12, num_heads=3, hidden_dim=192, mlp_dim=768),
    "vit_s16": dict(num_layers=12, num_heads=6, hidden_dim=384, mlp_dim=1536),
    "vit_b16": dict(num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["tensorflow", "jax", "torch"], default=None)
    parser.add_argument("--pairs", nargs="+", choices=list(PAIRS), default=list(PAIRS)[:4])
    parser.add_argument("--batch-size", type=int, default=None, help="default: per model")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps per run (default: 3 on CPU, 20 on an accelerator)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="A/B alternations")
    parser.add_argument("--precision", default="float32", help="float32 or mixed_bfloat16")
    parser.add_argument("--no-anchor", action="store_true", help="time our models only")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    return parser.parse_args()


def anchor_model(name, size):
    """The reference implementation of `name`, built as its documentation shows."""
    import keras

    if name == "resnet50":
        return keras.applications.ResNet50(weights=None, input_shape=(size, size, 3))
    if name in VIT_CONFIGS:
        import keras_hub

        backbone = keras_hub.models.ViTBackbone(
            image_shape=(size, size, 3), patch_size=16, **VIT_CONFIGS[name]
        )
        tokens = backbone.output
        outputs = keras.layers.Dense(1000, activation="softmax")(tokens[:, 0])
        return keras.Model(backbone.input, outputs)
    return None


def default_device():
    """The backend's default device in words, and whether it is a GPU or TPU."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        return device.device_kind, device.platform != "cpu"
    import tensorflow as tf

    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU")
    return (devices[0].name, True) if devices else ("CPU", False)


def step_clock():
    """A Keras callback recording when each training step ends (its logs are synchronized, so
    the step's computation has finished)."""
    import keras

    class StepClock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

    return StepClock()


def repeated_batch(x, y):
    """An endless input of the batch `(x, y)`: a `tf.data` pipeline, as `kr.train` feeds, or
    a `keras.utils.PyDataset` where TensorFlow is not installed (a JAX-only GPU image)."""
    try:
        import tensorflow as tf
    except ImportError:
        import keras

        class Repeat(keras.utils.PyDataset):
            def __len__(self):
                return 1_000_000

            def __getitem__(self, index):
                return x, y

        return Repeat()
    return tf.data.Dataset.from_tensors((x, y)).repeat().prefetch(2)


def fit_rate(model, x, y, steps):
    """Images/s of `model.fit` over `steps` steps that follow one untimed step (which compiles
    the model on the first call and starts the input iterator on every call)."""
    ds = repeated_batch(x, y)
    clock = step_clock()
    model.fit(ds, steps_per_epoch=steps + 1, epochs=1, verbose=0, shuffle=False, callbacks=[clock])
    return steps * len(x) / (clock.ends[-1] - clock.ends[0])


def matmul_peak(dtype, n):
    """FLOP/s of an n^3 matmul on the default device, best of 5 after a warm-up."""
    import keras

    a = keras.random.normal((n, n), dtype=dtype)
    b = keras.random.normal((n, n), dtype=dtype)

    def run():  # summed in float32: TensorFlow's bfloat16 scalars do not convert to NumPy
        product = keras.ops.matmul(a, b)
        keras.ops.convert_to_numpy(keras.ops.sum(keras.ops.cast(product, "float32")))

    run()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times)


def main():
    args = parse_args()
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    import keras
    import numpy as np

    import keras_resvit as kr
    from keras_resvit.training.recipes import get_recipe
    from keras_resvit.training.train import build_optimizer, compile_model

    device, accelerator = default_device()
    keras.config.set_dtype_policy(args.precision)
    peak_dtype = "bfloat16" if "bfloat16" in args.precision else "float32"
    # 2048^3 keeps a CPU busy for a second; an accelerator needs 8192^3 to reach its peak.
    peak_size = 8192 if accelerator else 2048
    peak = matmul_peak(peak_dtype, peak_size)
    steps = args.steps or (20 if accelerator else 3)
    print(f"backend {keras.backend.backend()}, precision {args.precision}, device {device}")
    print(f"{peak_dtype} {peak_size}^3 matmul peak: {peak / 1e9:.1f} GFLOP/s")
    header = f"{'model':10s} {'size':>4s} {'batch':>5s} {'ours img/s':>11s} {'anchor':>9s}"
    print(f"{header} {'ours/anchor':>11s} {'FLOP/s of peak':>14s}")
    rows = []
    for name in args.pairs:
        size, cpu_batch, accel_batch, recipe_name = PAIRS[name]
        batch = args.batch_size or (accel_batch if accelerator else cpu_batch)
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
        y = (np.arange(batch) % 1000).astype("int32")
        shape = {"image_size": size} if name.startswith("vit") else {"input_shape": (size, size, 3)}
        ours = kr.create_model(name, num_classes=1000, **shape)
        recipe = get_recipe(recipe_name, label_smoothing=0.0)
        compile_model(ours, recipe, batch, 10_000)
        anchor = None if args.no_anchor else anchor_model(name, size)
        if anchor is not None:
            # Same optimizer and loss as ours; the rest is Keras' compile defaults.
            anchor.compile(
                optimizer=build_optimizer(recipe, batch, 10_000),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
            )
        ours_rates, anchor_rates = [], []
        for _ in range(args.repeats):
            ours_rates.append(fit_rate(ours, x, y, steps))
            if anchor is not None:
                anchor_rates.append(fit_rate(anchor, x, y, steps))
        rate = statistics.median(ours_rates)
        anchor_rate = statistics.median(anchor_rates) if anchor_rates else None
        flops = rate * 6 * kr.count_macs(ours)
        ratio = f"{rate / anchor_rate:11.2f}" if anchor_rate else f"{'-':>11s}"
        anchor_text = f"{anchor_rate:9.1f}" if anchor_rate else f"{'-':>9s}"
        print(
            f"{name:10s} {size:4d} {batch:5d} {rate:11.1f} {anchor_text} {ratio} "
            f"{100 * flops / peak:13.0f}%",
            flush=True,
        )
        rows.append(
            dict(
                model=name,
                image_size=size,
                batch_size=batch,
                ours=rate,
                anchor=anchor_rate,
                ratio=rate / anchor_rate if anchor_rate else None,
                flops_fraction=flops / peak,
            )
        )
        del ours, anchor
        keras.backend.clear_session()
        if args.json:  # after every row, so that an interrupted run keeps what it measured
            result = dict(
                backend=keras.backend.backend(),
                device=device,
                precision=args.precision,
                matmul_peak_flops=peak,
                matmul_peak_size=peak_size,
                rows=rows,
            )
            with open(args.json, "w") as file:
                json.dump(result, file, indent=1)


if __name__ == "__main__":
    main()
