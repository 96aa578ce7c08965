"""One semantics, two implementations: every rule that the torch ops (:mod:`cutmix.ops`) and the Keras
layers' keras.ops path (:mod:`cutmix.keras.draw`, :mod:`cutmix.keras.apply`) both keep, run on both
(parametrized over ``path``), so that a disagreement fails here.

* Given fixed parameters (the same boxes, partners and λ on both paths): the paste and its pasted-area
  weight, MixUp's blend and rounding, Cutout's fill, masks pasted and filled, the box-visibility rule;
  each checked against a NumPy computation written here from the rule's statement.
* Through the ops and layers themselves: label smoothing and the label forms, dtypes kept.
* The draws, which come from different streams (a ``torch.Generator``, Keras seeds), by their
  properties: the box rule given each draw's λ and anchor, the weight, the pairings, λ's law.
* Every refusal: the same exception type and the same message on both paths (the dense inputs named
  by Keras' keys on the Keras side).

On the torch backend the keras.ops path runs on torch; tests/keras/test_keras.py runs this file again
with ``CUTMIX_TEST_KERAS_BACKEND=jax``, where the Keras path is JAX's and the torch path still the
torch op's.
"""

from __future__ import annotations

import ast
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

BACKEND = os.environ.get("CUTMIX_TEST_KERAS_BACKEND", "torch")
os.environ["KERAS_BACKEND"] = BACKEND
keras = pytest.importorskip("keras")
if keras.config.backend() != BACKEND:  # pragma: no cover - keras imported earlier with another backend
    pytest.skip(f"Keras was imported with the {keras.config.backend()} backend", allow_module_level=True)

import torch  # noqa: E402
from keras import ops  # noqa: E402

import cutmix.keras as ck  # noqa: E402
import cutmix.ops as co  # noqa: E402
from cutmix.keras import apply as kapply  # noqa: E402
from cutmix.keras import draw as kdraw  # noqa: E402
from cutmix.keras.checks import signed_box_labels  # noqa: E402
from cutmix.ops.boxes import mix_boxes  # noqa: E402
from cutmix.ops.dense import mix_masks  # noqa: E402
from cutmix.ops.params import _finish, _table  # noqa: E402
from cutmix.ops.rules import mask_channel_dim  # noqa: E402

PATHS = ["torch", "keras"]
KINDS = ["cutmix", "mixup", "cutout"]
FORMATS = ["channels_first", "channels_last"]


def to_np(x) -> np.ndarray | None:
    if x is None:
        return None
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(ops.convert_to_numpy(x))


def on(path: str, x):
    """``x`` (NumPy) as the path's tensor."""
    if x is None:
        return None
    return torch.from_numpy(np.ascontiguousarray(x)) if path == "torch" else ops.convert_to_tensor(x)


# ----------------------------------------------------------------------------------------------
# Fixed parameters: the same draw for both paths
# ----------------------------------------------------------------------------------------------


class Fixed:
    """One batch of parameters, given: ``box`` (B, 4) y0, y1, x0, x1 (half-open), ``partner``,
    ``applied`` (where the box is empty it is not applied, as both samplers decide) and ``lam``."""

    def __init__(self, kind, box, partner, applied, lam, height, width):
        box = np.asarray(box, np.int64).reshape(-1, 4)
        area = (box[:, 1] - box[:, 0]) * (box[:, 3] - box[:, 2])
        self.kind, self.height, self.width = kind, height, width
        self.applied = np.asarray(applied, bool) & ((area > 0) | (kind == "mixup"))
        self.box = np.where(self.applied[:, None], box, 0) if kind != "mixup" else box
        self.partner = np.asarray(partner, np.int64)
        self.lam = np.asarray(lam, np.float32)
        share = (area / (height * width)).astype(np.float32)
        weight = self.lam if kind == "mixup" else (1 - share).astype(np.float32)
        self.weight = np.where(self.applied, weight, np.float32(1.0)).astype(np.float32)

    @classmethod
    def random(cls, kind, rng, batch, height, width, partner=None):
        y = np.sort(rng.integers(0, height + 1, (batch, 2)), axis=1)
        x = np.sort(rng.integers(0, width + 1, (batch, 2)), axis=1)
        box = np.stack([y[:, 0], y[:, 1], x[:, 0], x[:, 1]], axis=1)
        partner = rng.permutation(batch) if partner is None else partner
        lam = rng.random(batch).astype(np.float32)
        return cls(kind, box, partner, rng.random(batch) < 0.8, lam, height, width)

    def mask(self) -> np.ndarray:
        """(B, H, W) bool: the box's pixels."""
        rows, cols = np.arange(self.height), np.arange(self.width)
        y0, y1, x0, x1 = (self.box[:, i, None] for i in range(4))
        return ((rows >= y0) & (rows < y1))[:, :, None] & ((cols >= x0) & (cols < x1))[:, None, :]

    def for_path(self, path: str):
        if path == "torch":
            hw = (0, 0) if self.kind == "mixup" else (self.height, self.width)
            table = _table(len(self.partner), 1, *hw)
            table[:, 0], table[:, 1], table[:, 2] = self.lam, self.weight, self.partner
            table[:, 3:7] = self.box
            return _finish(self.kind, table, self.applied, *hw)
        partner = ops.convert_to_tensor(self.partner.astype(np.int32))
        if self.kind == "mixup":
            return {"partner": partner, "weight": ops.convert_to_tensor(self.weight)}
        y0, y1, x0, x1 = (ops.convert_to_tensor(self.box[:, i].astype(np.int32)) for i in range(4))
        params = kdraw.params_from_box(
            y0, y1, x0, x1, ops.convert_to_tensor(self.applied), self.height, self.width
        )
        params["partner"] = partner
        return params


def apply_fixed(path, kind, images, targets, fixed, images2=None, targets2=None, data_format="channels_last",
                fill=0.0):  # fmt: skip
    if path == "torch":
        params, x, t, x2, t2 = (
            fixed.for_path(path),
            *(on(path, v) for v in (images, targets, images2, targets2)),
        )
        if kind == "cutout":
            return to_np(co.apply_cutout(x, params, data_format=data_format, fill=fill)), targets
        apply = co.apply_cutmix if kind == "cutmix" else co.apply_mixup
        return tuple(to_np(v) for v in apply(x, t, params, x2, t2, data_format=data_format))
    tensors = [on(path, v) for v in (images, targets, images2, targets2)]
    mixed, mixed_targets = kapply.apply_params(
        kind, *tensors[:2], fixed.for_path(path), *tensors[2:], data_format, fill
    )
    return to_np(mixed), to_np(mixed_targets)


def channels_last(images, data_format):
    return images if data_format == "channels_last" else np.moveaxis(images, 1, -1)


def from_channels_last(images, data_format):
    return images if data_format == "channels_last" else np.moveaxis(images, -1, 1)


def random_images(rng, batch, height, width, dtype, data_format, channels=3):
    if dtype == "float32":
        images = rng.random((batch, height, width, channels)).astype(np.float32)
    else:
        images = rng.integers(0, 256 if dtype == "uint8" else 1000, (batch, height, width, channels)).astype(
            dtype
        )
    return np.ascontiguousarray(from_channels_last(images, data_format))


def soft(labels, classes, smoothing=0.0):
    return (np.eye(classes, dtype=np.float64)[labels] * (1 - smoothing) + smoothing / classes).astype(
        np.float32
    )


# ----------------------------------------------------------------------------------------------
# Pixels and targets, given the parameters
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", ["uint8", "int32", "float32"])
@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("second_batch", [False, True])
def test_the_paste_the_blend_and_the_fill_given_the_parameters(path, kind, dtype, data_format, second_batch):
    rng = np.random.default_rng(hash((kind, dtype, data_format, second_batch)) % 2**32)
    batch, height, width, classes = 6, 7, 9, 5
    images = random_images(rng, batch, height, width, dtype, data_format)
    targets = soft(rng.integers(0, classes, batch), classes, 0.1)
    images2 = random_images(rng, batch, height, width, dtype, data_format) if second_batch else None
    targets2 = soft(rng.integers(0, classes, batch), classes, 0.1) if second_batch else None
    fixed = Fixed.random(kind, rng, batch, height, width, np.arange(batch) if second_batch else None)
    before = images.copy()
    mixed, mixed_targets = apply_fixed(
        path, kind, images, targets, fixed, images2, targets2, data_format, 7.0
    )

    assert np.array_equal(images, before), "input modified in place"
    assert (
        mixed.dtype == np.dtype(dtype) and mixed.shape == images.shape and mixed_targets.dtype == np.float32
    )
    own, other = (
        channels_last(images, data_format),
        channels_last(images2 if second_batch else images, data_format),
    )
    other = other if second_batch else other[fixed.partner]
    other_targets = targets2 if second_batch else targets[fixed.partner]
    got = channels_last(mixed, data_format)
    if kind == "cutout":  # the box filled, the labels kept
        assert np.array_equal(got, np.where(fixed.mask()[..., None], np.asarray(7, dtype), own))
        assert np.array_equal(mixed_targets, targets)
        return
    w = fixed.weight[:, None]
    np.testing.assert_allclose(mixed_targets, w * targets + (1 - w) * other_targets, rtol=0, atol=1e-6)
    assert np.array_equal(mixed_targets[w[:, 0] == 1], targets[w[:, 0] == 1])  # unmixed: exactly its own
    if kind == "cutmix":  # the partner's pixels in the box, its share of the target = the pasted share
        assert np.array_equal(got, np.where(fixed.mask()[..., None], other, own))
        pasted = fixed.mask().mean(axis=(1, 2))
        np.testing.assert_allclose(fixed.weight, np.where(fixed.applied, 1 - pasted, 1), rtol=0, atol=1e-6)
        return
    blend = w[:, :, None, None] * own.astype(np.float64) + (1 - w[:, :, None, None]) * other.astype(
        np.float64
    )
    if dtype == "float32":
        np.testing.assert_allclose(got, blend, rtol=0, atol=1e-5)
    else:  # rounded to nearest (either neighbour within float32's error of a half), clipped to the dtype
        assert np.all(np.abs(got - blend) <= 0.5 + 1e-3)
        clear = np.abs(blend - np.floor(blend) - 0.5) > 1e-3
        assert np.array_equal(got[clear], np.rint(blend[clear]).astype(dtype))
    unmixed = ~fixed.applied
    assert np.array_equal(got[unmixed], own[unmixed])


# ----------------------------------------------------------------------------------------------
# Targets through the ops and layers: label forms, smoothing once, before mixing
# ----------------------------------------------------------------------------------------------


def make(path: str, kind: str, **kwargs):
    """The torch op, or the Keras layer on its keras.ops path, of ``kind`` with ``kwargs``."""
    if kind == "switch":
        parts = [make(path, "cutmix", **kwargs), make(path, "mixup", **kwargs)]
        return co.CutMixOrMixUp(*parts) if path == "torch" else on_keras_path(ck.CutMixOrMixUp(*parts))
    cls = {"cutmix": "CutMix", "mixup": "MixUp", "cutout": "Cutout"}[kind]
    if path == "torch":
        return getattr(co, cls)(**kwargs)
    return on_keras_path(getattr(ck, cls)(seed=0, **kwargs))


def on_keras_path(layer):
    for each in (layer, getattr(layer, "cutmix", None), getattr(layer, "mixup", None)):
        if each is not None:
            each._prefer_torch_op = False
    return layer


LABEL_FORMS = {
    "ids (B,) int64": lambda ids, k: ids.astype(np.int64),
    "ids (B, 1) int32": lambda ids, k: ids.astype(np.int32)[:, None],
    "ids (B,) uint8": lambda ids, k: ids.astype(np.uint8),
    "ids (B, 1) int16": lambda ids, k: ids.astype(np.int16)[:, None],
    "probabilities float32": lambda ids, k: np.eye(k, dtype=np.float32)[ids] * 0.75 + 0.25 / k,
    "probabilities float64": lambda ids, k: np.eye(k, dtype=np.float64)[ids] * 0.5 + 0.5 / k,
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("form", sorted(LABEL_FORMS))
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_labels_become_smoothed_float32_targets(path, kind, form, smoothing):
    batch, classes = 5, 4
    ids = np.array([0, 3, 1, 1, 2])
    labels = LABEL_FORMS[form](ids, classes)
    images = np.random.default_rng(0).random((batch, 6, 6, 3)).astype(np.float32)
    op = make(path, kind, p=0.0, num_classes=classes, label_smoothing=smoothing, data_format="channels_last")
    mixed, targets = (to_np(v) for v in op(on(path, images), on(path, labels)))
    own = labels.astype(np.float64) if labels.ndim == 2 and labels.shape[1] > 1 else np.eye(classes)[ids]
    expected = own * (1 - smoothing) + smoothing / classes  # ε once, on each sample's own target
    assert targets.dtype == np.float32 and targets.shape == (batch, classes)
    np.testing.assert_allclose(targets, expected, rtol=0, atol=1e-6)
    assert np.array_equal(mixed, images)  # p = 0: nothing mixed


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", ["cutmix", "mixup"])
def test_mixed_targets_are_the_pixel_shares_of_smoothed_targets(path, kind):
    # Index images (every pixel of sample b holds b, and b is its class): the pixels give the share of
    # each class that the targets must carry, smoothed before mixing.
    batch, smoothing = 16, 0.1
    images = np.broadcast_to(np.arange(batch, dtype=np.float32)[:, None, None, None], (batch, 8, 8, 1)).copy()
    op = make(path, kind, num_classes=batch, label_smoothing=smoothing, data_format="channels_last")
    mixed, targets = (to_np(v) for v in op(on(path, images), on(path, np.arange(batch))))
    shares = (targets - smoothing / batch) / (1 - smoothing)  # back to the unsmoothed mix
    assert (shares > -1e-6).all() and np.allclose(shares.sum(1), 1, atol=1e-5)
    if kind == "cutmix":  # each class's share of the pixels
        counts = np.stack([(mixed[..., 0] == k).mean(axis=(1, 2)) for k in range(batch)], axis=1)
        np.testing.assert_allclose(shares, counts, rtol=0, atol=1e-5)
    else:  # one blend per sample: every pixel is the share-weighted sum of the classes
        assert (np.count_nonzero(shares > 1e-6, axis=1) <= 2).all()
        np.testing.assert_allclose(mixed[:, 0, 0, 0], shares @ np.arange(batch), rtol=0, atol=1e-4)
        assert (mixed == mixed[:, :1, :1]).all()


# ----------------------------------------------------------------------------------------------
# Masks and boxes, given the parameters
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", ["cutmix", "cutout"])
@pytest.mark.parametrize("layout", ["plain", "channel"])
@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("dtype, mask_fill", [("uint8", 255), ("int8", -1), ("int32", 255)])
def test_masks_are_pasted_and_filled_where_the_pixels_are(path, kind, layout, data_format, dtype, mask_fill):
    rng = np.random.default_rng(5)
    batch, height, width = 6, 7, 9
    plain = rng.integers(0, 100, (batch, height, width)).astype(dtype)
    axis = 1 if data_format == "channels_first" else 3
    masks = plain if layout == "plain" else np.expand_dims(plain, axis)
    image_shape = (batch, 3, height, width) if data_format == "channels_first" else (batch, height, width, 3)
    channel = mask_channel_dim(masks.shape, image_shape, data_format)
    fixed = Fixed.random(kind, rng, batch, height, width)
    params = fixed.for_path(path)
    if path == "torch":
        got = mix_masks(kind, on(path, masks), params, channel_dim=channel, mask_fill=mask_fill)
    else:
        got = kapply.apply_dense(kind, params, on(path, masks), channel, mask_fill=mask_fill)[0]
    got = to_np(got)
    other = np.asarray(mask_fill, dtype) if kind == "cutout" else plain[fixed.partner]
    expected = np.where(fixed.mask(), other, plain)
    assert got.dtype == np.dtype(dtype) and got.shape == masks.shape
    assert np.array_equal(got if layout == "plain" else got.squeeze(axis), expected)


def visible_rule(box, hole, min_visibility):
    """The box rule, from its statement: the tightest box around the part of ``box`` outside ``hole``
    (x0, y0, x1, y1 each), kept when that part covers >= min_visibility of the box's area (and > 0)."""
    x0, y0, x1, y1 = box
    area = max(x1 - x0, 0) * max(y1 - y0, 0)
    grid = np.zeros((40, 40), bool)  # pixel-exact on integer boxes: paint, cut, measure
    grid[int(y0) : int(y1), int(x0) : int(x1)] = True
    grid[int(hole[1]) : int(hole[3]), int(hole[0]) : int(hole[2])] = False
    visible = grid.sum()
    if visible == 0 or visible < min_visibility * area:
        return None
    rows, cols = np.flatnonzero(grid.any(1)), np.flatnonzero(grid.any(0))
    return (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)


def inside_rule(box, hole, min_visibility):
    x0, y0, x1, y1 = box
    cut = (max(x0, hole[0]), max(y0, hole[1]), min(x1, hole[2]), min(y1, hole[3]))
    inside = max(cut[2] - cut[0], 0) * max(cut[3] - cut[1], 0)
    area = max(x1 - x0, 0) * max(y1 - y0, 0)
    return cut if inside > 0 and inside >= min_visibility * area else None


def expected_boxes(kind, fixed, boxes, labels, min_visibility):
    """Per sample, the kept (box, label, weight) in order: own boxes, then the partner's."""
    rows = []
    for b in range(len(labels)):
        y0, y1, x0, x1 = fixed.box[b]
        hole, applied, w = (x0, y0, x1, y1), fixed.applied[b], float(fixed.weight[b])
        p = fixed.partner[b]
        row = []
        for box, label in zip(boxes[b], labels[b], strict=True):
            if label < 0:
                continue
            if kind == "mixup":
                row += [(tuple(box), label, w)] if w > 0 else []
            elif not applied:
                row.append((tuple(box), label, 1.0))
            elif (cut := visible_rule(box, hole, min_visibility)) is not None:
                row.append((cut, label, 1.0))
        for box, label in zip(boxes[p], labels[p], strict=True) if kind != "cutout" else ():
            if label < 0:
                continue
            if kind == "mixup":
                row += [(tuple(box), label, 1 - w)] if w < 1 else []
            elif applied and (cut := inside_rule(box, hole, min_visibility)) is not None:
                row.append((cut, label, 1.0))
        rows.append(row)
    return rows


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", ["float32", "int32"])
@pytest.mark.parametrize("min_visibility", [0.0, 0.25, 0.6])
def test_the_box_visibility_rule_given_the_parameters(path, kind, dtype, min_visibility):
    rng = np.random.default_rng(7)
    batch, count, height, width = 12, 5, 10, 12
    xy = rng.integers(0, 8, (batch, count, 2))
    wh = rng.integers(0, 5, (batch, count, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, [width, height])], axis=-1).astype(dtype)
    boxes[0, 0] = (0, 0, width, height)  # the whole image
    labels = rng.integers(0, 9, (batch, count))
    labels[::3, -1] = -1  # padding
    fixed = Fixed.random(kind, rng, batch, height, width)
    got_boxes, got_labels, got_weights = mixed_boxes(path, kind, fixed, boxes, labels, min_visibility)
    slots = count if kind == "cutout" else 2 * count
    assert got_boxes.shape == (batch, slots, 4) and got_boxes.dtype == np.dtype(dtype)
    assert got_labels.shape == (batch, slots) and got_weights.dtype == np.float32
    for b, row in enumerate(expected_boxes(kind, fixed, boxes.astype(np.float64), labels, min_visibility)):
        n = len(row)
        assert got_labels[b, :n].tolist() == [label for _, label, _ in row], b
        np.testing.assert_allclose(
            got_boxes[b, :n], np.array([box for box, _, _ in row]).reshape(n, 4), atol=1e-5
        )
        np.testing.assert_allclose(got_weights[b, :n], [w for _, _, w in row], atol=1e-6)
        assert (
            (got_labels[b, n:] == -1).all()
            and (got_boxes[b, n:] == 0).all()
            and (got_weights[b, n:] == 0).all()
        )


def mixed_boxes(path, kind, fixed, boxes, labels, min_visibility):
    params = fixed.for_path(path)
    if path == "torch":
        out = mix_boxes(kind, on(path, boxes), on(path, labels), params, min_visibility=min_visibility)
        return tuple(to_np(v) for v in out)
    k_labels = signed_box_labels(on(path, labels.astype(np.int32)))
    out = kapply.apply_dense(kind, params, boxes=on(path, boxes), box_labels=k_labels,
                             min_visibility=min_visibility)[1]  # fmt: skip
    return tuple(to_np(out[key]) for key in ("boxes", "labels", "weights"))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("min_visibility, kept", [(0.25, [[1, 2], [2, 1]]), (0.26, [[1], [1]])])
def test_a_box_at_exactly_min_visibility_is_kept(path, min_visibility, kept):
    # Two 4x2 boxes (area 8) and two holes: one leaves 2 pixels (a quarter) of sample 1's own box and
    # pastes 2 of sample 1's box into sample 0; "at least min_visibility" keeps exactly a quarter.
    boxes = np.array([[[0, 0, 4, 2]], [[0, 0, 4, 2]]], np.float32)
    labels = np.array([[1], [2]])
    fixed = Fixed("cutmix", [(0, 2, 0, 1), (0, 2, 0, 3)], [1, 0], [True, True], [0.5, 0.5], 10, 10)
    got_boxes, got_labels, _ = mixed_boxes(path, "cutmix", fixed, boxes, labels, min_visibility)
    assert [[int(v) for v in row if v >= 0] for row in got_labels] == kept
    if min_visibility == 0.25:  # own boxes cut to what is left, partner boxes to what was pasted
        assert got_boxes[0].tolist() == [[1, 0, 4, 2], [0, 0, 1, 2]]
        assert got_boxes[1].tolist() == [[3, 0, 4, 2], [0, 0, 3, 2]]


# ----------------------------------------------------------------------------------------------
# The draws: the rule that turns each λ and anchor into a box, the weight, the pairings, λ's law
# ----------------------------------------------------------------------------------------------


def draw(path, kind, batch, height, width, seed, **kw):
    """The parameters the path draws, as NumPy arrays: lam, weight, applied, partner, box, anchor."""
    if path == "torch":
        generator = torch.Generator().manual_seed(seed)
        if kind == "cutmix":
            params = co.sample_cutmix_params(batch, height, width, generator=generator, **kw)
        elif kind == "mixup":
            params = co.sample_mixup_params(batch, generator=generator, **kw)
        else:
            params = co.sample_cutout_params(batch, height, width, generator=generator, **kw)
        names = ("lam", "weight", "applied", "partner") + (("box", "anchor") if kind != "mixup" else ())
        return {name: to_np(getattr(params, name)) for name in names}
    seeds = keras.random.SeedGenerator(seed)
    if kind == "cutmix":
        kw.setdefault("partner", "permute")
        params = kdraw.draw_cutmix(batch, height, width, kw.get("alpha", 1.0), kw.get("p", 1.0), kw["partner"],
                                   kw.get("box", "center"), seeds)  # fmt: skip
    elif kind == "mixup":
        params = kdraw.draw_mixup(
            batch, kw.get("alpha", 1.0), kw.get("p", 1.0), kw.get("partner", "permute"), seeds
        )
    else:
        params = kdraw.draw_cutout(
            batch, height, width, co.rules.check_cutout_size(kw["size"]), kw["p"], seeds
        )
        params["partner"], params["lam"] = np.arange(batch), np.ones(batch, np.float32)
    params.setdefault("applied", to_np(params["weight"]) < 1)
    return {key: to_np(value) for key, value in params.items()}


def cut_sizes(size: int, lam: np.ndarray) -> set:
    """floor(size·√(1−λ)), in float32 and in float64: the two paths' precisions."""
    wide = np.floor(size * np.sqrt(1.0 - lam.astype(np.float64)))
    narrow = np.floor(np.float32(size) * np.sqrt(np.float32(1.0) - lam.astype(np.float32)))
    return wide.astype(np.int64), narrow.astype(np.int64)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("box", ["center", "inside"])
@pytest.mark.parametrize("alpha, p, partner", [(1.0, 1.0, "permute"), (0.3, 0.5, "roll"), (4.0, 1.0, "flip"),
                                               (1.0, 1.0, None)])  # fmt: skip
def test_cutmix_draws_follow_the_box_rule(path, box, alpha, p, partner):
    batch, height, width = 600, 11, 8
    d = draw(path, "cutmix", batch, height, width, 3, alpha=alpha, p=p, partner=partner, box=box)
    lam, (cy, cx) = d["lam"], d["anchor"].T
    index = np.arange(batch)
    expected_partner = {"roll": (index - 1) % batch, "flip": batch - 1 - index, None: index}.get(partner)
    if expected_partner is None:
        assert sorted(d["partner"].tolist()) == index.tolist()  # a permutation
    else:
        assert np.array_equal(d["partner"], expected_partner)
    boxes = []
    for cut_h, cut_w in zip(cut_sizes(height, lam), cut_sizes(width, lam), strict=True):
        if box == "center":
            assert ((cy >= 0) & (cy < height) & (cx >= 0) & (cx < width)).all()
            y = np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h // 2, 0, height)
            x = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w // 2, 0, width)
        else:  # the whole cut inside the image
            y, x = (cy, cy + cut_h), (cx, cx + cut_w)
        boxes.append(np.stack([y[0], y[1], x[0], x[1]], axis=1))
    area = (d["box"][:, 1] - d["box"][:, 0]) * (d["box"][:, 3] - d["box"][:, 2])
    applied = d["applied"]
    either = (d["box"] == boxes[0]).all(1) | (d["box"] == boxes[1]).all(1)
    assert either[applied].all() and (d["box"][~applied] == 0).all()
    assert (d["box"][applied] >= 0).all() and (d["box"][applied, 1] <= height).all()
    assert (d["box"][applied, 3] <= width).all()
    np.testing.assert_allclose(d["weight"], np.where(applied, 1 - area / (height * width), 1), atol=1e-6)
    self_paired = (d["partner"] == index) & (partner is not None)  # None: a second batch, pair i with i
    nonempty = (boxes[0][:, 1] - boxes[0][:, 0]) * (boxes[0][:, 3] - boxes[0][:, 2]) > 0
    assert not applied[self_paired | ~nonempty].any()  # paired with itself, or an empty box: not mixed
    possible = ~self_paired & nonempty
    if p == 1.0:
        assert np.array_equal(applied[possible], np.ones(possible.sum(), bool))
    else:  # drawn per sample with probability p
        share = applied[possible].mean()
        assert abs(share - p) < 5 * math.sqrt(p * (1 - p) / possible.sum()), share
    assert stats.kstest(lam, stats.beta(alpha, alpha).cdf).pvalue > 1e-4  # λ ~ Beta(α, α)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("alpha, p", [(1.0, 1.0), (0.2, 0.5)])
def test_mixup_draws_weigh_by_lambda(path, alpha, p):
    batch = 2000
    d = draw(path, "mixup", batch, 0, 0, 4, alpha=alpha, p=p, partner="permute")
    applied = d["weight"] != 1
    assert not applied[d["partner"] == np.arange(batch)].any()
    np.testing.assert_array_equal(d["weight"][applied], d["lam"][applied])
    share = applied.mean()
    assert abs(share - p) < 0.06, share
    assert stats.kstest(d["lam"], stats.beta(alpha, alpha).cdf).pvalue > 1e-4


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("size, p", [(4, 1.0), ((3, 6), 0.5), (0, 1.0), (20, 1.0)])
def test_cutout_draws_a_clipped_box_around_a_uniform_centre(path, size, p):
    batch, height, width = 3000, 9, 7
    d = draw(path, "cutout", batch, height, width, 5, size=size, p=p)
    size_h, size_w = (size, size) if isinstance(size, int) else size
    cy, cx = d["anchor"].T
    y0, y1 = np.clip(cy - size_h // 2, 0, height), np.clip(cy - size_h // 2 + size_h, 0, height)
    x0, x1 = np.clip(cx - size_w // 2, 0, width), np.clip(cx - size_w // 2 + size_w, 0, width)
    area = (y1 - y0) * (x1 - x0)
    applied = (d["box"] != 0).any(1)
    assert np.array_equal(d["box"][applied], np.stack([y0, y1, x0, x1], 1)[applied])
    assert not applied[area == 0].any()
    if p == 1.0:
        assert np.array_equal(applied, area > 0)
    else:
        assert abs(applied[area > 0].mean() - p) < 0.05
    # The centre is uniform over the image: every row and column, in about equal numbers.
    for anchor, size_ in ((cy, height), (cx, width)):
        counts = np.bincount(anchor, minlength=size_)
        assert len(counts) == size_ and stats.chisquare(counts).pvalue > 1e-4


# ----------------------------------------------------------------------------------------------
# Refusals: the same type and message on both paths
# ----------------------------------------------------------------------------------------------


def refusal(thunk) -> tuple[type, str]:
    """The exception's type and message, without the frame Keras' own ``__call__`` puts around it."""
    with pytest.raises((TypeError, ValueError)) as caught:
        thunk()
    text = re.sub(r"\x1b\[\d*m", "", str(caught.value))
    text = re.sub(r"^Exception encountered when calling \w+\.call\(\)\.\s*", "", text)
    return type(caught.value), text.split("\n\nArguments received")[0].strip()


SETTINGS = {
    "alpha 0": ("cutmix", {"alpha": 0}),
    "alpha inf": ("mixup", {"alpha": math.inf}),
    "alpha text": ("cutmix", {"alpha": "1"}),
    "p 1.5": ("cutmix", {"p": 1.5}),
    "p True": ("mixup", {"p": True}),
    "partner": ("mixup", {"partner": "shuffle"}),
    "box": ("cutmix", {"box": "corner"}),
    "num_classes 0": ("cutmix", {"num_classes": 0}),
    "num_classes float": ("cutout", {"num_classes": 2.0}),
    "label_smoothing 1": ("mixup", {"label_smoothing": 1.0}),
    "label_smoothing True": ("cutmix", {"label_smoothing": True}),
    "size -1": ("cutout", {"size": -1}),
    "size triple": ("cutout", {"size": (1, 2, 3)}),
    "fill nan": ("cutout", {"fill": math.nan}),
    "fill text": ("cutout", {"fill": "0"}),
    "mask_fill 0.5": ("cutout", {"mask_fill": 0.5}),
    "min_visibility 2": ("cutmix", {"min_visibility": 2}),
    "data_format": ("cutmix", {"data_format": "NCHW"}),
}


@pytest.mark.parametrize("case", sorted(SETTINGS))
def test_a_bad_setting_is_refused_alike_when_made_and_when_set(case):
    kind, kwargs = SETTINGS[case]
    made = {path: refusal(lambda path=path: make(path, kind, **kwargs)) for path in PATHS}
    assert made["torch"] == made["keras"]
    ((name, value),) = kwargs.items()
    for path in PATHS:
        op = make(path, kind, data_format="channels_last")
        assert refusal(lambda op=op: setattr(op, name, value)) == made["torch"]


def switch(path: str, cutmix, mixup, **kwargs):
    return (co.CutMixOrMixUp if path == "torch" else ck.CutMixOrMixUp)(cutmix, mixup, **kwargs)


@pytest.mark.parametrize(
    "cutmix, mixup, kwargs",
    [({}, {}, {"switch_prob": 2}), ({}, {}, {"switch_prob": -0.1}), ({"num_classes": 3}, {}, {}),
     ({"label_smoothing": 0.1}, {}, {}), ({"data_format": "channels_first"}, {"data_format": "channels_last"}, {})],
)  # fmt: skip
def test_the_switch_refuses_alike(cutmix, mixup, kwargs):
    got = [refusal(lambda p=p: switch(p, make(p, "cutmix", **cutmix), make(p, "mixup", **mixup), **kwargs))
           for p in PATHS]  # fmt: skip
    assert got[0] == got[1]


F = np.zeros((2, 6, 6, 3), np.float32)
IDS = np.array([0, 1])
BOXES = np.array([[[0, 0, 4, 4]], [[1, 1, 6, 6]]], np.float32)
BOX_IDS = np.array([[1], [2]])

CALLS = {  # kind, settings, (images, labels[, images2, labels2]), dense inputs
    "3-D images": ("cutmix", {}, (F[0], IDS), {}),
    "empty batch": ("cutout", {}, (F[:0], IDS[:0]), {}),
    "bool images": ("mixup", {}, (F > 0, IDS), {}),
    "more labels than images": ("cutmix", {}, (F, np.array([0, 1, 2])), {}),
    "float ids": ("cutmix", {}, (F, np.array([0.0, 1.0], np.float32)), {}),
    "bool ids": ("mixup", {}, (F, np.array([True, False])), {}),
    "int (B, K)": ("cutmix", {}, (F, np.zeros((2, 3), np.int32)), {}),
    "3-D labels": ("cutout", {}, (F, np.zeros((2, 3, 1), np.float32)), {}),
    "ids out of range": ("mixup", {}, (F, np.array([[0], [5]], np.uint8)), {}),
    "negative ids": ("cutmix", {}, (F, np.array([0, -1], np.int16)), {}),
    "ids without num_classes": ("cutmix", {"num_classes": None}, (F, IDS), {}),
    "wrong K": ("mixup", {}, (F, np.full((2, 4), 0.25, np.float32)), {}),
    "images2 alone": ("cutmix", {}, (F, IDS, F, None), {}),
    "images2 of another shape": ("cutmix", {}, (F, IDS, F[:, :5], IDS), {}),
    # Integer dtypes: Keras casts floating inputs to the layer's compute dtype before the call.
    "images2 of another dtype": ("mixup", {}, (F.astype(np.uint8), IDS, F.astype(np.int32), IDS), {}),
    "fewer labels2": ("cutmix", {}, (F, IDS, F, IDS[:1]), {}),
    "fill outside uint8": ("cutout", {"fill": 300}, (F.astype(np.uint8), IDS), {}),
    "float masks": ("cutmix", {}, (F, IDS), {"masks": np.zeros((2, 6, 6), np.float32)}),
    "masks of another shape": ("cutout", {}, (F, IDS), {"masks": np.zeros((2, 6, 5), np.uint8)}),
    "int8 masks and mask_fill 255": ("cutout", {}, (F, IDS), {"masks": np.zeros((2, 6, 6, 1), np.int8)}),
    "box outside": ("cutmix", {}, (F, IDS), {"boxes": BOXES + 1, "box_labels": BOX_IDS}),
    "nan box": ("mixup", {}, (F, IDS), {"boxes": BOXES * np.nan, "box_labels": BOX_IDS}),
    "unordered box": ("cutout", {}, (F, IDS), {"boxes": BOXES[..., ::-1].copy(), "box_labels": BOX_IDS}),
    "box label -2": ("cutmix", {}, (F, IDS), {"boxes": BOXES, "box_labels": BOX_IDS - 4}),
    "float box labels": ("cutmix", {}, (F, IDS), {"boxes": BOXES, "box_labels": BOX_IDS.astype(np.float32)}),
    "boxes (B, N, 3)": ("cutout", {}, (F, IDS), {"boxes": BOXES[..., :3].copy(), "box_labels": BOX_IDS}),
    "box labels of another shape": ("cutmix", {}, (F, IDS), {"boxes": BOXES, "box_labels": BOX_IDS[:, :0]}),
    "bool boxes": ("mixup", {}, (F, IDS), {"boxes": BOXES > 0, "box_labels": BOX_IDS}),
}

# The torch ops' names for the dense inputs, and Keras' keys for them.
KERAS_NAMES = {r"^masks(?=:)|(?<=the )masks(?=')": "segmentation_masks", r"^box_labels(?=:)": "bounding_boxes['labels']",
               r"^boxes(?=:)|(?<=like )boxes\b": "bounding_boxes['boxes']"}  # fmt: skip


def call(path, kind, settings, batch, dense):
    op = make(path, kind, **{"num_classes": 3, "data_format": "channels_last", **settings})
    if path == "torch":
        tensors = [on(path, x) for x in batch]
        return op(*tensors, **{name: on(path, x) for name, x in dense.items()})
    if not dense:
        return op(*batch)
    data = {"images": batch[0], "labels": batch[1]}
    if "masks" in dense:
        data["segmentation_masks"] = dense["masks"]
    if "boxes" in dense:
        data["bounding_boxes"] = {"boxes": dense["boxes"], "labels": dense["box_labels"]}
    return op(data)


@pytest.mark.parametrize("case", sorted(CALLS))
def test_a_bad_input_is_refused_alike(case):
    kind, settings, batch, dense = CALLS[case]
    torch_type, torch_message = refusal(lambda: call("torch", kind, settings, batch, dense))
    keras_type, keras_message = refusal(lambda: call("keras", kind, settings, batch, dense))
    for pattern, name in KERAS_NAMES.items():
        torch_message = re.sub(pattern, name, torch_message)
    assert (keras_type, keras_message) == (torch_type, torch_message)


# ----------------------------------------------------------------------------------------------
# One rule, one place; one name, one meaning
# ----------------------------------------------------------------------------------------------

SRC = Path(__file__).resolve().parents[2] / "src" / "cutmix"


def _functions(folder: str) -> dict[str, str]:
    """Module-level function names (leading underscores dropped) of a package, and their modules."""
    found = {}
    for path in sorted((SRC / folder).glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef):
                found[node.name.lstrip("_")] = f"{folder}/{path.name}"
    return found


def test_no_keras_helper_shares_a_name_with_a_torch_one():
    # A name means one thing: the keras.ops helpers that mirror a torch one have their own names; the
    # shared rules are imported from cutmix.ops.rules, not written again.
    torch_side = {name: where for name, where in _functions("ops").items() if where != "ops/rules.py"}
    keras_side = _functions("keras")
    assert len(torch_side) > 40 and len(keras_side) > 30  # the walk sees them
    shared = {name: (torch_side[name], keras_side[name]) for name in set(torch_side) & set(keras_side)}
    assert not shared, shared
    rules_names = set(_functions("ops")) - set(torch_side)
    assert not rules_names & set(keras_side), "a rule written again in cutmix.keras"


def _descriptor(cls: type, name: str):
    return next(vars(k)[name] for k in cls.__mro__ if name in vars(k))


def test_both_paths_use_one_option_descriptor_and_one_set_of_constants():
    for torch_op, layer in ((co.CutMix, ck.CutMix), (co.MixUp, ck.MixUp), (co.Cutout, ck.Cutout)):
        for name in ("p", "num_classes", "label_smoothing", "data_format"):
            assert type(_descriptor(torch_op, name)) is type(_descriptor(layer, name)) is co.rules.Option
    for layer in (ck.CutMix(), ck.Cutout()):
        assert layer.min_visibility == co.MIN_VISIBILITY == co.rules.MIN_VISIBILITY
    assert ck.Cutout().mask_fill == co.Cutout().mask_fill == co.MASK_FILL == co.rules.MASK_FILL
