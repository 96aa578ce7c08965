"""The plan of a comparison: every arm × seed as a run folder of ``--out``, the configuration each
trains with, its config hash, and what its folder already holds.

Layout of ``--out``::

    OUT/seed-<s>/init.pt          initial weights of seed s, shared by every arm
    OUT/seed-<s>/<arm>/           a `cutmix train` run folder, plus compare-run.json (its config hash)

and with ``--vary KEY=V1,V2`` the same layout once per value, in ``OUT/KEY=V1/``, ``OUT/KEY=V2/``
(each value with its own initial weights per seed: a ``depth`` changes the model). ``<arm>`` is the
arm's :attr:`~cutmix.experiment.arms.Arm.name` (``cutmix``, ``cutmix_alpha=0.2``).

A run is identified by :func:`config_hash` of its configuration (every option but the path of its
init file): a run started under one version of this code resumes and counts under a later one as long
as the hash is the same, so :func:`hashed_options` and :func:`config_hash` must not change.

What a run folder holds is told by the run's own records: its config.json (written as it starts
training) and its checkpoint where there is one (runs restored from committed records have none),
not by compare-run.json alone, which is written before the run trains.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from cutmix.errors import UsageError
from cutmix.experiment.arms import Arm, Vary, as_arms
from cutmix.models import resnet_v1
from cutmix.runinfo import atomic_write_json
from cutmix.training.checkpoint import load_checkpoint
from cutmix.training.config import TrainConfig, config_with
from cutmix.training.loop import seeded_generator

RUN_RECORD = "compare-run.json"
# Not part of a run's identity: the path of the shared init file depends on where --out is given
# from; the weights themselves follow from (seed, depth, dataset). checkpoint_every_min says when to
# checkpoint, not what the run computes (training.config.SCHEDULING_OPTIONS).
UNHASHED = ("init", "checkpoint_every_min")


def hashed_options(config: TrainConfig) -> dict[str, Any]:
    """The options that define a run, as recorded in its compare-run.json."""
    return {k: v for k, v in asdict(config).items() if k not in UNHASHED}


def config_hash(config: TrainConfig) -> str:
    """SHA-256 of :func:`hashed_options` as canonical JSON."""
    text = json.dumps(hashed_options(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_dir(out: str | Path, seed: int, arm: str) -> Path:
    """The run folder of ``arm`` for ``seed`` in the comparison folder ``out``."""
    return Path(out) / f"seed-{seed}" / arm


@dataclass
class PlannedRun:
    """One arm × seed and what its folder holds: "new", "partial" (resumable), "done" or
    "differs" (another configuration, or not a run of a comparison; ``differences`` says how)."""

    arm: str
    seed: int
    path: Path
    config: TrainConfig  # without init (added once init.pt exists)
    group: str | None = None  # with --vary: the value's subfolder of --out (``epochs=15``)
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


def groups(out: str | Path, vary: Vary | None) -> list[tuple[Path, str | None, dict[str, Any]]]:
    """Where each value's plan lives: ``(root, subfolder name or None, the setting it changes)``; one
    group, ``out`` itself, without ``vary``."""
    out = Path(out)
    if vary is None:
        return [(out, None, {})]
    return [(out / vary.folder(v), vary.folder(v), {vary.field: v}) for v in vary.values]


def group_base(base: TrainConfig, changes: dict[str, Any], vary: Vary | None) -> TrainConfig:
    """``base`` at one value of ``vary``, validated; a refusal names ``--vary`` and the value."""
    try:
        return config_with(base, **changes)
    except UsageError as exc:
        value = ", ".join(f"{vary.key}={v!r}" for v in changes.values()) if vary else ""
        raise UsageError(f"--vary {value}: {exc}") from None


def plan(
    base: TrainConfig,
    arms: Sequence[str | Arm],
    seeds: list[int],
    out: str | Path,
    vary: Vary | None = None,
) -> list[PlannedRun]:
    """Every run of the comparison, value by value and then seed by seed (so complete pairs of the
    first values accumulate first), inspected."""
    runs = []
    for root, group, changes in groups(out, vary):
        value_base = group_base(base, changes, vary)
        for seed in seeds:
            for arm in as_arms(arms):
                # Validated here, so that a bad option of any arm is refused before the first run trains.
                config = arm.config(value_base, seed=seed, init=None)
                run = PlannedRun(arm.name, seed, run_dir(root, seed, arm.name), config, group)
                _inspect(run)
                runs.append(run)
    return runs


def initial_weights(config: TrainConfig, num_classes: int) -> dict[str, torch.Tensor]:
    """The weights `cutmix train` would start from for ``config.seed`` (so arm runs match it)."""
    return resnet_v1(config.depth, num_classes, generator=seeded_generator(config.seed, 1)).state_dict()


def init_path(out: str | Path, seed: int) -> Path:
    """The initial weights every arm of ``seed`` starts from (``out``: the group's root)."""
    return Path(out) / f"seed-{seed}" / "init.pt"


def run_init_path(run: PlannedRun) -> Path:
    """The init.pt that ``run`` starts from: its seed folder's, beside it."""
    return run.path.parent / "init.pt"


def write_run_record(run: PlannedRun) -> None:
    """compare-run.json in the run's folder: its hash and options, written before it trains."""
    record = {"hash": config_hash(run.config), "options": hashed_options(run.config), "arm": run.arm,
              "seed": run.seed}  # fmt: skip
    atomic_write_json(run.path / RUN_RECORD, record)
