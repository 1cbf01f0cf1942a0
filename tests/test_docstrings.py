"""Every docstring example of the package runs, as keras-hub's doc tests do.

Examples run in a temporary working folder (those that write files write there), each with
only the names it imports, as where a user pastes it; examples that need the network or a file
a user downloads are marked `+SKIP` in their docstring.
"""

import doctest
import importlib
import importlib.util
import io
from pathlib import Path

import pytest

PACKAGE = Path(importlib.util.find_spec("keras_resvit").origin).parent


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# `__main__` modules run when imported (a converter subprocess's entry point); a renamed
# module's old name imports the new module, whose examples run under the new name.
MODULES = sorted(
    _module_name(path)
    for path in PACKAGE.rglob("*.py")
    if path.stem != "__main__" and "moved_module(__name__" not in path.read_text()
)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def examples(module):
    """The module's docstring examples, each run as a user runs it where it is copied to: with
    only what it imports itself (not the module's own names, which `doctest` lends)."""
    tests = [test for test in doctest.DocTestFinder().find(module) if test.examples]
    for test in tests:
        test.globs = {"__name__": "__main__"}
    return tests


def test_the_package_documents_with_runnable_examples():
    modules = [importlib.import_module(name) for name in MODULES]
    runnable = [
        example
        for module in modules
        for test in examples(module)
        for example in test.examples
        if not example.options.get(doctest.SKIP)
    ]
    assert len(runnable) > 150


# Each module's examples run once, in the pass where they are fastest (TensorFlow, but for the
# masked pre-training's training example): the modules' own tests cover both backends. The
# modules that choose devices and engines by backend run in both passes.
BOTH_BACKENDS = {
    "keras_resvit.base.backend",
    "keras_resvit.base.processes",
    "keras_resvit.training.distribution",
    "keras_resvit.training.sharding",
}
ONE_BACKEND = {"keras_resvit.training.masked_pretraining": "jax"}


def _marked(name):
    if name in BOTH_BACKENDS:
        return name
    reason = "a module's examples; its tests run on both backends"
    backend = ONE_BACKEND.get(name, "tensorflow")
    return pytest.param(name, marks=pytest.mark.one_backend(backend, reason=reason))


@pytest.mark.parametrize("name", [_marked(name) for name in MODULES])
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = io.StringIO()
    for test in examples(module):
        runner.run(test, out=report.write)
    assert runner.failures == 0, report.getvalue()
