"""`cutmix compare` and `cutmix report`: thin shells over :func:`cutmix.experiment.compare` (parse the
options, run the comparison, print a line per arm and the report's path, return the exit status) and
:func:`cutmix.experiment.outputs.rebuild_report`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from cutmix.errors import UsageError
from cutmix.experiment.arms import parse_arms, parse_vary
from cutmix.experiment.comparison import compare
from cutmix.experiment.runners import RunsFailedError
from cutmix.experiment.runners.slurm import add_launcher_options, launcher_from_args
from cutmix.training.config import RECIPE_HELP, add_train_options, config_from_args, negatable_options
from cutmix.training.preemption import TrainingInterrupted

_FLAGS = ("force", "quiet", "stop_on_divergence", "robustness", "no_wait")
_NEGATABLE = negatable_options()  # --x / --no-x: every boolean option of TrainConfig but the switches


def command_from_args(args: argparse.Namespace) -> list[str]:
    """An argv equivalent to ``args`` (used when compare is not run from the command line)."""
    argv = ["compare"]
    for name, value in vars(args).items():
        if name in ("func", "command") or value is None or callable(value):
            continue
        option = "--" + name.replace("_", "-")
        if name in _FLAGS:
            argv += [option] if value else []
        elif isinstance(value, list):  # a repeatable option (--slurm-arg)
            argv += [item for v in value for item in (option, str(v))]
        elif name in _NEGATABLE:
            argv.append(option if value else f"--no-{name.replace('_', '-')}")
        else:
            argv += [option, str(value)]
    return argv


def _print_summary(report: dict, arms: tuple[str, ...]) -> None:
    """A line per arm: its mean test accuracy ± the spread over seeds, and its paired difference; with
    --vary, a line per arm and value."""
    if "vary" in report and "effects" in report:
        _print_vary_summary(report)
        return
    baseline = report.get("baseline")
    for arm in arms:
        acc = report["per_arm"][arm]["test_acc"] or {}
        mean = "n/a" if acc.get("mean") is None else f"{acc['mean']:.2%}"  # None: no finite accuracy
        spread = "n/a" if acc.get("std") is None else f"{acc['std']:.2%}"
        line = f"{arm:8s} test accuracy {mean} ± {spread} (n = {acc.get('n', 0)})"
        paired = report["paired"].get(arm, {}).get("test_acc")
        if paired and paired.get("mean") is not None:
            line += f"; {arm} − {baseline}: {100 * paired['mean']:+.2f} pp ({paired['verdict']})"
        print(line)
    if report["any_diverged"]:
        print("WARNING: some runs diverged; see the report")


def _print_vary_summary(report: dict) -> None:
    key, baseline = report["vary"]["key"], report["baseline"]
    for arm in report["arms"]:
        entries = report["test_acc"][arm]
        for entry, effect in zip(entries, report["effects"].get(arm) or [None] * len(entries), strict=True):
            mean = "n/a" if entry.get("mean") is None else f"{entry['mean']:.2%}"
            line = f"{key}={entry['value']} {arm}: test accuracy {mean} (n = {entry.get('n', 0)})"
            if effect and effect.get("mean") is not None:
                line += f"; {arm} − {baseline}: {100 * effect['mean']:+.2f} pp ({effect['verdict']})"
            print(line)


def run(args: argparse.Namespace) -> int:
    """`cutmix compare ARGS`: the comparison, a line per arm, the report's path; the exit status."""
    if args.mix is not None:
        raise UsageError(f"--mix: compare takes its mixing ops from --arms, got --mix {args.mix}")
    if args.seeds < 1:
        raise UsageError(f"--seeds: expected an integer >= 1, got {args.seeds}")
    arms = parse_arms(args.arms)
    vary = parse_vary(args.vary, arms) if args.vary is not None else None
    base = config_from_args(args)
    argv = sys.argv[1:] if sys.argv[1:2] == ["compare"] else command_from_args(args)
    slurm = launcher_from_args(args)
    try:
        report = compare(
            base, arms, list(range(args.seeds)), args.out, baseline=args.baseline, vary=vary,
            force=args.force, progress=not args.quiet,
            argv=argv, jobs=args.jobs, threads=args.threads, robustness=args.robustness,
            robustness_limit=args.robustness_limit, slurm=slurm,
        )  # fmt: skip
    except RunsFailedError as exc:
        print(f"cutmix compare: {exc}", file=sys.stderr)
        return 1
    except TrainingInterrupted as exc:
        print(f"cutmix compare: {exc}; re-run the same command to resume", file=sys.stderr)
        return exc.exit_status
    if slurm is not None and not slurm.wait:
        print(f"not waiting for the jobs; once they have ended: cutmix report {shlex.quote(args.out)}")
        return 0
    if not report:
        return 0
    _print_summary(report, tuple(arm.name for arm in arms))
    print(f"report: {Path(args.out) / 'report.md'}")
    # As `train --stop-on-divergence` does, but once every run and the whole report are done.
    if _any_diverged(report, args.out) and base.stop_on_divergence:
        return 3
    return 0


def _any_diverged(report: dict, out: str) -> bool:
    """Whether a run diverged: the report says so, or with --vary one of the values' reports does."""
    if "any_diverged" in report:
        return bool(report["any_diverged"])
    import json

    return any(json.loads((Path(out) / f / "report.json").read_text("utf-8"))["any_diverged"]
               for f in report["folders"])  # fmt: skip


def run_report(args: argparse.Namespace) -> int:
    """`cutmix report OUT`: the report rebuilt from OUT's finished run folders; the exit status."""
    from cutmix.experiment.outputs import rebuild_report

    argv = sys.argv[1:] if sys.argv[1:2] == ["report"] else ["report", args.out]
    from cutmix.experiment.locks import comparison_lock
    from cutmix.experiment.outputs import read_record

    read_record(Path(args.out))  # a folder compare did not write is refused before a lock file goes in
    # Held as compare holds it: a comparison still writing into OUT is refused, not raced.
    with comparison_lock(Path(args.out)):
        report, unfinished = rebuild_report(args.out, argv=argv)
    for path in unfinished:
        print(f"cutmix report: not finished, left out: {path}", file=sys.stderr)
    _print_summary(report, tuple(report["arms"]))
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="train every arm (none, cutmix, ...) over several seeds and write a report",
        description="The Keras example's experiment: for each seed, one set of initial weights and one "
        "data order shared by every arm; each arm trained and tested; a report with means over seeds, "
        "paired differences against `none` with 95% t-intervals, curves and per-class accuracy. "
        "Re-running skips finished runs and resumes an unfinished one. With --stop-on-divergence, a "
        "run that diverges stops there, the others go on, and once the whole report is written "
        "compare exits with status 3. " + RECIPE_HELP,
    )
    add_train_options(parser)
    parser.add_argument(
        "--arms",
        default="none,cutmix",
        help="comma-separated arms, each a mixing op (none, cutmix, mixup, cutout) with options of its own "
        "after colons: cutmix:alpha=0.2:p=0.5, cutout:size=8 (keys: alpha, p, size, partner, "
        "mix-off-epochs; options not given come from the recipe and the command line; default: none,cutmix)",
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="ARM",
        help="the arm every paired difference is taken against (default: none, where it is an arm)",
    )
    parser.add_argument(
        "--vary",
        default=None,
        metavar="KEY=V1,V2,...",
        help="run the whole plan (arms x seeds) once per value of a training setting, each in OUT/KEY=VALUE/ "
        "with its own initial weights, and report the paired differences as a function of it "
        "(e.g. epochs=15,30,60,120)",
    )
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds, 0..N-1 (default: 3)")
    parser.add_argument("--out", required=True, help="comparison folder")
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs trained at once, each in its own process (default: one per GPU where several are "
        "visible, else 1). On a small CPU, --jobs 2 with one thread each beats one run on two threads",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads per run (default with --jobs N: the cores divided by N)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="delete and redo runs in --out made with other options, and write into an --out holding "
        "files compare did not write (never into one another comparison is using)",
    )
    parser.add_argument(
        "--robustness",
        action="store_true",
        help="after training, the robustness suite (cutmix robustness, without flip TTA) of each "
        "finished run, cached in its folder (a finished comparison re-run with it only evaluates), and "
        "its table, robustness.png and cam.png in the report; not a run option (no config hash changes)",
    )
    parser.add_argument(
        "--robustness-limit",
        type=int,
        default=None,
        metavar="N",
        help="with --robustness: a class-stratified subset of N test images (default: all)",
    )
    add_launcher_options(parser)
    parser.set_defaults(func=run)
    report = subparsers.add_parser(
        "report",
        help="rebuild a comparison's report from its finished run folders",
        description="Rewrites OUT's report.md, report.json and figures (and with --vary each value's and "
        "the one across values) from the finished run folders and OUT/comparison.json, which cutmix "
        "compare writes: what a cluster comparison calls at its end, and what a user calls after copying "
        "run folders together. Runs not finished are left out and named.",
    )
    report.add_argument("out", metavar="OUT", help="the comparison folder (cutmix compare's --out)")
    report.set_defaults(func=run_report)
