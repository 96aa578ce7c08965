"""The runs a report is made of: each run's own summary.json and metrics.jsonl, read back, and what
they say about divergence and non-finite values."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cutmix.errors import UsageError

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


@dataclass
class RunRecord:
    """One finished (or stopped) run: its arm, seed, folder, summary.json and metrics.jsonl lines, and
    the machine it trained on (config.json's ``hardware``; empty when the run has no config.json)."""

    arm: str
    seed: int
    path: Path
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    hardware: dict[str, Any] = field(default_factory=dict)


def load_run(path: str | Path, arm: str, seed: int) -> RunRecord:
    """Reads ``path``/summary.json and ``path``/metrics.jsonl; ValueError naming the file if unreadable."""
    path = Path(path)
    summary_path, metrics_path = path / "summary.json", path / "metrics.jsonl"
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        lines = metrics_path.read_text(encoding="utf-8").splitlines()
        metrics = [json.loads(line) for line in lines if line.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: expected a finished run (summary.json, metrics.jsonl): {exc}") from exc
    if not metrics or "test_acc" not in summary:
        raise UsageError(f"{path}: expected a run with at least one epoch, got none")
    return RunRecord(arm, seed, path, summary, metrics, _run_hardware(path / "config.json"))


def _run_hardware(path: Path) -> dict[str, Any]:
    """config.json's ``hardware`` (processor, threads, SIMD level, ...), or {} where the file or the
    entry is missing: the report then says it does not know, rather than refusing the run."""
    try:
        hardware = json.loads(path.read_text(encoding="utf-8")).get("hardware")
    except (OSError, ValueError, AttributeError):
        return {}
    return hardware if isinstance(hardware, dict) else {}


def is_cifar10_like(classes: Sequence[str], image_shape: Sequence[int]) -> bool:
    """CIFAR-10's ten class names (any order, any case) on 32x32 images."""
    names = sorted(c.lower() for c in classes)
    return names == sorted(CIFAR10_CLASSES) and tuple(image_shape[:2]) == (32, 32)


def finite(value: Any) -> float | None:
    """``value`` as a float if it is a finite number; None if it is NaN, infinite, missing or not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def non_finite_fields(run: RunRecord) -> list[str]:
    """The names of the fields of ``run`` (summary.json and metrics.jsonl) holding NaN or ±inf."""
    names: set[str] = set()

    def visit(name: str, value: Any) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            names.add(name)
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(name, item)
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(str(key), item)

    visit("", run.summary)
    for record in run.metrics:
        visit("", record)
    return sorted(names)


def diverged_reason(run: RunRecord) -> str | None:
    """Why ``run`` counts as diverged: the trainer's own verdict, or else (runs from elsewhere, or from
    before the trainer checked) a non-finite loss or accuracy anywhere in its records; None if neither."""
    reason = run.summary.get("diverged")
    if reason:
        return str(reason)
    bad = [name for name in non_finite_fields(run) if "loss" in name or "acc" in name]
    return f"non-finite {', '.join(bad)}" if bad else None
