"""`cutmix compare --robustness`: the robustness suite (:func:`cutmix.robustness.evaluate_robustness`)
for each finished run of a comparison, cached in the run's folder, and the CAM grid of the arms.

Each run is evaluated from its ``model.safetensors`` (or, for a run older than that file, its
``checkpoint.pt``) into ``RUN_DIR/robustness/``, with the seed :data:`ROBUSTNESS_SEED` for every
run, so that every arm and seed is measured on the same test images and the same noise. A result
already there with the same settings (limit, seed, batch size, corruptions source) is reused, so a
re-run with ``--robustness`` evaluates only what is missing. None of this enters a run's options or
its config hash: the suite reads the runs, it never changes them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cutmix.experiment.report.runs import RunRecord, diverged_reason

__all__ = ["ROBUSTNESS_SEED", "model_file", "robustness_results", "suite_settings", "write_cam_grid"]

# The suite's seed for every run (its subset of test images, noise images and noisy corruptions):
# one for all, so that the arms of a seed, and the seeds, are compared on the same draws.
ROBUSTNESS_SEED = 0
GENERATED = "CIFAR-10-C-style (generated)"  # the suite's own name for the corruptions it generates
_CACHE_KEYS = ("limit", "seed", "batch_size", "corruptions", "corruptions_folder")


def suite_settings(limit: int | None, batch_size: int) -> dict[str, Any]:
    """The settings a cached result must have been computed with to be reused (the suite's own
    ``settings`` keys: a comparison always uses the generated corruptions)."""
    return {"limit": limit, "seed": ROBUSTNESS_SEED, "batch_size": batch_size, "corruptions": GENERATED,
            "corruptions_folder": None}  # fmt: skip


def model_file(run_dir: Path) -> Path:
    """The run's final model: ``model.safetensors``, else (a run older than it) ``checkpoint.pt``."""
    exported = run_dir / "model.safetensors"
    return exported if exported.is_file() else run_dir / "checkpoint.pt"


def cached_result(run_dir: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """``RUN_DIR/robustness/robustness.json`` when it was computed with ``settings``; else None."""
    path = run_dir / "robustness" / "robustness.json"
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    saved = result.get("settings") if isinstance(result, dict) else None
    if not isinstance(saved, dict) or any(saved.get(k) != settings[k] for k in _CACHE_KEYS):
        return None
    return result


def evaluated_runs(records: Sequence[RunRecord]) -> list[RunRecord]:
    """The runs the suite measures: finished, not diverged (a diverged model's scores are not
    finite), with a model file."""
    return [r for r in records if r.summary.get("finished") and not diverged_reason(r)
            and model_file(r.path).is_file()]  # fmt: skip


def robustness_results(
    records: Sequence[RunRecord],
    dataset: Any,
    device: Any,
    *,
    limit: int | None,
    batch_size: int,
    argv: list[str] | None = None,
    progress: bool = False,
    evaluate: Callable[..., dict[str, Any]] | None = None,
) -> dict[tuple[str, int], dict[str, Any]]:
    """The suite's result of each evaluable run (:func:`evaluated_runs`), by (arm, seed): read from
    ``RUN_DIR/robustness/`` where it was computed with the same settings, else computed there.

    Args:
        records: the comparison's runs.
        dataset: the loaded data set (its test split is evaluated).
        device: where to evaluate.
        limit: a class-stratified subset of this many test images (None: all).
        batch_size: the suite's batch size (its random draws are made per batch).
        argv: the command line, recorded in each robustness.json.
        progress: show the suite's progress bar.
        evaluate: the suite (default :func:`cutmix.robustness.evaluate_robustness`).
    """
    if evaluate is None:
        from cutmix.robustness import evaluate_robustness as evaluate
    settings = suite_settings(limit, batch_size)
    results = {}
    for record in evaluated_runs(records):
        result = cached_result(record.path, settings)
        if result is None:
            result = evaluate(model_file(record.path), dataset, limit=limit, seed=ROBUSTNESS_SEED,
                              batch_size=batch_size, device=device, out=record.path / "robustness",
                              argv=argv, progress=progress)  # fmt: skip
        results[(record.arm, record.seed)] = result
    return results


def write_cam_grid(
    path: Path, records: Sequence[RunRecord], arms: Sequence[str], dataset: Any, device: Any
) -> Path | None:
    """cam.png: one row per arm (its first evaluated seed's model), the same test images in every
    row (the first test image of each class, :func:`cutmix.robustness.cam.cam_images`), each with
    its class activation map. Written atomically; None when no run can be drawn."""
    import torch

    import cutmix
    from cutmix.robustness.attacks import PixelModel, pixels
    from cutmix.robustness.cam import cam_images, class_activation_maps
    from cutmix.runinfo import atomic_save_figure

    first: dict[str, RunRecord] = {}
    for record in sorted(evaluated_runs(records), key=lambda r: r.seed):
        first.setdefault(record.arm, record)
    rows = [arm for arm in arms if arm in first]
    if not rows:
        return None
    picks = cam_images(np.asarray(dataset.test_labels), len(dataset.classes))
    maps = {}
    for arm in rows:
        loaded = cutmix.load_model(model_file(first[arm].path), device)
        model = PixelModel(loaded.model, loaded.config.normalize).eval()
        x = pixels(dataset.test_images[picks], next(loaded.model.parameters()).device)
        with torch.no_grad():
            cam, predicted = class_activation_maps(model, x)
        maps[arm] = (cam.cpu().numpy(), predicted.cpu().numpy())
    fig = _cam_figure(dataset, picks, rows, maps, {arm: first[arm].seed for arm in rows})
    return atomic_save_figure(fig, path)


def _cam_figure(dataset: Any, picks: np.ndarray, rows: list[str], maps: dict, seeds: dict[str, int]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = max(len(picks), 1)
    fig = Figure(figsize=(1.4 * columns + 1, 1.6 * (len(rows) + 1)))
    FigureCanvasAgg(fig)
    axes = np.asarray(fig.subplots(len(rows) + 1, columns, squeeze=False))
    names, labels = list(dataset.classes), np.asarray(dataset.test_labels)
    for column, i in enumerate(picks):
        axes[0, column].imshow(dataset.test_images[i])
        axes[0, column].set_title(f"true: {names[labels[i]]}", fontsize=7)
        for row, arm in enumerate(rows, start=1):
            cam, predicted = maps[arm]
            axes[row, column].imshow(dataset.test_images[i])
            axes[row, column].imshow(cam[column], cmap="jet", alpha=0.5, vmin=0, vmax=1)
            axes[row, column].set_title(f"{arm} s{seeds[arm]}: {names[int(predicted[column])]}", fontsize=6)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    return fig
