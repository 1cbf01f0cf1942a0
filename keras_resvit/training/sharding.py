"""Model parallelism: which kernels a `keras.distribution.ModelParallel` splits over devices.

A ViT's transformer blocks are split as Megatron-LM splits them (Shoeybi et al., 2019, §3):
the attention's query/key/value projections column-parallel (by heads) and its output
projection row-parallel (over the same heads), the MLP's first dense column-parallel and its
second row-parallel, so each pair needs one all-reduce. A ResNet's convolutions (hybrid, BiT
and SE ones too) split their output channels. Norms, embeddings (a ViT's patch embedding
too) and the head are replicated. Keras' `ModelParallel` places the variables and JAX's
compiler inserts the collectives; nothing here communicates.

`ModelParallel` is the JAX backend's: `model_parallel_distribution` refuses the others, while
`layout_map` and `device_mesh` are data and work on any backend. Variables take their layouts
when they are created, so build the model inside `distribution.scope()`.
"""

import math
import re

import keras

from keras_resvit.base.backend import backend
from keras_resvit.base.validation import check_int, check_model

MODEL_AXIS = "model"
BATCH_AXIS = "batch"
# Devices on the model axis by default (the rest split the batch): 4 divides every width and
# head count from ViT-B up (12 and 16 heads) and every ResNet's channels, and keeps the
# all-reduces of model parallelism among the devices of one host.
DEFAULT_MODEL_PARALLELISM = 4

_BLOCK = r"(?:.*/)?encoder_block\d+_"
_UNIT = r"(?:.*/)?(?:stem|stage\d+_block\d+)_"
# Family -> (variable path pattern, rank, the dimension split over the model axis).
RULES = {
    "vit": (
        (_BLOCK + r"attention/(?:query|key|value)/kernel", 3, 1),  # (width, heads, head_dim)
        (_BLOCK + r"attention/(?:query|key|value)/bias", 2, 0),  # (heads, head_dim)
        (_BLOCK + r"attention/attention_output/kernel", 3, 0),  # (heads, head_dim, width)
        (_BLOCK + r"mlp_dense1/kernel", 2, 1),  # (width, mlp_dim)
        (_BLOCK + r"mlp_dense1/bias", 1, 0),
        (_BLOCK + r"mlp_dense2/kernel", 2, 0),  # (mlp_dim, width)
    ),
    "resnet": (
        (_UNIT + r"(?:conv\d*|shortcut_conv|se_reduce|se_expand)/kernel", 4, 3),  # HWIO
        (_UNIT + r"(?:se_reduce|se_expand)/bias", 1, 0),
    ),
}


def _layout(rank, dim, model_axis):
    return tuple(model_axis if i == dim else None for i in range(rank))


def _axis_size(mesh, axis):
    return mesh.shape[list(mesh.axis_names).index(axis)]


def _check_axis_names(model_axis, batch_axis):
    for argument, value in (("model_axis", model_axis), ("batch_axis", batch_axis)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{argument}={value!r} must be a non-empty string.")
    if model_axis == batch_axis:
        raise ValueError(f"model_axis={model_axis!r} must differ from batch_axis={batch_axis!r}.")


# A device as Keras names it (`keras.distribution.list_devices()`): its type and index.
DEVICE_NAME = re.compile(r"[A-Za-z_]+:\d+")


def _check_model_parallelism(argument, value, count):
    check_int(argument, value)
    if count % value:
        divisors = [d for d in range(1, count + 1) if count % d == 0]
        raise ValueError(
            f"{argument}={value!r} must divide the {count} devices; valid values: {divisors}."
        )


def _devices_of_type(device_type):
    """The names of this process's devices of one type ("cpu", "gpu", "tpu"), every host's."""
    try:
        return keras.distribution.list_devices(device_type)
    except RuntimeError:  # JAX: no platform of that type here
        return []


def _check_devices_exist(devices):
    """ValueError unless every name in `devices` (well-formed, see `device_mesh`) is a device
    this process can place variables on."""
    types = {name.split(":")[0] for name in devices}
    available = {name for device_type in types for name in _devices_of_type(device_type)}
    missing = [name for name in devices if name not in available]
    if missing:
        raise ValueError(
            f"devices={list(devices)!r} names devices this process does not have: {missing}; "
            f"available: {keras.distribution.list_devices()} (simulated CPU devices need "
            "XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX starts)."
        )


def device_mesh(
    model_parallelism: int | None = None,
    devices: list | None = None,
    *,
    model_axis: str = MODEL_AXIS,
    batch_axis: str = BATCH_AXIS,
) -> keras.distribution.DeviceMesh:
    """A (batch, model) `keras.distribution.DeviceMesh` over `devices`.

    Args:
        model_parallelism: devices along the model axis; it must divide the number of
            devices. None: the greatest common divisor of the device count and
            `DEFAULT_MODEL_PARALLELISM` (4), so 8 devices make a 2×4 mesh.
        devices: device names, as `keras.distribution.list_devices()` gives them (the
            default: all of them, every host's after `keras.distribution.initialize`). A
            mesh is data: the names need not be this process's devices, so a `layout_map`
            can be planned for a larger machine; `model_parallel_distribution` checks them.
        model_axis: the name of the axis that splits kernels.
        batch_axis: the name of the axis that splits the batch.

    Returns:
        A mesh of shape `(len(devices) // model_parallelism, model_parallelism)`.

    Raises:
        ValueError: no devices, names that are not 'type:index' or repeat, or a
            `model_parallelism` that does not divide them.

    Example:
    >>> from keras_resvit.training.sharding import device_mesh
    >>> mesh = device_mesh(4, devices=[f"cpu:{i}" for i in range(8)])
    >>> mesh.shape, mesh.axis_names
    ((2, 4), ('batch', 'model'))
    """
    _check_axis_names(model_axis, batch_axis)
    if devices is None:
        devices = keras.distribution.list_devices()
    names = devices if isinstance(devices, (list, tuple)) else ()
    if (
        not names
        or not all(isinstance(name, str) and DEVICE_NAME.fullmatch(name) for name in names)
        or len(set(names)) != len(names)
    ):
        raise ValueError(
            f"devices={devices!r} must be a non-empty list of distinct device names "
            "'type:index' ('cpu:0', 'gpu:1', 'tpu:3'), such as "
            "keras.distribution.list_devices() returns."
        )
    count = len(devices)
    if model_parallelism is None:
        model_parallelism = math.gcd(count, DEFAULT_MODEL_PARALLELISM)
    _check_model_parallelism("model_parallelism", model_parallelism, count)
    shape = (count // model_parallelism, model_parallelism)
    return keras.distribution.DeviceMesh(shape, (batch_axis, model_axis), devices=list(devices))


def _mesh(mesh, model_axis, batch_axis):
    if mesh is None or (isinstance(mesh, int) and not isinstance(mesh, bool)):
        if mesh is not None:
            _check_model_parallelism("mesh", mesh, len(keras.distribution.list_devices()))
        return device_mesh(mesh, model_axis=model_axis, batch_axis=batch_axis)
    if not isinstance(mesh, keras.distribution.DeviceMesh):
        raise ValueError(
            f"mesh={mesh!r} is not valid; expected a keras.distribution.DeviceMesh, an int "
            "(the devices on the model axis) or None."
        )
    if model_axis not in mesh.axis_names:
        raise ValueError(
            f"model_axis={model_axis!r} is not an axis of the mesh; expected one of "
            f"{list(mesh.axis_names)}."
        )
    return mesh


def layout_map(
    model: keras.Model | None = None,
    mesh: keras.distribution.DeviceMesh | int | None = None,
    *,
    model_axis: str = MODEL_AXIS,
    batch_axis: str = BATCH_AXIS,
) -> keras.distribution.LayoutMap:
    """The `keras.distribution.LayoutMap` that splits a ViT's or a ResNet's kernels.

    Attention query/key/value kernels and biases are split by heads and the output projection
    over its input heads; the MLP's first dense kernel and bias by output features and the
    second dense kernel by input features; convolution kernels by output channels (`RULES`).
    Every other variable is replicated.

    With a model, the keys are its variables' escaped paths, and a variable whose split
    dimension the model axis does not divide is left out (replicated). Without one, the keys
    are `RULES`' patterns for every family, which match the names of `kr.build_vit`,
    `kr.build_resnet` and `kr.build_hybrid_vit` models; JAX refuses to create a variable whose
    split dimension the axis does not divide, so hand such a map to `ModelParallel` only for
    widths that divide, or use `model_parallel_distribution`, which replicates those.

    Args:
        model: a model whose variables to read (it stays as it is), or None.
        mesh: a `keras.distribution.DeviceMesh` with a `model_axis` axis, an int (the devices
            on the model axis of a mesh over all devices, see `device_mesh`) or None (the
            default `device_mesh()`).
        model_axis: the mesh axis that splits kernels.
        batch_axis: the batch axis of a mesh this function makes.

    Returns:
        A `LayoutMap` on that mesh.

    Raises:
        ValueError: a model that is not a `keras.Model`, or a bad mesh or axis name.

    Example:
    >>> from keras_resvit.training.sharding import device_mesh, layout_map
    >>> import keras_resvit as kr
    >>> model = kr.build_vit(None, hidden_size=32, num_layers=1, num_heads=4, mlp_dim=64,
    ...                      patch_size=8, image_size=32, num_classes=5)
    >>> mesh = device_mesh(4, devices=[f"cpu:{i}" for i in range(8)])
    >>> layouts = layout_map(model, mesh)
    >>> layouts["encoder_block1_attention/query/kernel"].axes
    (None, 'model', None)
    >>> layouts["encoder_block1_mlp_dense2/kernel"].axes
    ('model', None)
    >>> print(layouts["encoder_norm/gamma"])  # replicated
    None
    """
    _check_axis_names(model_axis, batch_axis)
    mesh = _mesh(mesh, model_axis, batch_axis)
    if model is not None:
        check_model("model", model)
    layouts = keras.distribution.LayoutMap(mesh)
    rules = [rule for family in RULES.values() for rule in family]
    if model is None:
        for pattern, rank, dim in rules:
            layouts[pattern] = _layout(rank, dim, model_axis)
        return layouts
    size = _axis_size(mesh, model_axis)
    for variable in model.variables:
        shape = tuple(variable.shape)
        for pattern, rank, dim in rules:
            if re.fullmatch(pattern, variable.path) and len(shape) == rank:
                if shape[dim] % size == 0:
                    layouts[re.escape(variable.path)] = _layout(rank, dim, model_axis)
                break
    return layouts


class _DivisibleModelParallel(keras.distribution.ModelParallel):
    """`ModelParallel` that replicates a variable's dimension when its mesh axis does not
    divide it, instead of failing to create the variable: the family patterns of `layout_map`
    then serve every width (ViT-Ti's 3 heads on a 4-device model axis, say)."""

    def get_variable_layout(self, variable):
        layout = super().get_variable_layout(variable)
        if not isinstance(layout, keras.distribution.TensorLayout):
            return layout
        if len(layout.axes) != len(variable.shape):  # a pattern met a layer of another kind
            return keras.distribution.TensorLayout((None,) * len(variable.shape), self.device_mesh)
        axes = tuple(
            None if axis is not None and size % _axis_size(self.device_mesh, axis) else axis
            for axis, size in zip(layout.axes, variable.shape, strict=True)
        )
        if axes == layout.axes:
            return layout
        return keras.distribution.TensorLayout(axes, self.device_mesh)


def model_parallel_distribution(
    devices: list | None = None,
    model_parallelism: int | None = None,
    model: keras.Model | None = None,
    *,
    model_axis: str = MODEL_AXIS,
    batch_axis: str = BATCH_AXIS,
) -> tuple:
    """A `keras.distribution.ModelParallel` over a (batch, model) mesh, and its batch replicas.

    JAX backend only. Build (or load) and compile the model inside `distribution.scope()`;
    its kernels are then split as `layout_map` says, and a dimension the model axis does not
    divide is replicated.

    Args:
        devices: names of devices this process has (default:
            `keras.distribution.list_devices()`).
        model_parallelism: devices on the model axis (default: see `device_mesh`).
        model: a model whose variable paths and shapes to read (see `layout_map`), or None
            for the patterns that match this package's builders.
        model_axis: the mesh axis that splits kernels.
        batch_axis: the mesh axis that splits the batch.

    Returns:
        `(distribution, batch_replicas)`: the global batch must divide by `batch_replicas`,
        the size of the batch axis.

    Raises:
        ValueError: a backend other than JAX, a bad argument (see `device_mesh`), or
            `devices` naming devices this process does not have.

    Example:
    >>> from keras_resvit.training.sharding import model_parallel_distribution
    >>> import keras, keras_resvit as kr
    >>> if keras.backend.backend() == "jax":  # ModelParallel is JAX's
    ...     distribution, replicas = model_parallel_distribution()
    ...     with distribution.scope():
    ...         model = kr.build_resnet(8, stem="cifar", num_classes=4, input_shape=(16, 16, 3))
    """
    if backend() != "jax":
        raise ValueError(
            "model_parallel_distribution needs the JAX backend (keras.distribution's "
            f"ModelParallel is JAX's); the backend is {backend()!r}. Set KERAS_BACKEND=jax, or "
            'train data-parallel with distribution="mirrored" or "tpu".'
        )
    mesh = device_mesh(model_parallelism, devices, model_axis=model_axis, batch_axis=batch_axis)
    _check_devices_exist(mesh.devices.flatten().tolist())
    layouts = layout_map(model, mesh, model_axis=model_axis, batch_axis=batch_axis)
    distribution = _DivisibleModelParallel(layout_map=layouts, batch_dim_name=batch_axis)
    return distribution, _axis_size(mesh, batch_axis)
