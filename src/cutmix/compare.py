"""`cutmix compare`: the Keras example's experiment (CutMix against no augmentation) as one command,
over several seeds, with a report.

Layout of ``--out``::

    OUT/seed-<s>/init.pt          initial weights of seed s, shared by every arm
    OUT/seed-<s>/<arm>/           a `cutmix train` run folder, plus compare-run.json (its config hash)
    OUT/report.md, report.json, curves.png, preview.png

For seed s every arm starts from ``seed-<s>/init.pt`` and trains with ``seed=s``, so the arms see
the training images in the same order (the loader's shuffle depends on the seed only). Re-running
the same command skips finished runs and resumes an unfinished one from its last checkpoint; a
re-run with other options refuses to mix old runs into the report unless ``--force``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import shlex
import shutil
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from cutmix.config import MIXES, TrainConfig, arm_configs, config_with, negatable_options
from cutmix.errors import UsageError
from cutmix.jobs import (
    RunsFailedError,
    Task,
    default_jobs,
    default_threads,
    run_in_processes,
    run_lock,
    visible_gpus,
)
from cutmix.models import resnet_v1
from cutmix.runinfo import atomic_torch_save, atomic_write_json, environment
from cutmix.train import _seeded, load_data_main_first, setup_distributed, train

RUN_RECORD = "compare-run.json"
# Not part of a run's identity: the path of the shared init file depends on where --out is given
# from; the weights themselves follow from (seed, depth, dataset).
UNHASHED = ("init",)


def parse_arms(text: str) -> tuple[str, ...]:
    """``"none,cutmix"`` -> ``("none", "cutmix")``; ValueError for unknown or repeated arms."""
    arms = tuple(a.strip() for a in text.split(",") if a.strip())
    if not arms:
        raise UsageError(f"--arms: expected a comma-separated list of {', '.join(MIXES)}, got {text!r}")
    unknown = [a for a in arms if a not in MIXES]
    if unknown:
        raise UsageError(f"--arms: expected arms among {', '.join(MIXES)}, got {', '.join(unknown)}")
    if len(set(arms)) != len(arms):
        raise UsageError(f"--arms: expected each arm once, got {text!r}")
    return arms


def hashed_options(config: TrainConfig) -> dict[str, Any]:
    """The options that define a run, as recorded in its compare-run.json."""
    return {k: v for k, v in asdict(config).items() if k not in UNHASHED}


def config_hash(config: TrainConfig) -> str:
    """SHA-256 of :func:`hashed_options` as canonical JSON."""
    text = json.dumps(hashed_options(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_dir(out: str | Path, seed: int, arm: str) -> Path:
    return Path(out) / f"seed-{seed}" / arm


@dataclass
class PlannedRun:
    """One arm × seed and what its folder holds: "new", "partial" (resumable), "done" or
    "differs" (another configuration, or not a run of a comparison; ``differences`` says how)."""

    arm: str
    seed: int
    path: Path
    config: TrainConfig  # without init (added once init.pt exists)
    state: str = "new"
    epochs_done: int = 0
    differences: list[str] = field(default_factory=list)


def _inspect(run: PlannedRun) -> None:
    path = run.path
    if not path.is_dir() or not any(path.iterdir()):
        return
    record_path = path / RUN_RECORD
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        old = record["options"]
        old_hash = record["hash"]
    except (OSError, ValueError, KeyError, TypeError):
        run.state, run.differences = "differs", [f"no readable {RUN_RECORD}: not a run of a comparison"]
        return
    new = hashed_options(run.config)
    if old_hash != config_hash(run.config):
        run.state = "differs"
        run.differences = [
            f"{k}: {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}"
            for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)
        ] or ["configuration hash differs"]
        return
    if (path / "summary.json").exists():
        run.state, run.epochs_done = "done", run.config.epochs
        return
    run.state = "partial"
    metrics = path / "metrics.jsonl"
    # Approximate (a killed run may have logged one epoch past its checkpoint): progress only.
    if metrics.exists():
        lines = metrics.read_text(encoding="utf-8").splitlines()
        run.epochs_done = min(sum(1 for line in lines if line.strip()), run.config.epochs)


def plan(base: TrainConfig, arms: tuple[str, ...], seeds: list[int], out: str | Path) -> list[PlannedRun]:
    """Every run of the comparison, seed by seed (so complete pairs accumulate first), inspected."""
    runs = []
    for seed in seeds:
        for arm in arms:
            # Validated here, so that a bad option of any arm is refused before the first run trains.
            config = config_with(base, mix=arm, seed=seed, init=None)
            run = PlannedRun(arm, seed, run_dir(out, seed, arm), config)
            _inspect(run)
            runs.append(run)
    return runs


def initial_weights(config: TrainConfig, num_classes: int) -> dict[str, torch.Tensor]:
    """The weights `cutmix train` would start from for ``config.seed`` (so arm runs match it)."""
    return resnet_v1(config.depth, num_classes, generator=_seeded(config.seed, 1)).state_dict()


def _refusal(out: Path, runs: list[PlannedRun]) -> str:
    lines = [f"--out: {out} holds runs made with other options; refusing to mix them into the report:"]
    for run in runs:
        lines.append(f"  {run.path}: {'; '.join(run.differences)}")
    lines.append("Re-run with the same options, use another --out, or pass --force to delete and redo them.")
    return "\n".join(lines)


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
) -> dict[str, Any]:
    """Runs every arm × seed into ``out`` (skipping finished runs, resuming unfinished ones) and
    writes the report; returns the report dict (see :func:`cutmix.report.summarize`).

    ``base``: the options shared by every arm (its ``mix``, ``seed`` and ``init`` are set per
    run). ``argv``: the command line, recorded in the report and the run folders. ``jobs``: runs
    trained at once, each in its own process (default: one per visible GPU where there are
    several, else 1, in this process); ``threads``: intra-op threads per run (default: the cores
    shared out between the jobs; with one job in this process, torch's setting). A run's results
    do not depend on ``jobs``. Raises :class:`cutmix.jobs.RunsFailedError` when a child run fails
    (the others finish first; no report is written).
    """
    from cutmix.preview import write_preview
    from cutmix.report import is_cifar10_like, load_run, write_report

    if not seeds:
        raise UsageError("--seeds: expected at least one seed, got none")
    out = Path(out)
    dist_info, device = setup_distributed(base.device)
    if jobs is None:  # under torchrun the processes share each run: one at a time
        jobs = 1 if dist_info.enabled else default_jobs(base.device)
    if jobs < 1:
        raise UsageError(f"--jobs: expected an integer >= 1, got {jobs}")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads: expected an integer >= 1, got {threads}")
    if jobs > 1 and dist_info.enabled:
        raise UsageError(f"--jobs: expected 1 under torchrun (its processes share each run), got {jobs}")
    arm_configs(base, arms, seeds)  # a bad option is refused before any data is loaded
    dataset = load_data_main_first(base.data, dist_info, progress=progress and dist_info.is_main)
    runs = plan(base, arms, seeds, out)
    differing = [r for r in runs if r.state == "differs"]
    if differing and not force:
        raise UsageError(_refusal(out, differing))

    if dist_info.is_main:
        for run in differing:
            shutil.rmtree(run.path)
            run.state, run.epochs_done, run.differences = "new", 0, []
        for seed in seeds:
            init_path = out / f"seed-{seed}" / "init.pt"
            kept = [r for r in runs if r.seed == seed and r.state != "new"]
            # Rewritten only when no kept run of this seed has started from the file on disk.
            if not kept or not init_path.exists():
                config = replace(base, seed=seed)
                atomic_torch_save(init_path, initial_weights(config, len(dataset.classes)))
    else:
        for run in differing:
            run.state, run.epochs_done = "new", 0
    _barrier(dist_info.enabled)

    bar = _bar(runs, progress and dist_info.is_main)
    todo = [run for run in runs if run.state != "done"]
    for run in todo:
        init_path = (out / f"seed-{run.seed}" / "init.pt").resolve()
        run.config = config_with(run.config, init=str(init_path))
    try:
        if jobs > 1:
            tasks = []
            for run in todo:
                _write_run_record(run)
                tasks.append(Task(run.path, run.config, f"seed {run.seed} {run.arm}"))
            say = bar.write if bar is not None else None
            failures = run_in_processes(tasks, jobs=jobs, threads=threads or default_threads(jobs), argv=argv,
                                        gpus=visible_gpus(base.device), bar=bar, on_message=say)  # fmt: skip
            if failures:
                raise RunsFailedError(failures)
        else:
            with _torch_threads(threads):
                _train_here(todo, len(runs), dist_info, bar, argv)
    finally:
        if bar is not None:
            bar.close()

    _barrier(dist_info.enabled)
    if not dist_info.is_main:
        return {}
    records = [load_run(r.path, r.arm, r.seed) for r in runs]
    env = environment(device, argv)
    env["command"] = shlex.join(["cutmix", *argv]) if argv is not None else env["command"]
    common = {k: v for k, v in hashed_options(base).items() if k not in ("mix", "seed")}
    meta = {
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
        "config": common,
        "cifar10_like": is_cifar10_like(dataset.classes, dataset.image_shape),
    }
    report = write_report(out, records, arms, dataset.classes, meta)
    preview_mix = "cutmix" if "cutmix" in arms else next((a for a in arms if a != "none"), "cutmix")
    write_preview(dataset, out / "preview.png", mix=preview_mix, seed=0, alpha=base.alpha)
    return report


def _write_run_record(run: PlannedRun) -> None:
    record = {"hash": config_hash(run.config), "options": hashed_options(run.config), "arm": run.arm,
              "seed": run.seed}  # fmt: skip
    atomic_write_json(run.path / RUN_RECORD, record)


def _train_here(todo: list[PlannedRun], total: int, dist_info: Any, bar: Any, argv: list[str] | None) -> None:
    """Trains the unfinished runs one after the other in this process (all processes under torchrun)."""
    finished = total - len(todo)
    for run in todo:
        if dist_info.is_main:
            _write_run_record(run)
        _barrier(dist_info.enabled)
        status = f"{finished}/{total} runs done; seed {run.seed} {run.arm}"

        def on_epoch(record: dict[str, Any], status: str = status, epochs: int = run.config.epochs) -> None:
            if bar is not None:
                text = f"{status}: epoch {record['epoch']}/{epochs}, test acc {record['test_acc']:.2%}"
                bar.set_postfix_str(text, refresh=False)
                bar.update(1)

        if bar is not None:
            bar.set_postfix_str(f"{status}: starting")
        lock = run_lock(run.path) if dist_info.is_main else contextlib.nullcontext()
        with lock:
            summary = train(run.config, run.path, resume=True, progress=False, argv=argv, on_epoch=on_epoch)
        if bar is not None and summary["epochs_completed"] < run.config.epochs:
            bar.update(run.config.epochs - summary["epochs_completed"])  # stopped on divergence
        finished += 1


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _barrier(enabled: bool) -> None:
    if enabled:
        dist.barrier()


def _bar(runs: list[PlannedRun], enabled: bool):
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


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

_FLAGS = ("force", "quiet", "stop_on_divergence")
_NEGATABLE = negatable_options()  # --x / --no-x: every boolean option of TrainConfig but the switches


def command_from_args(args: argparse.Namespace) -> list[str]:
    """An argv equivalent to ``args`` (used when compare is not run from the command line)."""
    argv = ["compare"]
    for name, value in vars(args).items():
        if name in ("func", "command") or value is None or callable(value):
            continue
        option = "--" + name.replace("_", "-")
        if name in _FLAGS:
            argv += [option] if value else []
        elif name in _NEGATABLE:
            argv.append(option if value else f"--no-{name.replace('_', '-')}")
        else:
            argv += [option, str(value)]
    return argv


def run(args: argparse.Namespace) -> int:
    from cutmix.train_cli import config_from_args

    if args.mix is not None:
        raise UsageError(f"--mix: compare takes its mixing ops from --arms, got --mix {args.mix}")
    if args.seeds < 1:
        raise UsageError(f"--seeds: expected an integer >= 1, got {args.seeds}")
    arms = parse_arms(args.arms)
    base = config_from_args(args)
    argv = sys.argv[1:] if sys.argv[1:2] == ["compare"] else command_from_args(args)
    try:
        report = compare(
            base, arms, list(range(args.seeds)), args.out, force=args.force, progress=not args.quiet,
            argv=argv, jobs=args.jobs, threads=args.threads,
        )  # fmt: skip
    except RunsFailedError as exc:
        print(f"cutmix compare: {exc}", file=sys.stderr)
        return 1
    if not report:
        return 0
    for arm in arms:
        acc = report["per_arm"][arm]["test_acc"] or {}
        mean = "n/a" if acc.get("mean") is None else f"{acc['mean']:.2%}"  # None: no finite accuracy
        spread = "n/a" if acc.get("std") is None else f"{acc['std']:.2%}"
        line = f"{arm:8s} test accuracy {mean} ± {spread} (n = {acc.get('n', 0)})"
        paired = report["paired"].get(arm, {}).get("test_acc")
        if paired and paired.get("mean") is not None:
            line += f"; {arm} − none: {100 * paired['mean']:+.2f} pp ({paired['verdict']})"
        print(line)
    if report["any_diverged"]:
        print("WARNING: some runs diverged; see the report")
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from cutmix.train_cli import RECIPE_HELP, add_train_options

    parser = subparsers.add_parser(
        "compare",
        help="train every arm (none, cutmix, ...) over several seeds and write a report",
        description="The Keras example's experiment: for each seed, one set of initial weights and one "
        "data order shared by every arm; each arm trained and tested; a report with means over seeds, "
        "paired differences against `none` with 95%% t-intervals, curves and per-class accuracy. "
        "Re-running skips finished runs and resumes an unfinished one. " + RECIPE_HELP.replace("%", "%%"),
    )
    add_train_options(parser)
    parser.add_argument(
        "--arms", default="none,cutmix", help="comma-separated mixing ops to compare (default: none,cutmix)"
    )
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds, 0..N-1 (default: 3)")
    parser.add_argument("--out", required=True, help="comparison folder")
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs trained at once, each in its own process (default: one per GPU where several are "
        "visible, else 1). On a small CPU, --jobs 2 with one thread each beats one run on two threads",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads per run (default with --jobs N: the cores divided by N)",
    )
    parser.add_argument(
        "--force", action="store_true", help="delete and redo runs in --out made with other options"
    )
    parser.set_defaults(func=run)
