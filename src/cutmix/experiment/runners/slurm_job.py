"""What runs inside a Slurm job of `cutmix compare --launcher slurm`: :func:`train_job`, the callable
:mod:`cutmix.experiment.runners.slurm` submits with submitit for each run (how preemption is handled:
see that module)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

from cutmix.errors import UsageError


def train_job(run_dir: str, options: dict[str, Any], argv: list[str] | None, threads: int) -> str:
    """The callable of a run's job: trains ``run_dir`` with ``options`` (a TrainConfig as a dict),
    resuming where it stopped; on the preemption signal (SIGUSR2) it saves within the epoch and
    requeues the job. Returns ``"finished"`` (submitit pickles it)."""
    import torch

    from cutmix.experiment.locks import run_lock
    from cutmix.training.config import TrainConfig
    from cutmix.training.loop import train
    from cutmix.training.preemption import TrainingInterrupted, stop_on_signals

    torch.set_num_threads(threads)
    config = TrainConfig(**options).validate()
    interrupted = None
    # Our flag handlers replace submitit's for the whole run (see the module's docstring).
    with stop_on_signals((signal.SIGUSR2, signal.SIGTERM)):
        try:
            with run_lock(run_dir):
                train(config, run_dir, resume=True, progress=False, argv=argv)
        except TrainingInterrupted as exc:
            interrupted = exc
        except (UsageError, OSError) as exc:  # one line the user can act on, as `cutmix train` prints it
            print(f"cutmix compare: error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
    if interrupted is None:
        return "finished"
    print(f"cutmix compare: run interrupted: {interrupted}", file=sys.stderr, flush=True)
    # Requeued only for the time limit's warning (SIGUSR2) alone: a SIGTERM among the reasons is a
    # scancel or a preemption, which a requeue by the job itself would undo.
    if interrupted.reasons == {"SIGUSR2"}:
        _requeue_this_job()
    # Not an Exception: submitit writes no result, so the job does not count as done.
    raise SystemExit(interrupted.exit_status)


def _requeue_this_job() -> None:
    job = os.environ.get("SLURM_JOB_ID")
    if job is None:  # not under Slurm (submitit's local executor): nothing to requeue
        return
    done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=120)
    if done.returncode:
        print(f"cutmix compare: could not requeue job {job} ({done.stderr.strip()}); re-run the command "
              "to resume the run", file=sys.stderr, flush=True)  # fmt: skip
    else:
        print(
            f"cutmix compare: job {job} requeued; it resumes from the checkpoint", file=sys.stderr, flush=True
        )
