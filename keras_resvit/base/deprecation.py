"""Old public names kept working, with a `DeprecationWarning` that names the new one."""

import warnings


def deprecated_names(module: str, aliases: dict):
    """A module `__getattr__` (PEP 562) serving `aliases` ({old name: (new name, value)}) with a
    warning, so that only code that still uses an old name hears of it.

    >>> __getattr__ = deprecated_names("demo", {"PRESETS": ("NORMALIZATION_PRESETS", {})})
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     value = __getattr__("PRESETS")
    >>> str(caught[0].message)
    'demo.PRESETS is deprecated; use demo.NORMALIZATION_PRESETS.'
    """

    def __getattr__(name):
        if name not in aliases:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new, value = aliases[name]
        warnings.warn(
            f"{module}.{name} is deprecated; use {module}.{new}.", DeprecationWarning, stacklevel=2
        )
        return value

    return __getattr__
