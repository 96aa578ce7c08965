"""The seam between a comparison and where its runs train: :func:`cutmix.experiment.run_planned` takes
the planned runs and trains them in this process or in local child processes, to the same records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cutmix.data import load_dataset
from cutmix.experiment import config_hash, plan, run_planned
from cutmix.experiment.plan import RUN_RECORD, init_path, initial_weights
from cutmix.experiment.runners import Launch
from cutmix.runinfo import atomic_torch_save
from cutmix.training.config import config_with, resolve_config
from cutmix.training.distributed import setup_distributed

ARMS = ("none", "cutmix")
TIMINGS = {"images_per_s", "train_time", "eval_time", "epoch_time", "time", "wall_time"}


@pytest.fixture(scope="module")
def base():
    return resolve_config("seed", data="synthetic:256", depth=8, batch_size=64, device="cpu", epochs=1)


def planned(base, out: Path) -> list:
    """The plan of one seed, with its init.pt written and given to each run, as compare does."""
    runs = plan(base, ARMS, [0], out)
    classes = len(load_dataset(base.data, progress=False).classes)
    atomic_torch_save(init_path(out, 0), initial_weights(base, classes))
    for run in runs:
        run.config = config_with(run.config, init=str(init_path(out, 0).resolve()))
    return runs


def records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS} for line in lines]


def test_run_planned_trains_here_and_in_child_processes_to_the_same_records(base, tmp_path):
    dist_info, _ = setup_distributed("cpu")
    threads = torch.get_num_threads()
    for jobs in (1, 2):
        out = tmp_path / f"jobs-{jobs}"
        runs = planned(base, out)
        assert [r.state for r in runs] == ["new", "new"]
        run_planned(runs, Launch(jobs=jobs, threads=1, device="cpu", dist_info=dist_info, argv=None, total=2))
        assert torch.get_num_threads() == threads  # the in-process runner puts torch's setting back
        for run in runs:
            record = json.loads((run.path / RUN_RECORD).read_text())
            assert record["hash"] == config_hash(run.config) and (record["arm"], record["seed"]) == (
                run.arm,
                0,
            )
            assert json.loads((run.path / "summary.json").read_text())["epochs_completed"] == 1
        # What the folders now hold, told by the runs' own records: both done, as planned.
        assert [(r.arm, r.state, r.epochs_done) for r in plan(base, ARMS, [0], out)] == [
            ("none", "done", 1),
            ("cutmix", "done", 1),
        ]
    for arm in ARMS:
        here, there = (
            records(tmp_path / "jobs-1" / "seed-0" / arm),
            records(tmp_path / "jobs-2" / "seed-0" / arm),
        )
        assert len(here) == 1 and here == there
    # The arms started from the same weights and differ only by the mixing.
    assert records(tmp_path / "jobs-1" / "seed-0" / "none") != records(
        tmp_path / "jobs-1" / "seed-0" / "cutmix"
    )
