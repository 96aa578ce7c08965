"""`cutmix.compat.timm.Mixup` beside timm's own `Mixup`, per mode, in the same process, at batch 128,
32x32, float32, one thread: needs timm, so run it with the peers' venv (../shared/tools/peers/):

    PYTHONPATH=src /tmp/cutmix-peers/bin/python benchmarks/bench_compat_timm.py [--before COMMIT]

timm mixes the caller's batch in place; ours returns a new tensor. So timm is timed twice: called as
its users call it (in place, on a batch that each call mixes again), and on a copy of the batch (the
cost of keeping the input, as ours does). Figures are medians over interleaved rounds; the ratios are
taken within a round. With ``--before COMMIT`` the package as of that commit (read with ``git show``
into a temporary folder) is timed the same way in a process of its own, each version against the timm
of its own process.
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


def worker(rounds: int, seconds: float) -> dict:
    """Times timm's and this process's ``cutmix`` Mixup in each mode; medians and per-round ratios."""
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
        rows = []
        for _ in range(rounds):
            rows.append({
                "timm in place": rate(lambda: theirs(scratch, labels), seconds),
                "timm on a copy": rate(lambda: theirs(images.clone(), labels), seconds),
                "ours": rate(lambda: ours(images, labels), seconds),
            })  # fmt: skip
        out[mode] = {
            "img/s": {k: statistics.median(r[k] for r in rows) for k in rows[0]},
            "ours / timm in place": statistics.median(r["ours"] / r["timm in place"] for r in rows),
            "ours / timm on a copy": statistics.median(r["ours"] / r["timm on a copy"] for r in rows),
        }
    import timm

    return {"timm": timm.__version__, "torch": torch.__version__, "modes": out}


def run_version(src: Path, rounds: int, seconds: float) -> dict:
    command = [sys.executable, __file__, "--worker", "--rounds", str(rounds), "--seconds", str(seconds)]
    env = {"PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def show(name: str, result: dict) -> None:
    print(f"{name} (timm {result['timm']}, torch {result['torch']}):")
    for mode, row in result["modes"].items():
        rates = ", ".join(f"{k} {v:,.0f}" for k, v in row["img/s"].items())
        print(f"  {mode:5s} img/s: {rates}; ours / timm in place {row['ours / timm in place']:.2f}x, "
              f"ours / timm on a copy {row['ours / timm on a copy']:.2f}x")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="also time the package as of this git commit")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.4, help="per timing")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.rounds, args.seconds)))
        return 0
    print(f"batch {BATCH}, {SIZE}x{SIZE}, float32, 1 thread; medians over {args.rounds} rounds")
    if args.before:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from bench_ops import extract_before

        with tempfile.TemporaryDirectory() as folder:
            src = extract_before(ROOT, args.before, Path(folder))
            if src is None:
                print(f"--before: expected a commit with src/cutmix, got {args.before!r}", file=sys.stderr)
                return 2
            show(f"before ({args.before})", run_version(src, args.rounds, args.seconds))
    show("this checkout", run_version(ROOT / "src", args.rounds, args.seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
