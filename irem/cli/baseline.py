"""``irem baseline``: multi-stack B-spline or SRR on LR stacks."""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from irem.cli.common import (
    FMT,
    add_device_args,
    add_stack_args,
    add_subcommand,
    bars,
    nonneg_float,
    positive_int,
    request,
    set_threads,
)

#: The baselines: name, help, description and example of their sub-commands (srr last).
METHODS = (
    ("bspline", "multi-stack cubic B-spline interpolation",
     "Resample every registered stack onto the target grid with cubic B-splines and average "
     "where the stacks cover a voxel.",
     "irem baseline bspline lr/acq-*.nii.gz -o bspline.nii.gz --reference hr.nii.gz"),
    ("srr", "super-resolution reconstruction with a slice-acquisition model",
     "Solve min_x sum_k ||D_k B_k x - y_k||^2 + alpha R(x) with an oriented Gaussian or box "
     "PSF B_k (NiftyMIC's model), initialised from the B-spline result.",
     "irem baseline srr lr/acq-*.nii.gz -o srr.nii.gz --psf box --regulariser tv"),
)  # fmt: skip


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``irem baseline`` to the ``irem`` parser."""
    p = sub.add_parser(
        "baseline", help="reconstruct HR with a baseline (bspline, srr)",
        description="Reconstruct HR with a baseline on the same inputs and grid as IREM.",
        epilog="example:\n  irem baseline srr lr/acq-*.nii.gz -o srr.nii.gz --psf box",
        formatter_class=FMT,
    )  # fmt: skip
    bsub = p.add_subparsers(dest="method", required=True, metavar="METHOD")
    for name, text, description, example in METHODS:
        b = add_subcommand(bsub, name, text, description, example)
        add_stack_args(b, name)
        b.set_defaults(func=run)
    b.add_argument(
        "--alpha", type=nonneg_float, nargs="+", default=None,
        help="relative regularisation weight (default, box PSF: 0.1 for tk1, 0.01 for tv, chosen "
        "on the noisy cohort's tuning split: results/tuning/README.md; Gaussian PSF: 0.03 and "
        "0.01, docs/baselines.md); several: the one whose SRR of the other LR voxels predicts "
        "--holdout of them (drawn from --seed) best, then SRR of all voxels at it",
    )  # fmt: skip
    b.add_argument("--holdout", type=nonneg_float, default=0.05,
                   help="fraction of the LR voxels held out to choose among several --alpha")
    b.add_argument("--regulariser", choices=("tk1", "tv"), default="tk1",
                   help="first-order Tikhonov or total variation")  # fmt: skip
    b.add_argument("--iterations", type=positive_int, default=None,
                   help="maximum iterations (default: the method's)")  # fmt: skip
    b.add_argument("--psf", choices=("gaussian", "box"), default="gaussian",
                   help="slice profile of the forward model")  # fmt: skip
    add_device_args(b)


def choose(
    stacks: list[Any], grid: Any, alphas: list[float], device: Any, kw: dict[str, Any],
    args: argparse.Namespace,
) -> tuple[float, dict[str, Any]]:  # fmt: skip
    """The weight of ``alphas`` chosen on ``args.holdout`` of the LR voxels, and its record."""
    from irem.training.config import TrainConfig
    from irem.training.start import best, srr_candidates, tried
    from irem.training.train import fitted_masks

    masks = fitted_masks(stacks, TrainConfig(holdout=args.holdout), args.seed)
    found = srr_candidates(stacks, grid, alphas, masks, device, **kw)
    return found[best(found)][0], {"holdout": args.holdout, "seed": args.seed,
                                   "alphas_tried": tried(found)}  # fmt: skip


def run(args: argparse.Namespace) -> None:
    """Carry out ``irem baseline``."""
    from irem.errors import InputError
    from irem.pipeline import run

    device = None
    if args.method == "srr":
        if len(args.alpha or ()) > 1 and not 0 < args.holdout < 1:
            raise InputError("--holdout must be in (0, 1) to choose among several --alpha")
        from irem.training.reconstruct import resolve_device

        device = resolve_device(args.device)
        set_threads(args.threads)

    def method(stacks: list[Any], grid: Any) -> tuple[np.ndarray, dict[str, Any]]:
        from baselines.bspline import bspline

        t0 = time.perf_counter()
        hr = bspline(stacks, grid)
        extra: dict[str, Any] = {"bspline_seconds": time.perf_counter() - t0}
        if args.method != "srr":
            return hr, extra
        from baselines.srr import TUNED_ALPHA, srr

        tuned = args.alpha is None and args.psf == "box"
        alphas = [TUNED_ALPHA[args.regulariser]] if tuned else args.alpha or [None]
        kw = {"regulariser": args.regulariser, "iterations": args.iterations, "psf": args.psf}
        t0 = time.perf_counter()
        alpha = alphas[0]
        if len(alphas) > 1:
            alpha, extra["alpha_choice"] = choose(stacks, grid, alphas, device, kw, args)
        hr, info = srr(stacks, grid, alpha=alpha, init=hr, device=device, progress=bars(args), **kw)
        extra.update(srr_seconds=time.perf_counter() - t0, srr=info, device=str(device))
        return hr, extra

    from irem.training.memory import bspline_model, srr_model

    memory = srr_model(args.regulariser) if args.method == "srr" else bspline_model()
    print(run(request(args), args.method, method, memory=memory).output)
