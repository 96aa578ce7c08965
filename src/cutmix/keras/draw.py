"""The keras.ops draws: the parameters of :mod:`cutmix.ops.params`, drawn in-graph from a layer's
``keras.random.SeedGenerator`` (so under ``jax.jit`` and ``tf.data`` every call draws afresh), as dicts
of tensors: ``rows`` and ``cols`` (the box's flags), ``weight``, ``applied``, ``box`` (y0, y1, x0, x1),
``partner``, and ``lam`` and ``anchor`` for replays and tests. The rules are those of
:func:`cutmix.ops.sample_cutmix_params` and :func:`cutmix.ops.sample_cutout_params`; only the random
streams differ (a ``torch.Generator`` there, Keras seeds here). The box arithmetic is float32 (JAX has
no float64 by default)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from cutmix.ops import rules

_TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32


def batch_and_size(images: Any, data_format: str) -> tuple[Any, Any, Any]:
    """(B, H, W): Python ints where the shape is static, scalar tensors where it is not (tf.data)."""
    shape = ops.shape(images)
    if data_format == "channels_first":
        return shape[0], shape[2], shape[3]
    return shape[0], shape[1], shape[2]


def uniform_below(uniform: Any, upper: Any) -> Any:
    """int32 uniform over [0, upper) from float32 uniforms in [0, 1) (``upper`` ≥ 1, per sample or not);
    the minimum guards the rounding of ``uniform·upper`` up to ``upper``."""
    upper = ops.cast(upper, "float32")
    return ops.cast(ops.minimum(ops.floor(uniform * upper), upper - 1.0), "int32")


def partner_index(batch: Any, partner: str | None, seed: keras.random.SeedGenerator) -> Any:
    index = ops.arange(batch, dtype="int32")
    if partner is None:  # an explicit second batch: sample i meets its sample i
        return index
    if partner == "permute":
        return keras.random.shuffle(index, seed=seed)
    if partner == "roll":  # as torchvision's v2.CutMix: sample i meets sample i - 1
        return ops.roll(index, 1)
    return ops.flip(index, axis=0)  # "flip", as timm: sample i meets sample B - 1 - i


def beta_draw(alpha: float, batch: Any, coin: Any, seed: keras.random.SeedGenerator) -> Any:
    """Beta(α, α) as float32 from two Gamma(α, 1) draws. For tiny α (``factor`` near 0) both gammas can
    underflow: to 0 (JAX), or to the smallest normal float32 (torch clamps them there, which would
    give λ = 0.5). Beta(α, α) then sits at 0 or 1 with equal odds, which ``coin`` (uniforms) decides."""
    gammas = keras.random.gamma((2, batch), alpha, dtype="float32", seed=seed)
    total = gammas[0] + gammas[1]
    drawn = ops.maximum(gammas[0], gammas[1]) > _TINY
    safe = ops.where(drawn, total, ops.ones_like(total))
    return ops.where(drawn, gammas[0] / safe, ops.cast(coin < 0.5, "float32"))


def draw_pairing(batch: Any, p: float, partner: str | None, seed: keras.random.SeedGenerator):
    """Uniforms (columns: p-draw, row, column, coin), partners and the p-draw, self-pairs removed."""
    uniforms = keras.random.uniform((batch, 4), dtype="float32", seed=seed)
    partners = partner_index(batch, partner, seed)
    applied = uniforms[:, 0] < p
    if partner is not None:  # paired with itself: nothing to mix
        applied = ops.logical_and(applied, ops.not_equal(partners, ops.arange(batch, dtype="int32")))
    return uniforms, partners, applied


def draw_cutmix(
    batch: Any, height: Any, width: Any, alpha: float, p: float, partner: str | None, box: str,
    seed: keras.random.SeedGenerator,
) -> dict[str, Any]:  # fmt: skip
    """Per-sample CutMix parameters, as :func:`cutmix.ops.sample_cutmix_params` defines them:
    ``cut = floor(size·√(1−λ))`` per axis, an integer centre uniform over the image with edges
    ``centre ∓ cut // 2`` clipped to it (``box="center"``) or the whole cut inside it
    (``"inside"``); ``weight = 1 − area / (H·W)`` where applied, else exactly 1."""
    uniforms, partners, applied = draw_pairing(batch, p, partner, seed)
    lam = beta_draw(alpha, batch, uniforms[:, 3], seed)
    ratio = ops.sqrt(1.0 - lam)
    cut_h = ops.cast(ops.floor(ops.cast(height, "float32") * ratio), "int32")
    cut_w = ops.cast(ops.floor(ops.cast(width, "float32") * ratio), "int32")
    cy = uniform_below(uniforms[:, 1], rules.anchor_range(cut_h, height, box))
    cx = uniform_below(uniforms[:, 2], rules.anchor_range(cut_w, width, box))
    y0, y1 = rules.box_edges(cy, cut_h, height, box, ops.clip)
    x0, x1 = rules.box_edges(cx, cut_w, width, box, ops.clip)
    params = params_from_box(y0, y1, x0, x1, applied, height, width)
    # λ, partner and the drawn position (centre, or top-left corner for "inside"), for replays and tests.
    params.update(lam=lam, partner=partners, anchor=ops.stack([cy, cx], axis=1))
    return params


def draw_cutout(
    batch: Any, height: Any, width: Any, size: tuple[int, int], p: float, seed: keras.random.SeedGenerator
) -> dict[str, Any]:
    """A ``size`` rectangle with an integer centre uniform over the image, clipped to it, as
    :func:`cutmix.ops.sample_cutout_params`."""
    uniforms = keras.random.uniform((batch, 3), dtype="float32", seed=seed)
    cy, cx = uniform_below(uniforms[:, 1], height), uniform_below(uniforms[:, 2], width)
    y0, y1 = rules.cutout_edges(cy, size[0], height, ops.clip)
    x0, x1 = rules.cutout_edges(cx, size[1], width, ops.clip)
    params = params_from_box(y0, y1, x0, x1, uniforms[:, 0] < p, height, width)
    params.update(anchor=ops.stack([cy, cx], axis=1))
    return params


def params_from_box(
    y0: Any, y1: Any, x0: Any, x1: Any, applied: Any, height: Any, width: Any
) -> dict[str, Any]:
    """Row and column flags of the box (all False where not applied: an empty box mixes nothing,
    where the Keras example pastes a 1-pixel patch) and the weight of the sample's own pixels."""
    area = (y1 - y0) * (x1 - x0)
    applied = ops.logical_and(applied, area > 0)
    rows = ops.arange(height, dtype="int32")[None, :]
    cols = ops.arange(width, dtype="int32")[None, :]
    row_flags = ops.logical_and(ops.logical_and(rows >= y0[:, None], rows < y1[:, None]), applied[:, None])
    col_flags = ops.logical_and(cols >= x0[:, None], cols < x1[:, None])
    pixels = ops.cast(height, "float32") * ops.cast(width, "float32")
    share = ops.cast(area, "float32") / pixels  # area is an integer below 2**24: exact in float32
    weight = ops.where(applied, 1.0 - share, ops.ones_like(share))
    empty = ops.zeros_like(y0)
    box = ops.stack([ops.where(applied, v, empty) for v in (y0, y1, x0, x1)], axis=1)
    return {"rows": row_flags, "cols": col_flags, "weight": weight, "applied": applied, "box": box}


def draw_mixup(
    batch: Any, alpha: float, p: float, partner: str | None, seed: keras.random.SeedGenerator
) -> dict[str, Any]:
    """Per-sample MixUp parameters, as :func:`cutmix.ops.sample_mixup_params`: ``weight = λ`` where
    applied, else exactly 1."""
    uniforms, partners, applied = draw_pairing(batch, p, partner, seed)
    lam = beta_draw(alpha, batch, uniforms[:, 3], seed)
    return {"partner": partners, "weight": ops.where(applied, lam, ops.ones_like(lam)), "lam": lam}
