"""Summary statistics (Student-t intervals) and paired comparisons (paired-t interval, two-sided
Wilcoxon p, wins/ties/losses, Holm's adjustment) of per-subject scores; undefined ones are NaN."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

#: Differences smaller than this count as ties, by metric (PSNR in dB, SSIM unitless).
TIE_TOLERANCE = {"psnr": 0.01, "psnr_mask": 0.01, "ssim": 1e-4, "ssim_mask": 1e-4}


@dataclass(frozen=True)
class Summary:
    """n, mean, sample standard deviation (ddof=1) and the two ends of a confidence interval."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Paired:
    """A - B on matched units: mean difference, its interval, Wilcoxon p and W/T/L counts."""

    n: int
    diff: float
    ci_low: float
    ci_high: float
    p_wilcoxon: float
    wins: int
    ties: int
    losses: int


def _finite(values: np.ndarray | pd.Series | list[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean of ``values`` (NaN, NaN for n < 2)."""
    x = _finite(values)
    if x.size < 2:
        return math.nan, math.nan
    mean, sem = float(x.mean()), float(sps.sem(x))
    if sem == 0.0:
        return mean, mean
    low, high = sps.t.interval(confidence, x.size - 1, loc=mean, scale=sem)
    return float(low), float(high)


def summarise(values: np.ndarray | pd.Series | list[float], confidence: float = 0.95) -> Summary:
    """n, mean, std (ddof=1) and the t interval of the mean of the finite ``values``."""
    x = _finite(values)
    mean = float(x.mean()) if x.size else math.nan
    std = float(x.std(ddof=1)) if x.size > 1 else math.nan
    low, high = t_interval(x, confidence)
    return Summary(n=int(x.size), mean=mean, std=std, ci_low=low, ci_high=high)


def paired(a: pd.Series, b: pd.Series, tolerance: float, confidence: float = 0.95) -> Paired:
    """``a`` - the baseline's ``b`` on the units (index labels) both have (tie: < ``tolerance``)."""
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    d = (both["a"] - both["b"]).to_numpy(dtype=np.float64)
    low, high = t_interval(d, confidence)
    p, x = math.nan, _finite(d)  # two-sided Wilcoxon: NaN for fewer than two or all 0
    if x.size >= 2 and np.any(x != 0.0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(sps.wilcoxon(x).pvalue)
    return Paired(
        n=int(d.size), diff=float(d.mean()) if d.size else math.nan, ci_low=low, ci_high=high,
        p_wilcoxon=p, wins=int(np.sum(d >= tolerance)), ties=int(np.sum(np.abs(d) < tolerance)),
        losses=int(np.sum(d <= -tolerance)),
    )  # fmt: skip


def holm(p: np.ndarray | pd.Series | list[float]) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN entries left out and kept NaN)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    adjusted = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adjusted, 1.0)
    return out
