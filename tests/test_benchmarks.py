"""The paired INR-against-SRR-TV benchmark: its statistics, and its committed table against the
workflow's committed runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from inr_vs_srrtv import BASELINE, INR, cohort_runs, merge_whole, paired_table  # noqa: E402


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


def test_paired_table_adds_a_row_per_contrast_when_subjects_differ_in_it() -> None:
    contrast = {"03": "FLAIR", "04": "T1w", "05": "T2w", "06": "FLAIR"}
    diffs = {"03": 0.6, "04": 0.1, "05": 1.0, "06": 0.4}
    rows = [{"volume": "cohort", "k": 8, "subject": s, "contrast": contrast[s], "method": m,
             "psnr_mask": 30.0 + (d if m == INR else 0.0)}
            for s, d in diffs.items() for m in (INR, BASELINE)]
    table = paired_table(pd.DataFrame(rows), margin=0.5).set_index("contrast")
    assert list(table.index) == ["all", "FLAIR", "T1w", "T2w"]
    assert table.loc["all", "n"] == 4 and table.loc["FLAIR", "n"] == 2
    assert table.loc["FLAIR", "diff"] == pytest.approx(0.5)
    assert table.loc["T1w", "diff"] == pytest.approx(0.1)
    one = paired_table(pd.DataFrame([r | {"contrast": "T1w"} for r in rows]), margin=0.5)
    assert list(one["contrast"]) == ["all"]  # one contrast: no repeat of the same row


def test_merge_whole_replaces_the_runs_made_again_and_keeps_the_rest() -> None:
    def run(subject: str, method: str, psnr: float) -> dict:
        return {"volume": "whole", "k": 4, "subject": subject, "method": method, "psnr_mask": psnr}

    kept = pd.DataFrame([run("04", INR, 30.0), run("04", "iremfast_dense", 30.1),
                         run("04", BASELINE, 29.0)])
    new = pd.DataFrame([run("04", INR, 31.0), run("04", BASELINE, 29.0), run("05", INR, 33.0),
                        run("05", BASELINE, 32.0)])
    merged = merge_whole(kept, new).set_index(["subject", "method"])["psnr_mask"]
    assert len(merged) == 5
    assert merged["04", INR] == 31.0 and merged["04", "iremfast_dense"] == 30.1
    assert merged["05", INR] == 33.0


def test_committed_table_matches_the_committed_runs() -> None:
    """results/benchmarks/inr_vs_srrtv.csv's cohort rows follow from results/tables/runs.csv."""
    fresh = paired_table(cohort_runs(ROOT / "results" / "tables" / "runs.csv"), margin=0.5)
    committed = pd.read_csv(ROOT / "results" / "benchmarks" / "inr_vs_srrtv.csv")
    committed = committed[committed["volume"] == "cohort"].reset_index(drop=True)
    assert list(committed["k"]) == list(fresh["k"])
    for column in ("n", "diff", "ci_low", "ci_high", "worst", "below_margin"):
        assert committed[column].to_numpy() == pytest.approx(fresh[column].to_numpy(), abs=1e-3)
