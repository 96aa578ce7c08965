"""Detection boxes through the mixing ops: their checks, the box-visibility rule and the packing of the
result (the rule is stated in :mod:`cutmix.ops.dense`). Vectorised over the batch: each sample's hole is
a (B, 1) column broadcast over its N boxes; the only loop over images pads per-image lists."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from cutmix.ops import rules
from cutmix.ops.apply import _NO_ARITHMETIC
from cutmix.ops.params import MixParams
from cutmix.ops.rules import MIN_VISIBILITY

__all__ = ["MixedBoxes", "cut_own_boxes", "cut_partner_boxes", "mix_boxes"]


class MixedBoxes(NamedTuple):
    """Boxes after a mix: ``boxes`` xyxy (B, M, 4) in the input's dtype, ``labels`` (B, M) int64 (−1:
    padding) and ``weights`` (B, M) float32 (1 for CutMix and Cutout, λ or 1 − λ for MixUp, 0 for
    padding). Kept boxes come first in each row, own boxes before partner boxes. For list input, each
    field is a list of per-image tensors without the padding."""

    boxes: Tensor | list[Tensor]
    labels: Tensor | list[Tensor]
    weights: Tensor | list[Tensor]


def _image_size(images: Tensor, data_format: str) -> tuple[int, int]:
    """(H, W) of a 4-D image batch (boxes are for images only)."""
    return (images.shape[2], images.shape[3]) if data_format == "channels_first" else images.shape[1:3]


def _describe(x: object) -> str:
    return f"dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__


def _pad_box_list(
    boxes: list | tuple, labels: object, batch: int, name: str, label_name: str
) -> tuple[Tensor, Tensor]:
    """Lists of per-image (n_i, 4) boxes and (n_i,) labels -> padded (B, N, 4) and (B, N) (−1)."""
    if not isinstance(labels, list | tuple):
        raise TypeError(
            f"{label_name}: expected a list of (n_i,) tensors like {name}, got {type(labels).__name__}"
        )
    if len(boxes) != batch or len(labels) != batch:
        raise ValueError(
            f"{name}, {label_name}: expected {batch} per-image tensors each, "
            f"got {len(boxes)} and {len(labels)}"
        )
    for i, (b, lab) in enumerate(zip(boxes, labels, strict=True)):
        if not isinstance(b, Tensor) or b.ndim != 2 or b.shape[1] != 4:
            shape = tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__
            raise ValueError(f"{name}: expected (n, 4) xyxy tensors, got {shape} for image {i}")
        if not isinstance(lab, Tensor) or lab.shape != b.shape[:1]:
            shape = tuple(lab.shape) if isinstance(lab, Tensor) else type(lab).__name__
            raise ValueError(f"{label_name}: expected ({b.shape[0]},) for image {i}'s boxes, got {shape}")
        if b.dtype != boxes[0].dtype or lab.dtype != labels[0].dtype:
            raise ValueError(f"{name}, {label_name}: expected one dtype for every image, got several")
    label_dtype = rules.dtype_name(labels[0].dtype)
    if not rules.is_int_name(label_dtype):
        raise rules.DtypeError(
            f"{label_name}: expected integer class ids (-1 for padding), got dtype {label_dtype}"
        )
    # A loop over images, but only to pad: everything after runs on the padded batch. Labels become
    # int64 first: uint8 ids cannot hold the -1 that pads them.
    padded = torch.nn.utils.rnn.pad_sequence(list(boxes), batch_first=True, padding_value=0)
    padded_labels = torch.nn.utils.rnn.pad_sequence(
        [lab.long() for lab in labels], batch_first=True, padding_value=-1
    )
    return padded, padded_labels


def _check_boxes(
    boxes: object, labels: object, images: Tensor, data_format: str, name: str = "boxes",
    label_name: str = "box_labels",
) -> tuple[Tensor, Tensor, bool]:  # fmt: skip
    """Checks boxes against ``images``; returns padded (B, N, 4) boxes, (B, N) labels, and whether
    they came as lists."""
    if images.ndim == 5:
        raise ValueError(
            f"{name}: expected 4-D images; boxes are not supported for video clips (per-frame boxes "
            "would need a (B, T, N, 4) layout): mix the clips' masks, or the frames as images"
        )
    batch = images.shape[0]
    height, width = _image_size(images, data_format)
    as_list = isinstance(boxes, list | tuple)
    if as_list:
        boxes, labels = _pad_box_list(boxes, labels, batch, name, label_name)
    if not isinstance(boxes, Tensor):
        raise TypeError(
            f"{name}: expected a (B, N, 4) tensor or a list of (n, 4) tensors, got {_describe(boxes)}"
        )
    if not isinstance(labels, Tensor):
        raise TypeError(f"{label_name}: expected a (B, N) tensor of class ids, got {type(labels).__name__}")
    dtypes = rules.dtype_name(boxes.dtype), rules.dtype_name(labels.dtype)
    rules.check_box_arrays(tuple(boxes.shape), tuple(labels.shape), *dtypes, batch, name, label_name)
    # int64 whatever the integer dtype, so every dtype gives what int64 gives: signed ids keep −1 as
    # padding; unsigned ones (uint8 cannot hold −1) are all class ids, and the output pads with −1.
    labels = labels.long()
    for tensor, what in ((boxes, name), (labels, label_name)):
        if tensor.device != images.device:
            raise ValueError(f"{what}: expected device {images.device} like images, got {tensor.device}")
    valid = labels >= 0
    # Compared in int64 where torch has no comparison kernels for the dtype (uint16/32/64).
    x0, y0, x1, y1 = (boxes.long() if boxes.dtype in _NO_ARITHMETIC else boxes).unbind(-1)
    inside = (x0 >= 0) & (y0 >= 0) & (x1 <= width) & (y1 <= height)  # False for NaN too
    ordered = (x1 >= x0) & (y1 >= y0)  # False for NaN too
    bad_label, bad_box = labels < -1, valid & ~(inside & ordered)
    if images.device.type != "cpu":
        # No host sync on an accelerator: checked asynchronously, as to_targets checks class ids.
        torch._assert_async(~(bad_label.any() | bad_box.any()), f"{name}: boxes outside the image or x2 < x1")
        return boxes, labels, as_list
    if bool(bad_label.any()):
        rules.check_box_labels_low(int(labels.min()), label_name)
    if bool(bad_box.any()):
        b, n = (int(i) for i in bad_box.nonzero()[0])
        rules.refuse_box(name, boxes[b, n].tolist(), width, height, b, n)
    return boxes, labels, as_list


def _work_dtype(boxes: Tensor) -> torch.dtype:
    # float64 makes areas of integer boxes exact; MPS has no float64.
    if boxes.device.type == "mps":
        return torch.float32
    return torch.float64 if not boxes.is_floating_point() or boxes.dtype == torch.float64 else torch.float32


def _hole(params: MixParams, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """x0, y0, x1, y1 (B, 1) of each sample's box (empty where not applied)."""
    y0, y1, x0, x1 = params.box.to(dtype).unbind(1)
    return x0[:, None], y0[:, None], x1[:, None], y1[:, None]


def _area(x0: Tensor, y0: Tensor, x1: Tensor, y1: Tensor) -> Tensor:
    return (x1 - x0).clamp_min(0) * (y1 - y0).clamp_min(0)


def cut_own_boxes(
    boxes: Tensor, labels: Tensor, params: MixParams, min_visibility: float
) -> tuple[Tensor, Tensor]:
    """Each box minus its sample's hole: (new boxes (B, N, 4) in the work dtype, keep (B, N) bool).

    The visible part of a box minus an axis-aligned hole has the same bounding box except on a side
    the hole covers along the box's whole other extent: only then does that side move to the hole's
    edge (a hole through the middle splits the box but leaves its bounding box).
    """
    work = boxes.to(_work_dtype(boxes))
    hx0, hy0, hx1, hy1 = _hole(params, work.dtype)
    bx0, by0, bx1, by1 = work.unbind(-1)
    area = _area(bx0, by0, bx1, by1)
    visible = area - _area(torch.maximum(bx0, hx0), torch.maximum(by0, hy0), torch.minimum(bx1, hx1),
                           torch.minimum(by1, hy1))  # fmt: skip
    spans_y = (hy0 <= by0) & (hy1 >= by1)
    spans_x = (hx0 <= bx0) & (hx1 >= bx1)
    new = torch.stack(
        [
            torch.where(spans_y & (hx0 <= bx0) & (hx1 > bx0), hx1, bx0),
            torch.where(spans_x & (hy0 <= by0) & (hy1 > by0), hy1, by0),
            torch.where(spans_y & (hx1 >= bx1) & (hx0 < bx1), hx0, bx1),
            torch.where(spans_x & (hy1 >= by1) & (hy0 < by1), hy0, by1),
        ],
        dim=-1,
    )
    applied = params.applied[:, None]
    keep = (labels >= 0) & (~applied | ((visible > 0) & (visible >= min_visibility * area)))
    return torch.where(applied[..., None], new, work), keep


def cut_partner_boxes(
    boxes: Tensor, labels: Tensor, params: MixParams, min_visibility: float
) -> tuple[Tensor, Tensor]:
    """Each partner box cut to the pasted region: (boxes (B, N, 4) in the work dtype, keep (B, N))."""
    work = boxes.to(_work_dtype(boxes))
    hx0, hy0, hx1, hy1 = _hole(params, work.dtype)
    bx0, by0, bx1, by1 = work.unbind(-1)
    cut = torch.stack([torch.maximum(bx0, hx0), torch.maximum(by0, hy0), torch.minimum(bx1, hx1),
                       torch.minimum(by1, hy1)], dim=-1)  # fmt: skip
    inside = _area(*cut.unbind(-1))
    keep = (
        (labels >= 0)
        & params.applied[:, None]
        & (inside > 0)
        & (inside >= min_visibility * _area(bx0, by0, bx1, by1))
    )
    return cut, keep


def _pack(
    parts: list[tuple[Tensor, Tensor, Tensor, Tensor]], dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    """Concatenates (boxes, labels, weights, keep) parts along N, blanks what is not kept (label −1,
    zeros) and moves the kept boxes to the front of each row, in their order."""
    boxes, labels, weights, keep = (torch.cat(p, dim=1) for p in zip(*parts, strict=True))
    order = torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)
    keep = keep.gather(1, order)
    boxes = torch.where(keep[..., None], boxes.gather(1, order[..., None].expand_as(boxes)), 0).to(dtype)
    labels = torch.where(keep, labels.gather(1, order), -1)
    weights = torch.where(keep, weights.gather(1, order), 0.0)
    return boxes, labels, weights


def mix_boxes(
    kind: str,
    boxes: Tensor,
    labels: Tensor,
    params: MixParams,
    boxes2: Tensor | None = None,
    labels2: Tensor | None = None,
    *,
    min_visibility: float = MIN_VISIBILITY,
) -> tuple[Tensor, Tensor, Tensor]:
    """Applies ``params`` (on the boxes' device) to checked, padded boxes; returns padded (boxes,
    labels, weights): own boxes, then (CutMix, MixUp) partner boxes, kept ones first."""
    min_visibility = rules.check_min_visibility(min_visibility)
    ones = torch.ones(labels.shape, dtype=torch.float32, device=labels.device)
    if kind == "cutout" or kind == "cutmix":
        own, keep = cut_own_boxes(boxes, labels, params, min_visibility)
        parts = [(own, labels, ones, keep)]
    if kind == "cutout":
        return _pack(parts, boxes.dtype)
    if boxes2 is None:
        boxes2, labels2 = boxes.index_select(0, params.partner), labels.index_select(0, params.partner)
    if kind == "cutmix":
        partner, keep2 = cut_partner_boxes(boxes2, labels2, params, min_visibility)
        parts.append((partner.to(own.dtype), labels2, torch.ones_like(labels2, dtype=torch.float32), keep2))
        return _pack(parts, boxes.dtype)
    # MixUp: every box stays where it was, weighted by its image's share of the blend (gathered in
    # int64 where torch has no gather for the dtype, and cast back: the values are unchanged).
    dtype = boxes.dtype
    if dtype in _NO_ARITHMETIC:
        boxes, boxes2 = boxes.long(), boxes2.long()
    weight = params.weight[:, None]
    keep, keep2 = (labels >= 0) & (weight > 0), (labels2 >= 0) & (weight < 1)
    parts = [
        (boxes, labels, weight.expand(labels.shape), keep),
        (boxes2, labels2, (1.0 - weight).expand(labels2.shape), keep2),
    ]
    return _pack(parts, dtype)


def _unpad(boxes: Tensor, labels: Tensor, weights: Tensor) -> MixedBoxes:
    counts = (labels >= 0).sum(1).tolist()  # kept boxes come first in each row
    return MixedBoxes(
        [b[:c] for b, c in zip(boxes, counts, strict=True)],
        [lab[:c] for lab, c in zip(labels, counts, strict=True)],
        [w[:c] for w, c in zip(weights, counts, strict=True)],
    )
