"""Run configuration: ``TrainConfig``, the recipes that fill it, and the choices of each option.

``asdict(TrainConfig)`` identifies a run (cutmix.compare hashes it), so its fields, their order and
their defaults are part of what a run folder records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

MIXES = ("none", "cutmix", "mixup", "cutout")
AUGMENTS = ("none", "crop-flip")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "onecycle", "cosine")
PARTNERS = ("permute", "roll", "flip", "stream")
PRECISIONS = ("auto", "fp32", "bf16")


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

    def validate(self) -> TrainConfig:
        for name, value, choices in (
            ("mix", self.mix, MIXES),
            ("augment", self.augment, AUGMENTS),
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("schedule", self.schedule, SCHEDULES),
            ("partner", self.partner, PARTNERS),
            ("precision", self.precision, PRECISIONS),
            ("recipe", self.recipe, (*RECIPES, "custom")),
        ):
            if value not in choices:
                raise ValueError(f"--{name}: expected one of {', '.join(choices)}, got {value!r}")
        positive_ints = (
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("eval_batch_size", self.eval_batch_size),
        )
        for name, value in positive_ints:
            if value < 1:
                raise ValueError(f"--{name.replace('_', '-')}: expected an integer >= 1, got {value}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"--lr: expected a finite number > 0, got {self.lr}")
        if self.val < 0:
            raise ValueError(f"--val: expected an integer >= 0, got {self.val}")
        if not 0 < self.bn_momentum <= 1:
            raise ValueError(f"--bn-momentum: expected a number in (0, 1], got {self.bn_momentum}")
        if not 0 <= self.mix_off_epochs <= self.epochs:
            raise ValueError(f"--mix-off-epochs: expected 0..{self.epochs}, got {self.mix_off_epochs}")
        if self.init is not None and not Path(self.init).is_file():
            raise ValueError(f"--init: expected a file of initial weights, got {self.init!r} (not found)")
        return self


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


def resolve_config(recipe: str = "seed", **overrides: Any) -> TrainConfig:
    """A validated config: ``recipe``'s values, then every override that is not None."""
    if recipe not in RECIPES:
        raise ValueError(f"--recipe: expected one of {', '.join(RECIPES)}, got {recipe!r}")
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"unknown config fields: {', '.join(sorted(unknown))}")
    values = {**RECIPES[recipe], **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(recipe=recipe, **values).validate()


def config_with(config: TrainConfig, **changes: Any) -> TrainConfig:
    """A copy of ``config`` with ``changes``, validated."""
    return replace(config, **changes).validate()
