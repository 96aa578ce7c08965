"""torchvision's ``v2.CutMix`` and ``v2.MixUp`` as drop-ins: ``nn.Module`` transforms with their signatures
(``alpha=1.0``, ``num_classes=None``, ``labels_getter="default"``) and calls, on the ops of
:mod:`cutmix.ops`. Switching is the import line::

    from cutmix.compat.torchvision import CutMix, MixUp  # was: from torchvision.transforms.v2 import ...

    cutmix = CutMix(num_classes=10)
    images, targets = cutmix(images, labels)           # or cutmix((images, labels)), or a dict sample
    mix = v2.RandomChoice([cutmix, MixUp(num_classes=10)])
    loader = DataLoader(dataset, collate_fn=lambda batch: mix(*default_collate(batch)))

What stays torchvision's: the call forms (``t(images, labels)``, ``t((images, labels))``, a dict or any
nested sample of lists, tuples and dicts), the labels found by ``labels_getter`` (by default the
second item of a pair, or a dict's ``"labels"`` key, else its first key containing ``"label"``), the
same structure returned with the images and labels replaced, class ids (B,) with ``num_classes`` or
(B, K) one-hot or probability labels of any dtype (int64 one-hot too), float (B, K) output labels
(float32, or the labels' own floating dtype), the partner of sample i being sample i − 1 (the batch
rolled), ``tv_tensors.Image``/``Video`` leaves transformed and plain tensors passed through beside
them, and the refusal of PIL images, boxes, masks and keypoints.

What differs:

* **Per sample** (the default): each sample gets its own λ ~ Beta(α, α) and, for CutMix, its own box;
  torchvision draws one λ and one box per batch. ``per_batch=True`` gives torchvision's behaviour:
  one λ and one box (its rule: an integer centre, half-sides ``int(½·√(1−λ)·size)``, clipped) for the
  whole batch, partner the rolled batch.
* The label weight is the share of pixels actually pasted (torchvision's too, per batch).
* Randomness comes from an explicit ``generator`` (or ``seed``), never torch's global RNG; a transform
  copied into DataLoader workers draws a different stream in each (see :mod:`cutmix.ops`). It
  pickles, so it travels to ``spawn`` workers.
* Attributes set after construction (``cutmix.alpha = 0.5``, ``num_classes``, ``labels_getter``,
  ``per_batch``) are checked as the constructor checks them and take effect on the next call
  (torchvision keeps the Beta distribution made at construction).
* MixUp blends integer (uint8) images in float32 and rounds them (torchvision's fails on them).
* The images are the first plain tensor of the sample that is not the labels (torchvision takes the
  first plain tensor, the labels themselves when a dict lists them first).
* Errors are :class:`cutmix.errors.UsageError` (a ``ValueError``) naming the argument.
"""

from __future__ import annotations

import collections.abc
import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from cutmix.errors import UsageError
from cutmix.ops import CutMix as _CutMixOp
from cutmix.ops import MixParams, apply_cutmix, apply_mixup, to_targets
from cutmix.ops import MixUp as _MixUpOp

__all__ = ["CutMix", "MixUp", "default_labels_getter"]

_REFUSED = ("BoundingBoxes", "Mask", "KeyPoints")  # tv_tensors that torchvision's CutMix/MixUp refuse too


@contextlib.contextmanager
def _as_usage_error() -> Iterator[None]:
    """Re-raises the ops' ``ValueError``/``TypeError`` for what the user passed as a
    :class:`UsageError` with the same message (the ops' own messages name the argument)."""
    try:
        yield
    except UsageError:
        raise
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from error


def _tv_kind(x: Any) -> str | None:
    """The torchvision type name of a ``tv_tensors`` leaf (``"Image"``, ``"Video"``, ...), or
    ``"PIL"`` for a PIL image; None for anything else. Read from the type's module, so that this
    module never imports torchvision (which cannot import beside every torch)."""
    for cls in type(x).__mro__:
        module = cls.__module__ or ""
        if module.startswith("torchvision.tv_tensors"):
            return type(x).__name__
        if module.startswith("PIL."):
            return "PIL"
    return None


def _is_pure_tensor(x: Any) -> bool:
    return isinstance(x, Tensor) and _tv_kind(x) is None


def default_labels_getter(inputs: Any) -> Any:
    """torchvision's default: the second item of a tuple or list (a tensor, or a dict searched as
    below), or from a dict the value under a key equal to ``"labels"`` (any case), else under the
    first key containing ``"label"``."""
    if isinstance(inputs, tuple | list):
        if len(inputs) < 2:
            raise UsageError(
                f"inputs: expected (images, labels) or a dict sample, got a {type(inputs).__name__} of "
                f"{len(inputs)} item(s)"
            )
        inputs = inputs[1]
    if _is_pure_tensor(inputs):
        return inputs
    if not isinstance(inputs, collections.abc.Mapping):
        raise UsageError(
            "inputs: expected a dict, or a pair whose second item is a tensor or a dict (the default "
            f"labels_getter), got {type(inputs).__name__} there"
        )
    keys = [key for key in inputs if isinstance(key, str)]
    found = next((k for k in keys if k.lower() == "labels"), None)
    found = found if found is not None else next((k for k in keys if "label" in k.lower()), None)
    if found is None:
        raise UsageError(
            f"inputs: expected a 'labels' (or '...label...') key, got keys {list(inputs)} (pass "
            "labels_getter=a callable that returns the labels)"
        )
    return inputs[found]


def _no_labels(inputs: Any) -> None:
    """torchvision's ``labels_getter=None``: no labels, which CutMix and MixUp then refuse."""
    return None


def _check_labels_getter(labels_getter: Any) -> Any:
    if isinstance(labels_getter, str) and labels_getter == "default":
        return default_labels_getter
    if labels_getter is None:
        return _no_labels
    if callable(labels_getter):
        return labels_getter
    raise UsageError(f"labels_getter: expected 'default', a callable or None, got {labels_getter!r}")


def _check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{name}: expected True or False, got {value!r}")
    return value


def _make_generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator | None:
    if seed is None:
        return generator
    if generator is not None:
        raise UsageError("generator, seed: expected one of them, got both")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed: expected an int >= 0 or None, got {seed!r}")
    return torch.Generator().manual_seed(seed)


class _MixTransform(nn.Module):
    """What CutMix and MixUp share: the call forms, the labels and the per-batch option."""

    _op_class: type = _CutMixOp
    _apply = staticmethod(apply_cutmix)

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        num_classes: int | None = None,
        labels_getter: Any = "default",
        per_batch: bool = False,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        with _as_usage_error():
            # p = 1 and torchvision's pairing: sample i meets sample i - 1 (never itself).
            self._op = self._op_class(alpha=alpha, num_classes=num_classes, partner="roll",
                                      generator=_make_generator(generator, seed))  # fmt: skip
        self.labels_getter = labels_getter
        self.per_batch = per_batch

    # -- settings: checked as the constructor checks them, read on every call --------------------

    @property
    def alpha(self) -> float:
        """λ ~ Beta(alpha, alpha), alpha > 0."""
        return self._op.alpha

    @alpha.setter
    def alpha(self, alpha: float) -> None:
        with _as_usage_error():
            self._op.alpha = alpha

    @property
    def num_classes(self) -> int | None:
        """K, needed for class-id labels; for (B, K) labels None or K."""
        return self._op.num_classes

    @num_classes.setter
    def num_classes(self, num_classes: int | None) -> None:
        with _as_usage_error():
            self._op.num_classes = num_classes

    @property
    def labels_getter(self) -> Any:
        """The callable that finds the labels in a call's inputs."""
        return self._labels_getter

    @labels_getter.setter
    def labels_getter(self, labels_getter: Any) -> None:
        self._labels_getter = _check_labels_getter(labels_getter)

    @property
    def per_batch(self) -> bool:
        """True: torchvision's one λ (and box) per batch; False: one per sample."""
        return self._per_batch

    @per_batch.setter
    def per_batch(self, per_batch: bool) -> None:
        self._per_batch = _check_flag("per_batch", per_batch)

    @property
    def generator(self) -> torch.Generator:
        """The CPU ``torch.Generator`` every draw comes from."""
        return self._op.generator

    @generator.setter
    def generator(self, generator: torch.Generator | None) -> None:
        with _as_usage_error():
            self._op.generator = generator

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, num_classes={self.num_classes}, per_batch={self.per_batch}"

    # -- the call ---------------------------------------------------------------------------------

    def forward(self, *inputs: Any) -> Any:
        """``t(images, labels)`` → ``(mixed, targets)``; ``t((images, labels))`` or ``t(sample)`` →
        the same structure with the images and labels replaced (torchvision's call)."""
        inputs = inputs if len(inputs) > 1 else inputs[0]
        leaves, spec = pytree.tree_flatten(inputs)
        refused = sorted({kind for kind in map(_tv_kind, leaves) if kind in (*_REFUSED, "PIL")})
        if refused:
            raise UsageError(
                f"inputs: expected images (a tensor, tv_tensors.Image or Video) and labels, got "
                f"{', '.join(refused)} too, which {type(self).__name__} does not support (as torchvision's)"
            )
        labels = self._labels_getter(inputs)
        if not isinstance(labels, Tensor):
            raise UsageError(
                f"labels: expected a torch.Tensor from labels_getter, got {type(labels).__name__}"
            )
        at = next((i for i, leaf in enumerate(leaves) if leaf is labels), None)
        if at is None:
            raise UsageError(
                "labels_getter: expected it to return a tensor of the inputs, got another tensor"
            )
        images_at = self._images_at(leaves, at)
        if not images_at:
            raise UsageError("inputs: expected an images tensor besides the labels, got none")
        out = list(leaves)
        out[at], params = None, None
        for i in images_at:
            out[i], targets, params = self._mix(leaves[i], labels, params)
            out[at] = targets if out[at] is None else out[at]
        return pytree.tree_unflatten(out, spec)

    @staticmethod
    def _images_at(leaves: list[Any], labels_at: int) -> list[int]:
        """Which leaves are images: every tv_tensors Image or Video if there is one (plain tensors
        pass through beside them, as torchvision), else the first plain tensor that is not the labels."""
        wrapped = [i for i, leaf in enumerate(leaves) if _tv_kind(leaf) in ("Image", "Video")]
        if wrapped:
            return wrapped
        return next(([i] for i, leaf in enumerate(leaves) if i != labels_at and _is_pure_tensor(leaf)), [])

    def _mix(
        self, images: Tensor, labels: Tensor, params: MixParams | None
    ) -> tuple[Tensor, Tensor, MixParams]:
        """One image leaf mixed; ``params``: those of the sample's first image leaf, reused so that
        every image of one sample gets the same draw."""
        kind = _tv_kind(images)
        plain = images.as_subclass(Tensor)
        if kind == "Video":  # (B, T, C, H, W): the frames' channels as one channel dim, one box for all
            if plain.ndim != 5:
                raise UsageError(
                    f"images: expected a batched video (B, T, C, H, W), got shape {tuple(plain.shape)}"
                )
            plain = plain.reshape(plain.shape[0], -1, *plain.shape[3:])
        with _as_usage_error():
            labels_in = self._op_labels(labels.as_subclass(Tensor))
            if params is None and not self.per_batch:  # the op draws, checks and mixes
                mixed, targets, params = self._op(plain, labels_in, return_params=True)
            else:
                mixed, targets, params = self._mix_with(plain, labels_in, params)
        if kind == "Video":
            mixed = mixed.reshape(images.shape)
        if kind is not None:
            mixed = mixed.as_subclass(type(images))
        if labels.is_floating_point():
            targets = targets.to(labels.dtype)
        return mixed, targets, params

    def _mix_with(
        self, images: Tensor, labels: Tensor, params: MixParams | None
    ) -> tuple[Tensor, Tensor, MixParams]:
        """Mixes with ``params``, or with one draw for the whole batch (``per_batch``)."""
        if images.ndim != 4:
            raise UsageError(
                f"images: expected a batched 4-D tensor (B, C, H, W), got shape {tuple(images.shape)}"
            )
        if images.shape[0] != labels.shape[0]:
            raise UsageError(
                f"labels: expected {images.shape[0]} labels, one per image, got shape {tuple(labels.shape)}"
            )
        targets = to_targets(labels, self.num_classes, 0.0, images.device)
        if params is None:  # per_batch: one row drawn for the batch, repeated for every sample
            row = self._op.sample(1, images.shape[2], images.shape[3], paired=True)
            params = MixParams(row.kind, row.table.expand(images.shape[0], -1), row.height, row.width)
        if self.per_batch:  # partners as torchvision pairs them: the batch rolled by one
            mixed, mixed_targets = self._apply(images, targets, params, images.roll(1, 0), targets.roll(1, 0))
        else:
            mixed, mixed_targets = self._apply(images, targets, params)
        return mixed, mixed_targets, params

    def _op_labels(self, labels: Tensor) -> Tensor:
        """Labels as the ops take them: class ids (B,) as they are, (B, K) labels of any dtype (int64
        one-hot too) as float32 probabilities."""
        if labels.ndim == 1:
            return labels
        if labels.ndim != 2:
            raise UsageError(
                "labels: expected class ids (B,) or (B, K) one-hot or probabilities, got shape "
                f"{tuple(labels.shape)}"
            )
        if self.num_classes is not None and labels.shape[1] != self.num_classes:
            raise UsageError(
                f"labels: expected (B, {self.num_classes}) labels to match num_classes, got shape "
                f"{tuple(labels.shape)} (or leave num_classes None)"
            )
        return labels.to(torch.float32)


class CutMix(_MixTransform):
    """torchvision's ``v2.CutMix`` (0.29) as a drop-in, per sample: each sample gets its own λ and box.

    Args:
        alpha: λ ~ Beta(alpha, alpha), alpha > 0.
        num_classes: K, needed when labels are class ids (B,); with (B, K) labels None or K.
        labels_getter: ``"default"`` (torchvision's heuristic, :func:`default_labels_getter`), or a
            callable taking the call's inputs and returning the labels tensor.
        per_batch: True for torchvision's behaviour: one λ and one box for the whole batch.
        generator: a CPU ``torch.Generator`` (beyond torchvision's signature); None seeds one from
            torch's global RNG now.
        seed: an int to seed a new generator instead (not with ``generator``).

    The box is the paper's (and torchvision's): an integer centre uniform over the image, sides
    ``floor(size·√(1−λ))`` about it, clipped; the label weight is the share of pixels pasted. Call as
    torchvision's: see :mod:`cutmix.compat.torchvision`.
    """

    _op_class = _CutMixOp
    _apply = staticmethod(apply_cutmix)


class MixUp(_MixTransform):
    """torchvision's ``v2.MixUp`` (0.29) as a drop-in, per sample: ``λ·x + (1−λ)·x_partner`` with each
    sample's own λ (``per_batch=True``: one λ for the batch, as torchvision).

    Same arguments and call as :class:`CutMix`. Integer images are blended in float32 and rounded.
    """

    _op_class = _MixUpOp
    _apply = staticmethod(apply_mixup)
