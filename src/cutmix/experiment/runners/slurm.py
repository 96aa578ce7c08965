"""The runs of a comparison as Slurm jobs, submitted with submitit (`cutmix compare --launcher slurm`).

Each unfinished run of the plan is one job (the runs of one submission are one job array), whose
callable, :func:`train_job`, trains the run folder with :func:`cutmix.training.loop.train`
(``resume=True``) under its run lock. The run folders, and ``OUT/slurm/`` (submitit's pickles and each
job's stdout and stderr), must be on a file system every node sees.

Preemption and time limits: jobs are submitted with ``--signal=USR2@90`` (submitit's default) and
``--requeue``. Inside the job, :func:`cutmix.training.preemption.stop_on_signals` replaces
submitit's own handlers for SIGUSR2 and SIGTERM (submitit's would checkpoint inside the signal
handler, in the middle of an optimizer step, and exit): the handler only sets a flag, the training
loop saves a checkpoint within the epoch after the step under way, and on SIGUSR2 (the warning
before a time limit or a preemption) the job then requeues itself with ``scontrol requeue``; the
requeued job resumes from that checkpoint bit for bit. On SIGTERM (Slurm ending the job: ``scancel``,
an administrator's requeue, the time limit) it saves and exits, and Slurm decides whether the job
comes back. A job killed without a warning resumes from its last periodic checkpoint
(``--checkpoint-every-min``) or its last epoch.

Never two jobs for one run: each run folder records its job's id (``slurm-job.json``), and before
submitting, Slurm is asked (``squeue``, else ``sacct``) whether that job is still pending or running
(file locks do not hold across nodes on every shared file system, and a pending job holds none). So
re-running the same command submits only the runs neither finished nor queued, and waits for all.
Before ``sbatch`` each run folder records the submission's unique job name and its place in the
array, so a parent killed between ``sbatch`` and writing the ids leaves runs whose job is found again
by name (``squeue --name``, and ``sacct --name`` where accounting is installed) instead of submitted
a second time. A job seen preempted or on a failed node (which Slurm requeues under ``--requeue``),
while compare waits or before it submits, counts as ended only once it has stayed so for
:data:`~cutmix.experiment.runners.slurm_queue.REQUEUE_GRACE_S`.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cutmix
from cutmix.errors import UsageError
from cutmix.experiment.plan import PlannedRun, write_run_record
from cutmix.experiment.runners import slurm_queue
from cutmix.experiment.runners.processes import Failure, Task, _epochs_logged, _tail
from cutmix.experiment.runners.slurm_job import train_job
from cutmix.experiment.runners.slurm_queue import (
    ACTIVE_STATES,
    REQUEUE_GRACE_S,
    REQUEUE_STATES,
    job_states,
    queued_jobs,
    recover_job_ids,
    write_job_record,
    write_submission,
)

SLURM_FOLDER = "slurm"  # OUT/slurm/: submitit's folder (pickles, logs) for the comparison's jobs
POLL_SECONDS = 10.0  # between two squeue calls while waiting (a test makes it shorter)
# sbatch options the launcher sets itself: --slurm-arg may not replace them.
MANAGED_ARGS = frozenset(
    {"array", "output", "error", "open-mode", "wrap", "job-name", "requeue", "no-requeue", "signal"}
)
# sbatch options with a --slurm-* flag of their own: --slurm-arg names the flag to use instead.
FLAGGED_ARGS = {
    "partition": "--slurm-partition",
    "time": "--slurm-time",
    "gpus-per-node": "--slurm-gpus-per-run",
    "gres": "--slurm-gpus-per-run",
    "cpus-per-task": "--slurm-cpus-per-run",
    "mem": "--slurm-mem",
}
_ARG_KEY = re.compile(r"[a-z][a-z0-9_-]*")


@dataclass(frozen=True)
class SlurmOptions:
    """The ``--slurm-*`` options of `cutmix compare --launcher slurm`.

    Attributes:
        partition: the partition (None: the cluster's default).
        time_min: each job's time limit in minutes; a run that needs longer is requeued at the limit
            and resumes from its checkpoint, so this bounds a job, not a run.
        gpus_per_run: GPUs per job: 0 (CPU) or 1 (one run per GPU).
        cpus_per_run: CPUs per job; also the run's torch threads unless ``--threads`` says otherwise.
        mem_gb: memory per job in GB (None: the cluster's default).
        extra: further sbatch options as (key, value), ``--slurm-arg account=lab``.
        wait: wait for the jobs and write the report (False: submit and return, ``--no-wait``).
    """

    partition: str | None = None
    time_min: int = 60
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    mem_gb: float | None = None
    extra: tuple[tuple[str, str], ...] = ()
    wait: bool = True

    def validate(self) -> SlurmOptions:
        """Self, or a :class:`~cutmix.errors.UsageError` naming the option that is wrong."""
        if isinstance(self.time_min, bool) or not isinstance(self.time_min, int) or self.time_min < 2:
            # The USR2 warning comes 90 s before the limit: a job must run longer than that.
            raise UsageError(f"--slurm-time: expected minutes as an integer >= 2, got {self.time_min!r}")
        if self.gpus_per_run not in (0, 1):
            raise UsageError(
                "--slurm-gpus-per-run: expected 0 or 1 (one run per GPU; a run over several GPUs in one "
                f"job is not supported: use more runs at once instead), got {self.gpus_per_run!r}"
            )
        if (
            isinstance(self.cpus_per_run, bool)
            or not isinstance(self.cpus_per_run, int)
            or self.cpus_per_run < 1
        ):
            raise UsageError(f"--slurm-cpus-per-run: expected an integer >= 1, got {self.cpus_per_run!r}")
        if self.mem_gb is not None and not self.mem_gb > 0:
            raise UsageError(f"--slurm-mem: expected GB > 0, got {self.mem_gb!r}")
        if self.partition is not None and not self.partition.strip():
            raise UsageError(f"--slurm-partition: expected a partition's name, got {self.partition!r}")
        for key, _ in self.extra:
            if key.replace("_", "-") in FLAGGED_ARGS:
                flag = FLAGGED_ARGS[key.replace("_", "-")]
                raise UsageError(f"--slurm-arg: expected KEY other than {key} (use {flag}), got {key!r}")
            if not _ARG_KEY.fullmatch(key) or key.replace("_", "-") in MANAGED_ARGS:
                raise UsageError(
                    f"--slurm-arg: expected KEY=VALUE with KEY an sbatch option other than "
                    f"{', '.join(sorted(MANAGED_ARGS))}, got {key!r}"
                )
        return self


def parse_slurm_args(values: list[str] | None) -> tuple[tuple[str, str], ...]:
    """``["account=lab", "qos=low"]`` -> ``(("account", "lab"), ("qos", "low"))``; a
    :class:`~cutmix.errors.UsageError` naming ``--slurm-arg`` for an entry without ``=``."""
    pairs = []
    for value in values or []:
        key, sep, rest = value.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--slurm-arg: expected KEY=VALUE (an sbatch option), got {value!r}")
        pairs.append((key.strip().lstrip("-"), rest))
    return tuple(pairs)


def check_slurm_launch(options: SlurmOptions, jobs: int | None, under_torchrun: bool) -> None:
    """Refuses, before any data is loaded, what `--launcher slurm` cannot do: bad ``--slurm-*``
    options, ``--jobs`` (each run is its own job), torchrun, or no Slurm commands on PATH."""
    options.validate()
    if jobs is not None:
        raise UsageError(f"--jobs: expected none with --launcher slurm (each run is a job), got {jobs}")
    if under_torchrun:
        raise UsageError("--launcher slurm: expected a plain process (it submits jobs), got torchrun's")
    check_slurm_available()


def check_slurm_available() -> None:
    """Refuses ``--launcher slurm`` where Slurm's commands are missing, before any data is loaded."""
    missing = [name for name in ("sbatch", "srun", "squeue", "scontrol") if shutil.which(name) is None]
    if missing:
        raise UsageError(
            f"--launcher slurm: expected Slurm's commands on PATH (run from a cluster's login node), but "
            f"{', '.join(missing)} not found"
        )


# --------------------------------------------------------------------------------------------
# Submitting and waiting (the parent)
# --------------------------------------------------------------------------------------------


@dataclass
class SlurmFailure(Failure):
    """A run whose job ended without finishing it: its job id, Slurm's state, the log's last lines."""

    job_id: str = ""
    state: str = ""
    log: Path | None = None

    def headline(self) -> str:
        where = f"; its log: {self.log}" if self.log is not None else ""
        return f"{self.task.label} ({self.task.run_dir}) failed: Slurm job {self.job_id} {self.state}{where}"


@dataclass
class _Watched:
    task: Task
    job_id: str
    epochs_seen: int
    ended: bool = False
    requeue_seen: float | None = None  # since when its state is one of REQUEUE_STATES


def label(run: PlannedRun) -> str:
    """How messages name a run: its value of --vary (if any), seed and arm."""
    group = getattr(run, "group", None)
    return f"{group + ' ' if group else ''}seed {run.seed} {run.arm}"


def run_on_slurm(todo: list[PlannedRun], launch: Any) -> list[Failure]:
    """Submits a job for each run of ``todo`` that has none pending or running, then (with
    ``launch.slurm.wait``) waits for every run's job, showing progress on ``launch.bar``; returns
    the failures (runs whose job ended without finishing them)."""
    options: SlurmOptions = launch.slurm
    folder = Path(launch.log_folder).resolve()
    say = launch.bar.write if launch.bar is not None else print
    recover_job_ids(todo)
    queued = queued_jobs(todo, say)
    fresh = [run for run in todo if run.path not in queued]
    for run in fresh:
        write_run_record(run)
    threads = launch.threads or options.cpus_per_run
    submitted = _submit(fresh, options, folder, launch.argv, threads) if fresh else {}
    if queued:
        say(f"{len(queued)} run(s) already have a job pending or running; not submitted again: "
            + ", ".join(sorted(set(queued.values()))))  # fmt: skip
    if submitted:
        say(f"submitted {len(submitted)} job(s) to Slurm: {', '.join(submitted.values())}; logs in {folder}")
    jobs = {**queued, **submitted}
    if not options.wait:
        return []
    watched = [
        _Watched(Task(r.path, r.config, label(r)), jobs[r.path], _epochs_logged(r.path)[0]) for r in todo
    ]
    try:
        return _wait(watched, launch.bar, say, folder)
    except KeyboardInterrupt:
        say("cutmix compare: stopped waiting; the jobs go on. Re-run the same command to wait for them "
            "again (it submits nothing twice), or scancel them.")  # fmt: skip
        raise


def _submit(runs: list[PlannedRun], options: SlurmOptions, folder: Path, argv: list[str] | None,
            threads: int) -> dict[Path, str]:  # fmt: skip
    """One job per run (a job array for several), each run's job id recorded in its folder."""
    import submitit
    from submitit.core.utils import FailedJobError

    try:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=0)
    except RuntimeError as exc:  # no srun: not on a cluster
        raise UsageError(f"--launcher slurm: expected a Slurm cluster, got: {exc}") from None
    job_name = f"cutmix-{uuid.uuid4().hex[:12]}"
    executor.update_parameters(**{**_executor_parameters(options, threads), "job_name": job_name})
    for index, run in enumerate(runs):
        write_submission(run.path, job_name, index if len(runs) > 1 else None, folder)
    try:
        with executor.batch():
            jobs = [executor.submit(train_job, str(run.path.resolve()), asdict(run.config), argv, threads)
                    for run in runs]  # fmt: skip
    except FailedJobError as error:
        # sbatch answered with an error: nothing was submitted, so no submission stays begun. (Not on
        # anything else, which may come after sbatch has answered: the next compare finds those jobs.)
        if isinstance(error.__cause__, subprocess.CalledProcessError):
            for run in runs:
                (run.path / slurm_queue.JOB_RECORD).unlink(missing_ok=True)
        raise
    ids = {}
    for run, job in zip(runs, jobs, strict=True):
        write_job_record(run.path, job.job_id, folder, job_name)
        ids[run.path] = job.job_id
    return ids


def _executor_parameters(options: SlurmOptions, threads: int) -> dict[str, Any]:
    source = str(Path(cutmix.__file__).resolve().parents[1])
    extra: dict[str, Any] = {"requeue": True}
    if options.mem_gb is not None:
        extra["mem"] = f"{max(1, round(options.mem_gb * 1024))}M"
    extra.update({key.replace("_", "-"): value for key, value in options.extra})
    parameters: dict[str, Any] = {
        "job_name": "cutmix",
        "time": options.time_min,
        "cpus_per_task": options.cpus_per_run,
        "signal_delay_s": 90,  # --signal=USR2@90: the warning the run checkpoints on
        "additional_parameters": extra,
        # The job imports this very cutmix (as compare --jobs's children do), with its threads.
        "setup": [
            f"export PYTHONPATH={shlex.quote(source)}${{PYTHONPATH:+:$PYTHONPATH}}",
            f"export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}",
        ],  # fmt: skip
    }
    if options.partition is not None:
        parameters["partition"] = options.partition
    if options.gpus_per_run:
        parameters["gpus_per_node"] = options.gpus_per_run
    return parameters


def _wait(watched: list[_Watched], bar: Any, say: Any, folder: Path) -> list[Failure]:
    """Polls Slurm until every watched job has ended; the runs it left unfinished, as failures."""
    failures: list[Failure] = []
    while not all(w.ended for w in watched):
        states = job_states(sorted({w.job_id for w in watched if not w.ended}))
        for w in watched:
            _show_progress(w, bar)
            state = states.get(w.job_id, "UNKNOWN")
            if w.ended or state in ACTIVE_STATES or state == "UNREACHABLE":
                w.requeue_seen = None
                continue
            if state in REQUEUE_STATES:
                now = slurm_queue.now()
                w.requeue_seen = now if w.requeue_seen is None else w.requeue_seen
                if now - w.requeue_seen < REQUEUE_GRACE_S:
                    continue
            w.ended = True
            if _finished(w.task.run_dir):
                say(f"{w.task.label}: finished")
                continue
            failure = _failure(w, state, folder)
            failures.append(failure)
            say(failure.headline())
        if bar is not None:
            bar.set_postfix_str(_status(watched, states), refresh=True)
        if not all(w.ended for w in watched):
            slurm_queue.pause(POLL_SECONDS)
    return failures


def _finished(run_dir: Path) -> bool:
    # A shared file system may show a file a moment after the node that wrote it ended.
    for _ in range(3):
        if (run_dir / "summary.json").exists():
            return True
        slurm_queue.pause(1.0)
    return False


def _failure(w: _Watched, state: str, folder: Path) -> SlurmFailure:
    from submitit.core.utils import JobPaths

    paths = JobPaths(folder, job_id=w.job_id, task_id=0)
    tail = _tail(paths.stderr) or _tail(paths.stdout)
    return SlurmFailure(w.task, 1, tail, job_id=w.job_id, state=state, log=paths.stderr)


def _show_progress(w: _Watched, bar: Any) -> None:
    done, _ = _epochs_logged(w.task.run_dir)
    # A resumed run may rewrite its last epoch's line: count each epoch once.
    if done > w.epochs_seen:
        if bar is not None:
            bar.update(done - w.epochs_seen)
        w.epochs_seen = done


def _status(watched: list[_Watched], states: dict[str, str]) -> str:
    ended = sum(w.ended for w in watched)
    running = sum(1 for w in watched if not w.ended and states.get(w.job_id) == "RUNNING")
    waiting = len(watched) - ended - running
    return f"Slurm: {ended}/{len(watched)} jobs ended, {running} running, {waiting} waiting"


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------


def add_launcher_options(parser: Any) -> None:
    """``--launcher`` and the ``--slurm-*`` options of `cutmix compare` on an argparse parser."""
    group = parser.add_argument_group(
        "launcher",
        "Where the runs train. With --launcher slurm each run of the plan is one Slurm job (a job array "
        "per submission) submitted with submitit; --out (the run folders, and OUT/slurm/ with the jobs' "
        "logs) must be on a file system every node sees. A job checkpoints within its epoch on Slurm's "
        "warning (USR2, 90 s before a time limit or a preemption) and is requeued; re-running the same "
        "command submits only the runs with no job pending or running, and waits for all.",
    )
    group.add_argument(
        "--launcher",
        choices=("local", "slurm"),
        default="local",
        help="local: on this machine (--jobs); slurm: a Slurm job per run (default: local)",
    )
    group.add_argument(
        "--slurm-partition", default=None, metavar="P", help="the partition (default: the cluster's)"
    )
    group.add_argument(
        "--slurm-time",
        type=int,
        default=None,
        metavar="MIN",
        help="each job's time limit in minutes; a longer run is requeued and resumes (default: 60)",
    )
    group.add_argument(
        "--slurm-gpus-per-run",
        type=int,
        default=None,
        metavar="G",
        help="GPUs per job: 0 or 1, one run per GPU (more is refused; default: 0)",
    )
    group.add_argument(
        "--slurm-cpus-per-run",
        type=int,
        default=None,
        metavar="C",
        help="CPUs per job, also the run's threads unless --threads (default: 1)",
    )
    group.add_argument(
        "--slurm-mem",
        type=float,
        default=None,
        metavar="GB",
        help="memory per job in GB (default: the cluster's)",
    )
    group.add_argument(
        "--slurm-arg",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="a further sbatch option, e.g. account=lab or qos=low (repeatable)",
    )
    group.add_argument("--no-wait", action="store_true",
                       help="with --launcher slurm: submit and return; `cutmix report OUT` writes the report "
                       "once the jobs have ended")  # fmt: skip


def launcher_from_args(args: Any) -> SlurmOptions | None:
    """The :class:`SlurmOptions` of parsed ``args`` (None: ``--launcher local``); a
    :class:`~cutmix.errors.UsageError` for a ``--slurm-*`` option or ``--no-wait`` without
    ``--launcher slurm``."""
    names = (
        "slurm_partition",
        "slurm_time",
        "slurm_gpus_per_run",
        "slurm_cpus_per_run",
        "slurm_mem",
        "slurm_arg",
    )
    given = {name: getattr(args, name) for name in names}
    if args.launcher != "slurm":
        used = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None]
        used += ["--no-wait"] if args.no_wait else []
        if used:
            raise UsageError(f"{used[0]}: expected --launcher slurm with it, got --launcher {args.launcher}")
        return None
    options = SlurmOptions(wait=not args.no_wait, extra=parse_slurm_args(given["slurm_arg"]))
    changes = {"partition": given["slurm_partition"], "time_min": given["slurm_time"],
               "gpus_per_run": given["slurm_gpus_per_run"], "cpus_per_run": given["slurm_cpus_per_run"],
               "mem_gb": given["slurm_mem"]}  # fmt: skip
    from dataclasses import replace

    return replace(options, **{k: v for k, v in changes.items() if v is not None}).validate()
