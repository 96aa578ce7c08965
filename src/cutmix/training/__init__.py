"""Training one run, and using its checkpoint.

* :mod:`cutmix.training.config`: :class:`TrainConfig`, the recipes that fill it, its validation, and
  the command-line options built from its fields;
* :mod:`cutmix.training.loop`: :func:`train`, the run as named steps (build the data, build the
  model, restore, then per epoch run, evaluate, record, save) and the optimisation step;
* :mod:`cutmix.training.components`: what a run is built from (loaders, mixing op, optimizer, lr
  schedule, the evaluation pass);
* :mod:`cutmix.training.checkpoint`: writing checkpoints, reading them safely, matching class names;
* :mod:`cutmix.training.distributed`: the DDP process group, main-first loading, buffer sync;
* :mod:`cutmix.training.evaluate`: a trained checkpoint from Python: :func:`load_model`,
  :func:`evaluate_checkpoint`, :func:`predict_files`.
"""

from cutmix.training.checkpoint import load_checkpoint, save_checkpoint
from cutmix.training.config import TrainConfig, resolve_config
from cutmix.training.evaluate import (
    Evaluation,
    LoadedCheckpoint,
    Prediction,
    evaluate_checkpoint,
    load_model,
    predict_files,
)
from cutmix.training.loop import seeded_generator, train

__all__ = [
    "Evaluation",
    "LoadedCheckpoint",
    "Prediction",
    "TrainConfig",
    "evaluate_checkpoint",
    "load_checkpoint",
    "load_model",
    "predict_files",
    "resolve_config",
    "save_checkpoint",
    "seeded_generator",
    "train",
]
