"""Batch mixing ops: CutMix (Yun et al., ICCV 2019), with MixUp and Cutout, the paper's comparisons.

Every sample gets its own λ ~ Beta(α, α), its own box and its own partner; no Python loop runs over the
batch. Each op is two steps, both public so that a batch can be replayed exactly:

1. ``sample_*_params`` draws a :class:`MixParams` from a CPU ``torch.Generator`` (so one seed gives the
   same draw on every device);
2. ``apply_*`` applies it to images and soft targets with a few tensor ops, on the images' device,
   without a host-device synchronisation.

The classes :class:`CutMix`, :class:`MixUp`, :class:`Cutout` and :class:`CutMixOrMixUp` check their
inputs, turn labels into targets (:func:`to_targets`), and run both steps. They draw parameters for
up to 32 batches of one shape at a time (drawing costs about the same for one batch or many), so
their draws differ from one call of ``sample_*_params`` per batch; ``state_dict()`` saves the
generator and what was drawn ahead, so a checkpointed op continues exactly.

Conventions
-----------
* ``images``: a 4-D tensor, (B, C, H, W) for ``data_format="channels_first"`` or (B, H, W, C) for
  ``"channels_last"``; any memory format (``torch.channels_last`` is kept); uint8/int or floating point,
  dtype kept. CutMix and Cutout only copy or fill pixels. MixUp on integer images computes in float32
  and rounds to nearest.
* ``labels``: int class ids (B,) with ``num_classes`` given, or class probabilities (B, K).
* targets: float32 (B, K) on the images' device, each row summing to 1. Label smoothing is applied in
  exactly one place, :func:`to_targets`, to each sample's own target *before* mixing:
  ``y * (1 - ε) + ε / K``. Do not smooth again in the loss.
* Images are expected to be finite: on the CPU, CutMix blends with 0/1 weights (faster there than
  ``torch.where``), which is exact for finite values.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

DataFormat = Literal["channels_first", "channels_last"]
PARTNERS = ("permute", "roll", "flip")
BOXES = ("center", "inside")
DATA_FORMATS = ("channels_first", "channels_last")

# Columns of MixParams.table. One float32 table per batch, so moving the parameters to a GPU is
# a single small copy. float32 holds every integer below 2**24 exactly (checked in _check_sizes).
# After the fixed columns come H row flags and W column flags of the box (none for MixUp): their
# outer product is the box mask, so applying a box costs one multiplication on the device.
_LAM, _WEIGHT, _PARTNER, _Y0, _Y1, _X0, _X1, _APPLIED, _CY, _CX = range(10)
_COLUMNS = 10
_MAX_EXACT = 2**24
# The classes draw parameters for up to this many batches (and rows) at once: drawing is a few dozen
# small numpy calls whatever the count, so per batch it then costs a slice.
_POOL_BATCHES = 32
_POOL_ROWS = 4096


@dataclass(frozen=True)
class MixParams:
    """The parameters drawn for one batch of B samples.

    ``table`` is a float32 (B, 10 + H + W) tensor (H = W = 0 for MixUp); read it through the
    properties:

    * ``lam`` (B,) float32: λ as drawn from Beta(α, α) (1 for Cutout);
    * ``weight`` (B,) float32: the weight of the sample's own target in its mixed target, recomputed
      from the pixels actually pasted (CutMix) or equal to λ (MixUp); exactly 1 where not applied;
    * ``partner`` (B,) int64: index of the partner in the partner batch;
    * ``box`` (B, 4) int64: ``y0, y1, x0, x1``, half-open; empty (all zero) where not applied;
    * ``applied`` (B,) bool: False where the p-draw said no, the box was empty, or the partner is the
      sample itself;
    * ``anchor`` (B, 2) int64: the drawn integer position of the box, its centre (``box="center"``,
      Cutout) or its top-left corner (``box="inside"``), kept for plots and replays.
    """

    kind: Literal["cutmix", "mixup", "cutout"]
    table: Tensor
    height: int = 0
    width: int = 0

    @property
    def lam(self) -> Tensor:
        return self.table[:, _LAM]

    @property
    def weight(self) -> Tensor:
        return self.table[:, _WEIGHT]

    @property
    def partner(self) -> Tensor:
        return self.table[:, _PARTNER].long()

    @property
    def box(self) -> Tensor:
        return self.table[:, _Y0 : _X1 + 1].long()

    @property
    def applied(self) -> Tensor:
        return self.table[:, _APPLIED] > 0

    @property
    def anchor(self) -> Tensor:
        return self.table[:, _CY : _CX + 1].long()

    @property
    def box_rows(self) -> Tensor:
        """(B, H) float32: 1 for the rows the box covers."""
        return self.table[:, _COLUMNS : _COLUMNS + self.height]

    @property
    def box_cols(self) -> Tensor:
        """(B, W) float32: 1 for the columns the box covers."""
        return self.table[:, _COLUMNS + self.height :]

    @property
    def batch_size(self) -> int:
        return self.table.shape[0]

    def split(self, batch_size: int) -> list[MixParams]:
        """Consecutive batches of ``batch_size`` rows (of parameters drawn with ``batches > 1``)."""
        return [MixParams(self.kind, part, self.height, self.width) for part in self.table.split(batch_size)]

    def to(self, device: torch.device | str) -> MixParams:
        """The same parameters on ``device`` (one copy of the table)."""
        if self.table.device == torch.device(device):
            return self
        return MixParams(self.kind, self.table.to(device, non_blocking=True), self.height, self.width)


# ----------------------------------------------------------------------------------------------
# Sampling (CPU, from an explicit generator)
# ----------------------------------------------------------------------------------------------


def _check_generator(generator: torch.Generator | None) -> torch.Generator:
    if generator is None:
        # Seeded once from torch's global RNG, so torch.manual_seed still makes scripts reproducible.
        seed = int(torch.randint(0, 2**62, (1,)).item())
        return torch.Generator().manual_seed(seed)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != "cpu":
        raise ValueError(
            f"generator: expected a CPU torch.Generator (parameters are drawn on the CPU so that one "
            f"seed gives the same result on every device), got one on {generator.device}"
        )
    return generator


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float):
        raise TypeError(f"alpha: expected a positive number, got {type(alpha).__name__}")
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha: expected a finite number > 0, got {alpha}")
    return float(alpha)


def _check_p(p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
        raise ValueError(f"p: expected a probability in [0, 1], got {p!r}")
    return float(p)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _check_sizes(batch_size: int, height: int, width: int) -> None:
    for name, value in (("batch_size", batch_size), ("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < _MAX_EXACT:
            raise ValueError(f"{name}: expected an int in [1, {_MAX_EXACT}), got {value!r}")


def _beta(alpha: float, coin: np.ndarray, generator: torch.Generator) -> np.ndarray:
    """len(coin) draws of Beta(α, α) as float64, via two Gamma(α, 1) draws; ``coin`` holds uniforms."""
    gammas = torch._standard_gamma(
        torch.full((2, len(coin)), alpha, dtype=torch.float64), generator=generator
    )
    g1, g2 = gammas.numpy()
    total = g1 + g2
    # For tiny α both gammas can underflow to 0; Beta(α, α) then sits at 0 or 1 with equal odds.
    lam = np.where(total > 0, g1 / np.maximum(total, np.finfo(np.float64).tiny), coin < 0.5)
    # Rounded to the float32 that MixParams stores, so a replay from the stored λ computes the same box.
    return lam.astype(np.float32).astype(np.float64)


def _uniform_int(uniform: np.ndarray, upper: np.ndarray | int) -> np.ndarray:
    """Integers uniform over [0, upper) from uniforms in [0, 1)."""
    return np.minimum(np.floor(uniform * upper), np.asarray(upper) - 1).astype(np.int64)


def _partners(batch_size: int, batches: int, partner: str, generator: torch.Generator) -> np.ndarray:
    """Partner indices, local to each of ``batches`` consecutive batches."""
    index = np.arange(batch_size)
    if partner == "permute":
        return np.concatenate(
            [torch.randperm(batch_size, generator=generator).numpy() for _ in range(batches)]
        )
    if partner == "roll":  # as torchvision's v2.CutMix: sample i is paired with sample i - 1
        return np.tile(np.roll(index, 1), batches)
    return np.tile(index[::-1], batches)  # "flip", as timm: sample i is paired with sample B - 1 - i


def _table(batch_size: int, batches: int, height: int = 0, width: int = 0) -> np.ndarray:
    table = np.zeros((batch_size * batches, _COLUMNS + height + width), dtype=np.float64)
    table[:, _LAM] = 1.0
    table[:, _WEIGHT] = 1.0
    table[:, _PARTNER] = np.tile(np.arange(batch_size), batches)
    return table


def _finish(kind: str, table: np.ndarray, applied: np.ndarray, height: int = 0, width: int = 0) -> MixParams:
    """Marks unapplied rows as untouched (weight 1, empty box), adds the box's row and column
    flags, and packs the table."""
    table[:, _APPLIED] = applied
    table[~applied, _WEIGHT] = 1.0
    table[~applied, _Y0 : _X1 + 1] = 0
    if height and width:
        rows, cols = np.arange(height), np.arange(width)
        y0, y1, x0, x1 = (table[:, c : c + 1] for c in (_Y0, _Y1, _X0, _X1))
        table[:, _COLUMNS : _COLUMNS + height] = (rows >= y0) & (rows < y1)
        table[:, _COLUMNS + height :] = (cols >= x0) & (cols < x1)
    return MixParams(kind, torch.from_numpy(table.astype(np.float32)), height, width)


def _draw_partners_and_p(
    batch_size: int, batches: int, p: float, partner: str | None, generator: torch.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Partners (None: an explicit second batch, paired index to index), p-draws and uniforms
    (columns: p-draw, row, column, coin)."""
    uniforms = torch.rand((batch_size * batches, 4), dtype=torch.float64, generator=generator).numpy()
    applied = uniforms[:, 0] < p
    local = np.tile(np.arange(batch_size), batches)
    if partner is None:
        return local, applied, uniforms
    partners = _partners(batch_size, batches, partner, generator)
    applied &= partners != local  # paired with itself: nothing to mix
    return partners, applied, uniforms


def sample_cutmix_params(
    batch_size: int,
    height: int,
    width: int,
    *,
    alpha: float = 1.0,
    p: float = 1.0,
    partner: str | None = "permute",
    box: str = "center",
    generator: torch.Generator | None = None,
    batches: int = 1,
) -> MixParams:
    """Draws per-sample CutMix parameters for a batch of ``batch_size`` images of ``height × width``.

    The box follows the paper's reference code, per axis: ``cut_h = floor(H·√(1−λ))``,
    ``cut_w = floor(W·√(1−λ))``; with ``box="center"`` an integer centre uniform over the image and
    edges ``centre ∓ cut // 2`` clipped to it; with ``box="inside"`` the whole cut placed inside the
    image. ``weight = 1 − box_area / (H·W)``, the exact share of the sample's own pixels.
    ``partner=None`` means a second batch given explicitly (sample i pairs with its sample i).
    ``batches > 1`` draws for that many batches at once (cheaper per batch); partner indices stay
    local to each batch, and :meth:`MixParams.split` cuts the result into batches.
    """
    _check_sizes(batch_size * batches, height, width)
    alpha, p = _check_alpha(alpha), _check_p(p)
    if partner is not None:
        _check_choice("partner", partner, PARTNERS)
    _check_choice("box", box, BOXES)
    generator = _check_generator(generator)

    partners, applied, uniforms = _draw_partners_and_p(batch_size, batches, p, partner, generator)
    lam = _beta(alpha, uniforms[:, 3], generator)
    cut_ratio = np.sqrt(1.0 - lam)
    cut_h = np.floor(height * cut_ratio).astype(np.int64)
    cut_w = np.floor(width * cut_ratio).astype(np.int64)
    if box == "center":
        cy, cx = _uniform_int(uniforms[:, 1], height), _uniform_int(uniforms[:, 2], width)
        y0, y1 = np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h // 2, 0, height)
        x0, x1 = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w // 2, 0, width)
    else:
        cy = _uniform_int(uniforms[:, 1], height - cut_h + 1)
        cx = _uniform_int(uniforms[:, 2], width - cut_w + 1)
        y0, y1, x0, x1 = cy, cy + cut_h, cx, cx + cut_w
    area = (y1 - y0) * (x1 - x0)
    applied &= area > 0  # an empty box mixes nothing (the seed pastes a 1-pixel patch instead)

    table = _table(batch_size, batches, height, width)
    table[:, _LAM] = lam
    table[:, _WEIGHT] = 1.0 - area / float(height * width)
    table[:, _PARTNER] = partners
    table[:, _Y0], table[:, _Y1], table[:, _X0], table[:, _X1] = y0, y1, x0, x1
    table[:, _CY], table[:, _CX] = cy, cx
    return _finish("cutmix", table, applied, height, width)


def sample_mixup_params(
    batch_size: int,
    *,
    alpha: float = 1.0,
    p: float = 1.0,
    partner: str | None = "permute",
    generator: torch.Generator | None = None,
    batches: int = 1,
) -> MixParams:
    """Draws per-sample MixUp parameters: ``image = λ·x + (1−λ)·x_partner``, ``weight = λ``
    (``batches`` as in :func:`sample_cutmix_params`)."""
    _check_sizes(batch_size * batches, 1, 1)
    alpha, p = _check_alpha(alpha), _check_p(p)
    if partner is not None:
        _check_choice("partner", partner, PARTNERS)
    generator = _check_generator(generator)

    partners, applied, uniforms = _draw_partners_and_p(batch_size, batches, p, partner, generator)
    lam = _beta(alpha, uniforms[:, 3], generator)
    table = _table(batch_size, batches)
    table[:, _LAM] = lam
    table[:, _WEIGHT] = lam
    table[:, _PARTNER] = partners
    return _finish("mixup", table, applied)


def sample_cutout_params(
    batch_size: int,
    height: int,
    width: int,
    *,
    size: int | tuple[int, int] = 16,
    p: float = 1.0,
    generator: torch.Generator | None = None,
    batches: int = 1,
) -> MixParams:
    """Draws per-sample Cutout squares (DeVries & Taylor, 2017): a ``size`` square (or (h, w)
    rectangle) with an integer centre uniform over the image, clipped to it. Labels are unchanged.
    (``batches`` as in :func:`sample_cutmix_params`.)"""
    _check_sizes(batch_size * batches, height, width)
    size_h, size_w = _check_cutout_size(size)
    p = _check_p(p)
    generator = _check_generator(generator)

    uniforms = torch.rand((batch_size * batches, 3), dtype=torch.float64, generator=generator).numpy()
    cy, cx = _uniform_int(uniforms[:, 1], height), _uniform_int(uniforms[:, 2], width)
    y0, y1 = np.clip(cy - size_h // 2, 0, height), np.clip(cy - size_h // 2 + size_h, 0, height)
    x0, x1 = np.clip(cx - size_w // 2, 0, width), np.clip(cx - size_w // 2 + size_w, 0, width)
    applied = (uniforms[:, 0] < p) & ((y1 - y0) * (x1 - x0) > 0)

    table = _table(batch_size, batches, height, width)
    table[:, _Y0], table[:, _Y1], table[:, _X0], table[:, _X1] = y0, y1, x0, x1
    table[:, _CY], table[:, _CX] = cy, cx
    return _finish("cutout", table, applied, height, width)


def _check_cutout_size(size: int | tuple[int, int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    if (
        not isinstance(pair, tuple | list)
        or len(pair) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in pair)
    ):
        raise ValueError(f"size: expected an int >= 0 or a pair (h, w) of them, got {size!r}")
    return int(pair[0]), int(pair[1])


# ----------------------------------------------------------------------------------------------
# Applying (on the images' device, no host sync)
# ----------------------------------------------------------------------------------------------


def _box_mask(params: MixParams, data_format: str, dtype: torch.dtype) -> Tensor:
    """Mask of ``dtype`` (bool, or 0/1 numbers), set inside each sample's box: (B, 1, H, W) for
    channels_first or (B, H, W, 1) for channels_last."""
    if params.height == 0:
        raise ValueError(f"params: expected box parameters (CutMix or Cutout), got {params.kind!r} ones")
    rows, cols = params.box_rows.to(dtype), params.box_cols.to(dtype)
    mask = rows[:, :, None] & cols[:, None, :] if dtype == torch.bool else rows[:, :, None] * cols[:, None, :]
    return mask[:, None] if data_format == "channels_first" else mask[..., None]


def _check_params_size(params: MixParams, height: int, width: int) -> None:
    if (params.height, params.width) != (height, width):
        raise ValueError(
            f"params: expected parameters drawn for {height}x{width} images, "
            f"got {params.height}x{params.width}"
        )


def _spatial_size(images: Tensor, data_format: str) -> tuple[int, int]:
    return (images.shape[2], images.shape[3]) if data_format == "channels_first" else images.shape[1:3]


def _mask_dtype(images: Tensor) -> torch.dtype:
    return torch.bool if images.device.type != "cpu" else images.dtype


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


def _partner_images(images: Tensor, images2: Tensor | None, params: MixParams) -> Tensor:
    """A new tensor laid out like ``images`` holding each sample's partner."""
    out = torch.empty_like(images)
    if images2 is not None:  # the seed's pairing: sample i meets sample i of another shuffled batch
        return out.copy_(images2)
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
    mask = _box_mask(params, data_format, _mask_dtype(images))
    mixed = _paste(_partner_images(images, images2, params), images, mask)
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
    partner_images = _partner_images(images, images2, params)
    compute_dtype = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    weight = params.weight.to(compute_dtype).view(-1, 1, 1, 1)
    mixed = torch.lerp(partner_images.to(compute_dtype), images.to(compute_dtype), weight)
    if not images.is_floating_point():
        info = torch.iinfo(images.dtype)
        mixed = mixed.round_().clamp_(info.min, info.max)
    return partner_images.copy_(mixed), _mix_targets(targets, targets2, params)


def apply_cutout(
    images: Tensor, params: MixParams, *, data_format: DataFormat = "channels_first", fill: float = 0.0
) -> Tensor:
    """Fills each sample's box with ``fill`` (0 by default). Returns a new tensor."""
    params = params.to(images.device)
    height, width = _spatial_size(images, data_format)
    _check_params_size(params, height, width)
    mask = _box_mask(params, data_format, _mask_dtype(images))
    out = torch.empty_like(images)
    fill_value = torch.tensor(fill, dtype=images.dtype, device=images.device)
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
    """float32 (B, K) targets from int class ids (B,) or probabilities (B, K), label-smoothed as
    ``y * (1 - ε) + ε / K``. This is the one place where smoothing happens.

    Out-of-range class ids raise ``ValueError`` for CPU labels; on an accelerator they are checked
    asynchronously (``torch._assert_async``) so the check costs no host synchronisation.
    """
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels: expected a torch.Tensor, got {type(labels).__name__}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing: expected a number in [0, 1), got {label_smoothing!r}")
    device = labels.device if device is None else torch.device(device)
    if labels.ndim == 1:
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"labels: expected int class ids of shape (B,), got dtype {labels.dtype}")
        if num_classes is None:
            raise ValueError("num_classes: expected an int when labels are class ids, got None")
        labels = labels.to(device)
        if labels.device.type == "cpu":
            low, high = torch.aminmax(labels) if labels.numel() else (0, 0)
            if low < 0 or high >= num_classes:
                raise ValueError(
                    f"labels: expected class ids in [0, {num_classes}), "
                    f"got values in [{int(low)}, {int(high)}]"
                )
        elif labels.numel():
            torch._assert_async(((labels >= 0) & (labels < num_classes)).all(), "labels out of range")
        # A scatter, not F.one_hot: it needs no host-side range check on an accelerator.
        off = label_smoothing / num_classes
        targets = torch.full((labels.shape[0], num_classes), off, dtype=torch.float32, device=device)
        return targets.scatter_(1, labels[:, None], 1.0 - label_smoothing + off)
    elif labels.ndim == 2:
        if not labels.is_floating_point():
            raise TypeError(f"labels: expected float probabilities of shape (B, K), got dtype {labels.dtype}")
        if num_classes is not None and labels.shape[1] != num_classes:
            raise ValueError(f"labels: expected (B, {num_classes}) probabilities, got {tuple(labels.shape)}")
        targets = labels.to(device=device, dtype=torch.float32)
    else:
        raise ValueError(f"labels: expected shape (B,) or (B, K), got {tuple(labels.shape)}")
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / targets.shape[1]
    return targets


def _check_images(images: Tensor, data_format: str, name: str = "images") -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4:
        layout = "(B, C, H, W)" if data_format == "channels_first" else "(B, H, W, C)"
        raise ValueError(f"{name}: expected a 4-D tensor {layout}, got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{name}: expected a batch of at least 1 image, got an empty batch")
    if images.dtype == torch.bool or images.is_complex():
        raise TypeError(f"{name}: expected an integer or floating-point tensor, got dtype {images.dtype}")


def _check_batch(
    images: Tensor, labels: Tensor, data_format: str, name: str = "images", label_name: str = "labels"
) -> None:
    _check_images(images, data_format, name)
    if not isinstance(labels, Tensor):
        raise TypeError(f"{label_name}: expected a torch.Tensor, got {type(labels).__name__}")
    if labels.ndim == 0 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{label_name}: expected {images.shape[0]} labels to match {name}' batch size, "
            f"got shape {tuple(labels.shape)}"
        )


class _BatchOp:
    """Shared argument handling for the mixing ops."""

    def __init__(
        self,
        num_classes: int | None,
        label_smoothing: float,
        data_format: str,
        generator: torch.Generator | None,
    ) -> None:
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
        ):
            raise ValueError(f"num_classes: expected an int >= 1 or None, got {num_classes!r}")
        if not isinstance(label_smoothing, int | float) or not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: expected a number in [0, 1), got {label_smoothing!r}")
        self.num_classes = num_classes
        self.label_smoothing = float(label_smoothing)
        self.data_format = _check_choice("data_format", data_format, DATA_FORMATS)
        self.generator = _check_generator(generator)
        self._pool: deque[MixParams] = deque()
        self._pool_key: tuple[int, int, int, bool] | None = None

    def sample(
        self, batch_size: int, height: int, width: int, paired: bool = False, batches: int = 1
    ) -> MixParams:
        raise NotImplementedError

    def _apply(
        self,
        images: Tensor,
        targets: Tensor,
        params: MixParams,
        images2: Tensor | None,
        targets2: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def __call__(
        self,
        images: Tensor,
        labels: Tensor,
        images2: Tensor | None = None,
        labels2: Tensor | None = None,
        *,
        return_params: bool = False,
    ) -> tuple[Tensor, ...]:
        """``(mixed_images, targets)``, plus the drawn :class:`MixParams` with ``return_params``."""
        targets, targets2 = self._inputs(images, labels, images2, labels2)
        height, width = _spatial_size(images, self.data_format)
        params = self._next_params(images.shape[0], height, width, images2 is not None)
        mixed, mixed_targets = self._apply(images, targets, params, images2, targets2)
        return (mixed, mixed_targets, params) if return_params else (mixed, mixed_targets)

    def _next_params(self, batch_size: int, height: int, width: int, paired: bool) -> MixParams:
        """The next batch's parameters, from those drawn ahead for batches of this shape.

        The draws depend only on the generator and the sequence of batch shapes, so a seed still
        fixes every output; :meth:`state_dict` saves what was drawn ahead.
        """
        key = (batch_size, height, width, paired)
        if key != self._pool_key or not self._pool:
            batches = max(1, min(_POOL_BATCHES, _POOL_ROWS // batch_size))
            drawn = self.sample(batch_size, height, width, paired, batches=batches)
            self._pool, self._pool_key = deque(drawn.split(batch_size)), key
        return self._pool.popleft()

    def state_dict(self) -> dict:
        """The generator's state and the parameters drawn ahead: what a checkpoint needs to continue
        exactly. Tensors and ints only, so it loads with ``torch.load(weights_only=True)``."""
        pool = torch.cat([params.table for params in self._pool]) if self._pool else torch.zeros(0, 0)
        return {"generator": self.generator.get_state(), "pool": pool, "pool_key": list(self._pool_key or ())}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        key = tuple(state["pool_key"])
        if not key:
            self._pool, self._pool_key = deque(), None
            return
        batch_size, height, width, paired = (int(v) for v in key)
        rows = MixParams(self.kind, state["pool"], 0 if self.kind == "mixup" else height,
                         0 if self.kind == "mixup" else width)  # fmt: skip
        self._pool, self._pool_key = deque(rows.split(batch_size)), (batch_size, height, width, bool(paired))

    def _targets(self, labels: Tensor, device: torch.device) -> Tensor:
        return to_targets(labels, self.num_classes, self.label_smoothing, device)

    def _inputs(
        self, images: Tensor, labels: Tensor, images2: Tensor | None, labels2: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """Checks both batches; returns (targets, targets2)."""
        _check_batch(images, labels, self.data_format)
        targets = self._targets(labels, images.device)
        if (images2 is None) != (labels2 is None):
            raise ValueError("images2, labels2: expected both or neither, got only one")
        if images2 is None:
            return targets, None
        _check_batch(images2, labels2, self.data_format, "images2", "labels2")
        if images2.shape != images.shape or images2.dtype != images.dtype:
            raise ValueError(
                f"images2: expected the shape and dtype of images {tuple(images.shape)} {images.dtype}, "
                f"got {tuple(images2.shape)} {images2.dtype}"
            )
        if images2.device != images.device:
            raise ValueError(f"images2: expected device {images.device}, got {images2.device}")
        targets2 = self._targets(labels2, images.device)
        if targets2.shape != targets.shape:
            raise ValueError(
                f"labels2: expected targets of shape {tuple(targets.shape)}, got {tuple(targets2.shape)}"
            )
        return targets, targets2


class CutMix(_BatchOp):
    """Per-sample CutMix: each image gets a box cut from its partner, targets mixed by pasted area.

    Args:
        alpha: λ ~ Beta(alpha, alpha), alpha > 0.
        p: probability, drawn once per sample, that the sample is mixed at all.
        num_classes: K, needed when labels are int class ids.
        label_smoothing: ε, applied to each sample's own target before mixing (see :func:`to_targets`).
        partner: ``"permute"`` (a random permutation, as the paper), ``"roll"`` (as torchvision),
            ``"flip"`` (as timm). A second batch passed to the call overrides it.
        box: ``"center"`` (the paper's clipped box) or ``"inside"`` (the whole cut inside the image).
        data_format: ``"channels_first"`` (B, C, H, W) or ``"channels_last"`` (B, H, W, C).
        generator: a CPU ``torch.Generator``; None seeds one from torch's global RNG now.

    Call: ``mix(images, labels[, images2, labels2], return_params=False)`` →
    ``(mixed_images, targets)`` (``+ params`` when asked). A sample paired with itself, not drawn by
    ``p``, or given an empty box keeps its image and its (smoothed) label exactly.
    """

    kind = "cutmix"

    def __init__(
        self,
        alpha: float = 1.0,
        p: float = 1.0,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        partner: str = "permute",
        box: str = "center",
        data_format: DataFormat = "channels_first",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(num_classes, label_smoothing, data_format, generator)
        self.alpha = _check_alpha(alpha)
        self.p = _check_p(p)
        self.partner = _check_choice("partner", partner, PARTNERS)
        self.box = _check_choice("box", box, BOXES)

    def sample(
        self, batch_size: int, height: int, width: int, paired: bool = False, batches: int = 1
    ) -> MixParams:
        return sample_cutmix_params(
            batch_size, height, width, alpha=self.alpha, p=self.p, partner=None if paired else self.partner,
            box=self.box, generator=self.generator, batches=batches,
        )  # fmt: skip

    def _apply(self, images, targets, params, images2, targets2) -> tuple[Tensor, Tensor]:
        return apply_cutmix(images, targets, params, images2, targets2, data_format=self.data_format)

    def __repr__(self) -> str:
        return (
            f"CutMix(alpha={self.alpha}, p={self.p}, num_classes={self.num_classes}, "
            f"label_smoothing={self.label_smoothing}, partner={self.partner!r}, box={self.box!r}, "
            f"data_format={self.data_format!r})"
        )


class MixUp(_BatchOp):
    """Per-sample MixUp (Zhang et al., 2018): ``λ·x + (1−λ)·x_partner``, targets likewise.

    Same arguments and call as :class:`CutMix`, without ``box``. Integer (e.g. uint8) images are
    blended in float32 and rounded to the nearest integer, so their targets carry the exact λ while
    the pixels carry λ to within half a grey level.
    """

    kind = "mixup"

    def __init__(
        self,
        alpha: float = 1.0,
        p: float = 1.0,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        partner: str = "permute",
        data_format: DataFormat = "channels_first",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(num_classes, label_smoothing, data_format, generator)
        self.alpha = _check_alpha(alpha)
        self.p = _check_p(p)
        self.partner = _check_choice("partner", partner, PARTNERS)

    def sample(
        self, batch_size: int, height: int = 1, width: int = 1, paired: bool = False, batches: int = 1
    ) -> MixParams:
        return sample_mixup_params(
            batch_size, alpha=self.alpha, p=self.p, partner=None if paired else self.partner,
            generator=self.generator, batches=batches,
        )  # fmt: skip

    def _apply(self, images, targets, params, images2, targets2) -> tuple[Tensor, Tensor]:
        return apply_mixup(images, targets, params, images2, targets2, data_format=self.data_format)

    def __repr__(self) -> str:
        return (
            f"MixUp(alpha={self.alpha}, p={self.p}, num_classes={self.num_classes}, "
            f"label_smoothing={self.label_smoothing}, partner={self.partner!r}, "
            f"data_format={self.data_format!r})"
        )


class Cutout(_BatchOp):
    """Per-sample Cutout: fills a ``size`` square (or (h, w)) centred uniformly over the image,
    clipped to it, with ``fill``; the labels are unchanged (only smoothed and made float32 targets).
    A second batch, if given, is ignored."""

    kind = "cutout"

    def __init__(
        self,
        size: int | tuple[int, int] = 16,
        p: float = 1.0,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        fill: float = 0.0,
        data_format: DataFormat = "channels_first",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(num_classes, label_smoothing, data_format, generator)
        self.size = _check_cutout_size(size)
        self.p = _check_p(p)
        self.fill = float(fill)

    def sample(
        self, batch_size: int, height: int, width: int, paired: bool = False, batches: int = 1
    ) -> MixParams:
        return sample_cutout_params(
            batch_size, height, width, size=self.size, p=self.p, generator=self.generator, batches=batches
        )

    def _apply(self, images, targets, params, images2, targets2) -> tuple[Tensor, Tensor]:
        return apply_cutout(images, params, data_format=self.data_format, fill=self.fill), targets

    def __repr__(self) -> str:
        return f"Cutout(size={self.size}, p={self.p}, num_classes={self.num_classes}, fill={self.fill})"


class CutMixOrMixUp:
    """Per batch, CutMix with probability ``switch_prob``, else MixUp (timm's ``switch_prob``).

    Both ops keep their own settings and generators; this op's own ``generator`` draws the switch.
    """

    def __init__(
        self,
        cutmix: CutMix,
        mixup: MixUp,
        switch_prob: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> None:
        if not isinstance(cutmix, CutMix):
            raise TypeError(f"cutmix: expected a CutMix, got {type(cutmix).__name__}")
        if not isinstance(mixup, MixUp):
            raise TypeError(f"mixup: expected a MixUp, got {type(mixup).__name__}")
        if cutmix.data_format != mixup.data_format:
            raise ValueError(
                f"mixup: expected data_format {cutmix.data_format!r} like cutmix, got {mixup.data_format!r}"
            )
        if (
            isinstance(switch_prob, bool)
            or not isinstance(switch_prob, int | float)
            or not (0.0 <= switch_prob <= 1.0)
        ):
            raise ValueError(f"switch_prob: expected a probability in [0, 1], got {switch_prob!r}")
        self.cutmix, self.mixup = cutmix, mixup
        self.switch_prob = float(switch_prob)
        self.generator = _check_generator(generator)

    def __call__(
        self,
        images: Tensor,
        labels: Tensor,
        images2: Tensor | None = None,
        labels2: Tensor | None = None,
        *,
        return_params: bool = False,
    ) -> tuple[Tensor, ...]:
        use_cutmix = torch.rand((), generator=self.generator).item() < self.switch_prob
        op = self.cutmix if use_cutmix else self.mixup
        return op(images, labels, images2, labels2, return_params=return_params)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "cutmix": self.cutmix.state_dict(),
                "mixup": self.mixup.state_dict()}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.cutmix.load_state_dict(state["cutmix"])
        self.mixup.load_state_dict(state["mixup"])

    def __repr__(self) -> str:
        return f"CutMixOrMixUp({self.cutmix!r}, {self.mixup!r}, switch_prob={self.switch_prob})"
