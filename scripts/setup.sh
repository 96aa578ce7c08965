#!/usr/bin/env bash
# Creates .venv (if missing) and installs cutmix into it, with torch==2.13.0 as this machine's pip
# resolves it: on machines set up like this project's (a local wheel folder holding the CPU build) the
# CPU wheel; from the public index on Linux, the CUDA build (several GB). For the CPU-only build from
# anywhere: TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/setup.sh
# `torch==2.13.0` is pinned here, not in pyproject.toml, so that installing the package into an
# environment that already has a torch keeps that one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH="torch==${TORCH_VERSION:-2.13.0}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    # torch alone from that index; the second install then finds it satisfied (==2.13.0 matches 2.13.0+cpu).
    .venv/bin/pip install -q --disable-pip-version-check "$TORCH" --index-url "$TORCH_INDEX_URL"
fi
.venv/bin/pip install -q --disable-pip-version-check "$TORCH" -e ".[test]"
