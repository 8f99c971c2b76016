"""Compare IREM configurations at a fixed number of training steps (independent of machine load).

Trains on the three box-profile stacks of the embedded MNI152 template (152x184x160) at factor k,
stops after ``steps`` optimiser steps, evaluates on the whole HR grid and prints PSNR (whole volume
and inside the brain, GT > 0) and SSIM, with the training seconds the steps took on one thread.

Usage: python benchmarks/irem_fixed_steps.py K STEPS CONFIG[:KEY=VALUE,...] [...]
  e.g. python benchmarks/irem_fixed_steps.py 4 150 fast fast:train.profile_points=1
"""

from __future__ import annotations

import sys

import torch

from irem.config import load_config
from irem.datasets import mni152_t1
from irem.grid import reference_grid
from irem.metrics import compute_metrics
from irem.simulate import simulate_stacks
from irem.train import predict, train


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__)
        return 2
    torch.set_num_threads(1)
    k, steps = int(argv[0]), int(argv[1])
    hr = mni152_t1()
    stacks = simulate_stacks(hr, k)
    grid = reference_grid(hr)
    for spec in argv[2:]:
        name, _, sets = spec.partition(":")
        over = dict(kv.split("=", 1) for kv in sets.split(",")) if sets else {}
        cfg = load_config(name, over)
        model, norm, res = train(
            stacks, cfg, seed=0, progress=False, on_step=lambda s, t, m, n: s >= steps
        )
        m = compute_metrics(predict(model, norm, grid), hr.data, mask=hr.data > 0)
        print(
            f"k={k} {spec}: {res.steps} steps, {res.training_seconds:.0f} s training, "
            f"PSNR {m['psnr']:.2f} / mask {m['psnr_mask']:.2f} / SSIM {m['ssim']:.4f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
