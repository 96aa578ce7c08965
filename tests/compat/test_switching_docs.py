"""docs/switching.md: every Python block runs, each in its own interpreter (the Keras block picks its
backend before Keras is imported), and the page shows the one-line change for each peer and lists
every constructor argument of the three peers."""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "switching.md"
BLOCK = re.compile(r"(?:<!-- docs-test: skip (?P<skip>[^>]*?) -->\n)?```python\n(?P<code>.*?)```", re.S)
BLOCKS = [(m["skip"], m["code"]) for m in BLOCK.finditer(PAGE.read_text(encoding="utf-8"))]

# The peers' constructor arguments, read from their sources (timm 1.0.31 timm/data/mixup.py,
# torchvision 0.29.1 transforms/v2/_augment.py, keras 3.15 layers/preprocessing/image_preprocessing/cut_mix.py
# and its base class): the table must name each.
PEER_ARGUMENTS = {
    "timm": [
        "mixup_alpha",
        "cutmix_alpha",
        "cutmix_minmax",
        "prob",
        "switch_prob",
        "mode",
        "correct_lam",
        "label_smoothing",
        "num_classes",
        "multi_label",
    ],  # fmt: skip
    "torchvision": ["alpha", "num_classes", "labels_getter"],
    "keras": ["factor", "seed", "data_format", "bounding_box_format", "**kwargs"],
}


def _label(index: int) -> str:
    code = BLOCKS[index][1]
    for peer in ("timm", "torchvision", "keras"):
        if f"cutmix.compat.{peer}" in code or f"cutmix.{peer}" in code:
            return f"block{index}-{peer}"
    return f"block{index}"


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=_label)
def test_block_runs(index, tmp_path):
    skip, code = BLOCKS[index]
    if skip:
        pytest.skip(skip)
    if "keras" in code and importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed (pip install -e '.[test]')")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    env.pop("KERAS_BACKEND", None)  # the block chooses it
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]


def test_each_peer_has_its_one_line_change_and_a_running_block():
    text = PAGE.read_text(encoding="utf-8")
    for line in (
        "| `from timm.data import Mixup, FastCollateMixup` | `from cutmix.compat.timm import Mixup, FastCollateMixup` |",
        "| `from torchvision.transforms.v2 import CutMix, MixUp` | `from cutmix.compat.torchvision import CutMix, MixUp` |",
        "| `keras.layers.CutMix(factor=..., seed=...)` | `cutmix.keras.CutMix(factor=..., seed=...)` |",
    ):
        assert line in text
    running = [code for skip, code in BLOCKS if not skip]
    for module in ("cutmix.compat.timm", "cutmix.compat.torchvision", "cutmix.keras"):
        assert any(f"from {module} import" in code for code in running), module


def _table_rows() -> dict[str, list[list[str]]]:
    """The argument table's rows by peer (a row with an empty first cell belongs to the peer above)."""
    section = PAGE.read_text(encoding="utf-8").split("## Every constructor argument", 1)[1]
    rows: dict[str, list[list[str]]] = {}
    peer = ""
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or set(cells[0]) <= {"-"} and cells[0] or cells[0] == "Peer":
            continue
        if cells[0]:
            peer = next(p for p in PEER_ARGUMENTS if p in cells[0].lower())
        rows.setdefault(peer, []).append(cells)
    return rows


def test_table_lists_every_peer_argument_with_ours():
    rows = _table_rows()
    for peer, arguments in PEER_ARGUMENTS.items():
        named = {
            re.match(r"`([^`]+)`", cells[1]).group(1) for cells in rows[peer] if cells[1].startswith("`")
        }
        assert set(arguments) <= named, (peer, set(arguments) - named)
        assert all(cells[2] for cells in rows[peer]), peer  # ours beside each


def test_table_matches_our_signatures():
    """Where the table says "same", our class takes that argument with the peer's default."""
    from cutmix.compat.timm import Mixup
    from cutmix.compat.torchvision import CutMix

    timm_defaults = {"mixup_alpha": 1.0, "cutmix_alpha": 0.0, "cutmix_minmax": None, "prob": 1.0,
                     "switch_prob": 0.5, "mode": "batch", "correct_lam": True, "label_smoothing": 0.1,
                     "num_classes": 1000, "multi_label": False}  # fmt: skip
    for cls, defaults in (
        (Mixup, timm_defaults),
        (CutMix, {"alpha": 1.0, "num_classes": None, "labels_getter": "default"}),
    ):
        params = inspect.signature(cls).parameters
        assert {name: params[name].default for name in defaults} == defaults, cls
    rows = _table_rows()
    for peer, defaults in (("timm", timm_defaults),):
        for cells in rows[peer]:
            name = re.match(r"`([^`]+)`", cells[1])
            if name and name.group(1) in defaults:
                assert f"({defaults[name.group(1)]!r}".replace("'", '"') in cells[1], cells
