"""What a comparison writes besides its runs: ``comparison.json`` (its arms, seeds, baseline, the
setting it varies, its data and provenance), each value's report, and with ``--vary`` the report
across the values; and :func:`rebuild_report`, which writes the same reports from finished run
folders alone (`cutmix report OUT`: what a cluster run calls at its end, or a user after copying run
folders together).

The seeds of a rebuilt report are those whose run folders have finished, whatever comparison.json
says, so that folders of more seeds copied in (``seed-3/`` from another machine) count; a run not
finished is left out and named.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cutmix.errors import UsageError
from cutmix.experiment.arms import Vary
from cutmix.experiment.folder import COMPARISON_RECORD
from cutmix.experiment.plan import RUN_RECORD, _differences, groups
from cutmix.runinfo import atomic_write_json

RECORD_FORMAT = 1


@dataclass
class Group:
    """One value's comparison (the whole one without ``--vary``): its folder and its finished runs."""

    root: Path
    folder: str | None
    value: Any
    records: list[Any]


def write_record(
    out: Path,
    arms: Sequence[Any],
    seeds: list[int],
    baseline: str | None,
    vary: Vary | None,
    classes: Sequence[str],
    meta: dict[str, Any],
    robustness: dict[str, Any] | None,
) -> None:
    """``OUT/comparison.json``: everything :func:`rebuild_report` needs that run folders do not hold."""
    record = {
        "format": RECORD_FORMAT,
        "arms": [{"name": arm.name, "spec": arm.spec or arm.name} for arm in arms],
        "seeds": list(seeds),
        "baseline": baseline,
        "vary": None if vary is None else {"field": vary.field, "values": list(vary.values)},
        "classes": list(classes),
        "robustness": robustness,
        "meta": meta,
    }
    atomic_write_json(out / COMPARISON_RECORD, record)


def read_record(out: Path) -> dict[str, Any]:
    """``OUT/comparison.json``, checked; a UsageError naming the file and what was expected."""
    path = out / COMPARISON_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(
            f"{out}: expected a comparison folder that cutmix compare wrote (with {COMPARISON_RECORD}), "
            f"got none: {path} not found"
        ) from None
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"{path}: expected a comparison record (JSON), got an unreadable file ({exc})"
        ) from None
    needed = {"format", "arms", "seeds", "baseline", "vary", "classes", "meta"}
    if not isinstance(record, dict) or not needed <= set(record) or record["format"] != RECORD_FORMAT:
        raise UsageError(
            f"{path}: expected a comparison record of format {RECORD_FORMAT} with "
            f"{', '.join(sorted(needed))}, got another file"
        )
    return record


def record_vary(record: dict[str, Any]) -> Vary | None:
    vary = record["vary"]
    return None if vary is None else Vary(vary["field"], tuple(vary["values"]))


def write_reports(
    out: Path,
    found: list[Group],
    arm_names: Sequence[str],
    baseline: str | None,
    vary: Vary | None,
    classes: Sequence[str],
    meta: dict[str, Any],
    robustness: Callable[[Group], dict | None] | None = None,
) -> dict[str, Any]:
    """Each value's report into its folder and, with ``vary``, the report across the values into ``out``;
    returns the report (the top one with ``vary``). ``robustness(group)``: the suite's results of a
    group's runs, or None."""
    from cutmix.experiment.report import write_report
    from cutmix.experiment.report.vary import summarize_vary, write_vary_report

    reports = []
    for group in found:
        group_meta = {
            **meta,
            "vary": None if vary is None else {vary.key: group.value},
            "group": group.folder,
        }
        if vary is not None:  # the value's own setting, where the meta states it
            group_meta["config"] = {**meta.get("config", {}), vary.field: group.value}
            if vary.field in group_meta:
                group_meta[vary.field] = group.value
        results = robustness(group) if robustness is not None else None
        reports.append(
            write_report(
                group.root, group.records, arm_names, classes, group_meta, results, baseline=baseline
            )
        )
    if vary is None:
        return reports[0]
    summary = summarize_vary(
        {"key": vary.key, "values": list(vary.values)},
        [g.folder for g in found],
        reports,
        {**meta, "baseline": reports[0].get("baseline")},
    )
    return write_vary_report(out, summary)


def finished_groups(out: Path, arm_names: Sequence[str], vary: Vary | None) -> tuple[list[Group], list[str]]:
    """The finished runs of every arm, value by value, from the folders under ``out``; and the run
    folders of the comparison that have not finished (named in the report's message)."""
    from cutmix.experiment.report import load_run

    found, unfinished = [], []
    for root, folder, changes in groups(out, vary):
        records = []
        first: dict[str, tuple[Path, dict[str, Any]]] = {}  # each arm's first run and its options
        seeds = sorted(int(p.name[5:]) for p in root.glob("seed-*") if p.is_dir() and p.name[5:].isdigit())
        for seed in seeds:
            for arm in arm_names:
                path = root / f"seed-{seed}" / arm
                if (path / "summary.json").is_file():
                    options = _check_run_record(path, arm, seed)
                    _check_same_options(first.setdefault(arm, (path, options)), path, options)
                    records.append(load_run(path, arm, seed))
                elif path.exists():
                    unfinished.append(str(path))
        found.append(Group(root, folder, next(iter(changes.values()), None), records))
    return found, unfinished


def _check_same_options(first: tuple[Path, dict[str, Any]], path: Path, options: dict[str, Any]) -> None:
    """The runs of one arm at one value differ in their seed only: a run folder copied in from a
    comparison with other options would mix another experiment into the paired statistics."""
    first_path, first_options = first
    differences = _differences(
        {k: v for k, v in first_options.items() if k != "seed"},
        {k: v for k, v in options.items() if k != "seed"},
    )
    if differences:
        raise UsageError(f"{path / RUN_RECORD}: expected the options of {first_path} but for the seed, got "
                         f"{'; '.join(differences)}")  # fmt: skip


def _check_run_record(path: Path, arm: str, seed: int) -> dict[str, Any]:
    """A run folder counts only as the run its compare-run.json says it is; its recorded options."""
    try:
        record = json.loads((path / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"{path}: expected a run of a comparison (a readable {RUN_RECORD}), got {exc}"
        ) from None
    if record.get("arm") != arm or record.get("seed") != seed:
        raise UsageError(
            f"{path / RUN_RECORD}: expected arm {arm} seed {seed}, got arm {record.get('arm')} "
            f"seed {record.get('seed')}"
        )
    return record.get("options") or {}


def rebuild_report(out: str | Path, argv: list[str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Rewrites ``out``'s report(s) from its finished run folders and comparison.json; returns the
    report and the run folders left out as unfinished. A UsageError naming ``out`` when an arm has no
    finished run at some value (there is nothing to report for it)."""
    from cutmix.experiment.robustness import cached_result, suite_settings
    from cutmix.robustness import DEFAULT_BATCH_SIZE

    out = Path(out)
    record = read_record(out)
    vary = record_vary(record)
    arm_names = [arm["name"] for arm in record["arms"]]
    found, unfinished = finished_groups(out, arm_names, vary)
    for group in found:
        missing = [a for a in arm_names if not any(r.arm == a for r in group.records)]
        if missing:
            raise UsageError(
                f"{group.root}: expected at least one finished run per arm, got none for {', '.join(missing)}"
            )
    rob = record.get("robustness")

    def robustness(group: Group) -> dict | None:
        settings = suite_settings(rob["limit"], DEFAULT_BATCH_SIZE)
        results = {(r.arm, r.seed): cached_result(r.path, settings) for r in group.records}
        return {k: v for k, v in results.items() if v is not None} or None

    rebuilt_by = shlex.join(["cutmix", *argv]) if argv is not None else None
    meta = {**record["meta"], "report_rebuilt_by": rebuilt_by, "unfinished_runs": unfinished}
    report = write_reports(
        out, found, arm_names, record["baseline"], vary, record["classes"], meta, robustness if rob else None
    )
    return report, unfinished
