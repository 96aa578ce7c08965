"""The keras.ops application of the drawn parameters (:mod:`cutmix.keras.draw`): pixels and targets
as :mod:`cutmix.ops.apply`, masks as :mod:`cutmix.ops.dense` and the box-visibility rule as
:mod:`cutmix.ops.boxes` apply them, in ``keras.ops`` only (every backend; traceable)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from cutmix.keras.checks import box_label_dtype, rank
from cutmix.ops import rules


def soft_targets(labels: Any, num_classes: int | None, label_smoothing: float) -> Any:
    """float32 (B, K) targets from checked int ids (B,) or probabilities (B, K), smoothed as
    y·(1−ε) + ε/K: the one place where smoothing happens, as :func:`cutmix.ops.to_targets`."""
    if rank(labels) == 1:
        # int32 ids whatever their dtype (JAX has no int64 by default; checked < num_classes).
        targets = ops.one_hot(ops.cast(labels, "int32"), num_classes, dtype="float32")
    else:
        targets = ops.cast(labels, "float32")
    if label_smoothing:
        classes = targets.shape[1] if targets.shape[1] is not None else ops.shape(targets)[1]
        targets = targets * (1.0 - label_smoothing) + label_smoothing / ops.cast(classes, "float32")
    return targets


def paste_mask(params: dict[str, Any], data_format: str) -> Any:
    """bool mask broadcastable to the images: (B, 1, H, W) or (B, H, W, 1)."""
    mask = ops.logical_and(params["rows"][:, :, None], params["cols"][:, None, :])
    return mask[:, None] if data_format == "channels_first" else mask[..., None]


def blend_targets(targets: Any, targets2: Any, params: dict[str, Any]) -> Any:
    partner_targets = targets2 if targets2 is not None else ops.take(targets, params["partner"], axis=0)
    weight = params["weight"][:, None]
    # With weight exactly 1 this is exactly the sample's own target (1·y + 0·y').
    return weight * targets + (1.0 - weight) * partner_targets


def partner_batch(images: Any, images2: Any, params: dict[str, Any]) -> Any:
    return images2 if images2 is not None else ops.take(images, params["partner"], axis=0)


def blend_pixels(images: Any, partner_images: Any, weight: Any) -> Any:
    """``w·x + (1−w)·x'`` per sample in float32 (float64 kept), rounded to nearest for integer
    images; with ``w`` exactly 1 the result is exactly ``x``."""
    dtype = keras.backend.standardize_dtype(images.dtype)
    compute = rules.blend_dtype(dtype)
    weight = ops.cast(ops.reshape(weight, (-1, 1, 1, 1)), compute)
    mixed = weight * ops.cast(images, compute) + (1.0 - weight) * ops.cast(partner_images, compute)
    if rules.is_int_name(dtype):
        mixed = ops.clip(ops.round(mixed), *rules.int_range(dtype))
    return ops.cast(mixed, dtype)


def mix_segmentation_masks(
    masks: Any, channel_axis: int | None, params: dict[str, Any], fill: int | None
) -> Any:
    """CutMix (``fill`` None): the partner's mask where the partner's pixels were pasted, from the
    same row and column flags as the images; Cutout: ``fill`` there."""
    flags = ops.logical_and(params["rows"][:, :, None], params["cols"][:, None, :])  # (B, H, W)
    if channel_axis is not None:
        flags = ops.expand_dims(flags, channel_axis)
    other = ops.take(masks, params["partner"], axis=0) if fill is None else ops.cast(fill, masks.dtype)
    return ops.where(flags, other, masks)


def box_area(x0: Any, y0: Any, x1: Any, y1: Any) -> Any:
    return ops.maximum(x1 - x0, 0.0) * ops.maximum(y1 - y0, 0.0)


def hole_edges(params: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    box = ops.cast(params["box"], "float32")  # y0, y1, x0, x1; integers below 2**24: exact
    return box[:, 2:3], box[:, 0:1], box[:, 3:4], box[:, 1:2]


def cut_own(boxes: Any, labels: Any, params: dict[str, Any], min_visibility: float) -> tuple[Any, Any]:
    """As :func:`cutmix.ops.boxes.cut_own_boxes`: each box minus its sample's hole. The visible part's
    bounding box moves only on a side the hole covers along the box's whole other extent."""
    hx0, hy0, hx1, hy1 = hole_edges(params)
    bx0, by0, bx1, by1 = (boxes[..., i] for i in range(4))
    area = box_area(bx0, by0, bx1, by1)
    covered = box_area(
        ops.maximum(bx0, hx0), ops.maximum(by0, hy0), ops.minimum(bx1, hx1), ops.minimum(by1, hy1)
    )
    visible = area - covered
    spans_y = ops.logical_and(hy0 <= by0, hy1 >= by1)
    spans_x = ops.logical_and(hx0 <= bx0, hx1 >= bx1)
    both = ops.logical_and
    new = ops.stack(
        [
            ops.where(both(spans_y, both(hx0 <= bx0, hx1 > bx0)), hx1, bx0),
            ops.where(both(spans_x, both(hy0 <= by0, hy1 > by0)), hy1, by0),
            ops.where(both(spans_y, both(hx1 >= bx1, hx0 < bx1)), hx0, bx1),
            ops.where(both(spans_x, both(hy1 >= by1, hy0 < by1)), hy0, by1),
        ],
        axis=-1,
    )
    applied = params["applied"][:, None]
    seen = both(visible > 0, visible >= min_visibility * area)
    keep = both(labels >= 0, ops.logical_or(ops.logical_not(applied), seen))
    return ops.where(applied[..., None], new, boxes), keep


def cut_partner(boxes: Any, labels: Any, params: dict[str, Any], min_visibility: float) -> tuple[Any, Any]:
    """As :func:`cutmix.ops.boxes.cut_partner_boxes`: each partner box cut to the pasted region."""
    hx0, hy0, hx1, hy1 = hole_edges(params)
    bx0, by0, bx1, by1 = (boxes[..., i] for i in range(4))
    cut = [ops.maximum(bx0, hx0), ops.maximum(by0, hy0), ops.minimum(bx1, hx1), ops.minimum(by1, hy1)]
    inside = box_area(*cut)
    keep = ops.logical_and(
        ops.logical_and(labels >= 0, params["applied"][:, None]),
        ops.logical_and(inside > 0, inside >= min_visibility * box_area(bx0, by0, bx1, by1)),
    )
    return ops.stack(cut, axis=-1), keep


def pack_kept_boxes(parts: list[tuple[Any, Any, Any, Any]], dtype: str, label_dtype: str) -> dict[str, Any]:
    """As :func:`cutmix.ops.boxes._pack`: concatenated parts, dropped boxes blanked (label -1, zeros),
    kept boxes first in their order. The sort key is unique per row, so an unstable argsort is fine."""
    boxes, labels, weights, keep = (ops.concatenate(list(p), axis=1) for p in zip(*parts, strict=True))
    count = ops.shape(keep)[1]
    index = ops.arange(count, dtype="int32")[None, :]
    order = ops.argsort(ops.where(keep, index, index + count), axis=1)
    keep = ops.take_along_axis(keep, order, axis=1)
    boxes = ops.take_along_axis(boxes, ops.expand_dims(order, -1), axis=1)
    boxes = ops.where(keep[..., None], boxes, ops.zeros_like(boxes))
    if keras.backend.is_int_dtype(dtype):
        boxes = ops.round(boxes)  # the cut edges are the hole's integer edges: exact
    labels = ops.take_along_axis(labels, order, axis=1)
    out = {
        "boxes": ops.cast(boxes, dtype),
        "labels": ops.cast(ops.where(keep, labels, ops.full_like(labels, -1)), label_dtype),
        "weights": ops.where(keep, ops.take_along_axis(weights, order, axis=1), ops.zeros_like(weights)),
    }
    return out


def mix_bounding_boxes(
    kind: str, boxes: Any, labels: Any, params: dict[str, Any], min_visibility: float
) -> dict[str, Any]:
    """``bounding_boxes`` after the keras.ops mix: own boxes, then (CutMix, MixUp) partner boxes;
    ``labels`` come from :func:`cutmix.keras.checks.signed_box_labels`."""
    dtype = keras.backend.standardize_dtype(boxes.dtype)
    label_dtype = box_label_dtype()
    work, labels = ops.cast(boxes, "float32"), ops.cast(labels, "int32")
    ones = ops.ones(ops.shape(labels), dtype="float32")
    if kind == "mixup":
        # Every box stays where it was, weighted by its image's share of the blend.
        weight = params["weight"][:, None]
        partner, partner_labels = (
            ops.take(work, params["partner"], axis=0),
            ops.take(labels, params["partner"], axis=0),
        )
        parts = [
            (work, labels, weight * ones, ops.logical_and(labels >= 0, weight > 0)),
            (
                partner,
                partner_labels,
                (1.0 - weight) * ones,
                ops.logical_and(partner_labels >= 0, weight < 1),
            ),
        ]
        return pack_kept_boxes(parts, dtype, label_dtype)
    own, keep = cut_own(work, labels, params, min_visibility)
    parts = [(own, labels, ones, keep)]
    if kind == "cutmix":
        partner_labels = ops.take(labels, params["partner"], axis=0)
        cut, keep2 = cut_partner(ops.take(work, params["partner"], axis=0), partner_labels, params,
                                        min_visibility)  # fmt: skip
        parts.append((cut, partner_labels, ones, keep2))
    return pack_kept_boxes(parts, dtype, label_dtype)


def apply_params(
    kind: str, images: Any, targets: Any, params: dict[str, Any], images2: Any = None, targets2: Any = None,
    data_format: str = "channels_last", fill: float = 0.0,
) -> tuple[Any, Any]:  # fmt: skip
    """The images and targets (None: none) mixed with ``params``, as :func:`cutmix.ops.apply_cutmix`,
    :func:`cutmix.ops.apply_mixup` and :func:`cutmix.ops.apply_cutout` mix them: a pasted box, a blend,
    or a box filled with ``fill`` (Cutout ignores a second batch and keeps the targets)."""
    if kind == "cutout":
        return ops.where(paste_mask(params, data_format), ops.cast(fill, images.dtype), images), targets
    partners = partner_batch(images, images2, params)
    if kind == "mixup":
        mixed = blend_pixels(images, partners, params["weight"])
    else:
        mixed = ops.where(paste_mask(params, data_format), partners, images)
    return mixed, None if targets is None else blend_targets(targets, targets2, params)


def apply_dense(
    kind: str, params: dict[str, Any], masks: Any = None, channel_axis: int | None = None, boxes: Any = None,
    box_labels: Any = None, mask_fill: int | None = None, min_visibility: float = rules.MIN_VISIBILITY,
) -> tuple[Any, Any]:  # fmt: skip
    """(masks, boxes) mixed with the ``params`` that mixed the images (None for those not given):
    CutMix pastes the partner's mask where it pasted its pixels, Cutout writes ``mask_fill`` there;
    boxes follow :func:`mix_bounding_boxes`."""
    masks_out = boxes_out = None
    if masks is not None:
        masks_out = mix_segmentation_masks(
            masks, channel_axis, params, mask_fill if kind == "cutout" else None
        )
    if boxes is not None:
        boxes_out = mix_bounding_boxes(kind, boxes, box_labels, params, min_visibility)
    return masks_out, boxes_out
