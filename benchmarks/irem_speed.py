"""IREM on CPU: training throughput against the matmul bound, inference speed, and time-to-quality.

Three sub-commands; each prints what it measures and writes it under results/benchmarks/:

  throughput [--threads 1 2] [--rounds 5]
      The paper's network (batch 2500): training samples/s of several variants (fused Adam,
      torch.compile, bf16 autocast) and dense-grid inference samples/s, against two bounds measured
      in the same run: the issue's (a 2500x256 @ 256x256 float32 product's GFLOP/s over the
      network's 7.47 MFLOP per training sample, 6 x multiply-adds) and the own-GEMM bound (the
      step's 53 matrix products, each timed alone). The bound and the variants are measured in
      interleaved rounds; the table gives medians and ranges over rounds. -> irem_throughput.{md,csv}

  quality --k K --config NAME [--times 60 120 300] [--crop 80 96 80] [--set KEY=VALUE ...] [--seed N]
      Trains one configuration on the three k-fold box-profile stacks of the embedded MNI152
      template (by default the workflow's 80x96x80 centre crop; ``--crop none``: the whole
      152x184x160 brain crop) on one thread, and measures PSNR inside the brain (GT > 0, the
      workflow's mask) on the whole HR grid at the asked training times and along the way;
      evaluation time is not training time. Also runs the two baselines as the workflow does
      (multi-stack B-spline; SRR tk1 with the box PSF) for their PSNR and seconds.
      The run's time budget is the largest of ``--times``; with the fast configuration's budget
      schedule (the learning rate anneals over the budget) run each budget separately.
      -> irem_quality/k{K}_{NAME}_{BUDGET}s.json

  report
      One table of all quality runs (PSNR at the asked times, time to reach the B-spline and SRR
      PSNR) -> irem_speed.{md,csv}, and PSNR versus training time -> irem_psnr_vs_time.png.

Two quality runs side by side (one thread each) use the two cores as the workflow does.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from irem.config import load_config, parse_set
from irem.datasets import crop_centre, mni152_t1
from irem.grid import Grid, reference_grid
from irem.metrics import compute_metrics
from irem.model import IREM, for_inference
from irem.simulate import simulate_stacks
from irem.train import predict, train

OUT = Path("results/benchmarks")


def _best_seconds(fn: Callable[[], object], seconds: float, warmup: int = 3) -> float:
    """The fastest of repeated calls of ``fn`` over about ``seconds`` (after ``warmup`` calls)."""
    for _ in range(warmup):
        fn()
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_gflops(seconds: float = 2.0) -> float:
    """float32 GFLOP/s of the paper's typical layer product, 2500x256 @ 256x256 (the issue's bound)."""
    a, b, c = torch.randn(2500, 256), torch.randn(256, 256), torch.empty(2500, 256)
    return 2 * 2500 * 256 * 256 / _best_seconds(lambda: torch.mm(a, b, out=c), seconds) / 1e9


def gemm_seconds(model: torch.nn.Module, batch: int, seconds: float = 0.3) -> float:
    """Time of one training step's matrix products alone, each timed in isolation (best of repeats):
    per Linear, the forward product, the weight gradient and (but for the first layer, whose input
    needs no gradient) the input gradient."""
    total = 0.0
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    for i, lin in enumerate(linears):
        n_in, n_out = lin.in_features, lin.out_features
        shapes = [(batch, n_in, n_out), (n_out, batch, n_in)] + (
            [(batch, n_out, n_in)] if i else []
        )
        for m, k, n in shapes:
            a, b, c = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
            total += _best_seconds(lambda a=a, b=b, c=c: torch.mm(a, b, out=c), seconds)
    return total


def flops_per_sample(model: torch.nn.Module) -> float:
    """Forward and backward FLOPs of the Linear layers per sample (6 x multiply-adds)."""
    macs = sum(
        m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)
    )
    return 6.0 * macs


TRAINING_VARIANTS = {
    # name: (autocast bf16, fused Adam, torch.compile)
    "fp32, foreach Adam (PyTorch default)": (False, False, False),
    "fp32, fused Adam": (False, True, False),
    "fp32, fused Adam, torch.compile": (False, True, True),
}
BF16 = "bf16 autocast, fused Adam"
INFERENCE_VARIANTS = [(False, 8192), (True, 65_536), (True, 8192)]


def training_block(
    bf16: bool, fused: bool, compiled: bool, steps: int = 3, batch: int = 2500
) -> Callable[[], None]:
    """``steps`` training steps of the paper's network as one call, warmed up (and compiled);
    random coordinates: the cost does not depend on the data."""
    model = IREM()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=fused)
    x, y = torch.rand(batch, 3) * 2 - 1, torch.rand(batch)
    net = torch.compile(model) if compiled else model

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            pred = net(x)
        loss = torch.mean((pred.float() - y) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up (and compilation)
        step()

    def block() -> None:
        for _ in range(steps):
            step()

    return block


def inference_call(folded: bool, chunk: int) -> Callable[[], object]:
    """One dense-grid evaluation of ``chunk`` points by a paper network (eval mode, no autograd)."""
    model = IREM().eval()
    net = for_inference(model) if folded else model
    x = torch.rand(chunk, 3) * 2 - 1

    def call() -> object:
        with torch.inference_mode():
            return net(x)

    call()  # warm-up
    return call


def predict_rate(size: int = 128) -> float:
    """End-to-end dense-grid evaluation samples/s of :func:`irem.train.predict` (paper network)."""
    from irem.train import Normaliser

    grid = Grid(shape=(size,) * 3, affine=np.eye(4))
    norm = Normaliser(centre=np.full(3, size / 2), half_extent=size / 2, intensity_scale=1.0)
    model = IREM().eval()
    t0 = time.perf_counter()
    predict(model, norm, grid)
    return grid.size / (time.perf_counter() - t0)


def throughput_table(threads: int, rounds: int = 5) -> tuple[list[str], pd.DataFrame]:
    """Training and inference rates of the paper's network against the matmul bound.

    This machine's speed drifts by 10-20% over minutes, so the bound and every variant are
    measured ``rounds`` times, interleaved: each round measures the bound, then each variant (best
    of repeated calls over a few seconds), and a variant's % of the bound is taken per round. The
    table gives the median over rounds and the range.
    """
    torch.set_num_threads(threads)
    fps = flops_per_sample(IREM())
    own = 2500 / gemm_seconds(IREM(), 2500)
    calls: list[tuple[str, Callable[[], object], int, float]] = []
    for name, flags in TRAINING_VARIANTS.items():
        try:
            calls.append((f"training: {name}", training_block(*flags), 3 * 2500, 3.0))
        except Exception as exc:  # torch.compile needs a working C++ toolchain
            print(f"{name}: failed ({type(exc).__name__}: {exc})".splitlines()[0], flush=True)
    for folded, chunk in INFERENCE_VARIANTS:
        what = "BatchNorm folded" if folded else "eval mode"
        calls.append(
            (f"inference: {what}, chunks of {chunk}", inference_call(folded, chunk), chunk, 2.0)
        )
    raw = []
    for r in range(rounds):
        bound = matmul_gflops(1.0) * 1e9 / fps
        for run, fn, samples, seconds in calls:
            rate = samples / _best_seconds(fn, seconds, warmup=0)  # warmed up when built
            raw.append({"round": r, "run": run, "samples/s": rate, "bound": bound})
        print(f"round {r + 1}/{rounds}: bound {bound:.0f} samples/s", flush=True)
    df = pd.DataFrame(raw)
    inference = df["run"].str.startswith("inference")
    flops = np.where(inference, 1 / 3, 1)  # forward only: a third of the training FLOPs per sample
    df["pct"] = 100 * df["samples/s"] * flops / df["bound"]
    df["own pct"] = 100 * df["samples/s"] * flops / own
    best_train = df[~inference].groupby("round")["samples/s"].max()
    df["x"] = np.where(inference, df["samples/s"] / df["round"].map(best_train), np.nan)
    rows = []
    for run, g in df.groupby("run", sort=False):
        rows.append(
            {
                "threads": threads,
                "run": run,
                "samples/s": g["samples/s"].median(),
                "x best fp32 training": g["x"].median(),
                "% of matmul bound": g["pct"].median(),
                "% range over rounds": f"{g['pct'].min():.1f}-{g['pct'].max():.1f}",
                "% of own-GEMM bound": g["own pct"].median(),
            }
        )
    # bf16 is ~20x slower here (no bf16 arithmetic on AVX2): one step, once.
    bound = matmul_gflops(1.0) * 1e9 / fps
    bf16 = 2500 / _best_seconds(training_block(True, True, False, steps=1), 1.0)
    rows.append(
        {
            "threads": threads,
            "run": f"training: {BF16} (once)",
            "samples/s": bf16,
            "% of matmul bound": 100 * bf16 / bound,
            "% of own-GEMM bound": 100 * bf16 / own,
        }
    )
    rate = predict_rate()
    rows.append(
        {
            "threads": threads,
            "run": "inference: irem.train.predict on a 128^3 grid (default chunks, coordinates too; once)",
            "samples/s": rate,
            "x best fp32 training": rate / best_train.median(),
            "% of matmul bound": 100 * rate / bound / 3,
            "% of own-GEMM bound": 100 * rate / own / 3,
        }
    )
    out = pd.DataFrame(rows)
    head = [
        f"{threads} thread(s), {rounds} interleaved rounds: 2500x256 @ 256x256 float32 product "
        f"{df['bound'].median() * fps / 1e9:.0f} GFLOP/s (median; "
        f"{df['bound'].min() * fps / 1e9:.0f}-{df['bound'].max() * fps / 1e9:.0f}), "
        f"{fps / 1e6:.2f} MFLOP per training sample: matmul bound {df['bound'].median():.0f} "
        f"samples/s; own-GEMM bound (the step's {3 * 18 - 1} products timed one by one, once) "
        f"{own:.0f} samples/s.",
        "",
    ]
    return head, out.round(
        {
            "samples/s": 0,
            "x best fp32 training": 2,
            "% of matmul bound": 1,
            "% of own-GEMM bound": 1,
        }
    )


# name: (packaged config, overrides) -- "paper" is the workflow's `irem` method (the paper's network
# and optimiser with lr 1e-3, config/config.yaml), "fast" its `iremfast` method.
CONFIGS = {
    "paper": ("paper", {"train.lr": 1e-3}),
    "fast": ("fast", {}),
    "fast-centres": ("fast", {"train.profile_points": 1}),
}


def quality(
    k: int,
    name: str,
    times: list[float],
    crop: list[int] | None,
    sets: dict[str, str] | None = None,
    probes: int = 40,
    seed: int = 0,
) -> dict:
    """Train one configuration; PSNR inside the brain at the asked training times and on the way."""
    from baselines.bspline import bspline
    from baselines.srr import srr

    torch.set_num_threads(1)
    hr = mni152_t1()
    if crop:
        hr = crop_centre(hr, crop)
    stacks = simulate_stacks(hr, k)
    grid = reference_grid(hr)
    mask = hr.data > 0

    def psnr(volume) -> float:
        return float(compute_metrics(volume, hr.data, mask=mask)["psnr_mask"])

    runs = {  # keys of BASELINES
        "bspline": lambda: bspline(stacks, grid),
        "srr": lambda: srr(stacks, grid, regulariser="tk1", psf="box", progress=False)[0],
        "srr_gauss": lambda: srr(stacks, grid, regulariser="tk1", psf="gaussian", progress=False)[
            0
        ],
    }
    baselines = {}
    for key, run in runs.items():
        t0 = time.perf_counter()
        out = run()
        baselines |= {f"{key}_s": time.perf_counter() - t0, f"{key}_psnr": psnr(out)}
    cfg_name, over = CONFIGS[name]
    budget = {"train.time_budget": max(times), "train.epochs": 10**6}
    cfg = load_config(cfg_name, {**over, **(sets or {}), **budget})
    pending = sorted(times)
    at: dict[str, float] = {}
    curve: list[tuple[float, int, float]] = []
    next_probe = [0.0]

    def probe(steps: int, seconds: float, model: torch.nn.Module, norm) -> None:
        due = bool(pending) and seconds >= pending[0]
        if not due and seconds < next_probe[0]:
            return
        next_probe[0] = seconds + max(times) / probes
        p = psnr(predict(model, norm, grid))
        curve.append((seconds, steps, p))
        while pending and seconds >= pending[0]:
            at[f"psnr_{pending.pop(0):g}s"] = p

    model, norm, res = train(stacks, cfg, seed=seed, progress=False, on_step=probe)
    t0 = time.perf_counter()
    final = psnr(predict(model, norm, grid))
    predict_s = time.perf_counter() - t0
    curve.append((res.training_seconds, res.steps, final))
    for t in pending:  # the budget ended just before this probe time
        at[f"psnr_{t:g}s"] = final
    return {
        "config": name
        + "".join(f" {key}={v}" for key, v in (sets or {}).items())
        + (f" seed={seed}" if seed else ""),
        "seed": seed,
        "k": k,
        "shape": list(hr.shape),
        "crop": crop,
        "times": sorted(times),
        "steps": res.steps,
        "train_s": res.training_seconds,
        "samples_per_s": res.steps * cfg.train.batch_size / res.training_seconds,
        "predict_s": predict_s,
        "final_psnr": final,
        **at,
        **baselines,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "curve": curve,
    }


BASELINES = {
    "bspline": "B-spline",
    "srr": "SRR box (tk1, box PSF: the workflow's)",
    "srr_gauss": "SRR Gaussian (tk1, Gaussian PSF: NiftyMIC's)",
}


def first_time(curve: list[list[float]], target: float) -> float | None:
    """Training seconds of the first probe at or above ``target`` dB."""
    return next((t for t, _, p in curve if p >= target), None)


def report() -> int:
    runs = [json.loads(f.read_text()) for f in sorted((OUT / "irem_quality").glob("*.json"))]
    if not runs:
        print("no quality runs under results/benchmarks/irem_quality", file=sys.stderr)
        return 2
    all_times = sorted({t for r in runs for t in r["times"]})
    ks = sorted({r["k"] for r in runs})
    # The baselines are deterministic: any run of a k gives them (older runs lack the Gaussian PSF).
    baselines = {
        (k, key): next(
            (r[f"{key}_psnr"], r[f"{key}_s"]) for r in runs if r["k"] == k and f"{key}_psnr" in r
        )
        for k in ks
        for key in BASELINES
        if any(r["k"] == k and f"{key}_psnr" in r for r in runs)
    }
    rows = []
    for r in runs:
        row = {"k": r["k"], "config": r["config"], "budget s": max(r["times"])}
        row |= {f"PSNR @ {t:g} s": r.get(f"psnr_{t:g}s") for t in all_times}
        row |= {"steps": r["steps"], "LR voxels/s": r["samples_per_s"]}
        for key, name in BASELINES.items():
            if (r["k"], key) in baselines:
                reached = first_time(r["curve"], baselines[r["k"], key][0])
                row[f"s to {name.split(' (')[0]}"] = "-" if reached is None else round(reached, 1)
        row |= {"evaluate s": r["predict_s"], "peak MiB": r["peak_rss_mib"]}
        rows.append(row)
    df = pd.DataFrame(rows).sort_values(["k", "config", "budget s"]).round(2)
    df.to_csv(OUT / "irem_speed.csv", index=False)
    base_df = pd.DataFrame(
        [
            {"k": k, "baseline": BASELINES[key], "PSNR": psnr, "seconds": secs}
            for (k, key), (psnr, secs) in baselines.items()
        ]
    ).round(2)
    text = [
        "# IREM time-to-quality on one CPU thread",
        "",
        "PSNR (dB) inside the brain on the whole HR grid, MNI152 box-profile stacks; times are "
        "training seconds (evaluation excluded); 's to X': first probe at or above the PSNR of X, "
        "'-': not reached. Each row is one run whose time budget is 'budget s' (the fast "
        "configuration anneals its learning rate over the budget). Written by "
        "`python benchmarks/irem_speed.py report`.",
        "",
        df.astype(object).where(df.notna(), "").to_markdown(index=False),
        "",
        "Baselines on the same stacks and grid (one thread; seconds of the whole reconstruction):",
        "",
        base_df.to_markdown(index=False),
        "",
    ]
    (OUT / "irem_speed.md").write_text("\n".join(text))
    print("\n".join(text))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ks), figsize=(6 * len(ks), 4.2), squeeze=False)
    for ax, k in zip(axes[0], ks, strict=True):
        rk = [r for r in runs if r["k"] == k]
        for r in rk:
            t, _, p = zip(*r["curve"], strict=True)
            ax.plot(t, p, marker=".", label=f"IREM {r['config']}, {max(r['times']):g} s budget")
        for (key, name), style in zip(BASELINES.items(), "s^v", strict=True):
            if (k, key) in baselines:
                psnr, secs = baselines[k, key]
                ax.scatter([secs], [psnr], marker=style, color="k", zorder=3, label=name)
                ax.axhline(psnr, color="k", lw=0.6, ls="--")
        ax.set(
            title=f"k = {k}, {'x'.join(map(str, rk[0]['shape']))}",
            xlabel="seconds",
            ylabel="PSNR in the brain (dB)",
        )
        lowest = min(psnr for (kk, _), (psnr, _) in baselines.items() if kk == k)
        ax.set_ylim(bottom=lowest - 10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "irem_psnr_vs_time.png", dpi=120)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="command", required=True)
    tp = sub.add_parser("throughput")
    tp.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    tp.add_argument("--rounds", type=int, default=5, help="interleaved measurement rounds")
    q = sub.add_parser("quality")
    q.add_argument("--k", type=int, required=True, choices=(4, 8))
    q.add_argument("--config", required=True, choices=list(CONFIGS))
    q.add_argument("--times", type=float, nargs="+", default=[60, 120, 300])
    q.add_argument("--crop", nargs="+", default=["80", "96", "80"], help="3 sizes, or none")
    q.add_argument("--probes", type=int, default=40, help="PSNR probes along the run")
    q.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    q.add_argument("--seed", type=int, default=0, help="seed of the network and sample order")
    sub.add_parser("report")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.command == "throughput":
        lines = [f"# Paper IREM throughput on CPU (torch {torch.__version__})", ""]
        frames = []
        for threads in args.threads:
            head, df = throughput_table(threads, args.rounds)
            lines += head + [df.to_markdown(index=False), ""]
            frames.append(df)
        lines.append(
            f"Peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
        )
        pd.concat(frames).to_csv(OUT / "irem_throughput.csv", index=False)
        (OUT / "irem_throughput.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return 0
    if args.command == "quality":
        crop = None if args.crop == ["none"] else [int(c) for c in args.crop]
        sets = parse_set(args.set)
        r = quality(args.k, args.config, args.times, crop, sets, args.probes, args.seed)
        # the file is named after the run's label: config, overrides, seed
        label = r["config"].replace(" ", "_")
        out = OUT / "irem_quality" / f"k{args.k}_{label}_{max(args.times):g}s.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(r, indent=1))
        tmp.replace(out)
        print({key: v for key, v in r.items() if key != "curve"})
        return 0
    return report()


if __name__ == "__main__":
    sys.exit(main())
