"""What this backend and machine can do, and the one switch for every fast path.

Everything in the package that depends on which backend runs asks this module; no other module
branches on `keras.backend.backend()` or imports Keras' private `keras.src` modules, except
`keras_fixes`, which holds the package's corrections to Keras itself.

Fast paths compute what the plain Keras layers compute, faster on one backend: TensorFlow's
fused batch norm, layer norm and exact GELU, a matmul self-attention (TensorFlow, JAX), a sliced
max pool and 1x1 convolutions as matmuls on JAX's CPU backend, one histogram for all channels
in RandAugment's equalization. Each is tested against the plain layer, forward and backward.
`set_fast_paths(False)` (or `KERAS_RESVIT_FAST_PATHS=0` in the environment before import) turns
every one of them off, for debugging and numerics comparisons; `fast_paths(False)` does so for
a block. Models built from then on trace the plain Keras computations.

Side effect on import: none. `configure_xla_cpu` (called by `import keras_resvit` on JAX) adds
flags to `XLA_FLAGS` before JAX computes; `KERAS_RESVIT_XLA_CPU_FLAGS=0` turns it off.
"""

import contextlib
import importlib
import importlib.metadata
import json
import os
import sys

from keras_resvit.base.lazy import keras

FAST_PATHS_VARIABLE = "KERAS_RESVIT_FAST_PATHS"
_fast_paths = {"enabled": os.environ.get(FAST_PATHS_VARIABLE, "1") != "0"}

# Fast path -> the backends it runs on.
FAST_PATHS = {
    "fused_batch_norm": ("tensorflow",),
    "fused_layer_norm": ("tensorflow",),
    "exact_gelu": ("tensorflow",),
    "matmul_attention": ("tensorflow", "jax"),
    "sliced_max_pool": ("jax",),  # JAX's CPU backend only, see `fast_path`
    "pointwise_matmul": ("jax",),  # JAX's CPU backend only
    "batched_equalization": ("tensorflow", "jax", "torch"),
}
_JAX_CPU_ONLY = ("sliced_max_pool", "pointwise_matmul")


def fast_paths_enabled() -> bool:
    """Whether fast paths are on (the default; see `set_fast_paths`)."""
    return _fast_paths["enabled"]


def set_fast_paths(enabled: bool) -> None:
    """Turns every fast path of the package on or off, for layers traced from then on.

    Args:
        enabled: False computes every layer with Keras' plain operations.

    Example:
    >>> from keras_resvit.base.backend import set_fast_paths, fast_path
    >>> set_fast_paths(False); fast_path("fused_batch_norm")
    False
    >>> set_fast_paths(True)
    """
    if not isinstance(enabled, bool):
        raise ValueError(f"enabled={enabled!r} must be True or False.")
    _fast_paths["enabled"] = enabled


@contextlib.contextmanager
def fast_paths(enabled: bool):
    """`set_fast_paths(enabled)` for the block, restoring the previous setting after it."""
    previous = fast_paths_enabled()
    set_fast_paths(enabled)
    try:
        yield
    finally:
        _fast_paths["enabled"] = previous


_fused_attention = {"enabled": os.environ.get("KERAS_RESVIT_FUSED_ATTENTION", "0") == "1"}


def fused_attention_enabled() -> bool:
    """Whether ViT self-attention runs through `keras.ops.dot_product_attention` (see
    `set_fused_attention`)."""
    return _fused_attention["enabled"]


def set_fused_attention(enabled: bool) -> None:
    """Self-attention of the ViTs through `keras.ops.dot_product_attention` (cuDNN or flash
    attention on a GPU, splash attention on a TPU, where the backend offers them for the
    shapes) instead of the matmul path, for layers traced from then on. Off by default
    (`KERAS_RESVIT_FUSED_ATTENTION=1` turns it on at import): measured slower for ViT-B/16
    training on an H200 (2464 against 2596 images/s: cuDNN refuses 197 tokens and XLA computes
    it; `benchmarks/NOTES.md`) and on the CPU. Both compute the same, forward and backward
    (tests/layers/test_fused_attention.py). Attention dropout while training keeps the matmul
    path.

    Args:
        enabled: True for `dot_product_attention`, False for the matmul path.

    Example:
    >>> from keras_resvit.base.backend import set_fused_attention, fused_attention_enabled
    >>> set_fused_attention(True); fused_attention_enabled()
    True
    >>> set_fused_attention(False)
    """
    if not isinstance(enabled, bool):
        raise ValueError(f"enabled={enabled!r} must be True or False.")
    _fused_attention["enabled"] = enabled


@contextlib.contextmanager
def fused_attention(enabled: bool):
    """`set_fused_attention(enabled)` for the block, restoring the previous setting after it."""
    previous = fused_attention_enabled()
    set_fused_attention(enabled)
    try:
        yield
    finally:
        _fused_attention["enabled"] = previous


def backend() -> str:
    """The Keras backend's name: "tensorflow", "jax" or "torch"."""
    return keras.backend.backend()


def configured_backend() -> str:
    """The backend Keras runs (or will run, once imported), read without importing Keras:
    `KERAS_BACKEND`, else the "backend" of Keras' config file, else "tensorflow"."""
    if "keras" in sys.modules and hasattr(sys.modules["keras"], "backend"):
        return keras.backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return json.load(f).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def on_jax_cpu() -> bool:
    """Whether JAX is the backend and computes on its CPU backend."""
    if backend() != "jax":
        return False
    import jax

    return jax.default_backend() == "cpu"


def fast_path(name: str) -> bool:
    """Whether the fast path `name` (a key of `FAST_PATHS`) runs here: fast paths are on and
    this backend (and, for the JAX CPU ones, its platform) is one it is written for."""
    if not _fast_paths["enabled"] or backend() not in FAST_PATHS[name]:
        return False
    return on_jax_cpu() if name in _JAX_CPU_ONLY else True


def in_tf_graph() -> bool:
    """Whether the caller is being traced into a TensorFlow graph (a `tf.data` map under any
    backend), where a layer must compute with TensorFlow operations."""
    from keras.src.utils import backend_utils

    return backend_utils.in_tf_graph()


def jit_compiles_any_size() -> bool:
    """Whether a layer that resamples to its input's size can be XLA-compiled at any size.
    Not on TensorFlow, whose graphs for sizes unknown until they run keep the resize op XLA has
    no kernel for; there such a layer sets `supports_jit = False`, and Keras'
    `jit_compile="auto"` then runs the model as a plain graph."""
    return backend() != "tensorflow"


def check_grid_at_run_time(images, rows, columns, message, name):
    """`images` (batch, height, width, channels) behind a check that their height and width
    are multiples of `rows` and `columns`, for a size unknown while a TensorFlow graph is
    traced (Keras' TensorFlow trainer traces one graph for the sizes it has seen). The graph
    then fails with `InvalidArgumentError`: its message is `message` followed by the height and
    width, or under XLA, which compiles assertions away, the failing node is `name` (a reshape
    that only such sizes pass). JAX and PyTorch know every size when a layer is called, where
    callers check it themselves: `images` come back unchanged."""
    if backend() != "tensorflow":
        return images
    import tensorflow as tf

    shape = tf.shape(images)
    whole = tf.logical_and(shape[1] % rows == 0, shape[2] % columns == 0)
    check = tf.debugging.Assert(whole, [message, "height, width:", shape[1], shape[2]])
    with tf.control_dependencies([check]):
        images = tf.identity(images)  # TensorFlow's graph optimizer takes out the reshapes
    grid = [shape[0], shape[1] // rows, rows, shape[2] // columns, columns, shape[3]]
    return tf.reshape(tf.reshape(images, grid, name=name), shape)


def resize_images(images, size, interpolation, antialias=False):
    """`keras.ops.image.resize` (channels last), also where `size` holds tensors: a TensorFlow
    graph of an input of unknown size, whose sizes Keras' front end refuses; there the op it
    calls, `tf.image.resize`, with the same arguments."""
    if all(isinstance(side, int) for side in size):
        return keras.ops.image.resize(
            images, size, interpolation=interpolation, antialias=antialias,
            data_format="channels_last",
        )  # fmt: skip
    import tensorflow as tf

    return tf.image.resize(images, tf.stack(size), method=interpolation, antialias=antialias)


def keras_mask(x):
    """The Keras mask a tensor carries, or None."""
    from keras.src.backend.common.masking import get_keras_mask

    return get_keras_mask(x)


def in_shape_trace() -> bool:
    """Whether Keras is tracing a computation only for its output shapes (a layer's first
    call builds it so, `compute_output_spec`): the values computed there are thrown away."""
    from keras.src.backend.common.symbolic_scope import in_symbolic_scope

    return in_symbolic_scope()


def is_data_layer(layer) -> bool:
    """Whether `layer` is one of Keras' layers that run inside `tf.data` under any backend
    (their base class, `DataLayer`, has no public name)."""
    from keras.src.layers.preprocessing.data_layer import DataLayer

    return isinstance(layer, DataLayer)


def count_values(ops, keys, length):
    """How often each of `0 .. length - 1` occurs in the int32 vector `keys` (all in range),
    with the ops of `ops` (a layer's `self.backend`, TensorFlow inside `tf.data`): TensorFlow's
    bincount there (6x faster on the CPU than a scatter-add), else a scatter-add, whose static
    output shape JAX's `jit` needs."""
    if ops.name == "tensorflow":
        return ops.numpy.bincount(keys, minlength=length)
    return ops.core.scatter(ops.numpy.reshape(keys, (-1, 1)), ops.numpy.ones_like(keys), (length,))


def data_layer():
    """Keras' base class of its layers that run inside `tf.data` with TensorFlow ops whatever
    the backend, without a `training` argument (`keras.layers.Rescaling`'s; no public name)."""
    from keras.src.layers.preprocessing.data_layer import DataLayer

    return DataLayer


def image_preprocessing_layer():
    """Keras' base class of its image augmentation layers (no public name): subclasses run
    inside `tf.data` with TensorFlow ops whatever the backend, images or batches."""
    from keras.src.layers.preprocessing.image_preprocessing import base_image_preprocessing_layer

    return base_image_preprocessing_layer.BaseImagePreprocessingLayer


BF16_GPU_CAPABILITY = (8, 0)

# CPU features (Linux /proc/cpuinfo) with native bfloat16 matmuls: x86 AVX512-BF16 and AMX
# (Intel Cooper Lake, Sapphire Rapids and later; AMD Zen 4 and later), Arm BF16. Elsewhere
# bfloat16 is emulated and trains slower than float32.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})

# XLA's CPU backend (jax 0.10) hands convolutions to YNNPACK by default; at ResNet's shapes
# its own convolutions are faster, with the same results, so `configure_xla_cpu` takes that
# fusion out on JAX (figures in benchmarks/NOTES.md, "Fast paths").
XLA_CPU_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "-individual_convolution"}

# XLA aborts on a flag it does not know, and defaults change between releases: the jax
# releases these flags were measured with.
XLA_CPU_FLAGS_JAX = ("0.10.",)

XLA_CPU_OPT_OUT = "KERAS_RESVIT_XLA_CPU_FLAGS"


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
    """Adds `XLA_CPU_FLAGS` to `XLA_FLAGS` on the JAX backend; called when the package loads,
    without importing Keras or JAX.

    XLA reads `XLA_FLAGS` when JAX first computes, so this takes effect when keras_resvit is
    imported before any JAX computation, and affects every JAX CPU computation of the process.
    Only with the jax releases in `XLA_CPU_FLAGS_JAX`. A flag the user already set in
    `XLA_FLAGS` is left as it is; `KERAS_RESVIT_XLA_CPU_FLAGS=0` turns this off.

    Returns:
        The flags added, e.g. `["--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"]`.
    """
    if configured_backend() != "jax" or environ.get(XLA_CPU_OPT_OUT, "1") == "0":
        return []
    jax = sys.modules.get("jax")
    try:
        version = jax.__version__ if jax else importlib.metadata.version("jax")
    except importlib.metadata.PackageNotFoundError:
        return []
    if not version.startswith(XLA_CPU_FLAGS_JAX):
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
    >>> from keras_resvit.base.backend import gradient
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
