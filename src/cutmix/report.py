"""The report of a comparison: report.json, report.md and curves.png from the run folders.

Every number comes from the runs' own ``summary.json`` and ``metrics.jsonl``; the statistics are
those of :mod:`cutmix.stats` (mean ± sample std over seeds, paired t-intervals against ``none``).
The headline is the final test accuracy; with a validation split the test accuracy at the epoch
of best *validation* accuracy is reported too (the epoch is never chosen on test).

A run may diverge (NaN or infinite losses, accuracy fallen to chance). Such runs are flagged, every
statistic is given with and without them, non-finite values are left out of every mean and interval
and of the curves (which plot what is finite), and report.json holds them as ``null`` (strict JSON)
with the names of the affected fields in each run's ``non_finite`` list.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cutmix import stats
from cutmix.errors import UsageError
from cutmix.runinfo import atomic_save_figure, atomic_write_text

BASELINE = "none"
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
ARM_COLOURS = {"none": "tab:gray", "cutmix": "tab:blue", "mixup": "tab:orange", "cutout": "tab:green"}

# The Keras example's own figures: one run per arm, 15 epochs, ResNet-20, CIFAR-10 (its test split
# doubled as validation data). Its log and its closing notes disagree; both are quoted.
SEED_REFERENCE: dict[str, Any] = {
    "source": "Keras example 'CutMix data augmentation for image classification'",
    "epochs": 15,
    "runs_per_arm": 1,
    "log_test_acc": {"cutmix": 0.7108, "none": 0.1000},
    "notes_test_acc": {"cutmix": 0.7734, "none": 0.6690},
    "none_peak_in_log": {"epoch": 5, "test_acc": 0.6283},
    # After the first epoch, which took 64 s (CutMix) and 41 s (none) in the log.
    "log_seconds_per_epoch": {"cutmix": "26-29", "none": "11-13"},
}


@dataclass
class RunRecord:
    """One finished (or stopped) run: its arm, seed, folder, summary.json and metrics.jsonl lines."""

    arm: str
    seed: int
    path: Path
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]


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
    return RunRecord(arm, seed, path, summary, metrics)


def is_cifar10_like(classes: Sequence[str], image_shape: Sequence[int]) -> bool:
    """CIFAR-10's ten class names (any order, any case) on 32x32 images."""
    names = sorted(c.lower() for c in classes)
    return names == sorted(CIFAR10_CLASSES) and tuple(image_shape[:2]) == (32, 32)


# --------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------


def _finite(value: Any) -> float | None:
    """``value`` as a float if it is a finite number; None if it is NaN, infinite, missing or not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _maybe(values: Sequence[Any]) -> dict[str, Any] | None:
    """:func:`stats.describe` of the finite values among ``values``; None when there are none."""
    kept = [v for v in map(_finite, values) if v is not None]
    return stats.describe(kept) if kept else None


def _mean_or_none(values: Sequence[Any]) -> float | None:
    kept = [v for v in map(_finite, values) if v is not None]
    return stats.mean(kept) if kept else None


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


def _arm_summary(runs: list[RunRecord], num_classes: int, val: bool) -> dict[str, Any]:
    kept = [r for r in runs if not diverged_reason(r)]
    out: dict[str, Any] = {
        "n": len(runs),
        "seeds": [r.seed for r in runs],
        # Non-finite values are left out of every statistic; these seeds say whose.
        "test_acc": _maybe([r.summary.get("test_acc") for r in runs]),
        "non_finite_test_acc_seeds": [r.seed for r in runs if _finite(r.summary.get("test_acc")) is None],
        "diverged_seeds": [r.seed for r in runs if diverged_reason(r)],
        "test_acc_without_diverged": _maybe([r.summary.get("test_acc") for r in kept]),
        "wall_time": _maybe([r.summary.get("wall_time") for r in runs]),
        "images_per_s": _maybe([r.summary.get("train_images_per_s") for r in runs]),
        "epochs_completed": [r.summary.get("epochs_completed") for r in runs],
    }

    def per_class_mean(group: list[RunRecord]) -> list[float | None]:
        rows = [r.summary["test_per_class"] for r in group if r.summary.get("test_per_class")]
        return [_mean_or_none([row[k] for row in rows if k < len(row)]) for k in range(num_classes)]

    if any(r.summary.get("test_per_class") for r in runs):
        out["test_per_class_mean"] = per_class_mean(runs)
        out["test_per_class_mean_without_diverged"] = per_class_mean(kept)
    if val:
        out["best_epoch_by_val"] = [r.summary.get("best_epoch_by_val") for r in runs]
        out["test_acc_at_best_val"] = _maybe([r.summary.get("test_acc_at_best_val") for r in runs])
    return out


def _paired(
    by_arm: dict[str, dict[int, RunRecord]], arm: str, key: str, skip_diverged: bool
) -> dict[str, Any] | None:
    base, runs = by_arm[BASELINE], by_arm[arm]
    seeds = [s for s in sorted(runs) if s in base]
    if skip_diverged:
        seeds = [s for s in seeds if not (diverged_reason(runs[s]) or diverged_reason(base[s]))]
    values = {s: (_finite(runs[s].summary.get(key)), _finite(base[s].summary.get(key))) for s in seeds}
    # A pair with a non-finite value has no difference: it is left out, and named.
    non_finite = [s for s in seeds if None in values[s]]
    seeds = [s for s in seeds if s not in non_finite]
    if not seeds:
        return None
    a = [values[s][0] for s in seeds]
    b = [values[s][1] for s in seeds]
    interval = stats.paired_t_interval(a, b)
    return {"seeds": seeds, "non_finite_seeds": non_finite, "differences": stats.paired_differences(a, b),
            **interval.to_dict()}  # fmt: skip


def _strict(value: Any) -> Any:
    """``value`` with every NaN and ±inf replaced by None, so that it dumps as strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def _relative(path: Path, base: str | Path | None) -> str:
    if base is not None:
        try:
            return Path(path).resolve().relative_to(Path(base).resolve()).as_posix()
        except ValueError:
            pass
    return str(path)


def summarize(
    runs: Sequence[RunRecord],
    arms: Sequence[str],
    classes: Sequence[str],
    meta: dict[str, Any],
    base: str | Path | None = None,
) -> dict[str, Any]:
    """The report as a JSON-ready dict.

    ``runs``: every run of the comparison (each arm × seed). ``meta``: what the report states about
    the comparison: command, versions, hardware, git_commit, data, dataset, recipe, epochs, val,
    config (the options common to every arm) and cifar10_like. Run folders are given relative to
    ``base`` (the comparison folder) when they lie inside it. NaN and ±inf become None (JSON null);
    each run's ``non_finite`` names the fields that held them, and ``any_non_finite`` says if any did.
    """
    val = bool(meta.get("val"))
    by_arm: dict[str, dict[int, RunRecord]] = {arm: {} for arm in arms}
    for run in runs:
        by_arm.setdefault(run.arm, {})[run.seed] = run
    missing = [arm for arm in arms if not by_arm[arm]]
    if missing:
        raise ValueError(f"expected at least one run per arm, got none for {', '.join(missing)}")
    report: dict[str, Any] = {
        **meta,
        "arms": list(arms),
        "seeds": sorted({r.seed for r in runs}),
        "classes": list(classes),
        "runs": [
            {
                "arm": r.arm,
                "seed": r.seed,
                "dir": _relative(r.path, base),
                "non_finite": non_finite_fields(r),
                **{
                    k: r.summary.get(k)
                    for k in (
                        "test_acc",
                        "wall_time",
                        "train_images_per_s",
                        "diverged",
                        "finished",
                        "epochs_completed",
                        "best_epoch_by_val",
                        "test_acc_at_best_val",
                        "tta_flip",
                    )
                    if k in r.summary
                },
                "diverged": diverged_reason(r),
            }
            for r in runs
        ],
        "per_arm": {
            arm: _arm_summary([by_arm[arm][s] for s in sorted(by_arm[arm])], len(classes), val)
            for arm in arms
        },  # fmt: skip
        "any_diverged": any(diverged_reason(r) for r in runs),
        "any_non_finite": any(non_finite_fields(r) for r in runs),
        "baseline": BASELINE if BASELINE in arms else None,
        "paired": {},
    }
    if BASELINE in arms:
        for arm in arms:
            if arm == BASELINE:
                continue
            entry = {"test_acc": _paired(by_arm, arm, "test_acc", skip_diverged=False)}
            if report["any_diverged"]:
                entry["test_acc_without_diverged"] = _paired(by_arm, arm, "test_acc", skip_diverged=True)
            if val:
                entry["test_acc_at_best_val"] = _paired(by_arm, arm, "test_acc_at_best_val", False)
            report["paired"][arm] = entry
    show_reference = meta.get("recipe") == "seed" and meta.get("cifar10_like")
    report["seed_reference"] = SEED_REFERENCE if show_reference else None
    return _strict(report)


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _pp(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.2f} pp"


def _acc(d: dict[str, Any] | None) -> str:
    if d is None:
        return "n/a"
    spread = "n/a" if d["std"] is None else f"{100 * d['std']:.2f}"
    return f"{100 * d['mean']:.2f} ± {spread} % (n = {d['n']})"


def _num(d: dict[str, Any] | None, fmt: str) -> str:
    if d is None:
        return "n/a"
    spread = "n/a" if d["std"] is None else format(d["std"], fmt)
    return f"{format(d['mean'], fmt)} ± {spread}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _paired_row(arm: str, p: dict[str, Any] | None) -> list[str]:
    if p is None:
        return [f"{arm} − {BASELINE}", "0", "n/a", "n/a", "n/a", "n/a", "n/a"]
    interval = "n/a" if p["low"] is None else f"[{_pp(p['low'])}, {_pp(p['high'])}]"
    sd = "n/a" if p["std"] is None else f"{100 * p['std']:.2f} pp"
    t = "n/a" if p["t"] is None else f"{p['t']:.4f}"
    return [f"{arm} − {BASELINE}", str(p["n"]), _pp(p["mean"]), sd, t, interval, p["verdict"]]


def _images(report: dict[str, Any]) -> str:
    counts = [f"{report.get(k)} {name}" for k, name in
              (("train_images", "training"), ("val_images", "validation"), ("test_images", "test"))
              if report.get(k)]  # fmt: skip
    return (", ".join(counts) + " images") if counts else "image counts not recorded"


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: the tables of :func:`summarize`'s dict, the figures and the provenance."""
    arms, val = report["arms"], bool(report.get("val"))
    seeds = report["seeds"]
    out = [
        f"# CutMix comparison: {', '.join(arms)} on {report.get('dataset') or report.get('data')}",
        "",
        f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))}), recipe `{report.get('recipe')}`, "
        f"{report.get('epochs')} epoch(s); {_images(report)}. For each seed every arm starts from the "
        "same initial weights "
        "and sees the training images in the same order. Means are over seeds, ± the sample standard "
        "deviation (ddof = 1); n is the number of seeds.",
        "",
        "## Final test accuracy",
        "",
    ]
    any_div = report["any_diverged"]
    header = ["arm", "n", "final test accuracy"]
    if any_div:
        header += ["without diverged runs", "diverged (seeds)"]
    if val:
        header += ["test acc. at best-val epoch", "best epochs (by val)"]
    header += ["wall time (s)", "train images/s"]
    rows = []
    for arm in arms:
        a = report["per_arm"][arm]
        row = [arm, str(a["n"]), _acc(a["test_acc"])]
        if any_div:
            row += [_acc(a["test_acc_without_diverged"]), ", ".join(map(str, a["diverged_seeds"])) or "-"]
        if val:
            row += [_acc(a["test_acc_at_best_val"]), ", ".join(map(str, a["best_epoch_by_val"]))]
        row += [_num(a["wall_time"], ".1f"), _num(a["images_per_s"], ",.0f")]
        rows.append(row)
    out += _table(header, rows)
    out.append("")
    if val:
        out += [
            f"With `--val {report['val']}` that many training images were held out; the best epoch of "
            "each run was chosen on them, never on the test split.",
            "",
        ]
    if any_div:
        out += ["Runs flagged as diverged:", ""]
        for run in report["runs"]:
            if run.get("diverged"):
                values = f" (non-finite: {', '.join(run['non_finite'])})" if run.get("non_finite") else ""
                out.append(f"- seed {run['seed']}, {run['arm']}: {run['diverged']}{values}")
        out.append("")
    else:
        out += ["No run diverged.", ""]
    if report.get("any_non_finite"):
        out += [
            "Non-finite values (NaN, ±inf) are shown as n/a here and stored as null in report.json; "
            "they are left out of every mean, spread and interval, and the curves plot only finite "
            "values.",
            "",
        ]
    if any(r.get("tta_flip") for r in report["runs"]):
        out += ["Test accuracies use flip test-time augmentation (the recipe's `tta_flip`).", ""]

    out += ["## Paired differences against `none`", ""]
    if not report["paired"]:
        out += ["No `none` arm in this comparison, so no paired differences.", ""]
    else:
        out += [
            "Per seed, the arm's final test accuracy minus that of `none` (same seed, same initial "
            "weights, same data order); 95% interval: mean ± t(0.975, n − 1)·sd/√n. "
            '"not significant": the interval holds 0; "n/a": fewer than 2 seeds.',
            "",
        ]
        header = ["difference", "n", "mean", "sd", "t(0.975, n−1)", "95% interval", "verdict"]
        out += _table(header, [_paired_row(arm, p["test_acc"]) for arm, p in report["paired"].items()])
        out.append("")
        for key, title in (
            ("test_acc_without_diverged", "Leaving out the seeds where either run diverged:"),
            ("test_acc_at_best_val", "Test accuracy at the best-validation epoch:"),
        ):
            if any(key in p for p in report["paired"].values()):
                rows = [_paired_row(arm, p[key]) for arm, p in report["paired"].items()]
                out += [title, "", *_table(header, rows), ""]

    out += ["## Every run", ""]
    cells = {(r["arm"], r["seed"]): r for r in report["runs"]}
    rows = []
    for seed in seeds:
        row = [str(seed)]
        for arm in arms:
            r = cells.get((arm, seed))
            text = "-" if r is None else _pct(r["test_acc"]) + (" (diverged)" if r.get("diverged") else "")
            row.append(text)
        rows.append(row)
    out += _table(["seed", *arms], rows)
    out += ["", "Run folders: `seed-<seed>/<arm>/` (config.json, metrics.jsonl, summary.json).", ""]

    classes = report["classes"]
    if all("test_per_class_mean" in report["per_arm"][a] for a in arms):
        out += ["## Per-class test accuracy (mean over seeds)", ""]
        rows = [
            [name, *(_pct(report["per_arm"][a]["test_per_class_mean"][k]) for a in arms)]
            for k, name in enumerate(classes)
        ]
        out += [*_table(["class", *arms], rows), ""]
        if any_div:
            rows = [
                [name, *(_pct(report["per_arm"][a]["test_per_class_mean_without_diverged"][k]) for a in arms)]
                for k, name in enumerate(classes)
            ]
            out += ["Without the diverged runs:", "", *_table(["class", *arms], rows), ""]

    out += [
        "## Curves and augmented examples",
        "",
        "![test accuracy and training loss per epoch](curves.png)",
        "",
        "Training loss is measured on the targets each arm trains on (mixed targets for the mixing "
        "arms), so it is not comparable across arms; test accuracy is.",
        "",
        "![nine augmented training images](preview.png)",
        "",
    ]

    ref = report.get("seed_reference")
    if ref:
        out += [
            "## The Keras example's own figures, for reference",
            "",
            f"One run per arm, {ref['epochs']} epochs, ResNet-20 on CIFAR-10, the test split doubling as "
            "validation data:",
            "",
            f"- its training log ends at {_pct(ref['log_test_acc']['cutmix'])} test accuracy with CutMix and "
            f"{_pct(ref['log_test_acc']['none'])} without; the no-augmentation run had reached "
            f"{_pct(ref['none_peak_in_log']['test_acc'])} at epoch {ref['none_peak_in_log']['epoch']} "
            "before falling to chance;",
            f"- its closing notes state {_pct(ref['notes_test_acc']['cutmix'])} with CutMix and "
            f"{_pct(ref['notes_test_acc']['none'])} without, figures its log does not show;",
            "- the notes say CutMix training takes less time; the log shows "
            f"{ref['log_seconds_per_epoch']['cutmix']} s per epoch with CutMix and "
            f"{ref['log_seconds_per_epoch']['none']} s without (after a longer first epoch).",
            "",
            "The `seed` recipe used here follows the example's choices with two deliberate fixes: every "
            "arm gets a full shuffle each epoch, and an empty box mixes nothing.",
            "",
        ]
        if report.get("epochs") != ref["epochs"]:
            out += [f"This comparison ran {report.get('epochs')} epoch(s), not {ref['epochs']}.", ""]

    out += ["## How this was made", "", "```", str(report.get("command")), "```", ""]
    config = report.get("config") or {}
    if config:
        options = ", ".join(f"{k}={v}" for k, v in sorted(config.items()))
        out += [f"Options common to every arm: {options}.", ""]
    versions = report.get("versions") or {}
    hardware = report.get("hardware") or {}
    out += [
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "- hardware: " + ", ".join(f"{k}: {v}" for k, v in hardware.items()),
        f"- git commit: {report.get('git_commit') or 'unknown'}",
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Figure
# --------------------------------------------------------------------------------------------


def _band(runs: list[RunRecord], key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """Per epoch where any run has a finite ``key``: the mean, min and max over those finite values."""
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for m in run.metrics:
            value = _finite(m.get(key))
            if value is not None:
                by_epoch.setdefault(int(m["epoch"]), []).append(value)
    epochs = sorted(by_epoch)
    return (
        epochs,
        [stats.mean(by_epoch[e]) for e in epochs],
        [min(by_epoch[e]) for e in epochs],
        [max(by_epoch[e]) for e in epochs],
    )


def plot_curves(runs: Sequence[RunRecord], arms: Sequence[str], out: str | Path, title: str = "") -> Path:
    """curves.png: test accuracy and training loss per epoch, per arm: the mean over seeds and a
    min–max band. Written atomically; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.8))
    FigureCanvasAgg(fig)
    acc_ax, loss_ax = fig.subplots(1, 2)
    unplotted: dict[str, list[str]] = {"test_acc": [], "train_loss": []}
    for i, arm in enumerate(arms):
        arm_runs = [r for r in runs if r.arm == arm]
        if not arm_runs:
            continue
        colour = ARM_COLOURS.get(arm, f"C{i}")
        label = f"{arm} (n = {len(arm_runs)})"
        for ax, key, scale in ((acc_ax, "test_acc", 100.0), (loss_ax, "train_loss", 1.0)):
            epochs, mean, low, high = _band(arm_runs, key)
            ax.plot(epochs, [scale * v for v in mean], color=colour, marker="o", markersize=3, label=label)
            if len(arm_runs) > 1:
                ax.fill_between(epochs, [scale * v for v in low], [scale * v for v in high],
                                color=colour, alpha=0.2, linewidth=0)  # fmt: skip
            for run in arm_runs:
                finite = [m for m in run.metrics if _finite(m.get(key)) is not None]
                bad = [str(m["epoch"]) for m in run.metrics if _finite(m.get(key)) is None]
                if bad:
                    unplotted[key].append(f"{arm} seed {run.seed} (epoch {', '.join(bad)})")
                if diverged_reason(run) and finite:
                    last = finite[-1]
                    ax.plot([last["epoch"]], [scale * last[key]], marker="x", color=colour, markersize=9)
    if any(diverged_reason(r) for r in runs):
        for ax in (acc_ax, loss_ax):
            ax.plot([], [], "x", color="black", markersize=9, label="diverged run, last finite value")
    for ax, key in ((acc_ax, "test_acc"), (loss_ax, "train_loss")):
        if unplotted[key]:
            # Said on the figure, so that a reader does not take a missing curve for a flat one.
            text = "not finite, not plotted: " + "; ".join(unplotted[key])
            ax.text(0.01, 0.01, text, transform=ax.transAxes, fontsize=7, color="firebrick", wrap=True)
    losses = [v for r in runs for m in r.metrics if (v := _finite(m.get("train_loss"))) is not None]
    if losses and min(losses) > 0 and max(losses) / min(losses) > 1e3:
        # A diverged arm's finite but huge losses would flatten every other curve on a linear axis.
        loss_ax.set_yscale("log")
    acc_ax.set(title="Test accuracy (mean, band: min–max over seeds)", xlabel="epoch", ylabel="accuracy (%)")
    loss_ax.set(title="Training loss (on each arm's own targets)", xlabel="epoch", ylabel="cross-entropy")
    for ax in (acc_ax, loss_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.get_legend_handles_labels()[0]:  # an arm may have nothing finite to plot
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return atomic_save_figure(fig, out, dpi=90)


def write_report(
    out_dir: str | Path,
    runs: Sequence[RunRecord],
    arms: Sequence[str],
    classes: Sequence[str],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Writes report.json, report.md and curves.png into ``out_dir``; returns the report dict."""
    out_dir = Path(out_dir)
    report = summarize(runs, arms, classes, meta, base=out_dir)
    # allow_nan=False: summarize() turned NaN/inf into null, and report.json must stay strict JSON.
    text = json.dumps(report, indent=2, sort_keys=True, allow_nan=False)
    atomic_write_text(out_dir / "report.json", text + "\n")
    atomic_write_text(out_dir / "report.md", render_markdown(report))
    title = f"{report.get('dataset') or report.get('data')}, recipe {report.get('recipe')}"
    plot_curves(runs, arms, out_dir / "curves.png", title=title)
    return report
