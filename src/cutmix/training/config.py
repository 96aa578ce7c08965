"""Run configuration: ``TrainConfig``, the recipes that fill it, and the choices of each option.

``asdict(TrainConfig)`` identifies a run (the comparison hashes it), so its fields, their order and
their defaults are part of what a run folder records; the ``SCHEDULING_OPTIONS`` (when to checkpoint)
are recorded but identify nothing.

Every field is also a command-line option: :func:`add_config_options` builds the flags from the
fields, their types, ``CHOICES`` and ``OPTION_HELP`` (``--batch-size`` for ``batch_size``),
:func:`add_train_options` adds them (and ``--quiet``) to the parsers of `train` and `compare`,
:func:`config_from_args` turns the parsed options back into a config, and
:meth:`TrainConfig.validate` checks every field, naming the flag in its message. They live here, not in
a CLI module, so that the library (the comparison) builds its parser without importing the CLI.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from cutmix.data.loader import AUGMENTS
from cutmix.errors import UsageError
from cutmix.ops.params import PARTNERS as OP_PARTNERS

# Each vocabulary is defined once: the ops' partners in cutmix.ops.params, the loader's augmentations
# in cutmix.data.loader; the trainer's partners add "stream" (a second, independently shuffled stream
# of the loader) to the ops'. preview.PREVIEW_MIXES is MIXES in the order the preview offers them.
MIXES = ("none", "cutmix", "mixup", "cutout")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "onecycle", "cosine")
PARTNERS = (*OP_PARTNERS, "stream")
PRECISIONS = ("auto", "fp32", "bf16")
# Options that change how a run is carried out, never a number it computes: not part of what identifies
# a run (the comparison's config hash, cutmix.experiment.plan.UNHASHED, leaves them out, and a run
# resumes with other values of them).
SCHEDULING_OPTIONS = ("checkpoint_every_min",)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run. ``RECIPES`` fill it; explicit options override a recipe."""

    data: str = "synthetic"
    mix: str = "none"
    alpha: float = 1.0
    mix_p: float = 1.0
    cutout_size: int = 16
    partner: str = "permute"  # "stream": the seed's second, independently shuffled stream
    mix_off_epochs: int = 0  # no mixing in the last N epochs
    augment: str = "none"
    normalize: bool = False
    epochs: int = 15
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = True
    adam_eps: float = 1e-7  # Keras' default, not PyTorch's 1e-8
    weight_decay: float = 0.0  # optimizer decay on conv kernels (SGD)
    l2: float = 1e-4  # Keras-style 1e-4·Σw² on conv kernels, added to the loss
    schedule: str = "constant"
    warmup: float = 0.25  # onecycle: share of steps spent rising to the peak lr
    label_smoothing: float = 0.0
    tta_flip: bool = False
    depth: int = 20
    bn_momentum: float = 0.01  # PyTorch convention; 0.01 is Keras' momentum=0.99
    seed: int = 0
    init: str | None = None
    val: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    eval_batch_size: int = 1000
    stop_on_divergence: bool = False
    recipe: str = "seed"
    # How the run is carried out, not what it computes (SCHEDULING_OPTIONS): last, so that every field
    # before it keeps its place in the records.
    checkpoint_every_min: float = 0.0

    def validate(self) -> TrainConfig:
        """Checks every field; :class:`UsageError` naming the flag and what was expected. Returns self."""
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        for name, choices in CHOICES.items():
            allowed = (*choices, "custom") if name == "recipe" else choices
            value = getattr(self, name)
            if value not in allowed:
                raise UsageError(f"{_flag(name)}: expected one of {', '.join(allowed)}, got {value!r}")
        if not self.data:
            raise UsageError(f"--data: expected a dataset name or path, got {self.data!r}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"{_flag(name)}: expected an integer >= 1, got {getattr(self, name)}")
        for name in ("cutout_size", "val", "seed"):
            if getattr(self, name) < 0:
                raise UsageError(f"{_flag(name)}: expected an integer >= 0, got {getattr(self, name)}")
        for name in ("lr", "alpha", "adam_eps"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise UsageError(f"{_flag(name)}: expected a finite number > 0, got {getattr(self, name)}")
        for name in ("weight_decay", "l2", "checkpoint_every_min"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise UsageError(f"{_flag(name)}: expected a finite number >= 0, got {getattr(self, name)}")
        # Half-open where the closed end breaks something: momentum 1 never forgets, warm-up 1 leaves no
        # decay phase (a division by zero), label smoothing 1 leaves no label.
        for name, low, high, closed in (
            ("mix_p", 0.0, 1.0, True),
            ("momentum", 0.0, 1.0, False),
            ("warmup", 0.0, 1.0, False),
            ("label_smoothing", 0.0, 1.0, False),
        ):
            value = getattr(self, name)
            if not (low <= value <= high if closed else low <= value < high):
                interval = f"[{low:g}, {high:g}{']' if closed else ')'}"
                raise UsageError(f"{_flag(name)}: expected a number in {interval}, got {value}")
        if not 0 < self.bn_momentum <= 1:
            raise UsageError(f"--bn-momentum: expected a number in (0, 1], got {self.bn_momentum}")
        if self.optimizer == "sgd" and self.nesterov and self.momentum == 0:
            raise UsageError("--nesterov: expected --momentum > 0 with Nesterov momentum, got --momentum 0 "
                             "(pass --no-nesterov for plain SGD)")  # fmt: skip
        if self.depth < 8 or (self.depth - 2) % 6:
            raise UsageError(f"--depth: expected 6n+2 with n >= 1 (8, 14, 20, 32, ...), got {self.depth}")
        if not 0 <= self.mix_off_epochs <= self.epochs:
            raise UsageError(
                f"--mix-off-epochs: expected 0..{self.epochs} (--epochs {self.epochs}), got "
                f"{self.mix_off_epochs}{self._origin('mix_off_epochs')}; {self._mix_off_advice()}"
            )
        self._check_mixes()
        if self.init is not None and not Path(self.init).is_file():
            raise UsageError(f"--init: expected a file of initial weights, got {self.init!r} (not found)")
        check_device(self.device)
        return self

    def _origin(self, name: str) -> str:
        """Where a refused value may have come from: the user may never have typed the flag, only
        ``--recipe`` (``compare --recipe fast --epochs 1`` gets the recipe's --mix-off-epochs 2)."""
        recipe = RECIPES.get(self.recipe, {})
        if name in recipe and recipe[name] == getattr(self, name):
            return f", the value --recipe {self.recipe} sets unless {_flag(name)} is given"
        return ""

    def _mix_off_advice(self) -> str:
        keep = "0" if self.epochs == 1 else f"0..{self.epochs - 1}"
        return f"pass --mix-off-epochs {keep}, or --epochs {self.mix_off_epochs + 1} or more"

    def _check_mixes(self) -> None:
        """A mixing run that never mixes would train exactly as ``none`` and be reported as CutMix
        (or MixUp, Cutout): refused, naming the option that switches its mixing off."""
        if self.mix == "none":
            return
        never = f"a {self.mix} run would never mix, and train exactly as none"
        if self.mix_off_epochs >= self.epochs:
            raise UsageError(
                f"--mix-off-epochs: expected fewer than --epochs {self.epochs} with mix {self.mix}, got "
                f"{self.mix_off_epochs}{self._origin('mix_off_epochs')}: {never}; {self._mix_off_advice()}"
            )
        if self.mix_p == 0:
            raise UsageError(f"--mix-p: expected a number in (0, 1] with mix {self.mix}, got "
                             f"{self.mix_p}{self._origin('mix_p')}: {never}")  # fmt: skip
        if self.mix == "cutout" and self.cutout_size == 0:
            raise UsageError(f"--cutout-size: expected an integer >= 1 with mix cutout, got 0: {never}")


# What each annotation admits, and how a message names it (bool is an int in Python: refused as one).
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "str": ((str,), "a string"),
    "int": ((int,), "an integer"),
    "float": ((int, float), "a number"),
    "bool": ((bool,), "true or false"),
    "str | None": ((str, type(None)), "a path, or None"),
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_type(name: str, value: Any, annotation: Any) -> None:
    accepted, what = _TYPES[str(annotation)]
    if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
        raise UsageError(f"{_flag(name)}: expected {what}, got {value!r}")


def available_devices() -> list[str]:
    """The devices this process can train on: ``cpu``, then ``cuda:0``, ``cuda:1``, ... and ``mps``."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def check_device(spec: str, option: str = "--device") -> str:
    """``spec`` if it names a device that exists here ("auto" always does); else :class:`UsageError`
    saying what is missing and listing the available devices. Nothing is allocated on the device."""
    if spec == "auto":
        return spec
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"{option}: expected auto, cpu, cuda, cuda:N or mps, got {spec!r}") from None
    available = available_devices()
    listed = f"available: {', '.join(available)}"
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            why = "this torch build has no CUDA support" if torch.version.cuda is None else "it sees no GPU"
            raise UsageError(f"{option}: no CUDA device is available ({why}), got {spec!r}; {listed}")
        if device.index is not None and device.index >= count:
            raise UsageError(f"{option}: expected a CUDA device index below {count}, got {spec!r}; {listed}")
    elif device.type == "mps":
        if "mps" not in available:
            raise UsageError(f"{option}: no MPS device is available, got {spec!r}; {listed}")
    elif device.type != "cpu":
        raise UsageError(f"{option}: expected auto, cpu, cuda, cuda:N or mps, got {spec!r}; {listed}")
    return spec


RECIPES: dict[str, dict[str, Any]] = {
    # The Keras example's choices, with two deliberate fixes: every arm gets a full shuffle each
    # epoch, and an empty box mixes nothing (the seed pastes a 1-pixel patch).
    "seed": dict(
        mix_p=1.0,
        alpha=0.25,
        partner="stream",
        augment="none",
        normalize=False,
        epochs=15,
        batch_size=32,
        optimizer="adam",
        lr=1e-3,
        weight_decay=0.0,
        l2=1e-4,
        schedule="constant",
        label_smoothing=0.0,
        tta_flip=False,
        mix_off_epochs=0,
        bn_momentum=0.01,
    ),
    # A strong 15-epoch recipe for ResNet-20 (see README "Results" for how it was chosen).
    "fast": dict(
        mix_p=0.5,
        alpha=1.0,
        partner="permute",
        augment="crop-flip",
        normalize=True,
        epochs=15,
        # 128, not larger: on 2 CPU cores it trains as fast as 256 (416 vs 410 img/s) with twice the
        # updates, which a 15-epoch budget needs.
        batch_size=128,
        optimizer="sgd",
        lr=0.2,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        l2=0.0,
        schedule="onecycle",
        warmup=0.2,
        label_smoothing=0.1,
        tta_flip=True,
        mix_off_epochs=2,
        bn_momentum=0.1,
    ),
}


# The fields with a fixed set of values; validate() and the command line both use these.
CHOICES: dict[str, tuple[str, ...]] = {
    "mix": MIXES,
    "augment": AUGMENTS,
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "partner": PARTNERS,
    "precision": PRECISIONS,
    "recipe": tuple(RECIPES),
}


def resolve_config(recipe: str = "seed", **overrides: Any) -> TrainConfig:
    """A validated config: ``recipe``'s values, then every override that is not None."""
    if recipe not in RECIPES:
        raise UsageError(f"--recipe: expected one of {', '.join(RECIPES)}, got {recipe!r}")
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"unknown config fields: {', '.join(sorted(unknown))}")
    values = {**RECIPES[recipe], **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(recipe=recipe, **values).validate()


def config_with(config: TrainConfig, **changes: Any) -> TrainConfig:
    """A copy of ``config`` with ``changes``, validated."""
    return replace(config, **changes).validate()


def arm_configs(base: TrainConfig, arms: Sequence[str], seeds: Sequence[int]) -> list[TrainConfig]:
    """The config of every arm x seed of a comparison (``base`` with ``mix`` and ``seed`` set), each
    validated, so that a bad option is refused before any run trains; in the order seed by seed."""
    return [config_with(base, mix=arm, seed=seed, init=None) for seed in seeds for arm in arms]


# --------------------------------------------------------------------------------------------
# Command-line options, one per field
# --------------------------------------------------------------------------------------------

RECIPE_HELP = (
    "seed: the Keras example's choices (ResNet-20, Adam lr 1e-3 eps 1e-7, batch 32, 15 epochs, "
    "[0, 1] pixels, no crop/flip, CutMix alpha 0.25 with the partner from a second, independently "
    "shuffled stream, L2 1e-4 on conv kernels), with two deliberate fixes: every arm gets a full "
    "shuffle each epoch (the seed never shuffles its no-augmentation arm and shuffles its CutMix "
    "streams with a 1024-image buffer), and an empty box mixes nothing (the seed pastes 1 pixel). "
    "fast: crop+flip, SGD-Nesterov one-cycle, label smoothing, batch 128, mixing off for the last "
    "epochs, flip test-time augmentation (reported as such). Explicit options override the recipe."
)

# The help of each field's flag (a test checks that every field has one).
OPTION_HELP: dict[str, str] = {
    "data": "dataset: cifar10, cifar100, synthetic, or a path",
    "mix": "mixing op (train; compare uses --arms)",
    "alpha": "Beta(alpha, alpha) for CutMix/MixUp",
    "mix_p": "probability that a sample is mixed",
    "cutout_size": "Cutout square side in pixels",
    "partner": "permute/roll/flip within the batch, or stream: a second shuffled stream",
    "mix_off_epochs": "no mixing in the last N epochs",
    "augment": "training images as they are (none), or padded random crops and horizontal flips",
    "normalize": "normalise by CIFAR-10 channel mean/std",
    "epochs": "number of training epochs",
    "batch_size": "global batch size",
    "optimizer": "optimizer (weight decay and L2 apply to conv kernels only)",
    "lr": "(peak) learning rate",
    "momentum": "SGD momentum, in [0, 1)",
    "nesterov": "Nesterov momentum (SGD)",
    "adam_eps": "Adam's epsilon (seed: 1e-7, Keras' default, not PyTorch's 1e-8)",
    "weight_decay": "optimizer decay on conv kernels",
    "l2": "Keras-style L2 on conv kernels, in the loss",
    "schedule": "learning-rate schedule: constant, onecycle (warm-up, then linear decay to 0) or cosine",
    "warmup": "onecycle: share of the steps spent rising to the peak lr, in [0, 1)",
    "label_smoothing": "label smoothing epsilon in [0, 1), applied to each sample's own target before mixing",
    "tta_flip": "evaluate on the mean of each image and its mirror image",
    "depth": "ResNet depth 6n+2 (default 20)",
    "bn_momentum": "BatchNorm momentum, PyTorch convention (seed: 0.01 = Keras 0.99)",
    "seed": "seed of init, data order and mixing",
    "init": "initial weights (init.pt of another run)",
    "val": "hold out N training images for validation",
    "device": "auto (default), cpu, cuda, cuda:1, ...",
    "precision": "auto: bf16 autocast on GPU, fp32 on CPU",
    "channels_last": "channels-last memory format for the model and the batches",
    "compile": "torch.compile the model",
    "eval_batch_size": "batch size of evaluation (the results do not depend on it)",
    "stop_on_divergence": "stop a run at the epoch it diverges and exit with status 3 (compare: once "
    "every other run has trained and the whole report is written)",
    "recipe": RECIPE_HELP,
    "checkpoint_every_min": "also save a checkpoint within an epoch every N minutes of wall time (0: only "
    "at each epoch's end and on SIGTERM/SIGUSR2), which a killed run resumes from bit for bit; not part "
    "of the run's identity (no config hash changes)",
}

# Per-run options: a comparison sets them itself for each run, so `compare` has no flag for them.
RUN_OPTIONS = ("seed", "init")
# Flags that only switch on (kept as they were: no --no- form).
_SWITCHES = ("stop_on_divergence",)
_PARSERS = {"str": str, "int": int, "float": float, "str | None": str}


def add_config_options(parser: argparse.ArgumentParser, exclude: Collection[str] = ()) -> None:
    """One flag per field of :class:`TrainConfig` (``--batch-size`` for ``batch_size``), in field order,
    except ``exclude``. Every default is None, so that the recipe decides, except ``--recipe``'s."""
    for f in fields(TrainConfig):
        if f.name in exclude:
            continue
        flag, kind = _flag(f.name), str(f.type)
        help_text = OPTION_HELP[f.name].replace("%", "%%")  # argparse %-formats help
        if f.name == "recipe":
            parser.add_argument(flag, choices=sorted(RECIPES), default="seed", help=help_text)
        elif f.name in _SWITCHES:
            parser.add_argument(flag, action="store_true", default=None, help=help_text)
        elif kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=_PARSERS[kind], choices=CHOICES.get(f.name), default=None,
                                help=help_text)  # fmt: skip


def add_train_options(parser: argparse.ArgumentParser, exclude: Collection[str] = RUN_OPTIONS) -> None:
    """The options shared by `train` and `compare`: one per TrainConfig field (all default to None: the
    recipe decides), except ``exclude`` (by default the per-run ``seed`` and ``init``), and --quiet."""
    add_config_options(parser, exclude=exclude)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def negatable_options() -> tuple[str, ...]:
    """The fields whose flags come in pairs, ``--x`` and ``--no-x``."""
    return tuple(f.name for f in fields(TrainConfig) if str(f.type) == "bool" and f.name not in _SWITCHES)


def config_from_options(options: dict[str, Any] | argparse.Namespace, **extra: Any) -> TrainConfig:
    """The validated config of parsed options (missing or None: the recipe's value, or the default)."""
    values = dict(vars(options) if isinstance(options, argparse.Namespace) else options)
    overrides = {f.name: values.get(f.name) for f in fields(TrainConfig) if f.name != "recipe"}
    overrides.update(extra)
    return resolve_config(values.get("recipe") or "seed", **overrides)


# Every TrainConfig field but the recipe (which config_from_args passes on its own), in field order.
CONFIG_OPTIONS = [f.name for f in fields(TrainConfig) if f.name != "recipe"]


def config_from_args(args: argparse.Namespace, **extra: Any) -> TrainConfig:
    """The validated config of parsed `train`/`compare` options (``--data`` defaults to cifar10)."""
    options = vars(args).copy()
    if options.get("data") is None and extra.get("data") is None:
        options["data"] = "cifar10"
    return config_from_options(options, **extra)
