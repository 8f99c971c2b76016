"""irem/layout.py: every path is built and parsed in one place."""

from __future__ import annotations

import pytest

from irem import layout as L


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
