"""The parts a run is built from: its data (each process's loaders, the image-size and batch-size
checks), the mixing op, the optimizer and its lr schedule, the autocast dtype, the evaluation pass
and the divergence rule. :func:`cutmix.training.loop.train` puts them together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cutmix.data import Dataset, DeviceLoader, stratified_split
from cutmix.errors import DataError, UsageError
from cutmix.models import param_groups
from cutmix.ops import CutMix, Cutout, MixUp
from cutmix.training.config import TrainConfig
from cutmix.training.distributed import Distributed, load_data_main_first, sum_over_ranks

# CIFAR-10 training-set channel statistics, in [0, 1] units (used when normalize=True).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass
class RunData:
    """The loaders of a run (under DDP, this rank's shard of each) and the data set's class names."""

    train: DeviceLoader
    test: DeviceLoader
    val: DeviceLoader | None
    classes: list[str]


def build_data(config: TrainConfig, dist_info: Distributed, device: torch.device, progress: bool) -> RunData:
    """Step 1: the whole data set on the device, each rank's shard of it; the validation split held
    out of the training images by count (the same split on every rank)."""
    dataset = load_data_main_first(config.data, dist_info, progress=progress)
    check_image_size(dataset, config.data)
    train_images, train_labels = dataset.train_images, dataset.train_labels
    val_loader = None
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if config.normalize else (None, None)
    eval_kwargs = dict(
        batch_size=config.eval_batch_size,
        device=device,
        shuffle=False,
        drop_last=False,
        mean=mean,
        std=std,
        channels_last=config.channels_last,
    )
    shard = slice(dist_info.rank, None, dist_info.world_size)
    if config.val:
        if config.val >= len(train_labels):
            raise UsageError(
                f"--val: expected fewer than the {len(train_labels)} training images, got {config.val}"
            )
        train_idx, val_idx = stratified_split(train_labels, config.val, seed=config.seed)
        val_idx = np.sort(val_idx)[shard]
        val_loader = DeviceLoader(train_images[val_idx], train_labels[val_idx], **eval_kwargs)
        train_images, train_labels = train_images[np.sort(train_idx)], train_labels[np.sort(train_idx)]
    test_loader = DeviceLoader(dataset.test_images[shard], dataset.test_labels[shard], **eval_kwargs)
    check_batch_size(config, dist_info, len(train_labels))
    train_loader = DeviceLoader(
        train_images,
        train_labels,
        config.batch_size // dist_info.world_size,
        device=device,
        augment=config.augment,
        mean=mean,
        std=std,
        channels_last=config.channels_last,
        seed=config.seed,
        rank=dist_info.rank,
        world_size=dist_info.world_size,
        paired=config.mix in ("cutmix", "mixup") and config.partner == "stream",
    )
    return RunData(train_loader, test_loader, val_loader, list(dataset.classes))


def check_batch_size(config: TrainConfig, dist_info: Distributed, num_train: int) -> None:
    """The global batch splits evenly over the processes, and fits the training images."""
    if config.batch_size % dist_info.world_size:
        raise UsageError(
            f"--batch-size: expected a multiple of the {dist_info.world_size} processes, "
            f"got {config.batch_size}"
        )
    if config.batch_size > num_train:
        # Every batch is full (drop_last): a batch larger than the data set would train on nothing.
        raise UsageError(
            f"--batch-size: expected at most the {num_train} training images, got {config.batch_size}"
        )


def check_image_size(dataset: Dataset, spec: str) -> None:
    """The ResNet is the Keras example's CIFAR model: 32x32 inputs (its pooling expects 8x8 maps)."""
    if tuple(dataset.image_shape[:2]) != (32, 32):
        height, width = dataset.image_shape[:2]
        raise DataError(f"--data: expected 32x32 images for the CIFAR ResNet, got {height}x{width}: {spec}")


def build_mixer(config: TrainConfig, num_classes: int, generator: torch.Generator):
    """The mixing op of ``config`` (None for ``mix="none"``), drawing from ``generator``."""
    common = dict(num_classes=num_classes, label_smoothing=config.label_smoothing, generator=generator)
    partner = "permute" if config.partner == "stream" else config.partner
    if config.mix == "cutmix":
        return CutMix(alpha=config.alpha, p=config.mix_p, partner=partner, **common)
    if config.mix == "mixup":
        return MixUp(alpha=config.alpha, p=config.mix_p, partner=partner, **common)
    if config.mix == "cutout":
        return Cutout(size=config.cutout_size, p=config.mix_p, **common)
    return None


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        groups = param_groups(model, config.weight_decay) if config.weight_decay else model.parameters()
        return torch.optim.Adam(groups, lr=config.lr, betas=(0.9, 0.999), eps=config.adam_eps)
    groups = param_groups(model, config.weight_decay)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)


def lr_factor(step: int, total_steps: int, schedule: str, warmup: float) -> float:
    """The multiplier of the peak lr at ``step`` (0-based) of ``total_steps``."""
    if schedule == "constant":
        return 1.0
    progress = min(step / max(total_steps, 1), 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    # onecycle: linear from 0.1 up to 1 over the warm-up, then linear down to 0.
    if progress < warmup:
        return 0.1 + 0.9 * progress / warmup
    return max(0.0, (1.0 - progress) / (1.0 - warmup))


def precision_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on GPU by default; on the CPU only when asked (measured slower here)."""
    if config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DeviceLoader,
    num_classes: int,
    autocast: torch.dtype | None,
    tta_flip: bool = False,
    dist_info: Distributed | None = None,
) -> dict[str, Any]:
    """Loss, accuracy and per-class accuracy over ``loader`` (one pass, no augmentation).

    With ``tta_flip`` the predictions average the softmax of each image and its mirror image.
    Under DDP each rank evaluates its own shard and the counts are summed.
    """
    was_training = model.training
    model.eval()
    device = loader.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros(num_classes, device=device, dtype=torch.float64)
    total = torch.zeros(num_classes, device=device, dtype=torch.float64)
    for images, labels in loader:
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            logits = model(images).float()
            if tta_flip:
                probs = 0.5 * (logits.softmax(1) + model(images.flip(3)).float().softmax(1))
                logits = probs.clamp_min(1e-12).log()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
        hits = (logits.argmax(1) == labels).double()
        correct.index_add_(0, labels, hits)
        total.index_add_(0, labels, torch.ones_like(hits))
    if dist_info is not None:
        for tensor in (loss_sum, correct, total):
            sum_over_ranks(tensor, dist_info)
    model.train(was_training)
    count = total.sum().clamp_min(1)
    per_class = (correct / total.clamp_min(1)).tolist()
    return {"loss": (loss_sum / count).item(), "acc": (correct.sum() / count).item(), "per_class": per_class}


def divergence(history: list[dict[str, Any]], num_classes: int) -> str | None:
    """Why the run looks diverged, or None: a non-finite loss, or test accuracy fallen back to
    chance after having been well above it (the seed's no-augmentation arm fell from 63% to 10%)."""
    last = history[-1]
    if not math.isfinite(last["train_loss"]) or not math.isfinite(last["test_loss"]):
        return "non-finite loss"
    chance = 1.0 / num_classes
    best = max(h["test_acc"] for h in history)
    if best >= max(2 * chance, chance + 0.2) and last["test_acc"] <= 1.5 * chance:
        return f"test accuracy collapsed to {last['test_acc']:.2%} (chance {chance:.0%}) from {best:.2%}"
    return None
