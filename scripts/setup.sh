#!/usr/bin/env bash
# Creates .venv (if missing) and installs cutmix into it, with the CPU build of torch.
# `torch==2.13.0` is pinned here, not in pyproject.toml: an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check "torch==${TORCH_VERSION:-2.13.0}" -e ".[test]"
