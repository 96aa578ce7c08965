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
from cutmix.training.checkpoint import load_checkpoint
from cutmix.training.components import divergence, lr_factor
from cutmix.training.config import resolve_config
from cutmix.training.loop import train

ROOT = Path(__file__).resolve().parents[2]
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


def test_best_epoch_is_chosen_on_validation_never_on_test(tmp_path, monkeypatch):
    """Scripted accuracies where the best validation epoch (2), the best test epoch (1) and the last
    epoch (3) all differ: only selection by validation accuracy reports epoch 2 and its test accuracy."""
    import cutmix.training.loop as train_module

    val_accs, test_accs = [0.30, 0.80, 0.50], [0.90, 0.20, 0.40]
    calls = {"val": 0, "test": 0}
    real_evaluate = train_module.evaluate

    def scripted(model, loader, *args, **kwargs):
        result = real_evaluate(model, loader, *args, **kwargs)
        which = "val" if loader.num_samples == 64 else "test"  # --val 64; the test split is larger
        result["acc"] = (val_accs if which == "val" else test_accs)[calls[which]]
        calls[which] += 1
        return result

    monkeypatch.setattr(train_module, "evaluate", scripted)
    run = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "3", "--val", "64", "--out", str(run)]) == 0
    assert calls == {"val": 3, "test": 3}
    metrics = read_metrics(run)
    assert [m["val_acc"] for m in metrics] == val_accs and [m["test_acc"] for m in metrics] == test_accs
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch_by_val"] == 2
    assert summary["best_val_acc"] == 0.80 and summary["test_acc_at_best_val"] == 0.20
    assert summary["val_acc"] == 0.50 and summary["test_acc"] == 0.40  # the last epoch's


def test_out_that_is_a_file_is_refused_naming_out(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert main(["train", *TINY, "--epochs", "1", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert err == f"cutmix train: error: --out: expected a run folder, got the file {str(target)!r}\n"
    assert target.read_text() == "mine"


def test_out_folder_with_the_users_own_files_is_refused_unless_force(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.json").write_text('{"lr": 5}')
    (folder / "summary.json").write_text("my summary")
    (folder / "photo.jpg").write_bytes(b"not ours")
    assert main(["train", *TINY, "--epochs", "1", "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and "--out:" in err and "config.json, summary.json" in err and "--force" in err
    )
    assert (folder / "config.json").read_text() == '{"lr": 5}' and (
        folder / "summary.json"
    ).read_text() == "my summary"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "photo.jpg", "summary.json"]
    assert main(["train", *TINY, "--epochs", "1", "--force", "--out", str(folder)]) == 0
    assert json.loads((folder / "config.json").read_text())["config"]["depth"] == 8
    assert json.loads((folder / "summary.json").read_text())["finished"] is True
    assert (folder / "photo.jpg").read_bytes() == b"not ours"  # only the run's own names are replaced


def test_force_starts_an_existing_run_afresh(tmp_path, capsys):
    run, fresh = tmp_path / "run", tmp_path / "fresh"
    assert main(["train", *TINY, "--epochs", "1", "--seed", "3", "--out", str(run)]) == 0
    assert main(["train", *TINY, "--epochs", "1", "--seed", "4", "--force", "--out", str(run)]) == 0
    assert main(["train", *TINY, "--epochs", "1", "--seed", "4", "--out", str(fresh)]) == 0
    for name in ("init.pt", "checkpoint.pt"):  # the seed-4 run's, as in a new folder
        forced, new = (load_checkpoint(p / name) for p in (run, fresh))
        forced, new = forced.get("model", forced), new.get("model", new)
        assert all(torch.equal(forced[k], new[k]) for k in new), name
    assert [m["train_loss"] for m in read_metrics(run)] == [m["train_loss"] for m in read_metrics(fresh)]
    with pytest.raises(SystemExit) as info:  # --force starts afresh: it cannot also --resume
        main(["train", *TINY, "--epochs", "1", "--force", "--resume", "--out", str(run)])
    assert info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_resume_of_a_missing_or_empty_folder_is_refused(tmp_path, capsys):
    missing = tmp_path / "typo"
    assert main(["train", *TINY, "--epochs", "1", "--resume", "--out", str(missing)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("cutmix train: error: --resume:") and "does not exist" in err and err.count("\n") == 1
    )
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", *TINY, "--epochs", "1", "--resume", "--out", str(empty)]) == 2
    assert "--resume:" in capsys.readouterr().err and list(empty.iterdir()) == []
    # A run of ours that stopped before its first checkpoint starts from the beginning, saying so.
    run = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(run)]) == 0
    for name in ("checkpoint.pt", "summary.json"):
        (run / name).unlink()
    capsys.readouterr()
    assert main(["train", *TINY, "--epochs", "1", "--resume", "--out", str(run)]) == 0
    assert "holds no checkpoint yet" in capsys.readouterr().out and (run / "checkpoint.pt").exists()


def test_resume_from_a_checkpoint_that_is_not_ours_is_one_line(tmp_path, capsys):
    folder = tmp_path / "other"
    folder.mkdir()
    torch.save({"weights": torch.zeros(2)}, folder / "checkpoint.pt")  # another project's file
    assert main(["train", *TINY, "--epochs", "1", "--resume", "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"cutmix train: error: --resume: {folder / 'checkpoint.pt'} is not a cutmix checkpoint"
    )
    assert err.count("\n") == 1 and [p.name for p in folder.iterdir()] == ["checkpoint.pt"]


def test_a_data_file_that_is_not_a_data_set_is_one_line_naming_data(tmp_path, capsys):
    photo = tmp_path / "fake.jpg"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(photo)
    tiny = [a for a in TINY if a != "synthetic:512" and a != "--data"]
    assert main(["train", *tiny, "--data", str(photo), "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"cutmix train: error: --data: {photo}: expected a data set") and err.count("\n") == 1
    )
    assert "got an image file" in err


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
