"""The one-node Slurm cluster of scripts/slurm-local.sh, for the tests of `cutmix compare --launcher slurm`.

:func:`local_cluster` starts it (or finds it running, as .ci/run leaves it) and returns its SLURM_CONF;
where it cannot run, the tests skip with the reason, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "slurm-local.sh"
CLUSTER_DIR = Path(os.environ.get("SLURM_LOCAL_DIR", "/tmp/cutmix-slurm"))


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: the local Slurm cluster must run here, but {reason}")
    pytest.skip(f"no local Slurm cluster: {reason}")


def local_cluster() -> tuple[str, bool]:
    """Starts the cluster (idempotent); returns its SLURM_CONF and whether this call started it."""
    if not sys.platform.startswith("linux"):
        _unavailable(f"scripts/slurm-local.sh runs on Linux, got {sys.platform}")
    if shutil.which("slurmctld") is None or shutil.which("sbatch") is None:
        _unavailable("Slurm is not installed (as root: apt-get update && apt-get install -y slurm-wlm)")
    if os.geteuid() != 0:
        _unavailable("scripts/slurm-local.sh needs root (its daemons run as root)")
    env = dict(os.environ, SLURM_LOCAL_DIR=str(CLUSTER_DIR))
    running = subprocess.run(["bash", str(SCRIPT), "status"], env=env, capture_output=True, text=True)
    started = subprocess.run(
        ["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=180
    )
    if started.returncode:
        _unavailable(f"scripts/slurm-local.sh start failed:\n{started.stderr[-3000:]}")
    return str(CLUSTER_DIR / "slurm.conf"), running.returncode != 0


def stop_cluster() -> None:
    env = dict(os.environ, SLURM_LOCAL_DIR=str(CLUSTER_DIR))
    subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=120)


def slurm(*command: str) -> str:
    """A Slurm command's stdout (an error if it fails)."""
    done = subprocess.run(list(command), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(command)} failed: {done.stderr}"
    return done.stdout


def signal_job(job: str, name: str) -> None:
    """``scancel --signal=NAME JOB``, stopped after its first try: for a task of an array whose other
    tasks are pending, Slurm 22.05 delivers the signal yet answers "Job can not be altered now, try
    again later", and scancel would deliver it again every few seconds (to the requeued job too)."""
    process = subprocess.Popen(
        ["scancel", f"--signal={name}", job], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        _, err = process.communicate(timeout=3)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return
    assert process.returncode == 0, f"scancel --signal={name} {job} failed: {err.decode()}"


def queue() -> dict[str, tuple[str, str]]:
    """Every job the cluster holds, finished ones included: id -> (state, reason)."""
    text = slurm("squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%r")
    rows = [line.split("|") for line in text.splitlines() if line.strip()]
    return {job: (state, reason) for job, state, reason in rows}


def active_jobs() -> list[str]:
    """The ids of the jobs pending, running or about to run again."""
    ended = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
             "BOOT_FAIL", "DEADLINE"}  # fmt: skip
    return sorted(job for job, (state, _) in queue().items() if state not in ended)


def wait_until(condition, what: str, timeout: float = 240.0, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; queue: {queue()}")
        time.sleep(every)


class Releaser:
    """A thread that lets requeued jobs start again at once: Slurm holds a requeued job for about two
    minutes (reason BeginTime), and one requeued while suspended until an administrator releases it
    (JobHeldAdmin). Here that is only waiting, so the tests skip it."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Releaser:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(0.3):
            try:
                for job, (state, reason) in queue().items():
                    if state == "PENDING" and reason == "BeginTime":
                        subprocess.run(
                            ["scontrol", "update", f"jobid={job}", "starttime=now"], capture_output=True
                        )
                    elif state == "PENDING" and reason == "JobHeldAdmin":
                        subprocess.run(["scontrol", "release", job], capture_output=True)
            except (AssertionError, OSError, ValueError, subprocess.SubprocessError):
                continue
