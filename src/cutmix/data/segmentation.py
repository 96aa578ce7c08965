"""The generated ``synthetic-seg`` dataset: coloured shapes on textured backgrounds, with per-pixel
class masks and the shapes' boxes, deterministic in a seed (no download), to show and test CutMix,
MixUp and Cutout carrying masks and boxes.

It is also a classification :class:`~cutmix.data.base.Dataset` (each image's label is the class of
its largest shape), so everything that takes a ``Dataset`` takes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cutmix.data.base import Dataset
from cutmix.errors import DataError

__all__ = ["SEG_CLASSES", "SEG_NAME", "SEG_TEST", "SEG_TRAIN", "SegmentationDataset", "make_synthetic_seg"]

SEG_NAME = "synthetic-seg"
SEG_CLASSES = ["background", "circle", "square", "triangle", "cross"]
SEG_TRAIN, SEG_TEST = 1000, 200
SEG_SIZE = 64
MAX_SHAPES = 4
_MIN_PIXELS = 6  # a shape hidden down to fewer pixels than this by the shapes over it gets no box


@dataclass(repr=False, eq=False)
class SegmentationDataset(Dataset):
    """A :class:`Dataset` with dense labels for both splits.

    ``*_masks``: uint8 (N, H, W) class ids indexing ``classes`` (0 = background). ``*_boxes``:
    float32 (N, M, 4) xyxy pixel boxes, the tightest around each shape's visible pixels, and
    ``*_box_labels`` int64 (N, M), −1 for padding (valid boxes first). ``*_labels`` (the
    classification labels) hold the class of each image's largest shape.
    """

    train_masks: np.ndarray | None = None
    test_masks: np.ndarray | None = None
    train_boxes: np.ndarray | None = None
    test_boxes: np.ndarray | None = None
    train_box_labels: np.ndarray | None = None
    test_box_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for split in ("train", "test"):
            n, height, width = getattr(self, f"{split}_images").shape[:3]
            masks = getattr(self, f"{split}_masks")
            boxes, labels = getattr(self, f"{split}_boxes"), getattr(self, f"{split}_box_labels")
            if not (
                isinstance(masks, np.ndarray)
                and masks.dtype == np.uint8
                and masks.shape == (n, height, width)
            ):
                raise ValueError(f"{split}_masks: expected a uint8 array ({n}, {height}, {width})")
            if not (isinstance(boxes, np.ndarray) and boxes.ndim == 3 and boxes.shape[::2] == (n, 4)):
                raise ValueError(f"{split}_boxes: expected an array ({n}, M, 4)")
            if not (
                isinstance(labels, np.ndarray)
                and labels.dtype == np.int64
                and labels.shape == boxes.shape[:2]
            ):
                raise ValueError(f"{split}_box_labels: expected an int64 array {boxes.shape[:2]}")


def make_synthetic_seg(
    n_train: int = SEG_TRAIN, n_test: int = SEG_TEST, seed: int = 0, size: int = SEG_SIZE
) -> SegmentationDataset:
    """``synthetic-seg``: 1-4 shapes (circle, square, triangle, cross) of random colour, size and
    place per ``size``×``size`` image, later shapes over earlier ones, on a two-colour gradient with
    noise. Deterministic in ``seed``."""
    if n_train < 1 or n_test < 1 or size < 16:
        raise ValueError(f"expected n_train, n_test >= 1 and size >= 16, got {n_train}, {n_test}, {size}")
    splits = {}
    for index, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        splits[split] = _split(n, size, np.random.default_rng([seed, index, 13]))
    return SegmentationDataset(
        train_images=splits["train"][0],
        train_labels=splits["train"][1],
        test_images=splits["test"][0],
        test_labels=splits["test"][1],
        classes=list(SEG_CLASSES),
        name=SEG_NAME,
        source=f"{SEG_NAME}(seed={seed}, train={n_train}, test={n_test}, size={size})",
        train_masks=splits["train"][2],
        test_masks=splits["test"][2],
        train_boxes=splits["train"][3],
        test_boxes=splits["test"][3],
        train_box_labels=splits["train"][4],
        test_box_labels=splits["test"][4],
    )


def load_synthetic_seg(spec: str, seed: int = 0) -> SegmentationDataset:
    """``synthetic-seg`` or ``synthetic-seg:N`` (N training images)."""
    _, _, arg = spec.partition(":")
    if arg and not (arg.isdigit() and int(arg) > 0):
        raise DataError(f"expected {SEG_NAME}:N with N a positive integer, got {spec!r}")
    return make_synthetic_seg(int(arg) if arg else SEG_TRAIN, seed=seed)


def _shape_pixels(kind: np.ndarray, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """(n, H, W) bool: the pixels of shape ``kind`` (1-4, per image) at offsets dx, dy, radius r."""
    circle = dx**2 + dy**2 <= r**2
    square = (np.abs(dx) <= 0.8 * r) & (np.abs(dy) <= 0.8 * r)
    triangle = (dy >= -r) & (dy <= 0.8 * r) & (np.abs(dx) <= 0.6 * (dy + r))
    arm = r / 3
    cross = ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    kind = kind[:, None, None]
    return np.select([kind == 1, kind == 2, kind == 3], [circle, square, triangle], cross)


def _split(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    boxes = np.zeros((n, MAX_SHAPES, 4), dtype=np.float32)
    box_labels = np.full((n, MAX_SHAPES), -1, dtype=np.int64)
    labels = np.zeros(n, dtype=np.int64)
    y, x = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5)[:, None]  # pixel centres, (1, H, W)
    # Blocks of images keep the (block, H, W) temporaries small.
    for a in range(0, n, 256):
        b = min(a + 256, n)
        m = b - a
        low, high = rng.uniform(20, 235, (2, m, 1, 1, 3)).astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi, (m, 1, 1))
        ramp = ((np.cos(angle) * x + np.sin(angle) * y) / size + 1.0) / 2.0  # 0..1 across the image
        canvas = low + (high - low) * np.clip(ramp, 0, 1)[..., None]
        canvas += rng.uniform(-12, 12, canvas.shape).astype(np.float32)
        instance = np.zeros((m, size, size), dtype=np.int64)  # 0: background, k + 1: the k-th shape
        count = rng.integers(1, MAX_SHAPES + 1, m)
        kinds = rng.integers(1, len(SEG_CLASSES), (m, MAX_SHAPES))
        for k in range(MAX_SHAPES):
            r = rng.uniform(0.1, 0.24, m).astype(np.float32)[:, None, None] * size
            cx, cy = (rng.uniform(0.15, 0.85, (2, m, 1, 1)) * size).astype(np.float32)
            colour = rng.uniform(0, 255, (m, 3)).astype(np.float32)
            pixels = _shape_pixels(kinds[:, k], x - cx, y - cy, r) & (k < count)[:, None, None]
            instance[pixels] = k + 1
            canvas[pixels] = np.broadcast_to(colour[:, None, None], canvas.shape)[pixels]
        images[a:b] = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
        shape_class = np.concatenate([np.zeros((m, 1), np.int64), kinds], axis=1)
        masks[a:b] = np.take_along_axis(shape_class, instance.reshape(m, -1), axis=1).reshape(m, size, size)
        # Boxes from the final instance map, so they fit what is visible after occlusion.
        visible = instance[:, None] == np.arange(1, MAX_SHAPES + 1)[None, :, None, None]  # (m, K, H, W)
        area = visible.sum((2, 3))
        rows, cols = visible.any(3), visible.any(2)
        present = area >= _MIN_PIXELS
        y0, y1 = rows.argmax(2), size - rows[:, :, ::-1].argmax(2)
        x0, x1 = cols.argmax(2), size - cols[:, :, ::-1].argmax(2)
        block = np.stack([x0, y0, x1, y1], axis=2).astype(np.float32)
        # Valid boxes first (a stable sort keeps the painting order among them).
        order = np.argsort(~present, axis=1, kind="stable")
        boxes[a:b] = np.where(present[..., None], block, 0)[np.arange(m)[:, None], order]
        box_labels[a:b] = np.where(present, kinds, -1)[np.arange(m)[:, None], order]
        largest = np.where(present, area, -1).argmax(1)
        labels[a:b] = np.where(present.any(1), kinds[np.arange(m), largest], kinds[:, 0])
    return images, labels, masks, boxes, box_labels
