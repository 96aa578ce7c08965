"""The robustness part of a comparison's report (``compare --robustness``): report.json's
``robustness`` entry from the runs' robustness.json results, and robustness.png.

Per arm, the mean ± sample std over seeds of each metric of :data:`METRICS`; per arm against
``none``, the paired differences over seeds (the same seed's runs) with their t-intervals and
verdicts, by :func:`cutmix.experiment.report.summary.paired_values`, as for the test accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cutmix.experiment.report import stats
from cutmix.experiment.report.runs import finite
from cutmix.experiment.report.summary import BASELINE, paired_values

__all__ = ["METRICS", "metric_values", "plot_robustness", "summarize_robustness"]

# (key in report.json, label in report.md, unit, path into a robustness.json). Units: "pct" for
# fractions shown in % (differences in pp), "nats" for the NLL.
METRICS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("clean_acc", "clean accuracy", "pct", ("clean", "acc")),
    ("ece", "ECE (15 bins)", "pct", ("clean", "ece")),
    ("nll", "NLL (nats)", "nats", ("clean", "nll")),
    ("occlusion_center", "occlusion, centre (mean over s)", "pct", ("occlusion", "center_mean")),
    ("occlusion_boundary", "occlusion, boundary (mean over s)", "pct", ("occlusion", "boundary_mean")),
    ("fgsm_4", "FGSM ε = 4/255", "pct", ("fgsm", "4")),
    ("fgsm_8", "FGSM ε = 8/255", "pct", ("fgsm", "8")),
    ("ood_uniform", "OOD AUROC, uniform noise", "pct", ("ood", "uniform", "auroc")),
    ("ood_gaussian", "OOD AUROC, Gaussian noise", "pct", ("ood", "gaussian", "auroc")),
    ("corruptions", "CIFAR-10-C-style corruptions (mean)", "pct", ("corruptions", "mean")),
)


def metric_values(result: Mapping[str, Any]) -> dict[str, float | None]:
    """The :data:`METRICS` of one robustness.json result (None where missing or not finite)."""
    out = {}
    for key, _, _, path in METRICS:
        value: Any = result
        for part in path:
            value = value.get(part) if isinstance(value, Mapping) else None
        out[key] = finite(value)
    return out


def _describe(values: Sequence[float | None]) -> dict[str, Any] | None:
    kept = [v for v in values if v is not None]
    return stats.describe(kept) if kept else None


def summarize_robustness(
    results: Mapping[tuple[str, int], Mapping[str, Any]], arms: Sequence[str], baseline: str | None = BASELINE
) -> dict[str, Any]:
    """report.json's ``robustness`` entry.

    Args:
        results: the suite's result of each evaluated run, by (arm, seed).
        arms: the arms, in the report's order.
        baseline: the arm the paired differences are against (none if None or not an arm).

    Returns:
        ``metrics`` (key, label, unit of each row), ``settings`` (the suite's, from the first
        result), ``runs`` (arm -> seed -> metric -> value), ``per_arm`` (arm -> metric ->
        :func:`stats.describe` or None) and ``paired`` (arm -> metric -> the paired difference
        against the baseline or None; empty without one).
    """
    values = {arm: {seed: metric_values(r) for (a, seed), r in sorted(results.items()) if a == arm}
              for arm in arms}  # fmt: skip
    keys = [m[0] for m in METRICS]
    per_arm = {arm: {k: _describe([v[k] for v in values[arm].values()]) for k in keys} for arm in arms}
    paired: dict[str, Any] = {}
    if baseline in arms:
        base = values[baseline]
        for arm in arms:
            if arm != baseline:
                seeds = [s for s in sorted(values[arm]) if s in base]
                paired[arm] = {k: paired_values({s: (values[arm][s][k], base[s][k]) for s in seeds})
                               for k in keys}  # fmt: skip
    first = next(iter(results.values()), {})
    settings = dict(first.get("settings") or {})
    return {
        "metrics": [{"key": k, "label": label, "unit": unit} for k, label, unit, _ in METRICS],
        "settings": {k: settings.get(k) for k in ("limit", "seed", "batch_size", "tta_flip", "corruptions")},
        "n_images": first.get("n_images"),
        "runs": {arm: {str(s): v for s, v in values[arm].items()} for arm in arms},
        "per_arm": per_arm,
        "paired": paired,
    }


def _curve(results: list[Mapping[str, Any]], path: tuple[str, ...]) -> tuple[list[int], list[list[float]]]:
    """x (the integer keys of the curve at ``path``) and, per x, the finite values over runs."""
    curves = []
    for result in results:
        curve: Any = result
        for part in path:
            curve = curve.get(part, {})
        curves.append(curve)
    xs = sorted({int(k) for c in curves for k in c})
    return xs, [[v for c in curves if (v := finite(c.get(str(x)))) is not None] for x in xs]


def _pooled_reliability(results: list[Mapping[str, Any]]) -> tuple[list[float], list[float | None]]:
    """Bin centres and the accuracy per bin over every seed's images (counts added up)."""
    bins = results[0]["reliability"]["bins"]
    hits, counts = [0.0] * bins, [0] * bins
    for result in results:
        rel = result["reliability"]
        for i, (n, acc) in enumerate(zip(rel["count"], rel["accuracy"], strict=True)):
            if n and acc is not None:
                hits[i] += acc * n
                counts[i] += n
    return [(i + 0.5) / bins for i in range(bins)], [
        h / n if n else None for h, n in zip(hits, counts, strict=True)
    ]


def plot_robustness(
    results: Mapping[tuple[str, int], Mapping[str, Any]],
    arms: Sequence[str],
    out: str | Path,
    title: str = "",
) -> Path:
    """robustness.png: occlusion curves (centre, boundary) and FGSM curves per arm (the mean over
    seeds and a min–max band, as curves.png), and each arm's reliability diagram (every seed's
    images pooled). Written atomically; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cutmix.experiment.report.plots import arm_colours
    from cutmix.runinfo import atomic_save_figure

    shown = [arm for arm in arms if any(a == arm for a, _ in results)]
    columns = max(3, len(shown))
    fig = Figure(figsize=(4.2 * columns, 8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, columns, squeeze=False)
    panels = ((("occlusion", "center"), "occlusion, centre hole", "side s (pixels)"),
              (("occlusion", "boundary"), "occlusion, boundary", "side s of the kept centre (pixels)"),
              (("fgsm",), "FGSM", "ε (/255)"))  # fmt: skip
    for ax, (path, name, xlabel) in zip(axes[0], panels, strict=False):
        for arm in shown:
            xs, ys = _curve([r for (a, _), r in results.items() if a == arm], path)
            kept = [(x, y) for x, y in zip(xs, ys, strict=True) if y]
            colour, x = arm_colours(arms)[arm], [x for x, _ in kept]
            ax.plot(
                x, [100 * stats.mean(y) for _, y in kept], marker="o", markersize=3, color=colour, label=arm
            )
            if len({s for a, s in results if a == arm}) > 1:  # a band over seeds, as curves.png
                ax.fill_between(x, [100 * min(y) for _, y in kept], [100 * max(y) for _, y in kept],
                                color=colour, alpha=0.2, linewidth=0)  # fmt: skip
        ax.set(title=name, xlabel=xlabel, ylabel="accuracy (%)", ylim=(0, 100))
        ax.legend()
    for ax, arm in zip(axes[1], shown, strict=False):
        centres, accuracy = _pooled_reliability([r for (a, _), r in results.items() if a == arm])
        ax.bar(centres, [a or 0.0 for a in accuracy], width=1 / len(centres), edgecolor="black", alpha=0.7,
               color=arm_colours(arms)[arm])  # fmt: skip
        ax.plot([0, 1], [0, 1], "--", color="gray")
        ax.set(title=f"reliability, {arm} (seeds pooled)", xlabel="confidence", ylabel="accuracy",
               xlim=(0, 1), ylim=(0, 1))  # fmt: skip
    for ax in list(axes[0][len(panels) :]) + list(axes[1][len(shown) :]):
        ax.axis("off")
    if title:
        fig.suptitle(f"{title}: robustness (no flip TTA; CIFAR-10-C-style corruptions, generated)")
    fig.tight_layout()
    return atomic_save_figure(fig, out, dpi=90)
