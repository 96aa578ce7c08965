"""The report of a comparison: report.json, report.md and curves.png from the run folders.

Every number comes from the runs' own ``summary.json`` and ``metrics.jsonl`` (:mod:`.runs`); the
statistics are those of :mod:`.stats` (mean ± sample std over seeds, paired t-intervals against
``none``), gathered by :mod:`.summary` into report.json's dict, which :mod:`.tables` writes out as
Markdown and :mod:`.plots` draws. The headline is the final test accuracy; with a validation split the
test accuracy at the epoch of best *validation* accuracy is reported too (the epoch is never chosen on
test).

A run may diverge (NaN or infinite losses, accuracy fallen to chance). Such runs are flagged, every
statistic is given with and without them, non-finite values are left out of every mean and interval
and of the curves (which plot what is finite), and report.json holds them as ``null`` (strict JSON)
with the names of the affected fields in each run's ``non_finite`` list.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cutmix.experiment.report.plots import ARM_COLOURS, plot_curves
from cutmix.experiment.report.runs import (
    CIFAR10_CLASSES,
    RunRecord,
    diverged_reason,
    is_cifar10_like,
    load_run,
    non_finite_fields,
)
from cutmix.experiment.report.summary import BASELINE, SEED_REFERENCE, _strict, summarize
from cutmix.experiment.report.tables import render_markdown
from cutmix.runinfo import atomic_write_text

__all__ = [
    "ARM_COLOURS",
    "BASELINE",
    "CIFAR10_CLASSES",
    "SEED_REFERENCE",
    "RunRecord",
    "diverged_reason",
    "is_cifar10_like",
    "load_run",
    "non_finite_fields",
    "plot_curves",
    "render_markdown",
    "summarize",
    "write_report",
]


def write_report(
    out_dir: str | Path,
    runs: Sequence[RunRecord],
    arms: Sequence[str],
    classes: Sequence[str],
    meta: dict[str, Any],
    robustness: Mapping[tuple[str, int], Mapping[str, Any]] | None = None,
    baseline: str | None = BASELINE,
) -> dict[str, Any]:
    """Writes report.json, report.md and curves.png into ``out_dir``; returns the report dict
    (:func:`summarize`'s).

    With ``robustness`` (the suite's result of each evaluated run, by (arm, seed); ``compare
    --robustness``), the report gains its ``robustness`` entry
    (:func:`cutmix.experiment.report.robustness.summarize_robustness`) and robustness.png; without
    it, the report is what it was before the suite existed. ``baseline``: the arm of the paired
    differences (:func:`summarize`)."""
    out_dir = Path(out_dir)
    report = summarize(runs, arms, classes, meta, base=out_dir, baseline=baseline)
    if robustness:
        from cutmix.experiment.report.robustness import summarize_robustness

        report["robustness"] = _strict(summarize_robustness(robustness, arms, report["baseline"]))
    # allow_nan=False: summarize() turned NaN/inf into null, and report.json must stay strict JSON.
    text = json.dumps(report, indent=2, sort_keys=True, allow_nan=False)
    atomic_write_text(out_dir / "report.json", text + "\n")
    atomic_write_text(out_dir / "report.md", render_markdown(report))
    title = f"{report.get('dataset') or report.get('data')}, recipe {report.get('recipe')}"
    plot_curves(runs, arms, out_dir / "curves.png", title=title)
    if robustness:
        from cutmix.experiment.report.robustness import plot_robustness

        plot_robustness(robustness, arms, out_dir / "robustness.png", title=title)
    return report
