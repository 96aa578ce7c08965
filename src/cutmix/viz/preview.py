"""The Keras example's 3x3 grid of augmented training images, with honest titles.

The example titles each picture with ``argmax`` of its mixed label, hiding the mix. Here every
title names both classes and their weights, read from the op's drawn parameters ("cat 0.62 / ship
0.38"), a lone class when nothing was mixed ("cat 1.00"), the partner when a patch was mixed in
that the weights do not show (its own class: "cat 1.00 (mixed with cat)"), or "cat (cutout)".

:func:`write_config_preview` draws what a run of a :class:`~cutmix.training.config.TrainConfig` trains on
(its loader's crop and flip, its op with all its options); ``cutmix compare`` draws one per arm.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from cutmix.data import Dataset, DeviceLoader
from cutmix.errors import DataError
from cutmix.ops import CutMix, Cutout, MixUp
from cutmix.ops.params import MixParams
from cutmix.runinfo import atomic_file, atomic_save_figure
from cutmix.training.config import MIXES, TrainConfig

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# The mixing ops of the trainer (config.MIXES), the preview's default first and "none" last.
PREVIEW_MIXES = (*(mix for mix in MIXES if mix != "none"), "none")
GRID = 3


def preview_batch(
    dataset: Dataset, mix: str = "cutmix", seed: int = 0, alpha: float = 1.0
) -> tuple[np.ndarray, list[str]]:
    """Nine random training images (seeded), mixed by ``mix``, and their titles.

    As in the Keras example, each image's partner comes from a second, independent draw of the
    training set (nine more images), not from the nine shown. Cutout cuts a square half the image
    side. Returns uint8 (9, H, W, 3) images and 9 titles.
    """
    if mix not in PREVIEW_MIXES:
        raise ValueError(f"expected mix in {PREVIEW_MIXES}, got {mix!r}")
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
    mixed, _, params = op(images, labels, images2, labels2, return_params=True)
    return mixed.numpy(), _titles(params, labels, labels2, names)


def _titles(
    params: MixParams, labels: torch.Tensor, partner_labels: torch.Tensor, names: Sequence[str]
) -> list[str]:
    """The title of each sample of a CutMix/MixUp/Cutout batch, from the op's drawn ``params``;
    ``partner_labels``: the labels ``params.partner`` indexes (the partner batch, or the batch)."""
    others = partner_labels[params.partner].tolist()
    rows = zip(labels.tolist(), others, params.weight.tolist(), params.applied.tolist(), strict=True)
    if params.kind == "cutout":
        return [f"{names[own]} (cutout)" if applied else f"{names[own]} 1.00" for own, _, _, applied in rows]
    return [mix_title(names, own, other, weight, applied) for own, other, weight, applied in rows]


def mix_title(names: Sequence[str], own: int, other: int, weight: float, mixed: bool) -> str:
    """The title of one sample: its class ``own`` with its ``weight`` and the partner's class
    ``other`` with the rest, heavier first ("cat 0.62 / ship 0.38"); "cat 1.00" when nothing was
    ``mixed``. A mix the weights cannot show says so: a partner of the same class ("cat 1.00 (mixed
    with cat)"), or a share that prints as 0.00 (a pasted sliver), left out rather than shown as
    "dog 0.00" ("cat 1.00 (mixed with dog)")."""
    if not mixed:
        return f"{names[own]} 1.00"
    if own == other:
        return f"{names[own]} 1.00 (mixed with {names[other]})"
    parts = sorted([(weight, own), (1.0 - weight, other)], key=lambda part: (-part[0], part[1]))
    text = " / ".join(f"{names[c]} {w:.2f}" for w, c in parts if w >= 0.005)
    hidden = [c for w, c in parts if w < 0.005]
    return f"{text} (mixed with {names[hidden[0]]})" if hidden else text


def config_preview_batch(
    dataset: Dataset, config: TrainConfig, seed: int = 0
) -> tuple[np.ndarray, list[str]]:
    """Nine training images as a run of ``config`` trains on them, and their titles.

    They go through the trainer's own pieces: the loader (crop and flip when ``config.augment``
    says so; for ``partner="stream"`` the partner batch from its second, independently shuffled
    stream) and the mixing op :func:`cutmix.training.components.build_mixer` builds (``mix``, ``alpha``,
    ``mix_p``, ``cutout_size``, ``partner``, ``label_smoothing``), over a seeded draw of 36 training
    images. Pixels are shown unnormalised. Returns uint8 (9, H, W, 3) images and 9 titles.
    """
    from cutmix.training.components import build_mixer

    count = GRID * GRID
    n = len(dataset.train_images)
    if n < count:
        raise DataError(f"--data: expected at least {count} training images for the preview, got {n}")
    pool = np.random.default_rng(seed).permutation(n)[: min(n, 4 * count)]
    paired = config.mix in ("cutmix", "mixup") and config.partner == "stream"
    images, labels = dataset.train_images[pool], dataset.train_labels[pool]
    loader = DeviceLoader(images, labels, count, augment=config.augment, channels_last=False, seed=seed,
                          paired=paired)  # fmt: skip
    batch = next(iter(loader))
    images, labels = batch[0], batch[1]
    names = dataset.classes
    op = build_mixer(config, dataset.num_classes, torch.Generator().manual_seed(seed))
    if op is None:
        titles = [f"{names[k]} 1.00" for k in labels.tolist()]
    else:
        images, _, params = op(images, labels, *batch[2:], return_params=True)
        titles = _titles(params, labels, batch[3] if paired else labels, names)
    pixels = (images * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    return pixels.numpy(), titles


def describe_config(config: TrainConfig) -> str:
    """What the picture of ``config`` shows, in a line: the op with its options, then the rest of
    what shapes the training images and targets."""
    if config.mix == "cutout":
        parts = [f"cutout {config.cutout_size}px, p={config.mix_p:g}"]
    elif config.mix == "none":
        parts = ["no mixing"]
    else:
        parts = [f"{config.mix} (alpha={config.alpha:g}, p={config.mix_p:g}, partner {config.partner})"]
    parts.append("crop+flip" if config.augment == "crop-flip" else "no crop/flip")
    if config.label_smoothing:
        parts.append(f"targets label-smoothed by {config.label_smoothing:g}")
    if config.mix != "none" and config.mix_off_epochs:
        parts.append(f"mixing off in the last {config.mix_off_epochs} of {config.epochs} epochs")
    return ", ".join(parts)


def write_preview(
    dataset: Dataset, out: Path, mix: str = "cutmix", seed: int = 0, alpha: float = 1.0
) -> Path:
    """Draw :func:`preview_batch` as a 3x3 grid to ``out`` (written atomically, in the format of its
    suffix: PNG, JPEG, PDF or SVG); returns it."""
    from cutmix.data.segmentation import SegmentationDataset

    if isinstance(dataset, SegmentationDataset):  # masks and boxes drawn over the mixed images
        from cutmix.viz.dense import write_seg_preview

        if mix not in PREVIEW_MIXES:
            raise ValueError(f"expected mix in {PREVIEW_MIXES}, got {mix!r}")
        return write_seg_preview(dataset, out, mix, seed, alpha)
    images, titles = preview_batch(dataset, mix, seed, alpha)
    label = mix if mix in ("none", "cutout") else f"{mix} (alpha={alpha:g})"
    return _draw_grid(images, titles, f"{dataset.name}: {label}, seed {seed}", out)


def _draw_grid(images: np.ndarray, titles: list[str], suptitle: str, out: Path, fontsize: int = 13) -> Path:
    return atomic_save_figure(_grid_figure(images, titles, suptitle, fontsize), out, dpi=80)


# Characters per heading line at 11-13 pt on the 800-pixel-wide grid; a recipe's full description
# (mix, p, partner, crop, label smoothing, mixing-off epochs) is longer and would be cut at the edges.
SUPTITLE_WIDTH = 95


def _grid_figure(images: np.ndarray, titles: list[str], suptitle: str, fontsize: int = 13) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A bare Figure with the Agg canvas: no pyplot, so no global backend switch and nothing left open.
    fig = Figure(figsize=(10, 10.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(GRID, GRID)
    for ax, image, title in zip(axes.flat, images, titles, strict=True):
        # Nearest neighbour keeps the pasted box's edges sharp on 32x32 images.
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=11)
        ax.axis("off")
    fig.suptitle(textwrap.fill(suptitle, SUPTITLE_WIDTH, break_on_hyphens=False), fontsize=fontsize)
    fig.tight_layout()
    return fig


def write_config_preview(dataset: Dataset, config: TrainConfig, out: Path, seed: int = 0) -> Path:
    """Draws :func:`config_preview_batch` as a 3x3 grid to ``out`` (written atomically); returns it."""
    images, titles = config_preview_batch(dataset, config, seed)
    suptitle = f"{dataset.name}: {describe_config(config)}; seed {seed}"
    return _draw_grid(images, titles, suptitle, Path(out), fontsize=11)


def write_arm_previews(
    dataset: Dataset,
    out_dir: Path,
    base: TrainConfig,
    arms: Sequence[str],
    seed: int = 0,
    configs: Mapping[str, TrainConfig] | None = None,
) -> list[Path]:
    """One preview per mixing arm of a comparison, drawn with that arm's options (``configs[arm]``, by
    default ``base`` with ``mix=arm``), as ``out_dir/preview-<arm>.png``, and ``out_dir/preview.png``,
    the first mixing arm's (what reports link); with no mixing arm, preview.png shows the images as
    trained unmixed."""
    out_dir = Path(out_dir)
    configs = configs or {arm: replace(base, mix=arm) for arm in arms}
    mixing = [arm for arm in arms if configs[arm].mix != "none"]
    written = [
        write_config_preview(dataset, configs[arm], out_dir / f"preview-{arm}.png", seed) for arm in mixing
    ]
    main = out_dir / "preview.png"
    if written:
        with atomic_file(main) as target, open(written[0], "rb") as source:
            shutil.copyfileobj(source, target)
    else:
        write_config_preview(dataset, replace(base, mix="none"), main, seed)
    return [main, *written]
