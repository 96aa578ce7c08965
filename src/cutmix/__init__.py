"""cutmix: per-sample, vectorised CutMix, MixUp and Cutout for PyTorch, and the Keras CutMix
example's CIFAR-10 experiment as one command."""

__version__ = "0.1.0"

from cutmix.ops import (  # noqa: E402
    CutMix,
    CutMixOrMixUp,
    Cutout,
    MixedBoxes,
    MixedMasks,
    MixParams,
    MixUp,
    apply_cutmix,
    apply_cutout,
    apply_mixup,
    mask_cross_entropy,
    sample_cutmix_params,
    sample_cutout_params,
    sample_mixup_params,
    to_targets,
)

__all__ = [
    "CutMix",
    "CutMixOrMixUp",
    "Cutout",
    "MixParams",
    "MixUp",
    "MixedBoxes",
    "MixedMasks",
    "__version__",
    "apply_cutmix",
    "apply_cutout",
    "apply_mixup",
    "mask_cross_entropy",
    "sample_cutmix_params",
    "sample_cutout_params",
    "sample_mixup_params",
    "to_targets",
]
