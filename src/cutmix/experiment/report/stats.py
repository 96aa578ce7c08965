"""Statistics over seeds: mean, sample standard deviation and Student-t intervals.

A comparison has few seeds (typically 3), so every spread is the sample standard deviation
(ddof=1) and every interval uses the t distribution with n - 1 degrees of freedom; with a single
value there is no spread and no interval (reported as "n/a"), never a made-up zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from scipy import stats as _scipy_stats


def _values(values: Sequence[float], name: str) -> list[float]:
    out = [float(v) for v in values]
    if not out:
        raise ValueError(f"{name}: expected at least one value, got none")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name}: expected finite values, got {out}")
    return out


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean of a non-empty sequence of finite floats."""
    data = _values(values, "values")
    return math.fsum(data) / len(data)


def sample_std(values: Sequence[float]) -> float | None:
    """The sample standard deviation (ddof=1); None for a single value."""
    data = _values(values, "values")
    if len(data) < 2:
        return None
    m = mean(data)
    return math.sqrt(math.fsum((v - m) ** 2 for v in data) / (len(data) - 1))


def t_quantile(n: int, confidence: float = 0.95) -> float | None:
    """The two-sided Student-t quantile for ``n`` values (n - 1 degrees of freedom); None for n < 2.

    For confidence 0.95 this is ``scipy.stats.t.ppf(0.975, n - 1)``, e.g. 4.302653 for n = 3.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a number in (0, 1), got {confidence}")
    if n < 2:
        return None
    return float(_scipy_stats.t.ppf(0.5 + confidence / 2, n - 1))


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values with its t-interval; ``std``, ``t``, ``half_width``, ``low`` and
    ``high`` are None when n < 2."""

    n: int
    mean: float
    std: float | None
    t: float | None
    half_width: float | None
    low: float | None
    high: float | None
    confidence: float = 0.95

    @property
    def verdict(self) -> str:
        """One of "n/a" (n < 2), "not significant" (the interval holds 0), "interval excludes 0"."""
        if self.low is None or self.high is None:
            return "n/a"
        if self.low <= 0.0 <= self.high:
            return "not significant"
        return "interval excludes 0"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """The mean of ``values`` and its two-sided t-interval: mean ± t(n - 1)·sd/√n."""
    data = _values(values, "values")
    n = len(data)
    m = mean(data)
    sd = sample_std(data)
    t = t_quantile(n, confidence)
    if sd is None or t is None:
        return Interval(n, m, None, None, None, None, None, confidence)
    half = t * sd / math.sqrt(n)
    return Interval(n, m, sd, t, half, m - half, m + half, confidence)


def paired_differences(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """``a[i] - b[i]`` for two equally long sequences (values paired by seed)."""
    if len(a) != len(b):
        raise ValueError(f"expected paired sequences of equal length, got {len(a)} and {len(b)}")
    return [float(x) - float(y) for x, y in zip(a, b, strict=True)]


def paired_t_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Interval:
    """The t-interval of the paired differences ``a - b`` (e.g. arm minus baseline, per seed)."""
    return t_interval(paired_differences(a, b), confidence)


def describe(values: Sequence[float]) -> dict[str, Any]:
    """n, mean, sample std (None for n = 1), min, max and the values themselves."""
    data = _values(values, "values")
    return {
        "n": len(data),
        "mean": mean(data),
        "std": sample_std(data),
        "min": min(data),
        "max": max(data),
        "values": data,
    }
