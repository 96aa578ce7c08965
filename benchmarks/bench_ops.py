"""Images/s of our per-sample CutMix (and MixUp, Cutout) beside a plain memory copy of the same batch,
measured in the same run, and — where their venvs exist — the peers' ops on the same machine.

    .venv/bin/python benchmarks/bench_ops.py                       # CPU, the full table, ~2 min
    .venv/bin/python benchmarks/bench_ops.py --quick               # batch 128 only
    .venv/bin/python benchmarks/bench_ops.py --device cuda         # on a GPU: 224x224 float32 batch 256

Goals (issue "Foundation"): float32 32x32 batch 128: CutMix >= 25% of the memory-copy rate; at 224x224
>= 50%; on a GPU at 224x224 float32 batch 256, >= 50% of the copy bandwidth. Run on an idle machine.
Peers are timed by ../shared/tools/peers/peer_ops.py (torchvision, timm, kornia) and keras_ops.py, each in
its own venv (PEERS_VENV, default /tmp/cutmix-peers; SEED_VENV, default /tmp/cutmix-seed).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
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
        out = subprocess.run(
            [str(python), str(script), *args], capture_output=True, text=True, timeout=600, check=True
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=1.5, help="timing window per measurement")
    parser.add_argument("--quick", action="store_true", help="batch 128 only")
    parser.add_argument("--no-peers", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
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
