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
generator and what was drawn ahead, so a checkpointed op continues exactly. Options set after
construction (``op.p = 0.5``) are checked as the constructor checks them, and a new value for one the
draws depend on drops the draws made ahead, so it takes effect on the next call. An op pickles with
its generator's state as bytes, so it travels to DataLoader workers under every start method.

Conventions
-----------
* ``images``: a 4-D tensor, (B, C, H, W) for ``data_format="channels_first"`` or (B, H, W, C) for
  ``"channels_last"``; any memory format (``torch.channels_last`` is kept); uint8/int or floating point,
  dtype kept. CutMix and Cutout only copy or fill pixels (with ``torch.where`` for uint16/32/64, which
  torch stores but has no arithmetic for). MixUp on integer images computes in float32 and rounds to
  nearest.
* ``labels``: class ids of any integer dtype, (B,) or (B, 1) (as ``keras.datasets`` gives them), with
  ``num_classes`` given, or class probabilities (B, K).
* targets: float32 (B, K) on the images' device, each row summing to 1. Label smoothing is applied in
  exactly one place, :func:`to_targets`, to each sample's own target *before* mixing:
  ``y * (1 - ε) + ε / K``. Do not smooth again in the loss.
* Gradients flow through every op when images, a second batch or probability labels require grad
  (e.g. mixing features, or learned augmentations); without grad (or under ``torch.no_grad``) the ops
  write into preallocated buffers with ``out=``, which autograd does not support. Every call returns
  new tensors, which no later call writes to; the one buffer reused from call to call is a CPU box
  mask that never leaves the call (one per thread; not used with grad, where autograd keeps the mask).
* Images are expected to be finite: on the CPU, CutMix blends with 0/1 weights (faster there than
  ``torch.where``), which is exact for finite values.

Modules
-------
* :mod:`cutmix.ops.rules`: every argument check and refusal with its message, and the options'
  descriptor, shared with :mod:`cutmix.keras` (torch-free);
* :mod:`cutmix.ops.params`: :class:`MixParams` and the ``sample_*_params`` functions (step 1);
* :mod:`cutmix.ops.apply`: the ``apply_*`` functions (step 2) and :func:`to_targets`;
* :mod:`cutmix.ops.boxes`: detection boxes: their checks and the box-visibility rule;
* :mod:`cutmix.ops.dense`: segmentation masks, detection boxes and video clips carried through the
  same parameters (``mix(images, labels, masks=..., boxes=..., box_labels=...)``);
* :mod:`cutmix.ops.classes`: the classes, which draw ahead and run both steps.

Each module imports only those above it in this list (rules, params, apply, boxes, dense, classes).

Everything public is importable from ``cutmix.ops`` itself.
"""

from __future__ import annotations

from cutmix.ops.apply import apply_cutmix, apply_cutout, apply_mixup, to_targets
from cutmix.ops.classes import CutMix, CutMixOrMixUp, Cutout, MixUp
from cutmix.ops.dense import MASK_FILL, MIN_VISIBILITY, MixedBoxes, MixedMasks, mask_cross_entropy
from cutmix.ops.params import (
    BOXES,
    DATA_FORMATS,
    PARTNERS,
    DataFormat,
    MixParams,
    sample_cutmix_params,
    sample_cutout_params,
    sample_mixup_params,
)

__all__ = [
    "BOXES",
    "DATA_FORMATS",
    "PARTNERS",
    "CutMix",
    "CutMixOrMixUp",
    "Cutout",
    "MASK_FILL",
    "MIN_VISIBILITY",
    "DataFormat",
    "MixParams",
    "MixUp",
    "MixedBoxes",
    "MixedMasks",
    "apply_cutmix",
    "apply_cutout",
    "apply_mixup",
    "mask_cross_entropy",
    "sample_cutmix_params",
    "sample_cutout_params",
    "sample_mixup_params",
    "to_targets",
]
