"""The ``irem`` command: simulate LR stacks, reconstruct HR with IREM or a baseline, score it.

Input errors end with one line ``error: ...`` on stderr and exit status 2; no output file is left
behind (every file is written under a temporary name and renamed into place).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from irem import __version__
from irem.errors import InputError

EXIT_INPUT = 2


class Parser(argparse.ArgumentParser):
    """argparse with a one-line ``error:`` message (exit 2) instead of usage plus error."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        sys.exit(EXIT_INPUT)


class FMT(argparse.HelpFormatter):
    """Show a default in the help only where it says something."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return v


def _finite_float(text: str, allow_zero: bool) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (np.isfinite(v) and (v >= 0 if allow_zero else v > 0)):
        kind = "non-negative" if allow_zero else "positive"
        raise argparse.ArgumentTypeError(f"{text!r} must be a {kind} number")
    return v


def _positive_float(text: str) -> float:
    return _finite_float(text, allow_zero=False)


def _nonneg_float(text: str) -> float:
    return _finite_float(text, allow_zero=True)


def _add_stack_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("stacks", nargs="+", metavar="STACK", help="LR stacks (NIfTI), any orientation")
    p.add_argument("-o", "--output", required=True, metavar="OUT.nii.gz", help="HR output image")
    grid = p.add_mutually_exclusive_group()
    grid.add_argument(
        "--reference",
        metavar="REF.nii.gz",
        help="reconstruct exactly on this image's grid (shape and affine); how the benchmark scores",
    )
    grid.add_argument(
        "--spacing",
        type=_positive_float,
        metavar="MM",
        help="isotropic grid of this spacing over the fixed stack's field of view "
        "(default: the fixed stack's finest spacing)",
    )
    p.add_argument(
        "--no-register",
        action="store_true",
        help="skip rigid registration (aligned, simulated stacks)",
    )
    p.add_argument(
        "--fixed-index", type=int, default=0, metavar="I", help="index of the fixed stack"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``irem`` command."""
    parser = Parser(
        prog="irem",
        description="Multi-stack MRI super-resolution with implicit neural representations (IREM, "
        "Wu et al. 2021) and its baselines, on NIfTI files in world coordinates.",
        formatter_class=FMT,
    )
    parser.add_argument("--version", action="version", version=f"irem-bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "simulate",
        help="simulate three orthogonal thick-slice LR stacks from an HR image",
        description="Write three LR stacks, each thick along one voxel axis by a factor K, named by "
        "orientation (acq-sagittal/coronal/axial.nii.gz, sagittal first), with JSON sidecars and "
        "simulation.json.",
        formatter_class=FMT,
    )
    p.add_argument("hr", metavar="HR.nii.gz", help="high-resolution ground truth")
    p.add_argument(
        "--k",
        type=_positive_int,
        required=True,
        help="down-sampling factor (slice thickness in HR voxels)",
    )
    p.add_argument("--out-dir", required=True, help="output folder (created if missing)")
    p.add_argument(
        "--profile", choices=("box", "gaussian", "none"), default="box", help="slice profile"
    )
    p.add_argument("--snr", type=_positive_float, default=None, help="add Rician noise at this SNR")
    p.add_argument("--seed", type=int, default=0, help="seed for noise and motion")
    p.add_argument(
        "--motion",
        type=_nonneg_float,
        nargs=2,
        metavar=("DEG", "MM"),
        default=None,
        help="move every stack but the sagittal one by a seeded random rigid motion",
    )
    p.add_argument(
        "--reorient", action="store_true", help="store the stacks in different voxel orientations"
    )
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "reconstruct",
        help="reconstruct HR with IREM",
        description="Register the stacks to the fixed one, train IREM on their voxels and evaluate "
        "it on a dense grid. Writes OUT and a JSON sidecar OUT.json.",
        formatter_class=FMT,
    )
    _add_stack_args(p)
    p.add_argument(
        "--config", metavar="YAML", help="IREM configuration (model/train/reconstruct sections)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. model.fourier_dim=64",
    )
    p.add_argument("--epochs", type=_positive_int, help="training epochs (overrides the config)")
    p.add_argument(
        "--time-budget",
        type=_positive_float,
        metavar="SECONDS",
        help="stop training cleanly after this wall time",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="torch device")
    p.add_argument(
        "--threads", type=_positive_int, help="CPU threads for torch (default: torch's choice)"
    )
    p.add_argument(
        "--resume", action="store_true", help="resume from the checkpoint of an interrupted run"
    )
    p.add_argument(
        "--checkpoint", metavar="PATH", help="checkpoint file (default: hidden file beside OUT)"
    )
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("baseline", help="reconstruct HR with a baseline (bspline, srr)")
    bsub = p.add_subparsers(dest="method", required=True, metavar="METHOD")
    b = bsub.add_parser(
        "bspline",
        help="multi-stack cubic B-spline interpolation",
        description="Resample every registered stack onto the target grid with cubic B-splines and "
        "average where the stacks cover a voxel.",
        formatter_class=FMT,
    )
    _add_stack_args(b)
    b.set_defaults(func=cmd_baseline)
    b = bsub.add_parser(
        "srr",
        help="super-resolution reconstruction with a slice-acquisition model",
        description="Solve min_x sum_k ||D_k B_k x - y_k||^2 + alpha R(x) with an oriented Gaussian "
        "PSF B_k (NiftyMIC's model), initialised from the B-spline result.",
        formatter_class=FMT,
    )
    _add_stack_args(b)
    b.add_argument(
        "--alpha",
        type=_nonneg_float,
        default=None,
        help="regularisation weight (default: the method's)",
    )
    b.add_argument(
        "--regulariser",
        choices=("tk1", "tv"),
        default="tk1",
        help="first-order Tikhonov or total variation",
    )
    b.add_argument(
        "--iterations",
        type=_positive_int,
        default=None,
        help="maximum iterations (default: the method's)",
    )
    b.add_argument(
        "--psf",
        choices=("gaussian", "box"),
        default="gaussian",
        help="slice profile of the forward model",
    )
    b.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="torch device")
    b.add_argument("--threads", type=_positive_int, help="CPU threads for torch")
    b.set_defaults(func=cmd_baseline)

    p = sub.add_parser(
        "metrics",
        help="PSNR/SSIM of a reconstruction against the ground truth (JSON)",
        description="PSNR and SSIM (scikit-image, data_range from the ground truth, Gaussian window "
        "sigma 1.5) over the volume and inside a mask; JSON on stdout.",
        formatter_class=FMT,
    )
    p.add_argument("pred", metavar="PRED.nii.gz")
    p.add_argument("gt", metavar="GT.nii.gz")
    p.add_argument(
        "--mask", metavar="MASK.nii.gz", help="brain mask (default: GT above --threshold x max)"
    )
    p.add_argument(
        "--threshold",
        type=_nonneg_float,
        default=0.05,
        help="relative threshold of the default mask",
    )
    p.add_argument("-o", "--output", metavar="OUT.json", help="also write the JSON here")
    p.set_defaults(func=cmd_metrics)
    return parser


def cmd_simulate(args: argparse.Namespace) -> None:
    from irem.simulate import REORIENT_CODES, move, random_rigid, reorient, simulate_stacks
    from irem.volume import load_volume, save_volume, voxel_centres, write_json

    hr = load_volume(args.hr)
    if args.k > min(hr.shape):
        raise InputError(f"--k {args.k} is larger than the smallest image extent {min(hr.shape)}")
    stacks = simulate_stacks(hr, args.k, args.profile, args.snr, args.seed)
    motions: list[list[list[float]] | None] = [None] * 3
    if args.motion is not None:
        rng = np.random.default_rng(np.random.SeedSequence([args.seed, 7]))
        centre = voxel_centres(hr.shape, hr.affine).mean(axis=0)
        for i in (1, 2):
            m = random_rigid(args.motion[0], args.motion[1], rng, centre)
            stacks[i] = move(stacks[i], m)
            motions[i] = m.tolist()
    if args.reorient:
        stacks = [
            s if c is None else reorient(s, c) for s, c in zip(stacks, REORIENT_CODES, strict=True)
        ]
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = {
        "source": str(args.hr),
        "k": args.k,
        "profile": args.profile,
        "snr": args.snr,
        "seed": args.seed,
        "motion": args.motion,
        "reorient": args.reorient,
        "version": __version__,
    }
    files = []
    for i, s in enumerate(stacks):
        path = out / f"acq-{s.name}.nii.gz"
        sidecar = {
            **params,
            "orientation": s.name,
            "thick_axis": s.thick_axis,
            "spacing_mm": [float(v) for v in s.spacing],
            "motion_applied": motions[i],
        }
        save_volume(path, s.data, s.affine, sidecar=sidecar)
        files.append(path.name)
    write_json(out / "simulation.json", {**params, "stacks": files, "motions": motions})
    print("\n".join(str(out / f) for f in files))


def _prepare(args: argparse.Namespace) -> tuple[Any, list[Any], Any]:
    from irem.pipeline import load_stacks, normalise, target_grid
    from irem.volume import check_output_path

    out = check_output_path(args.output)
    stacks = load_stacks(args.stacks)
    stacks = normalise(stacks, args.fixed_index, register=not args.no_register, seed=args.seed)
    grid = target_grid(stacks[args.fixed_index], args.reference, args.spacing)
    return out, stacks, grid


def _set_threads(n: int | None) -> None:
    if n is not None:
        import torch

        torch.set_num_threads(n)


def cmd_reconstruct(args: argparse.Namespace) -> None:
    import torch

    from irem.config import load_config, parse_set
    from irem.pipeline import describe_inputs, save_transforms, write_result
    from irem.train import predict, resolve_device, train

    t_start = time.perf_counter()
    overrides: dict[str, Any] = parse_set(args.set)
    if args.epochs is not None:
        overrides["train.epochs"] = args.epochs
    if args.time_budget is not None:
        overrides["train.time_budget"] = args.time_budget
    cfg = load_config(args.config, overrides)
    device = resolve_device(args.device)
    _set_threads(args.threads)
    out, stacks, grid = _prepare(args)
    ckpt = Path(args.checkpoint) if args.checkpoint else out.with_name(f".{out.name}.ckpt.pt")
    model, norm, result = train(
        stacks,
        cfg,
        seed=args.seed,
        device=device,
        checkpoint=ckpt,
        resume=args.resume,
        progress=not args.quiet,
    )
    t_eval = time.perf_counter()
    hr = predict(
        model, norm, grid, chunk=cfg.reconstruct.chunk, device=device, progress=not args.quiet
    )
    eval_seconds = time.perf_counter() - t_eval
    tfms = save_transforms(out, stacks, args.fixed_index) if not args.no_register else []
    sidecar = {
        "method": "irem",
        "inputs": describe_inputs(args.stacks, stacks, args.fixed_index),
        "registered": not args.no_register,
        "transform_files": tfms,
        "config": cfg.to_dict(),
        "seed": args.seed,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "normaliser": norm.to_dict(),
        "training_seconds": result.training_seconds,
        "evaluation_seconds": eval_seconds,
        "final_loss": result.final_loss,
        "epochs_completed": result.epochs_completed,
        "steps": result.steps,
        "stopped_by": result.stopped_by,
        "resumed": result.resumed,
        "loss_per_epoch": result.loss_history,
    }
    write_result(out, hr, grid, sidecar, t_start)
    if ckpt.exists() and not args.checkpoint:
        ckpt.unlink()
    print(out)


def cmd_baseline(args: argparse.Namespace) -> None:
    from irem.pipeline import describe_inputs, save_transforms, write_result

    t_start = time.perf_counter()
    extra: dict[str, Any] = {}
    if args.method == "srr":
        from irem.train import resolve_device

        device = resolve_device(args.device)
        _set_threads(args.threads)
    out, stacks, grid = _prepare(args)
    from baselines.bspline import bspline

    t0 = time.perf_counter()
    hr = bspline(stacks, grid)
    extra["bspline_seconds"] = time.perf_counter() - t0
    if args.method == "srr":
        from baselines.srr import srr

        kwargs: dict[str, Any] = {"regulariser": args.regulariser, "psf": args.psf}
        if args.alpha is not None:
            kwargs["alpha"] = args.alpha
        if args.iterations is not None:
            kwargs["iterations"] = args.iterations
        t0 = time.perf_counter()
        hr, info = srr(stacks, grid, device=device, init=hr, progress=not args.quiet, **kwargs)
        extra["srr_seconds"] = time.perf_counter() - t0
        extra["srr"] = info
        extra["device"] = str(device)
    tfms = save_transforms(out, stacks, args.fixed_index) if not args.no_register else []
    sidecar = {
        "method": args.method,
        "inputs": describe_inputs(args.stacks, stacks, args.fixed_index),
        "registered": not args.no_register,
        "transform_files": tfms,
        "seed": args.seed,
        **extra,
    }
    write_result(out, hr, grid, sidecar, t_start)
    print(out)


def cmd_metrics(args: argparse.Namespace) -> None:
    from irem.metrics import compute_metrics
    from irem.volume import load_volume, write_json

    pred, gt = load_volume(args.pred), load_volume(args.gt)
    if pred.shape != gt.shape or not np.allclose(pred.affine, gt.affine, atol=1e-3):
        raise InputError(f"{args.pred} is not on the grid of {args.gt} (shape or affine differ)")
    mask = None
    if args.mask:
        m = load_volume(args.mask)
        if m.shape != gt.shape:
            raise InputError(f"{args.mask}: mask shape {m.shape} differs from {gt.shape}")
        mask = m.data > 0.5
    res = compute_metrics(pred.data, gt.data, mask=mask, threshold=args.threshold)
    res.update({"pred": str(args.pred), "gt": str(args.gt), "mask_file": args.mask})
    if args.output:
        write_json(args.output, res)
    json.dump(res, sys.stdout, indent=2)
    sys.stdout.write("\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``irem`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
