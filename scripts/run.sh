#!/usr/bin/env bash
# The main job: create .venv, install keras-resvit (pinned), train resnet20 on the bundled
# digits (no network), save .keras and export TF Lite into runs/digits/.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/python -m pip install -q -c requirements/constraints.txt -e .
.venv/bin/keras-resvit train "$@"
