"""report.md: the tables of a report (:func:`cutmix.experiment.report.summarize`'s dict) in
Markdown, section by section, with the figures and the provenance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cutmix.experiment.report.summary import BASELINE


def _baseline(report: dict[str, Any]) -> str:
    """The arm the report's paired differences are against (reports from before --baseline: none)."""
    return report.get("baseline") or BASELINE


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _pp(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.2f} pp"


def _acc(d: dict[str, Any] | None) -> str:
    if d is None:
        return "n/a"
    spread = "n/a" if d["std"] is None else f"{100 * d['std']:.2f}"
    return f"{100 * d['mean']:.2f} ± {spread} % (n = {d['n']})"


def _num(d: dict[str, Any] | None, fmt: str) -> str:
    if d is None:
        return "n/a"
    spread = "n/a" if d["std"] is None else format(d["std"], fmt)
    return f"{format(d['mean'], fmt)} ± {spread}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _paired_row(arm: str, p: dict[str, Any] | None, baseline: str) -> list[str]:
    if p is None:
        return [f"{arm} − {baseline}", "0", "n/a", "n/a", "n/a", "n/a", "n/a"]
    interval = "n/a" if p["low"] is None else f"[{_pp(p['low'])}, {_pp(p['high'])}]"
    sd = "n/a" if p["std"] is None else f"{100 * p['std']:.2f} pp"
    t = "n/a" if p["t"] is None else f"{p['t']:.4f}"
    return [f"{arm} − {baseline}", str(p["n"]), _pp(p["mean"]), sd, t, interval, p["verdict"]]


def _images(report: dict[str, Any]) -> str:
    counts = [f"{report.get(k)} {name}" for k, name in
              (("train_images", "training"), ("val_images", "validation"), ("test_images", "test"))
              if report.get(k)]  # fmt: skip
    return (", ".join(counts) + " images") if counts else "image counts not recorded"


def _intro(report: dict[str, Any]) -> list[str]:
    arms, seeds = report["arms"], report["seeds"]
    return [
        f"# CutMix comparison: {', '.join(arms)} on {report.get('dataset') or report.get('data')}",
        "",
        f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))}), recipe `{report.get('recipe')}`, "
        f"{report.get('epochs')} epoch(s); {_images(report)}. For each seed every arm starts from the "
        "same initial weights "
        "and sees the training images in the same order. Means are over seeds, ± the sample standard "
        "deviation (ddof = 1); n is the number of seeds.",
        "",
        *_study_lines(report),
    ]


def _study_lines(report: dict[str, Any]) -> list[str]:
    """Where a report stands among others: one value of a ``--vary`` study, arms with options of their
    own, runs left out as unfinished (a report rebuilt by `cutmix report`)."""
    out = []
    if report.get("group"):
        out += [f"One value of a study, `{report['group']}`; the report across the values is in the folder "
                "above.", ""]  # fmt: skip
    specs = {name: spec for name, spec in (report.get("arm_specs") or {}).items() if spec != name}
    if specs:
        listed = "; ".join(f"`{n}` = `--arms {s}`" for n, s in specs.items())
        out += [f"Arms with options of their own: {listed} (options not given come from the recipe and the "
                "command line).", ""]  # fmt: skip
    if report.get("unfinished_runs"):
        out += ["Not finished, left out: " + ", ".join(f"`{p}`" for p in report["unfinished_runs"]) + ".", ""]
    return out


def _final_accuracy(report: dict[str, Any]) -> list[str]:
    """The per-arm table: final test accuracy (and without the diverged runs, and at the best
    validation epoch, where those apply), wall time and speed."""
    val, any_div = bool(report.get("val")), report["any_diverged"]
    header = ["arm", "n", "final test accuracy"]
    if any_div:
        header += ["without diverged runs", "diverged (seeds)"]
    if val:
        header += ["test acc. at best-val epoch", "best epochs (by val)"]
    header += ["wall time (s)", "train images/s"]
    rows = []
    for arm in report["arms"]:
        a = report["per_arm"][arm]
        row = [arm, str(a["n"]), _acc(a["test_acc"])]
        if any_div:
            row += [_acc(a["test_acc_without_diverged"]), ", ".join(map(str, a["diverged_seeds"])) or "-"]
        if val:
            row += [_acc(a["test_acc_at_best_val"]), ", ".join(map(str, a["best_epoch_by_val"]))]
        row += [_num(a["wall_time"], ".1f"), _num(a["images_per_s"], ",.0f")]
        rows.append(row)
    return ["## Final test accuracy", "", *_table(header, rows), ""]


def _notes(report: dict[str, Any]) -> list[str]:
    """Under the accuracy table: the validation split, the diverged runs, non-finite values, TTA."""
    out = []
    if report.get("val"):
        out += [
            f"With `--val {report['val']}` that many training images were held out; the best epoch of "
            "each run was chosen on them, never on the test split.",
            "",
        ]
    if report["any_diverged"]:
        out += ["Runs flagged as diverged:", ""]
        for run in report["runs"]:
            if run.get("diverged"):
                values = f" (non-finite: {', '.join(run['non_finite'])})" if run.get("non_finite") else ""
                out.append(f"- seed {run['seed']}, {run['arm']}: {run['diverged']}{values}")
        out.append("")
    else:
        out += ["No run diverged.", ""]
    if report.get("any_non_finite"):
        out += [
            "Non-finite values (NaN, ±inf) are shown as n/a here and stored as null in report.json; "
            "they are left out of every mean, spread and interval, and the curves plot only finite "
            "values.",
            "",
        ]
    if any(r.get("tta_flip") for r in report["runs"]):
        out += ["Test accuracies use flip test-time augmentation (the recipe's `tta_flip`).", ""]
    return out


def _paired_differences(report: dict[str, Any]) -> list[str]:
    baseline = _baseline(report)
    out = [f"## Paired differences against `{baseline}`", ""]
    paired = report["paired"]
    if not paired:
        return [*out, "No `none` arm in this comparison (and no --baseline), so no paired differences.", ""]
    out += [
        f"Per seed, the arm's final test accuracy minus that of `{baseline}` (same seed, same initial "
        "weights, same data order); 95% interval: mean ± t(0.975, n − 1)·sd/√n. "
        '"not significant": the interval holds 0; "n/a": fewer than 2 seeds.',
        "",
    ]
    header = ["difference", "n", "mean", "sd", "t(0.975, n−1)", "95% interval", "verdict"]
    out += _table(header, [_paired_row(arm, p["test_acc"], baseline) for arm, p in paired.items()])
    out.append("")
    for key, title in (
        ("test_acc_without_diverged", "Leaving out the seeds where either run diverged:"),
        ("test_acc_at_best_val", "Test accuracy at the best-validation epoch:"),
    ):
        if any(key in p for p in paired.values()):
            rows = [_paired_row(arm, p[key], baseline) for arm, p in paired.items()]
            out += [title, "", *_table(header, rows), ""]
    return out


def _robustness_cell(d: dict[str, Any] | None, unit: str) -> str:
    if d is None:
        return "n/a"
    scale, fmt, suffix = (100, ".2f", " %") if unit == "pct" else (1, ".4f", "")
    spread = "n/a" if d["std"] is None else format(scale * d["std"], fmt)
    return f"{format(scale * d['mean'], fmt)} ± {spread}{suffix} (n = {d['n']})"


def _robustness_paired_row(label: str, unit: str, p: dict[str, Any] | None) -> list[str]:
    """A row of the paired table, as :func:`_paired_row` (pp for fractions, nats for the NLL)."""
    if p is None:
        return [label, "0", "n/a", "n/a", "n/a", "n/a", "n/a"]
    scale, fmt, suffix = (100, "+.2f", " pp") if unit == "pct" else (1, "+.4f", "")

    def diff(x: float | None) -> str:
        return "n/a" if x is None else f"{format(scale * x, fmt)}{suffix}"

    interval = "n/a" if p["low"] is None else f"[{diff(p['low'])}, {diff(p['high'])}]"
    sd = "n/a" if p["std"] is None else f"{format(scale * p['std'], fmt.lstrip('+'))}{suffix}"
    t = "n/a" if p["t"] is None else f"{p['t']:.4f}"
    return [label, str(p["n"]), diff(p["mean"]), sd, t, interval, p["verdict"]]


def _robustness(report: dict[str, Any]) -> list[str]:
    """The robustness table and its paired differences (``compare --robustness``); nothing without."""
    rob = report.get("robustness")
    if not rob:
        return []
    settings, arms = rob["settings"], report["arms"]
    images = f"the whole test split ({rob.get('n_images')} images)" if settings.get("limit") is None else (
        f"a class-stratified subset of {settings['limit']} test images")  # fmt: skip
    out = [
        "## Robustness and calibration",
        "",
        f"The robustness suite (`cutmix robustness`) on each run's final model: {images}, seed "
        f"{settings.get('seed')} for every run, batch size {settings.get('batch_size')}. It runs "
        "**without flip test-time augmentation** (the accuracy tables above keep the recipe's), so its "
        "clean accuracy can differ from theirs. The corruptions "
        "are CIFAR-10-C-style: generated on the fly with the CIFAR severities of Hendrycks & "
        "Dietterich's `make_cifar_c.py`, not the released CIFAR-10-C files. Occlusion is the mean over "
        "the hole sides s = 0, 4, ..., 32; OOD is the max-softmax AUROC of the test images against as "
        "many noise images. Means over seeds ± the sample standard deviation.",
        "",
    ]
    rows = [[m["label"], *(_robustness_cell(rob["per_arm"][a][m["key"]], m["unit"]) for a in arms)]
            for m in rob["metrics"]]  # fmt: skip
    out += [*_table(["metric", *arms], rows), ""]
    header = ["metric", "n", "mean", "sd", "t(0.975, n−1)", "95% interval", "verdict"]
    for arm, by_metric in rob["paired"].items():
        rows = [_robustness_paired_row(m["label"], m["unit"], by_metric[m["key"]]) for m in rob["metrics"]]
        out += [f"Paired differences, {arm} − {_baseline(report)} (per seed, the same seed's runs; 95% "
                "interval and verdict as for the test accuracy):", "", *_table(header, rows), ""]  # fmt: skip
    return [
        *out,
        "![occlusion and FGSM curves per arm (mean over seeds, min–max band) and reliability "
        "diagrams](robustness.png)",
        "",
        "![class activation maps: one row per arm, the same test images](cam.png)",
        "",
    ]


def _every_run(report: dict[str, Any]) -> list[str]:
    arms = report["arms"]
    cells = {(r["arm"], r["seed"]): r for r in report["runs"]}
    rows = []
    for seed in report["seeds"]:
        row = [str(seed)]
        for arm in arms:
            r = cells.get((arm, seed))
            text = "-" if r is None else _pct(r["test_acc"]) + (" (diverged)" if r.get("diverged") else "")
            row.append(text)
        rows.append(row)
    return [
        "## Every run",
        "",
        *_table(["seed", *arms], rows),
        "",
        "Run folders: `seed-<seed>/<arm>/` (config.json, metrics.jsonl, summary.json).",
        "",
    ]


def _per_class(report: dict[str, Any]) -> list[str]:
    """The per-class table (and without the diverged runs), where every arm has per-class values."""
    arms, classes, per_arm = report["arms"], report["classes"], report["per_arm"]
    if not all("test_per_class_mean" in per_arm[a] for a in arms):
        return []

    def table(key: str) -> list[str]:
        rows = [[name, *(_pct(per_arm[a][key][k]) for a in arms)] for k, name in enumerate(classes)]
        return _table(["class", *arms], rows)

    out = ["## Per-class test accuracy (mean over seeds)", "", *table("test_per_class_mean"), ""]
    if report["any_diverged"]:
        out += ["Without the diverged runs:", "", *table("test_per_class_mean_without_diverged"), ""]
    return out


def _figures() -> list[str]:
    return [
        "## Curves and augmented examples",
        "",
        "![test accuracy and training loss per epoch](curves.png)",
        "",
        "Training loss is measured on the targets each arm trains on (mixed targets for the mixing "
        "arms), so it is not comparable across arms; test accuracy is.",
        "",
        "![nine augmented training images](preview.png)",
        "",
    ]


def _seed_reference(report: dict[str, Any]) -> list[str]:
    """The Keras example's own figures, quoted, for a `seed`-recipe comparison on CIFAR-10."""
    ref = report.get("seed_reference")
    if not ref:
        return []
    out = [
        "## The Keras example's own figures, for reference",
        "",
        f"One run per arm, {ref['epochs']} epochs, ResNet-20 on CIFAR-10, the test split doubling as "
        "validation data:",
        "",
        f"- its training log ends at {_pct(ref['log_test_acc']['cutmix'])} test accuracy with CutMix and "
        f"{_pct(ref['log_test_acc']['none'])} without; the no-augmentation run had reached "
        f"{_pct(ref['none_peak_in_log']['test_acc'])} at epoch {ref['none_peak_in_log']['epoch']} "
        "before falling to chance;",
        f"- its closing notes state {_pct(ref['notes_test_acc']['cutmix'])} with CutMix and "
        f"{_pct(ref['notes_test_acc']['none'])} without, figures its log does not show;",
        "- the notes say CutMix training takes less time; the log shows "
        f"{ref['log_seconds_per_epoch']['cutmix']} s per epoch with CutMix and "
        f"{ref['log_seconds_per_epoch']['none']} s without (after a longer first epoch).",
        "",
        "The `seed` recipe used here follows the example's choices with two deliberate fixes: every "
        "arm gets a full shuffle each epoch, and an empty box mixes nothing.",
        "",
    ]
    if report.get("epochs") != ref["epochs"]:
        out += [f"This comparison ran {report.get('epochs')} epoch(s), not {ref['epochs']}.", ""]
    return out


def _provenance(report: dict[str, Any]) -> list[str]:
    out = ["## How this was made", "", "```", str(report.get("command")), "```", ""]
    config = report.get("config") or {}
    if config:
        options = ", ".join(f"{k}={v}" for k, v in sorted(config.items()))
        own = " (an arm's own options, listed above, replace these)" if report.get("arm_specs") else ""
        out += [f"Options common to every arm{own}: {options}.", ""]
    if report.get("report_rebuilt_by"):
        out += [f"Rebuilt from the run folders by `{report['report_rebuilt_by']}`.", ""]
    versions = report.get("versions") or {}
    across = [
        f"- **{arm} − {report['baseline']}, seed {', '.join(map(str, seeds))}: the two runs trained on "
        "different kinds of machine**, so these paired differences include the machines' rounding as "
        "well as the arms' difference"
        for arm, seeds in (report.get("paired_across_machines") or {}).items()
    ]
    return [
        *out,
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "- hardware: " + _hardware_text(report.get("hardware")) + " (this report's process)",
        *_runs_hardware(report.get("runs") or []),
        *across,
        f"- git commit: {report.get('git_commit') or 'unknown'}",
        "",
    ]


def _hardware_text(hardware: dict[str, Any] | None) -> str:
    """A hardware dict as one line of text ("" for none)."""
    return ", ".join(f"{k}: {v}" for k, v in (hardware or {}).items())


def _runs_hardware(runs: list[dict[str, Any]]) -> list[str]:
    """One line per machine kind the runs trained on (each run's config.json), naming its runs: a
    comparison is a replay only among runs of one kind (rounding differs between kinds)."""
    kinds: dict[str, list[str]] = {}
    for run in runs:
        kind = _hardware_text(run.get("hardware")) or "not recorded"
        kinds.setdefault(kind, []).append(f"{run['arm']} seed {run['seed']}")
    if len(kinds) == 1:
        ((kind, names),) = kinds.items()
        return [f"- hardware of every run ({len(names)}): {kind}"]
    return [f"- hardware of {', '.join(names)}: {kind}" for kind, names in kinds.items()]


def render_markdown(report: dict[str, Any]) -> str:
    """report.md from :func:`cutmix.experiment.report.summarize`'s dict.

    Args:
        report: the report, as :func:`~cutmix.experiment.report.summarize` returns it (or as
            report.json holds it).

    Returns:
        The Markdown text: the accuracy table and its notes, the paired differences against
        ``none``, every run, the per-class accuracy, the figures, the Keras example's figures
        (``seed`` recipe on CIFAR-10) and how the comparison was made.
    """
    sections = (_intro(report), _final_accuracy(report), _notes(report), _paired_differences(report),
                _robustness(report), _every_run(report), _per_class(report), _figures(),
                _seed_reference(report), _provenance(report))  # fmt: skip
    return "\n".join(line for section in sections for line in section)
