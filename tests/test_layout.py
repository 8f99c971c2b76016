"""irem/layout.py: every path is built and parsed in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from irem import layout as L

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "run",
    [L.Run("cohort", 4), L.Run("cohort", 8, 7.5), L.Run("cohort", 4, 20.0), L.Run("realscan")],
)
def test_run_folder_round_trip(run: L.Run) -> None:
    assert L.parse_run(run.folder) == run


def test_run_folders_and_meta() -> None:
    assert L.Run("cohort", 4, 7.5).folder == "cohort/snr7p5/k4"
    assert L.Run("realscan").meta() == {"dataset": "realscan", "k": ""}
    assert L.Run("cohort", 8, 10.0).meta() == {"dataset": "cohort", "k": "8", "hr_snr": "10"}


@pytest.mark.parametrize("bad", ["", "a/b", "cohort/k", "cohort/snr10", "cohort/k4/x"])
def test_parse_run_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        L.parse_run(bad)


def test_paths_share_one_stem() -> None:
    run = L.Run("cohort", 4)
    rec = L.rec_path(run, "03", "srrtv", 0, "FLAIR")
    assert rec == "results/cohort/k4/sub-03_rec-srrtv_seed-0_FLAIR.nii.gz"
    assert L.metrics_path(run, "03", "srrtv", 0, "FLAIR") == rec.replace(".nii.gz", "_metrics.json")
    assert L.run_file(run, "03", "srrtv", 0, "FLAIR", ".json") == rec.replace(".nii.gz", ".json")
    assert L.benchmark_path(run, "03", "srrtv", 0, "FLAIR").startswith("results/runtime/cohort/k4/")
    stacks = L.stack_paths(run, "03", 0)
    assert [s.rsplit("acq-", 1)[1] for s in stacks] == [f"{o}.nii.gz" for o in L.ORIENTATIONS]


def test_snr_tag_rejects_non_positive() -> None:
    assert L.snr_tag(0.5) == "0p5" and L.snr_tag(40) == "40"
    with pytest.raises(ValueError):
        L.snr_tag(0)


def test_a_job_log_mirrors_its_output_below_logs() -> None:
    run = L.Run("cohort", k=4)
    assert L.log_path(L.rec_path(run, "04", "srrtv", 0, "T1w")) == (
        "results/logs/cohort/k4/sub-04_rec-srrtv_seed-0_T1w.log"
    )
    assert L.log_path(L.metrics_path("{run}", "{subject}", "m", "{seed}", "{suffix}")) == (
        "results/logs/{run}/sub-{subject}_rec-m_seed-{seed}_{suffix}_metrics.log"
    )
    assert L.log_path(L.stack_folder(run, "04", 0)) == "results/logs/cohort/k4/lr/sub-04_seed-0.log"
    assert L.sidecar_path(L.gt_path("cohort", "04", "T1w")) == "results/cohort/sub-04_T1w.json"


def test_the_rules_take_their_paths_from_layout() -> None:
    # One module builds every result path: no rule spells one out.
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        code = "\n".join(
            line for line in smk.read_text(encoding="utf-8").splitlines()
            if not line.lstrip().startswith("#") and '"""' not in line
        )
        assert '"results/' not in code and "f\"results/" not in code, smk.name
