"""The ``--out`` folder of a comparison: what may be written into it, and the clean-up ``--force`` does.

Besides the run folders of :mod:`cutmix.experiment.plan`, compare writes::

    OUT/report.md, report.json, curves.png, preview.png, preview-<arm>.png
    OUT/robustness.png, cam.png   with --robustness (and seed-<s>/<arm>/robustness/ in each run)
    OUT/.lock                     held by the comparison using the folder (cutmix.experiment.locks)
    OUT/comparison.json           the comparison's arms, seeds, baseline, setting varied and data
                                  (what `cutmix report OUT` rebuilds the report from)
    OUT/effect.png                with --vary: the paired differences against the varied value
    OUT/slurm/                    with --launcher slurm: submitit's job files and the jobs' logs

and with ``--vary`` each value's subfolder ``OUT/KEY=VALUE/`` holds a comparison of its own (runs,
report, previews).

A folder holding anything compare did not write is refused, naming ``--out``, unless ``--force``; a
folder another comparison is using is refused even with ``--force``; a re-run with other options
refuses to mix old runs into the report unless ``--force``.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from pathlib import Path

from cutmix.errors import UsageError
from cutmix.experiment.arms import ARM_NAME, VARY_FOLDER
from cutmix.experiment.locks import LOCK_NAME, run_lock
from cutmix.experiment.plan import RUN_RECORD, PlannedRun, init_path, run_dir
from cutmix.training.checkpoint import load_weights

# What compare writes at the top of --out (besides seed-<s>/ and the lock); preview*.png: one
# preview per mixing arm.
REPORT_FILES = ("report.json", "report.md", "curves.png", "preview.png")
ROBUSTNESS_FIGURES = ("robustness.png", "cam.png")  # --robustness's figures, beside the report
COMPARISON_RECORD = "comparison.json"
SLURM_FOLDER = "slurm"  # cutmix.experiment.runners.slurm writes submitit's files there
VARY_FIGURES = ("effect.png",)
_TOP_FILES = REPORT_FILES + ROBUSTNESS_FIGURES + VARY_FIGURES + ("comparison.json",)
_SEED_FOLDER = re.compile(r"seed-[0-9]+")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def refusal(out: Path, runs: list[PlannedRun]) -> str:
    """The message refusing ``runs`` of ``out`` made with other options, each with how it differs."""
    lines = [f"--out: {out} holds runs made with other options; refusing to mix them into the report:"]
    for run in runs:
        lines.append(f"  {run.path}: {'; '.join(run.differences)}")
    lines.append("Re-run with the same options, use another --out, or pass --force to delete and redo them.")
    return "\n".join(lines)


def check_out(
    out: Path,
    arms: tuple[str, ...],
    seeds: list[int],
    *,
    force: bool = False,
    roots: list[Path] | None = None,
) -> None:
    """Refuses an ``--out`` that compare cannot or must not write into, naming ``--out``: a file, a
    folder whose paths compare needs are taken by files or folders of the other kind (even with
    ``force``), or (unless ``force``) a folder holding what compare did not write. A missing or
    empty folder, or a comparison of ours (to resume or extend), is fine. ``roots``: with
    ``--vary``, the value subfolders (default: ``out`` alone)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: expected a folder for the comparison, got a file: {out}")
    blocked = [line for root in (roots or [out]) for line in _blocked_paths(root, arms, seeds)]
    blocked += [f"{p}: a file, where the comparison needs a folder" for p in (roots or []) if _is_other(p)]
    if blocked:
        lines = "\n".join(f"  {line}" for line in blocked)
        raise UsageError(f"--out: {out} holds files where the comparison needs its own:\n{lines}\n"
                         "Move them away, or use another --out.")  # fmt: skip
    if force or not out.is_dir():
        return
    foreign = _foreign_entries(out)
    if foreign:
        lines = "\n".join(f"  {line}" for line in foreign)
        raise UsageError(
            f"--out: expected a new or empty folder, or a comparison that cutmix compare wrote, but {out} "
            f"holds what it did not write:\n{lines}\nUse another --out, or pass --force to write into "
            "it anyway (that deletes the listed run folders this comparison trains, and overwrites "
            f"{', '.join(REPORT_FILES)})."
        )


def _blocked_paths(out: Path, arms: tuple[str, ...], seeds: list[int]) -> list[str]:
    folders = [out / f"seed-{s}" for s in seeds] + [run_dir(out, s, a) for s in seeds for a in arms]
    files = [out / name for name in REPORT_FILES] + [out / f"seed-{s}" / "init.pt" for s in seeds]
    blocked = [f"{p}: a file, where the comparison needs a folder" for p in folders if _is_other(p)]
    return blocked + [f"{p}: a folder, where the comparison writes a file" for p in files if p.is_dir()]


def _is_other(path: Path) -> bool:
    return path.exists() and not path.is_dir()


def _ours_temporary(name: str, owned: tuple[str, ...]) -> bool:
    """A temporary file of an atomic write of ours (``.<name>.<random>.tmp``), left by a crash."""
    return any(name.startswith(f".{own}.") for own in owned)


def _foreign_entries(out: Path) -> list[str]:
    """What in ``out`` compare did not write, one line each (empty: a comparison of ours)."""
    found = []
    report_ours = _is_our_report_json(out / "report.json")
    for entry in sorted(out.iterdir()):
        name = entry.name
        if (name == LOCK_NAME and entry.is_file()) or _ours_temporary(name, _TOP_FILES):
            continue
        if _SEED_FOLDER.fullmatch(name) and entry.is_dir():
            found += _foreign_in_seed(entry)
        elif VARY_FOLDER.fullmatch(name) and entry.is_dir():
            found += _foreign_entries(entry)
        elif name == COMPARISON_RECORD:
            found += [] if _is_our_record(entry) else [f"{entry}: not a record that cutmix compare wrote"]
        elif name == "report.json":
            found += [] if report_ours else [f"{entry}: not a report that cutmix compare wrote"]
        elif name == "report.md":
            found += [] if _starts_with(entry, b"# CutMix comparison") else [f"{entry}: not a report of ours"]
        elif _is_figure_name(name) and entry.is_file():
            # Figures are written after report.json, so ours come with a report of ours.
            if not (report_ours and _starts_with(entry, PNG_MAGIC)):
                found.append(f"{entry}: not a figure of a comparison of ours")
        elif name == SLURM_FOLDER and entry.is_dir():
            continue  # compare --launcher slurm: submitit's pickles and the jobs' logs
        else:
            found.append(f"{entry}: not written by cutmix compare")
    return found


def _is_figure_name(name: str) -> bool:
    figures = ROBUSTNESS_FIGURES + VARY_FIGURES
    return (name.startswith(("curves", "preview")) and name.endswith(".png")) or name in figures


def _foreign_in_seed(folder: Path) -> list[str]:
    found = []
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if (name == "init.pt" and entry.is_file()) or _ours_temporary(name, ("init.pt",)):
            continue
        if ARM_NAME.fullmatch(name) and entry.is_dir():
            if any(entry.iterdir()) and not (entry / RUN_RECORD).is_file():
                found.append(f"{entry}: no readable {RUN_RECORD}: not a run of a comparison")
            continue
        found.append(f"{entry}: not written by cutmix compare")
    return found


def _is_our_record(path: Path) -> bool:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and {"arms", "seeds", "vary", "meta"} <= set(record)


def _is_our_report_json(path: Path) -> bool:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    # A comparison's report, or the report across the values of --vary.
    keys = ({"arms", "runs", "per_arm", "paired"}, {"arms", "vary", "effects"})
    return isinstance(report, dict) and any(k <= set(report) for k in keys)


def _starts_with(path: Path, prefix: bytes) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(prefix)) == prefix
    except OSError:
        return False


def delete_runs(runs: list[PlannedRun]) -> None:
    """Deletes the folders of ``runs`` (--force), each under its run lock: one that a process is
    training (an orphan, a run started by hand) is refused before any folder is deleted."""
    with contextlib.ExitStack() as locks:
        for run in runs:
            try:
                locks.enter_context(run_lock(run.path))
            except UsageError as exc:
                raise UsageError(f"--force: refusing to delete a run folder in use: {exc}") from None
        for run in runs:
            shutil.rmtree(run.path)
            run.state, run.epochs_done, run.differences = "new", 0, []


def check_kept_inits(runs: list[PlannedRun], out: Path, data: str, num_classes: int) -> None:
    """The kept runs of a seed go on from its init.pt: weights for another number of classes (the
    data set at the same --data changed since) would fail each of them as it loads them."""
    for seed in sorted({r.seed for r in runs if r.state in ("partial", "done")}):
        path = init_path(out, seed)
        if not path.is_file():
            continue
        head = load_weights(path).get("fc.weight")
        outputs = None if head is None or head.dim() != 2 else head.shape[0]
        if outputs is not None and outputs != num_classes:
            raise UsageError(
                f"--data: expected {outputs} classes, as {path} (the start of the runs kept for "
                f"seed {seed}) has, got {num_classes} in {data}: the data set changed since those runs "
                "started; use another --out"
            )
