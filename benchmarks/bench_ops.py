"""Images/s of our per-sample CutMix (and MixUp, Cutout) beside a plain memory copy of the same batch,
measured in the same run, and — where their venvs exist — the peers' ops on the same machine.

    .venv/bin/python benchmarks/bench_ops.py                       # CPU, the full table, ~2 min
    .venv/bin/python benchmarks/bench_ops.py --quick               # batch 128 only
    .venv/bin/python benchmarks/bench_ops.py --device cuda         # on a GPU: 224x224 float32 batch 256

Goals (issue "Foundation"): float32 32x32 batch 128: CutMix >= 25% of the memory-copy rate; at 224x224
>= 50%; on a GPU at 224x224 float32 batch 256, >= 50% of the copy bandwidth. Run on an idle machine.
Peers are timed by ../shared/tools/peers/peer_ops.py (torchvision, timm, kornia) and keras_ops.py, each in
its own venv (PEERS_VENV, default /tmp/cutmix-peers; SEED_VENV, default /tmp/cutmix-seed).

On the CPU the run starts with the ops' fixed cost (issue 21: CutMix, MixUp and Cutout >= 25% of a copy
at 32x32, batch 128, float32), before and after: the package as of ``--before`` (a git commit, default
f4302b0, read with ``git show`` into a temporary folder) and this checkout, each in its own process,
timed in interleaved rounds (each round times a memory copy too; figures are medians over the rounds,
ratios taken within a round), with the ATen ops one call launches, counted by ``torch.profiler``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from cutmix import CutMix, Cutout, MixUp

ROOT = Path(__file__).resolve().parents[1]
PEERS_DIR = ROOT.parent / "shared" / "tools" / "peers"


def rate(fn, batch: int, device: torch.device, seconds: float) -> float:
    """Images per second of ``fn()``, timed for about ``seconds`` after a warm-up."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        fn()
    sync()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        count += batch
    sync()
    return count / (time.perf_counter() - start)


def make_batch(batch: int, size: int, dtype: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    if dtype == "uint8":
        images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
    else:
        images = torch.rand(batch, 3, size, size, generator=g)
    return images.to(device), torch.randint(0, 10, (batch,), generator=g).to(device)


def ours(batch: int, size: int, dtype: str, device: torch.device, seconds: float) -> dict[str, float]:
    images, labels = make_batch(batch, size, dtype, device)
    g = torch.Generator().manual_seed(1)
    cutmix = CutMix(alpha=1.0, num_classes=10, generator=g)
    mixup = MixUp(alpha=1.0, num_classes=10, generator=g)
    cutout = Cutout(size=size // 2, num_classes=10, generator=g)
    return {
        "memory copy": rate(lambda: images.clone(), batch, device, seconds),
        "cutmix CutMix (per sample)": rate(lambda: cutmix(images, labels), batch, device, seconds),
        "cutmix MixUp (per sample)": rate(lambda: mixup(images, labels), batch, device, seconds),
        "cutmix Cutout (per sample)": rate(lambda: cutout(images, labels), batch, device, seconds),
    }


def peer_rates(python: Path, script: Path, args: list[str]) -> dict[str, float]:
    """Runs a peer script in its own venv and parses its 'name  1,234 img/s' lines."""
    if not (python.exists() and script.exists()):
        return {}
    try:
        env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # as many threads as ours
        out = subprocess.run(
            [str(python), str(script), *args],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
            env=env,
        ).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"  (peer {script.name} failed: {exc})")
        return {}
    rates = {}
    for line in out.splitlines():
        match = re.match(r"(.+?)\s+([\d,]+) img/s", line)
        if match:
            rates[match.group(1).strip()] = float(match.group(2).replace(",", ""))
    return rates


def report(title: str, rates: dict[str, float], copy: float) -> None:
    print(f"  {title}")
    for name, value in rates.items():
        print(f"    {name:44s} {value:>12,.0f} img/s   {value / copy:6.1%} of its run's copy")


# ----------------------------------------------------------------------------------------------
# The fixed cost at 32x32, batch 128, float32: before and after, in interleaved rounds
# ----------------------------------------------------------------------------------------------

FIXED = (128, 32)  # batch, size
CALLS = ("CutMix", "MixUp", "Cutout")


def extract_before(root: Path, commit: str, folder: Path) -> Path | None:
    """The package ``src/cutmix`` as of ``commit``, written under ``folder`` (read with ``git show``:
    no change to the checkout's git state); None where git or the commit is not there."""
    try:
        names = subprocess.run(["git", "-C", str(root), "ls-tree", "-r", "--name-only", commit, "src/cutmix"],
                               capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
        for name in names:
            blob = subprocess.run(["git", "-C", str(root), "show", f"{commit}:{name}"], capture_output=True,
                                  check=True).stdout  # fmt: skip
            target = folder / Path(name).relative_to("src")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blob)
    except (OSError, subprocess.CalledProcessError):
        return None
    return folder if names else None


def aten_counts(op, images: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """ATen ops one call launches without grad, a call that draws nothing ahead (the third): (at top
    level, i.e. called from Python with no aten:: op above them; in all, nested ones included)."""
    from torch.profiler import ProfilerActivity, profile

    op(images, labels), op(images, labels)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        op(images, labels)
    events = [e for e in prof.events() if e.name.startswith("aten::")]

    def nested(event) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith("aten::"):
                return True
            parent = parent.cpu_parent
        return False

    return sum(not nested(e) for e in events), len(events)


def per_call_us(fn, seconds: float = 0.08, per: int = 1) -> float:
    """µs per call of ``fn`` (``per``: calls of the op that one ``fn()`` stands for)."""
    fn()
    count, start = 0, time.perf_counter()
    while count == 0 or time.perf_counter() - start < seconds:
        fn()
        count += 1
    return (time.perf_counter() - start) / count / per * 1e6


def kernels_alone(images: torch.Tensor, params) -> Callable[[], None]:
    """CutMix's pixel work and nothing else: the three kernels a call cannot do without (gather the
    partners, build the box mask, blend), into buffers made once: the floor of the op's cost."""
    out, mask = torch.empty_like(images), torch.empty(images.shape[0], 1, *images.shape[2:])
    partner, rows, cols = params.partner, params.box_rows[:, None, :, None], params.box_cols[:, None, None, :]

    def run() -> None:
        torch.index_select(images, 0, partner, out=out)
        torch.mul(rows, cols, out=mask)
        torch.lerp(images, out, mask, out=out)

    return run


def fixed_cost_setup() -> dict:
    """The worker's batch, ops and timed steps (in whichever ``cutmix`` it imports)."""
    import cutmix.ops as ops
    from cutmix.ops.classes import _check_batch

    batch, size = FIXED
    images, labels = make_batch(batch, size, "float32", torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    ops_ = {"CutMix": CutMix(num_classes=10, generator=g), "MixUp": MixUp(num_classes=10, generator=g),
            "Cutout": Cutout(size=size // 2, num_classes=10, generator=g)}  # fmt: skip
    targets = ops.to_targets(labels, 10)
    one = {"CutMix": ops.sample_cutmix_params(batch, size, size, generator=g),
           "MixUp": ops.sample_mixup_params(batch, generator=g),
           "Cutout": ops.sample_cutout_params(batch, size, size, size=size // 2, generator=g)}  # fmt: skip
    steps = {
        "memory copy": lambda: images.clone(),
        **{f"{name}(...)(images, labels)": (lambda op=op: op(images, labels)) for name, op in ops_.items()},
        "sample_cutmix_params, per batch of 32": (lambda: ops.sample_cutmix_params(
            batch, size, size, generator=g, batches=32), 32),
        "sample_mixup_params, per batch of 32": (
            lambda: ops.sample_mixup_params(batch, generator=g, batches=32), 32),
        "sample_cutout_params, per batch of 32": (lambda: ops.sample_cutout_params(
            batch, size, size, size=size // 2, generator=g, batches=32), 32),
        "apply_cutmix": lambda: ops.apply_cutmix(images, targets, one["CutMix"]),
        "apply_mixup": lambda: ops.apply_mixup(images, targets, one["MixUp"]),
        "apply_cutout": lambda: ops.apply_cutout(images, one["Cutout"]),
        "to_targets (int ids, K=10)": lambda: ops.to_targets(labels, 10),
        "CutMix's kernels alone (gather, mask, blend; reused buffers)": kernels_alone(images, one["CutMix"]),
        "input checks": lambda: _check_batch(images, labels, "channels_first", 10),
    }  # fmt: skip
    counts = {name: aten_counts(op, images, labels) for name, op in ops_.items()}
    return {"steps": steps, "counts": counts}


def fixed_cost_worker(threads: int) -> int:
    """A worker process: prints its ATen counts, then one JSON line of µs per step for each line read."""
    torch.set_num_threads(threads)
    setup = fixed_cost_setup()
    print(json.dumps({"counts": setup["counts"]}), flush=True)
    for _ in sys.stdin:
        timings = {}
        with torch.no_grad():
            for name, step in setup["steps"].items():
                fn, per = step if isinstance(step, tuple) else (step, 1)
                timings[name] = per_call_us(fn, per=per)
        print(json.dumps(timings), flush=True)
    return 0


def fixed_cost(root: Path, before: str, folder: Path, rounds: int, threads: int) -> None:
    """Runs the 'before' and 'after' workers in interleaved rounds and prints their figures."""
    versions = {"after": root / "src"}
    old = extract_before(root, before, folder) if before else None
    if old is not None:
        versions = {f"before ({before})": old, **versions}
    else:
        print(f"(no 'before' figures: commit {before!r} not readable with git)")
    workers, counts = {}, {}
    for name, path in versions.items():
        env = {**os.environ, "PYTHONPATH": str(path), "OMP_NUM_THREADS": str(threads)}
        workers[name] = subprocess.Popen(
            [sys.executable, __file__, "--fixed-cost-worker", "--threads", str(threads)], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            cwd=str(folder),
        )  # fmt: skip
        counts[name] = json.loads(workers[name].stdout.readline())["counts"]
    results: dict[str, list[dict]] = {name: [] for name in workers}
    for _ in range(rounds):
        for name, worker in workers.items():
            worker.stdin.write("round\n")
            worker.stdin.flush()
            results[name].append(json.loads(worker.stdout.readline()))
    for worker in workers.values():
        worker.stdin.close()
        worker.wait()
    report_fixed_cost(results, counts, rounds, threads)


def report_fixed_cost(results: dict[str, list[dict]], counts: dict, rounds: int, threads: int) -> None:
    batch, size = FIXED
    print(f"fixed cost: batch {batch}, {size}x{size}x3 float32, CPU, {threads} thread(s), no grad; median "
          f"of {rounds} interleaved rounds (ratios to the copy taken within each round)\n")  # fmt: skip
    names = list(results)
    print("| step | " + " | ".join(f"{n}: µs per call (% of copy rate)" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for step in results[names[0]][0]:
        cells = []
        for name in names:
            rows = results[name]
            us = statistics.median(r[step] for r in rows)
            share = statistics.median(r["memory copy"] / r[step] for r in rows)
            cells.append(f"{us:,.1f} ({share:.1%})")
        print(f"| {step} | " + " | ".join(cells) + " |")
    print("\nATen ops one call launches (top level / in all), a call that draws nothing ahead:\n")
    print("| op | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for op in CALLS:
        print(f"| {op} | " + " | ".join(f"{counts[n][op][0]} / {counts[n][op][1]}" for n in names) + " |")
    if len(names) == 2:
        print()
        for op in CALLS:
            step = f"{op}(...)(images, labels)"
            speedup = statistics.median(
                b[step] / a[step] for b, a in zip(*(results[n] for n in names), strict=True)
            )
            print(f"{op}: after / before {speedup:.2f}x faster (median of the rounds' ratios)")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=1.5, help="timing window per measurement")
    parser.add_argument("--quick", action="store_true", help="batch 128 only")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument(
        "--before", default="f4302b0", help="git commit of the 'before' fixed cost ('': none)"
    )
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds of the fixed-cost section")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads on the CPU (1: the cores are shared)")  # fmt: skip
    parser.add_argument("--no-fixed-cost", action="store_true")
    parser.add_argument("--fixed-cost-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fixed_cost_worker:
        return fixed_cost_worker(args.threads)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    if device.type == "cpu" and not args.no_fixed_cost:
        with tempfile.TemporaryDirectory(prefix="cutmix-before-") as folder:
            fixed_cost(ROOT, args.before, Path(folder), args.rounds, args.threads)
    peers_python = Path(os.environ.get("PEERS_VENV", "/tmp/cutmix-peers")) / "bin" / "python"
    seed_python = Path(os.environ.get("SEED_VENV", "/tmp/cutmix-seed")) / "bin" / "python"

    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads")
    if device.type == "cuda":
        configs = [(256, 224, "float32"), (512, 32, "float32"), (256, 224, "uint8")]
    elif args.quick:
        configs = [(128, 32, "float32"), (128, 224, "float32")]
    else:
        configs = [(b, s, d) for s in (32, 224) for d in ("float32", "uint8") for b in (32, 128, 512)]
    for batch, size, dtype in configs:
        print(f"\nbatch {batch}, {size}x{size}x3, {dtype}")
        measured = ours(batch, size, dtype, device, args.seconds)
        copy = measured["memory copy"]
        report("ours (this process)", measured, copy)
        if device.type == "cuda":
            nbytes = batch * 3 * size * size * (1 if dtype == "uint8" else 4)
            print(f"    copy bandwidth {2 * nbytes * copy / batch / 1e9:,.0f} GB/s (read + write)")
        if args.no_peers or device.type != "cpu" or batch != 128:
            continue
        peers = peer_rates(peers_python, PEERS_DIR / "peer_ops.py", [str(batch), str(size), dtype])
        if peers:
            peer_copy = peers.pop("memory copy (x.clone())", float("nan"))
            report("peers (own venv, same machine)", peers, peer_copy)
            ours_rate = measured["cutmix CutMix (per sample)"]
            for name, value in peers.items():
                print(f"    ours / {name:37s} {ours_rate / value:8.1f}x")
        keras = peer_rates(seed_python, PEERS_DIR / "keras_ops.py", [str(batch), str(size)])
        if keras:
            keras_copy = next((v for k, v in keras.items() if "copy" in k), float("nan"))
            report("keras (seed venv)", {k: v for k, v in keras.items() if "copy" not in k}, keras_copy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
