#!/usr/bin/env bash
# The whole test suite: create/use .venv, install the test, jax, onnx, hub, torch and cv extras
# (pinned; torch is the CPU build), lint, then
# run pytest under KERAS_BACKEND=tensorflow and KERAS_BACKEND=jax (slow tests included), then
# the PyTorch smoke tests (tests/test_torch_backend.py) under KERAS_BACKEND=torch.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/python -m pip install -q -c requirements/constraints.txt -e ".[test,jax,onnx,hub,torch,cv]"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
status=0
for backend in tensorflow jax; do
  echo "== KERAS_BACKEND=$backend =="
  KERAS_BACKEND=$backend .venv/bin/python -m pytest -n 2 --dist loadgroup -q -p no:cacheprovider --durations=25 "$@" || status=1
done
echo "== KERAS_BACKEND=torch (smoke tests) =="
KERAS_BACKEND=torch .venv/bin/python -m pytest -q -p no:cacheprovider "$@" \
  tests/test_torch_backend.py || status=1
exit $status
