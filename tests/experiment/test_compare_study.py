"""A study on `synthetic`: arms with options of their own, ``--baseline``, ``--vary``, and `cutmix report`
rebuilding the reports from the run folders; the refusals made before anything trains."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from cutmix.cli import main
from cutmix.experiment.plan import initial_weights
from cutmix.training.checkpoint import load_weights
from cutmix.training.config import resolve_config

TINY = ["--data", "synthetic:128", "--depth", "8", "--batch-size", "64", "--device", "cpu", "--quiet"]
# Two arms (one with an option of its own, the baseline, written in another spelling than in --arms),
# two seeds, two values of --epochs: eight runs of a second or two each.
STUDY = ["compare", *TINY, "--arms", "none,cutmix:p=0.5:alpha=0.5", "--baseline", "cutmix:alpha=.5:p=.5",
         "--seeds", "2", "--vary", "epochs=1,2"]  # fmt: skip
ARM = "cutmix_alpha=0.5_p=0.5"
VALUES = {"epochs=1": 1, "epochs=2": 2}
PNG = b"\x89PNG\r\n\x1a\n"


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def final_acc(run: Path) -> float:
    return json.loads((run / "summary.json").read_text())["test_acc"]


def reports(out: Path) -> dict[str, dict]:
    """report.json of the study and of each value, without what says who wrote it."""
    found = {"": json.loads((out / "report.json").read_text())}
    for folder in VALUES:
        found[folder] = json.loads((out / folder / "report.json").read_text())
    for report in found.values():
        for key in ("report_rebuilt_by", "unfinished_runs"):
            report.pop(key, None)
    return found


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("study") / "out"
        code, stdout, stderr = run_main([*STUDY, "--out", str(out)])
        assert code == 0, stderr
        yield out, stdout
    finally:
        torch.set_num_threads(before)


def test_layout_configs_and_initial_weights(study):
    out, _ = study
    base = resolve_config("seed", data="synthetic:128", depth=8)
    for folder, epochs in VALUES.items():
        for seed in (0, 1):
            seed_dir = out / folder / f"seed-{seed}"
            # Each value has its own initial weights per seed, the ones a run of that seed starts from.
            expected = initial_weights(resolve_config("seed", data="synthetic:128", depth=8, seed=seed), 10)
            weights = load_weights(seed_dir / "init.pt")
            assert all(torch.equal(weights[k], v) for k, v in expected.items())
            for arm in ("none", ARM):
                config = json.loads((seed_dir / arm / "config.json").read_text())["config"]
                assert config["epochs"] == epochs and config["seed"] == seed
                assert config["mix"] == ("none" if arm == "none" else "cutmix")
                # The arm's own options; the rest from the recipe (seed: alpha 0.25, p 1).
                assert (config["alpha"], config["mix_p"]) == (
                    (base.alpha, base.mix_p) if arm == "none" else (0.5, 0.5)
                )
                record = json.loads((seed_dir / arm / "compare-run.json").read_text())
                assert (record["arm"], record["seed"]) == (arm, seed)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(VALUES)


def test_paired_differences_against_the_baseline_per_value(study):
    out, stdout = study
    top = json.loads((out / "report.json").read_text())
    assert top["baseline"] == ARM and top["vary"] == {"key": "epochs", "values": [1, 2]}
    assert list(top["effects"]) == ["none"]
    md = (out / "report.md").read_text()
    for i, folder in enumerate(VALUES):
        diffs = [final_acc(out / folder / f"seed-{s}" / "none") - final_acc(out / folder / f"seed-{s}" / ARM)
                 for s in (0, 1)]  # fmt: skip
        low, high = scipy_stats.t.interval(0.95, 1, loc=np.mean(diffs), scale=scipy_stats.sem(diffs))
        effect = top["effects"]["none"][i]
        assert effect["value"] == VALUES[folder] and effect["n"] == 2
        assert effect["mean"] == pytest.approx(np.mean(diffs), abs=1e-12)
        assert (effect["low"], effect["high"]) == (
            pytest.approx(low, abs=1e-12),
            pytest.approx(high, abs=1e-12),
        )
        value_report = json.loads((out / folder / "report.json").read_text())
        assert value_report["baseline"] == ARM and list(value_report["paired"]) == ["none"]
        assert value_report["paired"]["none"]["test_acc"]["differences"] == pytest.approx(diffs)
        assert value_report["epochs"] == VALUES[folder] and value_report["group"] == folder
        assert f"| [{VALUES[folder]}]({folder}/report.md) | {100 * np.mean(diffs):+.2f} pp" in md
        value_md = (out / folder / "report.md").read_text()
        assert f"## Paired differences against `{ARM}`" in value_md
        assert f"`{ARM}` = `--arms cutmix:p=0.5:alpha=0.5`" in value_md
        assert f"epochs={VALUES[folder]} none: " in stdout
        for name in ("curves.png", "preview.png", f"preview-{ARM}.png"):
            assert (out / folder / name).read_bytes().startswith(PNG)
    assert (out / "effect.png").read_bytes().startswith(PNG)
    assert f"none − {ARM}" in md


def test_same_command_again_trains_nothing_and_report_rebuilds_the_same(study, tmp_path):
    out, _ = study
    before = reports(out)
    metrics = {p: p.stat().st_mtime_ns for p in out.glob("*/seed-*/*/metrics.jsonl")}
    assert len(metrics) == 8
    code, _, stderr = run_main([*STUDY, "--out", str(out)])
    assert code == 0, stderr
    assert {p: p.stat().st_mtime_ns for p in metrics} == metrics
    copy = tmp_path / "copied"
    shutil.copytree(out, copy)
    for name in ("report.json", "report.md", "effect.png"):
        (copy / name).unlink()
    code, stdout, stderr = run_main(["report", str(copy)])
    assert code == 0, stderr
    assert f"report: {copy / 'report.md'}" in stdout
    rebuilt = reports(copy)
    for key, report in before.items():
        # Run folders are named relative to each report's folder, so a copied study reads the same.
        assert rebuilt[key] == report, key
    assert json.loads((copy / "report.json").read_text())["report_rebuilt_by"] == f"cutmix report {copy}"


def test_report_leaves_out_and_names_unfinished_runs(study, tmp_path):
    out, _ = study
    copy = tmp_path / "partial"
    shutil.copytree(out, copy)
    unfinished = copy / "epochs=2" / "seed-1" / "none"
    (unfinished / "summary.json").unlink()
    code, _, stderr = run_main(["report", str(copy)])
    assert code == 0 and f"not finished, left out: {unfinished}" in stderr
    value = json.loads((copy / "epochs=2" / "report.json").read_text())
    assert value["per_arm"]["none"]["test_acc"]["n"] == 1 and value["paired"]["none"]["test_acc"]["n"] == 1
    assert value["unfinished_runs"] == [str(unfinished)]
    assert f"Not finished, left out: `{unfinished}`" in (copy / "epochs=2" / "report.md").read_text()
    # A run folder copied in from a comparison with other options is not mixed into the statistics.
    copied_in = copy / "epochs=1" / "seed-1" / "none" / "compare-run.json"
    record = json.loads(copied_in.read_text())
    record["options"]["lr"] = 0.5
    copied_in.write_text(json.dumps(record))
    code, _, stderr = run_main(["report", str(copy)])
    assert (
        code == 2
        and f"{copied_in}: expected the options of {copy / 'epochs=1' / 'seed-0' / 'none'}" in stderr
    )
    assert "lr: 0.001 -> 0.5" in stderr
    record["options"]["lr"] = 0.001
    copied_in.write_text(json.dumps(record))
    # An arm with no finished run at a value: nothing to report for it, said so.
    shutil.rmtree(copy / "epochs=2" / "seed-0" / "none")
    code, _, stderr = run_main(["report", str(copy)])
    assert code == 2 and "expected at least one finished run per arm, got none for none" in stderr


def test_report_of_a_folder_compare_did_not_write(tmp_path):
    code, _, stderr = run_main(["report", str(tmp_path)])
    assert code == 2
    assert (
        f"{tmp_path}: expected a comparison folder that cutmix compare wrote (with comparison.json)" in stderr
    )
    (tmp_path / "comparison.json").write_text("{}")
    code, _, stderr = run_main(["report", str(tmp_path)])
    assert code == 2 and "expected a comparison record of format 1" in stderr


def test_a_plain_comparison_with_a_baseline_and_its_rebuild(tmp_path):
    out = tmp_path / "plain"
    argv = ["compare", *TINY, "--epochs", "1", "--arms", "none,cutmix,mixup:alpha=0.4", "--baseline", "cutmix",
            "--seeds", "1", "--out", str(out)]  # fmt: skip
    code, stdout, stderr = run_main(argv)
    assert code == 0, stderr
    # The plain layout: no value folders, arms named by their op where they have no options.
    assert sorted(p.name for p in (out / "seed-0").iterdir()) == [
        "cutmix",
        "init.pt",
        "mixup_alpha=0.4",
        "none",
    ]
    report = json.loads((out / "report.json").read_text())
    assert report["baseline"] == "cutmix" and sorted(report["paired"]) == ["mixup_alpha=0.4", "none"]
    diff = final_acc(out / "seed-0" / "mixup_alpha=0.4") - final_acc(out / "seed-0" / "cutmix")
    assert report["paired"]["mixup_alpha=0.4"]["test_acc"]["mean"] == pytest.approx(diff, abs=1e-12)
    assert "mixup_alpha=0.4 − cutmix" in stdout
    before = {k: v for k, v in report.items()}
    (out / "report.json").unlink()
    code, _, stderr = run_main(["report", str(out)])
    assert code == 0, stderr
    after = json.loads((out / "report.json").read_text())
    for key in ("report_rebuilt_by", "unfinished_runs"):
        after.pop(key)
    assert after == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--arms", "none,cutmix:alpha=0"], "--arms: 'cutmix:alpha=0': --alpha: expected a finite number > 0"),
        (["--arms", "cutmix,cutmix:alpha=0.25"], "which resolve to the same configuration"),
        (["--arms", "none,cutmix", "--baseline", "mixup"], "--baseline: expected one of the arms (none, cutmix)"),
        (["--vary", "epochs=1"], "--vary: expected at least two values for epochs"),
        (["--vary", "depth=8,9"], "--vary depth=9: --depth: expected 6n+2"),
        (["--vary", "batch-size=64,4096"], "--vary batch-size=4096: --batch-size: expected at most the 128"),
        (["--vary", "checkpoint-every-min=1,2"], "--vary: expected KEY=V1,V2,... with KEY among"),
        (["--arms", "none,cutmix:alpha=0.5", "--vary", "alpha=0.2,1"], "expected a setting no arm sets itself"),
    ],
)  # fmt: skip
def test_bad_studies_are_refused_before_anything_is_written(tmp_path, extra, message):
    code, _, stderr = run_main(["compare", *TINY, "--epochs", "1", *extra, "--out", str(tmp_path / "cmp")])
    assert code == 2 and message in stderr
    assert not (tmp_path / "cmp").exists()


def test_the_committed_study_rebuilds_to_its_report(tmp_path):
    # docs/studies.md quotes this report: its numbers must be the ones its run records give.
    committed = Path(__file__).resolve().parents[2] / "docs" / "results" / "study-synthetic"
    copy = tmp_path / "study"
    shutil.copytree(committed, copy)
    code, _, stderr = run_main(["report", str(copy)])
    assert code == 0, stderr
    for folder in ("", "epochs=1", "epochs=2", "epochs=4", "epochs=8"):
        rebuilt = json.loads((copy / folder / "report.json").read_text())
        for key in ("report_rebuilt_by", "unfinished_runs"):
            rebuilt.pop(key)
        rebuilt.pop("paired_across_machines", None)  # added to reports after this one
        for run in rebuilt.get("runs", []):  # each run's machine: added to reports after this one
            run.pop("hardware", None)
        assert rebuilt == json.loads((committed / folder / "report.json").read_text()), folder
    md = (committed / "report.md").read_text()
    assert "| [8](epochs=8/report.md) | +0.60 pp [-0.39 pp, +1.59 pp] (n = 3, not significant) |" in md
