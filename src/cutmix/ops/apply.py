"""Applying: ``apply_*``, which apply :class:`MixParams` to a batch on the images' device, and
:func:`to_targets`."""

from __future__ import annotations

import functools
import math
import threading
from typing import NamedTuple

import torch
from torch import Tensor

from cutmix.ops import rules
from cutmix.ops.params import _PARTNER, _WEIGHT, DataFormat, MixParams

# ----------------------------------------------------------------------------------------------
# What a call derives from the parameters: drawn ahead in bulk by the classes
# ----------------------------------------------------------------------------------------------


class _Ready(NamedTuple):
    """Tensors derived from one batch's :class:`MixParams` on the CPU. The classes derive them for
    all the batches they draw ahead with two ops, instead of two per call."""

    partner: Tensor  # int64 (B,): the gather index
    weight: Tensor  # float32 (B, 1): the own target's weight, a view of the table
    box: tuple[Tensor, Tensor] | None = None  # float32 (B, H, 1) row and (B, 1, W) column flags
    image_weight: Tensor | None = None  # float32 (B, 1, 1, 1): ``weight`` for the images (MixUp)
    row_source: tuple[_RowSources, int] | None = None  # the batches' row sources, and this one's index


class _RowSources:
    """:func:`_row_source` of all the batches drawn ahead, derived at once on first use (only
    channels-innermost CutMix uses them)."""

    def __init__(self, params: MixParams, partner: Tensor, batch_size: int) -> None:
        self.params, self.partner, self.batch_size, self.sources = params, partner, batch_size, None

    def get(self, index: int) -> Tensor:
        if self.sources is None:
            own = torch.arange(self.batch_size).repeat(self.params.batch_size // self.batch_size)
            sources = _row_source(self.params, self.partner, own)
            self.sources = sources.split(self.batch_size * self.params.height)
        return self.sources[index]


def _row_source(params: MixParams, partner: Tensor, own: Tensor | None = None) -> Tensor:
    """(B·H,) int64: for a batch viewed as (B·H, W·C) rows, the row each output row is copied from:
    the partner's same row inside the box's rows, the sample's own row elsewhere (CutMix). (``own``:
    each row's index in its batch, for the rows of several batches.)"""
    own = torch.arange(params.batch_size) if own is None else own
    source = torch.where(params.box_rows > 0, partner[:, None], own[:, None])
    return source.mul_(params.height).add_(torch.arange(params.height)).view(-1)


def split_ready(params: MixParams, batch_size: int) -> list[MixParams]:
    """``params.split(batch_size)``, each batch carrying its :class:`_Ready` tensors, derived for
    all the batches at once (CPU parameters)."""
    batches = params.split(batch_size)
    partner = params.table[:, _PARTNER].long()
    partners = partner.split(batch_size)
    weights = params.table[:, _WEIGHT : _WEIGHT + 1].split(batch_size)
    boxes, image_weights, sources = [None] * len(batches), [None] * len(batches), [None] * len(batches)
    if params.kind == "cutmix":
        lazy = _RowSources(params, partner, batch_size)
        sources = [(lazy, index) for index in range(len(batches))]
    if params.height:
        rows, cols = (
            params.box_rows[:, :, None].split(batch_size),
            params.box_cols[:, None, :].split(batch_size),
        )
        boxes = list(zip(rows, cols, strict=True))
    else:
        image_weights = params.table[:, _WEIGHT, None, None, None].split(batch_size)
    for batch, *ready in zip(batches, partners, weights, boxes, image_weights, sources, strict=True):
        object.__setattr__(batch, "_ready", _Ready(*ready))
    return batches


def _ready(params: MixParams) -> _Ready:
    """The batch's :class:`_Ready` tensors: drawn ahead by the classes, else derived now (for
    parameters a caller drew, or moved to an accelerator)."""
    ready = params.__dict__.get("_ready")
    if ready is not None and ready.partner.device == params.table.device:
        return ready
    return _Ready(params.table[:, _PARTNER].long(), params.table[:, _WEIGHT : _WEIGHT + 1])


# A mask lives only inside one call (it is never returned, nor saved by autograd: not with grad), so
# on the CPU each thread reuses one buffer for it, up to this size: a fresh buffer per call costs
# about as much as filling it.
_SCRATCH_BYTES = 8 << 20
_scratch_slot = threading.local()


def _scratch(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """A CPU buffer of ``shape`` and ``dtype``, reused by this thread's next call of the same shape."""
    buffer = getattr(_scratch_slot, "buffer", None)
    if buffer is not None and buffer.shape == shape and buffer.dtype == dtype:
        return buffer
    buffer = torch.empty(shape, dtype=dtype)
    if buffer.numel() * buffer.element_size() <= _SCRATCH_BYTES:
        _scratch_slot.buffer = buffer
    return buffer


# ----------------------------------------------------------------------------------------------
# Applying (on the images' device, no host sync)
# ----------------------------------------------------------------------------------------------


def _outer(rows: Tensor, cols: Tensor, scratch: bool = False) -> Tensor:
    """(B, H) and (B, W) flags -> (B, H, W): set where both are (into a reused buffer with
    ``scratch``, numbers only)."""
    return _outer3(rows[:, :, None], cols[:, None, :], scratch)


def _outer3(rows: Tensor, cols: Tensor, scratch: bool = False) -> Tensor:
    """:func:`_outer` of (B, H, 1) and (B, 1, W) flags."""
    if rows.dtype == torch.bool:
        return rows & cols
    if scratch:
        return torch.mul(rows, cols, out=_scratch((rows.shape[0], rows.shape[1], cols.shape[2]), rows.dtype))
    return rows * cols


def _channels_innermost(images: Tensor, data_format: str) -> bool:
    """CPU images with more than one channel, channels innermost in memory (channels_last data, or a
    ``torch.channels_last`` batch): broadcasting over an innermost dim of 3 is several times slower
    on the CPU, so their masks are built in memory order."""
    channel_dim = 1 if data_format == "channels_first" else 3
    return images.device.type == "cpu" and images.shape[channel_dim] > 1 and images.stride(channel_dim) == 1


def _box_mask(
    params: MixParams, images: Tensor, data_format: str, dtype: torch.dtype, scratch: bool = False
) -> Tensor:
    """Mask of ``dtype`` (bool, or 0/1 numbers), set inside each sample's box, broadcastable to
    ``images``: (B, 1, H, W) for channels_first or (B, H, W, 1) for channels_last, or the full
    shape laid out like ``images`` for :func:`_channels_innermost` images. With ``scratch``, in this
    thread's reused buffer (CPU, numbers): valid until the next call."""
    if params.height == 0:
        raise ValueError(f"params: expected box parameters (CutMix or Cutout), got {params.kind!r} ones")
    scratch = scratch and dtype != torch.bool and images.device.type == "cpu"
    innermost = _channels_innermost(images, data_format)
    ready = params.__dict__.get("_ready")
    if not innermost and ready is not None and ready.box is not None and ready.box[0].dtype == dtype:
        mask = _outer3(*ready.box, scratch)  # the flags' views, made for all the batches drawn ahead
        return mask[:, None] if data_format == "channels_first" else mask[..., None]
    rows, cols = params.box_rows, params.box_cols
    if rows.dtype != dtype:
        rows, cols = rows.to(dtype), cols.to(dtype)
    if innermost:
        # Built in memory order, (B, H, W·C), so that no op broadcasts over the innermost dim (GPUs
        # broadcast it at full speed and are spared the extra pass).
        channels = images.shape[1 if data_format == "channels_first" else 3]
        mask = _outer(rows, cols.repeat_interleave(channels, dim=1), scratch)
        mask = mask.view(*rows.shape, cols.shape[1], channels)
        return mask.permute(0, 3, 1, 2) if data_format == "channels_first" else mask
    mask = _outer(rows, cols, scratch)
    return mask[:, None] if data_format == "channels_first" else mask[..., None]


def _check_params_size(params: MixParams, height: int, width: int) -> None:
    if (params.height, params.width) != (height, width):
        raise ValueError(
            f"params: expected parameters drawn for {height}x{width} images, "
            f"got {params.height}x{params.width}"
        )


def _spatial_size(images: Tensor, data_format: str) -> tuple[int, int]:
    return (images.shape[2], images.shape[3]) if data_format == "channels_first" else images.shape[1:3]


# Integer dtypes that torch stores and copies but has no arithmetic kernels for on the CPU (no sub,
# no add): CutMix and Cutout take the torch.where path for them, which only copies pixels.
_NO_ARITHMETIC = (torch.uint16, torch.uint32, torch.uint64)


def _mask_dtype(images: Tensor) -> torch.dtype:
    if images.device.type != "cpu" or images.dtype in _NO_ARITHMETIC:
        return torch.bool
    return images.dtype


def _tracks_grad(*tensors: Tensor | None) -> bool:
    """Whether autograd must record the op. The fast path writes with ``out=`` and in place, which
    autograd refuses for inputs that require grad; under ``torch.no_grad`` it records nothing anyway."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _blend(partners: Tensor, images: Tensor, mask: Tensor) -> Tensor:
    """``where(mask, partners, images)`` as a new tensor laid out like ``images``, which autograd can
    follow: the same values as :func:`_paste` (a 0/1 ``lerp`` is exact), so each input element gets
    the gradient of the output elements it lands in."""
    if mask.dtype == torch.bool:
        mixed = torch.where(mask, partners, images)
    else:
        mixed = torch.lerp(images, partners, mask)
    return torch.empty_like(images).copy_(mixed)


def _paste(out: Tensor, images: Tensor, mask: Tensor) -> Tensor:
    """Turns ``out``, which holds the partners, into ``where(mask, out, images)`` in place.

    Blending in place into the buffer that received the partners saves a pass over memory and an
    allocation. On the CPU ``torch.where`` is several times slower than a blend, so blend there with
    0/1 weights, which is exact: ``lerp`` for floating point, modular arithmetic for integers.
    """
    if mask.dtype == torch.bool:
        return torch.where(mask, out, images, out=out)
    if out.is_floating_point():
        return torch.lerp(images, out, mask, out=out)
    return out.sub_(images).mul_(mask).add_(images)  # wraps around for integers, then back exactly


def _in_memory_order(images: Tensor) -> Tensor | None:
    """``images`` permuted so that its dims follow its memory order, when that makes it contiguous
    with the batch dim outermost (e.g. a ``torch.channels_last`` batch); None otherwise."""
    order = sorted(range(images.dim()), key=lambda d: (-images.stride(d), d))
    view = images.permute(order)
    return view if order[0] == 0 and view.is_contiguous() else None


def _partner_images(images: Tensor, images2: Tensor | None, partner: Tensor, grad: bool = False) -> Tensor:
    """A new tensor laid out like ``images`` holding each sample's partner (``partner``: the int64
    gather index); with ``grad``, one that autograd can follow (``images2`` itself, or a gather
    without ``out=``), to be neither written to nor assumed laid out like ``images``."""
    if grad:
        return images2 if images2 is not None else images.index_select(0, partner)
    out = torch.empty_like(images)
    if images2 is not None:  # the seed's pairing: sample i meets sample i of another shuffled batch
        return out.copy_(images2)
    # On the CPU, index_select over a channels_last batch is ~8x slower than over the same memory
    # viewed as contiguous (measured at 128x3x32x32), so gather whole samples in memory order.
    if images.is_contiguous():
        return torch.index_select(images, 0, partner, out=out)
    source, target = _in_memory_order(images), _in_memory_order(out)
    if source is not None and target is not None and source.shape == target.shape:
        torch.index_select(source, 0, partner, out=target)
        return out
    return torch.index_select(images, 0, partner, out=out)


def _rows(images: Tensor, data_format: str) -> Tensor | None:
    """``images`` as a (B·H, W·C) view, one row per sample and image row, where their memory is laid
    out (B, H, W, C) densely (channels_last data, or a ``torch.channels_last`` batch); else None."""
    view = images.permute(0, 2, 3, 1) if data_format == "channels_first" else images
    if not view.is_contiguous():
        return None
    batch, height, width, channels = view.shape
    return view.view(batch * height, width * channels)


def _paste_rows(images: Tensor, data_format: str, params: MixParams, ready: _Ready, mask_dtype: torch.dtype
                ) -> Tensor | None:  # fmt: skip
    """CutMix of :func:`_channels_innermost` CPU images in two passes and no full-size mask: gather
    each output row whole (the partner's inside the box's rows, the sample's own elsewhere), then
    blend each row with the box's column flags, broadcast over the rows (0/1 weights, exact for
    finite values, as :func:`_paste`). None where ``images`` cannot be viewed as rows."""
    rows = _rows(images, data_format)
    out = torch.empty_like(images)
    out_rows = _rows(out, data_format) if rows is not None else None
    if out_rows is None:
        return None
    if ready.row_source is not None:
        lazy, index = ready.row_source
        source = lazy.get(index)
    else:
        source = _row_source(params, ready.partner)
    torch.index_select(rows, 0, source, out=out_rows)
    cols = params.box_cols if params.box_cols.dtype == mask_dtype else params.box_cols.to(mask_dtype)
    batch, width = cols.shape
    weight = cols.repeat_interleave(rows.shape[1] // width, dim=1)[:, None, :]
    _paste(out_rows.view(batch, -1, rows.shape[1]), rows.view(batch, -1, rows.shape[1]), weight)
    return out


def _mix_targets(targets: Tensor, targets2: Tensor | None, ready: _Ready) -> Tensor:
    partner_targets = targets2 if targets2 is not None else targets.index_select(0, ready.partner)
    # lerp with weight 1 returns the sample's own target exactly.
    return torch.lerp(partner_targets, targets, ready.weight)


def apply_cutmix(
    images: Tensor,
    targets: Tensor,
    params: MixParams,
    images2: Tensor | None = None,
    targets2: Tensor | None = None,
    *,
    data_format: DataFormat = "channels_first",
) -> tuple[Tensor, Tensor]:
    """Pastes each sample's box from its partner and mixes the targets by the pasted area.

    ``images``: (B, C, H, W) or (B, H, W, C); ``targets``: float (B, K). With ``images2``/``targets2``
    (same shapes) the partner of sample i is sample i of that second batch. Returns new tensors.
    """
    params = params.to(images.device)
    height, width = _spatial_size(images, data_format)
    _check_params_size(params, height, width)
    ready, mask_dtype = _ready(params), _mask_dtype(images)
    if _tracks_grad(images, images2):
        mask = _box_mask(params, images, data_format, mask_dtype)
        mixed = _blend(_partner_images(images, images2, ready.partner, True), images, mask)
        return mixed, _mix_targets(targets, targets2, ready)
    mixed = None
    if images2 is None and mask_dtype != torch.bool and _channels_innermost(images, data_format):
        mixed = _paste_rows(images, data_format, params, ready, mask_dtype)
    if mixed is None:
        mask = _box_mask(params, images, data_format, mask_dtype, scratch=True)
        mixed = _paste(_partner_images(images, images2, ready.partner), images, mask)
    return mixed, _mix_targets(targets, targets2, ready)


def apply_mixup(
    images: Tensor,
    targets: Tensor,
    params: MixParams,
    images2: Tensor | None = None,
    targets2: Tensor | None = None,
    *,
    data_format: DataFormat = "channels_first",
) -> tuple[Tensor, Tensor]:
    """``λ·x + (1−λ)·x_partner`` per sample, targets likewise. Integer images are computed in float32
    and rounded to nearest; half and bfloat16 images are computed in float32 too."""
    params = params.to(images.device)
    grad = _tracks_grad(images, images2)
    ready = _ready(params)
    partner_images = _partner_images(images, images2, ready.partner, grad)
    dtype = rules.dtype_name(images.dtype)
    compute_dtype = getattr(torch, rules.blend_dtype(dtype))
    weight = ready.image_weight if ready.image_weight is not None else ready.weight[:, :, None, None]
    if weight.dtype != compute_dtype:
        weight = weight.to(compute_dtype)
    if not grad and images.dtype == compute_dtype:
        # In place into the new buffer that received the partners: the same lerp, one pass fewer.
        return partner_images.lerp_(images, weight), _mix_targets(targets, targets2, ready)
    mixed = torch.lerp(partner_images.to(compute_dtype), images.to(compute_dtype), weight)
    if not images.is_floating_point():
        mixed = mixed.round_().clamp_(*rules.int_range(dtype))
    # The fast path reuses the partners' buffer; with grad that may be images2, so a new one (copy_ is
    # recorded by autograd).
    out = torch.empty_like(images) if grad else partner_images
    return out.copy_(mixed), _mix_targets(targets, targets2, ready)


def _fill_value(fill: float, images: Tensor) -> Tensor:
    rules.check_representable("fill", fill, rules.dtype_name(images.dtype), "the images'")
    if images.device.type == "cpu":
        # The sign is part of the key: -0.0 == 0.0, and hashes alike, but fills another bit pattern.
        sign = math.copysign(1.0, fill) if isinstance(fill, float) else 0.0
        return _cpu_fill_value(fill, type(fill), sign, images.dtype)
    return _new_fill_value(fill, images.dtype, images.device)


@functools.lru_cache(maxsize=64)
def _cpu_fill_value(fill: float, kind: type, sign: float, dtype: torch.dtype) -> Tensor:
    """The 0-d fill tensor, made once per value and dtype (``kind`` and ``sign`` only tell apart
    values that compare equal): the ops only read it."""
    return _new_fill_value(fill, dtype, torch.device("cpu"))


def _new_fill_value(fill: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    # torch.tensor makes no uint64 from a Python float (TypeError) where torch.full does; every other
    # dtype keeps torch.tensor's conversion, which differs from torch.full's at the edges (overflow).
    if dtype == torch.uint64:
        return torch.full((), fill, dtype=dtype, device=device)
    return torch.tensor(fill, dtype=dtype, device=device)


def apply_cutout(
    images: Tensor, params: MixParams, *, data_format: DataFormat = "channels_first", fill: float = 0.0
) -> Tensor:
    """Fills each sample's box with ``fill`` (0 by default). Returns a new tensor."""
    params = params.to(images.device)
    height, width = _spatial_size(images, data_format)
    _check_params_size(params, height, width)
    grad = _tracks_grad(images)
    mask = _box_mask(params, images, data_format, _mask_dtype(images), scratch=not grad)
    out = torch.empty_like(images)
    fill_value = _fill_value(fill, images)
    if grad:  # without out=, which autograd refuses; only floating point can need grad
        if mask.dtype == torch.bool:
            return out.copy_(torch.where(mask, fill_value, images))
        return out.copy_(torch.lerp(images, fill_value, mask))
    if mask.dtype == torch.bool:
        return torch.where(mask, fill_value, images, out=out)
    if images.is_floating_point():
        return torch.lerp(images, fill_value, mask, out=out)
    return torch.mul(images, 1 - mask, out=out).add_(mask * fill_value)


# ----------------------------------------------------------------------------------------------
# Targets and input checks
# ----------------------------------------------------------------------------------------------


def to_targets(
    labels: Tensor,
    num_classes: int | None = None,
    label_smoothing: float = 0.0,
    device: torch.device | str | None = None,
) -> Tensor:
    """float32 (B, K) targets from class ids (B,) or (B, 1) of any integer dtype, or probabilities
    (B, K), label-smoothed as ``y * (1 - ε) + ε / K``. This is the one place where smoothing happens.

    Out-of-range class ids raise ``ValueError`` for CPU labels; on an accelerator they are checked
    asynchronously (``torch._assert_async``) so the check costs no host synchronisation.
    """
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels: expected a torch.Tensor, got {type(labels).__name__}")
    label_smoothing = rules.check_label_smoothing(label_smoothing)
    device = labels.device if device is None else torch.device(device)
    ids = rules.check_labels(tuple(labels.shape), rules.dtype_name(labels.dtype), num_classes, None)
    return _checked_targets(labels, ids, num_classes, label_smoothing, device)


# Class ids become rows of a cached (K, K) table of targets, up to this K (4 MiB of float32).
_TABLE_CLASSES = 1024


@functools.lru_cache(maxsize=16)
def _target_table(num_classes: int, label_smoothing: float, sign: float) -> Tensor:
    """Row k: the target of class k, ``off`` everywhere and ``1 - ε + off`` at k, made as the
    scatter below makes each row (the same float32 values); only read, by index_select. (``sign``
    only tells ε = -0.0 from 0.0 in the cache: its ``off`` is -0.0.)"""
    off = label_smoothing / num_classes
    table = torch.full((num_classes, num_classes), off, dtype=torch.float32)
    return table.fill_diagonal_(1.0 - label_smoothing + off)


def _checked_targets(
    labels: Tensor, ids: bool, num_classes: int | None, label_smoothing: float, device: torch.device
) -> Tensor:
    """:func:`to_targets` for labels already checked (``ids``: whether they are class ids)."""
    if not ids:
        targets = labels.to(device=device, dtype=torch.float32)
        if label_smoothing:
            targets = targets * (1.0 - label_smoothing) + label_smoothing / targets.shape[1]
        return targets
    # int64 whatever the integer dtype: scatter takes no other index dtype, and uint16/32/64 have no
    # comparison kernels for the range check. Unsigned ids keep their values (uint64 ones of 2**63 or
    # more turn negative, and are refused as out of range). (B, 1) ids are as keras.datasets gives them.
    if device.type == "cpu" and labels.device.type == "cpu" and num_classes <= _TABLE_CLASSES:
        return _table_targets(labels, num_classes, label_smoothing)
    labels = labels.reshape(-1).to(device=device, dtype=torch.int64)
    if labels.device.type == "cpu":
        if labels.numel():
            low, high = torch.aminmax(labels)
            rules.check_class_ids(int(low), int(high), num_classes)
    elif labels.numel():
        torch._assert_async(((labels >= 0) & (labels < num_classes)).all(), "labels out of range")
    # A scatter, not F.one_hot: it needs no host-side range check on an accelerator.
    off = label_smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off, dtype=torch.float32, device=device)
    return targets.scatter_(1, labels[:, None], 1.0 - label_smoothing + off)


def _table_targets(labels: Tensor, num_classes: int, label_smoothing: float) -> Tensor:
    """CPU targets as rows of :func:`_target_table`: one gather, which also refuses out-of-range ids
    (then the range is read, for the message)."""
    if labels.ndim != 1:
        labels = labels.reshape(-1)
    if labels.dtype != torch.int64 and labels.dtype != torch.int32:
        labels = labels.to(torch.int64)  # as above: uint64 ids of 2**63 or more turn negative
    try:
        table = _target_table(num_classes, label_smoothing, math.copysign(1.0, label_smoothing))
        return torch.index_select(table, 0, labels)
    except IndexError:
        low, high = torch.aminmax(labels.long())
        rules.check_class_ids(int(low), int(high), num_classes)
        raise
