"""Images/s of cutmix.keras.CutMix and keras.layers.CutMix in the same run, for every installed Keras
backend (torch, JAX, TensorFlow), at 32x32 and 224x224, batch 128, float32 channels_last; and how far
each layer's label weights are from the share of pixels it actually pasted.

    .venv/bin/python benchmarks/bench_keras.py                 # every installed backend, ~1 min each
    .venv/bin/python benchmarks/bench_keras.py --backends torch --seconds 2

Each backend runs in its own process (Keras fixes the backend at import). Both layers are called
eagerly on backend tensors, ``layer({"images": x, "labels": one_hot})``, as a data pipeline would;
their timings alternate round by round so that a busy machine slows both alike, and each figure is
the median over the rounds. Goal (issue 12): ours >= 10x keras.layers.CutMix at 32x32 on torch.
The masks rows (issue 13) do the same with uint8 ``segmentation_masks`` (B, H, W, 1) in the dict,
which both layers mix with the images' boxes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = {"torch": "torch", "jax": "jax", "tensorflow": "tensorflow"}  # backend: the module it needs


def worker(sizes: list[int], batch: int, rounds: int, seconds: float) -> dict:
    """Runs in a process whose KERAS_BACKEND is set: rates and the label-weight check, as JSON."""
    import keras
    import numpy as np

    from cutmix.keras import CutMix

    rng = np.random.default_rng(0)
    labels = keras.ops.convert_to_tensor(np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)])
    layers = {"ours": CutMix(alpha=1.0, seed=0), "keras": keras.layers.CutMix(seed=0)}
    result: dict = {"backend": keras.config.backend(), "keras": keras.__version__, "rates": {}, "masks": {}}
    for size in sizes:
        images = keras.ops.convert_to_tensor(rng.random((batch, size, size, 3), dtype=np.float32))
        data = {"images": images, "labels": labels}
        result["rates"][str(size)] = time_layers(layers, data, batch, rounds, seconds)
        masks = keras.ops.convert_to_tensor(rng.integers(0, 21, (batch, size, size, 1), dtype=np.uint8))
        result["masks"][str(size)] = time_layers(
            layers, {**data, "segmentation_masks": masks}, batch, rounds, seconds
        )
    result["weights"] = {name: weight_gap(layer) for name, layer in layers.items()}
    return result


def time_layers(layers: dict, data: dict, batch: int, rounds: int, seconds: float) -> dict[str, float]:
    """Median images/s of each layer on ``data``, the layers alternating round by round."""
    import keras

    timings: dict[str, list[float]] = {name: [] for name in layers}
    for layer in layers.values():  # warm-up (first-call tracing, allocations)
        for _ in range(2):
            keras.ops.convert_to_numpy(layer(data)["labels"])
    for _ in range(rounds):
        for name, layer in layers.items():
            count, start = 0, time.perf_counter()
            while count == 0 or time.perf_counter() - start < seconds:
                out = layer(data)
                count += batch
            keras.ops.convert_to_numpy(out["labels"][:1])  # wait for asynchronous backends
            timings[name].append(count / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in timings.items()}


def weight_gap(layer) -> dict:
    """Pastes 16x16 images whose every pixel is its sample's index and reads back, per sample, the
    share of pixels that came from the partner; compares it with the partner's label weight."""
    import keras
    import numpy as np

    batch, size = 64, 16
    images = np.broadcast_to(np.arange(batch, dtype=np.float32)[:, None, None, None], (batch, size, size, 3))
    labels = np.eye(batch, dtype=np.float32)
    worst = {"gap": 0.0, "weight": 0.0, "share": 0.0}
    gaps = []
    for _ in range(20):
        out = layer({"images": np.ascontiguousarray(images), "labels": labels})
        mixed = np.rint(keras.ops.convert_to_numpy(out["images"])[..., 0]).astype(int)
        targets = keras.ops.convert_to_numpy(out["labels"])
        for i in range(batch):
            other = mixed[i] != i
            if not other.any():
                continue
            partner = int(np.bincount(mixed[i][other]).argmax())
            share, weight = float(other.mean()), float(targets[i, partner])
            gaps.append(abs(weight - share))
            if gaps[-1] > worst["gap"]:
                worst = {"gap": gaps[-1], "weight": weight, "share": share}
    return {"max_gap": max(gaps, default=0.0), "mean_gap": float(np.mean(gaps)) if gaps else 0.0,
            "mixed_samples": len(gaps), "worst": worst}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS), help="those not installed are skipped")
    parser.add_argument("--sizes", default="32,224")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="per layer per round")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads per backend (OMP_NUM_THREADS; torch.set_num_threads)")  # fmt: skip
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.worker:
        if os.environ.get("KERAS_BACKEND") == "torch":
            import torch

            torch.set_num_threads(args.threads)
        print("RESULT " + json.dumps(worker(sizes, args.batch, args.rounds, args.seconds)), flush=True)
        return 0

    results = []
    for backend in args.backends.split(","):
        if backend not in BACKENDS:
            parser.error(f"--backends: expected some of {', '.join(BACKENDS)}, got {backend!r}")
        if importlib.util.find_spec(BACKENDS[backend]) is None:
            print(f"{backend}: not installed, skipped")
            continue
        env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT / "src"),
               "OMP_NUM_THREADS": str(args.threads)}  # fmt: skip
        command = [sys.executable, __file__, "--worker", "--sizes", args.sizes, "--batch", str(args.batch),
                   "--rounds", str(args.rounds), "--seconds", str(args.seconds),
                   "--threads", str(args.threads)]  # fmt: skip
        run = subprocess.run(command, env=env, capture_output=True, text=True)
        lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
        if run.returncode or not lines:
            print(f"{backend}: failed\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
            continue
        results.append(json.loads(lines[-1][len("RESULT ") :]))

    print(f"\nbatch {args.batch}, float32 channels_last, {args.threads} thread(s), images/s "
          f"(median of {args.rounds} rounds)\n")  # fmt: skip
    print("| backend | size | cutmix.keras.CutMix | keras.layers.CutMix | ratio |")
    print("|---|---|---|---|---|")
    for result in results:
        for size, rates in result["rates"].items():
            ratio = rates["ours"] / rates["keras"]
            print(f"| {result['backend']} (Keras {result['keras']}) | {size}x{size} | {rates['ours']:,.0f} | "
                  f"{rates['keras']:,.0f} | {ratio:.1f}x |")  # fmt: skip
    print(f"\nwith uint8 segmentation_masks (B, H, W, 1) in the dict, batch {args.batch}, images/s\n")
    print("| backend | size | cutmix.keras.CutMix | keras.layers.CutMix | ratio |")
    print("|---|---|---|---|---|")
    for result in results:
        for size, rates in result["masks"].items():
            ratio = rates["ours"] / rates["keras"]
            print(f"| {result['backend']} (Keras {result['keras']}) | {size}x{size} | {rates['ours']:,.0f} | "
                  f"{rates['keras']:,.0f} | {ratio:.1f}x |")  # fmt: skip
    print("\nlabel weight vs the share of pixels pasted from the partner (16x16, 20 batches of 64):\n")
    for result in results:
        for name, gap in result["weights"].items():
            worst = gap["worst"]
            line = (f"{result['backend']}: {name}: max |weight - share| = {gap['max_gap']:.4f}, mean "
                    f"{gap['mean_gap']:.4f} over {gap['mixed_samples']} mixed samples")  # fmt: skip
            if gap["max_gap"] > 0:
                line += (f"; worst: partner weight {worst['weight']:.4f} with {worst['share']:.1%} "
                         "of the pixels pasted")  # fmt: skip
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
