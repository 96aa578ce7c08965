"""Training: recipes, learning, checkpoints and resume, divergence, evaluate/predict, DDP."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cutmix.cli import main
from cutmix.train import divergence, load_checkpoint, lr_factor, resolve_config, train

ROOT = Path(__file__).resolve().parents[1]
# Small and quick: ResNet-8 (every layer kind of ResNet-20) on 512 synthetic images.
TINY = ["--data", "synthetic:512", "--depth", "8", "--quiet", "--device", "cpu"]


def env_for_subprocess() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"  # the same thread count in every process: bit-for-bit comparisons
    return env


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_recipes_and_overrides():
    seed = resolve_config("seed", data="synthetic")
    assert (seed.batch_size, seed.optimizer, seed.lr, seed.adam_eps, seed.epochs) == (
        32,
        "adam",
        1e-3,
        1e-7,
        15,
    )
    assert (seed.alpha, seed.partner, seed.augment, seed.normalize, seed.l2) == (
        0.25,
        "stream",
        "none",
        False,
        1e-4,
    )
    fast = resolve_config("fast", data="synthetic", lr=0.05, epochs=None)
    assert fast.lr == 0.05 and fast.epochs == 15 and fast.optimizer == "sgd" and fast.augment == "crop-flip"
    with pytest.raises(
        ValueError, match=r"--mix: expected one of none, cutmix, mixup, cutout, got 'cutmixx'"
    ):
        resolve_config("seed", mix="cutmixx")
    with pytest.raises(ValueError, match=r"--recipe: expected one of seed, fast, got 'slow'"):
        resolve_config("slow")
    with pytest.raises(ValueError, match=r"--epochs: expected an integer >= 1, got 0"):
        resolve_config("seed", epochs=0)
    with pytest.raises(ValueError, match=r"--init: expected a file of initial weights"):
        resolve_config("seed", init="/nonexistent/init.pt")


def test_lr_schedules():
    assert lr_factor(0, 100, "constant", 0.2) == 1.0
    assert lr_factor(0, 100, "onecycle", 0.2) == pytest.approx(0.1)
    assert lr_factor(20, 100, "onecycle", 0.2) == pytest.approx(1.0)
    assert lr_factor(60, 100, "onecycle", 0.2) == pytest.approx(0.5)
    assert lr_factor(100, 100, "onecycle", 0.2) == pytest.approx(0.0)
    assert lr_factor(50, 100, "cosine", 0.0) == pytest.approx(0.5)
    assert lr_factor(100, 100, "cosine", 0.0) == pytest.approx(0.0, abs=1e-12)


def test_divergence_guard_flags_the_seeds_collapse():
    def epoch(acc: float, loss: float = 1.0) -> dict:
        return {"train_loss": loss, "test_loss": loss, "test_acc": acc}

    # The seed's no-augmentation arm: 63% then 10.00%.
    history = [epoch(0.5359), epoch(0.6283), epoch(0.2460), epoch(0.1003)]
    assert "collapsed" in divergence(history, 10)
    assert divergence(history[:3], 10) is None  # 24.6% is bad but not chance
    assert divergence([epoch(0.10), epoch(0.11)], 10) is None  # never learnt: not a collapse
    assert divergence([epoch(0.5), epoch(0.5, loss=float("nan"))], 10) == "non-finite loss"


def test_training_learns_far_above_chance(tmp_path):
    config = resolve_config(
        "seed",
        data="synthetic:768",
        depth=8,
        epochs=2,
        mix="cutmix",
        device="cpu",
        precision="fp32",
        bn_momentum=0.1,
    )
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["finished"] and summary["test_acc"] > 0.6  # chance is 0.1
    metrics = read_metrics(tmp_path / "run")
    assert [m["epoch"] for m in metrics] == [1, 2]
    for key in ("train_loss", "test_acc", "lr", "images_per_s", "wall_time", "test_per_class"):
        assert key in metrics[0]
    assert metrics[1]["train_loss"] < metrics[0]["train_loss"]
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["config"]["mix"] == "cutmix" and recorded["versions"]["torch"] == torch.__version__
    assert "hardware" in recorded and "git_commit" in recorded and "command" in recorded


def test_validation_split_is_held_out_and_reported(tmp_path):
    summary = main(["train", *TINY, "--epochs", "1", "--val", "100", "--out", str(tmp_path / "run")])
    assert summary == 0
    metrics = read_metrics(tmp_path / "run")
    assert "val_acc" in metrics[0]
    result = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert result["best_epoch_by_val"] == 1


def test_shared_init_weights(tmp_path):
    assert main(["train", *TINY, "--epochs", "1", "--seed", "3", "--out", str(tmp_path / "a")]) == 0
    init = tmp_path / "a" / "init.pt"
    assert main(["train", *TINY, "--epochs", "1", "--seed", "4", "--init", str(init), "--mix", "cutmix",
                 "--out", str(tmp_path / "b")]) == 0  # fmt: skip
    first = torch.load(init, weights_only=True)
    second = torch.load(tmp_path / "b" / "init.pt", weights_only=True)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_existing_run_needs_resume(tmp_path, capsys):
    assert main(["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    assert main(["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert (
        main(["train", *TINY, "--epochs", "1", "--lr", "0.01", "--out", str(tmp_path / "run"), "--resume"])
        == 2
    )
    assert "another configuration" in capsys.readouterr().err


def test_killed_run_resumes_bit_for_bit(tmp_path):
    """Kill a real run after its first checkpoint, resume it, and compare with an uninterrupted run."""
    args = [*TINY, "--epochs", "4", "--mix", "cutmix", "--augment", "crop-flip", "--seed", "7"]
    command = [sys.executable, "-m", "cutmix", "train", *args]
    env = env_for_subprocess()
    subprocess.run([*command, "--out", str(tmp_path / "whole")], env=env, check=True, timeout=600)

    killed = tmp_path / "killed"
    process = subprocess.Popen([*command, "--out", str(killed)], env=env)
    deadline = time.monotonic() + 300
    while not (killed / "checkpoint.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    completed = load_checkpoint(killed / "checkpoint.pt")["epoch"]
    assert 1 <= completed < 4, f"the run was not killed mid-way (after epoch {completed})"

    resumed = subprocess.run([*command, "--out", str(killed), "--resume"], env=env, check=True, timeout=600,
                             capture_output=True, text=True)  # fmt: skip
    assert f"resuming {killed} after epoch {completed} of 4" in resumed.stdout
    whole, again = (load_checkpoint(p / "checkpoint.pt") for p in (tmp_path / "whole", killed))
    assert again["epoch"] == 4
    for key, value in whole["model"].items():
        assert torch.equal(value, again["model"][key]), f"{key} differs after resume"
    assert [m["epoch"] for m in read_metrics(killed)] == [1, 2, 3, 4]
    assert [m["train_loss"] for m in read_metrics(killed)] == [
        m["train_loss"] for m in read_metrics(tmp_path / "whole")
    ]


def test_stop_on_divergence_exits_non_zero(tmp_path, capsys):
    code = main(["train", *TINY, "--epochs", "3", "--optimizer", "sgd", "--lr", "1e6", "--l2", "0",
                 "--stop-on-divergence", "--out", str(tmp_path / "run")])  # fmt: skip
    assert code == 3
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["diverged"] and summary["epochs_completed"] < 3
    assert "diverged" in capsys.readouterr().out


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_from_elsewhere_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": _RunsCode(str(marker))}))
    with pytest.raises(ValueError, match=r"evil.pt: refused, not loaded"):
        load_checkpoint(evil)
    assert not marker.exists()
    assert main(["evaluate", "--checkpoint", str(evil), "--data", "synthetic"]) == 2
    assert not marker.exists()


def test_evaluate_and_predict(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "2", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run / "checkpoint.pt"), "--data", "synthetic:512",
                 "--quiet", "--json"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    assert result["test_acc"] == pytest.approx(summary["test_acc"])
    assert len(result["per_class"]) == 10 and "class" in out

    big = tmp_path / "big.png"  # any size: resized to 32x32
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (97, 61, 3), dtype=np.uint8)).save(big)
    assert main(["predict", "--checkpoint", str(run / "checkpoint.pt"), "--top-k", "3", str(big)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{big}:") and line.count("%") == 3
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    assert main(["predict", "--checkpoint", str(run / "checkpoint.pt"), str(broken)]) == 2
    assert "broken.png: not a readable image" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_two_cpu_processes_match_one(tmp_path):
    """torchrun, 2 processes, gloo on 127.0.0.1: identical weights on both ranks, and a final loss
    close to one process at the same global batch."""
    args = [
        *TINY,
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--mix",
        "cutmix",
        "--partner",
        "permute",
        "--seed",
        "1",
    ]
    env = env_for_subprocess()
    env["CUTMIX_RANK_STATE_DIR"] = str(tmp_path / "ranks")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(_free_port())]  # fmt: skip
    subprocess.run([*torchrun, "-m", "cutmix", "train", *args, "--out", str(tmp_path / "ddp")], env=env,
                   check=True, timeout=600)  # fmt: skip
    rank0 = torch.load(tmp_path / "ranks" / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "ranks" / "rank1.pt", weights_only=True)
    for key in rank0:  # BatchNorm statistics too: rank 0's are broadcast before each evaluation
        assert torch.equal(rank0[key], rank1[key]), key

    del env["CUTMIX_RANK_STATE_DIR"]
    subprocess.run([sys.executable, "-m", "cutmix", "train", *args, "--out", str(tmp_path / "single")],
                   env=env, check=True, timeout=600)  # fmt: skip
    ddp_loss = read_metrics(tmp_path / "ddp")[-1]["train_loss"]
    single_loss = read_metrics(tmp_path / "single")[-1]["train_loss"]
    # Same data order and model; the mixing draws differ (per rank), so losses agree only loosely.
    assert abs(ddp_loss - single_loss) < 0.25 * single_loss + 0.05, (ddp_loss, single_loss)
    assert len(list((tmp_path / "ddp").glob("*.pt"))) == 2  # rank 0 alone wrote init.pt, checkpoint.pt
