"""Throughput of DeviceLoader beside a plain memory copy of the same batch, in the same run.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_loader.py [--n 50000] [--batch-sizes 32 128 512]

For each augment ("none", "crop-flip") and batch size it prints the loader's images/s (float32
output, normalised, channels_last unless --channels-first), the images/s of ``dst.copy_(src)`` of a
float32 tensor shaped like that output, and their ratio: how many memcpys of its own output one
batch costs. Timings are medians over many batches, so a neighbour's burst on a shared CPU moves
them less than a mean would, and the loader and the copy take turns batch by batch, so both see
the same neighbours; the ratio is the number to compare across machines.

If the CIFAR-10 JPEG tree exists (``--data``, default ../shared/data/cifar10-jpeg), it also times
``cutmix.data.load_dataset`` on it: cold (decoding every JPEG into an empty temporary cache) and
warm (from that cache), then building a DeviceLoader on the result.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cutmix.data import DeviceLoader

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg"


def median_seconds(steps: list[Callable[[], object]], min_time: float, min_rounds: int = 20) -> list[float]:
    """Median wall time of each step, the steps taking turns, over at least ``min_time`` seconds.

    Taking turns means a neighbour's burst on a shared CPU hits every step alike, so their ratio
    holds up even when the absolute numbers do not.
    """
    for step in steps:
        for _ in range(3):
            step()
    times: list[list[float]] = [[] for _ in steps]
    start = time.perf_counter()
    while len(times[0]) < min_rounds or time.perf_counter() - start < min_time:
        for step, bucket in zip(steps, times, strict=True):
            t0 = time.perf_counter()
            step()
            bucket.append(time.perf_counter() - t0)
    return [statistics.median(bucket) for bucket in times]


def loader_step(loader: DeviceLoader) -> Callable[[], object]:
    """One batch per call, starting the next epoch when one ends."""
    state = {"it": iter(loader)}

    def step() -> object:
        try:
            return next(state["it"])
        except StopIteration:
            state["it"] = iter(loader)
            return next(state["it"])

    return step


def copy_step(batch: int, size: int, channels_last: bool) -> Callable[[], object]:
    """``dst.copy_(src)`` of a float32 batch shaped and laid out like the loader's output."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    src = torch.rand(batch, 3, size, size).contiguous(memory_format=memory_format)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def throughput_table(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.n, args.size, args.size, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.n)
    channels_last = not args.channels_first
    print(f"{'augment':>10} {'batch':>6} {'loader img/s':>14} {'copy img/s':>14} {'copy/loader':>12}")
    for augment in ("none", "crop-flip"):
        for batch in args.batch_sizes:
            loader = DeviceLoader(
                images,
                labels,
                batch,
                augment=augment,
                mean=CIFAR_MEAN,
                std=CIFAR_STD,
                channels_last=channels_last,
                seed=0,
            )
            loader_s, copy_s = median_seconds(
                [loader_step(loader), copy_step(batch, args.size, channels_last)], args.min_time
            )
            loader_rate, copy_rate = batch / loader_s, batch / copy_s
            print(
                f"{augment:>10} {batch:>6} {loader_rate:>14,.0f} {copy_rate:>14,.0f} "
                f"{copy_rate / loader_rate:>11.1f}x"
            )


def time_loading(data: Path) -> None:
    from cutmix.data import load_dataset

    with tempfile.TemporaryDirectory(prefix="bench-loader-cache-") as cache:
        for label in ("cold (decode JPEGs)", "warm (from cache)"):
            t0 = time.perf_counter()
            dataset = load_dataset(data, cache_dir=cache, progress=False, download=False)
            print(f"load_dataset {label}: {time.perf_counter() - t0:.2f} s  {dataset!r}")
    t0 = time.perf_counter()
    loader = DeviceLoader(dataset.train_images, dataset.train_labels, 512, augment="crop-flip")
    next(iter(loader))
    print(f"DeviceLoader build + first batch: {time.perf_counter() - t0:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50_000, help="images in the synthetic split")
    parser.add_argument("--size", type=int, default=32, help="image height = width")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds measured per row")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--channels-first", action="store_true", help="contiguous NCHW output instead")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="image tree to time loading")
    parser.add_argument("--no-load", action="store_true", help="skip timing load_dataset")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, n={args.n}, {args.size}x{args.size}")
    throughput_table(args)
    if not args.no_load:
        if args.data.is_dir():
            time_loading(args.data)
        else:
            print(f"no data at {args.data}: skipping the load_dataset timing")


if __name__ == "__main__":
    main()
