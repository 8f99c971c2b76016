"""IREM time-to-quality on CPU: PSNR in the brain against training time, with the baselines.

Trains one IREM configuration of the workflow on the three k-fold box-profile stacks of the
embedded MNI152 template on one thread, and measures PSNR inside the workflow's brain mask on the
whole HR grid at the asked training times and along the way (evaluation time is not training time).
Also runs the baselines on the same stacks (multi-stack B-spline; SRR tk1 with the box and the
Gaussian PSF) for their PSNR and seconds. Configurations: ``paper`` is the workflow's ``irem``
method, ``fast`` its ``iremfast`` (their ``--config``/``--set`` options read from
config/config.yaml), ``fast-centres`` the fast one trained on LR voxel centres only. The crop is
the workflow's (config/config.yaml) unless ``--crop`` is given (``--crop 80 96 80``: the crop of
the committed results; ``--crop none``: the whole 152x184x160 brain crop). The run's time budget
is the largest of ``--times``; with the fast configuration's budget schedule (the learning rate
anneals over the budget) run each budget separately. PSNR/SSIM: irem.metrics.compute_metrics.

  python benchmarks/irem_quality.py --k 4 --config fast --times 120
  -> results/benchmarks/irem_quality/k{K}_{LABEL}_{BUDGET}s.json
     (tabulated by benchmarks/irem_speed_report.py)

Two quality runs side by side (one thread each) use the two cores as the workflow does.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch
from _workflow import OUT, load_with_mask, method_config, scores, workflow_crop

from irem.config import parse_set
from irem.grid import reference_grid
from irem.simulate import simulate_stacks
from irem.train import predict, train

#: name -> (workflow method, overrides)
CONFIGS = {
    "paper": ("irem", {}),
    "fast": ("iremfast", {}),
    "fast-centres": ("iremfast", {"train.profile_spacing_mm": 0, "train.profile_points": 1}),
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
    hr, mask = load_with_mask("mni152_t1", crop)
    stacks = simulate_stacks(hr, k)
    grid = reference_grid(hr)

    def psnr(volume) -> float:
        return float(scores(volume, hr, mask)["psnr_mask"])

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
    method, over = CONFIGS[name]
    budget = {"train.time_budget": max(times), "train.epochs": 10**6}
    cfg = method_config(method, {**over, **(sets or {}), **budget})
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

    model, norm, res = train(stacks, cfg, seed=seed, progress=False, on_step=probe, grid=grid)
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


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--k", type=int, required=True, choices=(4, 8))
    ap.add_argument("--config", required=True, choices=list(CONFIGS))
    ap.add_argument("--times", type=float, nargs="+", default=[60, 120, 300])
    ap.add_argument("--crop", nargs="+", default=None, help="3 sizes, or none (default: workflow)")
    ap.add_argument("--probes", type=int, default=40, help="PSNR probes along the run")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--seed", type=int, default=0, help="seed of the network and sample order")
    args = ap.parse_args()
    if args.crop is None:
        crop = workflow_crop()
    else:
        crop = None if args.crop == ["none"] else [int(c) for c in args.crop]
    r = quality(args.k, args.config, args.times, crop, parse_set(args.set), args.probes, args.seed)
    # the file is named after the run's label: config, overrides, seed
    label = r["config"].replace(" ", "_")
    out = OUT / "irem_quality" / f"k{args.k}_{label}_{max(args.times):g}s.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(r, indent=1), encoding="utf-8")
    tmp.replace(out)
    print({key: v for key, v in r.items() if key != "curve"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
