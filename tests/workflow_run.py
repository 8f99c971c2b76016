"""The test config's workflow run, shared by the workflow and the Slurm tests (one run a session)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = (
    "Snakefile", "rules", "config", "schemas", "report", "environment.yml", "envs", "scripts"
)


def snakemake(*args: str, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["snakemake", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


#: Snakemake's arguments for a run of the test config on 2 cores.
TEST_CONFIG_RUN = ("--cores", "2", "--resources", "gpu=1", "--configfile", "config/test.yaml")


def run_test_config(tmp: Path) -> Path:
    """Copy the workflow into ``tmp`` and run config/test.yaml there on 2 cores (fails the test
    with the logs' tails when the workflow fails)."""
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tmp / name)
        else:
            shutil.copy(src, tmp / name)
    res = snakemake(*TEST_CONFIG_RUN, "--directory", str(tmp), cwd=tmp, timeout=1800)
    if res.returncode != 0:
        logs = (
            "\n".join(
                f"--- {p}\n{p.read_text(encoding='utf-8')[-2000:]}"
                for p in sorted((tmp / "results" / "logs").rglob("*.log"))
            )
            if (tmp / "results" / "logs").exists()
            else ""
        )
        pytest.fail(f"workflow failed:\n{res.stderr[-5000:]}\n{logs[-8000:]}")
    return tmp
