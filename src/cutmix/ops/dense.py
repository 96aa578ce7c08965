"""Dense targets for the mixing ops: segmentation masks, detection boxes and video clips.

The ops already know each sample's box and partner, so per-pixel labels and boxes follow the image
with a few more tensor ops and the same parameters, drawn once (the image path is the classification
path, unchanged: its draws and pixels are bit-identical with and without masks or boxes).

* ``masks``: integer class ids, (B, H, W) or (B, 1, H, W) (``(B, H, W, 1)`` with
  ``data_format="channels_last"``); for clips (B, T, H, W) or with that singleton dim. Dtype, shape
  and memory layout are kept. CutMix pastes the partner's mask in exactly the pixels where it pastes
  the partner's image; Cutout fills the hole with ``mask_fill`` (255, the usual ignore index). A
  MixUp'd pixel belongs to two classes at once, so MixUp returns :class:`MixedMasks` (both masks and
  each sample's weight) instead of one mask; :func:`mask_cross_entropy` turns either form into the
  loss without materialising K×H×W soft targets.
* ``boxes``: xyxy pixel coordinates (pixel i spans [i, i+1)), a padded (B, N, 4) tensor with (B, N)
  ``box_labels`` (−1 marks padding), or lists of per-image (n_i, 4) and (n_i,) tensors. Box labels may
  have any integer dtype; unsigned ones are all class ids (uint8 has no −1). Returned as
  :class:`MixedBoxes`: padded (B, N + N2, 4), kept boxes first, int64 labels with −1 padding (or lists
  again for list input).
  **Box rule:** in a sample that was cut or pasted, each box becomes the tightest box around its part
  still visible (own boxes: outside the hole; partner boxes: inside the pasted region) and is kept when
  that part covers at least ``min_visibility`` (default 0.25) of the box's area; zero-area boxes have
  no pixels, so they are dropped from such samples. Unmixed samples keep their boxes unchanged.
  MixUp keeps both images' boxes, with weights λ and 1 − λ.
* Video clips: images (B, C, T, H, W), or (B, T, H, W, C) with ``data_format="channels_last"``: one λ,
  box and partner per clip, the same across its frames.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from cutmix.ops.apply import _NO_ARITHMETIC
from cutmix.ops.params import MixParams

if TYPE_CHECKING:
    from cutmix.ops.classes import _BatchOp

__all__ = ["MASK_FILL", "MIN_VISIBILITY", "MixedBoxes", "MixedMasks", "mask_cross_entropy"]

MASK_FILL = 255
MIN_VISIBILITY = 0.25


class MixedMasks(NamedTuple):
    """What MixUp returns for ``masks``: a pixel of a blended image belongs to two classes at once.

    ``masks`` (a copy of the input) and ``partner_masks`` have the input's shape and dtype; ``weight``
    (B,) float32 is the share of ``masks`` in each sample (λ; 1 where nothing was mixed). The loss is
    ``weight·CE(logits, masks) + (1 − weight)·CE(logits, partner_masks)`` per pixel: see
    :func:`mask_cross_entropy`.
    """

    masks: Tensor
    partner_masks: Tensor
    weight: Tensor


class MixedBoxes(NamedTuple):
    """Boxes after a mix: ``boxes`` xyxy (B, M, 4) in the input's dtype, ``labels`` (B, M) int64 (−1:
    padding) and ``weights`` (B, M) float32 (1 for CutMix and Cutout, λ or 1 − λ for MixUp, 0 for
    padding). Kept boxes come first in each row, own boxes before partner boxes. For list input, each
    field is a list of per-image tensors without the padding."""

    boxes: Tensor | list[Tensor]
    labels: Tensor | list[Tensor]
    weights: Tensor | list[Tensor]


# ----------------------------------------------------------------------------------------------
# Shapes and checks
# ----------------------------------------------------------------------------------------------


def spatial_size(images: Tensor, data_format: str) -> tuple[int, int]:
    """(H, W) of an image batch (4-D) or a clip batch (5-D)."""
    if images.ndim == 5:
        return (images.shape[3], images.shape[4]) if data_format == "channels_first" else images.shape[2:4]
    return (images.shape[2], images.shape[3]) if data_format == "channels_first" else images.shape[1:3]


def mask_channel_dim(
    mask_shape: tuple[int, ...], image_shape: tuple[int, ...], data_format: str, name: str = "masks"
) -> int | None:
    """Checks a mask shape against images of ``image_shape`` (any backend: shapes only); returns the
    mask's singleton channel dim, or None for plain (B, [T,] H, W) masks."""
    mask_shape, image_shape = tuple(mask_shape), tuple(image_shape)
    if data_format == "channels_first":
        plain = (image_shape[0], *image_shape[2:])
        channel, dim = (plain[0], 1, *plain[1:]), 1
    else:
        plain = image_shape[:-1]
        channel, dim = (*plain, 1), len(plain)
    if mask_shape == plain:
        return None
    if mask_shape == channel:
        return dim
    raise ValueError(
        f"{name}: expected shape {plain} or {channel} to match images {image_shape} "
        f"({data_format}), got {mask_shape}"
    )


def _check_masks(masks: object, images: Tensor, data_format: str, name: str = "masks") -> int | None:
    """Checks ``masks`` against ``images``; returns its singleton channel dim, or None."""
    if isinstance(masks, MixedMasks):
        raise TypeError(
            f"{name}: expected a tensor of class ids, got MixUp's MixedMasks: a blended pixel has two "
            "classes, so masks cannot be mixed again after MixUp (mix first with CutMix or Cutout)"
        )
    if not isinstance(masks, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of class ids, got {type(masks).__name__}")
    if masks.is_floating_point() or masks.is_complex() or masks.dtype == torch.bool:
        raise ValueError(
            f"{name}: expected an integer tensor of class ids (e.g. uint8, int64), got {masks.dtype}"
        )
    channel_dim = mask_channel_dim(masks.shape, images.shape, data_format, name)
    if masks.device != images.device:
        raise ValueError(f"{name}: expected device {images.device} like images, got {masks.device}")
    return channel_dim


def _check_fill(mask_fill: int, dtype: torch.dtype) -> None:
    info = torch.iinfo(dtype)
    if isinstance(mask_fill, bool) or not isinstance(mask_fill, int) or not info.min <= mask_fill <= info.max:
        raise ValueError(
            f"mask_fill: expected an int representable in the masks' {dtype} ([{info.min}, {info.max}]), "
            f"got {mask_fill!r}"
        )


def _check_min_visibility(min_visibility: float) -> float:
    if (
        isinstance(min_visibility, bool)
        or not isinstance(min_visibility, int | float)
        or not (0.0 <= min_visibility <= 1.0)
    ):
        raise ValueError(f"min_visibility: expected a number in [0, 1], got {min_visibility!r}")
    return float(min_visibility)


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
    _check_box_label_dtype(labels[0], label_name)
    # A loop over images, but only to pad: everything after runs on the padded batch. Labels become
    # int64 first: uint8 ids cannot hold the -1 that pads them.
    padded = torch.nn.utils.rnn.pad_sequence(list(boxes), batch_first=True, padding_value=0)
    padded_labels = torch.nn.utils.rnn.pad_sequence(
        [lab.long() for lab in labels], batch_first=True, padding_value=-1
    )
    return padded, padded_labels


def _check_box_label_dtype(labels: Tensor, label_name: str) -> None:
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(
            f"{label_name}: expected integer class ids (−1 for padding), got dtype {labels.dtype}"
        )


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
    height, width = spatial_size(images, data_format)
    as_list = isinstance(boxes, list | tuple)
    if as_list:
        boxes, labels = _pad_box_list(boxes, labels, batch, name, label_name)
    if not isinstance(boxes, Tensor):
        raise TypeError(
            f"{name}: expected a (B, N, 4) tensor or a list of (n, 4) tensors, got {_describe(boxes)}"
        )
    if not isinstance(labels, Tensor):
        raise TypeError(f"{label_name}: expected a (B, N) tensor of class ids, got {type(labels).__name__}")
    if boxes.dtype == torch.bool or boxes.is_complex():
        raise ValueError(f"{name}: expected float or integer pixel coordinates, got dtype {boxes.dtype}")
    _check_box_label_dtype(labels, label_name)
    # int64 whatever the integer dtype, so every dtype gives what int64 gives: signed ids keep −1 as
    # padding; unsigned ones (uint8 cannot hold −1) are all class ids, and the output pads with −1.
    labels = labels.long()
    if boxes.ndim != 3 or boxes.shape[0] != batch or boxes.shape[2] != 4:
        raise ValueError(f"{name}: expected shape ({batch}, N, 4) (xyxy), got {tuple(boxes.shape)}")
    if tuple(labels.shape) != tuple(boxes.shape[:2]):
        raise ValueError(
            f"{label_name}: expected shape {tuple(boxes.shape[:2])} like {name}, got {tuple(labels.shape)}"
        )
    for tensor, what in ((boxes, name), (labels, label_name)):
        if tensor.device != images.device:
            raise ValueError(f"{what}: expected device {images.device} like images, got {tensor.device}")
    valid = labels >= 0
    # Compared in int64 where torch has no comparison kernels for the dtype (uint16/32/64).
    x0, y0, x1, y1 = (boxes.long() if boxes.dtype in _NO_ARITHMETIC else boxes).unbind(-1)
    inside = (x0 >= 0) & (y0 >= 0) & (x1 <= width) & (y1 <= height)  # False for NaN too
    ordered = (x1 >= x0) & (y1 >= y0)
    bad_label, bad_box = labels < -1, valid & ~(inside & ordered)
    if images.device.type != "cpu":
        # No host sync on an accelerator: checked asynchronously, as to_targets checks class ids.
        torch._assert_async(~(bad_label.any() | bad_box.any()), f"{name}: boxes outside the image or x2 < x1")
        return boxes, labels, as_list
    if bool(bad_label.any()):
        raise ValueError(f"{label_name}: expected class ids >= 0, or −1 for padding, got {int(labels.min())}")
    if bool(bad_box.any()):
        b, n = (int(i) for i in bad_box.nonzero()[0])
        box = [round(float(v), 3) for v in boxes[b, n]]
        problem = "x2 < x1 or y2 < y1" if not bool(ordered[b, n]) else f"outside the {width}x{height} image"
        raise ValueError(
            f"{name}: expected xyxy pixel boxes with 0 <= x1 <= x2 <= {width} and 0 <= y1 <= y2 <= {height}, "
            f"got {box} ({problem}) for image {b}, box {n}"
        )
    return boxes, labels, as_list


# ----------------------------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------------------------


def _box_flags(params: MixParams, frames: bool) -> Tensor:
    """(B, H, W) bool, set inside each sample's box ((B, 1, H, W) for clips, one box per clip).

    Built as uint8 and viewed as bool: on the CPU a broadcast ``&`` of bool tensors ran 9x slower
    than the same of uint8 ones (18 ms against 2 ms for 128x224x224, one thread)."""
    rows = (params.box_rows > 0).to(torch.uint8)
    cols = (params.box_cols > 0).to(torch.uint8)
    box = (rows[:, :, None] & cols[:, None, :]).view(torch.bool)  # values 0/1: a valid bool view
    return box[:, None] if frames else box


def _plain(masks: Tensor, channel_dim: int | None) -> Tensor:
    return masks if channel_dim is None else masks.squeeze(channel_dim)


def mix_masks(
    kind: str,
    masks: Tensor,
    params: MixParams,
    masks2: Tensor | None = None,
    *,
    channel_dim: int | None = None,
    mask_fill: int = MASK_FILL,
) -> Tensor | MixedMasks:
    """Applies ``params`` (on the masks' device) to checked masks: pasted (CutMix), filled (Cutout) or
    paired with their partners (MixUp, :class:`MixedMasks`). Returns new tensors laid out like
    ``masks``."""
    if kind == "mixup":
        # Indexing, not index_select: on the CPU index_select of large uint8 rows ran ~40x slower here.
        partner = masks2.clone() if masks2 is not None else masks[params.partner]
        return MixedMasks(masks.clone(), partner, params.weight.clone())
    plain = _plain(masks, channel_dim)
    # The same box rows and columns as the images' paste, so mask and image change in the same pixels.
    box = _box_flags(params, frames=plain.ndim == 4)
    out = torch.empty_like(masks)  # keeps the input's memory layout
    if kind == "cutout":
        _check_fill(mask_fill, masks.dtype)
        fill = torch.full((), mask_fill, dtype=masks.dtype, device=masks.device)
        torch.where(box, fill, plain, out=_plain(out, channel_dim))
        return out
    partner = _plain(masks2, channel_dim) if masks2 is not None else plain.index_select(0, params.partner)
    torch.where(box, partner, plain, out=_plain(out, channel_dim))
    return out


def mask_cross_entropy(
    logits: Tensor, masks: Tensor | MixedMasks, *, ignore_index: int = MASK_FILL, reduction: str = "mean"
) -> Tensor:
    """Per-pixel cross-entropy of ``logits`` (B, K, [T,] H, W) against the masks any op returned.

    A tensor (CutMix, Cutout, or no mix) gives ``F.cross_entropy(logits, masks, ignore_index=...)``.
    :class:`MixedMasks` (MixUp) gives, per pixel, ``w·CE(masks) + (1 − w)·CE(partner_masks)`` with
    each sample's weight ``w``; ``"mean"`` divides by the summed weights of the pixels not ignored (so
    with w = 1 it equals the plain mean). Only the K log-probabilities per pixel are computed, never
    K×H×W soft targets.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction: expected 'mean', 'sum' or 'none', got {reduction!r}")
    if not isinstance(logits, Tensor) or logits.ndim < 3 or not logits.is_floating_point():
        raise ValueError(f"logits: expected a float tensor (B, K, [T,] H, W), got {_describe(logits)}")
    if isinstance(masks, MixedMasks):
        parts = [(masks.masks, masks.weight), (masks.partner_masks, 1.0 - masks.weight)]
    elif isinstance(masks, Tensor):
        parts = [(masks, None)]
    else:
        raise TypeError(f"masks: expected a tensor or MixedMasks, got {type(masks).__name__}")
    expected = (logits.shape[0], *logits.shape[2:])
    log_probs = F.log_softmax(logits, dim=1)
    loss = count = None
    for target, weight in parts:
        if target.ndim == logits.ndim and target.shape[1] == 1:
            target = target.squeeze(1)
        elif target.ndim == logits.ndim and target.shape[-1] == 1:
            target = target.squeeze(-1)
        if tuple(target.shape) != expected:
            raise ValueError(
                f"masks: expected shape {expected} to match logits {tuple(logits.shape)}, "
                f"got {tuple(target.shape)}"
            )
        if target.is_floating_point() or target.dtype == torch.bool:
            raise ValueError(f"masks: expected integer class ids, got dtype {target.dtype}")
        target = target.long()
        nll = F.nll_loss(log_probs, target, ignore_index=ignore_index, reduction="none")
        valid = (target != ignore_index).to(nll.dtype)
        if weight is not None:
            w = weight.to(nll.dtype).view(-1, *([1] * (nll.ndim - 1)))
            nll, valid = nll * w, valid * w
        loss = nll if loss is None else loss + nll
        count = valid if count is None else count + valid
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.sum() / count.sum()


# ----------------------------------------------------------------------------------------------
# Boxes (vectorised over the batch: each sample's hole is a (B, 1) column broadcast over its N boxes)
# ----------------------------------------------------------------------------------------------


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
    min_visibility = _check_min_visibility(min_visibility)
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


# ----------------------------------------------------------------------------------------------
# Video clips (B, C, T, H, W) / (B, T, H, W, C): one box and partner per clip
# ----------------------------------------------------------------------------------------------


def _check_clips(images: object, data_format: str, name: str = "images") -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(images).__name__}")
    layout = "(B, C, T, H, W)" if data_format == "channels_first" else "(B, T, H, W, C)"
    if images.ndim != 5 or images.shape[0] == 0:
        raise ValueError(
            f"{name}: expected a non-empty 5-D clip batch {layout}, got shape {tuple(images.shape)}"
        )
    if images.dtype == torch.bool or images.is_complex():
        raise ValueError(f"{name}: expected an integer or floating-point tensor, got dtype {images.dtype}")


def apply_clips(
    kind: str,
    images: Tensor,
    params: MixParams,
    images2: Tensor | None = None,
    *,
    data_format: str = "channels_first",
    fill: float = 0.0,
) -> Tensor:
    """Applies one batch of ``params`` (on the clips' device) to clips, the same box and partner in
    every frame. Returns a new tensor; the rules per kind are those of the image ops."""
    if kind != "mixup":
        height, width = spatial_size(images, data_format)
        if (params.height, params.width) != (height, width):
            raise ValueError(
                f"params: expected parameters drawn for {height}x{width} frames, "
                f"got {params.height}x{params.width}"
            )
        box = _box_flags(params, frames=False)
        box = box[:, None, None] if data_format == "channels_first" else box[:, None, :, :, None]
        if kind == "cutout":
            return torch.where(box, torch.full((), fill, dtype=images.dtype, device=images.device), images)
    partner = images2 if images2 is not None else images[params.partner]  # see mix_masks
    if kind == "cutmix":
        return torch.where(box, partner, images)
    compute = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    weight = params.weight.to(compute).view(-1, 1, 1, 1, 1)
    mixed = torch.lerp(partner.to(compute), images.to(compute), weight)
    if not images.is_floating_point():
        info = torch.iinfo(images.dtype)
        mixed = mixed.round_().clamp_(info.min, info.max)  # as apply_mixup: round to nearest
    return mixed.to(images.dtype)


# ----------------------------------------------------------------------------------------------
# The ops' entry point for masks, boxes and clips
# ----------------------------------------------------------------------------------------------


def _clip_targets(op: _BatchOp, images: Tensor, labels: Tensor, images2: Tensor | None,
                  labels2: Tensor | None) -> tuple[Tensor, Tensor | None]:  # fmt: skip
    _check_clips(images, op.data_format)
    for lab, what, imgs in ((labels, "labels", images), (labels2, "labels2", images2)):
        if imgs is None:
            continue
        if not isinstance(lab, Tensor) or lab.ndim == 0 or lab.shape[0] != images.shape[0]:
            raise ValueError(
                f"{what}: expected {images.shape[0]} labels to match the clips' batch size, "
                f"got {_describe(lab)}"
            )
    targets = op._targets(labels, images.device)
    if (images2 is None) != (labels2 is None):
        raise ValueError("images2, labels2: expected both or neither, got only one")
    if images2 is None:
        return targets, None
    _check_clips(images2, op.data_format, "images2")
    if images2.shape != images.shape or images2.dtype != images.dtype or images2.device != images.device:
        raise ValueError(
            f"images2: expected the shape, dtype and device of images {tuple(images.shape)} {images.dtype} "
            f"{images.device}, got {tuple(images2.shape)} {images2.dtype} {images2.device}"
        )
    return targets, op._targets(labels2, images.device)


def mix_dense(
    op: _BatchOp,
    images: Tensor,
    labels: Tensor | None,
    images2: Tensor | None = None,
    labels2: Tensor | None = None,
    *,
    return_params: bool = False,
    masks: Tensor | None = None,
    masks2: Tensor | None = None,
    boxes: Tensor | list[Tensor] | None = None,
    box_labels: Tensor | list[Tensor] | None = None,
    boxes2: Tensor | list[Tensor] | None = None,
    box_labels2: Tensor | list[Tensor] | None = None,
) -> tuple:
    """``op``'s call with masks, boxes or clips: ``(images, targets[, masks][, boxes][, params])``.

    ``labels`` may be None when masks or boxes carry the labels; ``targets`` is None then. The images
    are mixed by ``op``'s own apply (4-D), so they are exactly what the call without masks returns.
    """
    kind, data_format = op.kind, op.data_format
    clips = isinstance(images, Tensor) and images.ndim == 5
    if labels is None:
        if masks is None and boxes is None:
            raise ValueError("labels: expected a tensor (None only with masks or boxes), got None")
        if labels2 is not None:
            raise ValueError("labels2: expected None like labels, got a tensor")
        # Placeholder targets, mixed and thrown away, so the image path stays the one path.
        batch = images.shape[0] if isinstance(images, Tensor) and images.ndim else 0
        device = images.device if isinstance(images, Tensor) else None
        labels = torch.zeros(batch, op.num_classes or 1, device=device)
        labels2 = None if images2 is None else labels
        no_targets = True
    else:
        no_targets = False
    if clips:
        targets, targets2 = _clip_targets(op, images, labels, images2, labels2)
    else:
        targets, targets2 = op._inputs(images, labels, images2, labels2)
    paired = images2 is not None and kind != "cutout"  # Cutout ignores a second batch

    channel_dim = channel_dim2 = None
    if masks is not None:
        channel_dim = _check_masks(masks, images, data_format)
        if kind == "cutout":
            _check_fill(getattr(op, "mask_fill", MASK_FILL), masks.dtype)
        if paired:
            if masks2 is None:
                raise ValueError("masks2: expected the masks of images2 (masks were given), got None")
            channel_dim2 = _check_masks(masks2, images, data_format, "masks2")
            if masks2.dtype != masks.dtype or channel_dim2 != channel_dim:
                raise ValueError(
                    f"masks2: expected the shape and dtype of masks {tuple(masks.shape)} {masks.dtype}, "
                    f"got {tuple(masks2.shape)} {masks2.dtype}"
                )
    elif masks2 is not None and paired:
        raise ValueError("masks2: expected None without masks, got a tensor")
    if boxes is not None or box_labels is not None:
        if boxes is None or box_labels is None:
            raise ValueError("boxes, box_labels: expected both or neither, got only one")
        boxes, box_labels, as_list = _check_boxes(boxes, box_labels, images, data_format)
        if paired:
            if boxes2 is None or box_labels2 is None:
                raise ValueError(
                    "boxes2, box_labels2: expected the boxes of images2 (boxes were given), got None"
                )
            boxes2, box_labels2, _ = _check_boxes(
                boxes2, box_labels2, images, data_format, "boxes2", "box_labels2"
            )
            if boxes2.dtype != boxes.dtype or box_labels2.dtype != box_labels.dtype:
                raise ValueError(
                    f"boxes2, box_labels2: expected dtypes {boxes.dtype}, {box_labels.dtype} like boxes, "
                    f"got {boxes2.dtype}, {box_labels2.dtype}"
                )
    elif (boxes2 is not None or box_labels2 is not None) and paired:
        raise ValueError("boxes2: expected None without boxes, got boxes")

    height, width = spatial_size(images, data_format)
    # Keyed like the call without masks (a second batch counts even for Cutout), so the draws match it.
    params = op._next_params(images.shape[0], height, width, images2 is not None)
    on_device = params.to(images.device)
    if not paired:
        images2 = targets2 = None
    if clips:
        mixed = apply_clips(
            kind, images, on_device, images2, data_format=data_format, fill=getattr(op, "fill", 0.0)
        )
        if kind == "cutout":
            mixed_targets = targets
        else:
            partner_targets = targets2 if targets2 is not None else targets.index_select(0, on_device.partner)
            mixed_targets = torch.lerp(partner_targets, targets, on_device.weight[:, None])
    else:
        mixed, mixed_targets = op._apply(images, targets, on_device, images2, targets2)

    out: list = [mixed, None if no_targets else mixed_targets]
    if masks is not None:
        out.append(mix_masks(kind, masks, on_device, masks2 if paired else None, channel_dim=channel_dim,
                             mask_fill=getattr(op, "mask_fill", MASK_FILL)))  # fmt: skip
    if boxes is not None:
        mixed_boxes = mix_boxes(kind, boxes, box_labels, on_device, boxes2 if paired else None,
                                box_labels2 if paired else None,
                                min_visibility=getattr(op, "min_visibility", MIN_VISIBILITY))  # fmt: skip
        out.append(_unpad(*mixed_boxes) if as_list else MixedBoxes(*mixed_boxes))
    if return_params:
        out.append(params)
    return tuple(out)
