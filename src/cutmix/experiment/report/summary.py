"""The numbers of a comparison's report (report.json): per arm, the mean ± sample std over seeds of
the final test accuracy and the rest, and per arm against the baseline (``none`` unless
``--baseline`` says otherwise) the paired differences over seeds
with their t-intervals (:mod:`cutmix.experiment.report.stats`). Diverged runs are flagged and every
statistic is given with and without them; non-finite values are left out of every statistic and
stored as ``null``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cutmix.experiment.report import stats
from cutmix.experiment.report.runs import RunRecord, diverged_reason, finite, non_finite_fields

BASELINE = "none"

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


def _maybe(values: Sequence[Any]) -> dict[str, Any] | None:
    """:func:`stats.describe` of the finite values among ``values``; None when there are none."""
    kept = [v for v in map(finite, values) if v is not None]
    return stats.describe(kept) if kept else None


def _mean_or_none(values: Sequence[Any]) -> float | None:
    kept = [v for v in map(finite, values) if v is not None]
    return stats.mean(kept) if kept else None


def _arm_summary(runs: list[RunRecord], num_classes: int, val: bool) -> dict[str, Any]:
    kept = [r for r in runs if not diverged_reason(r)]
    out: dict[str, Any] = {
        "n": len(runs),
        "seeds": [r.seed for r in runs],
        # Non-finite values are left out of every statistic; these seeds say whose.
        "test_acc": _maybe([r.summary.get("test_acc") for r in runs]),
        "non_finite_test_acc_seeds": [r.seed for r in runs if finite(r.summary.get("test_acc")) is None],
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
    by_arm: dict[str, dict[int, RunRecord]], arm: str, key: str, skip_diverged: bool, baseline: str
) -> dict[str, Any] | None:
    base, runs = by_arm[baseline], by_arm[arm]
    seeds = [s for s in sorted(runs) if s in base]
    if skip_diverged:
        seeds = [s for s in seeds if not (diverged_reason(runs[s]) or diverged_reason(base[s]))]
    values = {s: (runs[s].summary.get(key), base[s].summary.get(key)) for s in seeds}
    return paired_values(values)


def paired_values(values: dict[int, tuple[Any, Any]]) -> dict[str, Any] | None:
    """The paired differences ``arm - baseline`` over the seeds of ``values`` (seed -> (the arm's
    value, the baseline's value)), with their t-interval and verdict; None when no pair is finite."""
    seeds = sorted(values)
    values = {s: (finite(values[s][0]), finite(values[s][1])) for s in seeds}
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


# The fields of a run's summary.json that its row of report.json repeats (where it has them).
RUN_FIELDS = ("test_acc", "wall_time", "train_images_per_s", "diverged", "finished", "epochs_completed",
              "best_epoch_by_val", "test_acc_at_best_val", "tta_flip")  # fmt: skip


def _run_row(run: RunRecord, base: str | Path | None) -> dict[str, Any]:
    return {
        "arm": run.arm,
        "seed": run.seed,
        "dir": _relative(run.path, base),
        "non_finite": non_finite_fields(run),
        **{k: run.summary.get(k) for k in RUN_FIELDS if k in run.summary},
        "diverged": diverged_reason(run),  # the trainer's verdict, or what the records show
        "hardware": run.hardware or None,  # where this run trained: runs may differ from the report's
    }


# The recorded hardware fields that change a run's float arithmetic: the architecture, the CPU, the
# SIMD kernels torch picked, its thread count (reductions split differently) and the GPU. cpu_count
# and gpu_count do not.
ARITHMETIC_FIELDS = ("machine", "processor", "cpu_capability", "torch_threads", "gpu")


def same_arithmetic(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two runs' recorded hardware agree on every ARITHMETIC_FIELDS entry (JSON-encoded, so
    any recorded value compares). A missing ``gpu`` means none; ``cpu_capability``, which older
    runs lack and some torch builds cannot tell (None), is compared only where both record it."""
    fields = [k for k in ARITHMETIC_FIELDS if k != "cpu_capability" or None not in (a.get(k), b.get(k))]
    return all(json.dumps(a.get(k), sort_keys=True) == json.dumps(b.get(k), sort_keys=True) for k in fields)


def paired_across_machines(
    by_arm: dict[str, dict[int, RunRecord]], arms: Sequence[str], baseline: str | None
) -> dict[str, list[int]]:
    """Per arm, the seeds whose run and the baseline's run of that seed trained on different kinds of
    machine: those paired differences hold the machines' rounding as well as the arms' difference.
    Runs that record no hardware are not compared; empty without a baseline."""
    if baseline is None:
        return {}
    out = {}
    for arm in arms:
        seeds = [seed for seed, run in sorted(by_arm[arm].items())
                 if arm != baseline and seed in by_arm[baseline] and run.hardware
                 and by_arm[baseline][seed].hardware
                 and not same_arithmetic(run.hardware, by_arm[baseline][seed].hardware)]  # fmt: skip
        if seeds:
            out[arm] = seeds
    return out


def _paired_by_arm(
    by_arm: dict[str, dict[int, RunRecord]],
    arms: Sequence[str],
    any_diverged: bool,
    val: bool,
    baseline: str | None,
) -> dict[str, Any]:
    """Each arm against ``baseline``: the final test accuracy, and without the diverged seeds (when any
    diverged) and at the best-validation epoch (with a validation split); empty with no baseline."""
    if baseline is None:
        return {}
    paired = {}
    for arm in arms:
        if arm == baseline:
            continue
        entry = {"test_acc": _paired(by_arm, arm, "test_acc", False, baseline)}
        if any_diverged:
            entry["test_acc_without_diverged"] = _paired(by_arm, arm, "test_acc", True, baseline)
        if val:
            entry["test_acc_at_best_val"] = _paired(by_arm, arm, "test_acc_at_best_val", False, baseline)
        paired[arm] = entry
    return paired


def summarize(
    runs: Sequence[RunRecord],
    arms: Sequence[str],
    classes: Sequence[str],
    meta: dict[str, Any],
    base: str | Path | None = None,
    baseline: str | None = BASELINE,
) -> dict[str, Any]:
    """The report as a JSON-ready dict.

    Args:
        runs: every run of the comparison (each arm × seed).
        arms: the arms, in the report's order.
        classes: the data set's class names.
        meta: what the report states about the comparison: command, versions, hardware,
            git_commit, data, dataset, recipe, epochs, val, config (the options common to every
            arm) and cifar10_like.
        base: the comparison folder; run folders inside it are given relative to it.
        baseline: the arm every paired difference is taken against (``--baseline``); none when it is
            None or not one of ``arms`` (by default ``none``, which a comparison may not have).

    Returns:
        The report. NaN and ±inf become None (JSON null); each run's ``non_finite`` names the
        fields that held them, and ``any_non_finite`` says if any did.
    """
    val = bool(meta.get("val"))
    by_arm: dict[str, dict[int, RunRecord]] = {arm: {} for arm in arms}
    for run in runs:
        by_arm.setdefault(run.arm, {})[run.seed] = run
    missing = [arm for arm in arms if not by_arm[arm]]
    if missing:
        raise ValueError(f"expected at least one run per arm, got none for {', '.join(missing)}")
    any_diverged = any(diverged_reason(r) for r in runs)
    baseline = baseline if baseline in arms else None
    per_arm = {arm: _arm_summary([by_arm[arm][s] for s in sorted(by_arm[arm])], len(classes), val)
               for arm in arms}  # fmt: skip
    show_reference = meta.get("recipe") == "seed" and meta.get("cifar10_like")
    report: dict[str, Any] = {
        **meta,
        "arms": list(arms),
        "seeds": sorted({r.seed for r in runs}),
        "classes": list(classes),
        "runs": [_run_row(r, base) for r in runs],
        "per_arm": per_arm,
        "any_diverged": any_diverged,
        "any_non_finite": any(non_finite_fields(r) for r in runs),
        "baseline": baseline,
        "paired": _paired_by_arm(by_arm, arms, any_diverged, val, baseline),
        "paired_across_machines": paired_across_machines(by_arm, arms, baseline),
        "seed_reference": SEED_REFERENCE if show_reference else None,
    }
    return _strict(report)
