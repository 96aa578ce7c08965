"""What Slurm holds for a comparison's runs: job states (``squeue``, else ``sacct``), and each run
folder's record of its job (``slurm-job.json``), written before ``sbatch`` (the submission's job name
and array index) and after it (the job id), so a run's job is found again rather than submitted twice.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from cutmix.errors import UsageError
from cutmix.experiment.plan import PlannedRun
from cutmix.runinfo import atomic_write_json

JOB_RECORD = "slurm-job.json"  # in each run folder: the id of the job training it
# The states of a job that is still, or again, going to train its run (squeue's long names).
ACTIVE_STATES = frozenset({
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED",
    "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "SPECIAL_EXIT",
})  # fmt: skip
# States a job under --requeue may leave again: Slurm requeues a preempted job (PreemptMode=REQUEUE)
# and one whose node failed. Such a job counts as ended only after REQUEUE_GRACE_S in them.
REQUEUE_STATES = frozenset({"PREEMPTED", "NODE_FAIL", "BOOT_FAIL"})
REQUEUE_GRACE_S = 120.0
SETTLE_POLL_SECONDS = 10.0  # between two questions while a job may be requeued
# A submission begun this recently whose jobs Slurm does not know may still be under way elsewhere.
IN_FLIGHT_S = 120.0
_JOB_ID = re.compile(r"\d+(_\d+)?")  # a job or an array task; not sacct's "12_[0-3]" for a pending array
_STAMP = "%Y-%m-%dT%H:%M:%S%z"


def now() -> float:
    """The clock waiting is measured on (a test replaces it)."""
    return time.monotonic()


def pause(seconds: float) -> None:
    """Waits ``seconds`` (a test replaces it)."""
    time.sleep(seconds)


def _run(command: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _parse_states(text: str) -> dict[str, str]:
    states = {}
    for line in text.splitlines():
        job, _, state = line.strip().partition("|")
        if job and state:
            # sacct writes "CANCELLED by 0"; squeue long names only.
            states[job] = state.split()[0].rstrip("+")
    return states


def job_states(job_ids: list[str]) -> dict[str, str]:
    """The state of each job Slurm still knows (``squeue``'s long names: PENDING, RUNNING, COMPLETED,
    CANCELLED, FAILED, TIMEOUT, ...); ``sacct`` for those squeue has forgotten. A job neither knows
    is left out; a job Slurm could not be asked about (squeue failing) maps to ``"UNREACHABLE"``."""
    if not job_ids:
        return {}
    query = ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T"]
    found = _run([*query, "--jobs", ",".join(job_ids)])
    if found is not None and found.returncode == 0:
        states = _parse_states(found.stdout)
    else:  # one unknown id fails the whole call on some versions: ask one by one
        states = {}
        for job in job_ids:
            one = _run([*query, "--jobs", job])
            if one is None or (one.returncode and "Invalid job id" not in one.stderr):
                states[job] = "UNREACHABLE"
            elif one.returncode == 0:
                states.update(_parse_states(one.stdout))
    forgotten = [j for j in job_ids if j not in states]
    if forgotten and shutil.which("sacct"):
        old = _run(["sacct", "--noheader", "--parsable2", "--allocations", "--format=JobID,State",
                    *[f"--jobs={j}" for j in forgotten]])  # fmt: skip
        if old is not None and old.returncode == 0:
            states.update({j: s for j, s in _parse_states(old.stdout).items() if j in forgotten})
    return {j: states[j] for j in job_ids if j in states}


def read_job_record(run_dir: Path) -> dict[str, Any] | None:
    """The run folder's slurm-job.json with its job's id (None: no job recorded, only a submission
    begun, or unreadable)."""
    record = _read_record(run_dir)
    return record if record is not None and isinstance(record.get("job_id"), str) else None


def _read_record(run_dir: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((Path(run_dir) / JOB_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_submission(run_dir: Path, job_name: str, index: int | None, folder: Path) -> None:
    """Before sbatch: the submission's job name and the run's task in its array (None: a single job),
    by which a job whose id was never recorded is found again, and submitit's folder."""
    record = {"job_name": job_name, "array_index": index, "folder": str(folder),
              "submitting": time.strftime(_STAMP)}  # fmt: skip
    atomic_write_json(Path(run_dir) / JOB_RECORD, record)


def write_job_record(run_dir: Path, job_id: str, folder: Path, job_name: str | None = None) -> None:
    from submitit.core.utils import JobPaths

    paths = JobPaths(folder, job_id=job_id, task_id=0)
    record = {"job_id": job_id, "job_name": job_name, "submitted": time.strftime(_STAMP),
              "stdout": str(paths.stdout), "stderr": str(paths.stderr)}  # fmt: skip
    atomic_write_json(Path(run_dir) / JOB_RECORD, record)


def jobs_named(name: str) -> list[str] | None:
    """The ids Slurm knows for jobs named ``name`` (array tasks as ``ARRAY_TASK``), from ``squeue``
    and, where it is installed, ``sacct`` too; None where squeue could not be asked."""
    found = _run(["squeue", "--noheader", "--array", "--states=all", f"--name={name}", "--format=%i|%T"])
    if found is None or found.returncode != 0:
        return None
    ids = set(_parse_states(found.stdout))
    if shutil.which("sacct"):
        old = _run(["sacct", "--noheader", "--parsable2", "--allocations", f"--name={name}",
                    "--starttime=now-30days", "--format=JobID,State"])  # fmt: skip
        if old is not None and old.returncode == 0:
            ids.update(_parse_states(old.stdout))
    return sorted(j for j in ids if _JOB_ID.fullmatch(j))


def recover_job_ids(runs: list[PlannedRun]) -> None:
    """Records the job id of each run whose submission began but whose id was never written (the
    parent killed in between), found by the submission's job name. A run whose job Slurm does not
    know was never submitted, and is left to be, unless its submission began under
    :data:`IN_FLIGHT_S` ago: another compare may be submitting it still, so that is refused."""
    begun: dict[str, list[tuple[PlannedRun, dict[str, Any]]]] = {}
    for run in runs:
        record = _read_record(run.path)
        if record is not None and not isinstance(record.get("job_id"), str) and record.get("job_name"):
            begun.setdefault(str(record["job_name"]), []).append((run, record))
    for name, members in begun.items():
        ids = jobs_named(name)
        if ids is None:
            raise UsageError(
                f"--launcher slurm: expected squeue to answer about jobs named {name} "
                "(a submission begun in run folders), got no answer; try again later"
            )
        for run, record in members:
            index = record.get("array_index")
            if index is None:
                match = [j for j in ids if "_" not in j]
            else:
                match = [j for j in ids if j.rpartition("_")[2] == str(index) and "_" in j]
            if len(match) == 1:
                write_job_record(run.path, match[0], Path(record.get("folder", run.path)), name)
            elif _age(record.get("submitting")) < IN_FLIGHT_S:
                raise UsageError(
                    f"--launcher slurm: expected no submission under way for {run.path}, got one begun at "
                    f"{record.get('submitting')} (job name {name}) whose job Slurm does not know yet: "
                    f"another cutmix compare may be submitting it; try again in {IN_FLIGHT_S:.0f} s"
                )


def _age(stamp: Any) -> float:
    """Seconds since a record's time stamp (infinite where it cannot be read)."""
    try:
        then = datetime.datetime.strptime(str(stamp), _STAMP)
    except ValueError:
        return float("inf")
    return (datetime.datetime.now(datetime.UTC) - then).total_seconds()


def active_jobs(runs: list[PlannedRun], say: Any = print) -> dict[Path, str]:
    """The runs among ``runs`` whose recorded Slurm job (slurm-job.json) Slurm still holds as pending or
    running, with its id; none without records, and Slurm is asked only when there are some."""
    if not any(_read_record(run.path) for run in runs):
        return {}
    recover_job_ids(runs)
    return queued_jobs(runs, say)


def queued_jobs(todo: list[PlannedRun], say: Any = print) -> dict[Path, str]:
    """The runs whose recorded job Slurm still holds as pending or running, with its id. A job seen in
    one of :data:`REQUEUE_STATES` is asked about again for up to :data:`REQUEUE_GRACE_S` (saying so
    with ``say``): requeued, it is the run's job; still there, it has ended."""
    recorded = {run.path: record["job_id"] for run in todo if (record := read_job_record(run.path))}
    states = _asked(sorted(set(recorded.values())))
    settling = sorted(j for j in set(recorded.values()) if states.get(j) in REQUEUE_STATES)
    if settling:
        say(
            f"Slurm job(s) {', '.join(settling)} preempted or on a failed node: waiting up to "
            f"{REQUEUE_GRACE_S:.0f} s for Slurm to requeue them before submitting their runs again"
        )
        deadline = now() + REQUEUE_GRACE_S
        while settling and now() < deadline:
            pause(SETTLE_POLL_SECONDS)
            states.update(_asked(settling))
            settling = [j for j in settling if states.get(j) in REQUEUE_STATES]
    return {path: job for path, job in recorded.items() if states.get(job) in ACTIVE_STATES}


def _asked(job_ids: list[str]) -> dict[str, str]:
    """:func:`job_states`, refusing to go on where Slurm could not be asked: submitting anyway could
    start a second job on a run."""
    states = job_states(job_ids)
    unreachable = [j for j, s in states.items() if s == "UNREACHABLE"]
    if unreachable:
        raise UsageError(f"--launcher slurm: expected squeue to answer about jobs {', '.join(unreachable)} "
                         "(recorded in run folders), got no answer; try again later")  # fmt: skip
    return states
