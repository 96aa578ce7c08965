"""Throughput of a whole comparison plan at ``--jobs 1`` and ``--jobs N``, side by side in one run.

The plan: arms none and cutmix, one seed, one epoch of the fast recipe (batch 128, crop+flip, CutMix
p = 0.5, flip TTA at test time) on CIFAR-sized synthetic data (32x32, 10 classes), ResNet-20. Each
setting runs the same plan into a fresh folder; images/s = training images of the plan / wall time of
the whole ``compare()`` call (start-up, data, evaluation and report included, as a user waits for
them). Settings alternate over ``--rounds`` to spread drift on a shared machine.

    .venv/bin/python benchmarks/bench_compare.py                       # ~6 min on 2 cores
    .venv/bin/python benchmarks/bench_compare.py --train 12800 --rounds 1   # quicker

Goal (issue 11): ``--jobs 2`` >= 1.15x ``--jobs 1`` on this project's 2-core machine. Run it on idle cores.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from cutmix.experiment.comparison import compare
from cutmix.experiment.runners import available_cores
from cutmix.training.config import resolve_config


def one_plan(jobs: int, threads: int | None, train_images: int, folder: Path) -> float:
    """Wall seconds of one comparison plan."""
    base = resolve_config("fast", data=f"synthetic:{train_images}", epochs=1, device="cpu", mix_off_epochs=0)
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        compare(
            base, ("none", "cutmix"), [0], folder, progress=False, argv=["bench"], jobs=jobs, threads=threads
        )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--train", type=int, default=25600, help="training images per run (default 200 steps)"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2, help="the parallel setting compared with --jobs 1")
    args = parser.parse_args()
    cores = available_cores()
    settings = [(1, None), (args.jobs, None)]
    plan_images = 2 * args.train
    walls: dict[int, list[float]] = {jobs: [] for jobs, _ in settings}
    print(f"{cores} cores; plan: 2 runs x {args.train} images, 1 epoch of the fast recipe, ResNet-20")
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(args.rounds):
            for jobs, threads in settings:
                wall = one_plan(jobs, threads, args.train, Path(tmp) / f"jobs{jobs}")
                walls[jobs].append(wall)
                print(
                    f"round {round_index + 1}: --jobs {jobs}: {wall:6.1f} s, {plan_images / wall:6.0f} img/s"
                )
    best = {jobs: plan_images / min(w) for jobs, w in walls.items()}
    median = {jobs: plan_images / statistics.median(w) for jobs, w in walls.items()}
    print(f"--jobs 1 (in this process, {cores} threads): best {best[1]:.0f} img/s, median {median[1]:.0f}")
    each = max(1, cores // args.jobs)
    print(f"--jobs {args.jobs} ({each} thread(s) each): best {best[args.jobs]:.0f} img/s, "
          f"median {median[args.jobs]:.0f}")  # fmt: skip
    print(f"ratio --jobs {args.jobs} / --jobs 1: {best[args.jobs] / best[1]:.2f}x (best), "
          f"{median[args.jobs] / median[1]:.2f}x (median); goal >= 1.15x")  # fmt: skip


if __name__ == "__main__":
    main()
