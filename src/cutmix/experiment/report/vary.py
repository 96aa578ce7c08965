"""The report across the values of ``--vary``: per arm, its paired difference against the baseline
(with the 95% interval) and its test accuracy, as a function of the varied setting — a table in
report.md and effect.png. Each value's own report (in its subfolder) holds everything else."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cutmix.experiment.report.plots import arm_colours
from cutmix.experiment.report.summary import _strict
from cutmix.runinfo import atomic_save_figure, atomic_write_text

_COPIED = (
    "command",
    "git_commit",
    "versions",
    "hardware",
    "data",
    "dataset",
    "recipe",
    "baseline",
    "report_rebuilt_by",
    "unfinished_runs",
)


def summarize_vary(
    vary: dict[str, Any], folders: Sequence[str], reports: Sequence[dict[str, Any]], meta: dict[str, Any]
) -> dict[str, Any]:
    """The top report.json of a varied comparison.

    Args:
        vary: ``{"key": "epochs", "values": [15, 30]}`` (resolved values, in order).
        folders: each value's subfolder (``epochs=15``), as ``reports``.
        reports: each value's report (:func:`cutmix.experiment.report.summarize`'s dict).
        meta: what the report states about the comparison (command, versions, ...).
    """
    arms = list(reports[0]["arms"])
    baseline = reports[0].get("baseline")
    effects: dict[str, list[dict[str, Any]]] = {}
    accuracy: dict[str, list[dict[str, Any]]] = {}
    for arm in arms:
        accuracy[arm] = [
            {"value": v, "folder": f, **(r["per_arm"][arm]["test_acc"] or {})}
            for v, f, r in zip(vary["values"], folders, reports, strict=True)
        ]
        if arm != baseline and baseline is not None:
            effects[arm] = [
                {"value": v, "folder": f, **((r["paired"].get(arm) or {}).get("test_acc") or {})}
                for v, f, r in zip(vary["values"], folders, reports, strict=True)
            ]
    report = {k: meta[k] for k in _COPIED if k in meta}
    report.update(
        vary=vary,
        arms=arms,
        baseline=baseline,
        folders=list(folders),
        effects=effects,
        test_acc=accuracy,
        seeds=sorted({s for r in reports for s in r["seeds"]}),
    )
    return _strict(report)


def _pp(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.2f} pp"


def _effect_cell(entry: dict[str, Any]) -> str:
    if entry.get("mean") is None:
        return "n/a"
    interval = "" if entry.get("low") is None else f" [{_pp(entry['low'])}, {_pp(entry['high'])}]"
    return f"{_pp(entry['mean'])}{interval} (n = {entry['n']}, {entry['verdict']})"


def _acc_cell(entry: dict[str, Any]) -> str:
    if entry.get("mean") is None:
        return "n/a"
    spread = "n/a" if entry.get("std") is None else f"{100 * entry['std']:.2f}"
    return f"{100 * entry['mean']:.2f} ± {spread} % (n = {entry['n']})"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def render_vary_markdown(report: dict[str, Any]) -> str:
    """report.md of a varied comparison: the effect table, the accuracy table, the figure, provenance."""
    key, values, baseline = report["vary"]["key"], report["vary"]["values"], report.get("baseline")
    folders = report["folders"]
    out = [
        f"# CutMix comparison: {', '.join(report['arms'])} as {key} varies over "
        f"{', '.join(map(str, values))}",
        "",
        f"Seeds {', '.join(map(str, report['seeds']))}, recipe `{report.get('recipe')}`, data "
        f"`{report.get('data')}`. Each value is a comparison of its own, with its own initial weights "
        "per seed; its report is in its subfolder.",
        "",
    ]
    if report["effects"]:
        out += [
            f"## Paired difference against `{baseline}` as {key} varies",
            "",
            f"Per seed, the arm's final test accuracy minus `{baseline}`'s at the same value (same "
            "seed, same initial weights, same data order); mean, 95% t-interval, n and verdict as in "
            "each value's report.",
            "",
        ]
        rows = [
            [f"[{v}]({f}/report.md)", *(_effect_cell(report["effects"][a][i]) for a in report["effects"])]
            for i, (v, f) in enumerate(zip(values, folders, strict=True))
        ]
        out += [*_table([key, *(f"{a} − {baseline}" for a in report["effects"])], rows), ""]
    else:
        out += ["No baseline arm (`none`, or `--baseline`) in this comparison, so no paired differences.", ""]
    out += [f"## Test accuracy as {key} varies", "", "Mean ± sample standard deviation over seeds.", ""]
    rows = [
        [str(v), *(_acc_cell(report["test_acc"][a][i]) for a in report["arms"])] for i, v in enumerate(values)
    ]
    out += [*_table([key, *report["arms"]], rows), "", f"![effect against {key}](effect.png)", ""]
    if report.get("unfinished_runs"):
        out += ["Not finished, left out: " + ", ".join(f"`{p}`" for p in report["unfinished_runs"]) + ".", ""]
    if report.get("report_rebuilt_by"):
        out += [f"Rebuilt from the run folders by `{report['report_rebuilt_by']}`.", ""]
    out += [
        "## Provenance",
        "",
        f"- command: `{report.get('command')}`",
        f"- git commit: {report.get('git_commit')}",
        f"- versions: {json.dumps(report.get('versions'))}",
        f"- hardware: {json.dumps(report.get('hardware'))}",
        "",
    ]
    return "\n".join(out)


def _positions(values: Sequence[Any]) -> tuple[list[float], bool]:
    """x positions of ``values``: the numbers themselves (log-spaced when they span 8× or more), or
    0, 1, 2, ... for settings that are not numbers."""
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if not numeric:
        return list(range(len(values))), False
    log = min(values) > 0 and max(values) / min(values) >= 8
    return [float(v) for v in values], log


def _dodged(x: list[float], index: int, count: int, log: bool) -> list[float]:
    """``x`` moved a little sideways for the ``index``-th of ``count`` arms, so that intervals at one
    value do not hide each other (by a factor on a log axis, by a share of the span on a linear one)."""
    offset = index - (count - 1) / 2
    if log:
        return [v * 1.04**offset for v in x]
    span = (max(x) - min(x)) or 1.0
    return [v + 0.015 * span * offset for v in x]


def plot_effect(report: dict[str, Any], out: str | Path) -> Path:
    """effect.png: per arm, the paired difference against the baseline (mean and 95% interval) and the
    test accuracy (mean, min-max over seeds not kept: ± sd) against the varied value."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    key, values = report["vary"]["key"], report["vary"]["values"]
    x, log = _positions(values)
    fig = Figure(figsize=(12, 4.6))
    FigureCanvasAgg(fig)
    effect_ax, acc_ax = fig.subplots(1, 2)
    colours = arm_colours(report["arms"])
    for i, (arm, entries) in enumerate(report["effects"].items()):
        shifted = _dodged(x, i, len(report["effects"]), log)
        kept = [(xi, e) for xi, e in zip(shifted, entries, strict=True) if e.get("mean") is not None]
        mean = [100 * e["mean"] for _, e in kept]
        low = [100 * (e["mean"] - e["low"]) if e.get("low") is not None else math.nan for _, e in kept]
        high = [100 * (e["high"] - e["mean"]) if e.get("high") is not None else math.nan for _, e in kept]
        effect_ax.errorbar(
            [xi for xi, _ in kept],
            mean,
            yerr=[low, high],
            marker="o",
            capsize=4,
            color=colours[arm],
            label=f"{arm} − {report['baseline']}",
        )
    effect_ax.axhline(0.0, color="black", linewidth=0.8)
    for i, arm in enumerate(report["arms"]):
        shifted = _dodged(x, i, len(report["arms"]), log)
        kept = [
            (xi, e)
            for xi, e in zip(shifted, report["test_acc"][arm], strict=True)
            if e.get("mean") is not None
        ]
        sd = [100 * (e.get("std") or 0.0) for _, e in kept]
        acc_ax.errorbar(
            [xi for xi, _ in kept],
            [100 * e["mean"] for _, e in kept],
            yerr=sd,
            marker="o",
            capsize=4,
            color=colours[arm],
            label=arm,
        )
    effect_ax.set(title="Paired difference in test accuracy (mean, 95% interval)", xlabel=key, ylabel="pp")
    acc_ax.set(title="Test accuracy (mean ± sd over seeds)", xlabel=key, ylabel="accuracy (%)")
    for ax in (effect_ax, acc_ax):
        if log:
            ax.set_xscale("log")
        ax.set_xticks(x, [str(v) for v in values])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    return atomic_save_figure(fig, out, dpi=90)


def write_vary_report(out_dir: str | Path, report: dict[str, Any]) -> dict[str, Any]:
    """report.json, report.md and effect.png of a varied comparison into ``out_dir``; returns ``report``."""
    out_dir = Path(out_dir)
    atomic_write_text(
        out_dir / "report.json", json.dumps(report, indent=2, sort_keys=True, allow_nan=False) + "\n"
    )
    atomic_write_text(out_dir / "report.md", render_vary_markdown(report))
    plot_effect(report, out_dir / "effect.png")
    return report
