"""The Snakemake workflow: lint, a dry-run of every config, and the test config end to end."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))
WORKFLOW_FILES = ("Snakefile", "rules", "config", "schemas", "report", "environment.yml")

pytestmark = pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake not installed")


def snakemake(*args: str, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["snakemake", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def test_lint_is_clean() -> None:
    res = snakemake("--lint")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Lints for" not in res.stdout + res.stderr


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_dry_run(config: Path) -> None:
    # --forceall: list every job whatever results/ already holds.
    res = snakemake("--dry-run", "--forceall", "--configfile", str(config.relative_to(ROOT)))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout + res.stderr
    for rule in (
        "ground_truth",
        "simulate",
        "bspline",
        "srr",
        "irem",
        "metrics",
        "tables",
        "fig4",
        "fig5",
    ):
        assert f"rule {rule}:" in out, f"{config.name}: no {rule} job"


def _keys(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in tree.items():
        out.add(prefix + key)
        if isinstance(value, dict):
            out |= _keys(value, f"{prefix}{key}.")
    return out


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_sets_every_default_key(config: Path) -> None:
    # --configfile is merged over config/config.yaml: a file that sets every key replaces it.
    default = _keys(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    keys = _keys(yaml.safe_load(config.read_text()))
    assert default <= keys, f"{config.name} lacks {sorted(default - keys)}"


def test_paper_config_has_the_paper_hyperparameters() -> None:
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    sets = dict(item.split("=", 1) for item in paper["irem"]["set"])
    assert sets["model.fourier_dim"] == "256"
    assert sets["train.batch_size"] == "2500"
    assert float(sets["train.lr"]) == 1e-4
    assert float(sets["train.lr_decay"]) == 0.5 and sets["train.lr_step_epochs"] == "500"
    assert paper["irem"]["device"] == "cuda" and paper["irem"]["time_budget"] is None
    assert all(d["crop"] is None for d in paper["datasets"])
    assert paper["ks"] == [4, 8]
    assert paper["ablation"]["fourier_dims"] == [32, 64, 128, 256, 512]


def test_gpu_rules_take_a_gpu_token() -> None:
    # With a non-CPU device IREM jobs declare gpu=1, so that --resources gpu=1 serialises them.
    res = snakemake("--dry-run", "--forceall", "--configfile", "config/paper.yaml")
    blocks = (res.stdout + res.stderr).split("\n\n")
    irem = [b for b in blocks if "rule irem:" in b]
    assert irem and all("gpu=1" in b for b in irem)
    res = snakemake("--dry-run", "--forceall", "--configfile", "config/config.yaml")
    blocks = (res.stdout + res.stderr).split("\n\n")
    irem = [b for b in blocks if "rule irem:" in b]
    assert irem and not any("gpu=1" in b for b in irem)


@pytest.fixture(scope="module")
def test_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test config run end to end in a temporary copy of the workflow."""
    tmp = tmp_path_factory.mktemp("workflow")
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tmp / name)
        else:
            shutil.copy(src, tmp / name)
    res = snakemake(
        "--cores",
        "2",
        "--resources",
        "gpu=1",
        "--configfile",
        "config/test.yaml",
        "--directory",
        str(tmp),
        cwd=tmp,
        timeout=1800,
    )
    if res.returncode != 0:
        logs = (
            "\n".join(
                f"--- {p}\n{p.read_text()[-2000:]}"
                for p in sorted((tmp / "results" / "logs").rglob("*.log"))
            )
            if (tmp / "results" / "logs").exists()
            else ""
        )
        pytest.fail(f"workflow failed:\n{res.stderr[-5000:]}\n{logs[-8000:]}")
    return tmp


@pytest.mark.workflow
@pytest.mark.slow
def test_end_to_end_tables(test_run: Path) -> None:
    config = yaml.safe_load((test_run / "config" / "test.yaml").read_text())
    tables = test_run / "results" / "tables"
    metrics = pd.read_csv(tables / "metrics.csv")
    # Every dataset x k x method, the ablation variants and the real scan.
    sim = metrics[metrics["dataset"] == "phantom"]
    assert set(sim["method"]) >= set(config["methods"])
    assert {f"irem2L{d}" for d in config["ablation"]["fourier_dims"]} <= set(sim["method"])
    real = metrics[metrics["dataset"] == "realscan"]
    assert set(real["method"]) == set(config["methods"]) and set(real["k"]) == {"real"}
    main = metrics[metrics["method"].isin(config["methods"])]
    assert set(main["n"]) == {len(config["seeds"])}
    for col in ("psnr_mean", "psnr_mask_mean"):
        assert all(math.isfinite(v) and 5.0 < v < 100.0 for v in metrics[col]), metrics[col]
    for col in ("ssim_mean", "ssim_mask_mean"):
        assert all(0.0 < v <= 1.0 for v in metrics[col]), metrics[col]
    # Two seeds: a sample standard deviation exists for the main methods.
    assert main["psnr_std"].notna().all()
    runs = pd.read_csv(tables / "runs.csv")
    assert len(runs) == len(list(test_run.glob("results/**/*_metrics.json")))
    md = (tables / "metrics.md").read_text()
    assert "| phantom | 4 | IREM | 2 |" in md
    runtime = pd.read_csv(tables / "runtime.csv")
    assert (runtime["wall_s_mean"] > 0).all()
    assert (tables / "runtime.md").exists()


@pytest.mark.workflow
@pytest.mark.slow
def test_end_to_end_outputs(test_run: Path) -> None:
    results = test_run / "results"
    for fig in ("fig3_fourier_dim", "fig4_phantom", "fig5_phantom", "fig6_realscan"):
        png, pdf = results / "figures" / f"{fig}.png", results / "figures" / f"{fig}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", fig
        assert pdf.read_bytes()[:5] == b"%PDF-", fig
    rec = results / "phantom" / "k4" / "sub-sl_rec-irem_seed-1_PD.nii.gz"
    assert rec.exists() and rec.with_name("sub-sl_rec-irem_seed-1_PD.json").exists()
    assert rec.with_name("sub-sl_rec-irem_seed-1_PD_metrics.json").exists()
    # The IREM checkpoint is a temp() intermediate: gone after the run.
    assert not list(results.rglob("*.ckpt.pt"))
    assert (results / "runtime" / "phantom" / "k4" / "sub-sl_rec-irem_seed-0_PD.tsv").exists()
    assert (results / "realscan" / "lr" / "sub-sl" / "acq-axial.nii.gz").exists()


@pytest.mark.workflow
@pytest.mark.slow
def test_rerun_does_nothing(test_run: Path) -> None:
    res = snakemake(
        "--cores",
        "2",
        "--resources",
        "gpu=1",
        "--configfile",
        "config/test.yaml",
        "--directory",
        str(test_run),
        cwd=test_run,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Nothing to be done" in res.stdout + res.stderr


@pytest.mark.workflow
@pytest.mark.slow
def test_report_module_is_importable_by_the_rules() -> None:
    # The rules call `python -m irem.report` / `python -m irem.cli` with the checkout first on
    # PYTHONPATH; the same interpreter must find both.
    res = subprocess.run(
        [sys.executable, "-m", "irem.report", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert res.returncode == 0 and "tables" in res.stdout
