"""`cutmix compare`: a tiny end-to-end comparison, killed mid-way and resumed, its report, refusals."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats as scipy_stats

from cutmix.cli import build_parser, main
from cutmix.cli.compare import command_from_args
from cutmix.experiment.arms import parse_arms
from cutmix.experiment.plan import config_hash
from cutmix.training.checkpoint import load_checkpoint
from cutmix.training.config import resolve_config

ROOT = Path(__file__).resolve().parents[2]
# ResNet-8 on 256 synthetic images, 4 steps per epoch: each run takes a second or two.
TINY = ["--data", "synthetic:256", "--depth", "8", "--batch-size", "64", "--device", "cpu", "--quiet"]
ARGS = ["compare", *TINY, "--epochs", "2", "--arms", "none,cutmix", "--seeds", "2"]
RUNS = [(seed, arm) for seed in (0, 1) for arm in ("none", "cutmix")]


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file of a run folder with its mtime and contents."""
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()}


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # On a small, shared machine two intra-op threads per process run several times slower than one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def comparison(tmp_path_factory, one_thread):
    """A comparison killed (in a subprocess) once its first run is done and its second has one of
    its two epochs checkpointed, then moved to another folder and re-run there in-process to
    completion."""
    out = tmp_path_factory.mktemp("compare") / "killed-here"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "cutmix", *ARGS, "--out", str(out)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    second = out / "seed-0" / "cutmix"
    deadline = time.monotonic() + 300
    while not (second / "checkpoint.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=60)
    assert (second / "checkpoint.pt").exists(), stderr.decode()
    killed = {
        "first": snapshot(out / "seed-0" / "none"),
        "second_epoch": load_checkpoint(second / "checkpoint.pt")["epoch"],
        "second_first_epoch": metrics(second)[0],
        "later_runs_started": [(out / f"seed-1/{arm}").exists() for arm in ("none", "cutmix")],
    }
    out = out.rename(out.with_name("demo"))  # the recorded --init path no longer exists
    code, stdout, stderr = run_main([*ARGS, "--out", str(out)])
    assert code == 0, stderr
    return out, killed, stdout


def test_killed_comparison_resumes_without_redoing_finished_runs(comparison):
    out, killed, stdout = comparison
    assert killed["second_epoch"] == 1, "the comparison was not killed inside its second run"
    assert killed["later_runs_started"] == [False, False]
    # The finished run was skipped: not a byte nor an mtime changed.
    assert snapshot(out / "seed-0" / "none") == killed["first"]
    # The unfinished run resumed after its checkpointed epoch instead of starting again.
    assert f"resuming {out / 'seed-0' / 'cutmix'} after epoch 1 of 2" in stdout
    assert metrics(out / "seed-0" / "cutmix")[0] == killed["second_first_epoch"]
    for seed, arm in RUNS:
        run = out / f"seed-{seed}" / arm
        summary = json.loads((run / "summary.json").read_text())
        assert summary["finished"] and [m["epoch"] for m in metrics(run)] == [1, 2], run
    assert "cutmix − none" in stdout and "report:" in stdout


def test_report_numbers_match_the_runs_metrics(comparison):
    out, _, _ = comparison
    report = json.loads((out / "report.json").read_text())
    final = {(seed, arm): metrics(out / f"seed-{seed}" / arm)[-1] for seed, arm in RUNS}
    assert {(r["seed"], r["arm"]): r["test_acc"] for r in report["runs"]} == {
        key: m["test_acc"] for key, m in final.items()
    }
    md = (out / "report.md").read_text()
    for arm in ("none", "cutmix"):
        values = [final[(seed, arm)]["test_acc"] for seed in (0, 1)]
        stats = report["per_arm"][arm]["test_acc"]
        assert stats["n"] == 2
        assert stats["mean"] == pytest.approx(np.mean(values))
        assert stats["std"] == pytest.approx(np.std(values, ddof=1))
        assert f"{100 * np.mean(values):.2f} ± {100 * np.std(values, ddof=1):.2f} % (n = 2)" in md
        walls = [
            json.loads((out / f"seed-{s}" / arm / "summary.json").read_text())["wall_time"] for s in (0, 1)
        ]
        assert report["per_arm"][arm]["wall_time"]["mean"] == pytest.approx(np.mean(walls))
    diffs = [final[(s, "cutmix")]["test_acc"] - final[(s, "none")]["test_acc"] for s in (0, 1)]
    paired = report["paired"]["cutmix"]["test_acc"]
    assert paired["differences"] == pytest.approx(diffs)
    # n = 2: t(0.975, 1) = 12.706205.
    assert paired["half_width"] == pytest.approx(12.706205 * np.std(diffs, ddof=1) / np.sqrt(2), rel=1e-6)
    # The interval and its verdict worked out here from the per-seed differences, not from the
    # report's own bounds.
    low, high = scipy_stats.t.interval(0.95, len(diffs) - 1, loc=np.mean(diffs), scale=scipy_stats.sem(diffs))
    assert (paired["low"], paired["high"]) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert paired["verdict"] == ("not significant" if low <= 0 <= high else "interval excludes 0")
    assert f"| cutmix − none | 2 | {100 * np.mean(diffs):+.2f} pp |" in md
    assert (
        "| fine-0deg |" in md and "cutmix compare" in md and report["versions"]["torch"] == torch.__version__
    )
    assert "Keras example" not in md  # synthetic data: the seed's CIFAR-10 figures do not apply
    for name in ("curves.png", "preview.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size[0] > 500


def test_every_arm_of_a_seed_starts_from_the_same_weights(comparison):
    out, _, _ = comparison
    inits = {}
    for seed, arm in RUNS:
        run = out / f"seed-{seed}" / arm
        config = json.loads((run / "config.json").read_text())["config"]
        assert config["seed"] == seed and config["mix"] == arm
        # The seed's shared file (seed-0/none recorded it before the folder was moved).
        assert Path(config["init"]).parts[-2:] == (f"seed-{seed}", "init.pt")
        inits[(seed, arm)] = torch.load(run / "init.pt", weights_only=True)
    for seed in (0, 1):
        a, b = inits[(seed, "none")], inits[(seed, "cutmix")]
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(inits[(0, "none")]["stem.0.weight"], inits[(1, "none")]["stem.0.weight"])


def test_same_command_again_trains_nothing(comparison):
    out, _, _ = comparison
    before = {key: snapshot(out / f"seed-{key[0]}" / key[1]) for key in RUNS}
    code, stdout, stderr = run_main([*ARGS, "--out", str(out)])
    assert code == 0, stderr
    assert "resuming" not in stdout
    assert {key: snapshot(out / f"seed-{key[0]}" / key[1]) for key in RUNS} == before


def test_other_options_are_refused_and_force_starts_afresh(comparison, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(comparison[0], out)
    before = {key: snapshot(out / f"seed-{key[0]}" / key[1]) for key in RUNS}
    code, _, stderr = run_main([*ARGS, "--lr", "0.01", "--out", str(out)])
    assert code == 2
    assert f"{out / 'seed-0' / 'none'}: lr: 0.001 -> 0.01" in stderr
    assert f"{out / 'seed-1' / 'cutmix'}: lr: 0.001 -> 0.01" in stderr
    assert "--force" in stderr
    assert {key: snapshot(out / f"seed-{key[0]}" / key[1]) for key in RUNS} == before

    # --force redoes the runs of this comparison (seed 0 only, 1 epoch); seed 1 is not part of it.
    forced = ["compare", *TINY, "--epochs", "1", "--lr", "0.01", "--seeds", "1", "--out", str(out), "--force"]
    code, stdout, stderr = run_main(forced)
    assert code == 0, stderr
    for arm in ("none", "cutmix"):
        run = out / "seed-0" / arm
        assert json.loads((run / "config.json").read_text())["config"]["lr"] == 0.01
        assert [m["epoch"] for m in metrics(run)] == [1]
        assert snapshot(out / "seed-1" / arm) == before[(1, arm)]
    report = json.loads((out / "report.json").read_text())
    assert report["seeds"] == [0] and report["per_arm"]["none"]["test_acc"]["std"] is None
    assert report["paired"]["cutmix"]["test_acc"]["verdict"] == "n/a"
    assert "± n/a % (n = 1)" in (out / "report.md").read_text()


def test_a_foreign_folder_is_not_mixed_in(tmp_path):
    out = tmp_path / "cmp"
    (out / "seed-0" / "none").mkdir(parents=True)
    (out / "seed-0" / "none" / "notes.txt").write_text("mine")
    code, _, stderr = run_main([*ARGS, "--seeds", "1", "--out", str(out)])
    assert code == 2 and "seed-0/none: no readable compare-run.json: not a run of a comparison" in stderr
    assert (out / "seed-0" / "none" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mix", "cutmix"], "--mix: compare takes its mixing ops from --arms, got --mix cutmix"),
        (
            ["--arms", "none,cutmixx"],
            "--arms: 'cutmixx': expected a mixing op among none, cutmix, mixup, cutout",
        ),
        (["--arms", "none,none"], "--arms: expected each arm once, got 'none' and 'none'"),
        (["--arms", ","], "--arms: expected a comma-separated list"),
        (["--seeds", "0"], "--seeds: expected an integer >= 1, got 0"),
        (["--epochs", "0"], "--epochs: expected an integer >= 1, got 0"),
    ],
)
def test_bad_options_are_user_errors(tmp_path, extra, message):
    code, _, stderr = run_main(["compare", *TINY, *extra, "--out", str(tmp_path / "cmp")])
    assert code == 2 and message in stderr
    assert not (tmp_path / "cmp").exists()


def test_arms_hash_and_command_line():
    assert [arm.name for arm in parse_arms(" none, cutmix ,mixup")] == ["none", "cutmix", "mixup"]
    base = resolve_config("seed", data="synthetic")
    assert config_hash(base) == config_hash(resolve_config("seed", data="synthetic"))
    assert config_hash(base) != config_hash(resolve_config("seed", data="synthetic", lr=0.01))
    args = build_parser().parse_args(
        ["compare", *TINY, "--no-normalize", "--arms", "none,mixup", "--out", "o"]
    )
    again = build_parser().parse_args(command_from_args(args))
    assert {k: v for k, v in vars(again).items() if k != "func"} == {
        k: v for k, v in vars(args).items() if k != "func"
    }
