"""Statistics over seeds, checked against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cutmix.experiment.report.stats import (
    describe,
    mean,
    paired_differences,
    paired_t_interval,
    sample_std,
    t_interval,
    t_quantile,
)


def test_differences_one_two_three_by_hand():
    # mean 2, sd sqrt(((1-2)^2 + 0 + (3-2)^2) / 2) = 1, half-width t(0.975, 2) * 1 / sqrt(3).
    interval = t_interval([1.0, 2.0, 3.0])
    assert interval.n == 3
    assert interval.mean == pytest.approx(2.0)
    assert interval.std == pytest.approx(1.0)
    assert interval.t == pytest.approx(4.302653, abs=1e-6)
    assert interval.half_width == pytest.approx(4.302653 * 0.5773503, abs=1e-5)
    assert interval.half_width == pytest.approx(2.4842, abs=1e-4)
    assert (interval.low, interval.high) == (
        pytest.approx(2 - 2.484138, abs=1e-5),
        pytest.approx(4.484138, abs=1e-5),
    )
    assert interval.verdict == "not significant"  # the interval holds 0


def test_interval_that_excludes_zero():
    # mean 1, sd 0.1 (deviations -0.1, 0, 0.1), half-width 4.302653 * 0.1 / sqrt(3) = 0.248414.
    interval = t_interval([0.9, 1.0, 1.1])
    assert interval.std == pytest.approx(0.1)
    assert interval.half_width == pytest.approx(0.248414, abs=1e-6)
    assert interval.low > 0 and interval.verdict == "interval excludes 0"
    negative = t_interval([-0.9, -1.0, -1.1])
    assert negative.high < 0 and negative.verdict == "interval excludes 0"


def test_t_quantiles_from_tables():
    assert t_quantile(2) == pytest.approx(12.706205, abs=1e-6)
    assert t_quantile(3) == pytest.approx(4.302653, abs=1e-6)
    assert t_quantile(5) == pytest.approx(2.776445, abs=1e-6)
    assert t_quantile(11) == pytest.approx(2.228139, abs=1e-6)
    assert t_quantile(3, confidence=0.90) == pytest.approx(2.919986, abs=1e-6)
    assert t_quantile(1) is None
    with pytest.raises(ValueError, match=r"confidence: expected a number in \(0, 1\), got 1.5"):
        t_quantile(3, confidence=1.5)


def test_paired_difference_by_hand():
    arm, none = [0.71, 0.73, 0.70], [0.66, 0.69, 0.70]
    assert paired_differences(arm, none) == pytest.approx([0.05, 0.04, 0.0])
    interval = paired_t_interval(arm, none)
    # mean 0.03; deviations 0.02, 0.01, -0.03: sd = sqrt(0.0014 / 2) = 0.0264575.
    assert interval.mean == pytest.approx(0.03)
    assert interval.std == pytest.approx(0.0264575, abs=1e-7)
    assert interval.half_width == pytest.approx(4.302653 * 0.0264575 / math.sqrt(3), abs=1e-6)
    assert interval.verdict == "not significant"
    with pytest.raises(ValueError, match="expected paired sequences of equal length, got 3 and 2"):
        paired_differences(arm, none[:2])


def test_a_single_seed_has_no_spread_and_no_interval():
    interval = t_interval([0.5])
    assert (interval.n, interval.mean) == (1, 0.5)
    assert interval.std is interval.t is interval.half_width is interval.low is interval.high is None
    assert interval.verdict == "n/a"
    assert interval.to_dict()["verdict"] == "n/a"
    assert sample_std([0.5]) is None
    assert describe([0.5]) == {"n": 1, "mean": 0.5, "std": None, "min": 0.5, "max": 0.5, "values": [0.5]}


def test_sample_std_uses_ddof_one():
    # sum of squared deviations from the mean 5 is 32; 32 / 7 (not / 8).
    assert sample_std([2, 4, 4, 4, 5, 5, 7, 9]) == pytest.approx(math.sqrt(32 / 7))
    assert mean([2, 4, 4, 4, 5, 5, 7, 9]) == 5.0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="values: expected at least one value, got none"):
        mean([])
    with pytest.raises(ValueError, match="values: expected finite values"):
        t_interval([0.1, float("nan")])


@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=2, max_size=12))
def test_agrees_with_numpy(values):
    assert mean(values) == pytest.approx(float(np.mean(values)), abs=1e-9)
    assert sample_std(values) == pytest.approx(float(np.std(values, ddof=1)), abs=1e-7)
