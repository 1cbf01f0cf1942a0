"""Old public names kept working, with a `DeprecationWarning` that names the new one."""

import importlib
import sys
import warnings


def deprecated_names(module: str, aliases: dict):
    """A module `__getattr__` (PEP 562) serving `aliases` with a warning, so that only code that
    still uses an old name hears of it.

    `aliases` maps an old name to `(new name, value)`: a new name in the same module, or the
    full dotted name of one that moved to another module. A moved value may be None; it is then
    imported from that module when first asked for (an alias may point anywhere in the package
    without its module importing the new one up front).

    >>> __getattr__ = deprecated_names(
    ...     "demo", {"PRESETS": ("NORMALIZATION_PRESETS", {}), "dumps": ("json.dumps", None)}
    ... )
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     value = __getattr__("PRESETS")
    ...     dumps = __getattr__("dumps")
    >>> for warning in caught:
    ...     print(warning.message)
    demo.PRESETS is deprecated; use demo.NORMALIZATION_PRESETS.
    demo.dumps is deprecated; use json.dumps.
    >>> dumps([1])
    '[1]'
    """

    def __getattr__(name):
        if name not in aliases:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new, value = aliases[name]
        moved = "." in new
        warnings.warn(
            f"{module}.{name} is deprecated; use {new if moved else f'{module}.{new}'}.",
            DeprecationWarning,
            stacklevel=2,
        )
        if value is None and moved:
            where, attribute = new.rsplit(".", 1)
            value = getattr(importlib.import_module(where), attribute)
        return value

    return __getattr__


def moved_module(old: str, new: str):
    """Makes the module `old` (being imported) the module `new`, with a `DeprecationWarning`.

    The old module's file holds only `moved_module(__name__, "...")`: `import old`,
    `from old import name` and `package.old` then all give `new` itself.
    """
    warnings.warn(f"{old} is deprecated; use {new}.", DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
