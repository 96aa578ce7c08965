"""`cutmix.compat.timm.Mixup` beside timm's own `Mixup`, per mode, in the same process, at batch 128,
32x32, float32, one thread: needs timm, so run it with the peers' venv (../shared/tools/peers/):

    PYTHONPATH=src /tmp/cutmix-peers/bin/python benchmarks/bench_compat_timm.py [--before COMMIT]

timm mixes the caller's batch in place; ours returns a new tensor. So timm is timed twice: called as
its users call it (in place, on a batch that each call mixes again), and on a copy of the batch (the
cost of keeping the input, as ours does). Each round is one process per version, timing timm and that
version side by side; with ``--before COMMIT`` (the package as of that commit, read with ``git show``
into a temporary folder) the two versions' processes alternate, round after round. Figures are
medians over the rounds; each ratio is taken within one process, against its own timm.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCH, SIZE = 128, 32
MODES = ("batch", "pair", "elem")


def rate(fn, seconds: float) -> float:
    """Images/s of ``fn`` (one batch per call) over about ``seconds``."""
    fn()
    count, start = 0, time.perf_counter()
    while count == 0 or time.perf_counter() - start < seconds:
        fn()
        count += 1
    return count * BATCH / (time.perf_counter() - start)


def worker(seconds: float) -> dict:
    """One round: timm's and this process's ``cutmix`` Mixup in each mode, images/s."""
    import timm
    import torch
    from timm.data import Mixup as TimmMixup

    from cutmix.compat.timm import Mixup

    torch.set_num_threads(1)
    kwargs = {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "num_classes": 10}
    images = torch.rand(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 10, (BATCH,), generator=torch.Generator().manual_seed(1))
    theirs, ours, scratch = TimmMixup(**kwargs), Mixup(**kwargs, seed=0), images.clone()
    out = {}
    for mode in MODES:
        theirs.mode = ours.mode = mode
        out[mode] = {
            "timm in place": rate(lambda: theirs(scratch, labels), seconds),
            "timm on a copy": rate(lambda: theirs(images.clone(), labels), seconds),
            "ours": rate(lambda: ours(images, labels), seconds),
        }
    return {"timm": timm.__version__, "torch": torch.__version__, "modes": out}


def run_round(src: Path, seconds: float) -> dict:
    command = [sys.executable, __file__, "--worker", "--seconds", str(seconds)]
    env = {"PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def show(name: str, rounds: list[dict]) -> None:
    print(f"{name} (timm {rounds[0]['timm']}, torch {rounds[0]['torch']}):")
    for mode in MODES:
        rows = [r["modes"][mode] for r in rounds]
        rates = ", ".join(f"{k} {statistics.median(r[k] for r in rows):,.0f}" for k in rows[0])
        in_place = statistics.median(r["ours"] / r["timm in place"] for r in rows)
        on_copy = statistics.median(r["ours"] / r["timm on a copy"] for r in rows)
        print(f"  {mode:5s} img/s: {rates}; ours / timm in place {in_place:.2f}x, "
              f"ours / timm on a copy {on_copy:.2f}x")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="also time the package as of this git commit")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.4, help="per timing")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.seconds)))
        return 0
    print(f"batch {BATCH}, {SIZE}x{SIZE}, float32, 1 thread; medians over {args.rounds} rounds")
    with tempfile.TemporaryDirectory() as folder:
        versions = {"this checkout": ROOT / "src"}
        if args.before:
            sys.path.insert(0, str(ROOT / "benchmarks"))
            from bench_ops import extract_before

            src = extract_before(ROOT, args.before, Path(folder))
            if src is None:
                print(f"--before: expected a commit with src/cutmix, got {args.before!r}", file=sys.stderr)
                return 2
            versions = {f"before ({args.before})": src, **versions}
        rounds: dict[str, list[dict]] = {name: [] for name in versions}
        for _ in range(args.rounds):
            for name, src in versions.items():
                rounds[name].append(run_round(src, args.seconds))
    for name, measured in rounds.items():
        show(name, measured)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
