"""timm's ``Mixup`` and ``FastCollateMixup``, same constructor and call (tested against timm 1.0.31).

Switching is one line: ``from cutmix.compat.timm import Mixup`` for ``from timm.data import Mixup``;
then ``images, targets = mixup_fn(images, labels)`` as before. timm's semantics, in every mode (the
partner of sample i is always sample B - 1 - i, the batch flipped):

* ``mode="batch"``: one λ, one box and one CutMix-or-MixUp choice for the whole batch; ``prob`` is the
  chance that the batch is mixed and ``switch_prob`` the chance of CutMix when both are active;
* ``mode="pair"``: samples i and B - 1 - i share one λ and one box, pasted both ways;
* ``mode="elem"``: λ, box, the mixed-or-not draw (``prob``) and the CutMix-or-MixUp choice
  (``switch_prob``) per sample;
* ``mode="half"`` (the collate form only, as timm): ``elem`` for the first half of the batch, each
  sample mixed with one of the second half, which is dropped: B / 2 samples come out.

Targets as timm's: ``off = label_smoothing / K``, ``on = 1 - label_smoothing + off`` (with
``multi_label``, dense targets smoothed towards 0.5), then ``w · y + (1 - w) · y_flipped``. CutMix's box
is timm's: sides ``int(size·√(1−λ))`` around an integer centre uniform over the image, clipped
(``centre - cut // 2`` to ``centre + (cut + 1) // 2``), or with ``cutmix_minmax=(lo, hi)`` sides uniform
integers in ``[int(size·lo), int(size·hi))``, placed inside the image. With ``correct_lam=True`` (or
``cutmix_minmax``) a CutMix target's ``w`` is the exact share of the sample's own pixels; with
``correct_lam=False`` it is the drawn λ, as timm, which is inexact wherever the box was clipped.

Where this differs from timm, on purpose:

* randomness comes from an explicit CPU ``torch.Generator`` (``generator=`` or ``seed=``; by default one
  seeded once from torch's global RNG, as :mod:`cutmix.ops`), never NumPy's global RNG: the same
  distributions, other draws. It pickles, and each DataLoader worker draws its own stream;
* the caller's tensors are never modified: the mixed images are a new tensor (timm mixes ``x`` in place,
  and its pair collate writes into the samples);
* targets are float32 on the images' device, mixed with float32 weights (timm rounds them to the
  images' dtype in ``pair`` and ``elem`` modes); half and bfloat16 MixUp is computed in float32;
* ``Mixup`` also takes uint8 images (MixUp rounded half to even, as timm's collate), and ``target``
  may be class probabilities (B, K);
* every argument is checked, by the constructor and whenever an attribute is set later (the next call
  uses it), with :class:`cutmix.errors.UsageError` (a ``ValueError``): odd batch sizes (timm asserts)
  and ``mode`` names that timm would treat as ``"batch"`` included. Setting ``cutmix_minmax`` to a range
  sets ``cutmix_alpha`` to 1.0, as the constructor does.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import default_collate, get_worker_info

from cutmix.errors import UsageError
from cutmix.ops import to_targets

__all__ = ["COLLATE_MODES", "MODES", "FastCollateMixup", "Mixup", "TimmMixParams"]

MODES = ("batch", "pair", "elem")
COLLATE_MODES = (*MODES, "half")
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _minmax(value: Any) -> bool:
    pair = tuple(value) if isinstance(value, list | tuple) else ()
    return len(pair) == 2 and all(_is_number(v) for v in pair) and 0.0 <= pair[0] < pair[1] <= 1.0


class _Setting:
    """An attribute checked whenever it is set, as the constructor checks it (``ok(value, owner)``, and
    a message naming it and ``expected``), stored converted under ``_<name>``. Draws are made per call,
    so a new value takes effect on the next call."""

    def __init__(
        self,
        expected: str,
        ok: Callable[[Any, Any], bool],
        convert: Callable = float,
        then: Callable | None = None,
    ) -> None:
        self.expected, self.ok, self.convert, self.then = expected, ok, convert, then

    def __set_name__(self, owner: type, name: str) -> None:
        self.name, self.slot = name, f"_{name}"

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        return self if obj is None else obj.__dict__[self.slot]

    def __set__(self, obj: Any, value: Any, name: str | None = None) -> None:
        if not self.ok(value, obj):
            expected = self.expected.format(modes=", ".join(map(repr, getattr(obj, "modes", ()))))
            raise UsageError(f"{name or self.name}: expected {expected}, got {value!r}")
        obj.__dict__[self.slot] = self.convert(value)
        if self.then is not None:
            self.then(obj)


def _minmax_sets_alpha(mixup: Any) -> None:
    if mixup.cutmix_minmax is not None:
        mixup.cutmix_alpha = 1.0  # as timm's constructor: CutMix is on, its λ only picks the branch


def _alpha() -> _Setting:
    return _Setting("a finite number >= 0 (0 turns it off)", lambda v, _: _is_number(v) and 0 <= v < math.inf)


def _probability() -> _Setting:
    return _Setting("a probability in [0, 1]", lambda v, _: _is_number(v) and 0.0 <= v <= 1.0)


def _flag() -> _Setting:
    return _Setting("True or False", lambda v, _: isinstance(v, bool | np.bool_), bool)


def _new_generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator:
    if generator is not None and seed is not None:
        raise UsageError(f"seed: expected None when a generator is given, got {seed!r}")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise UsageError(f"seed: expected an int >= 0 or None, got {seed!r}")
        return torch.Generator().manual_seed(int(seed))
    if generator is None:
        # Seeded once from torch's global RNG, as cutmix.ops does, so torch.manual_seed (which timm's
        # train.py calls) still makes a script reproducible; every draw then comes from this generator.
        return torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        shown = generator.device if isinstance(generator, torch.Generator) else type(generator).__name__
        raise UsageError(f"generator: expected a CPU torch.Generator or None, got {shown}")
    return generator


@dataclass(frozen=True)
class TimmMixParams:
    """What one call drew, one row per output sample (CPU tensors).

    Attributes:
        mode: the mode they were drawn for.
        lam: (B,) float64, λ as drawn (rounded to float32 in ``pair``, ``elem`` and ``half`` modes, as
            timm); exactly 1 where the sample is not mixed.
        weight: (B,) float64, the weight of the sample's own target: the pasted share for CutMix with
            ``correct_lam`` or ``cutmix_minmax``, else λ.
        use_cutmix: (B,) bool, True where the sample is mixed by CutMix (False: MixUp, or not mixed).
        box: (B, 4) int64 ``y0, y1, x0, x1`` (half-open) of the pasted box; zeros where no CutMix.
        partner: (B,) int64, the index in the input batch of the sample mixed in: B - 1 - i.
    """

    mode: str
    lam: Tensor
    weight: Tensor
    use_cutmix: Tensor
    box: Tensor
    partner: Tensor

    @property
    def mixed(self) -> Tensor:
        """(B,) bool: the samples that are mixed (timm's rule: λ != 1)."""
        return self.lam != 1.0


def _uniforms(generator: torch.Generator, count: int) -> np.ndarray:
    """(count, 7) uniforms from ``generator`` in one call (cheaper than a NumPy stream per call): columns
    mixed, switch, box y (2), box x (2), and the coin for λ when both gammas underflow."""
    return torch.rand((count, 7), generator=generator, dtype=torch.float64).numpy()


def _beta(alpha: np.ndarray, coin: np.ndarray, generator: torch.Generator) -> np.ndarray:
    """Beta(α, α) per entry as g1 / (g1 + g2) of two Gamma(α, 1) draws from ``generator``."""
    gammas = torch._standard_gamma(torch.from_numpy(np.stack([alpha, alpha])), generator=generator).numpy()
    total = gammas[0] + gammas[1]
    # For tiny α both gammas can underflow to 0; Beta(α, α) then sits at 0 or 1 with equal odds.
    return np.where(total > 0, gammas[0] / np.maximum(total, np.finfo(np.float64).tiny), coin < 0.5)


def _below(uniform: np.ndarray, upper: np.ndarray | int) -> np.ndarray:
    """Integers uniform over [0, upper) from uniforms in [0, 1)."""
    return np.minimum(np.floor(uniform * upper), np.asarray(upper) - 1).astype(np.int64)


def _spread(values: np.ndarray, mode: str, batch_size: int) -> np.ndarray:
    """Per-draw values -> per-sample ones (one draw for the batch, per pair i and B - 1 - i, per sample)."""
    if mode == "batch":
        return np.repeat(values, batch_size, axis=0)
    if mode == "pair":
        return np.concatenate([values, values[::-1]])
    return values


def _blend(own: Tensor, partner: Tensor, weight: Tensor) -> Tensor:
    """``lerp(own, partner, weight)``, exact at weights 0 and 1, into ``partner`` (a flip's new copy:
    a fresh output cost as much as the blend at 32x32); in float32 for half, bfloat16, uint8 images."""
    if own.dtype in (torch.float32, torch.float64):  # autograd refuses out=; lerp_ may differ by 1 ulp
        grad = torch.is_grad_enabled() and own.requires_grad
        return partner.lerp_(own, 1.0 - weight) if grad else torch.lerp(own, partner, weight, out=partner)
    mixed = torch.lerp(own.float(), partner.float(), weight)
    if not own.is_floating_point():
        mixed = mixed.round_().clamp_(0, 255)  # half to even, as timm's collate
    return mixed.to(own.dtype)


def _mix_images(source: Tensor, params: TimmMixParams) -> Tensor:
    """The first ``len(params.partner)`` samples of ``source`` (B, C, H, W), each mixed with sample
    B - 1 - i as ``params`` say. A new tensor; ``source`` is only read."""
    count = params.partner.shape[0]
    own, lam, use_cutmix = source[:count], params.lam.tolist(), params.use_cutmix
    device, height, width = source.device, source.shape[-2], source.shape[-1]
    dtype = torch.float64 if source.dtype == torch.float64 else torch.float32
    if params.mode == "batch":  # one box or one λ: a slice copy or a scalar blend
        if lam[0] == 1.0:
            return own.clone()
        if bool(use_cutmix[0]):
            y0, y1, x0, x1 = params.box[0].tolist()
            out = own.clone()
            out[:, :, y0:y1, x0:x1] = source[:, :, y0:y1, x0:x1].flip(0)
            return out
        # A tensor weight: torch's CPU lerp with a Python-number weight is about 2x slower (measured).
        return _blend(own, source.flip(0), torch.full((1, 1, 1, 1), 1.0 - lam[0], dtype=dtype, device=device))
    # The weight of the partner per pixel: 1 inside a CutMix box, 1 - λ over a MixUp sample, else 0.
    mixup = (params.mixed & ~use_cutmix).to(device)
    weight = torch.where(mixup, 1.0 - params.lam.to(device, dtype), 0.0).view(-1, 1, 1, 1)
    if bool(use_cutmix.any()):
        box = params.box.to(device)
        rows, cols = torch.arange(height, device=device), torch.arange(width, device=device)
        in_rows = (rows >= box[:, 0:1]) & (rows < box[:, 1:2])
        in_cols = (cols >= box[:, 2:3]) & (cols < box[:, 3:4])
        inside = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]
        weight = torch.where(inside, torch.ones((), dtype=dtype, device=device), weight)
    return _blend(own, source.flip(0)[:count], weight)


def _mix_targets(targets: Tensor, count: int, params: TimmMixParams) -> Tensor:
    """timm's ``y · w + y_flipped · (1 - w)`` for the first ``count`` samples, with float32 weights."""
    weight = params.weight.to(targets.device, torch.float32)[:, None]
    return targets[:count] * weight + targets.flip(0)[:count] * (1.0 - weight)


class _WorkerStreams:
    """Each DataLoader worker draws its own stream: a collate function is copied into every worker,
    generator included, so the first draw in a worker replaces the copy by a generator seeded from
    it, the worker's seed and id (the DataLoader draws the seed per iterator, from its ``generator``
    or torch's global RNG: a seeded loader stays reproducible). The generator pickles as its state's
    bytes: torch pickles one through shared memory, which ``spawn`` workers fail to restore."""

    _generator: torch.Generator
    _worker: tuple[int, int, int] | None = None

    @property
    def generator(self) -> torch.Generator:
        """The CPU ``torch.Generator`` every draw comes from (in a worker, the worker's own)."""
        return self._generator

    def _generator_here(self) -> torch.Generator:
        info = get_worker_info()
        if info is None:
            return self._generator
        worker = (os.getpid(), info.id, info.seed)
        if worker != self._worker:
            own = int(torch.randint(0, 2**62, (1,), generator=self._generator))
            seed = np.random.SeedSequence([own, info.seed, info.id]).generate_state(1, np.uint64)[0]
            self._generator, self._worker = torch.Generator().manual_seed(int(seed)), worker
        return self._generator

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_generator"] = self._generator.get_state().numpy().tobytes()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        generator = torch.Generator()
        generator.set_state(torch.frombuffer(bytearray(state.pop("_generator")), dtype=torch.uint8))
        self.__dict__.update(state, _generator=generator)


class Mixup(_WorkerStreams):
    """timm's ``Mixup``: MixUp and/or CutMix per batch, pair or element, with smoothed targets.

    Args:
        mixup_alpha: MixUp's λ ~ Beta(mixup_alpha, mixup_alpha); 0 turns MixUp off.
        cutmix_alpha: CutMix's λ ~ Beta(cutmix_alpha, cutmix_alpha); 0 turns CutMix off.
        cutmix_minmax: None, or (min, max): CutMix box sides drawn as shares of the image's sides (then
            ``cutmix_alpha`` is set to 1.0, as timm).
        prob: the chance that a batch (``batch`` mode), a pair or a sample is mixed; also ``mix_prob``,
            timm's attribute name.
        switch_prob: the chance of CutMix rather than MixUp when both are active.
        mode: ``"batch"``, ``"pair"`` or ``"elem"`` (see the module docstring).
        correct_lam: weight CutMix targets by the pasted share (True) or by the drawn λ (False, inexact).
        label_smoothing: ε in ``off = ε / K``, ``on = 1 - ε + off``; in [0, 1).
        num_classes: K.
        multi_label: ``target`` is dense (B, K), smoothed towards 0.5: ``y · (1 - ε) + ε / 2``.
        generator: the CPU ``torch.Generator`` to draw from (beyond timm's signature).
        seed: or a seed for a new one (beyond timm's signature).
    """

    modes = MODES
    mixup_alpha, cutmix_alpha = _alpha(), _alpha()
    mix_prob, switch_prob = _probability(), _probability()
    mode = _Setting("one of {modes}", lambda v, obj: isinstance(v, str) and v in obj.modes, str)
    correct_lam, multi_label, mixup_enabled = _flag(), _flag(), _flag()
    label_smoothing = _Setting("a number in [0, 1)", lambda v, _: _is_number(v) and 0.0 <= v < 1.0)
    num_classes = _Setting(
        "an int >= 1",
        lambda v, _: isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1,
        int,
    )
    cutmix_minmax = _Setting(
        "None or a pair (min, max) with 0 <= min < max <= 1",
        lambda v, _: v is None or _minmax(v),
        lambda v: None if v is None else (float(v[0]), float(v[1])),
        then=_minmax_sets_alpha,
    )

    def __init__(
        self,
        mixup_alpha: float = 1.0,
        cutmix_alpha: float = 0.0,
        cutmix_minmax: tuple[float, float] | None = None,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: str = "batch",
        correct_lam: bool = True,
        label_smoothing: float = 0.1,
        num_classes: int = 1000,
        multi_label: bool = False,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.cutmix_minmax = cutmix_minmax
        self.prob, self.switch_prob, self.mode = prob, switch_prob, mode
        self.correct_lam, self.label_smoothing = correct_lam, label_smoothing
        self.num_classes, self.multi_label = num_classes, multi_label
        self.mixup_enabled = True  # timm's switch, set by training loops to stop mixing late in training
        self._generator = _new_generator(generator, seed)
        self._check_active()

    @property
    def prob(self) -> float:
        """The mixing probability, timm's ``prob`` argument (stored by timm as ``mix_prob``)."""
        return self.mix_prob

    @prob.setter
    def prob(self, value: float) -> None:
        Mixup.mix_prob.__set__(self, value, "prob")

    def _check_active(self) -> None:
        if self.mixup_enabled and self.mix_prob > 0 and self.mixup_alpha == 0 and self.cutmix_alpha == 0:
            raise UsageError(
                "mixup_alpha, cutmix_alpha: expected at least one > 0 (or cutmix_minmax set) while mixing is "
                f"enabled with prob > 0, got {self.mixup_alpha} and {self.cutmix_alpha}"
            )

    def _draw_lam(self, u: np.ndarray, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """λs and CutMix choices as timm's ``_params_per_*``: mixed with chance ``prob``, CutMix with
        chance ``switch_prob`` when both are active; λ = 1 where not mixed."""
        count = len(u)
        if not self.mixup_enabled or (self.mixup_alpha == 0 and self.cutmix_alpha == 0):
            return np.ones(count), np.zeros(count, dtype=bool)  # the latter only with prob = 0
        mixed = u[:, 0] < self.mix_prob
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = u[:, 1] < self.switch_prob
        else:
            use_cutmix = np.full(count, self.cutmix_alpha > 0)
        alpha = np.where(use_cutmix, self.cutmix_alpha, self.mixup_alpha)
        return np.where(mixed, _beta(alpha, u[:, 6], generator), 1.0), use_cutmix & mixed

    def _draw_boxes(self, lam: np.ndarray, height: int, width: int, u: np.ndarray) -> np.ndarray:
        """(count, 4) boxes ``y0, y1, x0, x1`` by timm's ``rand_bbox`` or ``rand_bbox_minmax`` rule."""
        edges = []
        if self.cutmix_minmax is not None:
            for size, column in ((height, 2), (width, 4)):
                low, high = int(size * self.cutmix_minmax[0]), int(size * self.cutmix_minmax[1])
                if low >= high:
                    raise UsageError(
                        f"cutmix_minmax: expected a range that holds a box side for {height}x{width} "
                        f"images (int(size * min) < int(size * max)), got {self.cutmix_minmax}"
                    )
                cut = low + _below(u[:, column], high - low)
                start = _below(u[:, column + 1], size - cut + 1)
                edges += [start, start + cut]
            return np.stack(edges, axis=1)
        # In float32 where timm's λ is a float32 (pair, elem), so the cut sizes are timm's to the pixel.
        ratio = np.sqrt((1.0 - lam).astype(np.float64 if self.mode == "batch" else np.float32))
        for size, column in ((height, 2), (width, 4)):
            cut, centre = (size * ratio).astype(np.int64), _below(u[:, column], size)
            low, high = centre - cut // 2, centre + (cut + 1) // 2
            edges += [np.minimum(np.maximum(low, 0), size), np.minimum(np.maximum(high, 0), size)]
        return np.stack(edges, axis=1)

    def sample(self, batch_size: int, height: int, width: int) -> TimmMixParams:
        """Step 1: draws the parameters for a batch of ``batch_size`` images of ``height × width``
        in the current ``mode``. (``__call__`` runs this, then :meth:`apply`.)"""
        self._check_active()
        if type(batch_size) is not int or batch_size < 2 or batch_size % 2:
            raise UsageError(
                f"x: expected an even batch size >= 2 (timm pairs sample i with sample B - 1 - i), "
                f"got {batch_size}"
            )
        mode, generator = self.mode, self._generator_here()
        count = {"batch": 1, "pair": batch_size // 2, "elem": batch_size, "half": batch_size // 2}[mode]
        u = _uniforms(generator, count)
        lam, use_cutmix = self._draw_lam(u, generator)
        if mode != "batch":
            lam = lam.astype(np.float32).astype(np.float64)  # timm keeps per-sample λs in float32
        box = self._draw_boxes(lam, height, width, u)
        box[~use_cutmix] = 0
        weight = lam.copy()
        if self.correct_lam or self.cutmix_minmax is not None:
            area = (box[:, 1] - box[:, 0]) * (box[:, 3] - box[:, 2])
            weight = np.where(use_cutmix, 1.0 - area / float(height * width), lam)
        out = batch_size // 2 if mode == "half" else batch_size
        spread = [torch.from_numpy(np.ascontiguousarray(_spread(v, mode, batch_size))) for v in
                  (lam, weight, use_cutmix, box)]  # fmt: skip
        partner = torch.arange(batch_size - 1, batch_size - 1 - out, -1)
        return TimmMixParams(mode, *spread, partner=partner)

    def _check_images(self, x: Any) -> None:
        if not isinstance(x, Tensor):
            raise UsageError(f"x: expected a torch.Tensor (B, C, H, W), got {type(x).__name__}")
        if x.ndim != 4:
            raise UsageError(f"x: expected a 4-D tensor (B, C, H, W), got shape {tuple(x.shape)}")
        if x.dtype not in (*_FLOATS, torch.uint8):
            raise UsageError(f"x: expected a floating-point or uint8 tensor, got dtype {x.dtype}")

    def _targets(self, target: Any, batch_size: int, device: torch.device) -> Tensor:
        """float32 (B, K) smoothed targets before mixing, as timm's ``mixup_target`` builds them."""
        if not isinstance(target, Tensor):
            raise UsageError(f"target: expected a torch.Tensor, got {type(target).__name__}")
        k, eps = self.num_classes, self.label_smoothing
        if self.multi_label:
            if tuple(target.shape) != (batch_size, k):
                raise UsageError(
                    f"target: expected multi-label ({batch_size}, {k}), got {tuple(target.shape)}"
                )
            return target.to(device, torch.float32) * (1.0 - eps) + 0.5 * eps
        integer = not (target.is_floating_point() or target.is_complex() or target.dtype == torch.bool)
        ids = integer and (target.ndim == 1 or (target.ndim == 2 and target.shape[1] == 1))
        if target.shape[:1] != (batch_size,) or not (ids or tuple(target.shape) == (batch_size, k)):
            raise UsageError(
                f"target: expected {batch_size} int class ids (B,) or (B, 1), or probabilities "
                f"({batch_size}, {k}), got {target.dtype} of shape {tuple(target.shape)}"
            )
        try:
            return to_targets(target if ids else target.float(), k, eps, device)
        except ValueError as error:  # an out-of-range class id, named as timm names the argument
            message = str(error)
            raise UsageError("target" + message.removeprefix("labels") if ids else message) from error

    def apply(self, x: Tensor, target: Tensor, params: TimmMixParams) -> tuple[Tensor, Tensor]:
        """Step 2: mixes ``x`` (B, C, H, W) and builds the targets by ``params`` (from :meth:`sample`);
        returns new tensors."""
        self._check_images(x)
        if params.partner.shape[0] != x.shape[0]:
            raise UsageError(f"params: expected {x.shape[0]} rows, got {params.partner.shape[0]}")
        targets = self._targets(target, x.shape[0], x.device)
        return _mix_images(x, params), _mix_targets(targets, x.shape[0], params)

    def __call__(self, x: Tensor, target: Tensor, *, return_params: bool = False) -> tuple:
        """``(mixed_x, targets)`` as timm's ``mixup_fn(x, target)``, plus the drawn
        :class:`TimmMixParams` with ``return_params``. ``x`` is not modified."""
        self._check_images(x)
        params = self.sample(x.shape[0], x.shape[-2], x.shape[-1])
        mixed, targets = self.apply(x, target, params)
        return (mixed, targets, params) if return_params else (mixed, targets)


class FastCollateMixup(Mixup):
    """timm's ``FastCollateMixup``: a DataLoader ``collate_fn`` that mixes while collating.

    Takes a list of ``(image, label)`` samples, the images uint8 (C, H, W) NumPy arrays or tensors
    (timm's fast-collate pipelines make them so), and returns timm's output: a uint8 (B, C, H, W) batch
    (B / 2 in ``"half"`` mode) and float32 (B, K) targets, both on the CPU. The samples are not
    modified. Same arguments as :class:`Mixup`, plus ``mode="half"``. The collate function pickles,
    so it runs in workers under every start method; each worker draws its own stream. As with timm,
    setting ``mixup_enabled`` in the main process reaches the workers when the DataLoader starts them
    (each epoch unless ``persistent_workers``).
    """

    modes = COLLATE_MODES

    def __call__(self, batch: list, _: Any = None, *, return_params: bool = False) -> tuple:
        """``(uint8 images, float32 targets)`` for a list of ``(image, label)`` samples."""
        if not isinstance(batch, list | tuple) or not batch:
            raise UsageError(f"batch: expected a non-empty list of (image, label) samples, got {batch!r:.80}")
        if not all(isinstance(s, list | tuple) and len(s) == 2 for s in batch):
            raise UsageError("batch: expected (image, label) pairs, got another kind of sample")
        images = [s[0] if isinstance(s[0], Tensor) else torch.from_numpy(np.asarray(s[0])) for s in batch]
        if any(i.dtype != torch.uint8 or i.ndim != 3 or i.shape != images[0].shape for i in images):
            shown = sorted({f"{i.dtype} {tuple(i.shape)}" for i in images})
            raise UsageError(f"batch: expected uint8 (C, H, W) images of one shape, got {', '.join(shown)}")
        x = torch.stack(images)
        params = self.sample(x.shape[0], x.shape[-2], x.shape[-1])
        mixed = _mix_images(x, params)
        targets = self._targets(default_collate([s[1] for s in batch]), x.shape[0], x.device)
        targets = _mix_targets(targets, mixed.shape[0], params)
        return (mixed, targets, params) if return_params else (mixed, targets)
