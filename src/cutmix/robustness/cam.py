"""Class activation maps (Zhou et al., CVPR 2016) of the global-average-pooled ResNet.

For the ResNet of :mod:`cutmix.models` the logit of class ``c`` is ``fc`` applied to the spatial
mean of the last stage's feature maps ``f_k``, so ``sum_k w_ck f_k(x, y)`` (upsampled to the
image) shows where class ``c`` was seen: the CutMix paper's localization picture. CIFAR-10 has
no boxes, so this is a picture, not a score.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cutmix.robustness.attacks import PixelModel

__all__ = ["cam_images", "class_activation_maps"]

CAM_PER_CLASS = 1  # the first test image of each class (at most CAM_MAX in all)
CAM_MAX = 16


def cam_images(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The fixed images a CAM picture shows: the first ``CAM_PER_CLASS`` of each class in
    ``labels`` order, at most ``CAM_MAX`` -- the same images for every run on the same data."""
    picks = [np.flatnonzero(labels == c)[:CAM_PER_CLASS] for c in range(num_classes)]
    return np.sort(np.concatenate(picks))[:CAM_MAX] if picks else np.zeros(0, np.int64)


@torch.no_grad()
def class_activation_maps(model: PixelModel, x: Tensor) -> tuple[Tensor, Tensor]:
    """The CAM of each image's predicted class, ``(B, H, W)`` scaled to [0, 1] per image and
    bilinearly upsampled to the image size, and the predicted classes ``(B,)``.

    ``model`` wraps a :class:`cutmix.models.ResNetV1` (its ``stem``, ``stages`` and ``fc``)."""
    net = model.model
    inputs = (x - model.mean.to(x)) / model.std.to(x) if model.normalize else x
    features = net.stages(F.relu(net.stem(inputs)))  # (B, K, h, w), before the average pool
    logits = net.fc(features.mean(dim=(2, 3)))
    predicted = logits.argmax(1)
    weights = net.fc.weight[predicted]  # (B, K)
    maps = torch.einsum("bk,bkhw->bhw", weights, features)
    maps = F.interpolate(maps[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    low = maps.amin(dim=(1, 2), keepdim=True)
    span = (maps.amax(dim=(1, 2), keepdim=True) - low).clamp_min(1e-12)
    return (maps - low) / span, predicted
