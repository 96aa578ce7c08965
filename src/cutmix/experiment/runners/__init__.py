"""Where and how the planned runs of a comparison train: :func:`run_planned` is the one entry point.

There are three ways. With ``launcher="local"``, chosen by ``jobs``: one run after the other in this
process (:mod:`.local`; under torchrun every process shares each run), or up to ``jobs`` runs at
once, each in its own local process (:mod:`.processes`, which starts :mod:`.child`). With
``launcher="slurm"``: each run one Slurm job submitted with submitit (:mod:`.slurm`). All take the
same list of planned runs: each run folder holds everything a run needs (its configuration, its
init.pt path, compare-run.json), and a run that stopped resumes from its checkpoint wherever it is
started again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cutmix.experiment.plan import PlannedRun, write_run_record
from cutmix.experiment.runners.local import torch_threads, train_here
from cutmix.experiment.runners.processes import (
    Failure,
    RunsFailedError,
    Task,
    available_cores,
    default_jobs,
    default_threads,
    run_in_processes,
    visible_gpus,
)
from cutmix.experiment.runners.slurm import SlurmOptions, run_on_slurm

__all__ = [
    "Failure",
    "Launch",
    "RunsFailedError",
    "SlurmOptions",
    "Task",
    "available_cores",
    "default_jobs",
    "default_threads",
    "run_planned",
    "visible_gpus",
]


@dataclass
class Launch:
    """How the runs of a plan are trained.

    Attributes:
        jobs: runs trained at once; 1: in this process, one after the other.
        threads: intra-op threads per run (None: with one job, torch's setting; with several, the
            cores shared out between them).
        device: the ``--device`` option, which decides the GPUs a child process may get.
        dist_info: this process's place under torchrun (:class:`cutmix.training.distributed.Distributed`).
        argv: the command line, recorded in the run folders.
        total: the number of runs in the whole plan, finished ones included (for progress).
        bar: a tqdm bar counting the plan's epochs, or None.
        launcher: ``"local"`` (``jobs`` says how) or ``"slurm"`` (a Slurm job per run).
        slurm: with ``launcher="slurm"``, the ``--slurm-*`` options and ``--no-wait``.
        log_folder: with ``launcher="slurm"``, submitit's folder (``OUT/slurm``), on a file system
            every node sees.
    """

    jobs: int
    threads: int | None
    device: str
    dist_info: Any
    argv: list[str] | None
    total: int
    bar: Any = None
    launcher: str = "local"
    slurm: SlurmOptions | None = None
    log_folder: Path | None = None


def run_planned(todo: list[PlannedRun], launch: Launch) -> None:
    """Trains every run of ``todo`` (each resumed where it stopped) as ``launch`` says.

    Raises:
        RunsFailedError: some runs in child processes or Slurm jobs failed (the others finished
            first).
    """
    if launch.launcher == "slurm":
        failures = run_on_slurm(todo, launch)
        if failures:
            raise RunsFailedError(failures)
        return
    if launch.jobs == 1:
        with torch_threads(launch.threads):
            train_here(todo, launch.total, launch.dist_info, launch.bar, launch.argv)
        return
    tasks = []
    for run in todo:
        write_run_record(run)
        tasks.append(Task(run.path, run.config, f"seed {run.seed} {run.arm}"))
    say = launch.bar.write if launch.bar is not None else None
    threads = launch.threads or default_threads(launch.jobs)
    gpus = visible_gpus(launch.device)
    failures = run_in_processes(tasks, jobs=launch.jobs, threads=threads, argv=launch.argv, gpus=gpus,
                                bar=launch.bar, on_message=say)  # fmt: skip
    if failures:
        raise RunsFailedError(failures)
