"""Scores of a classifier's outputs: accuracy, NLL, Brier, calibration and OOD detection.

Each takes tensors (any device) and returns plain Python numbers or lists, so that the suite's
JSON holds nothing but numbers. The expected calibration error is torchmetrics'
``MulticlassCalibrationError(n_bins=15, norm="l1")``; :func:`reliability` bins the same way for
the diagram.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ECE_BINS",
    "auroc",
    "brier",
    "ece",
    "nll",
    "reliability",
    "tnr_at_tpr",
]

ECE_BINS = 15


def nll(logits: Tensor, labels: Tensor) -> float:
    """Mean negative log-likelihood (cross-entropy, natural log) of the true labels."""
    return F.cross_entropy(logits.double(), labels, reduction="mean").item()


def brier(logits: Tensor, labels: Tensor) -> float:
    """Mean over images of the squared distance between the softmax and the one-hot label,
    summed over the classes (Brier 1950's multi-class score, in [0, 2])."""
    probs = logits.double().softmax(1)
    one_hot = F.one_hot(labels, probs.shape[1]).double()
    return (probs - one_hot).pow(2).sum(1).mean().item()


def ece(logits: Tensor, labels: Tensor, n_bins: int = ECE_BINS) -> float:
    """Top-label expected calibration error with ``n_bins`` equal-width confidence bins:
    ``sum_b |acc_b - conf_b| * n_b / n``, by
    ``torchmetrics.classification.MulticlassCalibrationError(n_bins, norm="l1")``."""
    from torchmetrics.classification import MulticlassCalibrationError

    metric = MulticlassCalibrationError(num_classes=logits.shape[1], n_bins=n_bins, norm="l1")
    return metric(logits.double().softmax(1).cpu(), labels.cpu()).item()


def reliability(logits: Tensor, labels: Tensor, n_bins: int = ECE_BINS) -> dict[str, list]:
    """The reliability diagram's bins: for each of ``n_bins`` equal-width confidence bins
    ``[i/n, (i+1)/n)`` (a confidence of exactly 1 in the last), the number of images whose top
    probability falls in it, their mean confidence and their accuracy (None for an empty bin)."""
    probs = logits.double().softmax(1)
    confidence, predicted = probs.max(1)
    hit = (predicted == labels).double()
    index = (confidence * n_bins).floor().long().clamp(0, n_bins - 1).cpu()
    count = torch.bincount(index, minlength=n_bins)
    conf_sum = torch.bincount(index, weights=confidence.cpu(), minlength=n_bins)
    hit_sum = torch.bincount(index, weights=hit.cpu(), minlength=n_bins)
    nonzero = count > 0
    return {
        "count": count.tolist(),
        "confidence": [
            (c / k).item() if z else None for c, k, z in zip(conf_sum, count, nonzero, strict=True)
        ],
        "accuracy": [(a / k).item() if z else None for a, k, z in zip(hit_sum, count, nonzero, strict=True)],
    }


def auroc(positive: Tensor | np.ndarray, negative: Tensor | np.ndarray) -> float:
    """Area under the ROC curve of a score meant to be higher for ``positive`` than for
    ``negative``: the probability that a random positive outscores a random negative, ties
    counting one half (the Mann-Whitney U statistic over ``len(positive) * len(negative)``)."""
    from scipy.stats import rankdata

    pos, neg = _numpy(positive), _numpy(negative)
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"expected positives and negatives, got {pos.size} and {neg.size}")
    ranks = rankdata(np.concatenate([pos, neg]))  # ties get their mean rank
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


def tnr_at_tpr(positive: Tensor | np.ndarray, negative: Tensor | np.ndarray, tpr: float = 0.95) -> float:
    """The share of ``negative`` scores rejected at the highest threshold that keeps at least
    ``tpr`` of the ``positive`` ones: with ``t`` the ``ceil(tpr * n)``-th highest positive score,
    an image is accepted as positive when its score is ``>= t``, so the TNR is the share of
    negatives scoring below ``t``."""
    pos, neg = np.sort(_numpy(positive))[::-1], _numpy(negative)
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"expected positives and negatives, got {pos.size} and {neg.size}")
    threshold = pos[max(math.ceil(tpr * pos.size - 1e-9), 1) - 1]
    return float((neg < threshold).mean())


def _numpy(scores: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(scores, Tensor):
        scores = scores.detach().double().cpu().numpy()
    return np.asarray(scores, dtype=np.float64).ravel()
