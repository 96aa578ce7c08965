"""`cutmix compare --launcher slurm` against a real one-node Slurm cluster (scripts/slurm-local.sh):
a 2-arm, 2-seed synthetic plan submitted without waiting, re-submitted while pending, waited for while
one job gets the preemption signal, one is killed without warning and requeued, one is cancelled;
then re-run and reported. Every run must end identical to `--launcher local` (timings aside).

The option checks at the end need no cluster."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from slurm_cluster import Releaser, active_jobs, local_cluster, signal_job, slurm, stop_cluster, wait_until

from cutmix.cli import main
from cutmix.errors import UsageError
from cutmix.experiment.locks import LOCK_NAME
from cutmix.experiment.runners import slurm as slurm_runner
from cutmix.experiment.runners import slurm_queue
from cutmix.training.checkpoint import load_checkpoint

# ResNet-8 on 256 synthetic images, 4 steps per epoch; a periodic checkpoint after every step.
TINY = ["--data", "synthetic:256", "--depth", "8", "--batch-size", "64", "--device", "cpu", "--quiet"]
PLAN = [
    "compare",
    *TINY,
    "--epochs",
    "2",
    "--arms",
    "none,cutmix",
    "--seeds",
    "2",
    "--checkpoint-every-min",
    "0.002",
]
RUNS = [(0, "none"), (0, "cutmix"), (1, "none"), (1, "cutmix")]
STEPS = 4
TIMINGS = {"images_per_s", "train_time", "eval_time", "epoch_time", "time", "wall_time"}


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def results(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS} for line in lines]


def job_id(run: Path) -> str:
    return json.loads((run / slurm_queue.JOB_RECORD).read_text())["job_id"]


def trainer_pid(run: Path) -> int | None:
    """The process holding the run folder's lock (the job's trainer), or None."""
    try:
        handle = open(run / LOCK_NAME, "a+")  # noqa: SIM115
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            text = handle.read().strip()
            return int(text) if text else None
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


def position(run: Path) -> tuple[int, int] | None:
    """(epochs done, step within the next) of the run's checkpoint when it was saved within an epoch."""
    try:
        checkpoint = load_checkpoint(run / "checkpoint.pt")
    except Exception:  # not written yet
        return None
    progress = checkpoint.get("epoch_progress")
    return (int(checkpoint["epoch"]), int(progress[0]["step"])) if progress else None


def log(out: Path, job: str, kind: str) -> str:
    path = out / "slurm" / f"{job}_0_log.{kind}"
    return path.read_text(errors="replace") if path.exists() else ""


class Waiting(threading.Thread):
    """`cutmix compare` waiting for its jobs, in a thread, while the test acts on the jobs."""

    def __init__(self, argv: list[str]) -> None:
        super().__init__(daemon=True)
        self.argv, self.result, self.error = argv, None, None

    def run(self) -> None:
        try:
            self.result = run_main(self.argv)
        except BaseException as exc:  # re-raised in the test
            self.error = exc


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Slurm jobs run with one thread each (--slurm-cpus-per-run 1): the local reference too.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cluster():
    conf, started = local_cluster()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", conf)
        patch.setattr(slurm_runner, "POLL_SECONDS", 0.5)
        yield conf
    if started:
        stop_cluster()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out"
    code, _, err = run_main([*PLAN, "--out", str(out), "--launcher", "local"])
    assert code == 0, err
    return out


def _preempt(run: Path, job: str) -> None:
    """The preemption warning (USR2) once the job's trainer holds the run (our handler is in place)."""
    wait_until(lambda: trainer_pid(run) is not None, f"{run} training")
    signal_job(job, "USR2")


def _kill_and_requeue(run: Path, job: str) -> tuple[int, int]:
    """The job frozen while its checkpoint is one within an epoch, its trainer killed (no warning),
    the job requeued; the checkpoint's position."""
    wait_until(lambda: trainer_pid(run) is not None and position(run) is not None, f"{run} mid-epoch")
    for _ in range(50):
        slurm("scontrol", "suspend", job)
        where = position(run)
        if where is not None:
            break
        slurm("scontrol", "resume", job)  # between an epoch's end and its next periodic checkpoint
        wait_until(lambda: position(run) is not None, f"{run} mid-epoch again")
    os.kill(trainer_pid(run), signal.SIGKILL)
    slurm("scontrol", "requeue", job)
    return where


@pytest.fixture(scope="module")
def study(cluster, tmp_path_factory):
    """The whole scenario, once; the tests below check what it recorded."""
    out = tmp_path_factory.mktemp("slurm") / "out"
    args = [*PLAN, "--out", str(out), "--launcher", "slurm"]
    seen: dict = {"out": out, "runs": {r: out / f"seed-{r[0]}" / r[1] for r in RUNS}}
    try:
        _scenario(out, args, seen)
    finally:  # a failed step leaves no job of ours on the cluster
        recorded = [p / slurm_queue.JOB_RECORD for p in seen["runs"].values()]
        subprocess.run(["scancel", *[json.loads(r.read_text())["job_id"] for r in recorded if r.exists()]],
                       capture_output=True)  # fmt: skip
    return seen


def _scenario(out: Path, args: list[str], seen: dict) -> None:
    seen["submit"] = run_main([*args, "--no-wait"])
    assert seen["submit"][0] == 0, seen["submit"][2]
    seen["report_after_submit"] = (out / "report.json").exists()
    seen["ids"] = {r: job_id(p) for r, p in seen["runs"].items()}
    seen["active_before"] = set(active_jobs())
    seen["resubmit"] = run_main([*args, "--no-wait"])
    assert seen["resubmit"][0] == 0, f"the same command again was refused: {seen['resubmit'][2]}"
    seen["ids_after"] = {r: job_id(p) for r, p in seen["runs"].items()}
    seen["active_after"] = set(active_jobs())
    preempted, killed, cancelled = (seen["runs"][r] for r in RUNS[:3])
    ids = seen["ids"]
    waiting = Waiting(args)
    with Releaser():
        waiting.start()
        _preempt(preempted, ids[RUNS[0]])
        seen["killed_at"] = _kill_and_requeue(killed, ids[RUNS[1]])
        wait_until(lambda: trainer_pid(cancelled) is not None, f"{cancelled} training")
        slurm("scancel", ids[RUNS[2]])
        waiting.join(timeout=600)
    assert not waiting.is_alive(), "compare still waiting for its jobs"
    if waiting.error is not None:
        raise waiting.error
    seen["waited"] = waiting.result
    seen["finished_after_wait"] = {r: (p / "summary.json").exists() for r, p in seen["runs"].items()}
    seen["rerun"] = run_main(args)
    seen["compare_report"] = json.loads((out / "report.json").read_text())
    seen["report"] = run_main(["report", str(out)])
    seen["rebuilt_report"] = json.loads((out / "report.json").read_text())


def test_a_job_runs_on_the_local_cluster(cluster, tmp_path):
    output = tmp_path / "job.out"
    slurm("sbatch", "--wait", f"--output={output}", "--wrap", "echo ran as job $SLURM_JOB_ID")
    assert output.read_text().startswith("ran as job ")


def test_no_wait_submits_one_array_and_prints_the_report_command(study):
    code, stdout, stderr = study["submit"]
    assert code == 0, stderr
    assert f"cutmix report {study['out']}" in stdout
    assert not study["report_after_submit"]
    arrays = {job.split("_")[0] for job in study["ids"].values()}
    assert len(arrays) == 1 and sorted(j.split("_")[1] for j in study["ids"].values()) == ["0", "1", "2", "3"]


def test_a_rerun_while_jobs_are_pending_submits_nothing(study):
    code, stdout, stderr = study["resubmit"]
    assert code == 0, stderr
    assert "4 run(s) already have a job pending or running; not submitted again" in stdout
    assert "submitted 4 job(s)" not in stdout
    assert study["ids_after"] == study["ids"]
    assert set(study["ids"].values()) <= study["active_before"]
    assert study["active_after"] <= study["active_before"]  # no new job


def test_slurm_runs_end_identical_to_local_runs(study, reference):
    for (seed, arm), run in study["runs"].items():
        local = reference / f"seed-{seed}" / arm
        assert results(run) == results(local), (seed, arm)
        ours, theirs = load_file(run / "model.safetensors"), load_file(local / "model.safetensors")
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), (seed, arm)


def test_the_preemption_signal_saves_within_the_epoch_and_requeues(study):
    out, job = study["out"], study["ids"][RUNS[0]]
    run = study["runs"][RUNS[0]]
    errors, output = log(out, job, "err"), log(out, job, "out")
    stopped = re.search(r"stopped by SIGUSR2 in epoch (\d) after step (\d) of 4", errors)
    assert stopped, errors
    assert "requeued; it resumes from the checkpoint" in errors
    epoch, step = stopped.groups()
    assert f"resuming {run} in epoch {epoch} of 2, after step {step} of {STEPS}" in output


def test_a_requeue_without_warning_resumes_from_the_last_periodic_checkpoint(study):
    out, job = study["out"], study["ids"][RUNS[1]]
    run = study["runs"][RUNS[1]]
    done, step = study["killed_at"]
    # Step STEPS: saved after the epoch's last step, before its end's evaluation and checkpoint.
    assert 0 < step <= STEPS
    assert f"resuming {run} in epoch {done + 1} of 2, after step {step} of {STEPS}" in log(out, job, "out")
    assert "stopped by" not in log(out, job, "err")  # it was given no chance to save


def test_a_cancelled_job_is_reported_the_others_go_on_and_a_rerun_completes(study):
    code, _, stderr = study["waited"]
    job = study["ids"][RUNS[2]]
    assert code == 1
    assert f"seed 1 none ({study['runs'][RUNS[2]]}) failed: Slurm job {job} CANCELLED" in stderr
    tail = [line for line in log(study["out"], job, "err").splitlines() if line.strip()]
    assert tail and tail[-1].rsplit("\r", 1)[-1] in stderr  # the log's last lines
    assert study["finished_after_wait"] == {r: r != RUNS[2] for r in RUNS}
    code, stdout, stderr = study["rerun"]
    assert code == 0, stderr
    assert "submitted 1 job(s)" in stdout
    assert "report:" in stdout


def test_report_after_no_wait_is_the_report_compare_writes(study):
    code, _, stderr = study["report"]
    assert code == 0, stderr

    rebuilt = dict(study["rebuilt_report"])
    assert rebuilt.pop("unfinished_runs") == []
    assert rebuilt.pop("report_rebuilt_by") == f"cutmix report {study['out']}"
    assert rebuilt == study["compare_report"]


def test_a_parent_killed_between_sbatch_and_the_record_submits_nothing_twice(cluster, tmp_path, monkeypatch):
    out = tmp_path / "out"
    # The jobs wait an hour to start (cancelled at the end): both calls see them pending.
    args = [*PLAN[:-4], "--seeds", "1", "--out", str(out), "--launcher", "slurm", "--no-wait",
            "--slurm-arg", "begin=now+3600"]  # fmt: skip
    runs = [out / "seed-0" / arm for arm in ("none", "cutmix")]
    before = set(active_jobs())

    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt  # the parent dies once sbatch has answered

    with monkeypatch.context() as patch:
        patch.setattr(slurm_runner, "write_job_record", killed)
        with contextlib.suppress(BaseException):
            run_main(args)
    begun = [json.loads((run / slurm_queue.JOB_RECORD).read_text()) for run in runs]
    try:
        assert all("job_id" not in record for record in begun)
        names = {record["job_name"] for record in begun}
        assert len(names) == 1 and [record["array_index"] for record in begun] == [0, 1]
        submitted = set(slurm_queue.jobs_named(names.pop()))
        assert len(submitted) == 2 and not submitted & before

        code, stdout, stderr = run_main(args)
        assert code == 0, stderr
        assert "2 run(s) already have a job pending or running; not submitted again" in stdout
        assert "job(s) to Slurm" not in stdout
        assert {job_id(run) for run in runs} == submitted
        assert set(active_jobs()) - before <= submitted  # no second array
    finally:
        subprocess.run(
            ["scancel", *(slurm_queue.jobs_named(begun[0]["job_name"]) or [])], capture_output=True
        )


# --------------------------------------------------------------------------------------------
# The options, without a cluster
# --------------------------------------------------------------------------------------------


def _args(**given) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    slurm_runner.add_launcher_options(parser)
    argv = []
    for key, value in given.items():
        argv += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"slurm_partition": "gpu"},
            "--slurm-partition: expected --launcher slurm with it, got --launcher local",
        ),
        ({"no_wait": True}, "--no-wait: expected --launcher slurm with it"),
        ({"launcher": "slurm", "slurm_gpus_per_run": 2}, "--slurm-gpus-per-run: expected 0 or 1"),
        ({"launcher": "slurm", "slurm_time": 1}, "--slurm-time: expected minutes as an integer >= 2, got 1"),
        (
            {"launcher": "slurm", "slurm_cpus_per_run": 0},
            "--slurm-cpus-per-run: expected an integer >= 1, got 0",
        ),
        ({"launcher": "slurm", "slurm_mem": 0}, "--slurm-mem: expected GB > 0, got 0.0"),
        (
            {"launcher": "slurm", "slurm_arg": "account"},
            "--slurm-arg: expected KEY=VALUE (an sbatch option), got 'account'",
        ),
        (
            {"launcher": "slurm", "slurm_arg": "array=0-3"},
            "--slurm-arg: expected KEY=VALUE with KEY an sbatch option other than",
        ),
    ],
)
def test_bad_launcher_options_are_refused(given, message):
    with pytest.raises(UsageError) as caught:
        slurm_runner.launcher_from_args(_args(**given))
    assert message in str(caught.value)


def test_launcher_options_become_sbatch_parameters():
    options = slurm_runner.launcher_from_args(
        _args(
            launcher="slurm",
            slurm_partition="gpu",
            slurm_time=30,
            slurm_gpus_per_run=1,
            slurm_cpus_per_run=4,
            slurm_mem=1.5,
            slurm_arg="account=lab",
            no_wait=True,
        )  # fmt: skip
    )
    assert (options.partition, options.time_min, options.gpus_per_run, options.cpus_per_run) == (
        "gpu",
        30,
        1,
        4,
    )
    assert not options.wait
    parameters = slurm_runner._executor_parameters(options, threads=4)
    assert parameters["partition"] == "gpu" and parameters["time"] == 30 and parameters["gpus_per_node"] == 1
    assert parameters["cpus_per_task"] == 4 and parameters["signal_delay_s"] == 90
    assert parameters["additional_parameters"] == {"requeue": True, "mem": "1536M", "account": "lab"}
    assert "export OMP_NUM_THREADS=4 MKL_NUM_THREADS=4" in parameters["setup"]
    assert _args().launcher == "local" and slurm_runner.launcher_from_args(_args()) is None


def test_jobs_and_a_missing_slurm_are_refused(monkeypatch):
    options = slurm_runner.SlurmOptions()
    with pytest.raises(UsageError, match="--jobs: expected none with --launcher slurm"):
        slurm_runner.check_slurm_launch(options, 2, False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(UsageError, match="--launcher slurm: expected Slurm's commands on PATH"):
        slurm_runner.check_slurm_launch(options, None, False)


def test_job_states_read_squeue_and_sacct_lines():
    text = "12_0|RUNNING\n12_1|PENDING\n13|CANCELLED by 0\n14|COMPLETED+\n"
    assert slurm_queue._parse_states(text) == {"12_0": "RUNNING", "12_1": "PENDING", "13": "CANCELLED",
                                                "14": "COMPLETED"}  # fmt: skip
    assert slurm_queue.job_states([]) == {}


def test_the_cluster_script_refuses_an_unknown_command():
    script = Path(__file__).resolve().parents[2] / "scripts" / "slurm-local.sh"
    done = subprocess.run(["bash", str(script), "restart"], capture_output=True, text=True)
    assert done.returncode == 2 and "usage:" in done.stderr


def test_the_launcher_options_survive_the_recorded_command_line():
    from cutmix.cli import build_parser
    from cutmix.cli.compare import command_from_args

    argv = ["compare", "--out", "x", "--launcher", "slurm", "--slurm-time", "30", "--slurm-arg", "account=lab",
            "--slurm-arg", "qos=low", "--no-wait"]  # fmt: skip
    args = build_parser().parse_args(argv)
    again = build_parser().parse_args(command_from_args(args))
    assert again.slurm_arg == ["account=lab", "qos=low"] and again.no_wait and again.slurm_time == 30
    assert {k: v for k, v in vars(again).items() if k != "func"} == {
        k: v for k, v in vars(args).items() if k != "func"
    }


class FakeClock:
    """slurm_queue's clock and pause, replaced: pausing advances the clock; more than ``limit`` pauses
    fail the test (a wait that never ends)."""

    def __init__(self, monkeypatch, limit: int = 100) -> None:
        self.t, self.pauses, self.limit = 0.0, 0, limit
        monkeypatch.setattr(slurm_queue, "now", lambda: self.t)
        monkeypatch.setattr(slurm_queue, "pause", self.pause)

    def pause(self, seconds: float) -> None:
        self.pauses += 1
        assert self.pauses <= self.limit, "still waiting after the grace"
        self.t += seconds


def _watch_fake_queue(monkeypatch, tmp_path, state_at) -> tuple[list, list[str]]:
    """_wait over one job whose state at each poll is ``state_at(seconds since the start)``, on a fake
    clock; its failures and messages."""
    clock = FakeClock(monkeypatch)
    monkeypatch.setattr(slurm_runner, "POLL_SECONDS", 30.0)
    run = tmp_path / "run"
    run.mkdir()

    def states(ids):
        state = state_at(clock.t)
        if state == "COMPLETED":
            (run / "summary.json").write_text("{}")
        return {job: state for job in ids}

    monkeypatch.setattr(slurm_runner, "job_states", states)
    task = slurm_runner.Task(run, None, "seed 0 cutmix")
    said: list[str] = []
    failures = slurm_runner._wait([slurm_runner._Watched(task, "7_1", 0)], None, said.append, tmp_path)
    return failures, said


def test_a_preempted_job_that_is_requeued_is_waited_for(monkeypatch, tmp_path):
    def state_at(t):
        return "PREEMPTED" if t < 90 else "PENDING" if t < 150 else "COMPLETED"

    failures, said = _watch_fake_queue(monkeypatch, tmp_path, state_at)
    assert failures == [] and said == ["seed 0 cutmix: finished"]


@pytest.mark.parametrize("state", ["PREEMPTED", "NODE_FAIL"])
def test_a_job_that_stays_preempted_or_on_a_failed_node_is_reported(monkeypatch, tmp_path, state):
    failures, said = _watch_fake_queue(monkeypatch, tmp_path, lambda t: state)
    assert [f.state for f in failures] == [state]
    assert said == [f"seed 0 cutmix ({tmp_path / 'run'}) failed: Slurm job 7_1 {state}; its log: "
                    f"{failures[0].log}"]  # fmt: skip


def _planned(tmp_path: Path, record: dict | None, name: str = "run") -> slurm_runner.PlannedRun:
    run = tmp_path / name
    run.mkdir()
    if record is not None:
        (run / slurm_queue.JOB_RECORD).write_text(json.dumps(record))
    return slurm_runner.PlannedRun("cutmix", 0, run, None)


@pytest.mark.parametrize(
    ("later", "queued"), [("RUNNING", True), ("PENDING", True), ("PREEMPTED", False), ("COMPLETED", False)]
)
def test_before_submitting_a_preempted_job_gets_the_grace_to_be_requeued(
    monkeypatch, tmp_path, later, queued
):
    clock = FakeClock(monkeypatch)
    run = _planned(tmp_path, {"job_id": "7_1"})
    monkeypatch.setattr(slurm_queue, "job_states",
                        lambda ids: {j: "PREEMPTED" if clock.t < 60 else later for j in ids})  # fmt: skip
    said: list[str] = []
    assert slurm_queue.queued_jobs([run], said.append) == ({run.path: "7_1"} if queued else {})
    assert len(said) == 1 and said[0].startswith(
        "Slurm job(s) 7_1 preempted or on a failed node: waiting up to"
    )
    assert clock.t <= slurm_queue.REQUEUE_GRACE_S + slurm_queue.SETTLE_POLL_SECONDS


def _fake_slurm(monkeypatch, squeue: str, sacct: str | None) -> list[list[str]]:
    """squeue (and sacct, where not None) answering with these lines; the commands asked."""
    asked: list[list[str]] = []

    def run(command):
        asked.append(command)
        text = squeue if command[0] == "squeue" else sacct
        return subprocess.CompletedProcess(command, 0, stdout=text, stderr="")

    monkeypatch.setattr(slurm_queue, "_run", run)
    monkeypatch.setattr(
        slurm_queue.shutil, "which", lambda name: "/usr/bin/sacct" if sacct is not None else None
    )
    return asked


def test_jobs_named_joins_squeue_and_sacct_and_keeps_only_job_and_task_ids(monkeypatch):
    asked = _fake_slurm(monkeypatch, "40_1|RUNNING\n", "40_[2-3]|PENDING\n40_0|COMPLETED\n41|FAILED\n")
    assert slurm_queue.jobs_named("cutmix-abc") == ["40_0", "40_1", "41"]
    assert [c[0] for c in asked] == ["squeue", "sacct"] and all("--name=cutmix-abc" in c for c in asked)
    _fake_slurm(monkeypatch, "40_1|RUNNING\n", None)  # no accounting: squeue alone
    assert slurm_queue.jobs_named("cutmix-abc") == ["40_1"]


def test_a_begun_submission_is_matched_by_array_index_or_as_a_single_job(monkeypatch, tmp_path):
    _fake_slurm(monkeypatch, "50_1|PENDING\n50_10|PENDING\n", None)
    old = "2020-01-01T00:00:00+0000"
    runs = [_planned(tmp_path, {"job_name": "cutmix-a", "array_index": i, "folder": str(tmp_path),
                                "submitting": old}, f"r{i}") for i in (1, 10, 2)]  # fmt: skip
    slurm_queue.recover_job_ids(runs)
    assert [slurm_queue.read_job_record(r.path) and slurm_queue.read_job_record(r.path)["job_id"] for r in runs] == [
        "50_1", "50_10", None]  # fmt: skip
    _fake_slurm(monkeypatch, "60|RUNNING\n", None)
    single = _planned(tmp_path, {"job_name": "cutmix-b", "array_index": None, "submitting": old}, "single")
    slurm_queue.recover_job_ids([single])
    assert slurm_queue.read_job_record(single.path)["job_id"] == "60"


def test_a_submission_just_begun_whose_job_slurm_does_not_know_is_refused_not_repeated(monkeypatch, tmp_path):
    _fake_slurm(monkeypatch, "", None)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    run = _planned(tmp_path, {"job_name": "cutmix-c", "array_index": 0, "submitting": stamp})
    with pytest.raises(
        UsageError, match="expected no submission under way for .* another cutmix compare may"
    ):
        slurm_queue.recover_job_ids([run])
    assert slurm_queue.read_job_record(run.path) is None
