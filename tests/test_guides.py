"""Every guide's Python code blocks run, in order, as written (in a scratch folder)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

GUIDES = sorted((Path(__file__).parents[1] / "guides").glob("*.md"))


def python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


# Every guide runs once, in one backend's pass: every call it makes is the API that the unit
# tests check on both backends. Two guides that promise to run on either backend run in
# JAX's pass; export_and_deploy, whose conversions are TensorFlow's, runs in TensorFlow's.
ONE_PASS = {"getting_started": "jax", "training_on_tpu_and_multiple_devices": "jax"}


def _marked(guide):
    backend = ONE_PASS.get(guide.stem, "tensorflow")
    reason = "a guide's calls; the unit tests run them on both backends"
    return pytest.param(guide, marks=pytest.mark.one_backend(backend, reason=reason))


@pytest.mark.slow
@pytest.mark.parametrize("guide", [_marked(g) for g in GUIDES], ids=[g.stem for g in GUIDES])
def test_guide_runs(guide, tmp_path):
    code = "\n".join(python_blocks(guide))
    assert code.strip(), f"{guide.name} has no python code blocks"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
