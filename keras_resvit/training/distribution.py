"""Where training runs: the distribution strategy and precision for this backend and machine.

TensorFlow backend: `TPUStrategy` when a TPU resolves, `MultiWorkerMirroredStrategy` when
`TF_CONFIG` describes several workers, `MirroredStrategy` over several GPUs, the default
strategy otherwise. JAX backend: `keras.distribution.DataParallel` over every device of every
process (the process group joined by `keras_resvit.base.processes`). Models are built and
compiled inside `Placement.scope()`. What the hardware can do (bfloat16 support, XLA flags) is
`keras_resvit.base.backend`'s.
"""

import contextlib
import warnings
from dataclasses import dataclass
from types import SimpleNamespace

import keras

from keras_resvit.base.backend import (
    BF16_CPU_FLAGS,
    BF16_GPU_CAPABILITY,
    cpu_flags,
    gpu_compute_capability,
)
from keras_resvit.base.backend import (
    backend as current_backend,
)
from keras_resvit.base.processes import multi_worker_strategy, process_count

STRATEGIES = ("auto", "none", "tpu", "mirrored", "multi_worker", "data_parallel", "model_parallel")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16", "bfloat16")
# Mixed precision where the hardware has fast low-precision matmuls; float32 on CPUs. GPUs
# before compute capability 8.0 (Ampere) have no bfloat16 tensor cores and get float16, which
# Keras trains with loss scaling; on Ampere and later bfloat16 runs as fast and needs none.
AUTO_PRECISION = {"tpu": "mixed_bfloat16", "gpu": "mixed_float16", "cpu": "float32"}


@dataclass
class Placement:
    """The devices a run uses and how to enter them.

    Attributes:
        name: "default", "tpu", "mirrored", "multi_worker" or "data_parallel".
        accelerator: "cpu", "gpu" or "tpu".
        num_replicas: data-parallel replicas of all processes; the global batch must divide
            by it.
        strategy: the `tf.distribute.Strategy` (TensorFlow backend) or None.
        distribution: the `keras.distribution.Distribution` (JAX backend) or None.
        processes: the number of processes of the run.
    """

    name: str
    accelerator: str
    num_replicas: int = 1
    strategy: object = None
    distribution: object = None
    processes: int = 1

    def scope(self):
        """Context for building, compiling and fitting the model."""
        if self.strategy is not None:
            return self.strategy.scope()
        if self.distribution is not None:
            return self.distribution.scope()
        return contextlib.nullcontext()


def choose_strategy(backend: str, has_tpu: bool, num_gpus: int, num_devices: int) -> str:
    """The automatic choice, as a pure function of what the machine has."""
    if backend == "tensorflow":
        if has_tpu:
            return "tpu"
        return "mirrored" if num_gpus > 1 else "none"
    if backend == "jax":
        return "data_parallel" if num_devices > 1 else "none"
    return "none"


def _resolve_tpu():
    """A connected TPU cluster resolver, or None when no TPU is reachable."""
    import tensorflow as tf

    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.NotFoundError):
        return None
    return resolver


# One `MirroredStrategy` per device list for the process: a new one hands out its collective
# keys from the start again, which an interrupted run's unfinished reduction still holds.
_MIRRORED = {}


def _tensorflow_placement(name):
    import tensorflow as tf

    workers = multi_worker_strategy()  # first: TensorFlow wants it before any operation
    if name == "multi_worker" and workers is None:
        raise ValueError(
            'distribution="multi_worker" but TF_CONFIG describes no cluster of several '
            "workers; set TF_CONFIG on every worker (see guides/"
            "training_on_tpu_and_multiple_devices.md)."
        )
    if workers is not None and name in ("auto", "multi_worker"):
        accelerator = "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
        return Placement(
            "multi_worker",
            accelerator,
            workers.num_replicas_in_sync,
            strategy=workers,
            processes=process_count(),
        )
    gpus = tf.config.list_logical_devices("GPU")
    resolver = _resolve_tpu() if name in ("auto", "tpu") else None
    if name == "tpu" and resolver is None:
        raise ValueError('distribution="tpu" but no TPU resolves on this machine.')
    if name == "auto":
        name = choose_strategy("tensorflow", resolver is not None, len(gpus), len(gpus))
    if name == "tpu":
        strategy = tf.distribute.TPUStrategy(resolver)
        return Placement("tpu", "tpu", strategy.num_replicas_in_sync, strategy=strategy)
    if name == "mirrored":
        # Several GPUs, or several logical CPUs when there is no GPU (tests, debugging).
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = _MIRRORED.get(tuple(devices))
        if strategy is None:
            strategy = _MIRRORED[tuple(devices)] = tf.distribute.MirroredStrategy(devices)
        accelerator = "gpu" if gpus else "cpu"
        return Placement("mirrored", accelerator, len(devices), strategy=strategy)
    if name in ("data_parallel", "model_parallel"):
        raise ValueError(
            f'distribution="{name}" is the JAX backend\'s; under TensorFlow use "mirrored" '
            'or "tpu" (or "auto").'
        )
    return Placement("default", "gpu" if gpus else "cpu", 1, strategy=tf.distribute.get_strategy())


def _jax_placement(name):
    processes = process_count()  # joins the process group the environment describes
    devices = keras.distribution.list_devices()
    kinds = {d.split(":")[0].lower() for d in devices}
    accelerator = "tpu" if "tpu" in kinds else "gpu" if kinds & {"gpu", "cuda"} else "cpu"
    if name in ("tpu", "mirrored", "multi_worker"):
        raise ValueError(
            f'distribution="{name}" is a TensorFlow strategy; under JAX use "data_parallel" '
            'or "auto".'
        )
    if name == "auto":
        name = choose_strategy("jax", False, 0, len(devices))
    if name == "model_parallel":
        from keras_resvit.training.sharding import model_parallel_distribution

        distribution, replicas = model_parallel_distribution(devices=devices)
        return Placement(
            "model_parallel",
            accelerator,
            replicas,
            distribution=distribution,
            processes=processes,
        )
    if name == "none" and processes > 1:
        raise ValueError(
            f'distribution="none" but this run has {processes} processes; use "auto" or '
            '"data_parallel".'
        )
    if name == "data_parallel" or processes > 1:
        distribution = keras.distribution.DataParallel(devices=devices)
        return Placement(
            "data_parallel",
            accelerator,
            len(devices),
            distribution=distribution,
            processes=processes,
        )
    return Placement("default", accelerator, 1)


def local_input(data, placement: Placement):
    """`data` (a run's data: `train` and `val` batched datasets of global batches) with the
    datasets this process feeds `fit`, and `feed_train` / `feed_val`: None, or what turns the
    (checked, repeated) dataset into the one `fit` reads.

    With several JAX processes each feeds its own examples, and Keras assembles the global
    batch from them: a dataset that `kr.data.load_dataset` already split by process (its
    `process_count` attribute) passes unchanged; any other is split by Keras'
    `distribution.distribute_dataset` (each process keeps its slice of every global batch).
    Under TensorFlow's `MultiWorkerMirroredStrategy` a tf.data share feeds the worker's
    replicas through `strategy.distribute_datasets_from_function` (rebatched to the replica
    batch); a dataset of global batches is split by `fit` itself. A share read for another
    number of processes is refused: its batches would silently be another size than the run's.
    """
    distribution = placement.distribution
    workers = placement.name == "multi_worker"
    # One process takes whole batches; JAX's processes and TensorFlow's workers take shares.
    takes = placement.processes if distribution is not None or workers else 1
    for split, dataset in (("train_data", data.train), ("val_data", data.val)):
        shares = getattr(dataset, "process_count", 1)
        if shares not in (1, takes):
            raise ValueError(
                f"{split} is one process's share of {shares} (process_count={shares}), but "
                f"this run ({placement.name}, {placement.processes} process(es)) "
                + (
                    "splits the global batches itself; read global batches: "
                    "loader_options={'process_index': 0, 'process_count': 1}."
                    if takes == 1
                    else f"has {takes} processes; read it with process_count={takes}."
                )
            )
    if workers:
        return _worker_input(data, placement)
    if distribution is None or placement.processes == 1:
        return SimpleNamespace(**vars(data), feed_train=None, feed_val=None)

    def local(dataset):
        if dataset is None or getattr(dataset, "process_count", 1) == placement.processes:
            return dataset
        if isinstance(dataset, keras.utils.PyDataset):
            raise ValueError(
                f"a {type(dataset).__name__} read by {getattr(dataset, 'process_count', 1)} "
                f"process(es) cannot feed a run of {placement.processes} processes; give each "
                "process its share: kr.data.ImageLoader(..., process_index=kr.training."
                "process_index(), process_count=kr.training.process_count())."
            )
        distribution.auto_shard_dataset = True
        return distribution.distribute_dataset(dataset)

    split = SimpleNamespace(
        **{**vars(data), "train": local(data.train), "val": local(data.val)},
        feed_train=None,
        feed_val=None,
    )
    distribution.auto_shard_dataset = False  # every dataset `fit` gets is this process's
    return split


def _worker_input(data, placement):
    """`local_input` under `MultiWorkerMirroredStrategy`: each share feeds this worker's
    replicas, `global batch / replicas` examples each (the strategy shards nothing)."""
    strategy, global_batch = placement.strategy, data.batch_size

    def feed(dataset):
        def replica_batches(context):
            return dataset.rebatch(context.get_per_replica_batch_size(global_batch))

        return strategy.distribute_datasets_from_function(replica_batches)

    feeds = {}
    for split, dataset in (("train", data.train), ("val", data.val)):
        shared = getattr(dataset, "process_count", 1) > 1
        if shared and isinstance(dataset, keras.utils.PyDataset):
            raise ValueError(
                f"a {type(dataset).__name__} share (process_count="
                f"{dataset.process_count}) cannot feed TensorFlow's MultiWorkerMirroredStrategy, "
                "which splits the global batches of a PyDataset itself; read global batches "
                "(loader_options={'process_count': 1}) or use the tf.data loader."
            )
        feeds[f"feed_{split}"] = feed if shared else None
    return SimpleNamespace(**vars(data), **feeds)


def place(distribution: str = "auto") -> Placement:
    """Detects (or takes) the strategy for this backend and machine.

    Args:
        distribution: "auto", "none", "tpu", "mirrored", "multi_worker" (TensorFlow: the
            cluster in `TF_CONFIG`), "data_parallel" (JAX: every device of every process) or
            "model_parallel" (JAX: kernels split over a "model" mesh axis,
            `keras_resvit.training.sharding`).

    Returns:
        A `Placement`.

    Raises:
        ValueError: unknown name, or a strategy of the other backend.

    Example:
    >>> from keras_resvit.training.distribution import place
    >>> place("none").num_replicas
    1
    """
    if distribution not in STRATEGIES:
        raise ValueError(
            f"distribution={distribution!r} is not valid; expected one of {list(STRATEGIES)}."
        )
    backend = current_backend()
    if backend == "tensorflow":
        return _tensorflow_placement(distribution)
    if backend == "jax":
        return _jax_placement(distribution)
    if distribution not in ("auto", "none"):
        raise ValueError(
            f"distribution={distribution!r} is not available on the {backend} backend."
        )
    return Placement("default", "cpu", 1)


def resolve_precision(precision: str, placement: Placement) -> str:
    """The dtype policy name for a run. "auto" picks by accelerator: bfloat16 on TPUs and on
    GPUs of compute capability 8.0 (Ampere) or later, float16 on older GPUs, float32 on CPUs."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision={precision!r} is not valid; expected one of {list(PRECISIONS)}."
        )
    policy = AUTO_PRECISION[placement.accelerator] if precision == "auto" else precision
    if precision == "auto" and placement.accelerator == "gpu":
        capability = gpu_compute_capability()
        if capability is not None and capability >= BF16_GPU_CAPABILITY:
            policy = "mixed_bfloat16"
    if placement.accelerator == "cpu" and "bfloat16" in policy:
        flags = cpu_flags()
        if flags is not None and not flags & BF16_CPU_FLAGS:
            warnings.warn(
                f"precision={precision!r} on a CPU without AVX512-BF16, AMX or Arm BF16: "
                "bfloat16 is emulated there and trains slower than precision='float32'.",
                stacklevel=2,
            )
    return policy
