"""curves.png: test accuracy and training loss per epoch, per arm, from the runs' metrics.jsonl (the
mean over seeds and a min–max band); what is not finite is not plotted, and the figure says so."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cutmix.experiment.report import stats
from cutmix.experiment.report.runs import RunRecord, diverged_reason, finite
from cutmix.runinfo import atomic_save_figure

ARM_COLOURS = {"none": "tab:gray", "cutmix": "tab:blue", "mixup": "tab:orange", "cutout": "tab:green"}
_SPARE_COLOURS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def arm_colours(arms: Sequence[str]) -> dict[str, str]:
    """A colour per arm: an op's own for the arm of that name (``cutmix``), a distinct spare one for an
    arm with options (``cutmix_alpha=0.2``), cycling only past the spares."""
    colours = {arm: ARM_COLOURS[arm] for arm in arms if arm in ARM_COLOURS}
    others = [arm for arm in arms if arm not in colours]
    return {**colours, **{arm: _SPARE_COLOURS[i % len(_SPARE_COLOURS)] for i, arm in enumerate(others)}}


def _band(runs: list[RunRecord], key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """Per epoch where any run has a finite ``key``: the mean, min and max over those finite values."""
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for m in run.metrics:
            value = finite(m.get(key))
            if value is not None:
                by_epoch.setdefault(int(m["epoch"]), []).append(value)
    epochs = sorted(by_epoch)
    return (
        epochs,
        [stats.mean(by_epoch[e]) for e in epochs],
        [min(by_epoch[e]) for e in epochs],
        [max(by_epoch[e]) for e in epochs],
    )


def _plot_arm(ax, runs: list[RunRecord], key: str, scale: float, colour: str, label: str) -> list[str]:
    """One arm's mean and band of ``key`` on ``ax``, a cross at each diverged run's last finite value;
    returns what was not plotted, one entry per run ("cutmix seed 1 (epoch 3, 4)")."""
    epochs, mean, low, high = _band(runs, key)
    ax.plot(epochs, [scale * v for v in mean], color=colour, marker="o", markersize=3, label=label)
    if len(runs) > 1:
        ax.fill_between(epochs, [scale * v for v in low], [scale * v for v in high],
                        color=colour, alpha=0.2, linewidth=0)  # fmt: skip
    unplotted = []
    for run in runs:
        kept = [m for m in run.metrics if finite(m.get(key)) is not None]
        bad = [str(m["epoch"]) for m in run.metrics if finite(m.get(key)) is None]
        if bad:
            unplotted.append(f"{run.arm} seed {run.seed} (epoch {', '.join(bad)})")
        if diverged_reason(run) and kept:
            last = kept[-1]
            ax.plot([last["epoch"]], [scale * last[key]], marker="x", color=colour, markersize=9)
    return unplotted


def plot_curves(runs: Sequence[RunRecord], arms: Sequence[str], out: str | Path, title: str = "") -> Path:
    """curves.png: test accuracy and training loss per epoch, per arm: the mean over seeds and a
    min–max band. Written atomically; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.8))
    FigureCanvasAgg(fig)
    acc_ax, loss_ax = fig.subplots(1, 2)
    panels = ((acc_ax, "test_acc", 100.0), (loss_ax, "train_loss", 1.0))
    unplotted: dict[str, list[str]] = {"test_acc": [], "train_loss": []}
    colours = arm_colours(arms)
    for arm in arms:
        arm_runs = [r for r in runs if r.arm == arm]
        if not arm_runs:
            continue
        colour = colours[arm]
        for ax, key, scale in panels:
            unplotted[key] += _plot_arm(ax, arm_runs, key, scale, colour, f"{arm} (n = {len(arm_runs)})")
    if any(diverged_reason(r) for r in runs):
        for ax in (acc_ax, loss_ax):
            ax.plot([], [], "x", color="black", markersize=9, label="diverged run, last finite value")
    for ax, key, _ in panels:
        if unplotted[key]:
            # Said on the figure, so that a reader does not take a missing curve for a flat one.
            text = "not finite, not plotted: " + "; ".join(unplotted[key])
            ax.text(0.01, 0.01, text, transform=ax.transAxes, fontsize=7, color="firebrick", wrap=True)
    losses = [v for r in runs for m in r.metrics if (v := finite(m.get("train_loss"))) is not None]
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
