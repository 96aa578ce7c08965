"""`cutmix compare --jobs N`: runs in child processes give the same results as in one process, and
survive a killed parent, a killed child, a failing child and Ctrl-C."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cutmix.cli import main
from cutmix.experiment.locks import LOCK_NAME, run_lock

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--data", "synthetic:256", "--depth", "8", "--batch-size", "64", "--device", "cpu", "--quiet"]
ARGS = ["compare", *TINY, "--epochs", "3", "--arms", "none,cutmix", "--seeds", "1", "--threads", "1"]
ARMS = ("none", "cutmix")
# Wall-clock fields: everything else of an epoch's record must be identical whatever ran beside it.
TIMINGS = {"images_per_s", "train_time", "eval_time", "epoch_time", "time", "wall_time"}


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def results(out: Path, arm: str) -> list[dict]:
    lines = (out / "seed-0" / arm / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS} for line in lines]


def start(out: Path, jobs: int = 2) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # SIGINT back to its default: a test run started in the background (`cmd &` in a script) inherits
    # it ignored, and then Python never raises KeyboardInterrupt, so Ctrl-C could not be tested.
    return subprocess.Popen([sys.executable, "-m", "cutmix", *ARGS, "--jobs", str(jobs), "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip


def wait_for(condition, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def lock_free(run: Path) -> bool:
    """True when no process holds the run folder's lock (its trainer has exited)."""
    if not (run / LOCK_NAME).exists():
        return True
    with open(run / LOCK_NAME, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def child_pid(run: Path) -> int | None:
    try:
        text = (run / LOCK_NAME).read_text().strip()
    except OSError:
        return None
    return int(text) if text and not lock_free(run) else None


def half_written(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The comparison run the plain way: one run after the other in this process, one thread."""
    out = tmp_path_factory.mktemp("jobs") / "reference"
    code, _, stderr = run_main([*ARGS, "--jobs", "1", "--out", str(out)])
    assert code == 0, stderr
    return out


def test_parent_killed_then_same_command_resumes_to_the_same_results(reference, tmp_path):
    out = tmp_path / "killed"
    parent = start(out)
    runs = [out / "seed-0" / arm for arm in ARMS]
    # Killed once both children train and one has checkpointed an epoch (neither has finished).
    wait_for(lambda: any((r / "checkpoint.pt").exists() for r in runs) and all(child_pid(r) for r in runs),
             "both children to start and one checkpoint")  # fmt: skip
    parent.send_signal(signal.SIGKILL)
    parent.communicate(timeout=60)
    # The children die with their parent instead of training on as orphans.
    wait_for(lambda: all(lock_free(r) for r in runs), "the orphaned children to stop", timeout=60)
    assert not all((r / "summary.json").exists() for r in runs), "the comparison finished before the kill"

    code, _, stderr = run_main([*ARGS, "--jobs", "2", "--out", str(out)])
    assert code == 0, stderr
    assert (
        "resuming"
        in (out / "seed-0" / "none" / "train.log").read_text()
        + (out / "seed-0" / "cutmix" / "train.log").read_text()
    )
    for arm in ARMS:
        assert results(out, arm) == results(reference, arm), arm
        assert [m["epoch"] for m in results(out, arm)] == [1, 2, 3]
        assert torch.equal(
            torch.load(out / "seed-0" / arm / "init.pt", weights_only=True)["stem.0.weight"],
            torch.load(reference / "seed-0" / arm / "init.pt", weights_only=True)["stem.0.weight"],
        )
    assert (out / "report.md").exists() and not half_written(out)
    report = json.loads((out / "report.json").read_text())
    assert {r["arm"]: r["test_acc"] for r in report["runs"]} == {
        arm: results(reference, arm)[-1]["test_acc"] for arm in ARMS
    }


def test_a_killed_child_is_reported_and_the_other_run_goes_on(reference, tmp_path):
    out = tmp_path / "child"
    parent = start(out)
    victim, other = out / "seed-0" / "none", out / "seed-0" / "cutmix"
    wait_for(lambda: child_pid(victim) is not None, "the first child")
    os.kill(child_pid(victim), signal.SIGKILL)
    stdout, stderr = parent.communicate(timeout=300)
    assert parent.returncode == 1, stderr.decode()
    text = stderr.decode()
    assert f"seed 0 none ({victim}) failed: killed by signal 9; last lines of its log:" in text
    assert "1 run(s) failed; the others went on. The report was not written." in text
    assert (other / "summary.json").exists() and not (victim / "summary.json").exists()
    assert not (out / "report.md").exists()

    code, _, stderr = run_main([*ARGS, "--jobs", "2", "--out", str(out)])
    assert code == 0, stderr
    assert results(out, "none") == results(reference, "none")
    assert results(out, "cutmix") == results(reference, "cutmix")


def test_a_failing_child_shows_its_log_and_the_other_run_finishes(reference, tmp_path):
    out = tmp_path / "broken"
    shutil.copytree(reference, out)
    broken, fresh = out / "seed-0" / "none", out / "seed-0" / "cutmix"
    (broken / "summary.json").unlink()
    (broken / "checkpoint.pt").write_bytes(b"not a checkpoint")
    shutil.rmtree(fresh)
    (out / "report.md").unlink()

    code, _, stderr = run_main([*ARGS, "--jobs", "2", "--out", str(out)])
    assert code == 1
    # A bad checkpoint is the user's to fix: the child says so in one line, as `cutmix train` would.
    assert f"seed 0 none ({broken}) failed: exit status 2; last lines of its log:" in stderr
    assert "checkpoint.pt" in stderr.split("last lines of its log:", 1)[1]  # the child's own error
    assert "Traceback" not in stderr
    assert results(out, "cutmix") == results(reference, "cutmix")
    assert not (out / "report.md").exists()


def test_ctrl_c_stops_every_child_cleanly(tmp_path):
    out = tmp_path / "interrupted"
    parent = start(out)
    runs = [out / "seed-0" / arm for arm in ARMS]
    wait_for(lambda: all(child_pid(r) for r in runs), "both children")
    children = [child_pid(r) for r in runs]
    parent.send_signal(signal.SIGINT)
    _, stderr = parent.communicate(timeout=120)
    assert parent.returncode == 130, stderr.decode()
    assert "interrupted" in stderr.decode()
    for pid in children:
        with pytest.raises(ProcessLookupError):  # already reaped or gone: no orphan trains on
            os.kill(pid, 0)
    assert all(lock_free(r) for r in runs) and not half_written(out)


def test_a_run_folder_in_use_is_refused(tmp_path):
    message = f"{tmp_path / 'run'}: expected a run folder no other process"
    with run_lock(tmp_path / "run"), pytest.raises(ValueError, match=message), run_lock(tmp_path / "run"):
        pass
    with run_lock(tmp_path / "run"):  # released on exit
        pass


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--jobs", "0"], "--jobs: expected an integer >= 1, got 0"),
        (["--threads", "0"], "--threads: expected an integer >= 1, got 0"),
    ],
)
def test_bad_jobs_and_threads_are_user_errors(tmp_path, extra, message):
    code, _, stderr = run_main([*ARGS, *extra, "--out", str(tmp_path / "cmp")])
    assert code == 2 and message in stderr
