"""What every converter shares: assigning arrays by variable path, with shape checks.

Converters translate a source (a model, a checkpoint) into `{variable path: array}` for one of
our models, e.g. `{"stage1_block1_conv1/kernel": ..., "stage1_block1_bn1/moving_mean": ...}`;
`assign_weights` checks that the source covers exactly the model's weights, shape for shape,
so weights of another architecture fail loudly instead of loading half-way.
"""

import re
import zipfile

import keras
import numpy as np

from keras_resvit.base.files import as_path
from keras_resvit.base.validation import check_model
from keras_resvit.models.common import is_vit


def _mismatch(model, path, expected, found, source):
    layer = path.rsplit("/", 1)[0]
    return ValueError(
        f"{source} does not fit model {model.name!r}: layer {layer!r} expects {path!r} of "
        f"shape {tuple(expected)}, found {tuple(found)}; the weights belong to another "
        "architecture (or other build arguments)."
    )


def assign_weights(model: keras.Model, values: dict, source: str, optional=()) -> keras.Model:
    """Sets `model`'s variables from `{variable path: array}`, all or nothing.

    Args:
        model: the target model.
        values: arrays keyed by variable path (`variable.path`, e.g. "stem_conv/kernel").
        source: a few words naming the source, used in error messages.
        optional: prefixes of variable paths the source may leave untouched (e.g. the
            classifier when the source has no head).

    Returns:
        `model`, for chaining.

    Raises:
        ValueError: a shape differs (naming the layer, expected and found shapes), the source
            lacks weights of the model, or it has weights the model lacks.

    Example:
    >>> import keras
    >>> import numpy as np
    >>> from keras_resvit.weights.common import assign_weights
    >>> inputs = keras.Input((2,))
    >>> model = keras.Model(inputs, keras.layers.Dense(1, name="d")(inputs))
    >>> _ = assign_weights(model, {"d/kernel": np.ones((2, 1)), "d/bias": np.zeros(1)}, "demo")
    >>> keras.ops.convert_to_numpy(model(np.array([[1.0, 2.0]])))
    array([[3.]], dtype=float32)
    >>> assign_weights(model, {"d/kernel": np.ones((3, 1)), "d/bias": np.zeros(1)}, "demo")
    Traceback (most recent call last):
    ValueError: demo does not fit model 'functional': layer 'd' expects 'd/kernel'...
    """
    variables = {v.path: v for v in model.weights}
    # Shapes first: a layer whose shape differs says most about what does not fit.
    for path, array in values.items():
        if path in variables and tuple(variables[path].shape) != tuple(np.shape(array)):
            raise _mismatch(model, path, variables[path].shape, np.shape(array), source)
    unknown = sorted(set(values) - set(variables))
    if unknown:
        raise ValueError(
            f"{source} has weights that model {model.name!r} lacks: {unknown[:5]}"
            f"{' ...' if len(unknown) > 5 else ''}; the weights belong to another architecture."
        )
    missing = sorted(
        path
        for path, variable in variables.items()
        if path not in values and variable.trainable and not path.startswith(tuple(optional))
    )
    if missing:
        raise ValueError(
            f"{source} has no weights for {missing[:5]}{' ...' if len(missing) > 5 else ''} of "
            f"model {model.name!r}; the weights belong to another architecture."
        )
    for path, array in values.items():
        variables[path].assign(np.asarray(array, dtype=variables[path].dtype))
    return model


def check_target(model, vit: bool, source: str) -> None:
    """`model=` must be one of our models of the kind the weights fill: a ViT (plain or
    hybrid: it has position embeddings) when `vit`, else a ResNet."""
    check_model("model", model)
    if is_vit(model) != vit:
        kind, other = ("a ViT", "a ResNet") if vit else ("a ResNet", "a ViT")
        raise ValueError(
            f"model={model.name!r} is {other}, but {source} holds {kind}'s weights; pass "
            f"{kind} of ours (e.g. kr.create_model({'vit_b16' if vit else 'resnet50'!r}))."
        )


def check_bottleneck_stride(model, version: str, source: str, hint: str = "") -> None:
    """`model` (a ResNet of ours) must stride its bottlenecks where the weights' net did.

    v1 strides a downsampling bottleneck's first 1x1 conv, v1.5 its 3x3; the weights have the
    same shapes in both, so only the model's layers can tell, and a mismatch loads silently
    with other outputs.

    Raises:
        ValueError: naming the model's layout, the weights' `version` and what to pass.
    """
    strided = [
        layer.name
        for layer in model.layers
        if re.search(r"_conv1$", layer.name)
        and tuple(getattr(layer, "kernel_size", ())) == (1, 1)
        and tuple(getattr(layer, "strides", (1, 1))) != (1, 1)
    ]
    found = "v1" if strided else "v1.5"
    if found == version:
        return
    where = f"layer {strided[0]!r} strides its 1x1" if strided else "its 3x3 convs stride"
    raise ValueError(
        f"model={model.name!r} is a {found} ResNet ({where}), but {source} holds {version} "
        f"weights (v1.5: a downsampling bottleneck strides its 3x3 conv, v1 its first 1x1); "
        f"the shapes agree but the outputs would not. Use a {version} model (e.g. "
        f"kr.create_model({'resnet50' if version == 'v1.5' else 'resnet50v1'!r})){hint}."
    )


def refuse_build_arguments(given: dict, defaults: dict) -> None:
    """Build arguments `given` away from their `defaults` together with `model=`, which they
    could not change: a ValueError naming them, never silently ignored."""
    given = {k: v for k, v in given.items() if k not in defaults or v != defaults[k]}
    if given:
        names = ", ".join(f"{key}={value!r}" for key, value in given.items())
        raise ValueError(
            f"{names} cannot be combined with model=: build arguments shape the model the "
            "converter builds, and `model` is already built. Drop them, or drop model=."
        )


def fold_into_batchnorm(prefix, moving_mean, shift, values):
    """Adds `{prefix}/moving_mean` to `values` with a constant `shift` folded in exactly.

    BatchNorm(y + shift) == BatchNorm'(y) when BatchNorm' has moving_mean - shift: a conv bias
    (or a bias carried along a residual stream) disappears without changing any output.
    """
    values[f"{prefix}/moving_mean"] = np.asarray(moving_mean) - np.asarray(shift)


def read_npz_arrays(path, what: str, rename=lambda key: key) -> dict:
    """`{rename(key): array}` of an `.npz` archive, read without pickle.

    Raises:
        FileNotFoundError: `path` is not a file (the message names `what` was expected).
        ValueError: `path` is not a str or path, or not a readable `.npz` archive.
    """
    path = as_path("path", path)
    if not path.is_file():
        raise FileNotFoundError(f"path={str(path)!r} is not a file; expected {what}.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {rename(key): archive[key] for key in archive.files}
    except NPZ_ERRORS as error:
        raise ValueError(
            f"path={path.name!r} is not a readable .npz archive: {npz_problem(error)}"
        ) from error


# What `np.load(path, allow_pickle=False)` of a file that is no `.npz` of arrays raises.
NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)


def npz_problem(error) -> str:
    """Why NumPy could not read an `.npz` file, in words. NumPy takes bytes that are neither
    a zip archive nor an array for a pickle, and its message suggests unpickling them: the
    package never unpickles a file."""
    text = str(error)
    if isinstance(error, EOFError):  # NumPy's "No data left in file"
        return "the file is empty"
    if isinstance(error, zipfile.BadZipFile) or text.startswith("This file contains pickled"):
        return "its bytes are not a zip archive of NumPy arrays"
    if "Object arrays cannot be loaded" in text:
        return "it holds object arrays (pickled Python objects), which are never unpickled"
    return text
