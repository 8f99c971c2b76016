"""Sweep SRR's relative regularisation weight alpha on a Shepp-Logan phantom with Rician noise.

Not the benchmark data (the MNI152 template): the default alphas of ``baselines.srr`` are chosen
from this sweep. For every regulariser (tk1, tv), PSF (gaussian, box), k (4, 8) and SNR (noise-free,
40, 20, 10) it records, per alpha: PSNR (whole volume and inside the workflow's brain mask, both from
``irem.metrics.compute_metrics`` as in benchmarks/_workflow.py), the relative data residual
``||A x - y|| / ||y||`` (discrepancy principle: compare with the noise's own relative size ``delta``
``= ||y - y_clean|| / ||y||``) and ``||grad x||`` (the L-curve's other axis).

Usage: ``python benchmarks/srr_alpha_sweep.py [--size 64] [--threads 2] [--out results/benchmarks]``
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import numpy as np
import torch
from _workflow import load_with_mask

from baselines.bspline import bspline
from baselines.operators import gradient
from baselines.srr import srr
from irem.grid import reference_grid
from irem.metrics import compute_metrics
from irem.simulate import simulate_stacks

ALPHAS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
SNRS: tuple[float | None, ...] = (None, 40.0, 20.0, 10.0)
KS = (4, 8)
CASES = (("tk1", "gaussian"), ("tk1", "box"), ("tv", "gaussian"), ("tv", "box"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="phantom edge in voxels")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hr, mask = load_with_mask("phantom", crop=None, phantom_size=args.size)
    grid = reference_grid(hr)

    def psnrs(volume: np.ndarray) -> dict[str, float]:
        met = compute_metrics(volume, hr.data, mask=mask)
        return {"psnr": met["psnr"], "psnr_mask": met["psnr_mask"]}

    rows: list[dict[str, object]] = []
    t_start = time.perf_counter()
    for k in KS:
        clean = simulate_stacks(hr, k)
        for snr in SNRS:
            stacks = simulate_stacks(hr, k, snr=snr, seed=1)
            ynorm = math.sqrt(sum(float(np.sum(s.data.astype(np.float64) ** 2)) for s in stacks))
            delta = (
                math.sqrt(
                    sum(
                        float(np.sum((s.data.astype(np.float64) - c.data) ** 2))
                        for s, c in zip(stacks, clean, strict=True)
                    )
                )
                / ynorm
            )
            init = bspline(stacks, grid)
            base = {"k": k, "snr": "inf" if snr is None else snr, "delta": delta}
            rows.append(
                {
                    **base,
                    "regulariser": "-",
                    "psf": "-",
                    "alpha": "bspline",
                    **psnrs(init),
                    "residual": float("nan"),
                    "grad_norm": float(torch.linalg.vector_norm(gradient(torch.as_tensor(init)))),
                    "iterations": 0,
                    "time": 0.0,
                }
            )
            for reg, psf in CASES:
                for alpha in ALPHAS:
                    out, info = srr(
                        stacks,
                        grid,
                        alpha=alpha,
                        regulariser=reg,
                        psf=psf,
                        init=init,
                        progress=False,
                    )
                    row = {
                        **base,
                        "regulariser": reg,
                        "psf": psf,
                        "alpha": alpha,
                        **psnrs(out),
                        "residual": info["relative_residual"],
                        "grad_norm": float(
                            torch.linalg.vector_norm(gradient(torch.as_tensor(out)))
                        ),
                        "iterations": info["iterations"],
                        "time": info["time"],
                    }
                    rows.append(row)
                    print(
                        f"k={k} snr={base['snr']} {reg}/{psf} alpha={alpha:g}: "
                        f"PSNR {row['psnr']:.2f} (mask {row['psnr_mask']:.2f}) "
                        f"residual {row['residual']:.4f} (delta {delta:.4f}) "
                        f"[{info['iterations']} it, {info['time']:.1f} s]",
                        flush=True,
                    )
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "srr_alpha_sweep.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (args.out / "srr_alpha_sweep.md").write_text(
        report(rows, args.size, time.perf_counter() - t_start), encoding="utf-8"
    )
    print((args.out / "srr_alpha_sweep.md").read_text(encoding="utf-8"))


def report(rows: list[dict[str, object]], size: int, seconds: float) -> str:
    """Markdown: per regulariser/PSF, PSNR (dB) for every alpha x (k, SNR); best per column marked.

    Marks the discrepancy-principle choice (largest alpha whose relative residual does not exceed
    delta; noise-free columns have none) and the L-curve corner (largest Menger curvature of
    ``(log residual, log ||grad x||)`` over the alpha grid).
    """
    cols = [(k, "inf" if s is None else s) for k in KS for s in SNRS]
    lines = [
        f"# SRR alpha sweep (Shepp-Logan {size}^3, box-profile stacks, Rician noise, seed 1)",
        "",
        "Command: `python benchmarks/srr_alpha_sweep.py`. Whole-volume PSNR (dB); **bold**: best per",
        "column; `*`: discrepancy-principle choice; `+`: L-curve corner. "
        f"Total time {seconds:.0f} s.",
        "",
    ]
    header = "| alpha | " + " | ".join(f"k={k} SNR {s}" for k, s in cols) + " |"
    sep = "|---" * (len(cols) + 1) + "|"
    for reg, psf in CASES:
        lines += [f"## {reg}, psf={psf}", "", header, sep]
        table = {
            (r["k"], r["snr"], r["alpha"]): r
            for r in rows
            if r["regulariser"] == reg and r["psf"] == psf
        }
        best = {c: max(ALPHAS, key=lambda a, c=c: table[(*c, a)]["psnr"]) for c in cols}
        disc = {}
        for c in cols:
            ok = [a for a in ALPHAS if table[(*c, a)]["residual"] <= table[(*c, a)]["delta"]]
            disc[c] = max(ok) if ok and c[1] != "inf" else None
        corner = {c: lcurve_corner([table[(*c, a)] for a in ALPHAS]) for c in cols}
        for a in ALPHAS:
            cells = []
            for c in cols:
                v = f"{table[(*c, a)]['psnr']:.2f}"
                if best[c] == a:
                    v = f"**{v}**"
                if disc[c] == a:
                    v += "*"
                if corner[c] == a:
                    v += "+"
                cells.append(v)
            lines.append(f"| {a:g} | " + " | ".join(cells) + " |")
        bs = {(r["k"], r["snr"]): r for r in rows if r["alpha"] == "bspline"}
        lines.append("| B-spline | " + " | ".join(f"{bs[c]['psnr']:.2f}" for c in cols) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def lcurve_corner(rows: list[dict[str, object]]) -> float:
    """Alpha at the point of largest Menger curvature of the L-curve (log residual, log grad norm)."""
    pts = np.log([[float(r["residual"]), float(r["grad_norm"])] for r in rows])
    best, best_curv = float(rows[1]["alpha"]), -np.inf
    for i in range(1, len(pts) - 1):
        a, b, c = pts[i - 1], pts[i], pts[i + 1]
        cross = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        denom = np.linalg.norm(b - a) * np.linalg.norm(c - b) * np.linalg.norm(c - a)
        # The L is convex towards the origin: keep the sign that marks its corner.
        curv = 2.0 * cross / denom if denom > 0 else 0.0
        if curv > best_curv:
            best, best_curv = float(rows[i]["alpha"]), curv
    return best


if __name__ == "__main__":
    main()
