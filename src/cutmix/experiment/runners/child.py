"""The child process of `cutmix compare --jobs N`: one run folder trained with
:func:`cutmix.training.loop.train` (``resume=True``) under its run lock, started by
:func:`cutmix.experiment.runners.processes.run_in_processes` as
``python -m cutmix.experiment.runners.child``.

It stops with its parent (SIGTERM on Linux when the parent dies, even by SIGKILL). SIGTERM and SIGUSR2
request a stop (:mod:`cutmix.training.preemption`): the run saves a checkpoint within its epoch after
the optimizer step under way and the child exits with 128 + the signal's number (143 for SIGTERM, 140
for SIGUSR2: :data:`~cutmix.training.preemption.INTERRUPTED_EXIT_STATUSES`), after one line in the
run's log, so that its parent can report it as interrupted (resumable), not failed.

Exit statuses: 0 (the run finished, or stopped on divergence), 2 (a user error, one line in the log),
143 / 140 (interrupted by SIGTERM / SIGUSR2, checkpoint saved; the same command resumes it); anything
else is a bug (its traceback is in the log).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys

import torch

from cutmix.errors import UsageError
from cutmix.experiment.locks import run_lock
from cutmix.training.config import TrainConfig
from cutmix.training.loop import train
from cutmix.training.preemption import TrainingInterrupted, stop_on_signals


def _die_with_parent(parent: int) -> None:
    """Asks Linux to send SIGTERM when the parent dies, and exits if it already has."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        raise SystemExit(f"parent process {parent} is gone")


def child_main(argv: list[str] | None = None) -> int:
    """Trains the run ``argv`` names (``--run-dir``, ``--config`` as JSON, ``--threads``, ``--parent``,
    ``--argv``); returns the exit status (see the module's docstring): 0, 2 after a one-line user error
    in the run's log, or 128 + signal number once interrupted with its checkpoint saved."""
    parser = argparse.ArgumentParser(
        prog="python -m cutmix.experiment.runners.child", description="one run of compare --jobs"
    )
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--config", required=True, help="the run's TrainConfig as JSON")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--argv", default="null", help="the comparison's command line as JSON")
    args = parser.parse_args(argv)
    with stop_on_signals():
        _die_with_parent(args.parent)
        torch.set_num_threads(args.threads)
        try:
            config = TrainConfig(**json.loads(args.config)).validate()
            with run_lock(args.run_dir):
                train(config, args.run_dir, resume=True, progress=False, argv=json.loads(args.argv))
        except TrainingInterrupted as exc:
            print(f"cutmix compare: run interrupted: {exc}; the same command resumes it", file=sys.stderr)
            return exc.exit_status
        # What the user can fix is one line in the run's log, as `cutmix train` prints it (exit status
        # 2); anything else is a bug and keeps its traceback.
        except (UsageError, OSError) as exc:
            print(f"cutmix compare: error: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(child_main())
