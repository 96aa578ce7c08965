"""The picture of `cutmix demo`: the three ops on a few generated images, drawn to one picture, offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cutmix.ops import CutMix, Cutout, MixUp
from cutmix.runinfo import atomic_save_figure
from cutmix.viz.dense import draw_demo_rows

COLOURS = ["red", "green", "blue", "yellow", "cyan", "magenta"]


def demo_images(size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Six uint8 (6, 3, size, size) images, each a solid colour with a diagonal stripe, and their ids."""
    rgb = np.array(
        [[220, 40, 40], [40, 180, 60], [50, 80, 220], [230, 210, 40], [40, 200, 210], [200, 50, 200]]
    )
    images = np.repeat(rgb[:, :, None, None], size, axis=2).repeat(size, axis=3).astype(np.uint8)
    rows, cols = np.indices((size, size))
    for i in range(len(rgb)):  # stripes at different places, so a pasted box shows where it came from
        stripe = np.abs(rows - cols - (i - 2) * size // 6) < size // 12
        images[i, :, stripe] = 255
    return torch.from_numpy(images), torch.arange(len(rgb))


def _title(target: np.ndarray) -> str:
    order = np.argsort(-target)
    parts = [f"{COLOURS[k]} {target[k]:.2f}" for k in order[:2] if target[k] > 0.005]
    return " / ".join(parts)


def write_demo(out: str | Path, seed: int = 0) -> Path:
    """Draws originals, CutMix, MixUp and Cutout of :func:`demo_images` to ``out``, atomically, in the
    format of its suffix (PNG, JPEG, PDF or SVG; PNG without one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, labels = demo_images()
    k = len(COLOURS)
    rows = [("original", images, torch.eye(k)[labels])]
    for name, op in (
        ("CutMix α=1", CutMix(alpha=1.0, num_classes=k, generator=torch.Generator().manual_seed(seed))),
        ("MixUp α=1", MixUp(alpha=1.0, num_classes=k, generator=torch.Generator().manual_seed(seed))),
        ("Cutout 24px", Cutout(size=24, num_classes=k, generator=torch.Generator().manual_seed(seed))),
    ):
        mixed, targets = op(images, labels)
        rows.append((name, mixed, targets))

    # Two more rows: generated shapes with their masks and boxes, then CutMix carrying both along.
    fig, axes = plt.subplots(len(rows) + 2, k, figsize=(2.2 * k, 2.4 * (len(rows) + 2)))
    draw_demo_rows(axes[len(rows) :], seed=seed)
    for r, (name, batch, targets) in enumerate(rows):
        for c in range(k):
            ax = axes[r, c]
            ax.imshow(batch[c].permute(1, 2, 0).numpy())
            ax.set_title(_title(targets[c].numpy()), fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=10)
    fig.suptitle(f"cutmix demo (seed {seed}): each sample its own λ, box and partner", fontsize=11)
    fig.tight_layout()
    try:
        return atomic_save_figure(fig, out, dpi=90)
    finally:
        plt.close(fig)
