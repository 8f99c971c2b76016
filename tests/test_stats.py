"""Summary statistics and paired comparisons (irem/evaluation/stats.py) against scipy on fixed numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from irem.evaluation import stats

X = np.array([31.2, 29.8, 33.1, 30.4, 32.0, 28.9])
B = np.array([30.0, 30.1, 31.5, 29.0, 31.1, 28.95])


def test_summary_matches_scipy_t_interval() -> None:
    s = stats.summarise(X)
    low, high = sps.t.interval(0.95, len(X) - 1, loc=X.mean(), scale=sps.sem(X))
    assert s.n == 6
    assert s.mean == pytest.approx(X.mean())
    assert s.std == pytest.approx(np.std(X, ddof=1))
    assert (s.ci_low, s.ci_high) == pytest.approx((low, high))
    assert s.ci_low < s.mean < s.ci_high


def test_summary_of_one_value_and_of_nan() -> None:
    s = stats.summarise([2.0, math.nan])
    assert s.n == 1 and s.mean == 2.0
    assert math.isnan(s.std) and math.isnan(s.ci_low) and math.isnan(s.ci_high)
    assert stats.summarise([]).n == 0


def test_paired_matches_ttest_rel_and_wilcoxon() -> None:
    subjects = [f"s{i}" for i in range(len(X))]
    a = pd.Series(X, index=subjects)
    b = pd.Series(B, index=subjects).iloc[::-1]  # the same units in another order
    p = stats.paired(a, b, tolerance=0.01)
    d = X - B
    ref = sps.ttest_rel(X, B).confidence_interval(0.95)
    assert p.n == 6
    assert p.diff == pytest.approx(d.mean())
    assert (p.ci_low, p.ci_high) == pytest.approx((ref.low, ref.high))
    assert p.p_wilcoxon == pytest.approx(sps.wilcoxon(X, B).pvalue)
    # differences 1.2, -0.3, 1.6, 1.4, 0.9, -0.05: -0.05 dB is a loss at 0.01 dB, a tie at 0.06.
    assert (p.wins, p.ties, p.losses) == (4, 0, 2)
    assert stats.paired(a, b, tolerance=0.06).ties == 1


def test_paired_matches_units_by_index() -> None:
    a = pd.Series([1.0, 2.0, 3.0], index=["x", "y", "z"])
    b = pd.Series([0.5, 1.0, 9.0], index=["z", "y", "w"])
    p = stats.paired(a, b, tolerance=1e-4)
    assert p.n == 2  # y and z
    assert p.diff == pytest.approx(((2 - 1) + (3 - 0.5)) / 2)


def test_paired_degenerate_cases_give_nan_without_error() -> None:
    one = stats.paired(pd.Series([1.0]), pd.Series([0.0]), tolerance=0.01)
    assert one.n == 1 and one.diff == 1.0 and one.wins == 1
    assert math.isnan(one.p_wilcoxon) and math.isnan(one.ci_low)
    same = stats.paired(pd.Series([1.0, 2.0]), pd.Series([1.0, 2.0]), tolerance=0.01)
    assert math.isnan(same.p_wilcoxon) and same.ties == 2 and same.diff == 0.0
    assert (same.ci_low, same.ci_high) == (0.0, 0.0)
    none = stats.paired(pd.Series([1.0], index=["a"]), pd.Series([1.0], index=["b"]), 0.01)
    assert none.n == 0 and math.isnan(none.diff)


def test_holm_adjusts_step_down_and_leaves_nan_out() -> None:
    from irem.evaluation.stats import holm

    p = np.array([0.01, np.nan, 0.04, 0.03, 0.005])
    got = holm(p)
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): x4, x3, x2, x1, then made non-decreasing
    np.testing.assert_allclose(got[[4, 0, 3, 2]], [0.02, 0.03, 0.06, 0.06])
    assert np.isnan(got[1])
    assert holm([0.5, 0.9])[1] == 1.0  # capped at 1
    assert np.isnan(holm([np.nan])).all()
