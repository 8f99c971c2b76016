"""Tuning sweeps: candidates, the choice rule (irem/evaluation/tuning.py), the workflow's `tune` target, and the
configs carrying what the committed tuning chose."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from irem.evaluation.tuning import candidates, choose, options

ROOT = Path(__file__).resolve().parents[1]


def test_candidates_are_the_product_or_the_listed_ones() -> None:
    grid = candidates({"alpha": [0.1, 0.3], "iterations": [20, 60]})
    assert grid.to_dict("records") == [
        {"alpha": 0.1, "iterations": 20}, {"alpha": 0.1, "iterations": 60},
        {"alpha": 0.3, "iterations": 20}, {"alpha": 0.3, "iterations": 60},
    ]  # fmt: skip
    listed = candidates([{"head": "cancel", "warmup": 25}, {"head": "zero", "warmup": 0}])
    assert list(listed.columns) == ["head", "warmup"] and len(listed) == 2
    with pytest.raises(ValueError):
        candidates([{"head": "cancel"}, {"warmup": 0}])
    for values in ({"steps": [2000, 6000]}, [{"seed": 1}]):  # a column of the runs table
        with pytest.raises(ValueError, match="column of the runs table"):
            candidates(values)
    assert options("--alpha {alpha} --iterations {iterations}", grid.iloc[1]) == (
        "--alpha 0.1 --iterations 60"
    )


def _runs(scores: dict[str, list[float]], group: str | None = None) -> pd.DataFrame:
    rows = []
    for value, values in scores.items():
        for i, v in enumerate(values):
            row = {"alpha": value, "subject": f"{i:02d}", "k": "4", "seed": "0", "psnr_mask": v}
            rows.append(row | ({"hr_snr": group} if group else {}))
    return pd.DataFrame(rows)


def test_choose_takes_the_highest_mean_per_group() -> None:
    runs = pd.concat([
        _runs({"a": [30.0, 31.0, 32.0], "b": [31.0, 32.0, 33.0]}, group="5"),
        _runs({"a": [36.0, 37.0, 38.0], "b": [35.0, 36.0, 37.0]}, group="20"),
    ])  # fmt: skip
    chosen = choose(runs, ["alpha"], group=["hr_snr"]).set_index("hr_snr")
    assert chosen.loc["5", "alpha"] == "b" and chosen.loc["20", "alpha"] == "a"
    assert chosen.loc["5", "mean_psnr_mask"] == 32.0 and chosen.loc["5", "n_runs"] == 6
    assert math.isnan(chosen.loc["5", "ci_low"])


def test_a_preferred_candidate_stays_unless_another_is_surely_higher() -> None:
    # b is higher on average but not on every subject: its paired CI reaches below zero
    close = _runs({"a": [30.0, 31.0, 32.0, 33.0], "b": [30.5, 30.8, 33.0, 33.1]})
    kept = choose(close, ["alpha"], prefer={"alpha": "a"}).iloc[0]
    assert kept["alpha"] == "a" and kept["ci_low"] < 0 < kept["ci_high"]
    # b higher by 1 dB on every subject: its CI is above zero
    clear = _runs({"a": [30.0, 31.0, 32.0, 33.0], "b": [31.0, 32.1, 32.9, 34.0]})
    won = choose(clear, ["alpha"], prefer={"alpha": "a"}).iloc[0]
    assert won["alpha"] == "b" and won["ci_low"] > 0
    with pytest.raises(ValueError, match="not run"):
        choose(clear, ["alpha"], prefer={"alpha": "c"})


def test_the_configs_carry_the_committed_choices() -> None:
    """Each sweep's chosen options are what config/config.yaml runs: in its method's command, or
    in scan_time.options at that HR SNR."""
    chosen = pd.read_csv(ROOT / "results" / "tuning" / "chosen.csv", dtype=str)
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text(encoding="utf-8"))
    sweeps = {s["name"]: s for s in cfg["tuning"]["sweeps"]}
    commands = {m["name"]: " ".join(m["command"].split()) for m in cfg["methods"]}
    fast = (ROOT / "irem" / "configs" / "fast.yaml").read_text(encoding="utf-8")
    assert set(chosen["sweep"]) == set(sweeps)
    for _, row in chosen.iterrows():
        method = sweeps[row["sweep"]]["method"]
        if isinstance(row.get("hr_snr"), str) and row["hr_snr"]:
            per_snr = cfg["scan_time"]["options"][method]
            got = next(o for snr, o in per_snr.items() if float(snr) == float(row["hr_snr"]))
            assert got == row["options"], row.to_dict()
        elif "--set" in row["options"]:  # a grid-INR setting: fast.yaml holds it
            for part in row["options"].split("--set")[1:]:
                key, value = part.strip().split("=")
                assert f"  {key.split('.')[-1]}: {value}" in fast, row.to_dict()
        else:
            assert row["options"] in commands[method], row.to_dict()


def test_every_tuning_run_is_on_a_tuning_subject() -> None:
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text(encoding="utf-8"))
    n_tuning = next(d for d in cfg["datasets"] if d["name"] == "cohort")["cohort"]["tuning"]
    for sweep in cfg["tuning"]["sweeps"]:
        runs = pd.read_csv(ROOT / "results" / "tuning" / f"{sweep['name']}.csv", dtype=str)
        assert runs["subject"].astype(int).between(1, n_tuning).all(), sweep["name"]
        assert np.isfinite(runs["psnr_mask"].astype(float)).all()


@pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake not installed")
def test_a_method_and_a_sweep_are_one_config_entry_each(tmp_path: Path) -> None:
    """A method and a sweep that exist only in this test's config: `snakemake tune` runs the
    sweep's candidates as variants of the method (its context, then the candidate's options), on
    the tuning subjects only."""
    cfg = yaml.safe_load((ROOT / "config" / "test.yaml").read_text(encoding="utf-8"))
    cfg["methods"].append({
        "name": "smoothed", "label": "B-spline, smoothed (test only)",
        "command": "irem baseline srr {stacks} -o {output} {geometry} --psf box --regulariser "
                   "tk1 --iterations 3 --alpha 1",
    })  # fmt: skip
    cfg["tuning"] = {"dataset": "cohort", "sweeps": [{
        "name": "smoothing", "method": "smoothed", "options": "--alpha {alpha}",
        "values": {"alpha": [0.5, 2.0]}, "context": "--iterations 2",
    }]}  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    res = subprocess.run(
        ["snakemake", "tune", "--dry-run", "--forceall", "--printshellcmds", "--configfile",
         str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "rec-tunesmoothing0_" in out and "rec-tunesmoothing1_" in out
    assert "results/tuning/smoothing.csv" in out
    assert "sub-01_rec-tunesmoothing0" in out and "sub-02_rec-tunesmoothing" not in out
    assert "--alpha 1 --iterations 2 --alpha 0.5 " in " ".join(out.split())
