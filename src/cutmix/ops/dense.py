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

from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from cutmix.ops import rules
from cutmix.ops.boxes import MixedBoxes, _check_boxes, _describe, _unpad, mix_boxes
from cutmix.ops.params import MixParams
from cutmix.ops.rules import MASK_FILL, MIN_VISIBILITY, mask_channel_dim

__all__ = [
    "MASK_FILL",
    "MIN_VISIBILITY",
    "MixedBoxes",
    "MixedMasks",
    "mask_channel_dim",
    "mask_cross_entropy",
]


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


# ----------------------------------------------------------------------------------------------
# Shapes and checks
# ----------------------------------------------------------------------------------------------


def spatial_size(images: Tensor, data_format: str) -> tuple[int, int]:
    """(H, W) of an image batch (4-D) or a clip batch (5-D)."""
    if images.ndim == 5:
        return (images.shape[3], images.shape[4]) if data_format == "channels_first" else images.shape[2:4]
    return (images.shape[2], images.shape[3]) if data_format == "channels_first" else images.shape[1:3]


def _check_masks(masks: object, images: Tensor, data_format: str, name: str = "masks") -> int | None:
    """Checks ``masks`` against ``images``; returns its singleton channel dim, or None."""
    if isinstance(masks, MixedMasks):
        raise TypeError(
            f"{name}: expected a tensor of class ids, got MixUp's MixedMasks: a blended pixel has two "
            "classes, so masks cannot be mixed again after MixUp (mix first with CutMix or Cutout)"
        )
    if not isinstance(masks, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of class ids, got {type(masks).__name__}")
    rules.check_mask_dtype(rules.dtype_name(masks.dtype), name)
    channel_dim = mask_channel_dim(masks.shape, images.shape, data_format, name)
    if masks.device != images.device:
        raise ValueError(f"{name}: expected device {images.device} like images, got {masks.device}")
    return channel_dim


def _check_mask_fill(mask_fill: int, dtype: torch.dtype) -> None:
    rules.check_representable(
        "mask_fill", rules.check_mask_fill(mask_fill), rules.dtype_name(dtype), "the masks'"
    )


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
        _check_mask_fill(mask_fill, masks.dtype)
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
    dtype = rules.dtype_name(images.dtype)
    compute = getattr(torch, rules.blend_dtype(dtype))
    weight = params.weight.to(compute).view(-1, 1, 1, 1, 1)
    mixed = torch.lerp(partner.to(compute), images.to(compute), weight)
    if not images.is_floating_point():
        mixed = mixed.round_().clamp_(*rules.int_range(dtype))  # as apply_mixup: round to nearest
    return mixed.to(images.dtype)


# ----------------------------------------------------------------------------------------------
# The ops' entry point for masks, boxes and clips: named steps, in the order the call takes them
# ----------------------------------------------------------------------------------------------


class DenseOp(Protocol):
    """What :func:`mix_dense` needs of an op (the ops of :mod:`cutmix.ops.classes` are ones), so that
    this module depends on no op class. ``fill``, ``mask_fill`` and ``min_visibility`` are read where
    the op has them (Cutout; CutMix), with the defaults otherwise."""

    kind: str
    data_format: str
    num_classes: int | None

    def _inputs(self, images: Tensor, labels: Tensor, images2: Tensor | None,
                labels2: Tensor | None) -> tuple[Tensor, Tensor | None]: ...  # fmt: skip

    def _targets(self, labels: Tensor, device: torch.device) -> Tensor: ...

    def _next_params(self, batch_size: int, height: int, width: int, paired: bool) -> MixParams: ...

    def _apply(self, images: Tensor, targets: Tensor, params: MixParams, images2: Tensor | None,
               targets2: Tensor | None) -> tuple[Tensor, Tensor]: ...  # fmt: skip


class _Checked(NamedTuple):
    """A call's checked masks and boxes (None where not given, the second batch's where not mixed)."""

    masks: Tensor | None = None
    masks2: Tensor | None = None
    channel_dim: int | None = None
    boxes: Tensor | None = None
    box_labels: Tensor | None = None
    boxes2: Tensor | None = None
    box_labels2: Tensor | None = None
    as_list: bool = False


def _stand_in_labels(op: DenseOp, images: Tensor, labels2: Tensor | None, carried: bool) -> Tensor:
    """Placeholder labels (for both batches) in a call whose masks or boxes carry the labels
    (``carried``): mixed and thrown away, so that the image path stays the one path."""
    if not carried:
        raise ValueError("labels: expected a tensor (None only with masks or boxes), got None")
    if labels2 is not None:
        raise ValueError("labels2: expected None like labels, got a tensor")
    batch = images.shape[0] if isinstance(images, Tensor) and images.ndim else 0
    device = images.device if isinstance(images, Tensor) else None
    return torch.zeros(batch, op.num_classes or 1, device=device)


def _clip_targets(op: DenseOp, images: Tensor, labels: Tensor, images2: Tensor | None,
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
    rules.check_second_batch(images2 is not None, labels2 is not None)
    if images2 is None:
        return targets, None
    _check_clips(images2, op.data_format, "images2")
    if images2.shape != images.shape or images2.dtype != images.dtype or images2.device != images.device:
        raise ValueError(
            f"images2: expected the shape, dtype and device of images {tuple(images.shape)} {images.dtype} "
            f"{images.device}, got {tuple(images2.shape)} {images2.dtype} {images2.device}"
        )
    return targets, op._targets(labels2, images.device)


def _checked_masks(
    op: DenseOp, images: Tensor, paired: bool, masks: Tensor | None, masks2: Tensor | None
) -> tuple[Tensor | None, Tensor | None, int | None]:
    """(masks, masks2 where mixed, the masks' channel dim), checked against the images and each other."""
    if masks is None:
        if masks2 is not None and paired:
            raise ValueError("masks2: expected None without masks, got a tensor")
        return None, None, None
    channel_dim = _check_masks(masks, images, op.data_format)
    if op.kind == "cutout":
        _check_mask_fill(getattr(op, "mask_fill", MASK_FILL), masks.dtype)
    if not paired:
        return masks, None, channel_dim
    if masks2 is None:
        raise ValueError("masks2: expected the masks of images2 (masks were given), got None")
    if masks2.dtype != masks.dtype or _check_masks(masks2, images, op.data_format, "masks2") != channel_dim:
        raise ValueError(
            f"masks2: expected the shape and dtype of masks {tuple(masks.shape)} {masks.dtype}, "
            f"got {tuple(masks2.shape)} {masks2.dtype}"
        )
    return masks, masks2, channel_dim


def _checked_boxes(
    images: Tensor, data_format: str, paired: bool, boxes: object, box_labels: object, boxes2: object,
    box_labels2: object,
) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None, bool]:  # fmt: skip
    """(boxes, box_labels, boxes2 and box_labels2 where mixed, whether they came as lists), checked
    and padded."""
    if boxes is None and box_labels is None:
        if (boxes2 is not None or box_labels2 is not None) and paired:
            raise ValueError("boxes2: expected None without boxes, got boxes")
        return None, None, None, None, False
    if boxes is None or box_labels is None:
        raise ValueError("boxes, box_labels: expected both or neither, got only one")
    boxes, box_labels, as_list = _check_boxes(boxes, box_labels, images, data_format)
    if not paired:
        return boxes, box_labels, None, None, as_list
    if boxes2 is None or box_labels2 is None:
        raise ValueError("boxes2, box_labels2: expected the boxes of images2 (boxes were given), got None")
    boxes2, box_labels2, _ = _check_boxes(boxes2, box_labels2, images, data_format, "boxes2", "box_labels2")
    if boxes2.dtype != boxes.dtype or box_labels2.dtype != box_labels.dtype:
        raise ValueError(
            f"boxes2, box_labels2: expected dtypes {boxes.dtype}, {box_labels.dtype} like boxes, "
            f"got {boxes2.dtype}, {box_labels2.dtype}"
        )
    return boxes, box_labels, boxes2, box_labels2, as_list


def _mix_images(op: DenseOp, images: Tensor, targets: Tensor, params: MixParams, images2: Tensor | None,
                targets2: Tensor | None) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The images (by the op's own apply, or as clips) and their targets, mixed with ``params``."""
    if images.ndim != 5:
        return op._apply(images, targets, params, images2, targets2)
    fill = getattr(op, "fill", 0.0)
    mixed = apply_clips(op.kind, images, params, images2, data_format=op.data_format, fill=fill)
    if op.kind == "cutout":
        return mixed, targets
    partner_targets = targets2 if targets2 is not None else targets.index_select(0, params.partner)
    return mixed, torch.lerp(partner_targets, targets, params.weight[:, None])


def _mix_carried(op: DenseOp, checked: _Checked, params: MixParams) -> list:
    """The masks and boxes, mixed with the parameters that mixed the images."""
    out: list = []
    if checked.masks is not None:
        mask_fill = getattr(op, "mask_fill", MASK_FILL)
        out.append(mix_masks(op.kind, checked.masks, params, checked.masks2, channel_dim=checked.channel_dim,
                             mask_fill=mask_fill))  # fmt: skip
    if checked.boxes is not None:
        min_visibility = getattr(op, "min_visibility", MIN_VISIBILITY)
        mixed = mix_boxes(
            op.kind, checked.boxes, checked.box_labels, params, checked.boxes2, checked.box_labels2,
            min_visibility=min_visibility,
        )  # fmt: skip
        out.append(_unpad(*mixed) if checked.as_list else MixedBoxes(*mixed))
    return out


def mix_dense(
    op: DenseOp,
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
    Every check runs before the draw, so a refused call draws nothing.
    """
    no_targets = labels is None
    if no_targets:
        labels = _stand_in_labels(op, images, labels2, masks is not None or boxes is not None)
        labels2 = None if images2 is None else labels
    clips = isinstance(images, Tensor) and images.ndim == 5
    if clips:
        targets, targets2 = _clip_targets(op, images, labels, images2, labels2)
    else:
        targets, targets2 = op._inputs(images, labels, images2, labels2)
    paired = images2 is not None and op.kind != "cutout"  # Cutout ignores a second batch
    checked = _Checked(
        *_checked_masks(op, images, paired, masks, masks2),
        *_checked_boxes(images, op.data_format, paired, boxes, box_labels, boxes2, box_labels2),
    )
    height, width = spatial_size(images, op.data_format)
    # Keyed like the call without masks (a second batch counts even for Cutout), so the draws match it.
    params = op._next_params(images.shape[0], height, width, images2 is not None)
    on_device = params.to(images.device)
    if not paired:
        images2 = targets2 = None
    mixed, mixed_targets = _mix_images(op, images, targets, on_device, images2, targets2)
    out = [mixed, None if no_targets else mixed_targets, *_mix_carried(op, checked, on_device)]
    return (*out, params) if return_params else tuple(out)
