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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from cutmix.errors import UsageError
from cutmix.experiment.arms import Arm, Vary, as_arms, check_distinct, parse_vary, resolve_baseline
from cutmix.experiment.folder import check_kept_inits, check_out, delete_runs, refusal
from cutmix.experiment.locks import comparison_lock
from cutmix.experiment.outputs import Group, write_record, write_reports
from cutmix.experiment.plan import (
    PlannedRun,
    group_base,
    groups,
    hashed_options,
    initial_weights,
    plan,
    run_init_path,
)
from cutmix.experiment.runners import Launch, default_jobs, run_planned
from cutmix.experiment.runners.local import barrier
from cutmix.experiment.runners.slurm import SLURM_FOLDER, SlurmOptions, check_slurm_launch
from cutmix.experiment.runners.slurm_queue import active_jobs
from cutmix.runinfo import atomic_torch_save, environment
from cutmix.training.components import check_image_size
from cutmix.training.config import TrainConfig, config_with
from cutmix.training.distributed import load_data_main_first, setup_distributed


@dataclass
class _Comparison:
    """What every step of a comparison shares once its data is loaded."""

    base: TrainConfig
    arms: tuple[Arm, ...]
    seeds: list[int]
    out: Path
    dataset: Any
    dist_info: Any
    device: torch.device
    argv: list[str] | None
    robustness: bool = False
    robustness_limit: int | None = None
    baseline: str | None = None
    vary: Vary | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(arm.name for arm in self.arms)


def compare(
    base: TrainConfig,
    arms: Sequence[str | Arm],
    seeds: list[int],
    out: str | Path,
    *,
    baseline: str | None = None,
    vary: Vary | str | None = None,
    force: bool = False,
    progress: bool = True,
    argv: list[str] | None = None,
    jobs: int | None = None,
    threads: int | None = None,
    robustness: bool = False,
    robustness_limit: int | None = None,
    slurm: SlurmOptions | None = None,
) -> dict[str, Any]:
    """Runs every arm × seed into ``out`` (skipping finished runs, resuming unfinished ones) and
    writes the report.

    Args:
        base: the options shared by every arm (its ``mix``, ``seed`` and ``init`` are set per run).
        arms: the arms compared: specs (``"cutmix:alpha=0.2"``) or :class:`~cutmix.experiment.arms.Arm` s.
        seeds: the seeds; each gives every arm the same initial weights and data order.
        out: the comparison folder.
        baseline: the arm (a spec) every paired difference is taken against; default ``none`` where
            it is an arm (else no paired differences).
        vary: a setting and its values (``"epochs=15,30"`` or a :class:`~cutmix.experiment.arms.Vary`):
            the whole plan once per value, each in ``out/KEY=VALUE/``, paired within each value.
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
        slurm: train each run as a Slurm job (:mod:`cutmix.experiment.runners.slurm`; ``out`` on a
            file system every node sees) instead of here; with ``slurm.wait`` False, return ``{}``
            once the jobs are submitted, without a report (`cutmix report OUT` writes it later).

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
    arms = as_arms(arms)
    vary = parse_vary(vary, arms) if isinstance(vary, str) else vary
    baseline = resolve_baseline(baseline, arms)
    _check_plan(base, arms, vary)  # a bad option is refused before any data is loaded
    dist_info, device = setup_distributed(base.device)
    if slurm is not None:
        check_slurm_launch(slurm, jobs, dist_info.enabled)
        if robustness and not slurm.wait:  # the suite runs in the waiting parent, not in the jobs
            raise UsageError(
                "--robustness: expected a comparison that waits for its jobs, got --no-wait "
                "(run cutmix compare ... --robustness again once the jobs have ended)"
            )
    jobs = _checked_jobs(jobs, threads, base.device, dist_info)
    roots = [root for root, _, _ in groups(out, vary)] if vary is not None else None
    check_out(out, tuple(a.name for a in arms), seeds, force=force, roots=roots)
    dataset = load_data_main_first(base.data, dist_info, progress=progress and dist_info.is_main)
    # What train() would refuse once the data is loaded, refused here before any run starts: in a
    # child process (--jobs N) it would only fail that run, once per run.
    for _, _, changes in groups(out, vary):
        try:
            check_fits_data(group_base(base, changes, vary), dataset, dist_info.world_size)
        except UsageError as exc:
            value = ", ".join(f"{vary.key}={v!r}" for v in changes.values()) if vary else ""
            raise UsageError(f"--vary {value}: {exc}" if vary else str(exc)) from None
    _check_robustness_limit(robustness, robustness_limit, len(dataset.test_labels))
    ctx = _Comparison(base, arms, seeds, out, dataset, dist_info, device, argv, robustness, robustness_limit,
                      baseline, vary)  # fmt: skip
    with contextlib.ExitStack() as stack:
        _hold_comparison_lock(stack, out, dist_info)
        runs = _prepare_runs(ctx, force)
        if dist_info.is_main:  # once the runs kept are known to be of these options (a refusal keeps it)
            _write_record(ctx)
        _train_runs(ctx, runs, progress, jobs, threads, slurm)
        if slurm is not None and not slurm.wait:
            return {}  # submitted: `cutmix report OUT` once the jobs have ended
        barrier(dist_info.enabled)
        return _write_outputs(ctx, runs) if dist_info.is_main else {}


def _check_plan(base: TrainConfig, arms: tuple[Arm, ...], vary: Vary | None) -> None:
    """Every arm's configuration at every value validated, and two arms that would train alike
    refused, naming the spec or the value: before any data is loaded or any run trains."""
    for _, _, changes in groups(".", vary):
        value_base = group_base(base, changes, vary)
        check_distinct(arms, value_base)


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
    runs = plan(ctx.base, ctx.arms, ctx.seeds, ctx.out, ctx.vary)
    differing = [r for r in runs if r.state == "differs"]
    if differing and not force:
        raise UsageError(refusal(ctx.out, differing))
    busy = active_jobs(differing) if ctx.dist_info.is_main else {}
    if busy:  # a pending job holds no lock: --force must not delete the folder it will train in
        listed = "\n".join(f"  {path}: job {job}" for path, job in busy.items())
        raise UsageError(f"--force: refusing to delete run folders whose Slurm jobs are pending or running:\n"
                         f"{listed}\nscancel them first, then re-run.")  # fmt: skip
    num_classes = len(ctx.dataset.classes)
    for root, group, _ in groups(ctx.out, ctx.vary):
        check_kept_inits([r for r in runs if r.group == group], root, ctx.base.data, num_classes)
    if ctx.dist_info.is_main:
        delete_runs(differing)
        for path, seed_runs in _runs_by_init(runs).items():
            kept = [r for r in seed_runs if r.state != "new"]
            # Rewritten only when no kept run of this seed has started from the file on disk. The
            # weights follow from the seed and the model (a --vary depth changes it).
            if not kept or not path.exists():
                atomic_torch_save(path, initial_weights(seed_runs[0].config, num_classes))
    else:
        for planned in differing:
            planned.state, planned.epochs_done = "new", 0
    barrier(ctx.dist_info.enabled)
    for planned in runs:
        if planned.state != "done":
            planned.config = config_with(planned.config, init=str(run_init_path(planned).resolve()))
    return runs


def _runs_by_init(runs: list[PlannedRun]) -> dict[Path, list[PlannedRun]]:
    """The runs of each init.pt (one per seed, and per value of --vary)."""
    by_init: dict[Path, list[PlannedRun]] = {}
    for run in runs:
        by_init.setdefault(run_init_path(run), []).append(run)
    return by_init


def _train_runs(
    ctx: _Comparison, runs: list[PlannedRun], progress: bool, jobs: int, threads: int | None,
    slurm: SlurmOptions | None = None,
) -> None:  # fmt: skip
    """Trains the unfinished runs of the plan, with one progress bar over the plan's epochs."""
    waits = slurm is None or slurm.wait
    bar = _bar(runs, progress and waits and ctx.dist_info.is_main)
    launch = Launch(jobs, threads, ctx.base.device, ctx.dist_info, ctx.argv, total=len(runs), bar=bar,
                    launcher="local" if slurm is None else "slurm", slurm=slurm,
                    log_folder=ctx.out / SLURM_FOLDER)  # fmt: skip
    try:
        run_planned([r for r in runs if r.state != "done"], launch)
    finally:
        if bar is not None:
            bar.close()


def _write_record(ctx: _Comparison) -> None:
    """comparison.json, before any run trains: what `cutmix report OUT` needs besides the run folders."""
    robustness = {"limit": ctx.robustness_limit} if ctx.robustness else None
    write_record(ctx.out, ctx.arms, ctx.seeds, ctx.baseline, ctx.vary, ctx.dataset.classes, _report_meta(ctx),
                 robustness)  # fmt: skip


def _write_outputs(ctx: _Comparison, runs: list[PlannedRun]) -> dict[str, Any]:
    """Each value's report.json, report.md and curves.png from the runs' records, and its previews;
    with --vary, the report across the values; the (top) report."""
    from cutmix.experiment.report import load_run
    from cutmix.viz.preview import write_arm_previews

    found = []
    for root, folder, changes in groups(ctx.out, ctx.vary):
        records = [load_run(r.path, r.arm, r.seed) for r in runs if r.group == folder]
        found.append(Group(root, folder, next(iter(changes.values()), None), records))

    def robustness(group: Group) -> dict | None:
        return _robustness(ctx, group.root, group.records)

    report = write_reports(ctx.out, found, ctx.names, ctx.baseline, ctx.vary, ctx.dataset.classes,
                           _report_meta(ctx), robustness if ctx.robustness else None)  # fmt: skip
    for root, _, changes in groups(ctx.out, ctx.vary):
        # One picture per mixing arm, drawn with that arm's own options (preview-<arm>.png), and
        # preview.png, the first mixing arm's, which the report links.
        value_base = group_base(ctx.base, changes, ctx.vary)
        write_arm_previews(ctx.dataset, root, value_base, ctx.names, seed=0,
                           configs={a.name: a.config(value_base) for a in ctx.arms})  # fmt: skip
    return report


def _robustness(ctx: _Comparison, root: Path, records: list[Any]) -> dict[tuple[str, int], dict[str, Any]]:
    """The suite's result of each finished run (computed, or read from its cache), and cam.png."""
    from cutmix.experiment.robustness import robustness_results, write_cam_grid
    from cutmix.robustness import DEFAULT_BATCH_SIZE

    results = robustness_results(records, ctx.dataset, ctx.device, limit=ctx.robustness_limit,
                                 batch_size=DEFAULT_BATCH_SIZE, argv=ctx.argv)  # fmt: skip
    if results:
        write_cam_grid(root / "cam.png", records, ctx.names, ctx.dataset, ctx.device)
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
        "arm_specs": {arm.name: arm.spec or arm.name for arm in ctx.arms},
        "baseline": ctx.baseline,
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
