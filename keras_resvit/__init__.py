"""keras_resvit: ResNets and Vision Transformers for Keras 3 on any backend.

The public API below is imported on first use (PEP 562): `import keras_resvit` loads neither
Keras nor a backend, so `keras-resvit --help` and `list` answer at once. On the JAX backend,
importing sets XLA's CPU flags before JAX computes (`keras_resvit.base.backend.configure_xla_cpu`;
`KERAS_RESVIT_XLA_CPU_FLAGS=0` turns that off). Once Keras is loaded, the package applies its
corrections to Keras (`keras_resvit.base.keras_fixes`: a model keeps its weights and stays
usable when `fit`, `evaluate` or `predict` raises).
"""

import importlib
import sys
import types

from keras_resvit.base.backend import configure_xla_cpu

__version__ = "0.1.0"

# Public name -> the module that defines it; the modules in `_MODULES` are themselves public.
_MODULES = (
    "data",
    "evaluate",
    "evaluation",
    "files",
    "layers",
    "models",
    "training",
    "viz",
    "weights",
)
_API = {
    "build_alexnet": "keras_resvit.models.baselines",
    "build_efficientnetv2": "keras_resvit.models.baselines",
    "build_hybrid_vit": "keras_resvit.models.hybrid",
    "build_resnet": "keras_resvit.models.resnet",
    "build_vgg": "keras_resvit.models.baselines",
    "build_vit": "keras_resvit.models.vit",
    "count_macs": "keras_resvit.models.complexity",
    "count_params": "keras_resvit.models.complexity",
    "create_model": "keras_resvit.factory",
    "data": "keras_resvit.data",
    "enable_lora": "keras_resvit.models.lora",
    "evaluate": "keras_resvit.evaluate",
    "evaluation": "keras_resvit.evaluation",
    "export": "keras_resvit.export",
    "feature_layers": "keras_resvit.models.features",
    "feature_pyramid": "keras_resvit.models.features",
    "files": "keras_resvit.files",
    "intermediate_model": "keras_resvit.models.features",
    "layers": "keras_resvit.layers",
    "layout_map": "keras_resvit.training.sharding",
    "list_models": "keras_resvit.models.registry",
    "list_weights": "keras_resvit.weights.catalog",
    "load_model": "keras_resvit.files",
    "merge_lora": "keras_resvit.models.lora",
    "models": "keras_resvit.models",
    "predict": "keras_resvit.predict",
    "pretrain_masked_patches": "keras_resvit.training.masked_pretraining",
    "replace_head": "keras_resvit.models.common",
    "resize_vit": "keras_resvit.models.vit",
    "train": "keras_resvit.training.train",
    "training": "keras_resvit.training",
    "viz": "keras_resvit.viz",
    "weights": "keras_resvit.weights",
}
__all__ = sorted(name for name in _API if name != "evaluate")  # `evaluate`: deprecated


def __getattr__(name):
    if name not in _API:
        raise AttributeError(f"module 'keras_resvit' has no attribute {name!r}")
    module = importlib.import_module(_API[name])
    _correct_keras()
    value = module if name in _MODULES else getattr(module, name)
    globals()[name] = value
    return value


def _correct_keras():
    """Applies the package's corrections to Keras (`keras_resvit.base.keras_fixes`) once Keras
    is loaded; importing the package alone loads nothing."""
    if "keras" in sys.modules:
        importlib.import_module("keras_resvit.base.keras_fixes").recover_from_errors_in_fit()


def __dir__():
    return sorted({*globals(), *_API})


class _Package(types.ModuleType):
    """Keeps `kr.export` and `kr.predict` the functions when Python's import system sets the
    package attribute of the modules that define them (`keras_resvit.export`, `.predict`)."""

    def __setattr__(self, name, value):
        if isinstance(value, types.ModuleType) and name in _API and name not in _MODULES:
            self.__dict__.pop(name, None)  # resolved again, from `_API`, when next read
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

# Importing computes nothing, so XLA has not read its flags yet (see configure_xla_cpu).
configure_xla_cpu()

if "keras" in sys.modules:
    # Keras is loaded already (a notebook's `import keras` first): registering the package's
    # classes costs little, and `keras.saving.load_model` then reads the package's files.
    importlib.import_module("keras_resvit.files")
    _correct_keras()
