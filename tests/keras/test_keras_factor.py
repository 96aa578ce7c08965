"""``cutmix.keras.CutMix(factor=...)``: ``keras.layers.CutMix``'s own argument with Keras' meaning (one
concentration α ~ U(min, max) + 1e-6 per call, λ ~ Beta(α, α) per sample), our box and exact
pasted-share weight. Checked from the output pixels against distributions computed here with SciPy.

Torch backend, both implementations; the last test runs this file again on JAX (keras.ops only).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import special

BACKEND = os.environ.get("CUTMIX_TEST_KERAS_BACKEND", "torch")
os.environ["KERAS_BACKEND"] = BACKEND
keras = pytest.importorskip("keras")
if keras.config.backend() != BACKEND:  # pragma: no cover - keras imported earlier with another backend
    pytest.skip(f"Keras was imported with the {keras.config.backend()} backend", allow_module_level=True)

from cutmix.keras import CutMix, CutMixOrMixUp, MixUp  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PATHS = ["torch_op", "keras_ops"] if BACKEND == "torch" else ["keras_ops"]
SIZE = 64  # square images: the pasted side k = floor(64·√(1 − λ)) with box="inside"


def to_np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def on_path(layer, path: str):
    layer._prefer_torch_op = path == "torch_op"
    return layer


def index_images(batch: int, size: int = SIZE) -> np.ndarray:
    """channels_last float32; every pixel of sample b holds b + 1."""
    return np.broadcast_to(
        np.arange(1, batch + 1, dtype="float32")[:, None, None, None], (batch, size, size, 2)
    ).copy()


def one_hot(batch: int, classes: int) -> np.ndarray:
    return np.eye(classes, dtype="float32")[np.arange(batch) % classes]


def pasted(layer, batch: int, labels=None):
    """One call on index images: (share of each sample's pixels from its partner, sample i − 1 with
    partner="roll"; the targets; the mixed images)."""
    images = index_images(batch)
    labels = one_hot(batch, batch) if labels is None else labels
    mixed, targets = layer(images, labels)
    mixed, targets = to_np(mixed), to_np(targets)
    partner = np.roll(images, 1, axis=0)
    assert np.all((mixed == images) | (mixed == partner))
    return (mixed == partner)[..., 0].reshape(batch, -1).mean(1), targets, mixed


def side_cdf(sides: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """P(k <= j) for the pasted side k = floor(SIZE·√(1 − λ)), λ ~ Beta(α, α), averaged over ``alphas``:
    k <= j  <=>  λ > 1 − ((j + 1) / SIZE)²."""
    x = np.clip(1 - ((sides + 1) / SIZE) ** 2, 0, 1)
    return np.mean([1 - special.betainc(a, a, x) for a in alphas], axis=0)


def make(path: str, **kwargs) -> CutMix:
    kwargs.setdefault("partner", "roll")  # never paired with itself: every sample is mixed
    kwargs.setdefault("box", "inside")  # never clipped: the pasted area is k² exactly
    return on_path(CutMix(**kwargs), path)


# ----------------------------------------------------------------------------------------------
# The argument: forms, refusals, configs
# ----------------------------------------------------------------------------------------------


def test_factor_forms_as_keras_reads_them():
    assert CutMix(factor=0.5).factor == (0.0, 0.5)  # a number f: U(0, f)
    assert CutMix(factor=(0.8, 0.2)).factor == (0.2, 0.8)  # a pair in either order, sorted as Keras does
    assert CutMix(factor=[0, 1]).factor == (0.0, 1.0)  # as get_config writes it
    layer = CutMix(factor=1.0, seed=0)
    assert layer.alpha is None and layer.seed == 0
    assert CutMix().alpha == 1.0 and CutMix().factor is None  # without factor: alpha=1.0, as before


@pytest.mark.parametrize(
    "factor", [-0.1, 1.5, (0.2, 1.2), (-0.5, 0.5), (0.1,), (0.1, 0.2, 0.3), "0.5", True, float("nan")]
)
def test_bad_factors_are_refused(factor):
    with pytest.raises(
        ValueError, match=r"^factor: expected a number in \[0, 1\] or a \(min, max\) pair of them"
    ):
        CutMix(factor=factor)


def test_alpha_and_factor_together_are_refused_naming_both():
    with pytest.raises(
        ValueError, match=r"^alpha, factor: expected one of them, got both \(alpha=0.5, factor=1.0\)"
    ):
        CutMix(alpha=0.5, factor=1.0)


def test_configs_round_trip_and_stay_as_they_were_without_factor():
    config = CutMix(factor=(0.1, 0.9), seed=4).get_config()
    assert config["factor"] == [0.1, 0.9] and config["alpha"] is None
    clone = CutMix.from_config(config)
    assert clone.factor == (0.1, 0.9) and clone.alpha is None and clone.seed == 4
    plain = CutMix(alpha=0.7, seed=1).get_config()
    assert "factor" not in plain and plain["alpha"] == 0.7
    assert CutMix.from_config(plain).alpha == 0.7


# ----------------------------------------------------------------------------------------------
# Keras' meaning: the concentration draw
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_fixed_concentration_gives_beta_lambda_per_sample(path):
    """factor=(a, a): α = a + 1e-6 on every call, so the pasted side follows Beta(a, a)'s law exactly;
    by the DKW inequality, sup |F_n − F| < 0.045 fails with probability below 1e-4 for n = 2560."""
    layer = make(path, factor=(0.6, 0.6), seed=1)
    shares = np.concatenate([pasted(layer, 128)[0] for _ in range(20)])
    sides = np.rint(SIZE * np.sqrt(shares))
    assert np.array_equal(sides**2 / SIZE**2, shares)  # square boxes k × k, never clipped
    grid = np.arange(SIZE + 1)
    empirical = (sides[:, None] <= grid[None, :]).mean(0)
    assert np.max(np.abs(empirical - side_cdf(grid, [0.6 + 1e-6]))) < 0.045


@pytest.mark.parametrize("path", PATHS)
def test_range_gives_the_mixture_over_a_uniform_concentration(path):
    """factor=(0.1, 0.9): the pooled pasted side follows the Beta(α, α) law averaged over α ~ U(0.1, 0.9).
    Samples of one call share α, so the bound counts calls (Hoeffding, union over the 65 sides:
    deviation > 0.15 with probability below 2e-4 for 300 calls)."""
    layer = make(path, factor=(0.1, 0.9), seed=2)
    per_call = [np.rint(SIZE * np.sqrt(pasted(layer, 16)[0])) for _ in range(300)]
    grid = np.arange(SIZE + 1)
    empirical = np.mean([(sides[:, None] <= grid[None, :]).mean(0) for sides in per_call], axis=0)
    alphas = np.linspace(0.1, 0.9, 801) + 1e-6
    assert np.max(np.abs(empirical - side_cdf(grid, alphas))) < 0.15


@pytest.mark.parametrize("path", PATHS)
def test_one_concentration_per_call(path):
    """Keras draws α once per call: the spread of λ within a call then changes from call to call
    (Var Beta(α, α) = 1 / (4(2α + 1)): 0.24 at α = 0.02, 0.083 at α = 1). Were α drawn per sample,
    every call would show the mixture's one variance (sd of a call's sample variance about 0.006
    for 256 samples)."""
    layer = make(path, factor=(0.02, 1.0), seed=3)
    variances = [np.var(pasted(layer, 256)[0]) for _ in range(30)]
    assert np.std(variances) > 0.025  # about 0.04 simulated; 0.005 with α per sample
    assert max(variances) > 0.17 and min(variances) < 0.11  # per sample: all within [0.115, 0.145]


@pytest.mark.parametrize("path", PATHS)
def test_factor_zero_is_keras_near_zero_concentration(path):
    """factor=0: α = 1e-6, λ at 0 or 1: each sample gets the whole partner or nothing."""
    shares, _, _ = pasted(make(path, factor=0.0, seed=5), 64)
    assert set(np.unique(shares)) <= {0.0, 1.0} and 0 < shares.mean() < 1


# ----------------------------------------------------------------------------------------------
# What stays ours: the box and the exact weight; the rest of the layer
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_targets_are_the_pasted_share_with_one_hot_and_id_labels(path):
    for box in ("center", "inside"):
        for labels, num_classes in ((one_hot(32, 10), None), (np.arange(32) % 10, 10)):
            layer = make(path, factor=1.0, seed=6, box=box, num_classes=num_classes)
            shares, targets, _ = pasted(layer, 32, labels)
            own = np.eye(10, dtype="float64")[np.arange(32) % 10]
            expected = (1 - shares)[:, None] * own + shares[:, None] * np.roll(own, 1, axis=0)
            np.testing.assert_allclose(targets, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("path", PATHS)
def test_seed_fixes_the_draws_and_calls_differ(path):
    first = [pasted(make(path, factor=(0.2, 1.0), seed=7), 16)[2] for _ in range(2)]
    layer = make(path, factor=(0.2, 1.0), seed=7)
    again = [pasted(layer, 16)[2] for _ in range(2)]
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(again[0], again[1])


@pytest.mark.parametrize("path", PATHS)
def test_switching_after_construction_takes_effect_on_the_next_call(path):
    layer = make(path, alpha=1.0, seed=8)
    shares, _, _ = pasted(layer, 64)
    assert np.mean((shares > 0) & (shares < 1)) > 0.5  # Beta(1, 1): mostly partial boxes
    layer.factor = 0.0  # Keras' draw, near-zero concentration: all or nothing
    assert layer.alpha is None
    assert set(np.unique(pasted(layer, 64)[0])) <= {0.0, 1.0}
    layer.alpha = 1.0  # a number switches back
    assert layer.factor is None
    assert np.mean((pasted(layer, 64)[0] > 0) & (pasted(layer, 64)[0] < 1)) > 0.5
    layer.factor = 0.0
    layer.factor = None  # back to alpha, the constructor's default
    assert layer.alpha == 1.0 and layer.factor is None
    with pytest.raises(ValueError, match=r"^factor: expected a number in \[0, 1\]"):
        layer.factor = 2.0
    with pytest.raises(ValueError, match=r"^alpha, factor: expected one of them, got neither"):
        layer.alpha = None
    assert layer.alpha == 1.0 and layer.factor is None  # refused values leave the settings as they were


@pytest.mark.parametrize("path", PATHS)
def test_factor_with_masks_and_inside_cutmix_or_mixup(path):
    batch = 8
    images = index_images(batch, 16)
    masks = np.broadcast_to(np.arange(batch, dtype="uint8")[:, None, None, None], (batch, 16, 16, 1)).copy()
    layer = on_path(CutMix(factor=1.0, seed=9, partner="roll"), path)
    out = layer({"images": images, "labels": one_hot(batch, batch), "segmentation_masks": masks})
    mixed, targets, mixed_masks = (to_np(out[k]) for k in ("images", "labels", "segmentation_masks"))
    from_partner = mixed[..., 0] == np.roll(images, 1, axis=0)[..., 0]
    np.testing.assert_array_equal(from_partner, mixed_masks[..., 0] == np.roll(masks, 1, axis=0)[..., 0])
    np.testing.assert_allclose(
        targets[np.arange(batch), np.arange(batch)], 1 - from_partner.reshape(batch, -1).mean(1), atol=1e-6
    )
    cutmix = CutMix(factor=(0.5, 1.0), seed=1, partner="roll")
    both = on_path(CutMixOrMixUp(cutmix, MixUp(seed=2), switch_prob=1.0, seed=3), path)  # always CutMix
    mixed, targets = (to_np(x) for x in both(images, one_hot(batch, batch)))
    from_partner = mixed == np.roll(images, 1, axis=0)
    assert np.all((mixed == images) | from_partner)
    share = from_partner[..., 0].reshape(batch, -1).mean(1)
    np.testing.assert_allclose(targets[np.arange(batch), np.arange(batch)], 1 - share, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# JAX
# ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(BACKEND != "torch", reason="started from the torch run")
def test_this_file_on_jax():
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    env = {**os.environ, "CUTMIX_TEST_KERAS_BACKEND": "jax", "KERAS_BACKEND": "jax",
           "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}  # fmt: skip
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "not on_jax"]
    run = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=580)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    summary = run.stdout.strip().splitlines()[-1]
    assert re.search(r"\b\d+ passed\b", summary), summary
    assert not re.search(r"skipped|failed|error", summary), summary  # every test ran, on JAX
