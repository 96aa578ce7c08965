"""Restores finished comparison runs from their committed records (docs/results/<recipe>/seed-<s>/<arm>/)
into a comparison folder, so that `cutmix compare` counts them instead of training them again.

A record is restored only if its recorded options hash to exactly what the given compare command
would run for that (seed, arm): the same check `cutmix compare` applies to its own run folders.
The checkpoint is not committed, so a restored run cannot be evaluated again or resumed; the file
RESTORED.txt in the folder says where it came from.

    .venv/bin/python scripts/restore_runs.py docs/results/fast-recipe OUT -- --data DATA --recipe fast
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from cutmix.experiment.plan import RUN_RECORD, config_hash, hashed_options, run_dir
from cutmix.runinfo import atomic_write_json
from cutmix.training.config import TrainConfig


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print("usage: restore_runs.py RECORDS OUT -- <compare train options>", file=sys.stderr)
        return 2
    split = argv.index("--")
    records, out = (Path(a) for a in argv[:split])
    from cutmix.training.config import add_train_options, config_from_args

    parser = argparse.ArgumentParser()
    add_train_options(parser)
    base = config_from_args(parser.parse_args(argv[split + 1 :]))
    status = 0
    for summary_path in sorted(records.glob("seed-*/*/summary.json")):
        source = summary_path.parent
        arm, seed = source.name, int(source.parent.name.removeprefix("seed-"))
        recorded = json.loads((source / "config.json").read_text(encoding="utf-8"))["config"]
        wanted = replace(base, mix=arm, seed=seed, init=None)
        old = TrainConfig(**{**recorded, "init": None})
        if config_hash(old) != config_hash(wanted):
            diff = {k: (v, hashed_options(wanted)[k]) for k, v in hashed_options(old).items()
                    if hashed_options(wanted)[k] != v}  # fmt: skip
            print(f"{source}: recorded options differ from the command's, not restored: {diff}")
            status = 1
            continue
        target = run_dir(out, seed, arm)
        if (target / "summary.json").exists():
            print(f"{target}: already finished, left as it is")
            continue
        if target.exists() and any(target.iterdir()):
            print(f"{target}: holds an unfinished run, left as it is")
            status = 1
            continue
        target.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "metrics.jsonl"):
            shutil.copyfile(source / name, target / name)
        # The final weights and the robustness suite's cached results, where committed: compare
        # --robustness then evaluates nothing again, and anyone can from the weights.
        if (source / "model.safetensors").exists():
            shutil.copyfile(source / "model.safetensors", target / "model.safetensors")
        if (source / "robustness").is_dir():
            shutil.copytree(source / "robustness", target / "robustness")
        config = replace(old, init=str((Path(out) / f"seed-{seed}" / "init.pt").resolve()))
        record = {"hash": config_hash(config), "options": hashed_options(config), "arm": arm, "seed": seed}
        atomic_write_json(target / RUN_RECORD, record)
        (target / "RESTORED.txt").write_text(
            f"Restored from the committed records in {source} by scripts/restore_runs.py:\n"
            "config.json, metrics.jsonl, summary.json (and model.safetensors and robustness/ where\n"
            "committed) as the finished run wrote them; no checkpoint.\n",
            encoding="utf-8",
        )
        shutil.copyfile(source / "summary.json", target / "summary.json")  # last: marks the run finished
        print(f"{target}: restored from {source}")
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
