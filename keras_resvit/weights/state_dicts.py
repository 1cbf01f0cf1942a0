"""State-dict files (timm, torchvision, a user's `torch.save(model.state_dict())`) read as
`{name: numpy array}`, never through pickle: `.safetensors` (with the `safetensors` package),
`.npz`, and `.pth`/`.pt`/`.bin` through `torch.load(weights_only=True)` when PyTorch is
installed."""

import pickle
import struct
import zipfile

import numpy as np

from keras_resvit.base.files import as_path, first_line
from keras_resvit.weights.common import npz_problem

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
SUFFIXES = (".safetensors", ".npz", *TORCH_SUFFIXES)


def read_state_dict(path) -> dict:
    """The arrays of a state-dict file as `{name: numpy array}`, never through pickle.

    Args:
        path: `.safetensors` (needs the `safetensors` package), `.npz`, or a PyTorch
            `.pth`/`.pt`/`.bin` (needs PyTorch; read with `torch.load(weights_only=True)`).

    Raises:
        FileNotFoundError: `path` is not a file.
        ValueError: not a str or path, another suffix, an unreadable file, or a missing
            optional package.
    """
    path = as_path("path", path)
    if not path.is_file():
        raise FileNotFoundError(f"path={str(path)!r} is not a file; expected a state dict.")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"path={path.name!r} has suffix {suffix!r}; expected one of {SUFFIXES}.")
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        if suffix == ".safetensors":
            from safetensors.numpy import load_file

            try:
                return load_file(str(path))
            except Exception as error:  # noqa: BLE001 - safetensors' own error is no OSError
                raise ValueError(first_line(error)) from error
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
        others = (
            sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
            if isinstance(state, dict)
            else [type(state).__name__]
        )
        if others:
            raise ValueError(
                f"found {others[:5]} where a flat {{name: tensor}} dict was expected (as "
                "`torch.save(model.state_dict(), path)` writes)"
            )
        return {key: value.float().numpy() for key, value in state.items()}
    except ImportError as error:
        package = "safetensors" if suffix == ".safetensors" else "torch"
        raise ValueError(
            f"path={path.name!r} needs the {package!r} package to be read; install it, or "
            "convert the state dict to .npz."
        ) from error
    except (pickle.UnpicklingError, LookupError) as error:
        # weights_only refuses anything but tensors and plain containers; a file that is no
        # zip archive is read as a legacy pickle, where text fails in the unpickler's tables
        # (e.g. "KeyError: 101") or on its empty stack (IndexError).
        raise ValueError(
            f"path={path.name!r} is not a readable state dict: it is corrupt, not written by "
            "torch.save, or holds objects other than tensors, which are never unpickled."
        ) from error
    except (OSError, ValueError, RuntimeError, EOFError, struct.error, zipfile.BadZipFile) as error:
        # A truncated or foreign file fails in the zip, pickle or tensor reader alike.
        why = first_line(npz_problem(error) if suffix == ".npz" else error)
        raise ValueError(
            f"path={path.name!r} is not a readable state dict (truncated or corrupt): {why}"
        ) from error
