"""Pictures of masks and boxes after a mix: the ``cutmix preview`` grid for a
:class:`~cutmix.data.segmentation.SegmentationDataset` (``--data synthetic-seg``) and the
segmentation rows of ``cutmix demo``.

Each image gets its mask as a colour overlay (background left clear, the ignore index 255 dark grey),
its boxes as outlines labelled with their class names, and the pasted or cut region as a dashed white
outline, so one can check by eye that masks and boxes moved with the pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cutmix.data.segmentation import SegmentationDataset
from cutmix.errors import DataError
from cutmix.ops import CutMix, Cutout, MixedMasks, MixUp
from cutmix.ops.dense import MASK_FILL
from cutmix.runinfo import atomic_save_figure

GRID = 3
# Class colours (RGB 0-1): background (0) is not drawn; then red, green, blue, yellow, purple, ...
PALETTE = np.array(
    [
        [0.0, 0.0, 0.0],
        [0.90, 0.10, 0.29],
        [0.24, 0.71, 0.29],
        [0.0, 0.51, 0.78],
        [1.0, 0.88, 0.10],
        [0.57, 0.12, 0.71],
        [0.96, 0.51, 0.19],
        [0.27, 0.94, 0.94],
    ]
)
IGNORE_COLOUR = np.array([0.15, 0.15, 0.15])
OVERLAY = 0.6


def colour_overlay(image: np.ndarray, masks: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``image`` (H, W, 3) uint8 with class colours blended over it, as float RGB in [0, 1].

    ``masks`` (H, W), or (2, H, W) with ``weights`` (2,) for a MixUp'd image: each mask's colours
    then count by its weight, as its pixels do in the blend.
    """
    masks = masks[None] if masks.ndim == 2 else masks
    weights = np.ones(1) if weights is None else weights
    out = image.astype(np.float64) / 255.0
    # Mostly grey underneath, so the class colours read as labels rather than as the shapes' own colours.
    out = 0.35 * out + 0.65 * out.mean(axis=-1, keepdims=True)
    for mask, weight in zip(masks, weights, strict=True):
        ids = mask.astype(np.int64)
        colour = np.where(
            (ids == MASK_FILL)[..., None], IGNORE_COLOUR, PALETTE[np.clip(ids, 0, len(PALETTE) - 1)]
        )
        alpha = np.where((ids == 0)[..., None], 0.0, OVERLAY * weight)
        alpha = np.where((ids == MASK_FILL)[..., None], 0.75 * weight, alpha)
        out = out * (1 - alpha) + colour * alpha
    return out


def draw_dense(
    ax: Any,
    image: np.ndarray,
    masks: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    *,
    mask_weights: np.ndarray | None = None,
    box_weights: np.ndarray | None = None,
    region: tuple[int, int, int, int] | None = None,
    fontsize: float = 7,
) -> None:
    """Draws one image with its mask overlay, its boxes (xyxy, labels ≥ 0) named by class, and the
    pasted region ``(y0, y1, x0, x1)`` dashed, on a matplotlib ``ax``."""
    from matplotlib.patches import Rectangle

    ax.imshow(colour_overlay(image, masks, mask_weights), interpolation="nearest")
    # imshow puts pixel i's centre at i, so a box edge at pixel coordinate x is drawn at x - 0.5.
    if region is not None and region[1] > region[0] and region[3] > region[2]:
        y0, y1, x0, x1 = region
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="white",
                               linestyle="--", linewidth=1.2))  # fmt: skip
    for i, (box, label) in enumerate(zip(boxes, labels, strict=True)):
        if label < 0:
            continue
        x0, y0, x1, y1 = (float(v) for v in box)
        colour = PALETTE[int(label) % len(PALETTE)]
        weight = 1.0 if box_weights is None else float(box_weights[i])
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour,
                               linewidth=1.8, alpha=0.35 + 0.65 * weight))  # fmt: skip
        text = names[int(label)] if box_weights is None else f"{names[int(label)]} {weight:.2f}"
        ax.text(x0 - 0.5, y0 - 0.5, text, fontsize=fontsize, color="black", va="bottom", ha="left",
                bbox={"facecolor": colour, "edgecolor": "none", "pad": 0.8, "alpha": 0.85})  # fmt: skip
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])


def mix_dense_batch(
    op: CutMix | MixUp | Cutout | None,
    images: np.ndarray,
    masks: np.ndarray,
    boxes: np.ndarray,
    box_labels: np.ndarray,
    partner: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> list[dict]:
    """Runs ``op`` (None: no mix) on uint8 (B, H, W, 3) images with their masks and boxes (and a
    partner batch of the same four, as a second stream); returns one dict per image for
    :func:`draw_dense` (keys image, masks, boxes, labels, mask_weights, box_weights, region, share)."""
    batch = len(images)
    if op is None:
        return [
            {"image": images[i], "masks": masks[i], "boxes": boxes[i], "labels": box_labels[i], "share": 1.0}
            for i in range(batch)
        ]
    kwargs: dict = {}
    if partner is not None and not isinstance(op, Cutout):
        names = ("images2", "masks2", "boxes2", "box_labels2")
        kwargs = {"labels2": None, **{k: torch.from_numpy(v) for k, v in zip(names, partner, strict=True)}}
    mixed, _, out_masks, out_boxes, params = op(
        torch.from_numpy(images), None, masks=torch.from_numpy(masks), boxes=torch.from_numpy(boxes),
        box_labels=torch.from_numpy(box_labels), return_params=True, **kwargs,
    )  # fmt: skip
    rows = []
    for i in range(batch):
        row = {
            "image": mixed[i].numpy(),
            "boxes": out_boxes.boxes[i].numpy(),
            "labels": out_boxes.labels[i].numpy(),
            "share": float(params.weight[i]),
        }
        if isinstance(out_masks, MixedMasks):
            w = float(out_masks.weight[i])
            row["masks"] = np.stack([out_masks.masks[i].numpy(), out_masks.partner_masks[i].numpy()])
            row["mask_weights"] = np.array([w, 1 - w])
            row["box_weights"] = out_boxes.weights[i].numpy()
        else:
            row["masks"] = out_masks[i].numpy()
            row["region"] = tuple(int(v) for v in params.box[i])
        rows.append(row)
    return rows


def _title(mix: str, row: dict) -> str:
    count = int((row["labels"] >= 0).sum())
    boxes = f"{count} box{'es' if count != 1 else ''}"
    if mix == "cutmix":
        return f"pasted {1 - row['share']:.2f}, {boxes}"
    if mix == "mixup":
        return f"λ {row['share']:.2f}, {boxes}"
    if mix == "cutout":
        return f"cut out, {boxes}"
    return boxes


def _op(mix: str, seed: int, alpha: float, side: int) -> CutMix | MixUp | Cutout | None:
    generator = torch.Generator().manual_seed(seed)
    if mix == "cutmix":
        return CutMix(alpha=alpha, data_format="channels_last", generator=generator)
    if mix == "mixup":
        return MixUp(alpha=alpha, data_format="channels_last", generator=generator)
    if mix == "cutout":
        return Cutout(size=side, data_format="channels_last", generator=generator)
    return None


def seg_preview_rows(
    dataset: SegmentationDataset, mix: str = "cutmix", seed: int = 0, alpha: float = 1.0
) -> list[dict]:
    """Nine seeded training images of ``dataset`` mixed by ``mix`` with their masks and boxes; the
    partners come from a second, independent draw, as in :func:`cutmix.viz.preview.preview_batch`."""
    count = GRID * GRID
    n = len(dataset.train_images)
    if n < count:
        raise DataError(f"--data: expected at least {count} training images for the preview, got {n}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    partners = order[count : 2 * count] if n >= 2 * count else rng.permutation(n)[:count]

    def pick(index: np.ndarray) -> tuple[np.ndarray, ...]:
        return (dataset.train_images[index], dataset.train_masks[index], dataset.train_boxes[index],
                dataset.train_box_labels[index])  # fmt: skip

    side = max(1, min(dataset.image_shape[:2]) // 2)
    return mix_dense_batch(_op(mix, seed, alpha, side), *pick(order[:count]), partner=pick(partners))


def write_seg_preview(
    dataset: SegmentationDataset, out: Path, mix: str = "cutmix", seed: int = 0, alpha: float = 1.0
) -> Path:
    """The 3x3 preview grid with masks and boxes, written atomically to the PNG ``out``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = seg_preview_rows(dataset, mix, seed, alpha)
    fig = Figure(figsize=(10, 10.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(GRID, GRID)
    for ax, row in zip(axes.flat, rows, strict=True):
        draw_dense(ax, row["image"], row["masks"], row["boxes"], row["labels"], dataset.classes,
                   mask_weights=row.get("mask_weights"), box_weights=row.get("box_weights"),
                   region=row.get("region"), fontsize=8)  # fmt: skip
        ax.set_title(_title(mix, row), fontsize=11)
    label = mix if mix in ("none", "cutout") else f"{mix} (alpha={alpha:g})"
    fig.suptitle(f"{dataset.name}: {label}, seed {seed} — masks as colours, boxes named, paste dashed",
                 fontsize=12)  # fmt: skip
    fig.tight_layout()
    return atomic_save_figure(fig, out, dpi=80)


def draw_demo_rows(axes_rows: Any, seed: int = 0) -> None:
    """The demo's segmentation rows: ``synthetic-seg`` images as drawn, then after CutMix (α = 1) with
    masks and boxes, one image per column of ``axes_rows`` (2, k)."""
    from cutmix.data.segmentation import make_synthetic_seg

    k = axes_rows.shape[1]
    dataset = make_synthetic_seg(2 * k, 1, seed=seed)
    take = slice(0, k)
    batch = (dataset.train_images[take], dataset.train_masks[take], dataset.train_boxes[take],
             dataset.train_box_labels[take])  # fmt: skip
    op = CutMix(alpha=1.0, data_format="channels_last", generator=torch.Generator().manual_seed(seed))
    for axes, name, rows in (
        (axes_rows[0], "shapes + masks", mix_dense_batch(None, *batch)),
        (axes_rows[1], "CutMix masks+boxes", mix_dense_batch(op, *batch)),
    ):
        for ax, row in zip(axes, rows, strict=True):
            draw_dense(ax, row["image"], row["masks"], row["boxes"], row["labels"], dataset.classes,
                       region=row.get("region"), fontsize=6)  # fmt: skip
            ax.set_title(_title("cutmix" if row.get("region") else "none", row), fontsize=8)
        axes[0].set_ylabel(name, fontsize=10)
