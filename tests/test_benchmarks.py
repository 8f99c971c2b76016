"""The paired INR-against-SRR-TV benchmark: its statistics, and its committed table against the
workflow's committed runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from inr_vs_srrtv import BASELINE, INR, cohort_runs, paired_table  # noqa: E402


def test_paired_table_pairs_subjects_and_counts_the_margin() -> None:
    diffs = {"03": 0.4, "04": -0.7, "05": 1.0, "06": -0.2}
    rows = []
    for subject, d in diffs.items():
        rows += [
            {"volume": "cohort", "k": 4, "subject": subject, "method": BASELINE, "psnr_mask": 30.0},
            {"volume": "cohort", "k": 4, "subject": subject, "method": INR, "psnr_mask": 30.0 + d},
        ]
    rows.append({"volume": "cohort", "k": 4, "subject": "07", "method": INR, "psnr_mask": 99.0})
    table = paired_table(pd.DataFrame(rows), margin=0.5)
    r = table.iloc[0]
    assert r["n"] == 4  # subject 07 has no SRR-TV run: not paired
    assert r["diff"] == pytest.approx(sum(diffs.values()) / 4)
    assert r["ci_low"] < r["diff"] < r["ci_high"]
    assert (r["wins"], r["ties"], r["losses"]) == (2, 0, 2)
    assert r["worst"] == pytest.approx(-0.7)
    assert r["below_margin"] == 1


def test_committed_table_matches_the_committed_runs() -> None:
    """results/benchmarks/inr_vs_srrtv.csv's cohort rows follow from results/tables/runs.csv."""
    fresh = paired_table(cohort_runs(ROOT / "results" / "tables" / "runs.csv"), margin=0.5)
    committed = pd.read_csv(ROOT / "results" / "benchmarks" / "inr_vs_srrtv.csv")
    committed = committed[committed["volume"] == "cohort"].reset_index(drop=True)
    assert list(committed["k"]) == list(fresh["k"])
    for column in ("n", "diff", "ci_low", "ci_high", "worst", "below_margin"):
        assert committed[column].to_numpy() == pytest.approx(fresh[column].to_numpy(), abs=1e-3)
