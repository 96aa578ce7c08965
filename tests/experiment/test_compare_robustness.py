"""`cutmix compare --robustness`: the suite for each run, cached in its folder, its table in the report
(checked against values recomputed from the runs' robustness.json), and nothing else changed."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

import cutmix.robustness
from cutmix.cli import main
from cutmix.experiment.report import render_markdown

TINY = ["--data", "synthetic:256", "--depth", "8", "--batch-size", "64", "--device", "cpu", "--quiet"]
ARGS = ["compare", *TINY, "--epochs", "1", "--arms", "none,cutmix", "--seeds", "2"]
LIMIT = 20
ROBUST = ["--robustness", "--robustness-limit", str(LIMIT)]
RUNS = [(seed, arm) for seed in (0, 1) for arm in ("none", "cutmix")]
# report.json key -> the path into a run's robustness.json (the table's rows, as issue 19 names them).
PATHS = {
    "clean_acc": ("clean", "acc"),
    "ece": ("clean", "ece"),
    "nll": ("clean", "nll"),
    "occlusion_center": ("occlusion", "center_mean"),
    "occlusion_boundary": ("occlusion", "boundary_mean"),
    "fgsm_4": ("fgsm", "4"),
    "fgsm_8": ("fgsm", "8"),
    "ood_uniform": ("ood", "uniform", "auroc"),
    "ood_gaussian": ("ood", "gaussian", "auroc"),
    "corruptions": ("corruptions", "mean"),
}


def without_versions(text: str) -> list[str]:
    """report.md's lines but the versions and hardware lines (report.json sorts its keys; report.md keeps
    the order they were recorded in)."""
    return [line for line in text.splitlines() if not line.startswith(("- versions:", "- hardware:"))]


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def mtimes(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()
    }


def suite_value(out: Path, seed: int, arm: str, key: str) -> float:
    value = json.loads((out / f"seed-{seed}" / arm / "robustness" / "robustness.json").read_text())
    for part in PATHS[key]:
        value = value[part]
    return float(value)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The same tiny comparison with --robustness (``robust``) and without it (``plain``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("compare-robustness")
    robust, plain = root / "robust", root / "plain"
    for out, extra in ((robust, ROBUST), (plain, [])):
        code, _, err = run_main([*ARGS, "--out", str(out), *extra])
        assert code == 0, err
    yield robust, plain
    torch.set_num_threads(before)


def test_every_run_evaluated_into_its_folder(folders):
    robust, plain = folders
    for seed, arm in RUNS:
        result = json.loads((robust / f"seed-{seed}" / arm / "robustness" / "robustness.json").read_text())
        assert result["n_images"] == LIMIT
        assert result["settings"]["seed"] == 0 and result["settings"]["limit"] == LIMIT
        assert result["settings"]["tta_flip"] is False
        assert result["checkpoint"].endswith("model.safetensors")
        assert not (plain / f"seed-{seed}" / arm / "robustness").exists()
    for name in ("robustness.png", "cam.png"):
        assert (robust / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert not (plain / name).exists()


def test_table_means_and_paired_differences_recomputed(folders):
    robust, _ = folders
    rob = json.loads((robust / "report.json").read_text())["robustness"]
    assert [m["key"] for m in rob["metrics"]] == list(PATHS)
    for key in PATHS:
        for arm in ("none", "cutmix"):
            values = np.array([suite_value(robust, s, arm, key) for s in (0, 1)])
            got = rob["per_arm"][arm][key]
            assert got["n"] == 2
            assert got["mean"] == pytest.approx(values.mean(), abs=1e-12)
            assert got["std"] == pytest.approx(values.std(ddof=1), abs=1e-12)
        diffs = np.array(
            [suite_value(robust, s, "cutmix", key) - suite_value(robust, s, "none", key) for s in (0, 1)]
        )
        paired = rob["paired"]["cutmix"][key]
        assert paired["differences"] == pytest.approx(list(diffs), abs=1e-12)
        assert paired["mean"] == pytest.approx(diffs.mean(), abs=1e-12)
        half = scipy_stats.t.ppf(0.975, 1) * diffs.std(ddof=1) / math.sqrt(2)
        if half > 0:
            assert paired["low"] == pytest.approx(diffs.mean() - half, abs=1e-12)
            assert paired["high"] == pytest.approx(diffs.mean() + half, abs=1e-12)
            holds_zero = diffs.mean() - half <= 0 <= diffs.mean() + half
            assert paired["verdict"] == ("not significant" if holds_zero else "interval excludes 0")
    assert "none" not in rob["paired"]


def test_markdown_section(folders):
    robust, _ = folders
    report = json.loads((robust / "report.json").read_text())
    text = (robust / "report.md").read_text()
    assert without_versions(text) == without_versions(render_markdown(report))
    assert "## Robustness and calibration" in text
    assert "without flip test-time augmentation" in text and "CIFAR-10-C-style" in text
    clean = report["robustness"]["per_arm"]["cutmix"]["clean_acc"]
    assert f"{100 * clean['mean']:.2f} ± {100 * clean['std']:.2f} % (n = 2)" in text
    assert "(robustness.png)" in text and "(cam.png)" in text
    assert "Paired differences, cutmix − none" in text
    # The section only adds lines: without it, the report renders as a report without --robustness.
    plain = render_markdown({k: v for k, v in report.items() if k != "robustness"})
    start = text.index("## Robustness and calibration")
    end = text.index("## Every run")
    assert without_versions(text[:start] + text[end:]) == without_versions(plain)


def test_config_hashes_unchanged_by_robustness(folders):
    robust, plain = folders
    for seed, arm in RUNS:
        records = [
            json.loads((out / f"seed-{seed}" / arm / "compare-run.json").read_text()) for out in folders
        ]
        assert records[0]["hash"] == records[1]["hash"]
        configs = [
            json.loads((out / f"seed-{seed}" / arm / "config.json").read_text())["config"] for out in folders
        ]
        assert {k: v for k, v in configs[0].items() if k != "init"} == {
            k: v for k, v in configs[1].items() if k != "init"
        }


def test_report_without_robustness_unchanged(folders):
    _, plain = folders
    report = json.loads((plain / "report.json").read_text())
    assert "robustness" not in report
    text = (plain / "report.md").read_text()
    assert without_versions(text) == without_versions(render_markdown(report))
    assert "Robustness" not in text


def test_rerun_is_a_cache_hit(folders, monkeypatch):
    robust, _ = folders
    before = mtimes(robust)
    report_before = json.loads((robust / "report.json").read_text())["robustness"]

    def refuse(*args, **kwargs):
        raise AssertionError("evaluate_robustness called on a cached run")

    monkeypatch.setattr(cutmix.robustness, "evaluate_robustness", refuse)
    code, _, err = run_main([*ARGS, "--out", str(robust), *ROBUST])
    assert code == 0, err
    after = mtimes(robust)
    run_files = [k for k in before if k.startswith("seed-")]
    assert {k: after[k] for k in run_files} == {
        k: before[k] for k in run_files
    }  # nothing trained or evaluated
    assert json.loads((robust / "report.json").read_text())["robustness"] == report_before


def test_finished_comparison_rerun_only_evaluates(folders, tmp_path):
    """``plain`` re-run with --robustness (and another limit): the runs are not trained again, each is
    evaluated once; then a third call with another limit evaluates again (the limit is in the key)."""
    _, plain = folders
    out = tmp_path / "plain"
    import shutil

    shutil.copytree(plain, out)
    before = mtimes(out)
    code, _, err = run_main([*ARGS, "--out", str(out), "--robustness", "--robustness-limit", "10"])
    assert code == 0, err
    after = mtimes(out)
    assert {k: after[k] for k in before if k.startswith("seed-")} == {
        k: before[k] for k in before if k.startswith("seed-")
    }
    for seed, arm in RUNS:
        result = json.loads((out / f"seed-{seed}" / arm / "robustness" / "robustness.json").read_text())
        assert result["n_images"] == 10
    assert json.loads((out / "report.json").read_text())["robustness"]["n_images"] == 10


def test_robustness_limit_refused(tmp_path):
    code, _, err = run_main([*ARGS, "--out", str(tmp_path / "a"), "--robustness-limit", "5"])
    assert code == 2 and "--robustness-limit" in err and "--robustness" in err
    code, _, err = run_main([*ARGS, "--out", str(tmp_path / "b"), "--robustness", "--robustness-limit", "0"])
    assert code == 2 and "--robustness-limit: expected" in err
    assert not (tmp_path / "a" / "seed-0").exists() and not (tmp_path / "b" / "seed-0").exists()


def fake_result(acc: float, nll: float) -> dict:
    """A robustness.json-shaped result whose every table metric is ``acc`` but the NLL."""
    return {
        "clean": {"acc": acc, "ece": acc, "nll": nll},
        "occlusion": {"center_mean": acc, "boundary_mean": acc},
        "fgsm": {"4": acc, "8": acc},
        "ood": {"uniform": {"auroc": acc}, "gaussian": {"auroc": acc}},
        "corruptions": {"mean": acc},
        "settings": {"limit": None, "seed": 0, "batch_size": 500, "tta_flip": False},
        "n_images": 100,
    }


def test_summary_leaves_out_non_finite_and_pairs_by_seed():
    from cutmix.experiment.report.robustness import summarize_robustness

    results = {("none", 0): fake_result(0.5, 1.0), ("none", 1): fake_result(0.6, 1.5), ("none", 2): fake_result(0.7, 2.0),
               ("cutmix", 0): fake_result(0.55, float("nan")), ("cutmix", 2): fake_result(0.8, 1.0)}  # fmt: skip
    rob = summarize_robustness(results, ["none", "cutmix"])
    assert rob["per_arm"]["none"]["clean_acc"]["mean"] == pytest.approx(0.6)
    assert rob["per_arm"]["cutmix"]["nll"]["values"] == [1.0]  # the NaN is left out
    paired = rob["paired"]["cutmix"]["clean_acc"]
    assert paired["seeds"] == [0, 2] and paired["differences"] == pytest.approx([0.05, 0.1])
    nll = rob["paired"]["cutmix"]["nll"]
    assert nll["seeds"] == [2] and nll["non_finite_seeds"] == [0] and nll["verdict"] == "n/a"
    assert (
        summarize_robustness({k: v for k, v in results.items() if k[0] == "cutmix"}, ["cutmix"])["paired"]
        == {}
    )
