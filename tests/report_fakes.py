"""Fake run files for the report tests: metrics JSONs with meta, sidecars, benchmark TSVs."""

from __future__ import annotations

import json
from pathlib import Path

METHOD_ARGS = ["--method", "bspline=B-spline", "srr=SRR", "irem=IREM", "--baselines", "bspline"]
METHOD_ARGS += ["srr"]

#: Brain PSNR per (k, method, subject, seed); whole-volume PSNR is 2 dB higher, SSIM derived.
SCORES = {
    ("4", "bspline", "01", "0"): 30.0,
    ("4", "bspline", "02", "0"): 31.0,
    ("4", "srr", "01", "0"): 33.0,
    ("4", "srr", "02", "0"): 32.5,
    ("4", "irem", "01", "0"): 33.5,
    ("4", "irem", "01", "1"): 34.5,  # two seeds of subject 01: averaged to 34.0
    ("4", "irem", "02", "0"): 32.0,
    ("8", "bspline", "01", "0"): 25.0,
    ("8", "bspline", "02", "0"): 26.0,
    ("8", "srr", "01", "0"): 24.0,
    ("8", "srr", "02", "0"): 25.0,
    ("8", "irem", "01", "0"): 27.0,
    ("8", "irem", "02", "0"): 26.0,
}


def ssim_of(psnr_mask: float) -> float:
    """A made-up SSIM that grows with the PSNR."""
    return 0.5 + psnr_mask / 100


def write_metrics(
    root: Path, meta: dict[str, str], psnr_mask: float, sidecar: dict | None = None
) -> Path:
    """A metrics JSON (with meta) and optionally the reconstruction's sidecar beside it."""
    stem = "_".join(f"{k}-{v}" for k, v in meta.items() if v) or "run"
    path = root / f"{stem}_metrics.json"
    metrics = {
        "psnr": psnr_mask + 2.0,
        "ssim": ssim_of(psnr_mask) + 0.01,
        "psnr_mask": psnr_mask,
        "ssim_mask": ssim_of(psnr_mask),
        "data_range": 1.0,
        "mask_voxels": 100,
        "meta": meta,
    }
    path.write_text(json.dumps(metrics), encoding="utf-8")
    if sidecar is not None:
        (root / f"{stem}.json").write_text(json.dumps(sidecar), encoding="utf-8")
    return path


def meta(k: str, method: str, subject: str, seed: str, **extra: str) -> dict[str, str]:
    """The meta of a run on the fake dataset ``mni``."""
    return {"dataset": "mni", "k": k, "subject": subject, "seed": seed, "method": method} | extra


def write_main_runs(root: Path) -> list[Path]:
    """The runs of :data:`SCORES`, plus a tuning-split run that must not count."""
    paths = []
    for (k, method, subject, seed), value in SCORES.items():
        side = {"training_seconds": 10.0} if method == "irem" else None
        paths.append(write_metrics(root, meta(k, method, subject, seed), value, side))
    tuning = meta("4", "irem", "03", "0", split="tuning")
    paths.append(write_metrics(root, tuning, 99.0))
    return paths


def write_benchmark(path: Path, seconds: float, rss: float) -> Path:
    """A Snakemake benchmark TSV with one repeat."""
    path.write_text(
        "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
        f"{seconds}\t0:00:02\t{rss}\t1\t1\t1\t0\t0\t50\t{seconds - 0.5}\n",
        encoding="utf-8",
    )
    return path
