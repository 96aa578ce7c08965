"""`cutmix compare` where users stand (issue 17): an arm that never mixes, a recipe's value the user
never typed, an --out holding the user's files, --force beside a live comparison, data errors under
--jobs N, --stop-on-divergence, and the help text."""

from __future__ import annotations

import argparse
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

import cutmix
from cutmix.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--data", "synthetic:256", "--depth", "8", "--batch-size", "64", "--device", "cpu", "--quiet"]
ONE = ["compare", *TINY, "--epochs", "1", "--seeds", "1", "--arms", "none,cutmix"]
ARMS = ("none", "cutmix")
# A helper process that holds the lock of a folder (as a comparison or a trainer does), written
# without the code under test: flock on FOLDER/.lock with its pid in it, until stdin closes.
HOLD_LOCK = (
    "import fcntl, os, sys\n"
    "handle = open(os.path.join(sys.argv[1], '.lock'), 'a+')\n"
    "fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
    "handle.seek(0); handle.truncate(); handle.write(str(os.getpid())); handle.flush()\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
)


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> contents)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def child_env() -> dict[str, str]:
    # The processes started here import the cutmix under test, wherever it is installed.
    source = str(Path(cutmix.__file__).resolve().parents[1])
    return dict(
        os.environ, PYTHONPATH=source + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1"
    )


@contextlib.contextmanager
def lock_held_by_another_process(folder: Path):
    """Yields the pid of a process holding ``folder``'s lock; it lets go on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, one_thread):
    """A finished 1-epoch comparison (seed 0, none and cutmix), and the same with 2 epochs."""
    folders = {}
    for epochs in (1, 2):
        out = tmp_path_factory.mktemp("finished") / f"epochs-{epochs}"
        code, _, stderr = run_main(
            ["compare", *TINY, "--epochs", str(epochs), "--seeds", "1", "--out", str(out)]
        )
        assert code == 0, stderr
        folders[epochs] = out
    return folders


def copy_of(folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(folder, out)
    return out


# ------------------------------------------------------------------------------------------------
# Item 5: a mixing arm that never mixes; item 14: a value the recipe set
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        # mix-off epochs 2 = epochs: the cutmix arm would train exactly as none.
        (["--recipe", "fast", "--epochs", "2"],
         "--mix-off-epochs: expected fewer than --epochs 2 with mix cutmix, got 2, the value --recipe fast "
         "sets unless --mix-off-epochs is given"),
        (["--epochs", "2", "--mix-off-epochs", "2"], "--mix-off-epochs: expected fewer than --epochs 2 with mix cutmix"),
        (["--epochs", "1", "--mix-p", "0"], "--mix-p: expected a number in (0, 1] with mix cutmix, got 0.0"),
        (["--epochs", "1", "--arms", "none,cutout", "--cutout-size", "0"],
         "--cutout-size: expected an integer >= 1 with mix cutout, got 0"),
    ],
)  # fmt: skip
def test_a_mixing_arm_that_never_mixes_is_refused_before_anything_trains(tmp_path, extra, message):
    out = tmp_path / "cmp"
    code, _, stderr = run_main(["compare", *TINY, "--seeds", "1", *extra, "--out", str(out)])
    assert code == 2, stderr
    assert message in stderr and "would never mix" in stderr
    assert len(stderr.splitlines()) == 1 and not out.exists()


def test_a_none_arm_without_mixing_epochs_is_still_accepted():
    from cutmix.training.config import resolve_config

    config = resolve_config("fast", data="synthetic", epochs=2)  # no mixing op: nothing to switch off
    assert (config.mix, config.mix_off_epochs, config.epochs) == ("none", 2, 2)


@pytest.mark.parametrize("command", ["compare", "train"])
def test_a_value_from_the_recipe_is_named_with_what_to_pass(tmp_path, command):
    out = tmp_path / "out"
    code, _, stderr = run_main([command, *TINY, "--recipe", "fast", "--epochs", "1", "--out", str(out)])
    assert code == 2, stderr
    assert "--mix-off-epochs: expected 0..1 (--epochs 1), got 2, the value --recipe fast sets unless " \
           "--mix-off-epochs is given; pass --mix-off-epochs 0, or --epochs 3 or more" in stderr  # fmt: skip
    assert not out.exists()
    # What it says to pass is accepted (the cutmix arm then mixes in its one epoch).
    from cutmix.training.config import resolve_config

    assert (
        resolve_config("fast", data="synthetic", mix="cutmix", epochs=1, mix_off_epochs=0).mix_off_epochs == 0
    )


def test_the_committed_runs_still_validate_and_keep_their_hash():
    from cutmix.experiment.plan import config_hash
    from cutmix.training.config import TrainConfig

    configs = sorted((ROOT / "docs" / "results").glob("*/seed-*/*/config.json"))
    if not configs:
        pytest.skip("no committed run records in this checkout")
    for path in configs:
        recorded = json.loads(path.read_text())["config"]
        config = TrainConfig(**{**recorded, "init": None}).validate()  # refused today: none of them
        assert config_hash(config) == config_hash(TrainConfig(**recorded)), path
    # The hashes themselves, as the code at 76de277 wrote them into these runs' compare-run.json
    # (~/cutmix-runs, retrained 2026-12-01): a run started before a change resumes after it.
    hashes = {
        str(path.parent.relative_to(ROOT / "docs" / "results")): config_hash(
            TrainConfig(**json.loads(path.read_text())["config"])
        )
        for path in configs
    }
    assert hashes == COMMITTED_RUN_HASHES


COMMITTED_RUN_HASHES = {
    "fast-recipe/seed-0/cutmix": "0f770a0fa5f00f9395fd35797d0f5d3af07fe8168e8e095e81d4721a80a0b811",
    "fast-recipe/seed-0/none": "1b5483ee2f08f40905c17e945b5c5a47d4141d471be69775ef64e7ad63c1a108",
    "fast-recipe/seed-1/cutmix": "285e05dc440da3006eaf9fc3ab7e1b707212186c08bad54e52ef0be40db91db3",
    "fast-recipe/seed-1/none": "3af17004efc86c152ad894858e0d2b8adc9f35e6f48225fa607ffc987584194d",
    "fast-recipe/seed-2/cutmix": "74d0aa6f5b240913452779f3476d99c8ef4e4404beaeba3df70b43bdbbadba38",
    "fast-recipe/seed-2/none": "6edd0d0dbac119cce32218a921dc1265d289c0045b4962a26b79fcb295a0a429",
    "seed-recipe/seed-0/cutmix": "bed1f30186b91a88c65f0e034bf478bfb13ebfad61d538e97483f61062d18ac5",
    "seed-recipe/seed-0/none": "c025bb48678fce6129990e9242ed69bff9866553817585a6b1586935d983a8c2",
    "seed-recipe/seed-1/cutmix": "aaf54e128b18e56d1cc3e0d52f4d57d89bc28e2bcba0d4bdb4024f5a013a5984",
    "seed-recipe/seed-1/none": "ba5693a2d9dd4f7bf7129dd8f3533bcf46cdf74155a1b3a99854a251c0a214f7",
    "seed-recipe/seed-2/cutmix": "6d1444281ff3c62186850c0d48773e7cdc4af5b53d8240a688917783b9723b12",
    "seed-recipe/seed-2/none": "92b5b45d7049ed5a0b544bb725ae7f78522eed804080b922c3df0675589fff14",
}


# ------------------------------------------------------------------------------------------------
# Items 9 and 16: --out over what compare did not write
# ------------------------------------------------------------------------------------------------


def _own_report(out: Path) -> None:
    out.mkdir()
    (out / "report.md").write_text("# My notes\nthe numbers I worked out by hand\n")


def _own_file(out: Path) -> None:
    out.mkdir()
    (out / "notes.txt").write_text("mine")


def _own_report_json(out: Path) -> None:
    out.mkdir()
    (out / "report.json").write_text('{"accuracy": 0.9}\n')


def _own_file_in_a_seed_folder(out: Path) -> None:
    (out / "seed-0").mkdir(parents=True)
    (out / "seed-0" / "notes.txt").write_text("mine")


@pytest.mark.parametrize(
    ("make", "named"),
    [(_own_report, "report.md"), (_own_file, "notes.txt"), (_own_report_json, "report.json"),
     (_own_file_in_a_seed_folder, "seed-0/notes.txt")],
)  # fmt: skip
def test_an_out_folder_holding_the_users_files_is_refused(tmp_path, make, named):
    out = tmp_path / "mine"
    make(out)
    before, entries = snapshot(out), sorted(out.rglob("*"))
    code, _, stderr = run_main([*ONE, "--out", str(out)])
    assert code == 2, stderr
    assert stderr.startswith("cutmix compare: error: --out: ") and f"{out / named}: " in stderr
    assert "--force" in stderr and "Traceback" not in stderr
    assert snapshot(out) == before and sorted(out.rglob("*")) == entries  # nothing written, nothing added


def test_force_writes_into_a_folder_holding_the_users_files(tmp_path):
    out = tmp_path / "mine"
    _own_file(out)
    code, _, stderr = run_main([*ONE, "--out", str(out), "--force"])
    assert code == 0, stderr
    assert (out / "notes.txt").read_text() == "mine"  # written beside, not deleted
    assert json.loads((out / "report.json").read_text())["arms"] == list(ARMS)


def test_a_comparison_of_ours_is_extended_without_force(finished, tmp_path):
    out = copy_of(finished[1], tmp_path)
    before = snapshot(out / "seed-0")
    code, _, stderr = run_main([*ONE, "--seeds", "2", "--out", str(out)])  # one more seed
    assert code == 0, stderr
    assert {k: v for k, v in snapshot(out / "seed-0").items() if k.endswith(("summary.json", "checkpoint.pt"))} == {
        k: v for k, v in before.items() if k.endswith(("summary.json", "checkpoint.pt"))
    }  # fmt: skip
    assert json.loads((out / "report.json").read_text())["seeds"] == [0, 1]


def test_an_out_that_is_a_file_is_a_one_line_error_naming_out(tmp_path):
    out = tmp_path / "results.txt"
    out.write_text("mine")
    code, _, stderr = run_main([*ONE, "--out", str(out)])
    assert code == 2
    assert (
        stderr == f"cutmix compare: error: --out: expected a folder for the comparison, got a file: {out}\n"
    )
    assert out.read_text() == "mine"
    code, _, stderr = run_main([*ONE, "--out", str(out), "--force"])  # --force does not make it a folder
    assert code == 2 and "--out: expected a folder" in stderr and out.read_text() == "mine"


# ------------------------------------------------------------------------------------------------
# Item 10: --force beside a live comparison; "finished" from the run's own records
# ------------------------------------------------------------------------------------------------


def test_force_refuses_an_out_whose_comparison_lock_is_held(finished, tmp_path):
    out = copy_of(finished[1], tmp_path)
    before = snapshot(out / "seed-0")
    with lock_held_by_another_process(out) as pid:
        code, _, stderr = run_main([*ONE, "--lr", "0.01", "--out", str(out), "--force"])
    assert code == 2, stderr
    assert f"--out: expected a comparison folder no other comparison is using, but process {pid}" in stderr
    assert snapshot(out / "seed-0") == before  # nothing deleted, nothing trained


def test_force_refuses_a_run_folder_whose_lock_is_held(finished, tmp_path):
    out = copy_of(finished[1], tmp_path)
    before = snapshot(out / "seed-0")
    with lock_held_by_another_process(out / "seed-0" / "cutmix") as pid:
        code, _, stderr = run_main([*ONE, "--lr", "0.01", "--out", str(out), "--force"])
    assert code == 2, stderr
    assert "--force: refusing to delete a run folder in use" in stderr and f"process {pid}" in stderr
    # Refused before any folder was deleted: seed-0/none (not locked) is intact too.
    assert {k: v for k, v in snapshot(out / "seed-0").items() if not k.endswith(".lock")} == {
        k: v for k, v in before.items() if not k.endswith(".lock")
    }


def _lock_held(folder: Path) -> bool:
    import fcntl

    if not (folder / ".lock").exists():
        return False
    with open(folder / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def test_force_beside_a_running_comparison_is_refused_and_the_running_one_goes_on(tmp_path):
    out = tmp_path / "shared"
    first = subprocess.Popen(
        [sys.executable, "-m", "cutmix", "compare", *TINY, "--epochs", "40", "--seeds", "2", "--jobs", "2",
         "--threads", "1", "--out", str(out)],
        env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    runs = [out / "seed-0" / arm for arm in ARMS]
    try:
        deadline = time.monotonic() + 300
        while not all(_lock_held(r) for r in runs) or not all((r / "config.json").exists() for r in runs):
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read().decode()
            time.sleep(0.05)
        # Seed 1 waits in the first comparison's queue: its folders hold no lock of their own.
        code, _, stderr = run_main(
            ["compare", *TINY, "--epochs", "3", "--seeds", "2", "--out", str(out), "--force"]
        )
        assert code == 2, stderr
        assert (
            f"--out: expected a comparison folder no other comparison is using, but process {first.pid}"
            in stderr
        )
        assert first.poll() is None, "the first comparison was disturbed"
        for run in runs:
            assert json.loads((run / "config.json").read_text())["config"]["epochs"] == 40
            assert "started by process" in (run / "train.log").read_text()
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    assert first.returncode == 130  # stopped by the test, not failed by the second comparison


def test_a_finished_run_counts_only_with_its_own_records_of_this_configuration(finished, tmp_path):
    # The state the issue found: another comparison's 2-epoch run finished in a folder whose
    # compare-run.json (written before training) says 1 epoch.
    out = copy_of(finished[1], tmp_path)
    run = out / "seed-0" / "none"
    for name in ("config.json", "metrics.jsonl", "summary.json", "checkpoint.pt"):
        shutil.copyfile(finished[2] / "seed-0" / "none" / name, run / name)
    code, _, stderr = run_main([*ONE, "--out", str(out)])
    assert code == 2, stderr
    assert f"{run}: config.json: epochs: 2 -> 1" in stderr
    assert (out / "report.json").read_text() == (finished[1] / "report.json").read_text()  # not rewritten

    # Only the checkpoint is another configuration's.
    out = tmp_path / "checkpoint"
    shutil.copytree(finished[1], out)
    shutil.copyfile(
        finished[2] / "seed-0" / "none" / "checkpoint.pt", out / "seed-0" / "none" / "checkpoint.pt"
    )
    code, _, stderr = run_main([*ONE, "--out", str(out)])
    assert code == 2 and f"{out / 'seed-0' / 'none'}: checkpoint.pt: epochs: 2 -> 1" in stderr

    # --force redoes it: the report then holds the 1-epoch run's own number.
    code, _, stderr = run_main([*ONE, "--out", str(out), "--force"])
    assert code == 0, stderr
    final = json.loads((out / "seed-0" / "none" / "metrics.jsonl").read_text().splitlines()[-1])
    report = json.loads((out / "report.json").read_text())
    assert [
        m["epoch"] for m in map(json.loads, (out / "seed-0/none/metrics.jsonl").read_text().splitlines())
    ] == [1]
    assert {r["arm"]: r["test_acc"] for r in report["runs"]}["none"] == final["test_acc"]


def test_runs_restored_from_committed_records_still_count(finished, tmp_path):
    records = tmp_path / "records"
    for arm in ARMS:
        (records / "seed-0" / arm).mkdir(parents=True)
        for name in ("config.json", "metrics.jsonl", "summary.json", "model.safetensors"):
            shutil.copyfile(finished[1] / "seed-0" / arm / name, records / "seed-0" / arm / name)
        (records / "seed-0" / arm / "robustness").mkdir()
        (records / "seed-0" / arm / "robustness" / "robustness.json").write_text(f'{{"arm": "{arm}"}}')
    out = tmp_path / "restored"
    restore = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "restore_runs.py"), str(records), str(out), "--", *TINY,
         "--epochs", "1"],
        env=child_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert restore.returncode == 0, restore.stdout + restore.stderr
    code, stdout, stderr = run_main([*ONE, "--out", str(out)])
    assert code == 0, stderr
    for arm in ARMS:
        assert not (out / "seed-0" / arm / "checkpoint.pt").exists()  # counted, not trained again
        for name in ("model.safetensors", "robustness/robustness.json"):
            assert (out / "seed-0" / arm / name).read_bytes() == (
                records / "seed-0" / arm / name
            ).read_bytes()
    report = json.loads((out / "report.json").read_text())
    expected = json.loads((finished[1] / "report.json").read_text())
    assert {r["arm"]: r["test_acc"] for r in report["runs"]} == {
        r["arm"]: r["test_acc"] for r in expected["runs"]
    }


# ------------------------------------------------------------------------------------------------
# Item 12: what depends on the data is checked before any child starts
# ------------------------------------------------------------------------------------------------


def _image_tree(root: Path, size: int) -> str:
    rng = np.random.default_rng(0)
    for split, count in (("train", 40), ("test", 8)):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i:03d}.png")
    return str(root)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--val", "300"], "--val: expected fewer than the 256 training images, got 300"),
        (["--batch-size", "512"], "--batch-size: expected at most the 256 training images, got 512"),
        (["--val", "200"], "--batch-size: expected at most the 56 training images, got 64"),
        (["--data", "IMAGES16"], "--data: expected 32x32 images for the CIFAR ResNet, got 16x16"),
    ],
)
def test_data_errors_under_jobs_are_one_line_before_any_run_starts(tmp_path, monkeypatch, extra, message):
    monkeypatch.setenv("CUTMIX_DATA_DIR", str(tmp_path / "cache"))
    extra = [_image_tree(tmp_path / "images", 16) if a == "IMAGES16" else a for a in extra]
    out = tmp_path / "cmp"
    for jobs in ("2", "1"):
        code, _, stderr = run_main([*ONE, *extra, "--jobs", jobs, "--out", str(out)])
        assert code == 2, stderr
        assert message in stderr and len(stderr.splitlines()) == 1, stderr
        assert not (out / "seed-0").exists()  # no run folder, no child started


def test_a_child_user_error_is_one_line_and_its_log_is_shown_once(finished, tmp_path):
    out = copy_of(finished[1], tmp_path)
    broken = out / "seed-0" / "none"
    (broken / "summary.json").unlink()
    (broken / "checkpoint.pt").write_bytes(b"not a checkpoint")
    code, _, stderr = run_main([*ONE, "--jobs", "2", "--threads", "1", "--out", str(out)])
    assert code == 1
    assert f"seed 0 none ({broken}) failed: exit status 2; last lines of its log:" in stderr
    assert "Traceback" not in stderr and stderr.count("last lines of its log") == 1
    tail = stderr.split("last lines of its log:", 1)[1]
    assert f"cutmix compare: error: {broken / 'checkpoint.pt'}: " in tail


# ------------------------------------------------------------------------------------------------
# Item 13: the help, and --stop-on-divergence
# ------------------------------------------------------------------------------------------------


def test_compare_help_prints_percent_signs_once_and_says_when_it_exits_3():
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = subparsers.choices["compare"]
    text = " ".join(parser.format_help().split())
    assert "95% t-intervals" in text and "%%" not in text
    option = " ".join(parser._option_string_actions["--stop-on-divergence"].help.split())
    assert "exit with status 3" in option and "report is written" in option
    assert " ".join(option.replace("%%", "%").split()) in text  # as printed


def test_stop_on_divergence_writes_the_whole_report_then_exits_3(tmp_path):
    out = tmp_path / "diverged"
    code, stdout, stderr = run_main(["compare", *TINY, "--epochs", "3", "--seeds", "1", "--optimizer", "sgd",
                                     "--lr", "1e6", "--l2", "0", "--stop-on-divergence", "--out", str(out)])  # fmt: skip
    assert code == 3, stderr
    report = json.loads((out / "report.json").read_text())
    assert report["any_diverged"] and all(r["diverged"] and r["epochs_completed"] < 3 for r in report["runs"])
    for name in ("report.md", "curves.png", "preview.png"):
        assert (out / name).is_file(), name
    assert "WARNING: some runs diverged" in stdout
    # Without the flag, the same diverged comparison is reported with exit status 0, as train does.
    code, _, stderr = run_main(["compare", *TINY, "--epochs", "3", "--seeds", "1", "--optimizer", "sgd",
                                "--lr", "1e6", "--l2", "0", "--out", str(tmp_path / "plain")])  # fmt: skip
    assert code == 0, stderr
