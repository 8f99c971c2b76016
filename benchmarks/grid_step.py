"""What a training step of the grid INR costs with its largest level hashed or dense.

A step as irem.training.train takes it (a batch of points through :class:`GridINR`, the data term's
backward pass with the grid prior, fused Adam with the grid learning rate), timed on the box of a
volume of ``--shape`` voxels of 1 mm (default: the cohort's 152x184x160 whole brain) for each
``--dense-max-nodes`` (levels above it hashed into ``model.hash_rows`` rows; the default 2^21 hashes
the whole brain's finest level, 2^23 keeps it dense). Rounds interleave the variants; the table
gives the median milliseconds per step and each variant's time over the first's.
-> results/benchmarks/grid_step.{md,csv}

  python benchmarks/grid_step.py [--threads 2] [--rounds 5]       # about a minute
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from irem.models.grid_inr import GridINR, HashedLevel
from irem.models.precision import cpu_description
from irem.training.config import IremConfig, load_config
from irem.training.reconstruct import Normaliser, build_model
from irem.training.train import build_optimizer, grid_prior

OUT = Path("results/benchmarks")


def fast_config(dense_max_nodes: int) -> IremConfig:
    """fast.yaml with levels over ``dense_max_nodes`` nodes hashed."""
    return load_config("fast", {"model.dense_max_nodes": dense_max_nodes})


def box_model(cfg: IremConfig, shape: tuple[int, int, int]) -> GridINR:
    """``cfg``'s grid INR over the box of ``shape`` voxel centres 1 mm apart (seed 0)."""
    corners = np.array([[0.0, 0.0, 0.0], [n - 1.0 for n in shape]])
    model = build_model(cfg, 0, Normaliser.of_box(corners, 1.0))
    assert isinstance(model, GridINR)
    return model


def step_seconds(model: GridINR, cfg: IremConfig, steps: int, seed: int = 0) -> float:
    """Median seconds of ``steps`` training steps (after two warm-up steps) of ``cfg``'s batch,
    prior and optimiser on random points."""
    t = cfg.train
    prior = grid_prior(t)
    opt = build_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(seed)
    times = []
    for i in range(steps + 2):
        p = torch.rand(t.batch_size, 3, generator=gen) * 2 - 1
        y = torch.rand(t.batch_size, generator=gen)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model.backward((model(p) - y).square().mean(), prior)
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[152, 184, 160])
    ap.add_argument("--dense-max-nodes", type=int, nargs="+", default=[2**21, 2**23])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per variant and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="grid_step")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    shape = tuple(args.shape)
    cfgs = {n: fast_config(n) for n in args.dense_max_nodes}
    models = {n: box_model(c, shape) for n, c in cfgs.items()}  # type: ignore[arg-type]
    rows = []
    for r in range(args.rounds):
        for n, model in models.items():
            rows.append({"round": r, "dense_max_nodes": n,
                         "seconds": step_seconds(model, cfgs[n], args.steps, seed=r)})  # fmt: skip
    runs = pd.DataFrame(rows)
    per = runs.groupby("dense_max_nodes", sort=False)["seconds"].median()
    first = per.iloc[0]
    table = pd.DataFrame({
        "dense_max_nodes": [str(n) for n in per.index],
        "hashed levels": [sum(isinstance(g, HashedLevel) for g in models[n].grids) for n in per.index],
        "ms per step": (per.to_numpy() * 1e3).round(1),
        "over the first": (per.to_numpy() / first).round(2),
    })  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    runs.to_csv(OUT / f"{args.name}.csv", index=False)
    text = (
        f"# Grid INR step cost, {'x'.join(map(str, shape))} voxels\n\n"
        f"`python benchmarks/grid_step.py --threads {args.threads} --rounds {args.rounds}`: "
        f"fast.yaml's batch, prior and optimiser, {args.threads} threads, median of "
        f"{args.rounds} interleaved rounds of {args.steps} steps. CPU: {cpu_description()}.\n\n"
        + table.to_markdown(index=False) + "\n"
    )
    (OUT / f"{args.name}.md").write_text(text, encoding="utf-8")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
