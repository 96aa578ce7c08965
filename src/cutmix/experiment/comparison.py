"""`cutmix compare`: the Keras example's experiment (CutMix against no augmentation) as one call,
over several seeds, with a report.

:func:`compare` reads as its steps: check the options and ``--out`` (:mod:`.folder`), load the data
and check the options against it, lock ``--out``, plan the runs (:mod:`.plan`), clear what ``--force``
redoes and write each seed's shared initial weights, train what is not finished (:mod:`.runners`),
then write the report (:mod:`.report`) and the previews (:mod:`cutmix.viz.preview`). With
``robustness``, the robustness suite of each finished run first (:mod:`.robustness`, cached in the
run folders), its table in the report, robustness.png and cam.png.

For seed s every arm starts from ``seed-<s>/init.pt`` and trains with ``seed=s``, so the arms see
the training images in the same order (the loader's shuffle depends on the seed only). Re-running
the same call skips finished runs and resumes an unfinished one from its last checkpoint; a re-run
with other options refuses to mix old runs into the report unless ``force``.
"""

from __future__ import annotations

import contextlib
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from cutmix.errors import UsageError
from cutmix.experiment.folder import check_kept_inits, check_out, delete_runs, refusal
from cutmix.experiment.locks import comparison_lock
from cutmix.experiment.plan import PlannedRun, hashed_options, init_path, initial_weights, plan
from cutmix.experiment.runners import Launch, default_jobs, run_planned
from cutmix.experiment.runners.local import barrier
from cutmix.runinfo import atomic_torch_save, environment
from cutmix.training.components import check_image_size
from cutmix.training.config import TrainConfig, arm_configs, config_with
from cutmix.training.distributed import load_data_main_first, setup_distributed


@dataclass
class _Comparison:
    """What every step of a comparison shares once its data is loaded."""

    base: TrainConfig
    arms: tuple[str, ...]
    seeds: list[int]
    out: Path
    dataset: Any
    dist_info: Any
    device: torch.device
    argv: list[str] | None
    robustness: bool = False
    robustness_limit: int | None = None


def compare(
    base: TrainConfig,
    arms: tuple[str, ...],
    seeds: list[int],
    out: str | Path,
    *,
    force: bool = False,
    progress: bool = True,
    argv: list[str] | None = None,
    jobs: int | None = None,
    threads: int | None = None,
    robustness: bool = False,
    robustness_limit: int | None = None,
) -> dict[str, Any]:
    """Runs every arm × seed into ``out`` (skipping finished runs, resuming unfinished ones) and
    writes the report.

    Args:
        base: the options shared by every arm (its ``mix``, ``seed`` and ``init`` are set per run).
        arms: the mixing ops compared (``none`` is the baseline of the paired differences).
        seeds: the seeds; each gives every arm the same initial weights and data order.
        out: the comparison folder.
        force: delete and redo runs made with other options, and write into a folder holding what
            compare did not write (never into one another comparison is using).
        progress: show a progress bar.
        argv: the command line, recorded in the report and the run folders.
        jobs: runs trained at once, each in its own process (default: one per visible GPU where
            there are several, else 1, in this process). A run's results do not depend on it.
        threads: intra-op threads per run (default: the cores shared out between the jobs; with
            one job in this process, torch's setting).
        robustness: after training, the robustness suite of each finished run (cached in
            ``RUN_DIR/robustness/``: a finished comparison re-run with it only evaluates), and its
            table and figures in the report. Not one of the runs' options: no config hash changes.
        robustness_limit: the suite on a class-stratified subset of this many test images (with
            ``robustness``; None: the whole test split).

    Returns:
        The report dict (see :func:`cutmix.experiment.report.summarize`); empty in the processes
        of a torchrun group but the main one.

    Raises:
        cutmix.experiment.runners.RunsFailedError: a child run failed (the others finish first;
            no report is written).
    """
    if not seeds:
        raise UsageError("--seeds: expected at least one seed, got none")
    out = Path(out)
    dist_info, device = setup_distributed(base.device)
    jobs = _checked_jobs(jobs, threads, base.device, dist_info)
    arm_configs(base, arms, seeds)  # a bad option is refused before any data is loaded
    check_out(out, arms, seeds, force=force)
    dataset = load_data_main_first(base.data, dist_info, progress=progress and dist_info.is_main)
    # What train() would refuse once the data is loaded, refused here before any run starts: in a
    # child process (--jobs N) it would only fail that run, once per run.
    check_fits_data(base, dataset, dist_info.world_size)
    _check_robustness_limit(robustness, robustness_limit, len(dataset.test_labels))
    ctx = _Comparison(base, arms, seeds, out, dataset, dist_info, device, argv, robustness, robustness_limit)
    with contextlib.ExitStack() as stack:
        _hold_comparison_lock(stack, out, dist_info)
        runs = _prepare_runs(ctx, force)
        _train_runs(ctx, runs, progress, jobs, threads)
        barrier(dist_info.enabled)
        return _write_outputs(ctx, runs) if dist_info.is_main else {}


def _checked_jobs(jobs: int | None, threads: int | None, device: str, dist_info: Any) -> int:
    """``jobs``, or its default; refuses a count below 1 and several jobs under torchrun."""
    if jobs is None:  # under torchrun the processes share each run: one at a time
        jobs = 1 if dist_info.enabled else default_jobs(device)
    if jobs < 1:
        raise UsageError(f"--jobs: expected an integer >= 1, got {jobs}")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads: expected an integer >= 1, got {threads}")
    if jobs > 1 and dist_info.enabled:
        raise UsageError(f"--jobs: expected 1 under torchrun (its processes share each run), got {jobs}")
    return jobs


def _check_robustness_limit(robustness: bool, limit: int | None, test_count: int) -> None:
    """Refuses a --robustness-limit without --robustness, below 1 or above the test images, before
    any run trains (the suite would refuse it only once they all have)."""
    if limit is None:
        return
    if not robustness:
        raise UsageError(f"--robustness-limit: expected --robustness with it, got --robustness-limit {limit}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= test_count:
        raise UsageError(
            f"--robustness-limit: expected a number of test images from 1 to {test_count}, got {limit!r}"
        )


def check_fits_data(config: TrainConfig, dataset: Any, world_size: int = 1) -> None:
    """The checks of ``config`` against the loaded data that :func:`cutmix.training.loop.train` makes
    (image size, --val, --batch-size; the same messages), so that a comparison refuses them up front."""
    check_image_size(dataset, config.data)
    train_count = len(dataset.train_labels)
    if config.val >= train_count:
        raise UsageError(f"--val: expected fewer than the {train_count} training images, got {config.val}")
    if config.batch_size % world_size:
        raise UsageError(
            f"--batch-size: expected a multiple of the {world_size} processes, got {config.batch_size}"
        )
    if config.batch_size > train_count - config.val:
        raise UsageError(
            f"--batch-size: expected at most the {train_count - config.val} training images, "
            f"got {config.batch_size}"
        )


def _hold_comparison_lock(stack: contextlib.ExitStack, out: Path, dist_info: Any) -> None:
    """The main process locks ``out`` until ``stack`` closes; under torchrun every process learns
    whether it could, so that a refusal ends them all instead of leaving them at a barrier."""
    refused = None
    if dist_info.is_main:
        try:
            stack.enter_context(comparison_lock(out))
        except UsageError as exc:
            refused = str(exc)
    if dist_info.enabled:
        shared = [refused]
        dist.broadcast_object_list(shared, src=0)
        refused = shared[0]
    if refused is not None:
        raise UsageError(refused)


def _prepare_runs(ctx: _Comparison, force: bool) -> list[PlannedRun]:
    """The plan, once ``out`` is locked: runs of other options refused (or, with ``force``, deleted to
    be redone), each seed's init.pt written where no kept run has started from it, and each run to
    train given its init.pt."""
    runs = plan(ctx.base, ctx.arms, ctx.seeds, ctx.out)
    differing = [r for r in runs if r.state == "differs"]
    if differing and not force:
        raise UsageError(refusal(ctx.out, differing))
    num_classes = len(ctx.dataset.classes)
    check_kept_inits(runs, ctx.out, ctx.base.data, num_classes)
    if ctx.dist_info.is_main:
        delete_runs(differing)
        for seed in ctx.seeds:
            path = init_path(ctx.out, seed)
            kept = [r for r in runs if r.seed == seed and r.state != "new"]
            # Rewritten only when no kept run of this seed has started from the file on disk.
            if not kept or not path.exists():
                atomic_torch_save(path, initial_weights(replace(ctx.base, seed=seed), num_classes))
    else:
        for planned in differing:
            planned.state, planned.epochs_done = "new", 0
    barrier(ctx.dist_info.enabled)
    for planned in runs:
        if planned.state != "done":
            planned.config = config_with(planned.config, init=str(init_path(ctx.out, planned.seed).resolve()))
    return runs


def _train_runs(
    ctx: _Comparison, runs: list[PlannedRun], progress: bool, jobs: int, threads: int | None
) -> None:
    """Trains the unfinished runs of the plan, with one progress bar over the plan's epochs."""
    bar = _bar(runs, progress and ctx.dist_info.is_main)
    launch = Launch(jobs, threads, ctx.base.device, ctx.dist_info, ctx.argv, total=len(runs), bar=bar)
    try:
        run_planned([r for r in runs if r.state != "done"], launch)
    finally:
        if bar is not None:
            bar.close()


def _write_outputs(ctx: _Comparison, runs: list[PlannedRun]) -> dict[str, Any]:
    """report.json, report.md and curves.png from the runs' records, and the previews; the report."""
    from cutmix.experiment.report import load_run, write_report
    from cutmix.viz.preview import write_arm_previews

    records = [load_run(r.path, r.arm, r.seed) for r in runs]
    results = _robustness(ctx, records) if ctx.robustness else None
    report = write_report(ctx.out, records, ctx.arms, ctx.dataset.classes, _report_meta(ctx), results)
    # One picture per mixing arm, drawn with that arm's own options (preview-<arm>.png), and
    # preview.png, the first mixing arm's, which the report links.
    write_arm_previews(ctx.dataset, ctx.out, ctx.base, ctx.arms, seed=0)
    return report


def _robustness(ctx: _Comparison, records: list[Any]) -> dict[tuple[str, int], dict[str, Any]]:
    """The suite's result of each finished run (computed, or read from its cache), and cam.png."""
    from cutmix.experiment.robustness import robustness_results, write_cam_grid
    from cutmix.robustness import DEFAULT_BATCH_SIZE

    results = robustness_results(records, ctx.dataset, ctx.device, limit=ctx.robustness_limit,
                                 batch_size=DEFAULT_BATCH_SIZE, argv=ctx.argv)  # fmt: skip
    if results:
        write_cam_grid(ctx.out / "cam.png", records, ctx.arms, ctx.dataset, ctx.device)
    return results


def _report_meta(ctx: _Comparison) -> dict[str, Any]:
    """What the report states about the comparison: provenance, data and the common options."""
    from cutmix.experiment.report import is_cifar10_like

    base, dataset = ctx.base, ctx.dataset
    env = environment(ctx.device, ctx.argv)
    env["command"] = shlex.join(["cutmix", *ctx.argv]) if ctx.argv is not None else env["command"]
    return {
        **env,
        "data": base.data,
        "dataset": dataset.name,
        "dataset_source": dataset.source,
        "train_images": len(dataset.train_images) - base.val,
        "val_images": base.val,
        "test_images": len(dataset.test_images),
        "recipe": base.recipe,
        "epochs": base.epochs,
        "val": base.val,
        "config": {k: v for k, v in hashed_options(base).items() if k not in ("mix", "seed")},
        "cifar10_like": is_cifar10_like(dataset.classes, dataset.image_shape),
    }


def _bar(runs: list[PlannedRun], enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=sum(r.config.epochs for r in runs),
        initial=sum(r.epochs_done for r in runs),
        desc="compare",
        unit="epoch",
        dynamic_ncols=True,
    )
