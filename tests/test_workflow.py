"""The Snakemake workflow: lint, a dry-run of every config, and the test config end to end."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from irem.report.labels import method_label

from .workflow_run import TEST_CONFIG_RUN, snakemake

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))
#: Partial configs, merged over config/config.yaml (they set only the keys they change).
OVERLAYS = sorted((ROOT / "config" / "overlays").glob("*.yaml"))

pytestmark = pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake not installed")


def test_lint_is_clean() -> None:
    res = snakemake("--lint")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Lints for" not in res.stdout + res.stderr


@pytest.mark.parametrize("config", CONFIGS + OVERLAYS, ids=[c.name for c in CONFIGS + OVERLAYS])
def test_dry_run(config: Path) -> None:
    # --forceall: list every job whatever results/ already holds.
    res = snakemake(
        "all", "convergence", "converged", "--dry-run", "--forceall", "--configfile",
        str(config.relative_to(ROOT)),
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout + res.stderr
    for rule in ("simulate", "reconstruct", "metrics", "tables", "fig4", "fig5",
                 "convergence_report", "converged"):  # fmt: skip
        assert f"rule {rule}:" in out, f"{config.name}: no {rule} job"
    # A method on a non-CPU device declares gpu=1, so that --resources gpu=1 serialises them
    # (config/paper.yaml runs the paper's network on cuda; the default config is CPU only).
    cfg = _config(ROOT / "config" / "config.yaml") | _config(config)
    devices = {m["name"]: m.get("device", "cpu") for m in cfg["methods"]}
    conv = cfg["convergence"]
    devices |= {v["name"]: conv.get("device", "cpu") for v in conv["variants"]}
    devices |= {f"conv{p['tag']}": conv.get("device", "cpu") for p in conv["sweep"]["parameters"]}
    for block in re.split(r"^\[.*\]$", out, flags=re.M):  # a job: its date line, then its fields
        if "rule reconstruct:" in block:
            name = re.search(r"rec-([a-zA-Z0-9]+)_", block)
            assert name, block
            # Ablation and tuning variants (irem2L64, tunesrrtv0) run on their method's device.
            base = max((m for m in devices if name.group(1).startswith(m)), key=len, default="")
            assert ("gpu=1" in block) == (devices.get(base, "cpu") != "cpu"), block
    if config.name == "paper.yaml":
        assert "cuda" in devices.values()


def _config(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


#: Mappings that hold data (method -> per-SNR options), not keys every config must set.
DATA_KEYS = ("scan_time.options", "convergence.sweep.reference")


def _keys(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in tree.items():
        out.add(prefix + key)
        if isinstance(value, dict) and prefix + key not in DATA_KEYS:
            out |= _keys(value, f"{prefix}{key}.")
    return out


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_sets_every_default_key(config: Path) -> None:
    # --configfile is merged over config/config.yaml: a file that sets every key replaces it.
    default = _keys(yaml.safe_load((ROOT / "config" / "config.yaml").read_text(encoding="utf-8")))
    keys = _keys(yaml.safe_load(config.read_text(encoding="utf-8")))
    assert default <= keys, f"{config.name} lacks {sorted(default - keys)}"


def test_paper_config_runs_the_paper() -> None:
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text(encoding="utf-8"))
    irem = next(m for m in paper["methods"] if m["name"] == "irem")
    assert "--config paper" in irem["command"] and "--time-budget" not in irem["command"]
    assert method_label(irem) == "IREM" and irem["device"] == "cuda"
    assert all(d["crop"] is None for d in paper["datasets"])
    assert paper["ks"] == [4, 8]
    assert paper["conda_env"] == "envs/gpu.yml"
    names = [m["name"] for m in paper["methods"]]
    assert {"srrtk1", "srrtv", "srrtvgauss"} <= set(names)


def test_no_rule_names_a_method() -> None:
    # Methods come from the config: no rule or helper names one.
    text = (ROOT / "Snakefile").read_text(encoding="utf-8") + "".join(
        p.read_text(encoding="utf-8") for p in sorted((ROOT / "rules").glob("*.smk"))
    )
    assert not re.search(r"bspline|srr|iremfast", text)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("cohort: {subjects: 0, tuning: 0, seed: 0}", "subjects"),
        ("cohort: {subjects: 2, tuning: 2, seed: 0}", "leaves no evaluation subject"),
    ],
)
def test_bad_cohort_stops_before_any_job(tmp_path: Path, change: str, message: str) -> None:
    text = (ROOT / "config" / "config.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("cohort: {subjects: 13, tuning: 3, seed: 0}", change), encoding="utf-8")
    res = snakemake("--dry-run", "--configfile", str(bad))
    assert res.returncode != 0 and message in res.stdout + res.stderr


def test_negative_snr_stops_before_any_job(tmp_path: Path) -> None:
    text = (ROOT / "config" / "config.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("  snr: 40", "  snr: -5"), encoding="utf-8")
    res = snakemake("--dry-run", "--configfile", str(bad))
    assert res.returncode != 0 and "snr" in res.stdout + res.stderr


@pytest.mark.workflow
@pytest.mark.slow
def test_end_to_end_tables(test_run: Path) -> None:
    config = yaml.safe_load((test_run / "config" / "test.yaml").read_text(encoding="utf-8"))
    tables = test_run / "results" / "tables"
    metrics = pd.read_csv(tables / "metrics.csv")
    labels = {m["name"]: method_label(m) for m in config["methods"] if not m.get("hr_scan")}
    main = metrics[(metrics["dataset"] == "cohort") & metrics["hr_snr"].isna()]
    # Every method, the external one included, on the 2 evaluation subjects (never the tuning one).
    assert set(main["method"]) == set(labels)
    assert set(main["n"]) == {2}
    for col in ("psnr_mask_mean", "ssim_mask_mean", "psnr_mask_std"):
        assert main[col].notna().all(), col
    assert (main["psnr_mask_std"] > 0).all()  # noise and anatomy differ between subjects
    for col in ("psnr_mean", "psnr_mask_mean"):
        assert all(math.isfinite(v) and 5.0 < v < 100.0 for v in metrics[col]), metrics[col]
    runs = pd.read_csv(tables / "runs.csv")
    scored = [p for p in test_run.glob("results/**/*_metrics.json") if "_automask_" not in p.name]
    assert len(runs) == len(scored)
    assert "tuning" not in set(runs["split"])  # the default run never scores a tuning subject
    md = (tables / "metrics.md").read_text(encoding="utf-8")
    assert f"| cohort | 4 | {labels['stackmean']} | 2 |" in md
    scantime = pd.read_csv(tables / "scantime.csv")
    assert {"hrscan", "hrtv"} <= set(scantime["method"])  # the HR scan, as it is and denoised
    runtime = pd.read_csv(tables / "runtime.csv")
    assert (runtime["wall_s_mean"] > 0).all()


@pytest.mark.workflow
@pytest.mark.slow
def test_auto_mask_table_scores_both_splits(test_run: Path) -> None:
    config = yaml.safe_load((test_run / "config" / "test.yaml").read_text(encoding="utf-8"))
    table = pd.read_csv(test_run / "results" / "tables" / "auto_mask.csv", dtype={"k": str})
    methods = config["auto_mask"]["methods"]
    # 3 cohort subjects (tuning and evaluation), the phantom and the real-scan demo, each method.
    assert len(table) == 5 * len(methods) and set(table["method"]) == set(methods)
    assert set(table["split"]) == {"tuning", "evaluation"} and "real" in set(table["k"])
    assert ((table["dice"] > 0.5) & (table["dice"] <= 1)).all()
    diff = table["psnr_mask_auto"] - table["psnr_true_mask"]
    assert np.allclose(diff, table["difference_db"], atol=1e-3)


@pytest.mark.workflow
@pytest.mark.slow
def test_external_method_is_drawn_in_fig4(test_run: Path) -> None:
    config = yaml.safe_load((test_run / "config" / "test.yaml").read_text(encoding="utf-8"))
    ext = next(m for m in config["methods"] if m["name"] == "stackmean")
    log = (test_run / "results" / "logs" / "fig4_cohort.log").read_text(encoding="utf-8")
    assert ext["label"] in log


@pytest.mark.workflow
@pytest.mark.slow
def test_end_to_end_outputs(test_run: Path) -> None:
    results = test_run / "results"
    for fig in ("fig4_cohort", "fig5_cohort", "fig6_realscan", "cohort",
                "scantime"):
        png, pdf = results / "figures" / f"{fig}.png", results / "figures" / f"{fig}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", fig
        assert pdf.read_bytes()[:5] == b"%PDF-", fig
    rec = results / "cohort" / "k4" / "sub-02_rec-irem_seed-0_T2w.nii.gz"
    assert rec.exists() and rec.with_name("sub-02_rec-irem_seed-0_T2w.json").exists()
    assert rec.with_name("sub-02_rec-irem_seed-0_T2w_metrics.json").exists()
    # Checkpoints are removed once a job succeeds.
    assert not list(results.rglob("*.ckpt.pt"))
    assert (results / "runtime" / "cohort" / "k4" / "sub-02_rec-irem_seed-0_T2w.tsv").exists()
    assert (results / "realscan" / "lr" / "sub-sl" / "acq-axial.nii.gz").exists()


@pytest.mark.workflow
@pytest.mark.slow
def test_rerun_does_nothing(test_run: Path) -> None:
    res = snakemake(*TEST_CONFIG_RUN, "--directory", str(test_run), cwd=test_run)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Nothing to be done" in res.stdout + res.stderr


@pytest.mark.workflow
@pytest.mark.slow
def test_report_module_is_importable_by_the_rules() -> None:
    # The rules call `python -m irem.cli.report` / `python -m irem.cli` with the checkout first on
    # PYTHONPATH; the same interpreter must find both.
    res = subprocess.run(
        [sys.executable, "-m", "irem.cli.report", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert res.returncode == 0 and "tables" in res.stdout


@pytest.mark.workflow
@pytest.mark.slow
def test_a_fresh_rerun_gives_the_same_tables(test_run: Path, tmp_path: Path) -> None:
    """scripts/reproduce.py: the test config rerun in a fresh copy of the checkout prints the same
    metrics and scan-time tables, digit for digit (every budget is a count)."""
    res = subprocess.run(
        [sys.executable, "scripts/reproduce.py", "--configfile", "config/test.yaml", "--cores", "2",
         "--against", str(test_run / "results" / "tables"), "--workdir", str(tmp_path / "rerun")],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "equal, digit for digit" in res.stdout
