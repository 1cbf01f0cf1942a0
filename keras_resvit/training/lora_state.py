"""The LoRA layers' share of a resume state.

Keras saves a LoRA layer's kernel with its update merged in and without its factors, which
load as zero: a run resumed from Keras' weights alone would go on with both factors at zero,
where neither gets a gradient, and adapt nothing more. A resume state therefore keeps every
variable of the LoRA layers as it is (`stepN.lora.npz`, beside `stepN.weights.h5`), and the
resumed run sets them back after loading the weights.
"""

import zipfile

import keras
import numpy as np

from keras_resvit.base.files import atomic_path, first_line
from keras_resvit.models.lora import lora_variables, revive_lora


def save_lora_state(model, directory, step) -> str | None:
    """Writes the raw variables of `model`'s LoRA layers to `directory/stepN.lora.npz`
    (through a temporary file); returns its name, or None for a model without LoRA."""
    variables = lora_variables(model)
    if not variables:
        return None
    name = f"step{step}.lora.npz"
    with atomic_path(directory / name) as tmp, open(tmp, "wb") as f:
        np.savez(f, *(np.asarray(keras.ops.convert_to_numpy(v)) for v in variables))
    return name


def restore_lora_state(model, path) -> None:
    """Sets the variables of `model`'s LoRA layers from `path` (`save_lora_state`'s file).

    `path` None (a state saved before LoRA layers kept their variables): each LoRA layer
    whose factors the weights file left at zero gets a fresh `lora_kernel_a`, as `enable_lora`
    on a loaded model does, so that it learns again.

    Raises:
        ValueError: the file does not hold one array of the right shape per variable.
    """
    variables = lora_variables(model)
    if path is None:
        revive_lora(model)
        return
    afresh = "start afresh with overwrite=True (keras-resvit train --overwrite) or a new output_dir"
    try:
        with np.load(path, allow_pickle=False) as arrays:
            values = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"resume LoRA file {str(path)!r} cannot be loaded ({first_line(error)}); {afresh}."
        ) from None
    if [x.shape for x in values] != [tuple(v.shape) for v in variables]:
        raise ValueError(
            f"resume LoRA file {str(path)!r} holds {len(values)} arrays that do not match the "
            f"model's {len(variables)} LoRA layer variables: the run was made with another "
            f"enable_lora (rank or targets); call it as the run did, or {afresh}."
        )
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)
