"""Speed of the robustness suite beside plain evaluation of the same model, in the same run.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_robustness.py [--quick | --images N]
        [--checkpoint CKPT] [--data SPEC] [--batch-size 500] [--device cpu]

The suite (:func:`cutmix.robustness.evaluate_robustness`) passes each test image through the model
about 76 times (clean with its FGSM gradient, 18 occlusions, 5 FGSM steps, 2 noise images, 50
corruptions: its ``forward_equivalents``, the backward pass not counted). Its speed is those forward
passes per second of its wall time, everything included (the corruptions, the attack, the metrics);
plain evaluation is the same model's forward passes over the same images at the same batch size,
timed before and after the suite (the mean of the two, so that a neighbour's burst on a shared CPU
weighs on both). The ratio is the number to compare across machines (the goal: >= 0.8).

Without ``--checkpoint`` the model is a seeded, untrained ResNet-20 (speed does not depend on the
weights); without ``--data`` the images are 10,000 generated synthetic test images (``--quick``:
300 of them; ``--images N``: N of them, at most the test split, and the suite takes its seeded
class-stratified subset of N while plain evaluation takes the first N). The load average printed
says how busy the cores were.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import cutmix
from cutmix.data import Dataset, load_dataset
from cutmix.data.synthetic import make_synthetic
from cutmix.models import resnet_v1
from cutmix.robustness import DEFAULT_BATCH_SIZE, evaluate_robustness
from cutmix.robustness.attacks import PixelModel, pixels


def untrained_checkpoint(folder: Path, classes: list[str], depth: int = 20) -> Path:
    """A checkpoint of a seeded, untrained ResNet (what load_model reads: model, config, classes)."""
    model = resnet_v1(depth, len(classes), generator=torch.Generator().manual_seed(0))
    path = folder / "checkpoint.pt"
    torch.save({"model": model.state_dict(), "config": {"depth": depth, "data": "synthetic"},
                "classes": classes}, path)  # fmt: skip
    return path


@torch.no_grad()
def plain_seconds(model: PixelModel, images: np.ndarray, batch_size: int, device: torch.device) -> float:
    """Wall time of one plain evaluation pass: each batch to floats in [0, 1], forward, argmax."""
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        model(pixels(images[i : i + batch_size], device)).argmax(1).cpu()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="300 images instead of 10,000")
    size.add_argument("--images", type=int, help="this many images instead of 10,000")
    parser.add_argument("--checkpoint", help="a run's checkpoint.pt (default: an untrained ResNet-20)")
    parser.add_argument("--data", help="a data set with a test split (default: generated synthetic images)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.images is not None and args.images < 1:
        parser.error(f"--images: expected an int >= 1, got {args.images}")
    n = 300 if args.quick else args.images or 10_000
    dataset: Dataset = load_dataset(args.data, progress=False) if args.data else make_synthetic(2000, n)
    n = min(n, len(dataset.test_labels))
    import torchmetrics  # noqa: F401 - a once-per-process import, not the suite's work

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = (
            Path(args.checkpoint) if args.checkpoint else untrained_checkpoint(Path(tmp), dataset.classes)
        )
        loaded = cutmix.load_model(checkpoint, args.device)
        device = next(loaded.model.parameters()).device
        model = PixelModel(loaded.model, loaded.config.normalize).to(device).eval()
        images = dataset.test_images[:n]
        # A whole pass to warm up: after a one-batch warm-up the first timed pass still ran 1.3-1.5x
        # slower than the one after the suite, on idle cores (2026-12-02).
        plain_seconds(model, images, args.batch_size, device)
        before = plain_seconds(model, images, args.batch_size, device)
        start = time.perf_counter()
        result = evaluate_robustness(checkpoint, dataset, limit=None if n == len(dataset.test_labels) else n,
                                     batch_size=args.batch_size, device=args.device)  # fmt: skip
        suite = time.perf_counter() - start
        after = plain_seconds(model, images, args.batch_size, device)
    plain_rate = n / ((before + after) / 2)
    suite_rate = result["forward_equivalents"] / suite
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    threads = torch.get_num_threads()
    per_image = result["forward_equivalents"] / n
    print(f"images: {n}, batch size {args.batch_size}, device {device}, torch threads {threads}, "
          f"CPUs {os.cpu_count()}, load average (1, 5, 15 min) {load}")  # fmt: skip
    print(f"plain evaluation: {plain_rate:10.1f} images/s "
          f"({before:.2f} s before, {after:.2f} s after the suite)")  # fmt: skip
    print(f"robustness suite: {suite_rate:10.1f} forward-equivalent images/s "
          f"({result['forward_equivalents']} forward passes, {per_image:.0f} per image)")  # fmt: skip
    print(f"ratio suite / plain: {suite_rate / plain_rate:.2f} (goal >= 0.8)")
    minutes = suite / n * 10_000 / 60
    full = f" ({minutes:.1f} min)" if n == 10_000 else f" (scaled to 10,000 images: {minutes:.1f} min)"
    full = "" if n < 1000 else full
    print(f"suite wall time: {suite:.1f} s for {n} images{full}")


if __name__ == "__main__":
    main()
