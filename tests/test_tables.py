"""Tables from fake metrics JSONs with meta (irem/report/tables.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from irem.report import tables
from irem.report.tables import Methods
from tests.report_fakes import (
    SCORES,
    meta,
    ssim_of,
    write_benchmark,
    write_main_runs,
    write_metrics,
)

METHODS = Methods(
    labels={"bspline": "B-spline", "srr": "SRR", "irem": "IREM"}, baselines=("bspline", "srr")
)


def _row(table: pd.DataFrame, k: str, method: str) -> pd.Series:
    sel = table[(table["k"] == k) & (table["method"] == method) & (table["ablation"] == "")]
    assert len(sel) == 1
    return sel.iloc[0]


def test_load_runs_reads_meta_not_names(tmp_path: Path) -> None:
    p = write_metrics(tmp_path, meta("4", "srr", "01", "0"), 30.0, {"training_seconds": 2.0})
    renamed = p.rename(tmp_path / "whatever.json")
    runs = tables.load_runs([renamed], METHODS)
    assert runs.loc[0, ["dataset", "k", "method", "subject", "seed", "split"]].tolist() == [
        "mni", "4", "srr", "01", "0", "",
    ]  # fmt: skip
    assert runs.loc[0, "psnr_mask"] == 30.0


def test_runs_carry_the_grid_inrs_escape_step_and_what_it_returned(tmp_path: Path) -> None:
    side = {"held_out": {"escape_step": 25}, "start_image": {"seconds": 3.0, "returned": "srr_tv"}}
    grid = write_metrics(tmp_path, meta("4", "iremfast", "01", "0"), 30.0, side)
    plain = write_metrics(tmp_path, meta("4", "srr", "01", "0"), 29.0, {"training_seconds": 2.0})
    runs = tables.load_runs([grid, plain], METHODS).set_index("method")
    assert runs.loc["iremfast", ["escape_step", "returned", "start_seconds"]].tolist() == [
        25, "srr_tv", 3.0,
    ]  # fmt: skip
    assert math.isnan(runs.loc["srr", "escape_step"]) and pd.isna(runs.loc["srr", "returned"])


def test_metrics_without_meta_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "x_metrics.json"
    p.write_text(json.dumps({"psnr": 1.0}), encoding="utf-8")
    with pytest.raises(ValueError, match='no "meta"'):
        tables.load_runs([p])
    p.write_text(json.dumps({"psnr": 1.0, "meta": {"dataset": "d"}}), encoding="utf-8")
    with pytest.raises(ValueError, match="meta lacks k, subject, seed, method"):
        tables.load_runs([p])


def test_methods_order_labels_and_colours() -> None:
    m = Methods(labels={"srr": "SRR", "bspline": "B-spline"})
    assert sorted(["zeta", "bspline", "alpha", "srr"], key=m.sort_key) == [
        "srr", "bspline", "alpha", "zeta",
    ]  # fmt: skip
    assert m.label("foo") == "foo" and m.label("srr") == "SRR"
    assert m.label(tables.HR_SCAN) == "HR scan (direct)"
    colours = m.colours(["zeta", "srr"])
    assert colours["srr"] == tables.PALETTE[0] and colours["zeta"] == tables.PALETTE[2]


def test_quality_table_summary_and_paired_numbers(tmp_path: Path) -> None:
    runs = tables.load_runs(write_main_runs(tmp_path), METHODS)
    table = tables.quality_table(runs, METHODS)
    assert "03" not in set(runs["subject"][runs["split"] != "tuning"])
    assert list(table["method"][table["k"] == "4"]) == ["bspline", "srr", "irem"]
    irem = _row(table, "4", "irem")
    per_subject = np.array([34.0, 32.0])  # seeds of subject 01 averaged; tuning run left out
    low, high = sps.t.interval(0.95, 1, loc=per_subject.mean(), scale=sps.sem(per_subject))
    assert (irem["n"], irem["n_runs"]) == (2, 3)
    assert irem["psnr_mask_mean"] == pytest.approx(33.0)
    assert irem["psnr_mask_std"] == pytest.approx(np.std(per_subject, ddof=1))
    assert (irem["psnr_mask_ci_low"], irem["psnr_mask_ci_high"]) == pytest.approx((low, high))
    assert irem["psnr_mean"] == pytest.approx(35.0)
    # The best baseline at k=4 is SRR (32.75 > 30.5), at k=8 B-spline (25.5 > 24.5).
    assert irem["baseline"] == "srr" and _row(table, "8", "irem")["baseline"] == "bspline"
    base = np.array([SCORES["4", "srr", "01", "0"], SCORES["4", "srr", "02", "0"]])
    d = per_subject - base
    ci = sps.ttest_rel(per_subject, base).confidence_interval(0.95)
    assert irem["psnr_mask_diff"] == pytest.approx(d.mean())
    assert (irem["psnr_mask_diff_ci_low"], irem["psnr_mask_diff_ci_high"]) == pytest.approx(
        (ci.low, ci.high)
    )
    assert irem["psnr_mask_p"] == pytest.approx(sps.wilcoxon(per_subject, base).pvalue)
    assert (irem["psnr_mask_wins"], irem["psnr_mask_ties"], irem["psnr_mask_losses"]) == (1, 0, 1)
    ds = np.array([ssim_of(v) for v in per_subject]) - np.array([ssim_of(v) for v in base])
    assert irem["ssim_mask_diff"] == pytest.approx(ds.mean())
    # The best baseline is not compared with itself; the other baseline is.
    assert math.isnan(_row(table, "4", "srr")["psnr_mask_diff"])
    assert _row(table, "4", "bspline")["psnr_mask_diff"] == pytest.approx(30.5 - 32.75)


def test_ablation_and_scantime_rows_are_their_own_groups(tmp_path: Path) -> None:
    paths = write_main_runs(tmp_path)
    paths.append(
        write_metrics(tmp_path, meta("4", "irem", "01", "0", ablation="sigma", value="4"), 20.0)
    )
    for snr, value in (("10", 28.0), ("20", 31.0)):
        paths.append(write_metrics(tmp_path, meta("4", "hrscan", "01", "0", hr_snr=snr), value))
    runs = tables.load_runs(paths, METHODS)
    table = tables.quality_table(runs, METHODS)
    assert _row(table, "4", "irem")["psnr_mask_mean"] == pytest.approx(33.0)  # unchanged
    abl = table[table["ablation"] == "sigma"].iloc[0]
    assert abl["n"] == 1 and abl["baseline"] == "srr"
    assert abl["psnr_mask_diff"] == pytest.approx(20.0 - 33.0)
    scan = tables.scantime_table(runs, METHODS)
    assert list(scan["hr_snr"]) == ["10", "20"] and list(scan["label"]) == ["HR scan (direct)"] * 2
    assert list(scan["psnr_mask_mean"]) == [28.0, 31.0]
    assert "| mni | 4 | 10 | HR scan (direct) | 1 | 28.00 |" in tables.scantime_markdown(scan)


def test_write_tables_files_and_runtime(tmp_path: Path) -> None:
    paths = write_main_runs(tmp_path)
    irem4 = [p for p in paths if "k-4_subject-01_seed-0_method-irem" in p.name][0]
    bench = [(write_benchmark(tmp_path / "a.tsv", 2.0, 300.5), irem4)]
    bench.append((write_benchmark(tmp_path / "b.tsv", 4.0, 200.0), irem4))
    runs = tables.load_runs(paths, METHODS)
    files = tables.write_tables(runs, tables.load_benchmarks(bench), METHODS, tmp_path / "t")
    assert set(files) == {"metrics.csv", "metrics.md", "runs.csv", "runtime.csv", "runtime.md"}
    metrics = pd.read_csv(files["metrics.csv"], dtype={"k": str})
    for col in ("n", "psnr_mask_ci_low", "baseline", "psnr_mask_diff", "ssim_mask_p"):
        assert col in metrics.columns
    assert len(pd.read_csv(files["runs.csv"])) == len(paths)  # every run, tuning included
    md = files["metrics.md"].read_text(encoding="utf-8")
    assert "| mni | 4 | IREM | 2 | 35.00 ± 1.41 [" in md and "averaged" in md
    runtime = pd.read_csv(files["runtime.csv"], dtype={"k": str}).iloc[0]
    assert runtime["n"] == 2 and runtime["wall_s_mean"] == pytest.approx(3.0)
    assert runtime["max_rss_mb"] == pytest.approx(300.5)
    assert runtime["training_s_mean"] == pytest.approx(10.0)


def test_auto_mask_table_differences_and_counts(tmp_path: Path) -> None:
    paths = []
    for i, (split, true, auto) in enumerate([("tuning", 30.0, 30.1), ("evaluation", 31.0, 31.5),
                                             ("evaluation", 32.0, 31.9)]):  # fmt: skip
        p = write_metrics(tmp_path, meta("4", "srr", f"0{i + 1}", "0", split=split), true)
        obj = json.loads(p.read_text(encoding="utf-8"))
        obj["compare_mask"] = {"psnr_mask_zeroed": auto, "psnr_mask": 40.0, "dice": 0.99,
                               "voxel_ratio": 0.98}
        p.write_text(json.dumps(obj), encoding="utf-8")
        paths.append(p)
    table = tables.auto_mask_table(paths[::-1], METHODS)
    assert table["split"].tolist() == ["tuning", "evaluation", "evaluation"]  # tuning first
    assert table["difference_db"].round(3).tolist() == [0.1, 0.5, -0.1]
    assert set(table["label"]) == {"SRR"}
    md = tables.auto_mask_markdown(table)
    assert "- tuning: 1 of 1 within 0.2 dB" in md
    assert "- evaluation: 1 of 2 within 0.2 dB (mean |difference| 0.30 dB, largest 0.50 dB)" in md
    with pytest.raises(ValueError, match="compare_mask"):
        tables.auto_mask_table([write_metrics(tmp_path, meta("8", "srr", "09", "0"), 1.0)], METHODS)
