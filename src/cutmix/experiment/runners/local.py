"""The runs of a comparison trained one after the other in this process (`cutmix compare --jobs 1`,
and every process of a comparison under torchrun, which share each run)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

from cutmix.experiment.locks import run_lock
from cutmix.experiment.plan import PlannedRun, write_run_record
from cutmix.training.loop import train
from cutmix.training.preemption import stop_on_signals


def barrier(enabled: bool) -> None:
    """Waits for every process of the group (under torchrun; nothing otherwise)."""
    if enabled:
        dist.barrier()


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` (None: left as they are) until the block ends."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_here(todo: list[PlannedRun], total: int, dist_info: Any, bar: Any, argv: list[str] | None) -> None:
    """Trains the unfinished runs ``todo`` of a plan of ``total`` runs one after the other in this
    process (all processes under torchrun), each under its run lock, resuming where it stopped;
    ``bar``: a tqdm bar counting the plan's epochs, or None."""
    finished = total - len(todo)
    for run in todo:
        if dist_info.is_main:
            write_run_record(run)
        barrier(dist_info.enabled)
        status = f"{finished}/{total} runs done; seed {run.seed} {run.arm}"

        def on_epoch(record: dict[str, Any], status: str = status, epochs: int = run.config.epochs) -> None:
            if bar is not None:
                text = f"{status}: epoch {record['epoch']}/{epochs}, test acc {record['test_acc']:.2%}"
                bar.set_postfix_str(text, refresh=False)
                bar.update(1)

        if bar is not None:
            bar.set_postfix_str(f"{status}: starting")
        lock = run_lock(run.path) if dist_info.is_main else contextlib.nullcontext()
        # SIGTERM/SIGUSR2 save the run within its epoch and raise TrainingInterrupted (the CLI says how
        # to resume); only here, in-process: the parent of --jobs N must stay stoppable by SIGTERM.
        with lock, stop_on_signals():
            summary = train(run.config, run.path, resume=True, progress=False, argv=argv, on_epoch=on_epoch)
        if bar is not None and summary["epochs_completed"] < run.config.epochs:
            bar.update(run.config.epochs - summary["epochs_completed"])  # stopped on divergence
        finished += 1
