"""The configs carry the values chosen on the tuning split (results/tuning/chosen.csv)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from tune import SWEEPS  # noqa: E402

CHOSEN = ROOT / "results" / "tuning" / "chosen.csv"


def option_value(command: str, option: str) -> str | None:
    """The last value an option takes in a command (``--alpha X`` or ``--set key=X``)."""
    words = shlex.split(command)
    found = None
    for i, word in enumerate(words):
        if option.endswith("="):  # "--set train.x=" -> the word after --set
            if word == "--set" and words[i + 1].startswith(option.split()[-1]):
                found = words[i + 1].split("=", 1)[1]
        elif word == option:
            found = words[i + 1]
    return found


def chosen_settings() -> dict[tuple[str, str], str]:
    """(method, option) -> the value chosen for it; a later sweep of the same option (in the order
    tune.py runs them, each starting from the earlier choices) supersedes an earlier one."""
    chosen = pd.read_csv(CHOSEN, dtype={"value": str})
    order = {name: i for i, name in enumerate(SWEEPS)}
    chosen = chosen.sort_values("parameter", key=lambda p: p.map(order))
    out: dict[tuple[str, str], str] = {}
    for _, row in chosen.iterrows():
        option = SWEEPS[row["parameter"]][1]
        if option:
            out[row["method"], option] = row["value"]
            continue
        words = shlex.split(row["value"])  # a set of "--set key=value" options
        for flag, setting in zip(words[::2], words[1::2], strict=True):
            key, value = setting.split("=", 1)
            out[row["method"], f"{flag} {key}="] = value
    return out


def same(configured: object, chosen: str) -> bool:
    try:
        return float(configured) == pytest.approx(float(chosen))  # type: ignore[arg-type]
    except ValueError:
        return str(configured) == chosen


@pytest.mark.parametrize("config", ["config.yaml", "paper.yaml"])
def test_configs_carry_the_tuned_values(config: str) -> None:
    methods = {m["name"]: m for m in yaml.safe_load((ROOT / "config" / config).read_text())["methods"]}
    checked = 0
    for (method, option), chosen in chosen_settings().items():
        if method not in methods:
            continue
        value = option_value(methods[method]["command"], option)
        if value is None and option.endswith("="):  # from the IREM config file instead
            from irem.config import flatten, load_config

            cmd = shlex.split(methods[method]["command"])
            cfg = load_config(cmd[cmd.index("--config") + 1] if "--config" in cmd else None)
            value = flatten(cfg.to_dict())[option.split()[-1].rstrip("=")]
        assert same(value, chosen), (config, method, option, value, chosen)
        checked += 1
    assert checked > 0


def test_every_sweep_was_run_on_tuning_subjects_only() -> None:
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cohort = next(d["cohort"] for d in config["datasets"] if d.get("cohort"))
    tuning = {f"{i + 1:02d}" for i in range(cohort["tuning"])}
    chosen = pd.read_csv(CHOSEN)
    assert set(chosen["parameter"]) == set(SWEEPS)
    for name in SWEEPS:
        runs = pd.read_csv(ROOT / "results" / "tuning" / f"{name}.csv")
        assert set(runs["subject"].astype(str).str.zfill(2)) <= tuning


def test_resume_keeps_the_runs_a_sweep_has_and_runs_the_rest(monkeypatch, tmp_path) -> None:
    """``--resume``: runs already in the sweep's CSV (read back with its float formatting) are
    kept, the missing ones run, runs of candidates no longer swept are dropped."""
    import tune

    ran = []

    def fake_score(case, method, option, value, work):
        ran.append((case["subject"], value))
        return {"method": method["name"], "subject": case["subject"], "k": case["k"],
                "volume": case["volume"], "value": value, "psnr_mask": 30.0}

    monkeypatch.setattr(tune, "score", fake_score)
    config = {"methods": [{"name": "srrtv", "command": "irem srr --alpha 0.01"}]}
    cases = [{"subject": "01", "k": 4, "volume": "crop"}, {"subject": "02", "k": 8, "volume": "crop"}]
    values = SWEEPS["srr_alpha"][2]
    done = pd.DataFrame([
        {"method": "srrtv", "subject": "01", "k": 4, "volume": "crop", "value": values[0],
         "psnr_mask": 31.0},
        {"method": "srrtv", "subject": "02", "k": 8, "volume": "crop", "value": 99.0,
         "psnr_mask": 1.0},
    ])  # fmt: skip
    csv = tmp_path / "runs.csv"
    done.to_csv(csv, index=False, float_format="%.4f")
    done = pd.read_csv(csv, dtype={"subject": str})
    df = tune.sweep("srr_alpha", config, cases, tmp_path, jobs=1, done=done)
    assert len(df) == 2 * len(values) and len(ran) == 2 * len(values) - 1
    assert ("01", values[0]) not in ran
    assert 99.0 not in set(df["value"]) and 31.0 in set(df["psnr_mask"])


def test_a_preferred_candidate_is_kept_unless_another_is_surely_better() -> None:
    """``large_update`` (repeated over seeds, the first candidate preferred): the first value
    stays chosen while the other's paired gain has a CI reaching zero, and gives way when the
    CI is above zero; the chosen value is printed without the seed."""
    import tune

    first, other = SWEEPS["large_update"][2]
    seeds = tune.REPEATS["large_update"]

    def runs(gains: list[float]) -> pd.DataFrame:
        rows = []
        for i, (subject, k) in enumerate((("01", 4), ("02", 8))):
            for j, seed in enumerate(seeds):
                base = 30.0 + i + 0.1 * j
                for value, psnr in ((first, base), (other, base + gains[i * len(seeds) + j])):
                    rows.append({"method": "iremfast", "subject": subject, "k": k,
                                 "volume": "whole", "value": f"{value} --seed {seed}",
                                 "psnr_mask": psnr})
        return pd.DataFrame(rows)

    noisy = tune.choose(runs([0.3, -0.2, 0.25, -0.1, 0.2, 0.1]), "large_update").iloc[0]
    assert noisy["value"] == first and noisy["ci_low"] < 0 < noisy["ci_high"]
    assert noisy["mean_psnr_mask"] == pytest.approx(30.6)
    sure = tune.choose(runs([0.3, 0.2, 0.25, 0.3, 0.2, 0.35]), "large_update").iloc[0]
    assert sure["value"] == other and sure["ci_low"] > 0
    plain = tune.choose(runs([0.3, 0.2, 0.25, 0.3, 0.2, 0.35]), "").iloc[0]
    assert plain["value"] == other  # without the preference: the highest mean
