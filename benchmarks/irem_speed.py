"""IREM on CPU: training throughput against the matmul bound, inference speed, and time-to-quality.

Prints one table and writes it to results/benchmarks/irem_speed.{md,csv} with a plot of PSNR versus
training wall time (results/benchmarks/irem_psnr_vs_time.png) that also marks the baselines' times.

Throughput (paper network, batch 2500): the matmul bound is measured in the same run from a
2500x256 @ 256x256 float32 product, and converted to samples/s with the network's own FLOPs per
sample (6 x multiply-adds: forward, and twice that backward).

Time-to-quality: each configuration trains on the three k-fold box-profile stacks of the embedded
MNI152 template; PSNR is measured on a central slab of the HR grid (every ``--slab`` axial slices
around the centre) at the asked wall times; evaluation time is not counted as training time.

Usage: python benchmarks/irem_speed.py [--k 4 8] [--times 60 120 300] [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from irem.config import load_config
from irem.datasets import mni152_t1
from irem.grid import Grid, reference_grid
from irem.metrics import compute_metrics
from irem.model import IREM
from irem.simulate import simulate_stacks
from irem.train import predict, train

OUT = Path("results/benchmarks")


def matmul_gflops(seconds: float = 3.0) -> float:
    """Sustained float32 GFLOP/s of the paper's typical layer product (2500x256 @ 256x256)."""
    a, b = torch.randn(2500, 256), torch.randn(256, 256)
    for _ in range(20):
        a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return 2 * 2500 * 256 * 256 * n / (time.perf_counter() - t0) / 1e9


def flops_per_sample(model: torch.nn.Module) -> float:
    macs = sum(
        m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)
    )
    return 6.0 * macs


def throughput(precision: str, fused: bool, steps: int = 30, batch: int = 2500) -> float:
    """Training samples/s of the paper's network (random coordinates; the cost does not depend on data)."""
    model = IREM()
    opt = (
        torch.optim.Adam(model.parameters(), lr=1e-4, fused=fused)
        if fused
        else torch.optim.Adam(model.parameters(), lr=1e-4)
    )
    x, y = torch.rand(batch, 3) * 2 - 1, torch.rand(batch)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            pred = model(x)
        loss = torch.mean((pred.float() - y) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


@torch.inference_mode()
def inference_rate(chunk: int = 262_144) -> float:
    model = IREM().eval()
    x = torch.rand(chunk, 3) * 2 - 1
    model(x)
    t0 = time.perf_counter()
    model(x)
    return chunk / (time.perf_counter() - t0)


def slab_grid(hr_grid: Grid, slices: int) -> Grid:
    """The central ``slices`` slices of the last axis of a grid."""
    z0 = hr_grid.shape[2] // 2 - slices // 2
    shift = np.eye(4)
    shift[2, 3] = z0
    return Grid(
        shape=(hr_grid.shape[0], hr_grid.shape[1], slices), affine=hr_grid.affine @ shift
    ), z0


CONFIGS = {
    "irem-paper": ("paper", {}),
    "irem-paper-bf16": ("paper", {"train.precision": "bf16"}),
    "irem-fast": ("fast", {}),
    "irem-fast-centres": ("fast", {"train.profile_points": 1}),
}


def time_to_quality(name: str, k: int, times: list[float], slab: int, seed: int = 0) -> dict:
    """Train one configuration; PSNR on the slab at the asked training times."""
    from baselines.bspline import bspline

    hr = mni152_t1()
    stacks = simulate_stacks(hr, k)
    grid, z0 = slab_grid(reference_grid(hr), slab)
    gt = hr.data[:, :, z0 : z0 + slab]
    mask = gt > 0
    t0 = time.perf_counter()
    ref = bspline(stacks, grid)
    bspline_s = time.perf_counter() - t0
    bspline_psnr = compute_metrics(ref, gt, mask=mask)["psnr"]
    cfg_name, over = CONFIGS[name]
    cfg = load_config(cfg_name, {**over, "train.time_budget": max(times), "train.epochs": 100000})
    pending = sorted(times)
    found: dict = {"reach_bspline_s": None}
    curve: list[tuple[float, float]] = []
    next_probe = [0.0]

    def probe(steps: int, seconds: float, model: torch.nn.Module, norm) -> None:
        due = pending and seconds >= pending[0]
        if not due and seconds < next_probe[0]:
            return
        next_probe[0] = seconds + max(times) / 30
        out = predict(model, norm, grid)
        p = compute_metrics(out, gt, mask=mask)["psnr"]
        curve.append((seconds, p))
        if found["reach_bspline_s"] is None and p >= bspline_psnr:
            found["reach_bspline_s"] = seconds
        while pending and seconds >= pending[0]:
            found[f"psnr_{int(pending.pop(0))}s"] = p

    model, norm, res = train(stacks, cfg, seed=seed, progress=False, on_step=probe)
    out = predict(model, norm, grid)
    final = compute_metrics(out, gt, mask=mask)
    for t in pending:  # the budget ended just before a probe time
        found[f"psnr_{int(t)}s"] = final["psnr"]
    return {
        "config": name,
        "k": k,
        "steps": res.steps,
        "train_s": res.training_seconds,
        "samples_per_s": res.steps * cfg.train.batch_size / res.training_seconds,
        "bspline_psnr": bspline_psnr,
        "bspline_s": bspline_s,
        "final_psnr": final["psnr"],
        "final_ssim": final["ssim"],
        **found,
        "curve": curve,
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--k", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--times", type=float, nargs="+", default=[60, 120, 300])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--slab", type=int, default=16, help="axial slices of the evaluation slab")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)

    lines = [f"# IREM on CPU ({args.threads} threads, torch {torch.__version__})", ""]
    if not args.skip_throughput:
        gflops = matmul_gflops()
        bound = gflops * 1e9 / flops_per_sample(IREM())
        rows = []
        for precision, fused in [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]:
            rate = throughput(precision, fused)
            rows.append(
                {
                    "training": f"paper IREM {precision}{' fused Adam' if fused else ''}",
                    "samples/s": round(rate),
                    "% of fp32 matmul bound": round(100 * rate / bound, 1),
                }
            )
        inf = inference_rate()
        rows.append(
            {
                "training": "paper IREM inference (eval, no autograd)",
                "samples/s": round(inf),
                "% of fp32 matmul bound": round(100 * inf / (3 * bound), 1),
            }
        )
        tp = pd.DataFrame(rows)
        lines += [
            f"fp32 matmul: {gflops:.0f} GFLOP/s; bound {bound:.0f} training samples/s "
            f"({flops_per_sample(IREM()) / 1e6:.2f} MFLOP per sample); inference/training "
            f"(fp32) = {inf / rows[0]['samples/s']:.1f}x",
            "",
            tp.to_markdown(index=False),
            "",
        ]
        print("\n".join(lines), flush=True)

    results = []
    for k in args.k:
        for name in args.configs:
            r = time_to_quality(name, k, args.times, args.slab)
            results.append(r)
            print({key: v for key, v in r.items() if key != "curve"}, flush=True)
    df = pd.DataFrame([{key: v for key, v in r.items() if key != "curve"} for r in results]).round(
        2
    )
    df.to_csv(OUT / "irem_speed.csv", index=False)
    lines += [
        f"Time-to-quality on MNI152 (box stacks, PSNR on the central {args.slab} axial slices, "
        f"GT data range, whole slab):",
        "",
        df.to_markdown(index=False),
        "",
        "Peak resident memory of this process: "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB",
        "",
    ]
    (OUT / "irem_speed.md").write_text("\n".join(lines))
    print("\n".join(lines[-6:]))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.k), figsize=(6 * len(args.k), 4), squeeze=False)
    for ax, k in zip(axes[0], args.k, strict=True):
        for r in (r for r in results if r["k"] == k):
            t, p = zip(*r["curve"], strict=True) if r["curve"] else ((), ())
            ax.plot(t, p, label=r["config"])
        rk = [r for r in results if r["k"] == k]
        if rk:
            ax.scatter(
                [rk[0]["bspline_s"]],
                [rk[0]["bspline_psnr"]],
                marker="s",
                color="k",
                label="B-spline",
            )
        ax.set(title=f"k = {k}", xlabel="training wall time (s)", ylabel="PSNR (dB), central slab")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "irem_psnr_vs_time.png", dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
