"""A tiny trained checkpoint for the robustness tests: ResNet-8, one epoch on the synthetic set,
trained by the CLI in a subprocess as a user would (about half a minute on two cores)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "run"
    command = [sys.executable, "-m", "cutmix", "train", "--data", "synthetic", "--depth", "8", "--epochs", "1",
               "--device", "cpu", "--quiet", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return out / "checkpoint.pt"
