"""Tuning sweeps of the workflow (config ``tuning.sweeps``): the candidate settings as a table, and
the rule that chooses one per group from the scored runs on the tuning subjects."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from irem.evaluation.stats import paired

#: The score that chooses (brain-mask PSNR), and the columns a sweep's runs are paired on.
SCORE = "psnr_mask"
PAIR_ON = ("subject", "k", "seed")
#: The columns of a sweep's runs table beside its parameters (a parameter must not reuse one).
RUN_COLUMNS = ("sweep", "method", *PAIR_ON, "hr_snr", "psnr", "ssim", "psnr_mask", "ssim_mask",
               "psnr_edge", "steps", "escape_step", "returned", "training_seconds",
               "start_seconds")  # fmt: skip


def candidates(values: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A sweep's candidates, one row each: the product of a mapping's values, or each listed."""
    if not isinstance(values, Mapping):
        rows = [dict(v) for v in values]
        if not rows or any(set(r) != set(rows[0]) for r in rows):
            raise ValueError("listed candidates need the same parameters, at least one candidate")
        frame = pd.DataFrame(rows, columns=list(rows[0]))
    else:
        keys = list(values)
        if not keys or any(len(values[k]) == 0 for k in keys):
            raise ValueError("a sweep needs at least one value of each parameter")
        frame = pd.DataFrame(list(itertools.product(*(values[k] for k in keys))), columns=keys)
    clash = sorted(set(frame.columns) & set(RUN_COLUMNS))
    if clash:
        raise ValueError(f"sweep parameter {clash[0]!r} is a column of the runs table: rename it")
    return frame


def options(template: str, row: Mapping[str, Any]) -> str:
    """The options of one candidate: ``template`` with its ``{parameter}`` fields filled in."""
    values = {k: f"{v:g}" if isinstance(v, float) else str(v) for k, v in row.items()}
    return template.format(**values)


def choose(
    runs: pd.DataFrame, params: Sequence[str], prefer: Mapping[str, Any] | None = None,
    group: Sequence[str] = (),
) -> pd.DataFrame:  # fmt: skip
    """Per ``group``: the best mean score, or ``prefer`` unless a challenger's paired CI is > 0."""
    params, group = list(params), list(group)
    rows = []
    for key, sub in runs.groupby(group, sort=True) if group else [((), runs)]:
        key = key if isinstance(key, tuple) else (key,)
        means = sub.groupby(params, sort=False)[SCORE].mean().sort_values(ascending=False)
        pick, ci = means.index[0], (math.nan, math.nan)
        if prefer is not None:
            pick, ci = _preferred(sub, params, means, tuple(prefer[p] for p in params))
        pick = pick if isinstance(pick, tuple) else (pick,)
        row = dict(zip(group, key, strict=True)) | dict(zip(params, pick, strict=True))
        row |= {"mean_psnr_mask": float(means.loc[pick if len(pick) > 1 else pick[0]])}
        row |= {"n_runs": int(len(sub)), "ci_low": ci[0], "ci_high": ci[1]}
        rows.append(row)
    return pd.DataFrame(rows)


def _preferred(
    sub: pd.DataFrame, params: list[str], means: pd.Series, first: tuple[Any, ...]
) -> tuple[Any, tuple[float, float]]:
    """The ``prefer`` rule on one group: ``first`` unless a challenger (in order of mean score)
    has its paired 95% CI above zero; the CI is the first challenger's, or the winner's."""
    pick = first if len(first) > 1 else first[0]
    if pick not in means.index:
        raise ValueError(f"the preferred candidate {first} was not run")
    table = sub.pivot_table(index=list(PAIR_ON), columns=params, values=SCORE)
    ci = (math.nan, math.nan)
    for cand in [c for c in means.index if c != pick]:
        d = paired(table[cand], table[pick], tolerance=0.0)
        if d.ci_low > 0:
            return cand, (d.ci_low, d.ci_high)
        if math.isnan(ci[0]):
            ci = (d.ci_low, d.ci_high)
    return pick, ci
