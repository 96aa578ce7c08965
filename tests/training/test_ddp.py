"""DDP with torchrun, 2 gloo processes on the CPU: the evaluated model is the saved one, a resume
with another number of processes is refused, and rank 0 loads the data before the others."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cutmix.data import DeviceLoader, load_dataset
from cutmix.models import resnet_v1
from cutmix.training.checkpoint import load_checkpoint
from cutmix.training.components import evaluate
from cutmix.training.config import TrainConfig
from cutmix.training.loop import train

ROOT = Path(__file__).resolve().parents[2]

# Runs `cutmix` after wrapping cutmix.training.distributed.load_dataset so that each rank records what it found
# when its load began: whether rank 0 had finished, and which decoded trees were in the cache.
LAUNCHER = """
import json, os, sys, time
from pathlib import Path
import cutmix.training.distributed
from cutmix.cli import main

log = Path(os.environ["LOAD_LOG"])
cache = Path(os.environ["CUTMIX_DATA_DIR"]) / "image-trees"
real_load = cutmix.training.distributed.load_dataset

def recording_load(spec, *args, **kwargs):
    rank = int(os.environ["RANK"])
    seen = {"rank0_done": (log / "rank0.done").exists(), "cached": sorted(p.name for p in cache.glob("*.npz"))}
    (log / f"rank{rank}.json").write_text(json.dumps(seen))
    if rank == 0:
        time.sleep(1.0)  # without an ordering, rank 1 would now start before anything is cached
    dataset = real_load(spec, *args, **kwargs)
    if rank == 0:
        (log / "rank0.done").write_text("")
    return dataset

cutmix.training.distributed.load_dataset = recording_load
sys.exit(main(sys.argv[1:]))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env["CUTMIX_DATA_DIR"] = str(tmp_path / "cache")
    return env


def _torchrun(tmp_path: Path, args: list[str], env: dict[str, str], check: bool = True):
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(launcher), *args]  # fmt: skip
    return subprocess.run(command, env=env, check=check, timeout=600, capture_output=True, text=True)


def _image_tree(root: Path, classes: list[str], train: int = 24, test: int = 12) -> Path:
    """Small 32x32 images (the model pools 8x8 at the end), their colour depending on the class."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 160, (32, 32, 3)) + 12 * label * np.eye(3, dtype=np.int64)[label % 3]
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


TREE_CLASSES = ["ant", "bee", "cat", "dog"]
# BatchNorm momentum 0.5: each rank's last batches weigh heavily in its running statistics, so a
# rank that evaluated its own statistics would score visibly differently from the saved model.
ARGS = ["--depth", "8", "--epochs", "2", "--batch-size", "32", "--mix", "cutmix", "--partner", "permute",
        "--bn-momentum", "0.5", "--seed", "1", "--quiet", "--device", "cpu"]  # fmt: skip


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("ddp")
    tree = _image_tree(tmp_path / "tree", TREE_CLASSES)
    env = _env(tmp_path)
    env["CUTMIX_RANK_STATE_DIR"] = str(tmp_path / "ranks")
    env["LOAD_LOG"] = str(tmp_path / "log")
    (tmp_path / "log").mkdir()
    _torchrun(tmp_path, ["train", "--data", str(tree), *ARGS, "--out", str(tmp_path / "run")], env)
    return tmp_path, tree


def test_every_rank_evaluates_and_holds_the_saved_model(ddp_run):
    tmp_path, tree = ddp_run
    # What the run reported for its last epoch is what the saved checkpoint scores on one process.
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    model = resnet_v1(8, len(TREE_CLASSES))
    model.load_state_dict(checkpoint["model"])
    data = load_dataset(tree, cache_dir=tmp_path / "cache")
    loader = DeviceLoader(data.test_images, data.test_labels, 1000, device=torch.device("cpu"), shuffle=False,
                          drop_last=False)  # fmt: skip
    alone = evaluate(model, loader, len(TREE_CLASSES), None)
    last = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert 0.25 < alone["acc"] < 1  # learnt something, and not everything: predictions can still move
    assert last["test_per_class"] == alone["per_class"]
    assert last["test_acc"] == alone["acc"]
    # The loss moves with any change of the model (0.16% off when each rank kept its own statistics).
    assert last["test_loss"] == pytest.approx(alone["loss"], rel=1e-5)

    # Every rank ends holding the saved model, BatchNorm statistics included.
    ranks = [torch.load(tmp_path / "ranks" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert any(k.endswith(("running_mean", "running_var")) for k in checkpoint["model"])
    for key, saved in checkpoint["model"].items():
        for rank, state in enumerate(ranks):
            assert torch.equal(state[key], saved), f"rank {rank}: {key} is not the saved one"


def test_rank0_loads_the_data_first_and_the_others_read_its_cache(ddp_run):
    tmp_path, _ = ddp_run
    rank0 = json.loads((tmp_path / "log" / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "log" / "rank1.json").read_text())
    assert rank0 == {"rank0_done": False, "cached": []}  # rank 0 decoded the tree itself
    assert rank1["rank0_done"], "rank 1 began loading before rank 0 had finished"
    assert len(rank1["cached"]) == 1  # ... and found rank 0's decoded copy waiting


def test_resume_with_another_number_of_processes_is_refused(ddp_run, tmp_path, monkeypatch):
    ddp_dir, tree = ddp_run
    monkeypatch.setenv("CUTMIX_DATA_DIR", str(ddp_dir / "cache"))
    checkpoint_path = ddp_dir / "run" / "checkpoint.pt"
    checkpoint = load_checkpoint(checkpoint_path)
    config = TrainConfig(**checkpoint["config"])
    with pytest.raises(ValueError, match=r"checkpoint.pt was written by 2 process\(es\), got 1"):
        train(config, ddp_dir / "run", resume=True, progress=False)
    assert checkpoint["world_size"] == 2

    # An older checkpoint, without the world size: one mixing state per process tells it.
    older = tmp_path / "older"
    older.mkdir()
    del checkpoint["world_size"]
    torch.save(checkpoint, older / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"was written by 2 process\(es\), got 1"):
        train(config, older, resume=True, progress=False)

    # A one-process run resumed by two (each rank used to index its own mixing state: IndexError).
    single = tmp_path / "single"
    train(config, single, progress=False)
    result = _torchrun(tmp_path, ["train", "--data", str(tree), *ARGS, "--out", str(single), "--resume"],
                       {**_env(tmp_path), "LOAD_LOG": str(tmp_path)}, check=False)  # fmt: skip
    assert result.returncode != 0
    assert f"{single / 'checkpoint.pt'} was written by 1 process(es), got 2" in result.stderr
    assert "IndexError" not in result.stderr
