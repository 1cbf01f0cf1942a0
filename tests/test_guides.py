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


# Guides that promise to run on either backend run in both passes; the others run once, in
# the TensorFlow pass (1.5-3x faster there), since every call they make is the API that the
# unit tests check on both backends.
EITHER_BACKEND = {"getting_started", "export_and_deploy", "training_on_tpu_and_multiple_devices"}


def _marked(guide):
    if guide.stem in EITHER_BACKEND:
        return guide
    reason = "a guide's calls; the unit tests run them on both backends"
    return pytest.param(guide, marks=pytest.mark.one_backend("tensorflow", reason=reason))


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
