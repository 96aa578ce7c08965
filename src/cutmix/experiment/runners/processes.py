"""Runs of a comparison side by side, each in its own local process (`cutmix compare --jobs N`).

On a small CPU, two single-thread runs train faster in all than one run on two threads (intra-op
threading of small convolutions scales poorly); with several GPUs, one run per GPU. Each child is
``python -m cutmix.experiment.runners.child`` training one run folder with
:func:`cutmix.training.loop.train` (``resume=True``), so a child or parent killed at any moment leaves
checkpoints that the same command resumes from.

Children run in their own session, so a terminal's Ctrl-C reaches the parent only; the parent then
stops them with SIGTERM, which they turn into a normal exit (atomic writes clean up after
themselves). On Linux a child also gets SIGTERM when the parent dies (even by SIGKILL), so a
restarted comparison never finds an orphan still training its run; the per-run lock file
(:func:`cutmix.experiment.locks.run_lock`) refuses a second process on the same run folder anywhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import torch

import cutmix
from cutmix.training.config import TrainConfig
from cutmix.training.preemption import INTERRUPTED_EXIT_STATUSES

# The child's entry point (python -m): a module nothing imports, so that it runs as __main__ cleanly.
CHILD_MODULE = "cutmix.experiment.runners.child"
LOG_NAME = "train.log"
LOG_TAIL_LINES = 15
POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 30.0


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def visible_gpus(device: str) -> list[str]:
    """The CUDA devices a child may be given (as CUDA_VISIBLE_DEVICES entries): all visible ones when
    ``device`` lets the run choose (auto or cuda), none otherwise."""
    if device not in ("auto", "cuda") or not torch.cuda.is_available():
        return []
    count = torch.cuda.device_count()
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:count] if listed else [str(i) for i in range(count)]


def default_jobs(device: str) -> int:
    """One run per visible GPU where there are several; else one at a time."""
    return max(1, len(visible_gpus(device)))


def default_threads(jobs: int) -> int:
    return max(1, available_cores() // jobs)


@dataclass
class Task:
    """One run for a child process: its folder, its full configuration and a label for messages."""

    run_dir: Path
    config: TrainConfig
    label: str


@dataclass
class Failure:
    task: Task
    returncode: int
    log_tail: list[str]

    def headline(self) -> str:
        code = self.returncode
        if code in INTERRUPTED_EXIT_STATUSES:  # the child saved within its epoch (runners.child)
            name = signal.Signals(code - 128).name
            return (f"{self.task.label} ({self.task.run_dir}) interrupted by {name}: checkpoint saved "
                    "within the epoch; the same command resumes it")  # fmt: skip
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        return f"{self.task.label} ({self.task.run_dir}) failed: {how}"

    def describe(self) -> str:
        lines = [f"{self.headline()}; last lines of its log:"]
        lines += [f"    {line}" for line in self.log_tail] or ["    (empty log)"]
        return "\n".join(lines)


class RunsFailedError(RuntimeError):
    """Some runs of a comparison failed; the others finished. Re-running the command resumes them."""

    def __init__(self, failures: list[Failure]):
        self.failures = failures
        text = "\n".join(f.describe() for f in failures)
        super().__init__(
            f"{len(failures)} run(s) failed; the others went on. The report was not written.\n{text}\n"
            "Fix the cause and re-run the same command: finished runs are kept, the others resume."
        )


def _epochs_logged(run_dir: Path) -> tuple[int, dict[str, Any] | None]:
    """Lines in metrics.jsonl and the last record (progress only: a killed run may have logged one
    epoch past its checkpoint)."""
    try:
        text = (run_dir / "metrics.jsonl").read_text(encoding="utf-8")
        lines = [line for line in text.splitlines() if line.strip()]
        return len(lines), json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return 0, None


def _tail(path: Path, count: int = LOG_TAIL_LINES) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    # tqdm redraws with carriage returns: keep what the terminal would have shown last.
    lines = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return [line for line in lines if line.strip()][-count:]


def _child_command(task: Task, threads: int, argv: list[str] | None) -> list[str]:
    return [
        sys.executable, "-m", CHILD_MODULE,
        "--run-dir", str(task.run_dir),
        "--config", json.dumps(asdict(task.config)),
        "--threads", str(threads),
        "--parent", str(os.getpid()),
        "--argv", json.dumps(argv),
    ]  # fmt: skip


def _child_env(threads: int, gpu: str | None) -> dict[str, str]:
    env = dict(os.environ)
    source = str(Path(cutmix.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


@dataclass
class _Running:
    task: Task
    process: subprocess.Popen
    log: IO[bytes]
    slot: int
    epochs_seen: int
    bar: Any = None


def run_in_processes(
    tasks: list[Task],
    *,
    jobs: int,
    threads: int,
    argv: list[str] | None = None,
    gpus: list[str] | None = None,
    bar: Any = None,
    on_message: Any = None,
) -> list[Failure]:
    """Trains every task in a child process, at most ``jobs`` at once, in order; returns the
    failures (the other tasks go on). ``bar``: a tqdm bar counting epochs of the whole plan, with a
    line per running child below it. ``gpus``: CUDA_VISIBLE_DEVICES entries handed out per slot.
    ``on_message``: called with a line as each run finishes or fails (default: failures to stderr)."""

    # Failures are always told (on stderr without on_message); "finished" only to on_message (quiet).
    def say(text: str, failure: bool = False) -> None:
        if on_message is not None:
            on_message(text)
        elif failure:
            print(text, file=sys.stderr)

    pending = deque(tasks)
    running: list[_Running] = []
    failures: list[Failure] = []
    free_slots = list(range(jobs))
    try:
        while pending or running:
            while pending and free_slots:
                task = pending.popleft()
                slot = free_slots.pop(0)
                running.append(_start(task, slot, threads, argv, gpus, bar))
            time.sleep(POLL_SECONDS)
            for child in list(running):
                _show_progress(child, bar)
                code = child.process.poll()
                if code is None:
                    continue
                child.log.close()
                if child.bar is not None:
                    child.bar.close()
                running.remove(child)
                free_slots.append(child.slot)
                free_slots.sort()
                finished = code == 0 and (child.task.run_dir / "summary.json").exists()
                if finished:
                    say(f"{child.task.label}: finished")
                else:
                    tail = _tail(child.task.run_dir / LOG_NAME)
                    failure = Failure(child.task, code if code != 0 else 1, tail)
                    failures.append(failure)
                    # One line now; the log's tail comes once, with every failure, in the
                    # RunsFailedError the caller raises at the end.
                    say(f"{failure.headline()}; its log: {child.task.run_dir / LOG_NAME}", failure=True)
    except BaseException:  # Ctrl-C (KeyboardInterrupt), or an error in this loop: stop every child
        _stop(running)
        raise
    return failures


def _start(task: Task, slot: int, threads: int, argv: list[str] | None, gpus: list[str] | None, bar: Any):
    task.run_dir.mkdir(parents=True, exist_ok=True)
    log = open(task.run_dir / LOG_NAME, "ab")  # noqa: SIM115 (closed when the child ends)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    log.write(f"=== {stamp} {task.label}: started by process {os.getpid()}\n".encode())
    log.flush()
    gpu = gpus[slot % len(gpus)] if gpus else None
    process = subprocess.Popen(
        _child_command(task, threads, argv),
        env=_child_env(threads, gpu),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    done, _ = _epochs_logged(task.run_dir)
    child_bar = None
    if bar is not None:
        from tqdm.auto import tqdm

        child_bar = tqdm(total=task.config.epochs, initial=min(done, task.config.epochs), desc=task.label,
                         unit="epoch", position=slot + 1, leave=False, dynamic_ncols=True)  # fmt: skip
    return _Running(task, process, log, slot, done, child_bar)


def _show_progress(child: _Running, bar: Any) -> None:
    done, last = _epochs_logged(child.task.run_dir)
    if done > child.epochs_seen:
        if child.bar is not None:
            if last is not None and last.get("test_acc") is not None:
                child.bar.set_postfix_str(f"test acc {last['test_acc']:.2%}", refresh=False)
            child.bar.update(done - child.epochs_seen)
        if bar is not None:
            bar.update(done - child.epochs_seen)
        child.epochs_seen = done


def _stop(running: list[_Running]) -> None:
    for child in running:
        with contextlib.suppress(ProcessLookupError):
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in running:
        try:
            child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
        child.log.close()
        if child.bar is not None:
            child.bar.close()
