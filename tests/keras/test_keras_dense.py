"""cutmix.keras with Keras' dict keys ``segmentation_masks`` and ``bounding_boxes``, torch backend.

Both implementations (the torch op, and keras.ops with the fast path off) are read back from the
output pixels: every image pixel holds its source sample's index, so the mask and box that each
output pixel should carry are known, and boxes are checked against a paint-and-count oracle.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

# Keras fixes its backend at import: the torch backend needs no TensorFlow or JAX.
# tests/keras/test_keras.py runs this file again with CUTMIX_TEST_KERAS_BACKEND=jax, where only the
# keras.ops path exists.
BACKEND = os.environ.get("CUTMIX_TEST_KERAS_BACKEND", "torch")
os.environ["KERAS_BACKEND"] = BACKEND
keras = pytest.importorskip("keras")
if keras.config.backend() != BACKEND:  # pragma: no cover - keras imported earlier with another backend
    pytest.skip(f"Keras was imported with the {keras.config.backend()} backend", allow_module_level=True)

import torch  # noqa: E402

from cutmix.keras import CutMix, CutMixOrMixUp, Cutout, MixUp  # noqa: E402

PATHS = ["torch_op", "keras_ops"] if BACKEND == "torch" else ["keras_ops"]


def to_np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def on_path(layer, path: str):
    layer._prefer_torch_op = path == "torch_op"
    return layer


def index_images(batch: int, height: int, width: int, data_format: str, offset: int = 0) -> np.ndarray:
    """float32 images whose every pixel of sample b holds b + offset."""
    values = (np.arange(batch, dtype=np.float32) + offset).reshape(batch, 1, 1, 1)
    shape = (batch, 3, height, width) if data_format == "channels_first" else (batch, height, width, 3)
    return np.ascontiguousarray(np.broadcast_to(values, shape))


def pixel_sources(images, data_format: str) -> np.ndarray:
    values = to_np(images)
    values = values[:, 0] if data_format == "channels_first" else values[..., 0]
    return np.rint(values).astype(np.int64)


def random_masks(rng, batch: int, height: int, width: int, layout: str, data_format: str, dtype: str):
    plain = rng.integers(0, 200, (batch, height, width)).astype(dtype)
    if layout == "plain":
        return plain, plain
    return plain, (plain[:, None] if data_format == "channels_first" else plain[..., None])


def random_boxes(rng, batch: int, count: int, height: int, width: int, dtype: str):
    """Integer-valued xyxy boxes (so that painting them is exact): random, degenerate, the whole image,
    touching the border; about a quarter padding (label −1, zeros)."""
    xs = np.sort(rng.integers(0, width + 1, (batch, count, 2)), axis=-1)
    ys = np.sort(rng.integers(0, height + 1, (batch, count, 2)), axis=-1)
    boxes = np.stack([xs[..., 0], ys[..., 0], xs[..., 1], ys[..., 1]], axis=-1)
    boxes[:, 0] = [0, 0, width, height]
    boxes[:, 1] = [0, ys[0, 1, 0], xs[0, 1, 1], height]  # touching two borders
    labels = rng.integers(0, 5, (batch, count))
    padding = rng.random((batch, count)) < 0.25
    labels[padding] = -1
    boxes[padding] = 0
    return boxes.astype(dtype), labels.astype(np.int32)


def oracle_boxes(boxes, labels, mine, hole, min_visibility=0.25):
    """Paint each box and count its pixels: ``mine`` (H, W) are the pixels a box shows; in a sample
    with a ``hole`` (any pixel not its own) each box becomes the tightest box around its pixels in
    ``mine`` and is kept when they are > 0 and >= min_visibility of its area."""
    height, width = mine.shape
    out = []
    for box, label in zip(boxes, labels, strict=True):
        if label < 0:
            continue
        x0, y0, x1, y1 = (int(v) for v in box)
        if not hole:
            out.append(((x0, y0, x1, y1), int(label)))
            continue
        painted = np.zeros((height, width), bool)
        painted[y0:y1, x0:x1] = True
        seen = painted & mine
        count = int(seen.sum())
        if count == 0 or count < min_visibility * (x1 - x0) * (y1 - y0):
            continue
        rows, cols = np.flatnonzero(seen.any(1)), np.flatnonzero(seen.any(0))
        out.append(((int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1), int(label)))
    return out


def read_boxes(bounding_boxes, i: int):
    boxes, labels = to_np(bounding_boxes["boxes"])[i], to_np(bounding_boxes["labels"])[i]
    kept = labels >= 0
    count = int(kept.sum())
    assert kept[:count].all(), "kept boxes are not first in the row"
    assert (boxes[count:] == 0).all(), "padding boxes are not zeros"
    return [
        (tuple(int(v) for v in b), int(lab)) for b, lab in zip(boxes[:count], labels[:count], strict=True)
    ]


# ----------------------------------------------------------------------------------------------
# CutMix
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("layout", ["channel", "plain"])
@pytest.mark.parametrize("seed", range(4))
def test_cutmix_masks_and_boxes_read_back(path, data_format, layout, seed):
    rng = np.random.default_rng(seed)
    batch, height, width = 6, 9, 13
    images = index_images(batch, height, width, data_format)
    plain, masks = random_masks(rng, batch, height, width, layout, data_format, ["uint8", "int32"][seed % 2])
    boxes, box_labels = random_boxes(rng, batch, 5, height, width, ["float32", "int32"][seed % 2])
    data = {"images": images, "labels": np.arange(batch), "segmentation_masks": masks,
            "bounding_boxes": {"boxes": boxes, "labels": box_labels}}  # fmt: skip
    copies = {
        "images": images.copy(),
        "masks": masks.copy(),
        "boxes": boxes.copy(),
        "labels": box_labels.copy(),
    }
    layer = on_path(CutMix(alpha=1.0, num_classes=batch, data_format=data_format, seed=seed), path)
    out = layer(data)

    assert set(out) == {"images", "labels", "segmentation_masks", "bounding_boxes"}
    assert set(out["bounding_boxes"]) == {"boxes", "labels"}
    for key, before in copies.items():
        now = {"images": images, "masks": masks, "boxes": boxes, "labels": box_labels}[key]
        assert (now == before).all(), f"input {key} modified in place"
    mixed_masks = to_np(out["segmentation_masks"])
    assert mixed_masks.dtype == masks.dtype and mixed_masks.shape == masks.shape
    mixed_masks = mixed_masks.reshape(batch, height, width)
    sources = pixel_sources(out["images"], data_format)
    rows, cols = np.indices((height, width))
    expected = plain[sources, rows, cols]  # each pixel's mask comes from where its image pixel came from
    assert (mixed_masks == expected).all(), "mask pixels changed elsewhere than the image pixels"

    assert tuple(out["bounding_boxes"]["boxes"].shape) == (batch, 10, 4)
    assert to_np(out["bounding_boxes"]["boxes"]).dtype == boxes.dtype
    for i in range(batch):
        own = sources[i] == i
        hole = not own.all()
        partners = np.unique(sources[i][~own])
        want = oracle_boxes(boxes[i], box_labels[i], own, hole)
        if hole:
            j = int(partners[0])
            want += oracle_boxes(boxes[j], box_labels[j], sources[i] == j, True)
        assert read_boxes(out["bounding_boxes"], i) == want, f"sample {i}"


@pytest.mark.parametrize("path", PATHS)
def test_cutmix_min_visibility_and_masks_or_boxes_alone(path):
    rng = np.random.default_rng(7)
    batch, size = 8, 12
    images = index_images(batch, size, size, "channels_last")
    boxes, box_labels = random_boxes(rng, batch, 4, size, size, "float32")
    layer = on_path(CutMix(alpha=1.0, min_visibility=0.6, seed=3), path)
    out = layer({"images": images, "bounding_boxes": {"boxes": boxes, "labels": box_labels}})
    assert set(out) == {"images", "bounding_boxes"}  # no labels given: none returned
    sources = pixel_sources(out["images"], "channels_last")
    mixed_samples = 0
    for i in range(batch):
        own = sources[i] == i
        want = oracle_boxes(boxes[i], box_labels[i], own, not own.all(), 0.6)
        if not own.all():
            mixed_samples += 1
            j = int(np.unique(sources[i][~own])[0])
            want += oracle_boxes(boxes[j], box_labels[j], sources[i] == j, True, 0.6)
        assert read_boxes(out["bounding_boxes"], i) == want
    assert mixed_samples > 0

    masks = rng.integers(0, 9, (batch, size, size, 1)).astype(np.uint8)
    out = on_path(CutMix(seed=1), path)({"images": images, "segmentation_masks": masks})
    assert set(out) == {"images", "segmentation_masks"}
    sources = pixel_sources(out["images"], "channels_last")
    rows, cols = np.indices((size, size))
    assert (to_np(out["segmentation_masks"])[..., 0] == masks[..., 0][sources, rows, cols]).all()


# ----------------------------------------------------------------------------------------------
# Cutout and MixUp
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mask_fill", [None, 7])
@pytest.mark.parametrize("seed", range(3))
def test_cutout_masks_filled_and_boxes_cut(path, mask_fill, seed):
    rng = np.random.default_rng(seed)
    batch, height, width = 6, 10, 11
    images = index_images(batch, height, width, "channels_last", offset=1)  # fill 0 marks the hole
    _, masks = random_masks(rng, batch, height, width, "channel", "channels_last", "uint8")
    boxes, box_labels = random_boxes(rng, batch, 5, height, width, "float32")
    extra = {} if mask_fill is None else {"mask_fill": mask_fill}
    layer = on_path(Cutout(size=5, num_classes=batch + 1, seed=seed, **extra), path)
    out = layer({"images": images, "labels": np.arange(batch) + 1, "segmentation_masks": masks,
                 "bounding_boxes": {"boxes": boxes, "labels": box_labels}})  # fmt: skip
    hole = to_np(out["images"])[..., 0] == 0
    assert hole.any()
    expected = np.where(hole, 255 if mask_fill is None else mask_fill, masks[..., 0])
    assert (to_np(out["segmentation_masks"])[..., 0] == expected).all()
    assert tuple(out["bounding_boxes"]["boxes"].shape) == (batch, 5, 4)
    for i in range(batch):
        want = oracle_boxes(boxes[i], box_labels[i], ~hole[i], hole[i].any())
        assert read_boxes(out["bounding_boxes"], i) == want


@pytest.mark.parametrize("path", PATHS)
def test_mixup_boxes_weighted_and_masks_refused(path):
    rng = np.random.default_rng(0)
    batch, size = 8, 6
    images = rng.random((batch, size, size, 3)).astype(np.float32)
    boxes, box_labels = random_boxes(rng, batch, 3, size, size, "float32")
    layer = on_path(MixUp(alpha=1.0, num_classes=batch, seed=2), path)
    out = layer({"images": images, "labels": np.arange(batch),
                 "bounding_boxes": {"boxes": boxes, "labels": box_labels}})  # fmt: skip
    targets = to_np(out["labels"])
    assert set(out["bounding_boxes"]) == {"boxes", "labels", "weights"}
    weights = to_np(out["bounding_boxes"]["weights"])
    for i in range(batch):
        lam = float(targets[i, i])
        others = [j for j in np.flatnonzero(targets[i] > 0) if j != i]
        want = [(tuple(int(v) for v in b), int(lab), lam) for b, lab in zip(boxes[i], box_labels[i], strict=True)
                if lab >= 0 and lam > 0]  # fmt: skip
        if others:
            j = int(others[0])
            want += [(tuple(int(v) for v in b), int(lab), 1.0 - lam)
                     for b, lab in zip(boxes[j], box_labels[j], strict=True) if lab >= 0]  # fmt: skip
        got = read_boxes(out["bounding_boxes"], i)
        assert [g for g in got] == [(w[0], w[1]) for w in want]
        np.testing.assert_allclose(weights[i, : len(want)], [w[2] for w in want], atol=1e-6)
        assert (weights[i, len(want) :] == 0).all()

    masks = np.zeros((batch, size, size, 1), np.uint8)
    with pytest.raises(ValueError, match="segmentation_masks: expected no masks with MixUp"):
        layer({"images": images, "segmentation_masks": masks})
    both = CutMixOrMixUp(CutMix(), MixUp(), seed=0)
    with pytest.raises(ValueError, match="segmentation_masks: expected none with CutMixOrMixUp"):
        both({"images": images, "segmentation_masks": masks})


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def test_training_false_and_symbolic_shapes():
    images = np.zeros((4, 8, 8, 3), np.float32)
    masks = np.zeros((4, 8, 8, 1), np.uint8)
    data = {"images": images, "segmentation_masks": masks}
    unchanged = CutMix(seed=0)(data, training=False)
    assert set(unchanged) == set(data)
    assert all((to_np(unchanged[key]) == data[key]).all() for key in data)

    inputs = {"images": keras.KerasTensor((None, 8, 8, 3)), "segmentation_masks": keras.KerasTensor((None, 8, 8, 1), "uint8"),
              "bounding_boxes": {"boxes": keras.KerasTensor((None, 5, 4)), "labels": keras.KerasTensor((None, 5), "int32")}}  # fmt: skip
    spec = CutMix(seed=0)(inputs)
    assert tuple(spec["segmentation_masks"].shape) == (None, 8, 8, 1)
    assert tuple(spec["bounding_boxes"]["boxes"].shape) == (None, 10, 4)
    assert tuple(Cutout(seed=0)(inputs)["bounding_boxes"]["labels"].shape) == (None, 5)


def _call(layer, masks=None, boxes=None, **extra):
    data = {"images": np.zeros((2, 8, 8, 3), np.float32), **extra}
    if masks is not None:
        data["segmentation_masks"] = masks
    if boxes is not None:
        data["bounding_boxes"] = boxes
    return layer(data)


GOOD_BOXES = np.array([[[0, 0, 4, 4]], [[1, 1, 8, 8]]], np.float32)
GOOD_LABELS = np.array([[0], [1]], np.int32)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "masks, boxes, match",
    [
        (np.zeros((2, 8, 8, 1), np.float32), None, "segmentation_masks: expected integer class ids"),
        (np.zeros((2, 8, 7, 1), np.uint8), None, r"segmentation_masks: expected shape \(2, 8, 8\) or \(2, 8, 8, 1\)"),
        (None, [GOOD_BOXES], "bounding_boxes: expected a dict with keys 'boxes' and 'labels', got list"),
        (None, {"boxes": GOOD_BOXES}, "bounding_boxes: expected the keys boxes, labels"),
        (None, {"boxes": GOOD_BOXES[:, 0], "labels": GOOD_LABELS}, r"bounding_boxes\['boxes'\]: expected shape \(2, N, 4\)"),
        (None, {"boxes": GOOD_BOXES, "labels": GOOD_LABELS.astype(np.float32)}, r"bounding_boxes\['labels'\]: expected integer"),
        (None, {"boxes": GOOD_BOXES, "labels": GOOD_LABELS[:, :0]}, r"bounding_boxes\['labels'\]: expected shape \(2, 1\)"),
    ],
)  # fmt: skip
def test_bad_dense_inputs_name_the_key(path, masks, boxes, match):
    with pytest.raises(ValueError, match=match):
        _call(on_path(CutMix(seed=0), path), masks, boxes)


@pytest.mark.parametrize(
    "boxes, match",
    [
        (np.array([[[0, 0, 9, 4]], [[1, 1, 8, 8]]], np.float32), r"bounding_boxes\['boxes'\]: expected xyxy pixel boxes"),
        (np.array([[[4, 0, 2, 4]], [[1, 1, 8, 8]]], np.float32), r"got \[4.0, 0.0, 2.0, 4.0\] \(x2 < x1 or y2 < y1\) for image 0, box 0"),
    ],
)  # fmt: skip
def test_bad_box_values_on_the_torch_path(boxes, match):
    with pytest.raises(ValueError, match=match):
        _call(CutMix(seed=0), boxes={"boxes": boxes, "labels": GOOD_LABELS})
    with pytest.raises(ValueError, match=r"bounding_boxes\['labels'\]: expected class ids >= 0, or -1"):
        _call(CutMix(seed=0), boxes={"boxes": GOOD_BOXES, "labels": GOOD_LABELS - 3})


def test_other_refusals():
    with pytest.raises(ValueError, match="bounding_box_format: expected 'xyxy'"):
        CutMix(bounding_box_format="yxyx")
    with pytest.raises(ValueError, match="mask_fill: expected an int class id"):
        Cutout(mask_fill=0.5)
    with pytest.raises(ValueError, match=r"min_visibility: expected a number in \[0, 1\]"):
        CutMix(min_visibility=2.0)
    masks = np.zeros((2, 8, 8, 1), np.uint8)
    with pytest.raises(ValueError, match="images2: expected no second batch with segmentation_masks"):
        _call(CutMix(seed=0), masks, images2=np.zeros((2, 8, 8, 3), np.float32), labels2=np.zeros((2, 3), np.float32),
              labels=np.zeros((2, 3), np.float32))  # fmt: skip
    layer = Cutout(size=3, mask_fill=9, min_visibility=0.5, seed=0)
    clone = Cutout.from_config(layer.get_config())
    assert (clone.mask_fill, clone.min_visibility, clone.bounding_box_format) == (9, 0.5, "xyxy")
