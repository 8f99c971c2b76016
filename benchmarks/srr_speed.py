"""Speed, memory and quality of the baselines on the MNI152 template at k = 4 and 8.

Usage: ``python benchmarks/srr_speed.py [--threads 2] [--out results/benchmarks]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

KS = (4, 8)
METHODS = (
    ("bspline", "-", "-"),
    ("srr", "tk1", "gaussian"),
    ("srr", "tk1", "box"),
    ("srr", "tv", "gaussian"),
    ("srr", "tv", "box"),
)


def run_case(k: int, method: str, regulariser: str, psf: str, threads: int) -> dict[str, object]:
    """One case, in this process: returns its metrics (call in a fresh interpreter)."""
    import torch

    from baselines.bspline import bspline
    from baselines.srr import srr
    from irem.acquisition.grid import reference_grid
    from irem.acquisition.simulate import simulate_stacks
    from irem.data.datasets import brain_mask, mni152_t1
    from irem.evaluation.metrics import compute_metrics

    torch.set_num_threads(threads)
    hr = mni152_t1()
    mask = brain_mask(hr, threshold=0.0).data > 0.5
    grid = reference_grid(hr)
    stacks = simulate_stacks(hr, k)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    info: dict[str, object] = {}
    if method == "bspline":
        out = bspline(stacks, grid)
    else:
        out, info = srr(stacks, grid, regulariser=regulariser, psf=psf, progress=False)
    wall = time.perf_counter() - t0
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    met = compute_metrics(out, hr.data, mask=mask)
    return {"k": k, "method": method if method == "bspline" else f"srr-{regulariser}-{psf}",
            "alpha": info.get("alpha", ""), "iterations": info.get("iterations", 0),
            "cg_iterations": info.get("cg_iterations", 0),
            "stop_reason": info.get("stop_reason", ""), "wall_s": wall,
            "peak_rss_mb": peak_rss / 1024.0, "base_rss_mb": base_rss / 1024.0,
            **{m: met[m] for m in ("psnr", "psnr_mask", "ssim", "ssim_mask")},
            "relative_residual": info.get("relative_residual", ""), "threads": threads}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads per case")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    parser.add_argument("--child", nargs=4, metavar=("K", "METHOD", "REG", "PSF"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.child:
        k, method, reg, psf = args.child
        print(json.dumps(run_case(int(k), method, reg, psf, args.threads)))
        return
    load = os.getloadavg()[0]
    rows = []
    for k, case in itertools.product(KS, METHODS):  # each in a fresh process: its own peak memory
        cmd = [sys.executable, __file__, "--threads", str(args.threads), "--child", str(k), *case]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"k={k} {row['method']:>18}: {row['wall_s']:6.1f} s, peak {row['peak_rss_mb']:6.0f} "
              f"MB, it {row['iterations']}, PSNR {row['psnr']:.2f} / mask {row['psnr_mask']:.2f} / "
              f"SSIM {row['ssim']:.4f}", flush=True)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "srr_speed" if args.threads == 2 else f"srr_speed_threads{args.threads}"
    pd.DataFrame(rows).to_csv(args.out / f"{stem}.csv", index=False)
    text = report(rows, args.threads, (load, os.getloadavg()[0]))
    (args.out / f"{stem}.md").write_text(text, encoding="utf-8")
    print(text)


def report(rows: list[dict[str, Any]], threads: int, loads: tuple[float, float]) -> str:
    """The Markdown table of ``rows`` (``loads``: the load average before and after)."""
    cpu = platform.processor() or platform.machine()
    base_rss = np.median([r["base_rss_mb"] for r in rows])
    lines = [
        "# Baselines on the MNI152 template (152x184x160, 1 mm), box-profile stacks, no noise",
        "",
        f"Command: `python benchmarks/srr_speed.py --threads {threads}`. torch threads {threads}, "
        f"{os.cpu_count()} CPUs ({cpu}); load average {loads[0]:.1f} before, {loads[1]:.1f} after "
        "(the cores are shared, so times are upper bounds). Mask: the workflow's brain mask. SRR "
        "time includes its B-spline initialisation; peak memory is the process's ru_maxrss (the "
        f"template and stacks alone: ~{base_rss:.0f} MB).",
        "",
        "| k | method | alpha | iterations (CG) | time (s) | peak RSS (MB) | PSNR | PSNR mask "
        "| SSIM |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        its = "-" if r["method"] == "bspline" else f"{r['iterations']} ({r['cg_iterations']})"
        alpha = "-" if r["alpha"] == "" else f"{r['alpha']:g}"
        lines.append(
            f"| {r['k']} | {r['method']} | {alpha} | {its} | {r['wall_s']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {r['psnr']:.2f} | {r['psnr_mask']:.2f} | {r['ssim']:.4f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
