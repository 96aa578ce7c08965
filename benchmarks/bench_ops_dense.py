"""What masks and boxes add to the mixing ops' time: the same op on the same batch with and without
them, timed in interleaved rounds in one run and printed as a ratio.

    .venv/bin/python benchmarks/bench_ops_dense.py                    # CPU, 224x224, batch 128
    .venv/bin/python benchmarks/bench_ops_dense.py --device cuda --size 224 --batch 256

Goal (issue 13): masks + boxes add at most 30% to the op's time at 224x224, batch 128 (float32 images,
uint8 (B, H, W) masks, 8 boxes per image). int64 masks, which move 8x the bytes of uint8 ones, are
shown too. Ratios are what to compare: absolute rates move by tens of percent on a shared machine.
"""

from __future__ import annotations

import argparse
import time

import torch

from cutmix import CutMix, Cutout, MixUp


def seconds_per_call(fn, device: torch.device, seconds: float) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    fn()
    sync()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or count < 3:
        fn()
        count += 1
    sync()
    return (time.perf_counter() - start) / count


def make_inputs(batch: int, size: int, boxes_per_image: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(batch, boxes_per_image, 2, generator=g) * size * 0.7
    wh = torch.rand(batch, boxes_per_image, 2, generator=g) * size * 0.3
    inputs = {
        "images": torch.rand(batch, 3, size, size, generator=g),
        "labels": torch.randint(0, 10, (batch,), generator=g),
        "masks_uint8": torch.randint(0, 21, (batch, size, size), generator=g).to(torch.uint8),
        "boxes": torch.cat([xy, xy + wh], dim=-1),
        "box_labels": torch.randint(-1, 20, (batch, boxes_per_image), generator=g),
    }
    inputs["masks_int64"] = inputs["masks_uint8"].long()
    return {k: v.to(device) for k, v in inputs.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--boxes", type=int, default=8, help="boxes per image (some padding)")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing window per measurement")
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds; the best of them is printed"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    x = make_inputs(args.batch, args.size, args.boxes, device)
    copy = min(
        seconds_per_call(lambda: x["images"].clone(), device, args.seconds) for _ in range(args.rounds)
    )
    print(
        f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads; float32 images "
        f"{args.batch}x3x{args.size}x{args.size}, {args.boxes} boxes per image; best of {args.rounds} "
        "interleaved rounds (on busy cores the best round is the least disturbed one)"
    )
    ops = {
        "CutMix": lambda: CutMix(alpha=1.0, num_classes=10, generator=torch.Generator().manual_seed(1)),
        "Cutout": lambda: Cutout(
            size=args.size // 2, num_classes=10, generator=torch.Generator().manual_seed(1)
        ),
        "MixUp": lambda: MixUp(alpha=1.0, num_classes=10, generator=torch.Generator().manual_seed(1)),
    }
    print(f"\n{'op':8s} {'images only':>12s} {'+ masks u8':>11s} {'+ boxes':>9s} {'+ both u8':>10s} "
          f"{'+ both i64':>11s}   ratios to images only")  # fmt: skip
    for name, make in ops.items():
        op = make()
        variants = {
            "images only": lambda op=op: op(x["images"], x["labels"]),
            "+ masks u8": lambda op=op: op(x["images"], x["labels"], masks=x["masks_uint8"]),
            "+ boxes": lambda op=op: op(x["images"], x["labels"], boxes=x["boxes"],
                                        box_labels=x["box_labels"]),
            "+ both u8": lambda op=op: op(x["images"], x["labels"], masks=x["masks_uint8"], boxes=x["boxes"],
                                          box_labels=x["box_labels"]),
            "+ both i64": lambda op=op: op(x["images"], x["labels"], masks=x["masks_int64"], boxes=x["boxes"],
                                           box_labels=x["box_labels"]),
        }  # fmt: skip
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.rounds):  # interleaved, so a busy spell on the machine hits every variant
            for key, fn in variants.items():
                times[key].append(seconds_per_call(fn, device, args.seconds))
        best = {k: min(v) for k, v in times.items()}
        base = best["images only"]
        cells = " ".join(f"{best[k] * 1e3:>9.1f}ms" for k in variants)
        ratios = ", ".join(f"{k.removeprefix('+ ')} {best[k] / base:.2f}x" for k in list(variants)[1:])
        print(f"{name:8s} {cells}   {ratios}")
    print(f"\n(a plain copy of the images: {copy * 1e3:.1f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
