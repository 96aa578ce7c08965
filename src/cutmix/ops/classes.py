"""The ops as classes: :class:`CutMix`, :class:`MixUp`, :class:`Cutout` and :class:`CutMixOrMixUp`."""

from __future__ import annotations

import os
from collections import deque
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import get_worker_info

from cutmix.ops import rules
from cutmix.ops.apply import (
    _checked_targets,
    _spatial_size,
    apply_cutmix,
    apply_cutout,
    apply_mixup,
    split_ready,
    to_targets,
)
from cutmix.ops.dense import mix_dense
from cutmix.ops.params import (
    BOXES,
    DATA_FORMATS,
    PARTNERS,
    DataFormat,
    MixParams,
    _check_generator,
    sample_cutmix_params,
    sample_cutout_params,
    sample_mixup_params,
)
from cutmix.ops.rules import MASK_FILL, MIN_VISIBILITY, Option, choice

# The classes draw parameters for up to this many batches (and rows) at once: drawing is a few dozen
# small numpy calls whatever the count, so per batch it then costs a slice.
_POOL_BATCHES = 32
_POOL_ROWS = 4096


class _WorkerStreams:
    """Gives each DataLoader worker its own stream of draws.

    An op used in a ``collate_fn`` (as torchvision documents for its ``v2.CutMix``) is copied into
    every worker, generator and draws made ahead included, so without this every worker would draw
    the same parameters for its k-th batch, epoch after epoch. The first draw in a worker replaces
    the copied generator, once, by one seeded from the copy and the worker's seed: the DataLoader
    draws that seed per iterator from its ``generator`` or, without one, from torch's global RNG, so a
    seeded loader stays reproducible and each epoch draws afresh. The main process draws exactly as
    before.
    """

    generator: torch.Generator
    _worker: tuple[int, int, int] | None = None  # (pid, worker id, worker seed) the stream is for

    def _generator_here(self) -> torch.Generator:
        """The generator to draw from in this process (see the class docstring)."""
        info = get_worker_info()
        if info is None:  # the main process
            return self.generator
        worker = (os.getpid(), info.id, info.seed)
        if worker != self._worker:
            own = int(torch.randint(0, 2**62, (1,), generator=self.generator))
            seed = np.random.SeedSequence([own, info.seed, info.id]).generate_state(1, np.uint64)[0]
            self.generator = torch.Generator().manual_seed(int(seed))
            self._worker = worker
            self._forget_draws_ahead()
        return self.generator

    def _forget_draws_ahead(self) -> None:
        """Drops what the main process drew ahead: every worker holds a copy of it."""

    # torch pickles a Generator with its state as a tensor, which multiprocessing sends through shared
    # memory, and DataLoader workers started by ``spawn`` or ``forkserver`` die restoring it ("unable
    # to resize file"). So the op travels with its generator's state as plain bytes: the worker's copy
    # continues the main process's stream exactly, as a forked copy does, and _generator_here still
    # derives each worker's own stream from it.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_generator"] = self.generator.get_state().numpy().tobytes()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        generator = torch.Generator()
        generator.set_state(torch.frombuffer(bytearray(state.pop("_generator")), dtype=torch.uint8))
        self.__dict__.update(state)
        self.__dict__["_generator"] = generator


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------


def _check_images(images: Tensor, data_format: str, name: str = "images") -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(images).__name__}")
    rules.check_images(tuple(images.shape), rules.dtype_name(images.dtype), data_format, name)


def _check_batch(
    images: Tensor,
    labels: Tensor,
    data_format: str,
    num_classes: int | None,
    name: str = "images",
    label_name: str = "labels",
) -> bool:  # whether the labels are class ids
    _check_images(images, data_format, name)
    if not isinstance(labels, Tensor):
        raise TypeError(f"{label_name}: expected a torch.Tensor, got {type(labels).__name__}")
    shape, dtype = tuple(labels.shape), rules.dtype_name(labels.dtype)
    return rules.check_labels(shape, dtype, num_classes, images.shape[0], label_name)


class _BatchOp(_WorkerStreams):
    """Shared argument handling for the mixing ops."""

    num_classes = Option(rules.check_num_classes)
    label_smoothing = Option(rules.check_label_smoothing)
    data_format = Option(choice("data_format", DATA_FORMATS))
    generator = Option(_check_generator, redraw=True)

    def __init__(
        self,
        num_classes: int | None,
        label_smoothing: float,
        data_format: str,
        generator: torch.Generator | None,
    ) -> None:
        self._pool: deque[MixParams] = deque()
        self._pool_key: tuple[int, int, int, bool] | None = None
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.data_format = data_format
        self.generator = generator

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
        masks: Tensor | None = None,
        masks2: Tensor | None = None,
        boxes: Tensor | list[Tensor] | None = None,
        box_labels: Tensor | list[Tensor] | None = None,
        boxes2: Tensor | list[Tensor] | None = None,
        box_labels2: Tensor | list[Tensor] | None = None,
    ) -> tuple:
        """``(mixed_images, targets)``, plus the drawn :class:`MixParams` with ``return_params``.

        With ``masks`` and/or ``boxes`` (and ``box_labels``), or 5-D video clips:
        ``(mixed, targets[, masks][, MixedBoxes][, params])``; ``labels`` may then be None (targets
        None). See :mod:`cutmix.ops.dense`.
        """
        dense = (masks, masks2, boxes, box_labels, boxes2, box_labels2)
        if any(x is not None for x in dense) or (isinstance(images, Tensor) and images.ndim == 5):
            return mix_dense(
                self, images, labels, images2, labels2, return_params=return_params, masks=masks,
                masks2=masks2, boxes=boxes, box_labels=box_labels, boxes2=boxes2, box_labels2=box_labels2,
            )  # fmt: skip
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
        self._generator_here()  # in a DataLoader worker, first its own stream (and no copied pool)
        key = (batch_size, height, width, paired)
        if key != self._pool_key or not self._pool:
            batches = max(1, min(_POOL_BATCHES, _POOL_ROWS // batch_size))
            drawn = self.sample(batch_size, height, width, paired, batches=batches)
            self._pool, self._pool_key = deque(split_ready(drawn, batch_size)), key
        return self._pool.popleft()

    def _forget_draws_ahead(self) -> None:
        self._pool, self._pool_key = deque(), None

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
        # A state taken when the draws made ahead were used up holds no rows: split() would still
        # give one empty batch, so the pool stays empty and the next call draws afresh, as the
        # original op does.
        pool = deque(split_ready(rows, batch_size)) if rows.batch_size else deque()
        self._pool, self._pool_key = pool, (batch_size, height, width, bool(paired))

    def _targets(self, labels: Tensor, device: torch.device) -> Tensor:
        return to_targets(labels, self.num_classes, self.label_smoothing, device)

    def _checked_ids(self, images: Tensor, labels: Tensor) -> bool:
        """Checks one batch; returns whether its labels are class ids. The checks depend only on the
        key, so a batch like the last one passes unchecked (class ids' range: by the targets, always)."""
        key = (images.shape, images.dtype, labels.shape, labels.dtype, self.data_format, self.num_classes)
        checked = self.__dict__.get("_checked")
        if checked is None or checked[0] != key:
            checked = self._checked = (key, _check_batch(images, labels, self.data_format, self.num_classes))
        return checked[1]

    def _inputs(
        self, images: Tensor, labels: Tensor, images2: Tensor | None, labels2: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """Checks both batches; returns (targets, targets2)."""
        if images2 is None and labels2 is None and isinstance(images, Tensor) and isinstance(labels, Tensor):
            ids = self._checked_ids(images, labels)
            return _checked_targets(labels, ids, self.num_classes, self.label_smoothing, images.device), None
        _check_batch(images, labels, self.data_format, self.num_classes)
        targets = self._targets(labels, images.device)
        rules.check_second_batch(images2 is not None, labels2 is not None)
        if images2 is None:
            return targets, None
        _check_batch(images2, labels2, self.data_format, self.num_classes, "images2", "labels2")
        rules.check_like_images(
            tuple(images2.shape),
            rules.dtype_name(images2.dtype),
            tuple(images.shape),
            rules.dtype_name(images.dtype),
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
    alpha = Option(rules.check_alpha, redraw=True)
    p = Option(rules.check_p, redraw=True)
    partner = Option(choice("partner", PARTNERS), redraw=True)
    box = Option(choice("box", BOXES), redraw=True)
    min_visibility = Option(rules.check_min_visibility)

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
        *,
        min_visibility: float = MIN_VISIBILITY,
    ) -> None:
        super().__init__(num_classes, label_smoothing, data_format, generator)
        self.alpha = alpha
        self.p = p
        self.partner = partner
        self.box = box
        self.min_visibility = min_visibility

    def sample(
        self, batch_size: int, height: int, width: int, paired: bool = False, batches: int = 1
    ) -> MixParams:
        return sample_cutmix_params(
            batch_size, height, width, alpha=self.alpha, p=self.p, partner=None if paired else self.partner,
            box=self.box, generator=self._generator_here(), batches=batches,
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
    alpha = Option(rules.check_alpha, redraw=True)
    p = Option(rules.check_p, redraw=True)
    partner = Option(choice("partner", PARTNERS), redraw=True)

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
        self.alpha = alpha
        self.p = p
        self.partner = partner

    def sample(
        self, batch_size: int, height: int = 1, width: int = 1, paired: bool = False, batches: int = 1
    ) -> MixParams:
        return sample_mixup_params(
            batch_size, alpha=self.alpha, p=self.p, partner=None if paired else self.partner,
            generator=self._generator_here(), batches=batches,
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
    size = Option(rules.check_cutout_size, redraw=True)
    p = Option(rules.check_p, redraw=True)
    fill = Option(rules.check_fill)
    mask_fill = Option(rules.check_mask_fill)
    min_visibility = Option(rules.check_min_visibility)

    def __init__(
        self,
        size: int | tuple[int, int] = 16,
        p: float = 1.0,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        fill: float = 0.0,
        data_format: DataFormat = "channels_first",
        generator: torch.Generator | None = None,
        *,
        mask_fill: int = MASK_FILL,
        min_visibility: float = MIN_VISIBILITY,
    ) -> None:
        super().__init__(num_classes, label_smoothing, data_format, generator)
        self.size = size
        self.p = p
        self.fill = fill
        self.mask_fill = mask_fill
        self.min_visibility = min_visibility

    def sample(
        self, batch_size: int, height: int, width: int, paired: bool = False, batches: int = 1
    ) -> MixParams:
        return sample_cutout_params(
            batch_size, height, width, size=self.size, p=self.p, generator=self._generator_here(),
            batches=batches,
        )  # fmt: skip

    def _apply(self, images, targets, params, images2, targets2) -> tuple[Tensor, Tensor]:
        return apply_cutout(images, params, data_format=self.data_format, fill=self.fill), targets

    def __repr__(self) -> str:
        return f"Cutout(size={self.size}, p={self.p}, num_classes={self.num_classes}, fill={self.fill})"


class CutMixOrMixUp(_WorkerStreams):
    """Per batch, CutMix with probability ``switch_prob``, else MixUp (timm's ``switch_prob``).

    Both ops keep their own settings and generators; this op's own ``generator`` draws the switch.
    They must agree on ``num_classes``, ``label_smoothing`` and ``data_format``.
    """

    switch_prob = Option(rules.check_switch_prob)
    generator = Option(_check_generator)

    def __init__(
        self,
        cutmix: CutMix,
        mixup: MixUp,
        switch_prob: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> None:
        self.cutmix = cutmix
        self.mixup = mixup
        self.switch_prob = switch_prob
        self.generator = generator

    @property
    def cutmix(self) -> CutMix:
        return self._cutmix

    @cutmix.setter
    def cutmix(self, cutmix: CutMix) -> None:
        if not isinstance(cutmix, CutMix):
            raise TypeError(f"cutmix: expected a CutMix, got {type(cutmix).__name__}")
        if "_mixup" in self.__dict__:
            rules.check_agree(cutmix, self._mixup)
        self._cutmix = cutmix

    @property
    def mixup(self) -> MixUp:
        return self._mixup

    @mixup.setter
    def mixup(self, mixup: MixUp) -> None:
        if not isinstance(mixup, MixUp):
            raise TypeError(f"mixup: expected a MixUp, got {type(mixup).__name__}")
        rules.check_agree(self._cutmix, mixup)
        self._mixup = mixup

    def __call__(
        self,
        images: Tensor,
        labels: Tensor,
        images2: Tensor | None = None,
        labels2: Tensor | None = None,
        *,
        return_params: bool = False,
        **dense: Tensor | list[Tensor] | None,
    ) -> tuple[Tensor, ...]:
        """As the ops' call; ``dense`` (masks, boxes, ...) go to the op picked. Masks come back as a
        tensor from CutMix and as :class:`MixedMasks` from MixUp: :func:`mask_cross_entropy` takes both."""
        rules.check_agree(self.cutmix, self.mixup)  # their options may have been set since
        use_cutmix = torch.rand((), generator=self._generator_here()).item() < self.switch_prob
        op = self.cutmix if use_cutmix else self.mixup
        return op(images, labels, images2, labels2, return_params=return_params, **dense)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "cutmix": self.cutmix.state_dict(),
                "mixup": self.mixup.state_dict()}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.cutmix.load_state_dict(state["cutmix"])
        self.mixup.load_state_dict(state["mixup"])

    def __repr__(self) -> str:
        return f"CutMixOrMixUp({self.cutmix!r}, {self.mixup!r}, switch_prob={self.switch_prob})"
