"""Where training runs: the distribution strategy and precision for this backend and machine.

TensorFlow backend: `TPUStrategy` when a TPU resolves, `MirroredStrategy` over several GPUs,
the default strategy otherwise. JAX backend: `keras.distribution.DataParallel` over every
device (every host's, after `jax.distributed.initialize`). Models are built and compiled inside
`Placement.scope()`. `gradient` is the backend's autodiff for code outside `fit` (Grad-CAM).
This module and `export.py` are the only places that branch on backend.
"""

import contextlib
import os
import warnings
from dataclasses import dataclass

import keras

STRATEGIES = ("auto", "none", "tpu", "mirrored", "data_parallel")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16", "bfloat16")
# Mixed precision where the hardware has fast low-precision matmuls; float32 on CPUs. GPUs
# before compute capability 8.0 (Ampere) have no bfloat16 tensor cores and get float16, which
# Keras trains with loss scaling; on Ampere and later bfloat16 runs as fast and needs none.
AUTO_PRECISION = {"tpu": "mixed_bfloat16", "gpu": "mixed_float16", "cpu": "float32"}
BF16_GPU_CAPABILITY = (8, 0)
# CPU features (Linux /proc/cpuinfo) with native bfloat16 matmuls: x86 AVX512-BF16 and AMX
# (Intel Cooper Lake, Sapphire Rapids and later; AMD Zen 4 and later), Arm BF16. Elsewhere
# bfloat16 is emulated and trains slower than float32.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
# XLA's CPU backend (jax 0.10) hands convolutions to YNNPACK by default; at ResNet's shapes
# its own convolutions are faster (3x3 at 56x56x64, forward and backward: 65 vs 183 ms; the
# 7x7 stem: 179 vs 254 ms; the same results), so `configure_xla_cpu` takes that fusion out on
# JAX: ResNet-50 trains 1.2x as fast, ViT-S/16 as fast as before.
XLA_CPU_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "-individual_convolution"}
# XLA aborts on a flag it does not know, and defaults change between releases: the jax
# releases these flags were measured with.
XLA_CPU_FLAGS_JAX = ("0.10.",)
XLA_CPU_OPT_OUT = "KERAS_RESVIT_XLA_CPU_FLAGS"


@dataclass
class Placement:
    """The devices a run uses and how to enter them.

    Attributes:
        name: "default", "tpu", "mirrored" or "data_parallel".
        accelerator: "cpu", "gpu" or "tpu".
        num_replicas: data-parallel replicas; the global batch must divide by it.
        strategy: the `tf.distribute.Strategy` (TensorFlow backend) or None.
        distribution: the `keras.distribution.Distribution` (JAX backend) or None.
    """

    name: str
    accelerator: str
    num_replicas: int = 1
    strategy: object = None
    distribution: object = None

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


def _tensorflow_placement(name):
    import tensorflow as tf

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
        strategy = tf.distribute.MirroredStrategy(devices)
        accelerator = "gpu" if gpus else "cpu"
        return Placement("mirrored", accelerator, len(devices), strategy=strategy)
    if name == "data_parallel":
        raise ValueError(
            'distribution="data_parallel" is the JAX backend\'s; under TensorFlow use "mirrored" '
            'or "tpu" (or "auto").'
        )
    return Placement("default", "gpu" if gpus else "cpu", 1, strategy=tf.distribute.get_strategy())


def _jax_placement(name):
    devices = keras.distribution.list_devices()
    kinds = {d.split(":")[0].lower() for d in devices}
    accelerator = "tpu" if "tpu" in kinds else "gpu" if kinds & {"gpu", "cuda"} else "cpu"
    if name in ("tpu", "mirrored"):
        raise ValueError(
            f'distribution="{name}" is a TensorFlow strategy; under JAX use "data_parallel" '
            'or "auto".'
        )
    if name == "auto":
        name = choose_strategy("jax", False, 0, len(devices))
    if name == "data_parallel":
        distribution = keras.distribution.DataParallel(devices=devices)
        return Placement("data_parallel", accelerator, len(devices), distribution=distribution)
    return Placement("default", accelerator, 1)


def place(distribution: str = "auto") -> Placement:
    """Detects (or takes) the strategy for this backend and machine.

    Args:
        distribution: "auto", "none", "tpu", "mirrored" (TensorFlow) or "data_parallel" (JAX).

    Returns:
        A `Placement`.

    Raises:
        ValueError: unknown name, or a strategy of the other backend.

    Example:
    >>> place("none").num_replicas
    1
    """
    if distribution not in STRATEGIES:
        raise ValueError(
            f"distribution={distribution!r} is not valid; expected one of {list(STRATEGIES)}."
        )
    backend = keras.backend.backend()
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


def gpu_compute_capability():
    """The first GPU's CUDA compute capability as `(major, minor)`, or None where there is no
    GPU or the backend does not report one (ROCm GPUs, for instance)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        gpus = [device for device in jax.devices() if device.platform == "gpu"]
        capability = getattr(gpus[0], "compute_capability", None) if gpus else None
        if not capability:
            return None
        return tuple(int(part) for part in str(capability).split(".")[:2])
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
        capability = details.get("compute_capability")
        return tuple(capability) if capability else None
    if backend == "torch":
        import torch

        return tuple(torch.cuda.get_device_capability()) if torch.cuda.is_available() else None
    return None


def cpu_flags(path="/proc/cpuinfo"):
    """The CPU's feature flags as a set, or None where the system does not list them."""
    try:
        with open(path) as file:
            for line in file:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        return None
    return None


def configure_xla_cpu(environ=os.environ) -> list:
    """Adds `XLA_CPU_FLAGS` to `XLA_FLAGS` on the JAX backend; called when the package loads.

    XLA reads `XLA_FLAGS` when JAX first computes, so this takes effect when keras_resvit is
    imported before any JAX computation, and affects every JAX CPU computation of the process.
    Only with the jax releases in `XLA_CPU_FLAGS_JAX`. A flag the user already set in
    `XLA_FLAGS` is left as it is; `KERAS_RESVIT_XLA_CPU_FLAGS=0` turns this off.

    Returns:
        The flags added, e.g. `["--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"]`.
    """
    if keras.backend.backend() != "jax" or environ.get(XLA_CPU_OPT_OUT, "1") == "0":
        return []
    import jax

    if not jax.__version__.startswith(XLA_CPU_FLAGS_JAX):
        return []
    current = environ.get("XLA_FLAGS", "")
    added = [f"--{name}={value}" for name, value in XLA_CPU_FLAGS.items() if name not in current]
    if added:
        environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added


@contextlib.contextmanager
def dtype_policy(name: str):
    """Sets the global Keras dtype policy for the block and restores the previous one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def gradient(fn, x):
    """The gradient of the scalar `fn(x)` with respect to the tensor `x`, by this backend's
    autodiff (the one place outside export that needs it: Grad-CAM's class-score gradients).

    Args:
        fn: a function of one tensor returning a scalar tensor (built from `keras.ops`).
        x: the point, an array or tensor.

    Returns:
        A tensor of `x`'s shape.

    Example:
    >>> import keras
    >>> float(gradient(lambda v: keras.ops.sum(v * v), keras.ops.ones((2,)))[0])
    2.0
    """
    backend = keras.backend.backend()
    x = keras.ops.convert_to_tensor(x)
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return tape.gradient(y, x)
    if backend == "jax":
        import jax

        return jax.grad(fn)(x)
    if backend == "torch":
        import torch

        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(fn(x), x)
        return grad
    raise ValueError(f"gradient() needs the tensorflow, jax or torch backend, not {backend!r}.")
