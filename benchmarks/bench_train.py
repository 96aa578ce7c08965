"""Training throughput, side by side in one run: our training step (loader + mixing op + the trainer's
``train_step``), a bare PyTorch loop over the same model and a fixed batch (the bound for our
overhead), the mixing op alone on the same batch, and — where ../shared/tools/peers' seed venv exists —
the Keras example's own code at batch 32.

    .venv/bin/python benchmarks/bench_train.py                   # CPU, batch 32 and 128, ~3 min
    .venv/bin/python benchmarks/bench_train.py --batch 512 --device cuda --steps 200   # one GPU

Goals (issue "Training"): our step >= 0.95x the bare loop; the mixing op <= 2% of the step time; recipe
seed (batch 32) >= 1.5x the seed's img/s; recipe fast >= 3x the seed's. Run on an idle machine.
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
import torch.nn.functional as F

from cutmix.data import DeviceLoader, load_dataset
from cutmix.models import resnet_v1
from cutmix.ops import CutMix
from cutmix.training.loop import train_step

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT.parent / "shared" / "tools" / "peers"
JPEG_TREE = ROOT.parent / "shared" / "data" / "cifar10-jpeg"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, steps: int, batch: int, device: torch.device, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return steps * batch / (time.perf_counter() - start)


def make_model(device: torch.device, channels_last: bool, compile_model: bool):
    model = resnet_v1(20, 10, generator=torch.Generator().manual_seed(0)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compile_model else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    return model, net, optimizer


def measure(batch: int, device: torch.device, steps: int, autocast, channels_last: bool, compile_model: bool):
    dataset = load_dataset("synthetic:8192", progress=False)
    loader = DeviceLoader(
        dataset.train_images, dataset.train_labels, batch, device=device, augment="crop-flip",
        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), channels_last=channels_last,
    )  # fmt: skip
    mix = CutMix(alpha=1.0, num_classes=10, generator=torch.Generator().manual_seed(1))
    images, labels = next(iter(loader))

    # Bare loop: a fixed batch, hard labels, nothing but forward, backward, step.
    model, net, optimizer = make_model(device, channels_last, compile_model)

    def bare() -> None:
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            loss = F.cross_entropy(net(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    # Ours: the trainer's step, fed by the device loader and the mixing op, as in cutmix.training.loop.
    model2, net2, optimizer2 = make_model(device, channels_last, compile_model)
    batches = iter(())

    def ours() -> None:
        nonlocal batches
        batch_ = next(batches, None)
        if batch_ is None:
            batches = iter(loader)
            batch_ = next(batches)
        mixed, targets = mix(batch_[0], batch_[1])
        train_step(net2, model2, optimizer2, mixed, targets, 0.0, autocast)

    rates = {}
    # Interleave the two so that machine noise hits both alike; keep the best of three rounds.
    for _ in range(3):
        rates["bare"] = max(rates.get("bare", 0), timed(bare, steps, batch, device))
        rates["ours"] = max(rates.get("ours", 0), timed(ours, steps, batch, device))
    rates["mix op alone"] = timed(lambda: mix(images, labels), steps * 5, batch, device)
    return rates


def seed_keras(steps: int) -> float | None:
    python = Path(os.environ.get("SEED_VENV", "/tmp/cutmix-seed")) / "bin" / "python"
    script = PEERS / "seed_keras.py"
    if not (python.exists() and script.exists() and JPEG_TREE.exists()):
        return None
    try:
        out = subprocess.run([str(python), str(script), str(JPEG_TREE), "fit", str(steps)],
                             capture_output=True, text=True, timeout=900, check=True).stdout  # fmt: skip
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"(seed keras failed: {exc})")
        return None
    print("seed keras output:\n  " + "\n  ".join(out.strip().splitlines()[-6:]))
    match = re.search(r"cutmix\D*?([\d,.]+) img/s", out, flags=re.I)
    return float(match.group(1).replace(",", "")) if match else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                        help="default: both on CPU, bf16 on GPU")  # fmt: skip
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--seed-steps", type=int, default=300, help="steps of the seed's Keras fit (0: skip)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    precisions = (
        [args.precision] if args.precision else (["bf16"] if device.type == "cuda" else ["fp32", "bf16"])
    )
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, "
          f"channels_last={not args.no_channels_last}, compile={args.compile}")  # fmt: skip
    results = {}
    for precision in precisions:
        autocast = torch.bfloat16 if precision == "bf16" else None
        for batch in args.batch:
            rates = measure(batch, device, args.steps, autocast, not args.no_channels_last, args.compile)
            results[(precision, batch)] = rates
            step_ms = 1000 * batch / rates["ours"]
            mix_ms = 1000 * batch / rates["mix op alone"]
            print(
                f"{precision} batch {batch:4d}: ours {rates['ours']:8,.0f} img/s   "
                f"bare {rates['bare']:8,.0f} img/s   ours/bare {rates['ours'] / rates['bare']:.3f}   "
                f"mix op {mix_ms:.2f} ms = {mix_ms / step_ms:.1%} of our step"
            )
    if device.type == "cpu" and args.seed_steps:
        seed = seed_keras(args.seed_steps)
        if seed:
            for (precision, batch), rates in results.items():
                print(
                    f"{precision} batch {batch}: ours / seed Keras (batch 32) = {rates['ours'] / seed:.2f}x"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
