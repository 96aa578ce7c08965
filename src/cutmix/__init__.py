"""cutmix: per-sample, vectorised CutMix, MixUp and Cutout for PyTorch, and the Keras CutMix
example's CIFAR-10 experiment as one command.

``import cutmix`` loads only the ops (:mod:`cutmix.ops`). The names of the training side --
:func:`load_model`, :func:`evaluate_checkpoint`, :func:`predict_files` (from
:mod:`cutmix.training.evaluate`), :class:`TrainConfig` and :func:`resolve_config` (from
:mod:`cutmix.training.config`) -- are imported on first use (PEP 562), so the ops do not pay for
the trainer, the data layer or Matplotlib.
"""

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

# The names imported on first use, and the module each comes from.
_LAZY = {
    "Evaluation": "cutmix.training.evaluate",
    "LoadedCheckpoint": "cutmix.training.evaluate",
    "Prediction": "cutmix.training.evaluate",
    "evaluate_checkpoint": "cutmix.training.evaluate",
    "load_model": "cutmix.training.evaluate",
    "predict_files": "cutmix.training.evaluate",
    "TrainConfig": "cutmix.training.config",
    "resolve_config": "cutmix.training.config",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cutmix' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later look-ups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
    *_LAZY,
]
