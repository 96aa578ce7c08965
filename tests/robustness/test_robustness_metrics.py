"""The suite's scores, each against an independent computation: torchmetrics, a hand-worked toy,
a pairwise count, numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from cutmix.robustness import metrics


def _random_logits(n: int = 400, classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=generator, dtype=torch.float64) * 3
    labels = torch.randint(0, classes, (n,), generator=generator)
    # A model better than chance: half of the images get their label's logit raised.
    logits[torch.arange(n // 2), labels[: n // 2]] += 4
    return logits, labels


def test_ece_equals_torchmetrics_on_random_predictions():
    for seed in range(3):
        logits, labels = _random_logits(seed=seed)
        reference = MulticlassCalibrationError(num_classes=10, n_bins=15, norm="l1")(
            logits.softmax(1), labels
        )
        assert metrics.ece(logits, labels) == pytest.approx(reference.item(), abs=1e-7)


def test_ece_by_hand_on_a_toy():
    # Four images, two classes. Top probabilities 0.9 (right), 0.9 (wrong), 0.58 (right), 0.55 (right).
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.42, 0.58], [0.55, 0.45]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 0])
    logits = probs.log()  # softmax(log p) = p
    # Bins of width 1/15: 0.9 in [13/15, 14/15) -> acc 1/2, conf 0.9; 0.58 in [8/15, 9/15) with 0.55:
    # acc 1, conf 0.565. ECE = 2/4 * |0.5 - 0.9| + 2/4 * |1 - 0.565| = 0.2 + 0.2175 (torchmetrics
    # keeps its sums in float32).
    assert metrics.ece(logits, labels) == pytest.approx(0.4175, abs=1e-6)
    bins = metrics.reliability(logits, labels)
    assert bins["count"][13] == 2 and bins["count"][8] == 2 and sum(bins["count"]) == 4
    assert bins["accuracy"][13] == pytest.approx(0.5) and bins["confidence"][8] == pytest.approx(0.565)
    assert bins["accuracy"][0] is None


def test_reliability_bins_give_the_same_ece():
    logits, labels = _random_logits(seed=5)
    bins = metrics.reliability(logits, labels)
    n = sum(bins["count"])
    from_bins = sum(
        k / n * abs(a - c)
        for k, a, c in zip(bins["count"], bins["accuracy"], bins["confidence"], strict=True)
        if k
    )
    assert from_bins == pytest.approx(metrics.ece(logits, labels), abs=1e-6)


def test_nll_and_brier_against_numpy():
    logits, labels = _random_logits(seed=1)
    z = logits.numpy()
    log_probs = z - z.max(1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
    y = labels.numpy()
    assert metrics.nll(logits, labels) == pytest.approx(-log_probs[np.arange(len(y)), y].mean(), rel=1e-12)
    one_hot = np.eye(10)[y]
    assert metrics.brier(logits, labels) == pytest.approx(((np.exp(log_probs) - one_hot) ** 2).sum(1).mean())


def _pairwise_auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return (greater + 0.5 * ties) / (pos.size * neg.size)


def test_auroc_against_a_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        pos = rng.integers(0, 20, 150) / 20.0  # coarse scores: many ties
        neg = rng.integers(0, 14, 130) / 20.0
        assert metrics.auroc(pos, neg) == pytest.approx(_pairwise_auroc(pos, neg), abs=1e-12)
    assert metrics.auroc(np.array([1.0, 2.0]), np.array([0.0])) == 1.0
    assert metrics.auroc(np.array([0.0]), np.array([1.0, 2.0])) == 0.0
    assert metrics.auroc(torch.ones(3), torch.ones(4)) == 0.5


def test_auroc_against_sklearn_where_installed():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")  # not a dependency: the pairwise test above is
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(1, 1, 300), rng.normal(0, 1, 200)
    truth = np.r_[np.ones(300), np.zeros(200)]
    assert metrics.auroc(pos, neg) == pytest.approx(sklearn_metrics.roc_auc_score(truth, np.r_[pos, neg]))


def test_tnr_at_95_tpr_by_hand():
    pos = np.arange(1, 21, dtype=float)  # 20 positives 1..20: 95% of them (19) score >= 2
    neg = np.array([0.5, 1.0, 1.5, 1.99, 2.0, 3.0, 30.0])  # below 2: four of seven
    assert metrics.tnr_at_tpr(pos, neg) == pytest.approx(4 / 7)
    # With 10 positives, ceil(9.5) = 10: the threshold is the lowest positive.
    assert metrics.tnr_at_tpr(np.arange(10.0), np.array([-1.0, 0.0, 5.0])) == pytest.approx(1 / 3)
    # Brute force over thresholds: the highest one keeping >= 95% of positives.
    rng = np.random.default_rng(2)
    pos, neg = rng.normal(1, 1, 97), rng.normal(0, 1, 50)
    best = max(t for t in pos if (pos >= t).mean() >= 0.95)
    assert metrics.tnr_at_tpr(pos, neg) == pytest.approx((neg < best).mean())
    assert math.isclose(metrics.tnr_at_tpr(pos, neg, tpr=1.0), (neg < pos.min()).mean())
