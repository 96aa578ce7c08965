"""Checkpoints within an epoch (on a stop request, a signal, or every --checkpoint-every-min minutes),
resumed bit for bit: weights, every metric but the timings, the summary and the test accuracy equal an
uninterrupted run's. Everything here trains on one thread, in-process and in the subprocesses alike."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from cutmix.cli import build_parser
from cutmix.errors import UsageError
from cutmix.experiment.plan import config_hash, hashed_options, plan, write_run_record
from cutmix.training import loop, preemption
from cutmix.training.checkpoint import load_checkpoint, resumable_checkpoint, save_checkpoint
from cutmix.training.config import resolve_config
from cutmix.training.distributed import Distributed
from cutmix.training.loop import train
from cutmix.training.preemption import (
    INTERRUPTED_EXIT_STATUSES,
    StepGuard,
    TrainingInterrupted,
    clear_stop,
    exit_status,
    request_stop,
    stop_on_signals,
    stop_reasons,
    stop_requested,
)

ROOT = Path(__file__).resolve().parents[2]
TIMING = {"epoch_time", "wall_time", "train_time", "images_per_s"}  # per-epoch record fields
SUMMARY_TIMING = {"wall_time", "train_images_per_s", "out_dir"}
# The subprocess runs: 256 synthetic images, batch 32, so 8 steps an epoch.
SUB_ARGS = ["--data", "synthetic:256", "--depth", "8", "--epochs", "2", "--batch-size", "32", "--mix", "cutmix",
            "--augment", "crop-flip", "--seed", "3", "--device", "cpu", "--quiet"]  # fmt: skip
SUB_STEPS = 8


def sub_config(**changes):
    """The configuration `cutmix train SUB_ARGS` resolves to."""
    return resolve_config("seed", data="synthetic:256", depth=8, epochs=2, batch_size=32, mix="cutmix",
                          augment="crop-flip", seed=3, device="cpu", **changes)  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread, as the subprocesses get (OMP_NUM_THREADS=1): results are bit for bit only
    at the same thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def no_pending_stop():
    clear_stop()
    yield
    clear_stop()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run that the subprocess runs are compared with."""
    out = tmp_path_factory.mktemp("reference") / "run"
    train(sub_config(), out, progress=False)
    return out


def env_for_subprocess() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def assert_same_run(whole: Path, other: Path) -> None:
    """``other`` ended exactly as ``whole``: every tensor of the model and the optimizer, every metric
    but the timings, the summary; and its last checkpoint is an epoch-end one."""
    a, b = load_checkpoint(whole / "checkpoint.pt"), load_checkpoint(other / "checkpoint.pt")
    assert "epoch_progress" not in b and a["epoch"] == b["epoch"]
    assert a["model"].keys() == b["model"].keys()
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), f"{key} differs after resume"
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys() and a["optimizer"]["state"]
    for index, state in a["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["optimizer"]["state"][index][key]))
    assert records(other) == records(whole)
    summaries = [json.loads((run / "summary.json").read_text()) for run in (whole, other)]
    without_timing = [{k: v for k, v in s.items() if k not in SUMMARY_TIMING} for s in summaries]
    assert without_timing[0] == without_timing[1]
    assert summaries[0]["test_acc"] == summaries[1]["test_acc"] is not None


def stopped_after(monkeypatch, steps: int, config, out: Path, resume: bool) -> TrainingInterrupted:
    """Runs ``train`` with a stop requested right after its ``steps``-th optimizer step (counted in
    this call), as a signal handler would request it; returns the TrainingInterrupted it raised."""
    real_step = loop.train_step
    done = 0

    def step_then_maybe_stop(*args, **kwargs):
        nonlocal done
        result = real_step(*args, **kwargs)
        done += 1
        if done == steps:
            request_stop("a test")
        return result

    monkeypatch.setattr(loop, "train_step", step_then_maybe_stop)
    try:
        with pytest.raises(TrainingInterrupted) as info:
            train(config, out, resume=resume, progress=False)
    finally:
        monkeypatch.setattr(loop, "train_step", real_step)
    # Answered: the request is cleared, so a later train() in this process is not stopped by it.
    assert stop_requested() is None and info.value.reasons == {"a test"}
    return info.value


# --------------------------------------------------------------------------------------------
# In-process: a stop requested at a chosen step
# --------------------------------------------------------------------------------------------


# Where each op's run is stopped: (steps in the first call, steps in the resumed call) with 4 steps an
# epoch. cutmix: epoch 1 step 2, then epoch 2 step 3; none: after the last step of epoch 1 (before its
# evaluation), then epoch 2 step 1; mixup: epoch 1 step 1 and epoch 2 step 2; cutout: epoch 2 steps 1, 3.
STOPS = {"cutmix": (2, 5, (1, 2), (2, 3)), "none": (4, 1, (1, 4), (2, 1)), "mixup": (1, 5, (1, 1), (2, 2)),
         "cutout": (5, 2, (2, 1), (2, 3))}  # fmt: skip


@pytest.mark.parametrize("mix", list(STOPS))
def test_a_run_stopped_twice_within_epochs_resumes_bit_for_bit(tmp_path, monkeypatch, mix):
    first_steps, second_steps, first_at, second_at = STOPS[mix]
    # 64 images, batch 16: 4 steps an epoch; crop+flip, so the loader's skipped draws matter too.
    config = resolve_config("seed", data="synthetic:64", depth=8, epochs=2, batch_size=16, mix=mix,
                            augment="crop-flip", device="cpu", eval_batch_size=500)  # fmt: skip
    whole = tmp_path / "whole"
    train(config, whole, progress=False)

    run = tmp_path / "stopped"
    first = stopped_after(monkeypatch, first_steps, config, run, resume=False)
    assert (first.reason, (first.epoch, first.step), first.steps) == ("a test", first_at, 4)
    assert first.checkpoint_path == run / "checkpoint.pt" and first.exit_status == 128 + signal.SIGTERM
    saved = load_checkpoint(run / "checkpoint.pt")
    assert saved["epoch"] == first_at[0] - 1 and not (run / "summary.json").exists()
    assert len(saved["history"]) == first_at[0] - 1 and records(run) == records(whole)[: first_at[0] - 1]
    (progress,) = saved["epoch_progress"]
    assert (progress["step"], progress["seen"]) == (first_at[1], 16 * first_at[1])
    assert progress["loss_sum"] > 0 and 0 <= progress["correct"] <= progress["seen"]

    second = stopped_after(monkeypatch, second_steps, config, run, resume=True)
    assert (second.epoch, second.step) == second_at
    saved = load_checkpoint(run / "checkpoint.pt")
    assert saved["epoch"] == second_at[0] - 1 and saved["epoch_progress"][0]["step"] == second_at[1]
    assert records(run) == records(whole)[: second_at[0] - 1]  # the epoch under way is not logged

    train(config, run, resume=True, progress=False)
    assert_same_run(whole, run)


# --------------------------------------------------------------------------------------------
# The pieces: signals, the periodic clock, the option outside the run's identity
# --------------------------------------------------------------------------------------------


def test_signals_request_a_stop_and_the_previous_handlers_come_back():
    before = signal.getsignal(signal.SIGUSR2)
    with stop_on_signals():
        assert stop_requested() is None
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0.01)  # Python runs the handler at the next bytecode boundary
        assert stop_requested() == "SIGUSR2"
        os.kill(os.getpid(), signal.SIGTERM)  # the first reason is kept
        time.sleep(0.01)
        assert stop_requested() == "SIGUSR2"
        # Every reason is kept too: a scancel's SIGTERM after the time limit's SIGUSR2 forbids a requeue.
        assert stop_reasons() == {"SIGUSR2", "SIGTERM"}
    assert signal.getsignal(signal.SIGUSR2) is before
    # A request left over is forgotten as the next outermost block starts, not before.
    assert stop_requested() == "SIGUSR2"
    with stop_on_signals():
        assert stop_requested() is None and stop_reasons() == frozenset()
        request_stop("inner")
        with stop_on_signals():  # nested: does not clear the outer block's request
            assert stop_requested() == "inner"
    clear_stop()
    assert stop_requested() is None
    assert (exit_status("SIGTERM"), exit_status("SIGUSR2"), exit_status("a test")) == (143, 140, 143)
    assert {128 + signal.SIGTERM, 128 + signal.SIGUSR2} == INTERRUPTED_EXIT_STATUSES


def test_the_periodic_checkpoint_is_due_every_n_minutes_from_the_last_save(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(preemption, "_now", lambda: clock[0])
    guard = StepGuard(2.0, Distributed())
    assert guard.poll() == (None, False)
    clock[0] += 119.0
    assert guard.poll() == (None, False)
    clock[0] += 1.0
    assert guard.poll() == (None, True)
    guard.saved()  # an epoch-end or mid-epoch checkpoint: the next one is 2 minutes later
    clock[0] += 60.0
    assert guard.poll() == (None, False)
    request_stop("SIGTERM")
    assert guard.poll() == ("SIGTERM", False)
    clock[0] += 1e6
    assert StepGuard(0.0, Distributed()).poll() == ("SIGTERM", False)  # 0: never periodic


def test_checkpoint_every_min_is_an_option_of_train_and_compare_but_not_of_the_run(tmp_path):
    config = sub_config()
    every = replace(config, checkpoint_every_min=5.0).validate()
    assert config_hash(every) == config_hash(config)
    assert "checkpoint_every_min" not in hashed_options(every)
    with pytest.raises(
        UsageError, match=re.escape("--checkpoint-every-min: expected a finite number >= 0, got -1")
    ):
        replace(config, checkpoint_every_min=-1).validate()
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("train", "compare"):
        args = subparsers.choices[command].parse_args(["--checkpoint-every-min", "2.5", "--out", "x"])
        assert args.checkpoint_every_min == 2.5

    # A checkpoint and a config.json written before the option existed (they lack it) still match.
    old_options = {k: v for k, v in asdict(config).items() if k != "checkpoint_every_min"}
    checkpoint = tmp_path / "checkpoint.pt"
    save_checkpoint(checkpoint, {"model": {}, "optimizer": {}, "scheduler": {}, "epoch": 1, "history": [],
                                 "diverged": None, "mix_state": [None], "torch_rng": torch.get_rng_state(),
                                 "config": old_options})  # fmt: skip
    assert resumable_checkpoint(checkpoint, every, Distributed())["epoch"] == 1
    with pytest.raises(UsageError, match="another configuration"):
        resumable_checkpoint(checkpoint, replace(every, lr=0.5), Distributed())

    # A comparison's run folder of that time: still "partial" (resumable) with the option given now.
    (run,) = plan(config, ("none",), [3], tmp_path / "cmp")
    run.path.mkdir(parents=True)
    write_run_record(run)
    old_run = {k: v for k, v in asdict(run.config).items() if k != "checkpoint_every_min"}
    (run.path / "config.json").write_text(json.dumps({"config": old_run}))
    save_checkpoint(run.path / "checkpoint.pt", {"config": old_run, "epoch": 1})
    (found,) = plan(every, ("none",), [3], tmp_path / "cmp")
    assert (found.state, found.differences) == ("partial", [])


# --------------------------------------------------------------------------------------------
# Real processes: SIGTERM, SIGKILL after a periodic checkpoint, a child of compare --jobs
# --------------------------------------------------------------------------------------------


def wait_for_epoch_one(process: subprocess.Popen, run: Path) -> None:
    """Returns once the run has logged epoch 1 (so it is training epoch 2), the process still alive."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().strip():
            return
        time.sleep(0.02)
    raise AssertionError(f"the run never finished epoch 1 (exit status {process.poll()})")


def test_sigterm_of_cutmix_train_saves_within_the_epoch_and_says_how_to_resume(tmp_path, reference, capsys):
    run = tmp_path / "run"
    env = env_for_subprocess()
    process = subprocess.Popen([sys.executable, "-m", "cutmix", "train", *SUB_ARGS, "--out", str(run)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for_epoch_one(process, run)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, err
    saved = load_checkpoint(run / "checkpoint.pt")
    step = saved["epoch_progress"][0]["step"]
    assert saved["epoch"] == 1 and 1 <= step <= SUB_STEPS
    line = err.strip().splitlines()[-1]
    expected = (f"cutmix train: stopped by SIGTERM in epoch 2 after step {step} of {SUB_STEPS}: checkpoint "
                f"saved to {run / 'checkpoint.pt'}; resume with: cutmix train ")  # fmt: skip
    assert line.startswith(expected) and line.endswith(" --resume"), line

    command = shlex.split(line.split("resume with: ", 1)[1])
    assert command == ["cutmix", "train", *SUB_ARGS, "--out", str(run), "--resume"]

    train(sub_config(), run, resume=True)  # the command's train(), here: a subprocess costs a torch import
    assert f"resuming {run} in epoch 2 of 2, after step {step} of {SUB_STEPS}" in capsys.readouterr().out
    assert_same_run(reference, run)


# Saves a checkpoint every step (--checkpoint-every-min tiny), and after the 11th (epoch 2, step 3)
# says so and waits to be killed: the kill lands at a known place.
WAIT_AFTER_SAVE = """
import os, sys, time
from pathlib import Path
from cutmix.cli import main
from cutmix.training import preemption

real_save = preemption.MidEpochSaver.save
saves = 0

def save_then_wait(self, progress):
    global saves
    real_save(self, progress)
    saves += 1
    if saves == int(os.environ["WAIT_AFTER_SAVE"]):
        Path(os.environ["SAVED_MARKER"]).write_text(str(progress.step))
        time.sleep(600)

preemption.MidEpochSaver.save = save_then_wait
sys.exit(main(sys.argv[1:]))
"""


def test_a_run_killed_after_a_periodic_checkpoint_resumes_from_it_bit_for_bit(tmp_path, reference):
    run, marker = tmp_path / "run", tmp_path / "saved"
    env = env_for_subprocess() | {"WAIT_AFTER_SAVE": str(SUB_STEPS + 3), "SAVED_MARKER": str(marker)}
    args = [*SUB_ARGS, "--checkpoint-every-min", "1e-9", "--out", str(run)]
    process = subprocess.Popen([sys.executable, "-c", WAIT_AFTER_SAVE, "train", *args], env=env)
    deadline = time.monotonic() + 300
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), f"no periodic checkpoint was saved (exit status {process.poll()})"
    process.send_signal(signal.SIGKILL)  # cannot be caught: only the periodic checkpoint is left
    process.wait(timeout=60)
    saved = load_checkpoint(run / "checkpoint.pt")
    assert saved["epoch"] == 1 and saved["epoch_progress"][0]["step"] == 3 == int(marker.read_text())

    train(sub_config(checkpoint_every_min=1e-9), run, resume=True, progress=False)
    assert_same_run(reference, run)


def test_sigterm_of_a_compare_child_saves_within_the_epoch_and_exits_as_interrupted(tmp_path, reference):
    run = tmp_path / "cmp" / "seed-3" / "cutmix"
    run.mkdir(parents=True)
    command = [sys.executable, "-m", "cutmix.experiment.runners.child", "--run-dir", str(run),
               "--config", json.dumps(asdict(sub_config())), "--threads", "1", "--parent", str(os.getpid())]  # fmt: skip
    with open(tmp_path / "train.log", "wb") as log:
        process = subprocess.Popen(command, env=env_for_subprocess(), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
        wait_for_epoch_one(process, run)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM and process.returncode in INTERRUPTED_EXIT_STATUSES
    saved = load_checkpoint(run / "checkpoint.pt")
    assert saved["epoch"] == 1 and 1 <= saved["epoch_progress"][0]["step"] <= SUB_STEPS
    last = (tmp_path / "train.log").read_text().strip().splitlines()[-1]
    assert last.startswith("cutmix compare: run interrupted: stopped by SIGTERM in epoch 2 after step "), last

    train(sub_config(), run, resume=True, progress=False)  # what the child does when started again
    assert_same_run(reference, run)


# torchrun's workers: on rank 1 alone (as when a signal reaches one process first) a stop is requested
# after STOP_AFTER steps; every rank must stop at that step.
STOP_ON_RANK_ONE = """
import os, sys
from cutmix.cli import main
from cutmix.training import loop, preemption

stop_after = int(os.environ.get("STOP_AFTER", "0"))
if stop_after and os.environ["RANK"] == "1":
    real_step, done = loop.train_step, 0

    def step_then_maybe_stop(*args, **kwargs):
        global done
        result = real_step(*args, **kwargs)
        done += 1
        if done == stop_after:
            preemption.request_stop("a test on rank 1")
        return result

    loop.train_step = step_then_maybe_stop
sys.exit(main(sys.argv[1:]))
"""


def test_under_torchrun_every_rank_stops_at_the_same_step_and_resumes_bit_for_bit(tmp_path):
    import socket

    def torchrun(*args: str, stop_after: int = 0) -> subprocess.CompletedProcess:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = env_for_subprocess() | {"STOP_AFTER": str(stop_after)}
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                   "127.0.0.1", "--master_port", str(port), str(tmp_path / "launch.py"), "train", *args]  # fmt: skip
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)

    (tmp_path / "launch.py").write_text(STOP_ON_RANK_ONE)
    # 128 images, global batch 32: 16 per rank, 4 steps an epoch.
    args = ["--data", "synthetic:128", "--depth", "8", "--epochs", "2", "--batch-size", "32", "--mix", "cutmix",
            "--partner", "permute", "--augment", "crop-flip", "--seed", "1", "--device", "cpu", "--quiet"]  # fmt: skip
    whole, run = tmp_path / "whole", tmp_path / "run"
    assert torchrun(*args, "--out", str(whole)).returncode == 0
    stopped = torchrun(*args, "--out", str(run), stop_after=6)  # epoch 2, step 2
    assert stopped.returncode != 0 and "exitcode  : 143" in stopped.stderr, stopped.stderr[-2000:]
    assert "cutmix train: stopped by a stop requested on another process in epoch 2 after step 2 of 4" in (
        stopped.stderr
    )  # rank 0's line: rank 1 asked
    saved = load_checkpoint(run / "checkpoint.pt")
    assert saved["epoch"] == 1 and [p["step"] for p in saved["epoch_progress"]] == [2, 2]
    assert [p["seen"] for p in saved["epoch_progress"]] == [32, 32]  # each rank's own sums
    assert torchrun(*args, "--out", str(run), "--resume").returncode == 0
    assert_same_run(whole, run)
