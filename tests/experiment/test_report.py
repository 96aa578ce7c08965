"""The comparison report, built from hand-made run records (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cutmix.experiment.report import (
    CIFAR10_CLASSES,
    RunRecord,
    is_cifar10_like,
    load_run,
    render_markdown,
    summarize,
    write_report,
)

CLASSES = ["stripes", "dots"]
# Final test accuracy per arm and seed; `none` seed 1 diverged (as the seed's own run did).
ACC = {"none": [0.60, 0.10, 0.64], "cutmix": [0.70, 0.66, 0.71]}


def fake_run(arm: str, seed: int, acc: float, *, diverged: str | None = None, epochs: int = 3,
             best_val: tuple[int, float] | None = None) -> RunRecord:  # fmt: skip
    metrics = []
    for epoch in range(1, epochs + 1):
        test_acc = acc if epoch == epochs else acc * epoch / (epochs + 1)
        metrics.append({"epoch": epoch, "test_acc": test_acc, "train_loss": 2.0 / epoch + seed * 0.01,
                        "test_per_class": [test_acc + 0.05, test_acc - 0.05]})  # fmt: skip
    summary = {
        "test_acc": acc,
        "test_per_class": [acc + 0.05, acc - 0.05],
        "wall_time": 10.0 + seed,
        "train_images_per_s": 1000.0 + 100 * seed,
        "diverged": diverged,
        "finished": True,
        "epochs_completed": epochs,
        "tta_flip": False,
    }
    if best_val is not None:
        summary.update(best_epoch_by_val=best_val[0], test_acc_at_best_val=best_val[1])
    return RunRecord(arm, seed, Path(f"/cmp/seed-{seed}/{arm}"), summary, metrics)


def all_runs(**kwargs) -> list[RunRecord]:
    return [
        fake_run(
            arm,
            seed,
            ACC[arm][seed],
            diverged="test accuracy collapsed" if (arm, seed) == ("none", 1) else None,
            **kwargs,
        )
        for seed in range(3)
        for arm in ("none", "cutmix")
    ]


META = {"command": "cutmix compare --out /cmp", "recipe": "seed", "epochs": 3, "val": 0, "data": "x",
        "versions": {"torch": "2"}, "hardware": {"cpu_count": 2}, "git_commit": "abc", "cifar10_like": False}  # fmt: skip


def test_means_spreads_and_paired_differences_match_the_runs():
    report = summarize(all_runs(), ["none", "cutmix"], CLASSES, META)
    for arm, values in ACC.items():
        stats = report["per_arm"][arm]["test_acc"]
        assert stats["n"] == 3 and stats["values"] == values
        assert stats["mean"] == pytest.approx(np.mean(values))
        assert stats["std"] == pytest.approx(np.std(values, ddof=1))
        assert report["per_arm"][arm]["wall_time"]["mean"] == pytest.approx(11.0)
        assert report["per_arm"][arm]["images_per_s"]["mean"] == pytest.approx(1100.0)
    # Diverged runs flagged, means given with and without them.
    assert report["any_diverged"] and report["per_arm"]["none"]["diverged_seeds"] == [1]
    assert report["per_arm"]["none"]["test_acc_without_diverged"]["mean"] == pytest.approx(0.62)
    assert report["per_arm"]["cutmix"]["test_acc_without_diverged"]["n"] == 3

    paired = report["paired"]["cutmix"]["test_acc"]
    diffs = np.subtract(ACC["cutmix"], ACC["none"])
    assert paired["differences"] == pytest.approx(diffs) and paired["seeds"] == [0, 1, 2]
    assert paired["mean"] == pytest.approx(diffs.mean())
    assert paired["half_width"] == pytest.approx(4.302653 * np.std(diffs, ddof=1) / np.sqrt(3), rel=1e-6)
    assert paired["verdict"] == "not significant"  # 0.243 ± 0.63: holds 0
    without = report["paired"]["cutmix"]["test_acc_without_diverged"]
    assert without["seeds"] == [0, 2] and without["mean"] == pytest.approx(0.085)
    assert report["per_arm"]["cutmix"]["test_per_class_mean"] == pytest.approx(
        [np.mean(ACC["cutmix"]) + 0.05, np.mean(ACC["cutmix"]) - 0.05]
    )

    md = render_markdown(report)
    assert f"{100 * np.mean(ACC['none']):.2f} ± {100 * np.std(ACC['none'], ddof=1):.2f} % (n = 3)" in md
    assert "62.00 ± 2.83 % (n = 2)" in md  # none without its diverged run
    assert "without diverged runs" in md and "10.00% (diverged)" in md
    assert "seed 1, none: test accuracy collapsed" in md
    assert f"| cutmix − none | 3 | {100 * diffs.mean():+.2f} pp |" in md
    assert "not significant" in md and "t(0.975, n−1)" in md
    assert "| stripes |" in md and "| dots |" in md
    assert "cutmix compare --out /cmp" in md and "git commit: abc" in md
    assert "Keras example" not in md  # not CIFAR-10-like


def test_one_seed_gives_n_a_not_zero():
    runs = [fake_run("none", 0, 0.5), fake_run("cutmix", 0, 0.6)]
    report = summarize(runs, ["none", "cutmix"], CLASSES, META)
    assert report["per_arm"]["none"]["test_acc"]["std"] is None
    paired = report["paired"]["cutmix"]["test_acc"]
    assert paired["verdict"] == "n/a" and paired["half_width"] is None
    assert paired["mean"] == pytest.approx(0.1)
    md = render_markdown(report)
    assert "50.00 ± n/a % (n = 1)" in md
    assert "| cutmix − none | 1 | +10.00 pp | n/a | n/a | n/a | n/a |" in md
    assert "No run diverged." in md


def test_validation_split_picks_the_epoch_not_test():
    runs = [fake_run(arm, seed, ACC[arm][seed] if arm == "cutmix" else 0.6 + seed / 100,
                     best_val=(2, 0.5 + seed / 100 + (arm == "cutmix") * 0.1))
            for seed in range(3) for arm in ("none", "cutmix")]  # fmt: skip
    report = summarize(runs, ["none", "cutmix"], CLASSES, {**META, "val": 100})
    assert report["per_arm"]["cutmix"]["best_epoch_by_val"] == [2, 2, 2]
    assert report["per_arm"]["cutmix"]["test_acc_at_best_val"]["mean"] == pytest.approx(0.61)
    at_best = report["paired"]["cutmix"]["test_acc_at_best_val"]
    assert at_best["differences"] == pytest.approx([0.1, 0.1, 0.1])
    md = render_markdown(report)
    assert "test acc. at best-val epoch" in md and "never on the test split" in md


def test_seed_reference_only_for_the_seed_recipe_on_cifar10():
    assert is_cifar10_like(list(CIFAR10_CLASSES), (32, 32, 3))
    assert is_cifar10_like([c.upper() for c in reversed(CIFAR10_CLASSES)], (32, 32, 3))
    assert not is_cifar10_like(list(CIFAR10_CLASSES), (64, 64, 3))
    assert not is_cifar10_like(CLASSES, (32, 32, 3))
    classes = list(CIFAR10_CLASSES)
    runs = [fake_run("none", 0, 0.5), fake_run("cutmix", 0, 0.6)]
    for r in runs:
        r.summary["test_per_class"] = [0.5] * 10
    cifar = {**META, "cifar10_like": True, "epochs": 15}
    md = render_markdown(summarize(runs, ["none", "cutmix"], classes, cifar))
    for figure in ("71.08%", "10.00%", "77.34%", "66.90%", "62.83% at epoch 5"):
        assert figure in md
    assert "ran 15 epoch" not in md
    short = render_markdown(summarize(runs, ["none", "cutmix"], classes, {**cifar, "epochs": 2}))
    assert "This comparison ran 2 epoch(s), not 15." in short
    fast = summarize(runs, ["none", "cutmix"], classes, {**cifar, "recipe": "fast"})
    assert fast["seed_reference"] is None and "71.08%" not in render_markdown(fast)


def test_no_none_arm_no_paired_differences():
    runs = [fake_run("mixup", 0, 0.5), fake_run("cutmix", 0, 0.6)]
    report = summarize(runs, ["mixup", "cutmix"], CLASSES, META)
    assert report["paired"] == {} and report["baseline"] is None
    assert "No `none` arm" in render_markdown(report)
    with pytest.raises(ValueError, match="expected at least one run per arm, got none for cutout"):
        summarize(runs, ["mixup", "cutmix", "cutout"], CLASSES, META)


def test_write_report_files(tmp_path):
    report = write_report(tmp_path, all_runs(), ["none", "cutmix"], CLASSES, META)
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(json.dumps(report))
    assert (tmp_path / "report.md").read_text().startswith("# CutMix comparison: none, cutmix")
    with Image.open(tmp_path / "curves.png") as image:
        assert image.format == "PNG" and image.size[0] > 800 and image.size[1] > 300
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # something was drawn
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "report.json", "report.md"]


def test_load_run_reads_the_files_and_names_a_broken_folder(tmp_path):
    run = tmp_path / "seed-0" / "none"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"test_acc": 0.5}))
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "test_acc": 0.5}) + "\n")
    record = load_run(run, "none", 0)
    assert record.summary["test_acc"] == 0.5 and record.metrics == [{"epoch": 1, "test_acc": 0.5}]
    (run / "summary.json").unlink()
    with pytest.raises(ValueError, match=r"seed-0/none: expected a finished run"):
        load_run(run, "none", 0)


def test_load_run_reads_the_machine_from_config_json_and_tolerates_its_absence(tmp_path):
    run = tmp_path / "seed-0" / "none"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"test_acc": 0.5}))
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "test_acc": 0.5}) + "\n")
    assert load_run(run, "none", 0).hardware == {}  # a run without config.json
    (run / "config.json").write_text("{not json")
    assert load_run(run, "none", 0).hardware == {}
    machine = {"processor": "AMD EPYC", "torch_threads": 1, "cpu_capability": "AVX2"}
    (run / "config.json").write_text(json.dumps({"config": {}, "hardware": machine}))
    assert load_run(run, "none", 0).hardware == machine


def test_the_report_names_the_machine_of_each_run_apart_from_its_own():
    """The report's own hardware line is the process that wrote it (compare, often with more threads
    than its runs); each run's machine is listed too, grouped by kind, so a reader sees which runs
    can be compared digit for digit."""
    amd = {"processor": "AMD EPYC", "torch_threads": 1}
    intel = {"processor": "Intel Xeon", "torch_threads": 1}
    runs = all_runs()
    for run in runs:
        run.hardware = intel if run.seed == 2 else amd
    report = summarize(runs, ["none", "cutmix"], CLASSES, META)
    assert {(r["arm"], r["seed"]): r["hardware"] for r in report["runs"]} == {
        (arm, seed): intel if seed == 2 else amd for arm in ("none", "cutmix") for seed in range(3)
    }
    text = render_markdown(report)
    assert "- hardware: cpu_count: 2 (this report's process)" in text
    lines = [line for line in text.splitlines() if line.startswith("- hardware of ")]
    assert sorted(lines) == sorted([
        "- hardware of none seed 0, cutmix seed 0, none seed 1, cutmix seed 1: processor: AMD EPYC, torch_threads: 1",
        "- hardware of none seed 2, cutmix seed 2: processor: Intel Xeon, torch_threads: 1",
    ])  # fmt: skip
    for run in runs:
        run.hardware = amd
    text = render_markdown(summarize(runs, ["none", "cutmix"], CLASSES, META))
    assert "- hardware of every run (6): processor: AMD EPYC, torch_threads: 1" in text
    for run in runs:
        run.hardware = {}
    report = summarize(runs, ["none", "cutmix"], CLASSES, META)
    assert all(r["hardware"] is None for r in report["runs"])
    assert "- hardware of every run (6): not recorded" in render_markdown(report)


def test_the_report_flags_paired_runs_that_trained_on_different_kinds_of_machine():
    """A paired difference is the arms' effect only when both runs of the seed did the same arithmetic;
    another architecture, CPU, SIMD level, thread count or GPU moves a run by itself."""
    amd = {"machine": "x86_64", "processor": "AMD EPYC", "cpu_capability": "AVX2", "torch_threads": 1,
           "cpu_count": 2}  # fmt: skip
    runs = {(r.arm, r.seed): r for r in all_runs()}
    runs.update({("mixup", seed): fake_run("mixup", seed, 0.5) for seed in range(3)})
    for run in runs.values():
        run.hardware = dict(amd)
    arms = ["none", "cutmix", "mixup"]
    report = summarize(list(runs.values()), arms, CLASSES, META)
    assert report["paired_across_machines"] == {}
    assert "different kinds of machine" not in render_markdown(report)
    changes = {
        ("cutmix", 0): {"torch_threads": 2},
        ("cutmix", 1): {"cpu_count": 4},  # more cores, the same arithmetic
        ("cutmix", 2): {"cpu_capability": "AVX512"},
        ("mixup", 0): {"processor": "Intel Xeon"},
        ("mixup", 1): {"machine": "aarch64"},
        ("mixup", 2): {"gpu": ["H100"]},  # a GPU against none; any JSON value compares, hashable or not
    }
    for key, change in changes.items():
        runs[key].hardware.update(change)
    report = summarize(list(runs.values()), arms, CLASSES, META)
    assert report["paired_across_machines"] == {"cutmix": [0, 2], "mixup": [0, 1, 2]}
    text = render_markdown(report)
    assert "- **cutmix − none, seed 0, 2: the two runs trained on different kinds of machine**" in text
    assert "- **mixup − none, seed 0, 1, 2: the two runs trained" in text
    # cpu_capability missing (older runs) or None is no difference; neither is no hardware at all.
    del runs[("cutmix", 2)].hardware["cpu_capability"]
    runs[("none", 2)].hardware["cpu_capability"] = None  # a torch that cannot tell
    runs[("mixup", 0)].hardware = {}
    assert summarize(list(runs.values()), arms, CLASSES, META)["paired_across_machines"] == {
        "cutmix": [0], "mixup": [1, 2]}  # fmt: skip
    # Against another baseline the pairs change: mixup seed 1 on aarch64 now differs from every arm.
    report = summarize(list(runs.values()), arms, CLASSES, META, baseline="mixup")
    assert report["paired_across_machines"] == {"none": [1, 2], "cutmix": [1, 2]}
    assert summarize(list(runs.values()), arms, CLASSES, META, baseline=None)["paired_across_machines"] == {}
    # Runs of an arm the report does not show are not listed either.
    assert summarize(list(runs.values()), ["none", "cutmix"], CLASSES, META)["paired_across_machines"] == {
        "cutmix": [0]}  # fmt: skip


NAN, INF = float("nan"), float("inf")


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as every strict JSON reader does."""

    def refuse(token: str):
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_values_and_diverged_runs_give_a_complete_report(tmp_path):
    runs = {
        (arm, seed): fake_run(arm, seed, ACC[arm][seed]) for seed in range(3) for arm in ("none", "cutmix")
    }
    # cutmix seed 0: the trainer's verdict; NaN losses from epoch 2 on, the accuracy still a number.
    flagged = runs[("cutmix", 0)]
    flagged.summary.update(diverged="non-finite loss", test_loss=NAN)
    for record in flagged.metrics[1:]:
        record["train_loss"] = NAN
    # cutmix seed 1: no verdict recorded (a run from elsewhere), a NaN final accuracy, an infinite loss.
    broken = runs[("cutmix", 1)]
    broken.summary.update(test_acc=NAN, test_per_class=[NAN, 0.5])
    broken.metrics[-1].update(test_acc=NAN, train_loss=INF)
    # none seed 2: an infinite wall time is a bad number, not a divergence.
    runs[("none", 2)].summary["wall_time"] = INF

    report = write_report(tmp_path, list(runs.values()), ["none", "cutmix"], CLASSES, META)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "report.json", "report.md"]
    saved = strict_json((tmp_path / "report.json").read_text())
    assert saved == strict_json(json.dumps(report))
    assert saved["any_diverged"] and saved["any_non_finite"]

    cutmix = saved["per_arm"]["cutmix"]
    assert cutmix["diverged_seeds"] == [0, 1] and cutmix["non_finite_test_acc_seeds"] == [1]
    assert cutmix["test_acc"]["values"] == [0.70, 0.71]  # every finite final accuracy
    assert cutmix["test_acc_without_diverged"]["values"] == [0.71]
    assert cutmix["test_per_class_mean"] == pytest.approx([(0.75 + 0.76) / 2, (0.65 + 0.5 + 0.66) / 3])
    assert saved["per_arm"]["none"]["wall_time"]["values"] == [10.0, 11.0]
    assert saved["per_arm"]["none"]["diverged_seeds"] == []
    by_run = {(r["arm"], r["seed"]): r for r in saved["runs"]}
    assert by_run[("cutmix", 1)]["test_acc"] is None
    assert by_run[("cutmix", 1)]["diverged"] == "non-finite test_acc, train_loss"
    assert by_run[("cutmix", 1)]["non_finite"] == ["test_acc", "test_per_class", "train_loss"]
    assert by_run[("cutmix", 0)]["non_finite"] == ["test_loss", "train_loss"]
    assert by_run[("none", 2)]["non_finite"] == ["wall_time"] and by_run[("none", 2)]["diverged"] is None

    paired = saved["paired"]["cutmix"]["test_acc"]
    assert paired["seeds"] == [0, 2] and paired["non_finite_seeds"] == [1]
    assert paired["differences"] == pytest.approx([0.10, 0.07])
    without = saved["paired"]["cutmix"]["test_acc_without_diverged"]
    assert without["seeds"] == [2] and without["verdict"] == "n/a"

    md = (tmp_path / "report.md").read_text()
    assert "n/a (diverged)" in md and "70.00% (diverged)" in md
    assert (
        "- seed 1, cutmix: non-finite test_acc, train_loss (non-finite: test_acc, test_per_class, train_loss)"
        in md
    )
    assert "stored as null in report.json" in md and "Without the diverged runs:" in md
    for shown in ("nan%", "nan ±", "± nan", "nan pp", "inf%", "inf pp"):
        assert shown not in md.lower()
    with Image.open(tmp_path / "curves.png") as image:
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20


def test_an_arm_with_nothing_finite_still_gets_its_report(tmp_path):
    runs = [fake_run("none", 0, 0.5), fake_run("cutmix", 0, NAN, diverged="non-finite loss")]
    for record in runs[1].metrics:
        record.update(test_acc=NAN, train_loss=NAN)
    runs[1].summary.update(wall_time=None, train_images_per_s=NAN)
    report = write_report(tmp_path, runs, ["none", "cutmix"], CLASSES, META)
    assert report["per_arm"]["cutmix"]["test_acc"] is None and report["paired"]["cutmix"]["test_acc"] is None
    assert strict_json((tmp_path / "report.json").read_text())["per_arm"]["cutmix"]["wall_time"] is None
    md = (tmp_path / "report.md").read_text()
    assert "| cutmix | 1 | n/a |" in md and "| cutmix − none | 0 | n/a |" in md
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_compare_with_a_diverged_run_writes_every_file_and_exits_0(tmp_path, capsys):
    import torch

    from cutmix.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path / "cmp"
        # The command, smaller: an absurd learning rate makes every loss NaN in the first epoch.
        code = main(["compare", "--data", "synthetic:128", "--depth", "8", "--batch-size", "64", "--device", "cpu",
                     "--quiet", "--arms", "none,cutmix", "--seeds", "1", "--epochs", "1", "--lr", "1e9",
                     "--out", str(out)])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert {"report.md", "report.json", "curves.png", "preview.png"} <= {p.name for p in out.iterdir()}
    report = strict_json((out / "report.json").read_text())
    assert report["any_diverged"] and report["per_arm"]["none"]["diverged_seeds"] == [0]
    assert "WARNING: some runs diverged" in captured.out
    assert "(diverged)" in (out / "report.md").read_text()
