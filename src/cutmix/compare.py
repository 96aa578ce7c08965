"""`cutmix compare`: the Keras example's experiment (CutMix against no augmentation) as one command,
over several seeds, with a report.

Layout of ``--out``::

    OUT/seed-<s>/init.pt          initial weights of seed s, shared by every arm
    OUT/seed-<s>/<arm>/           a `cutmix train` run folder, plus compare-run.json (its config hash)
    OUT/report.md, report.json, curves.png, preview.png
    OUT/.lock                     held by the comparison using the folder (see cutmix.jobs)

For seed s every arm starts from ``seed-<s>/init.pt`` and trains with ``seed=s``, so the arms see
the training images in the same order (the loader's shuffle depends on the seed only). Re-running
the same command skips finished runs and resumes an unfinished one from its last checkpoint; a
re-run with other options refuses to mix old runs into the report unless ``--force``.

What a run folder holds is told by the run's own records: its config.json (written as it starts
training) and its checkpoint where there is one (runs restored from committed records have none),
not by compare-run.json alone, which is written before the run trains. A folder holding anything
compare did not write is refused, naming ``--out``, unless ``--force``; a folder another comparison
is using is refused even with ``--force``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import shlex
import shutil
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from cutmix.config import (
    MIXES,
    RECIPE_HELP,
    TrainConfig,
    add_train_options,
    arm_configs,
    config_from_args,
    config_with,
    negatable_options,
)
from cutmix.errors import UsageError
from cutmix.jobs import (
    LOCK_NAME,
    RunsFailedError,
    Task,
    comparison_lock,
    default_jobs,
    default_threads,
    run_in_processes,
    run_lock,
    visible_gpus,
)
from cutmix.models import resnet_v1
from cutmix.runinfo import atomic_torch_save, atomic_write_json, environment
from cutmix.train import (
    check_image_size,
    load_checkpoint,
    load_data_main_first,
    load_weights,
    seeded_generator,
    setup_distributed,
    train,
)

RUN_RECORD = "compare-run.json"
# Not part of a run's identity: the path of the shared init file depends on where --out is given
# from; the weights themselves follow from (seed, depth, dataset).
UNHASHED = ("init",)
# What compare writes at the top of --out (besides seed-<s>/ and the lock); preview*.png: one
# preview per mixing arm.
REPORT_FILES = ("report.json", "report.md", "curves.png", "preview.png")
_SEED_FOLDER = re.compile(r"seed-[0-9]+")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    return [
        f"{prefix}{k}: {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]


def _hashed(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in UNHASHED}


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
    if old_hash != config_hash(run.config):
        run.state = "differs"
        run.differences = _differences(old, hashed_options(run.config)) or ["configuration hash differs"]
        return
    # compare-run.json is written before the run trains: what the folder holds is told by the run's
    # own records, which another process may have written there under another configuration.
    finished = (path / "summary.json").exists()
    problems = _own_records_differ(run, finished)
    if problems:
        run.state, run.differences = "differs", problems
        return
    if finished:
        run.state, run.epochs_done = "done", run.config.epochs
        return
    run.state = "partial"
    metrics = path / "metrics.jsonl"
    # Approximate (a killed run may have logged one epoch past its checkpoint): progress only.
    if metrics.exists():
        lines = metrics.read_text(encoding="utf-8").splitlines()
        run.epochs_done = min(sum(1 for line in lines if line.strip()), run.config.epochs)


def _own_records_differ(run: PlannedRun, finished: bool) -> list[str]:
    """How the run's config.json and checkpoint.pt disagree with ``run.config`` (empty: they agree).

    A finished run counts only with a config.json of this configuration, and a checkpoint (where
    there is one: restored runs have none) of the same configuration at its last epoch. An
    unreadable checkpoint of an unfinished run is left to the run itself, which says so as it
    resumes."""
    path, wanted = run.path, hashed_options(run.config)
    problems: list[str] = []
    config_path = path / "config.json"
    if config_path.exists():
        try:
            problems += _differences(_hashed(json.loads(config_path.read_text("utf-8"))["config"]), wanted,
                                     "config.json: ")  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return [f"config.json is not a run's configuration ({type(exc).__name__}: {exc})"]
    elif finished:
        return ["summary.json without config.json: not a run that cutmix train wrote"]
    checkpoint_path = path / "checkpoint.pt"
    if not checkpoint_path.exists():
        return problems
    try:
        checkpoint = load_checkpoint(checkpoint_path)
        problems += _differences(_hashed(checkpoint["config"]), wanted, "checkpoint.pt: ")
        epoch = int(checkpoint["epoch"])
    except (UsageError, KeyError, TypeError, ValueError, AttributeError) as exc:
        return [f"checkpoint.pt is not this run's checkpoint ({exc})"] if finished else problems
    if finished and not problems:
        try:
            completed = json.loads((path / "summary.json").read_text("utf-8"))["epochs_completed"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return [f"summary.json is not a run's summary ({type(exc).__name__}: {exc})"]
        if completed != epoch:
            problems.append(f"summary.json says {completed} epoch(s) completed, checkpoint.pt holds {epoch}")
    return problems


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
    return resnet_v1(config.depth, num_classes, generator=seeded_generator(config.seed, 1)).state_dict()


def _refusal(out: Path, runs: list[PlannedRun]) -> str:
    lines = [f"--out: {out} holds runs made with other options; refusing to mix them into the report:"]
    for run in runs:
        lines.append(f"  {run.path}: {'; '.join(run.differences)}")
    lines.append("Re-run with the same options, use another --out, or pass --force to delete and redo them.")
    return "\n".join(lines)


def check_out(out: Path, arms: tuple[str, ...], seeds: list[int], *, force: bool = False) -> None:
    """Refuses an ``--out`` that compare cannot or must not write into, naming ``--out``: a file, a
    folder whose paths compare needs are taken by files or folders of the other kind (even with
    ``force``), or (unless ``force``) a folder holding what compare did not write. A missing or
    empty folder, or a comparison of ours (to resume or extend), is fine."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: expected a folder for the comparison, got a file: {out}")
    blocked = _blocked_paths(out, arms, seeds)
    if blocked:
        lines = "\n".join(f"  {line}" for line in blocked)
        raise UsageError(f"--out: {out} holds files where the comparison needs its own:\n{lines}\n"
                         "Move them away, or use another --out.")  # fmt: skip
    if force or not out.is_dir():
        return
    foreign = _foreign_entries(out)
    if foreign:
        lines = "\n".join(f"  {line}" for line in foreign)
        raise UsageError(
            f"--out: expected a new or empty folder, or a comparison that cutmix compare wrote, but {out} "
            f"holds what it did not write:\n{lines}\nUse another --out, or pass --force to write into "
            "it anyway (that deletes the listed run folders this comparison trains, and overwrites "
            f"{', '.join(REPORT_FILES)})."
        )


def _blocked_paths(out: Path, arms: tuple[str, ...], seeds: list[int]) -> list[str]:
    folders = [out / f"seed-{s}" for s in seeds] + [run_dir(out, s, a) for s in seeds for a in arms]
    files = [out / name for name in REPORT_FILES] + [out / f"seed-{s}" / "init.pt" for s in seeds]
    blocked = [f"{p}: a file, where the comparison needs a folder" for p in folders if _is_other(p)]
    return blocked + [f"{p}: a folder, where the comparison writes a file" for p in files if p.is_dir()]


def _is_other(path: Path) -> bool:
    return path.exists() and not path.is_dir()


def _ours_temporary(name: str, owned: tuple[str, ...]) -> bool:
    """A temporary file of an atomic write of ours (``.<name>.<random>.tmp``), left by a crash."""
    return any(name.startswith(f".{own}.") for own in owned)


def _foreign_entries(out: Path) -> list[str]:
    """What in ``out`` compare did not write, one line each (empty: a comparison of ours)."""
    found = []
    report_ours = _is_our_report_json(out / "report.json")
    for entry in sorted(out.iterdir()):
        name = entry.name
        if (name == LOCK_NAME and entry.is_file()) or _ours_temporary(name, REPORT_FILES):
            continue
        if _SEED_FOLDER.fullmatch(name) and entry.is_dir():
            found += _foreign_in_seed(entry)
        elif name == "report.json":
            found += [] if report_ours else [f"{entry}: not a report that cutmix compare wrote"]
        elif name == "report.md":
            found += [] if _starts_with(entry, b"# CutMix comparison") else [f"{entry}: not a report of ours"]
        elif name.startswith(("curves", "preview")) and name.endswith(".png") and entry.is_file():
            # Figures are written after report.json, so ours come with a report of ours.
            if not (report_ours and _starts_with(entry, PNG_MAGIC)):
                found.append(f"{entry}: not a figure of a comparison of ours")
        else:
            found.append(f"{entry}: not written by cutmix compare")
    return found


def _foreign_in_seed(folder: Path) -> list[str]:
    found = []
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if (name == "init.pt" and entry.is_file()) or _ours_temporary(name, ("init.pt",)):
            continue
        if name in MIXES and entry.is_dir():
            if any(entry.iterdir()) and not (entry / RUN_RECORD).is_file():
                found.append(f"{entry}: no readable {RUN_RECORD}: not a run of a comparison")
            continue
        found.append(f"{entry}: not written by cutmix compare")
    return found


def _is_our_report_json(path: Path) -> bool:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and {"arms", "runs", "per_arm", "paired"} <= set(report)


def _starts_with(path: Path, prefix: bytes) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(prefix)) == prefix
    except OSError:
        return False


def _delete_runs(runs: list[PlannedRun]) -> None:
    """Deletes the folders of ``runs`` (--force), each under its run lock: one that a process is
    training (an orphan, a run started by hand) is refused before any folder is deleted."""
    with contextlib.ExitStack() as locks:
        for run in runs:
            try:
                locks.enter_context(run_lock(run.path))
            except UsageError as exc:
                raise UsageError(f"--force: refusing to delete a run folder in use: {exc}") from None
        for run in runs:
            shutil.rmtree(run.path)
            run.state, run.epochs_done, run.differences = "new", 0, []


def _check_kept_inits(runs: list[PlannedRun], out: Path, data: str, num_classes: int) -> None:
    """The kept runs of a seed go on from its init.pt: weights for another number of classes (the
    data set at the same --data changed since) would fail each of them as it loads them."""
    for seed in sorted({r.seed for r in runs if r.state in ("partial", "done")}):
        init_path = out / f"seed-{seed}" / "init.pt"
        if not init_path.is_file():
            continue
        head = load_weights(init_path).get("fc.weight")
        outputs = None if head is None or head.dim() != 2 else head.shape[0]
        if outputs is not None and outputs != num_classes:
            raise UsageError(
                f"--data: expected {outputs} classes, as {init_path} (the start of the runs kept for "
                f"seed {seed}) has, got {num_classes} in {data}: the data set changed since those runs "
                "started; use another --out"
            )


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
    check_out(out, arms, seeds, force=force)
    dataset = load_data_main_first(base.data, dist_info, progress=progress and dist_info.is_main)
    # What train() would refuse once the data is loaded, refused here before any run starts: in a
    # child process (--jobs N) it would only fail that run, once per run.
    check_fits_data(base, dataset, dist_info.world_size)
    with contextlib.ExitStack() as stack:
        _hold_comparison_lock(stack, out, dist_info)
        return _compare_locked(base, arms, seeds, out, dataset, dist_info, device, force=force,
                               progress=progress, argv=argv, jobs=jobs, threads=threads)  # fmt: skip


def check_fits_data(config: TrainConfig, dataset: Any, world_size: int = 1) -> None:
    """The checks of ``config`` against the loaded data that :func:`cutmix.train.train` makes (image
    size, --val, --batch-size; the same messages), so that a comparison refuses them up front."""
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
    refusal = None
    if dist_info.is_main:
        try:
            stack.enter_context(comparison_lock(out))
        except UsageError as exc:
            refusal = str(exc)
    if dist_info.enabled:
        shared = [refusal]
        dist.broadcast_object_list(shared, src=0)
        refusal = shared[0]
    if refusal is not None:
        raise UsageError(refusal)


def _compare_locked(
    base: TrainConfig,
    arms: tuple[str, ...],
    seeds: list[int],
    out: Path,
    dataset: Any,
    dist_info: Any,
    device: torch.device,
    *,
    force: bool,
    progress: bool,
    argv: list[str] | None,
    jobs: int,
    threads: int | None,
) -> dict[str, Any]:
    """:func:`compare` once its options, ``out`` and the data are checked and ``out`` is locked."""
    from cutmix.preview import write_arm_previews
    from cutmix.report import is_cifar10_like, load_run, write_report

    runs = plan(base, arms, seeds, out)
    differing = [r for r in runs if r.state == "differs"]
    if differing and not force:
        raise UsageError(_refusal(out, differing))
    _check_kept_inits(runs, out, base.data, len(dataset.classes))

    if dist_info.is_main:
        _delete_runs(differing)
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
    # One picture per mixing arm, drawn with that arm's own options (preview-<arm>.png), and
    # preview.png, the first mixing arm's, which the report links.
    write_arm_previews(dataset, out, base, arms, seed=0)
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
    # As `train --stop-on-divergence` does, but once every run and the whole report are done.
    if report["any_diverged"] and base.stop_on_divergence:
        return 3
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="train every arm (none, cutmix, ...) over several seeds and write a report",
        description="The Keras example's experiment: for each seed, one set of initial weights and one "
        "data order shared by every arm; each arm trained and tested; a report with means over seeds, "
        "paired differences against `none` with 95% t-intervals, curves and per-class accuracy. "
        "Re-running skips finished runs and resumes an unfinished one. With --stop-on-divergence, a "
        "run that diverges stops there, the others go on, and once the whole report is written "
        "compare exits with status 3. " + RECIPE_HELP,
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
        "--force",
        action="store_true",
        help="delete and redo runs in --out made with other options, and write into an --out holding "
        "files compare did not write (never into one another comparison is using)",
    )
    parser.set_defaults(func=run)
