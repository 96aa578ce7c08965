"""Applying: ``apply_*``, which apply :class:`MixParams` to a batch on the images' device, and
:func:`to_targets`."""

from __future__ import annotations

import torch
from torch import Tensor

from cutmix.ops import rules
from cutmix.ops.params import DataFormat, MixParams

# ----------------------------------------------------------------------------------------------
# Applying (on the images' device, no host sync)
# ----------------------------------------------------------------------------------------------


def _outer(rows: Tensor, cols: Tensor) -> Tensor:
    """(B, H) and (B, W) flags -> (B, H, W): set where both are."""
    if rows.dtype == torch.bool:
        return rows[:, :, None] & cols[:, None, :]
    return rows[:, :, None] * cols[:, None, :]


def _box_mask(params: MixParams, images: Tensor, data_format: str, dtype: torch.dtype) -> Tensor:
    """Mask of ``dtype`` (bool, or 0/1 numbers), set inside each sample's box, broadcastable to
    ``images``: (B, 1, H, W) for channels_first or (B, H, W, 1) for channels_last, or the full
    shape laid out like ``images`` when CPU images have channels innermost in memory (a
    ``torch.channels_last`` batch): broadcasting over an innermost dim of 3 is several times slower
    on the CPU."""
    if params.height == 0:
        raise ValueError(f"params: expected box parameters (CutMix or Cutout), got {params.kind!r} ones")
    rows, cols = params.box_rows.to(dtype), params.box_cols.to(dtype)
    channel_dim = 1 if data_format == "channels_first" else 3
    channels = images.shape[channel_dim]
    if images.device.type == "cpu" and channels > 1 and images.stride(channel_dim) == 1:
        # Built in memory order, (B, H, W·C), so that no op broadcasts over the innermost dim (GPUs
        # broadcast it at full speed and are spared the extra pass).
        mask = _outer(rows, cols.repeat_interleave(channels, dim=1))
        mask = mask.view(*rows.shape, cols.shape[1], channels)
        return mask.permute(0, 3, 1, 2) if data_format == "channels_first" else mask
    mask = _outer(rows, cols)
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


def _partner_images(images: Tensor, images2: Tensor | None, params: MixParams, grad: bool = False) -> Tensor:
    """A new tensor laid out like ``images`` holding each sample's partner; with ``grad``, one that
    autograd can follow (``images2`` itself, or a gather without ``out=``), to be neither written to
    nor assumed laid out like ``images``."""
    if grad:
        return images2 if images2 is not None else images.index_select(0, params.partner)
    out = torch.empty_like(images)
    if images2 is not None:  # the seed's pairing: sample i meets sample i of another shuffled batch
        return out.copy_(images2)
    # On the CPU, index_select over a channels_last batch is ~8x slower than over the same memory
    # viewed as contiguous (measured at 128x3x32x32), so gather whole samples in memory order.
    source, target = _in_memory_order(images), _in_memory_order(out)
    if source is not None and target is not None and source.shape == target.shape:
        torch.index_select(source, 0, params.partner, out=target)
        return out
    return torch.index_select(images, 0, params.partner, out=out)


def _mix_targets(targets: Tensor, targets2: Tensor | None, params: MixParams) -> Tensor:
    partner_targets = targets2 if targets2 is not None else targets.index_select(0, params.partner)
    # lerp with weight 1 returns the sample's own target exactly.
    return torch.lerp(partner_targets, targets, params.weight[:, None])


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
    mask = _box_mask(params, images, data_format, _mask_dtype(images))
    grad = _tracks_grad(images, images2)
    partners = _partner_images(images, images2, params, grad)
    mixed = _blend(partners, images, mask) if grad else _paste(partners, images, mask)
    return mixed, _mix_targets(targets, targets2, params)


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
    partner_images = _partner_images(images, images2, params, grad)
    dtype = rules.dtype_name(images.dtype)
    compute_dtype = getattr(torch, rules.blend_dtype(dtype))
    weight = params.weight.to(compute_dtype).view(-1, 1, 1, 1)
    mixed = torch.lerp(partner_images.to(compute_dtype), images.to(compute_dtype), weight)
    if not images.is_floating_point():
        mixed = mixed.round_().clamp_(*rules.int_range(dtype))
    # The fast path reuses the partners' buffer; with grad that may be images2, so a new one (copy_ is
    # recorded by autograd).
    out = torch.empty_like(images) if grad else partner_images
    return out.copy_(mixed), _mix_targets(targets, targets2, params)


def _fill_value(fill: float, images: Tensor) -> Tensor:
    rules.check_representable("fill", fill, rules.dtype_name(images.dtype), "the images'")
    # torch.tensor makes no uint64 from a Python float (TypeError) where torch.full does; every other
    # dtype keeps torch.tensor's conversion, which differs from torch.full's at the edges (overflow).
    if images.dtype == torch.uint64:
        return torch.full((), fill, dtype=images.dtype, device=images.device)
    return torch.tensor(fill, dtype=images.dtype, device=images.device)


def apply_cutout(
    images: Tensor, params: MixParams, *, data_format: DataFormat = "channels_first", fill: float = 0.0
) -> Tensor:
    """Fills each sample's box with ``fill`` (0 by default). Returns a new tensor."""
    params = params.to(images.device)
    height, width = _spatial_size(images, data_format)
    _check_params_size(params, height, width)
    mask = _box_mask(params, images, data_format, _mask_dtype(images))
    out = torch.empty_like(images)
    fill_value = _fill_value(fill, images)
    if _tracks_grad(images):  # without out=, which autograd refuses; only floating point can need grad
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
    if not rules.check_labels(tuple(labels.shape), rules.dtype_name(labels.dtype), num_classes, None):
        targets = labels.to(device=device, dtype=torch.float32)
        if label_smoothing:
            targets = targets * (1.0 - label_smoothing) + label_smoothing / targets.shape[1]
        return targets
    # int64 whatever the integer dtype: scatter takes no other index dtype, and uint16/32/64 have no
    # comparison kernels for the range check. Unsigned ids keep their values (uint64 ones of 2**63 or
    # more turn negative, and are refused as out of range). (B, 1) ids are as keras.datasets gives them.
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
