"""Stopping a run within an epoch, and resuming it exactly where it stopped.

A cluster stops a job with a signal some time before it ends it (Slurm: ``--signal=USR2@90``, then
SIGTERM, then SIGKILL). Saving from inside a signal handler would interrupt an optimizer step half
done, so the handler only sets a flag (:func:`request_stop`; :func:`stop_on_signals` installs such
handlers) and :func:`cutmix.training.loop.train` checks it after every optimizer step: if set, it
saves a mid-epoch checkpoint (everything an epoch-end checkpoint holds, plus the partial epoch's sums
and the step within the epoch, :class:`EpochProgress`) and raises :class:`TrainingInterrupted`.
``train(..., resume=True)`` continues from that step and ends bit for bit as an uninterrupted run
would. ``checkpoint_every_min`` saves the same checkpoint every N minutes of wall time, for the stops
that give no warning (SIGKILL, a node lost, ``scontrol requeue``).

Under torchrun every process must stop at the same step (a DDP step is a collective), so
:class:`StepGuard` reduces the flag over the processes after every step; rank 0's clock alone decides
when a periodic checkpoint is due. The flag stays set after :class:`TrainingInterrupted` (so a loop
over several runs in one process stops too); :func:`clear_stop` resets it.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from cutmix.training.checkpoint import save_checkpoint
from cutmix.training.distributed import Distributed, gather_over_ranks

__all__ = [
    "INTERRUPTED_EXIT_STATUSES",
    "EpochProgress",
    "MidEpochSaver",
    "StepGuard",
    "TrainingInterrupted",
    "clear_stop",
    "exit_status",
    "request_stop",
    "stop_on_signals",
    "stop_requested",
]

# The signals a run checkpoints on by default: SIGTERM (a local `kill`, a parent stopping its children,
# Slurm's last warning) and SIGUSR2 (what submitit asks Slurm to send before the time limit).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)
# The exit statuses of a process that saved a mid-epoch checkpoint on a stop: the shell's 128 + signal
# number of the signal that asked for it (143 for SIGTERM, 140 for SIGUSR2), so a launcher tells
# "interrupted, resumable" from a failure. Any other reason exits with 128 + SIGTERM.
INTERRUPTED_EXIT_STATUSES = frozenset(128 + int(s) for s in STOP_SIGNALS)

_stop_reason: str | None = None
# Every reason asked since the last clear (a scancel's SIGTERM may follow the time limit's SIGUSR2
# while the checkpoint is saved: the job must then not requeue itself).
_stop_reasons: set[str] = set()


def request_stop(reason: str) -> None:
    """Asks the training loop to checkpoint and stop after the current optimizer step.

    Only sets a module-level flag (the first reason is kept), so it is safe to call from a signal
    handler.

    Args:
        reason: what asked, as messages will say it (a signal's name, such as ``"SIGTERM"``).
    """
    global _stop_reason
    _stop_reasons.add(reason)
    if _stop_reason is None:
        _stop_reason = reason


def stop_requested() -> str | None:
    """The reason given to :func:`request_stop`, or None when no stop is pending."""
    return _stop_reason


def stop_reasons() -> frozenset[str]:
    """Every reason given to :func:`request_stop` since the last :func:`clear_stop`."""
    return frozenset(_stop_reasons)


def clear_stop() -> None:
    """Forgets a pending stop (done as :class:`TrainingInterrupted` is raised, and as the outermost
    :func:`stop_on_signals` block is entered), so that a process training again is not stopped by an
    old request."""
    global _stop_reason
    _stop_reason = None
    _stop_reasons.clear()


def _on_signal(signum: int, frame: Any) -> None:
    request_stop(signal.Signals(signum).name)


@contextlib.contextmanager
def stop_on_signals(signals: Iterable[signal.Signals] = STOP_SIGNALS) -> Iterator[None]:
    """While the block runs, each of ``signals`` requests a stop (:func:`request_stop` with the
    signal's name) instead of its usual action; the previous handlers come back on exit.

    Must be entered in the main thread (Python runs signal handlers there only).
    """
    previous = {}
    if not _depth:  # a request left from an earlier block must not stop this one
        clear_stop()
    _depth.append(1)
    try:
        for sig in signals:
            previous[sig] = signal.signal(sig, _on_signal)
        yield
    finally:
        _depth.pop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_depth: list[int] = []  # nesting of stop_on_signals blocks


def exit_status(reason: str) -> int:
    """The exit status of a process stopped for ``reason``: 128 + the signal's number when it names a
    signal (as the shell reports a process ended by it), else 128 + SIGTERM."""
    try:
        return 128 + int(signal.Signals[reason])
    except KeyError:
        return 128 + int(signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Raised by :func:`cutmix.training.loop.train` once it has saved a mid-epoch checkpoint because a
    stop was requested; ``train(..., resume=True)`` on the same folder continues from it.

    Attributes:
        reason: what asked for the stop (:func:`request_stop`'s reason; on the other processes under
            torchrun, "a stop requested on another process" unless they were asked too).
        checkpoint_path: the checkpoint just written.
        epoch: the epoch it stopped in (1-based, as metrics.jsonl counts).
        step: the optimizer steps done in that epoch.
        steps: the steps of a whole epoch.
        exit_status: the status a command exits with (:func:`exit_status`).
        reasons: every reason asked before it was raised (a SIGTERM may follow a SIGUSR2).
    """

    def __init__(self, reason: str, checkpoint_path: Path, epoch: int, step: int, steps: int) -> None:
        self.reason = reason
        self.checkpoint_path = Path(checkpoint_path)
        self.epoch, self.step, self.steps = epoch, step, steps
        self.exit_status = exit_status(reason)
        self.reasons: frozenset[str] = frozenset({reason})  # every reason asked (stop_reasons())
        super().__init__(
            f"stopped by {reason} in epoch {epoch} after step {step} of {steps}: "
            f"checkpoint saved to {self.checkpoint_path}"
        )


@dataclass
class EpochProgress:
    """Where a run stands within an epoch: the optimizer steps done, and this process's sums over
    their batches (the epoch's training loss and accuracy are these sums over ``seen``)."""

    step: int = 0
    loss_sum: float = 0.0  # float64 exactly: the loop accumulates in float64
    correct: float = 0.0
    seen: int = 0
    elapsed: float = 0.0  # training seconds spent on those steps (timing only)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> EpochProgress:
        return cls(int(saved["step"]), float(saved["loss_sum"]), float(saved["correct"]), int(saved["seen"]),
                   float(saved.get("elapsed", 0.0)))  # fmt: skip


def _now() -> float:
    """The clock of periodic checkpoints (a function, so that a test can move time on)."""
    return time.monotonic()


class StepGuard:
    """Decides after each optimizer step whether to checkpoint, the same way on every process.

    Args:
        every_min: minutes of wall time between periodic checkpoints (0: none).
        dist_info: this process's place under torchrun. With several processes the decision is one
            all-reduce of two integers per step, on a CPU (gloo) group, so it never waits for a GPU.
    """

    def __init__(self, every_min: float, dist_info: Distributed) -> None:
        self.every_s = float(every_min) * 60.0
        self.dist_info = dist_info
        self.last_save = _now()
        self._group: Any = None
        if dist_info.enabled:
            # The default group is gloo on the CPU; under NCCL a CPU side group avoids a device sync.
            self._group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")

    def saved(self) -> None:
        """A checkpoint was just written: the next periodic one is due ``every_min`` from now."""
        self.last_save = _now()

    def poll(self) -> tuple[str | None, bool]:
        """``(reason, due)``: the stop reason (None: no stop) and whether a periodic checkpoint is due."""
        reason = _stop_reason
        due = self.every_s > 0 and _now() - self.last_save >= self.every_s
        if not self.dist_info.enabled:
            return reason, due
        flags = torch.tensor([reason is not None, due and self.dist_info.is_main], dtype=torch.int32)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self._group)
        if flags[0] and reason is None:
            reason = "a stop requested on another process"
        return (reason if flags[0] else None), bool(flags[1])


@dataclass
class MidEpochSaver:
    """After every optimizer step of :func:`cutmix.training.loop.train`: the checkpoint within the epoch
    when a stop is pending or a periodic one is due (``guard`` decides, the same on every process).

    Attributes:
        path: the run's checkpoint.pt (replaced atomically).
        contents: the checkpoint of the epochs done, as an epoch-end one holds it (a collective under
            torchrun: every process calls it).
        dist_info: this process's place under torchrun; only the main process writes.
        guard: decides when to save.
        steps: optimizer steps per epoch (for messages).
    """

    path: Path
    contents: Callable[[], dict[str, Any]]
    dist_info: Distributed
    guard: StepGuard
    steps: int

    def after_step(self, epoch: int, epoch_start: float, step: int, loss_sum: torch.Tensor,
                   correct: torch.Tensor, seen: int) -> None:  # fmt: skip
        """Saves if the guard says so, and after a stop raises :class:`TrainingInterrupted`.

        Args:
            epoch: the epoch under way, 0-based.
            epoch_start: its start on ``time.perf_counter()``'s clock (timing only).
            step: the optimizer steps done in it.
            loss_sum: this process's float64 sum of the batch losses times their sizes so far.
            correct: this process's count of correct training predictions so far.
            seen: this process's images so far.
        """
        reason, due = self.guard.poll()
        if reason is None and not due:
            return
        # The sums leave the device only here, so a step otherwise never waits for them.
        elapsed = time.perf_counter() - epoch_start
        self.save(EpochProgress(step, loss_sum.item(), correct.item(), seen, elapsed))
        self.guard.saved()
        if reason is not None:
            interrupted = TrainingInterrupted(reason, self.path, epoch + 1, step, self.steps)
            interrupted.reasons = stop_reasons()
            clear_stop()  # answered: a later train() in this process is not stopped by it
            raise interrupted

    def save(self, progress: EpochProgress) -> None:
        """The checkpoint of the epochs done plus every process's ``progress`` in the next (in rank
        order, under ``epoch_progress``), written atomically by the main process; every process
        returns once it is written."""
        checkpoint = self.contents()
        checkpoint["epoch_progress"] = gather_over_ranks(progress.to_dict(), self.dist_info)
        if self.dist_info.is_main:
            save_checkpoint(self.path, checkpoint)
        # A collective as a barrier: under torchrun a process that ended first would get the others
        # killed, perhaps while rank 0 is still writing.
        gather_over_ranks(None, self.dist_info)
