"""`cutmix preview`: the Keras example's 3x3 grid of augmented training images, with honest titles.

The example titles each picture with ``argmax`` of its mixed label, hiding the mix. Here every
title names both classes and their weights, read from the op's soft targets ("cat 0.62 / ship
0.38"), a lone class when nothing was mixed ("cat 1.00"), or "cat (cutout)".
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from cutmix.data import Dataset
from cutmix.errors import DataError, UsageError
from cutmix.ops import CutMix, Cutout, MixUp
from cutmix.runinfo import atomic_save_figure

MIXES = ("cutmix", "mixup", "cutout", "none")
GRID = 3


def preview_batch(
    dataset: Dataset, mix: str = "cutmix", seed: int = 0, alpha: float = 1.0
) -> tuple[np.ndarray, list[str]]:
    """Nine random training images (seeded), mixed by ``mix``, and their titles.

    As in the Keras example, each image's partner comes from a second, independent draw of the
    training set (nine more images), not from the nine shown. Cutout cuts a square half the image
    side. Returns uint8 (9, H, W, 3) images and 9 titles.
    """
    if mix not in MIXES:
        raise ValueError(f"expected mix in {MIXES}, got {mix!r}")
    n = len(dataset.train_images)
    count = GRID * GRID
    if n < count:
        raise DataError(f"expected at least {count} training images for the preview, got {n}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    # Distinct partners when there are enough images; otherwise an independent draw, as the
    # example's second shuffled stream would give.
    partners = order[count : 2 * count] if n >= 2 * count else rng.permutation(n)[:count]
    chosen = order[:count]
    images = torch.from_numpy(dataset.train_images[chosen])
    labels = torch.from_numpy(dataset.train_labels[chosen].astype(np.int64))
    names = dataset.classes
    if mix == "none":
        return images.numpy(), [f"{names[k]} 1.00" for k in labels.tolist()]

    generator = torch.Generator().manual_seed(seed)
    k = dataset.num_classes
    if mix == "cutout":
        side = max(1, min(images.shape[1:3]) // 2)
        op = Cutout(size=side, num_classes=k, data_format="channels_last", generator=generator)
        mixed, _ = op(images, labels)
        return mixed.numpy(), [f"{names[c]} (cutout)" for c in labels.tolist()]

    op_class = CutMix if mix == "cutmix" else MixUp
    op = op_class(alpha=alpha, num_classes=k, data_format="channels_last", generator=generator)
    images2 = torch.from_numpy(dataset.train_images[partners])
    labels2 = torch.from_numpy(dataset.train_labels[partners].astype(np.int64))
    mixed, targets = op(images, labels, images2, labels2)
    return mixed.numpy(), [_title(row, names) for row in targets.numpy()]


def _title(target: np.ndarray, names: list[str]) -> str:
    top = np.argsort(-target, kind="stable")[:2]
    # A weight that prints as 0.00 (a pasted sliver) is left out rather than shown as "dog 0.00".
    return " / ".join(f"{names[c]} {target[c]:.2f}" for c in top if target[c] >= 0.005)


def write_preview(
    dataset: Dataset, out: Path, mix: str = "cutmix", seed: int = 0, alpha: float = 1.0
) -> Path:
    """Draw :func:`preview_batch` as a 3x3 grid to the PNG ``out`` (written atomically); returns it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cutmix.data.segmentation import SegmentationDataset

    if isinstance(dataset, SegmentationDataset):  # masks and boxes drawn over the mixed images
        from cutmix.preview_dense import write_seg_preview

        if mix not in MIXES:
            raise ValueError(f"expected mix in {MIXES}, got {mix!r}")
        return write_seg_preview(dataset, out, mix, seed, alpha)
    images, titles = preview_batch(dataset, mix, seed, alpha)
    # A bare Figure with the Agg canvas: no pyplot, so no global backend switch and nothing left open.
    fig = Figure(figsize=(10, 10.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(GRID, GRID)
    for ax, image, title in zip(axes.flat, images, titles, strict=True):
        # Nearest neighbour keeps the pasted box's edges sharp on 32x32 images.
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=11)
        ax.axis("off")
    label = mix if mix in ("none", "cutout") else f"{mix} (alpha={alpha:g})"
    fig.suptitle(f"{dataset.name}: {label}, seed {seed}", fontsize=13)
    fig.tight_layout()

    return atomic_save_figure(fig, out, dpi=80)


def run(args: argparse.Namespace) -> int:
    from cutmix.data import load_dataset

    # Checked here, before the data set is loaded, with the flag's name (the op would say "alpha").
    if not (math.isfinite(args.alpha) and args.alpha > 0):
        raise UsageError(f"--alpha: expected a finite number > 0, got {args.alpha}")

    dataset = load_dataset(args.data)
    path = write_preview(dataset, Path(args.out), mix=args.mix, seed=args.seed, alpha=args.alpha)
    print(path)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "preview", help="draw 9 training images after CutMix/MixUp/Cutout, as the Keras example does"
    )
    parser.add_argument(
        "--data",
        default="cifar10",
        help="a dataset name, CIFAR archive or folder, or image tree (default: cifar10)",
    )
    parser.add_argument("--mix", choices=MIXES, default="cutmix", help="mixing op (default: cutmix)")
    parser.add_argument(
        "--alpha", type=float, default=1.0, help="Beta(alpha, alpha) for cutmix/mixup (default: 1)"
    )
    parser.add_argument("--seed", type=int, default=0, help="picks the images and the mixing (default: 0)")
    parser.add_argument("--out", default="preview.png", help="output PNG (default: preview.png)")
    parser.set_defaults(func=run)
