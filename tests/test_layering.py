"""The package's layering: every module imports only from its own layer or the layers below,
and no import cycle exists (README, "Layout")."""

import ast
import importlib.util
from pathlib import Path

import pytest

PACKAGE = Path(importlib.util.find_spec("keras_resvit").origin).parent

# Lowest first. A module belongs to the first layer that names it or a package above it; a new
# top-level module must be placed here.
LAYERS = [
    ("base", ("keras_resvit.base",)),
    ("layers", ("keras_resvit.layers",)),
    ("models", ("keras_resvit.models",)),
    ("weights", ("keras_resvit.weights",)),
    ("factory", ("keras_resvit.factory",)),
    ("data", ("keras_resvit.data",)),
    (
        "training and evaluation",
        ("keras_resvit.training", "keras_resvit.evaluation", "keras_resvit.evaluate"),
    ),
    (
        "files and artifacts",
        (
            "keras_resvit.files",
            "keras_resvit.artifacts",
            "keras_resvit.export",
            "keras_resvit.predict",
        ),
    ),
    ("viz", ("keras_resvit.viz",)),
    (
        "cli and the public API",
        (
            "keras_resvit.cli",
            "keras_resvit.cli_commands",
            "keras_resvit.cli_parser",
            "keras_resvit.cli_train",
            "keras_resvit",
        ),
    ),
]
ROOT = "keras_resvit"  # the package itself, not everything in it


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def layer(module):
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or (p != ROOT and module.startswith(p + ".")) for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def imports(module):
    """The package modules `module` imports, at its top or inside its functions."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from keras_resvit import data` imports the module keras_resvit.data
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in MODULES
                else node.module
                for alias in node.names
            ]
        else:
            continue
        found.update(n for n in names if n in MODULES and n != module)
    return found


GRAPH = {module: imports(module) for module in MODULES}


def test_every_module_has_a_layer():
    assert len(MODULES) > 50
    for module in MODULES:
        layer(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    upward = [
        f"{target} ({LAYERS[layer(target)][0]})"
        for target in sorted(GRAPH[module])
        if layer(target) > layer(module)
    ]
    assert not upward, f"{module} ({LAYERS[layer(module)][0]}) imports from above: {upward}"


def cycles(graph):
    """Every import cycle a depth-first search of `graph` (module -> imported modules) meets."""
    state, found = {}, []

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                found.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_no_import_cycle():
    assert not cycles(GRAPH)


def test_the_checks_catch_an_upward_import_and_a_cycle():
    assert layer("keras_resvit.training.train") > layer("keras_resvit.models.resnet")
    assert layer("keras_resvit.base.files") < layer("keras_resvit.layers.vit_layers")
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a -> b -> c -> a"]
    assert cycles({"a": {"b"}, "b": set()}) == []
