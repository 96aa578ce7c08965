"""The model on pixels in [0, 1], occlusion, and the FGSM attack.

The trainer feeds its ResNet ``x / 255`` (pixels in [0, 1]), normalised by the CIFAR-10 channel
statistics when the run's config says ``normalize`` (:class:`cutmix.data.DeviceLoader` with
``mean``/``std``). :class:`PixelModel` puts that normalisation inside the model, so that every
perturbation here -- a hole filled with a colour, a gradient step of size eps/255 -- happens in
pixel space, the same for a run that normalises and one that does not.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The trainer's normalisation constants, re-exported from the one place that defines them.
from cutmix.training.components import CIFAR10_MEAN, CIFAR10_STD

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "FGSM_EPS",
    "OCCLUSION_SIZES",
    "PixelModel",
    "fgsm_direction",
    "occlude",
    "occlusion_mask",
    "pixels",
]

OCCLUSION_SIZES = tuple(range(0, 33, 4))  # the paper's hole sides s = 0, 4, ..., 32
FGSM_EPS = (0, 1, 2, 4, 8)  # in units of 1/255


def pixels(images: np.ndarray, device: torch.device | str) -> Tensor:
    """uint8 images ``(B, H, W, 3)`` as float ``(B, 3, H, W)`` in [0, 1] on ``device`` (``x / 255``,
    as the trainer's loader scales them)."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 255.0


class PixelModel(nn.Module):
    """``model`` as a function of pixels ``(B, 3, H, W)`` in [0, 1]: ``model((x - mean) / std)`` when
    the run normalised its inputs, else ``model(x)``, given channels-last. Returns the logits."""

    def __init__(self, model: nn.Module, normalize: bool) -> None:
        super().__init__()
        self.model = model
        self.normalize = bool(normalize)
        self.register_buffer("mean", torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CIFAR10_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        # Channels-last pixels, as pixels() and the trainer's loader (channels_last, the default) give
        # them: some perturbations return NCHW, which the CPU conv kernels ran slower (one busy-core
        # timing of a 500-image batch: 3.4 s against 2.3 s).
        x = x.contiguous(memory_format=torch.channels_last)
        if self.normalize:
            x = (x - self.mean.to(x)) / self.std.to(x)
        return self.model(x)


def occlusion_mask(size: int, s: int, protocol: str, device: torch.device | str = "cpu") -> Tensor:
    """A ``(size, size)`` bool mask, True where the image is filled: ``"center"`` -- a centred
    square hole of side ``s``; ``"boundary"`` -- everything outside the centred square of side ``s``
    (the CutMix paper's two occlusion protocols)."""
    if protocol not in ("center", "boundary"):
        raise ValueError(f"expected protocol 'center' or 'boundary', got {protocol!r}")
    if not 0 <= s <= size:
        raise ValueError(f"expected a side s in [0, {size}], got {s}")
    lo = (size - s) // 2
    inside = torch.zeros(size, size, dtype=torch.bool, device=device)
    inside[lo : lo + s, lo : lo + s] = True
    return inside if protocol == "center" else ~inside


def occlude(x: Tensor, mask: Tensor, fill: Tensor) -> Tensor:
    """``x`` (``(B, 3, H, W)``, not modified) with the pixels where ``mask`` is True set to ``fill``
    (one value per channel, shape ``(3,)``)."""
    return torch.where(mask, fill.to(x).view(1, -1, 1, 1), x)


def fgsm_direction(model: nn.Module, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """The logits of ``model`` at ``x`` and the sign of the gradient of the cross-entropy of the true
    ``labels`` with respect to the pixels ``x`` (one FGSM step, Goodfellow et al. 2015, is
    ``x + eps * sign``). Only the input's gradient is computed; the model is not changed."""
    pixels = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(pixels)
        loss = F.cross_entropy(logits.float(), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, pixels)
    return logits.detach(), grad.sign()
