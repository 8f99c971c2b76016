"""The ``irem`` command: simulate LR stacks, reconstruct HR with IREM or a baseline, sample a saved
model, score a reconstruction, write datasets and report.

Input errors end with one line ``error: ...`` on stderr and exit status 2; no output file is left
behind (every file is written under a temporary name and renamed into place). Log messages go to
stderr (``-q``: warnings only, ``-v``: debug) and, with ``--log FILE``, to that file as well.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from irem import __version__
from irem.errors import InputError

EXIT_INPUT = 2
log = logging.getLogger("irem.cli")


class Parser(argparse.ArgumentParser):
    """argparse with a one-line ``error:`` message (exit 2) instead of usage plus error."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        sys.exit(EXIT_INPUT)


class FMT(argparse.HelpFormatter):
    """Show a default in the help only where it says something; keep examples as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        head, sep, example = text.partition("example:\n")
        filled = super()._fill_text(head, width, indent) if head.strip() else ""
        return filled + (f"example:\n{example}" if sep else "")

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


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _add_output_options(p: argparse.ArgumentParser, top: bool) -> None:
    """``-v``, ``-q`` and ``--log``: on the main parser, and on every sub-command (where they only
    override what was given before the sub-command)."""
    hide = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument(
        "-v", "--verbose", action="count", help="more messages (debug)", **({"default": 0} | hide)
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress output and warnings only",
        **({"default": False} | hide),
    )
    p.add_argument(
        "--log",
        metavar="FILE",
        help="also write log messages to FILE",
        **({"default": None} | hide),
    )


def _command(
    sub: argparse._SubParsersAction, name: str, help: str, description: str, example: str
) -> argparse.ArgumentParser:
    """A sub-command parser with its description and a usage example in the epilog."""
    p = sub.add_parser(
        name,
        help=help,
        description=description,
        epilog="example:\n" + textwrap.indent(example.strip(), "  "),
        formatter_class=FMT,
    )
    _add_output_options(p, top=False)
    return p


def _add_grid_args(p: argparse.ArgumentParser, what: str) -> None:
    grid = p.add_mutually_exclusive_group()
    grid.add_argument(
        "--reference",
        metavar="REF.nii.gz",
        help="exactly this image's grid (shape and affine); how the benchmark scores",
    )
    grid.add_argument(
        "--spacing",
        type=_positive_float,
        metavar="MM",
        help=f"isotropic grid of this spacing over the fixed stack's field of view (default: {what})",
    )


def _add_stack_args(p: argparse.ArgumentParser, method: str) -> None:
    """Inputs, output, grid, registration and acquisition options of ``method`` (irem, srr or
    bspline)."""
    p.add_argument(
        "stacks",
        nargs="+",
        metavar="STACK",
        help="LR stacks, any orientation: NIfTI files, or directories holding one DICOM series each",
    )
    p.add_argument("-o", "--output", required=True, metavar="OUT.nii.gz", help="HR output image")
    _add_grid_args(p, "the fixed stack's finest spacing")
    p.add_argument(
        "--no-register",
        action="store_true",
        help="skip rigid registration (aligned, simulated stacks)",
    )
    p.add_argument(
        "--fixed-index", type=int, default=0, metavar="I", help="index of the fixed stack"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument(
        "--max-memory",
        type=_positive_float,
        metavar="GB",
        help="stop before any work when the estimated peak memory exceeds GB (it always stops when "
        "the estimate exceeds the available memory; -v prints the estimate)",
    )
    _add_acquisition_args(p, method)


#: What each method does with --thickness, --stack-masks and --mask (help texts).
_ACQUISITION_USE = {
    "irem": (
        "IREM spreads its slice-profile points over the thickness (with train.profile_points > 1)",
        "not used for training",
        "; training uses only the LR voxels within about one LR voxel of it (those containing a "
        "mask voxel centre, dilated by one LR voxel)",
    ),
    "srr": (
        "SRR's PSF is that wide through-plane (box width or Gaussian FWHM)",
        "not in the data term (weight 0)",
        "",
    ),
    "bspline": (
        "ignored by B-spline interpolation, which has no slice profile; recorded in the sidecar",
        "not interpolated: a grid point takes no value from a stack whose nearest LR voxel is "
        "outside that stack's mask",
        "",
    ),
}


def _add_acquisition_args(p: argparse.ArgumentParser, method: str) -> None:
    """``--thickness``, ``--stack-masks`` and ``--mask``, with what ``method`` does with them."""
    thick, stack_mask, mask = _ACQUISITION_USE[method]
    g = p.add_argument_group("acquisition (real scans)")
    g.add_argument(
        "--thickness",
        type=_positive_float,
        nargs="+",
        metavar="MM",
        help="slice thickness when it differs from the slice spacing (overlapping slices, or "
        "gaps): one value for all stacks or one per stack, in the order of STACK; "
        f"{thick}; e.g. --thickness 2 for 2 mm slices every 1.5 mm "
        "(default: each stack's spacing along its thick axis, or a DICOM series' Slice "
        "Thickness)",
    )
    g.add_argument(
        "--stack-masks",
        nargs="+",
        metavar="MASK",
        help="one mask per stack, on that stack's grid (same shape and affine), in the order of "
        f"STACK; LR voxels outside it are {stack_mask}; e.g. --stack-masks m1.nii.gz m2.nii.gz "
        "m3.nii.gz; 'auto': found in each stack (threshold at the half-height of the edge above "
        "the background, largest component, holes filled; written as "
        "OUT_stack-<name>_desc-auto_mask.nii.gz)",
    )
    g.add_argument(
        "--mask",
        metavar="MASK.nii.gz",
        help="mask on the target grid (a mask on another grid in the fixed stack's world space is "
        f"resampled to it, nearest neighbour): the output is 0 outside it{mask}; e.g. --mask "
        "brain.nii.gz; 'auto': found in the B-spline of the registered stacks (threshold at the "
        "half-height of the edge above the background, largest component, holes filled; written "
        "as OUT_desc-auto_mask.nii.gz)",
    )
    g.add_argument(
        "--n4",
        action="store_true",
        help="N4 bias-field correction of each stack before registration (inside its stack mask, "
        "else inside Otsu's foreground); log fields written as OUT_stack-<name>_desc-n4_logfield"
        ".nii.gz",
    )
    g.add_argument(
        "--packages",
        type=_positive_int,
        default=1,
        metavar="N",
        help="each stack was acquired as N interleaved packages (slices i, i+N, ...): after the "
        "stacks, register each package on its own (to their B-spline) and reconstruct from the "
        "packages",
    )


def _add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="torch device")
    p.add_argument(
        "--threads", type=_positive_int, help="CPU threads for torch (default: torch's choice)"
    )


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "simulate",
        "simulate three orthogonal thick-slice LR stacks from an HR image",
        "Write three LR stacks, each thick along one voxel axis by a factor K, named by "
        "orientation (acq-sagittal/coronal/axial.nii.gz, sagittal first), with JSON sidecars and "
        "simulation.json.",
        "irem simulate hr.nii.gz --k 4 --out-dir lr/ --motion 5 3 --seed 1",
    )
    p.add_argument("hr", metavar="HR.nii.gz", help="high-resolution ground truth")
    p.add_argument(
        "--k",
        type=_positive_int,
        required=True,
        help="down-sampling factor: slice spacing (and, without --thickness, slice thickness) in "
        "HR voxels",
    )
    p.add_argument(
        "--thickness",
        type=_positive_float,
        metavar="T",
        help="slice thickness in HR voxels (box width or Gaussian FWHM; may be fractional): below "
        "K leaves a gap between slices, above K makes them overlap; the NIfTI files keep only the "
        "spacing, so reconstruct with the methods' --thickness in mm (simulation.json and the "
        "sidecars give it as slice_thickness_mm, one per stack in the order of simulation.json's "
        "stacks); e.g. --k 4 --thickness 2 (default: K)",
    )
    p.add_argument("--out-dir", required=True, help="output folder (created if missing)")
    p.add_argument(
        "--profile", choices=("box", "gaussian", "none"), default="box", help="slice profile"
    )
    noise = p.add_mutually_exclusive_group()
    noise.add_argument(
        "--snr",
        type=_positive_float,
        default=None,
        help="Rician noise of each stack at this SNR (mean white-matter signal of the noise-free "
        "HR image over the noise sigma of each channel; see --wm-mask)",
    )
    noise.add_argument(
        "--hr-snr",
        type=_positive_float,
        default=None,
        help="scan-time-matched: an HR scan of this SNR (written as hr.nii.gz) and three stacks of "
        "a third of its scan time each, at T / sqrt(3) times its SNR (T: --thickness, default K)",
    )
    p.add_argument(
        "--wm-mask",
        metavar="MASK.nii.gz",
        help="white-matter mask of HR, the SNR's reference region (default: the upper half of the "
        "foreground's intensities)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for noise and motion")
    p.add_argument(
        "--subject-seed",
        type=int,
        default=None,
        help="a per-subject seed, combined with --seed for the noise",
    )
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


def _add_reconstruct(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "reconstruct",
        "reconstruct HR with IREM",
        "Register the stacks to the fixed one, train IREM on their voxels and evaluate it on a "
        "dense grid. Writes OUT and a JSON sidecar OUT.json.",
        "irem reconstruct lr/acq-*.nii.gz -o irem.nii.gz --config fast --time-per-mvoxel 30 \\\n"
        "    --time-budget 300 --save-model irem.pt",
    )
    _add_stack_args(p, "irem")
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
        "--steps",
        type=_positive_int,
        metavar="N",
        help="stop after N optimiser steps (the cap with --steps-per-mvoxel); a step budget gives "
        "the same result on any machine",
    )
    p.add_argument(
        "--steps-per-mvoxel",
        type=_positive_float,
        metavar="N",
        help="step budget of N optimiser steps per million target grid voxels",
    )
    p.add_argument(
        "--time-budget",
        type=_positive_float,
        metavar="SECONDS",
        help="stop training cleanly after this wall time (the cap with --time-per-mvoxel)",
    )
    p.add_argument(
        "--time-per-mvoxel",
        type=_positive_float,
        metavar="S",
        help="time budget of S seconds per million target grid voxels",
    )
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        help="training precision (overrides train.precision): bf16 autocast, fp32, or auto: bf16 "
        "where the device computes in bf16 natively (AVX512_BF16/AMX CPUs, bf16 GPUs)",
    )
    _add_device_args(p)
    p.add_argument(
        "--resume", action="store_true", help="resume from the checkpoint of an interrupted run"
    )
    p.add_argument(
        "--checkpoint", metavar="PATH", help="checkpoint file (default: hidden file beside OUT)"
    )
    p.add_argument(
        "--start-image",
        metavar="IMG.nii.gz",
        help="start image of a grid INR (any grid in the fixed stack's world space, resampled "
        "trilinearly; default: train.base, SRR-TV of the fitted LR voxels)",
    )
    p.add_argument(
        "--save-model",
        metavar="MODEL.pt",
        help="save the trained model, normaliser, config, transforms and grid (for irem sample)",
    )
    p.set_defaults(func=cmd_reconstruct)


def _add_baseline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "baseline",
        help="reconstruct HR with a baseline (bspline, srr)",
        description="Reconstruct HR with a baseline on the same inputs and grid as IREM.",
        epilog="example:\n  irem baseline srr lr/acq-*.nii.gz -o srr.nii.gz --psf box",
        formatter_class=FMT,
    )
    bsub = p.add_subparsers(dest="method", required=True, metavar="METHOD")
    b = _command(
        bsub,
        "bspline",
        "multi-stack cubic B-spline interpolation",
        "Resample every registered stack onto the target grid with cubic B-splines and average "
        "where the stacks cover a voxel.",
        "irem baseline bspline lr/acq-*.nii.gz -o bspline.nii.gz --reference hr.nii.gz",
    )
    _add_stack_args(b, "bspline")
    b.set_defaults(func=cmd_baseline)
    b = _command(
        bsub,
        "srr",
        "super-resolution reconstruction with a slice-acquisition model",
        "Solve min_x sum_k ||D_k B_k x - y_k||^2 + alpha R(x) with an oriented Gaussian or box "
        "PSF B_k (NiftyMIC's model), initialised from the B-spline result.",
        "irem baseline srr lr/acq-*.nii.gz -o srr.nii.gz --psf box --regulariser tv",
    )
    _add_stack_args(b, "srr")
    b.add_argument(
        "--alpha",
        type=_nonneg_float,
        default=None,
        help="relative regularisation weight (default, box PSF: 0.1 for tk1, 0.01 for tv, chosen "
        "on the noisy cohort's tuning split: results/tuning/README.md; Gaussian PSF: 0.03 and "
        "0.01, docs/baselines.md)",
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
    _add_device_args(b)
    b.set_defaults(func=cmd_baseline)


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "sample",
        "evaluate a saved IREM model on any grid",
        "Evaluate a model saved by `irem reconstruct --save-model` on its training target grid, on "
        "a reference image's grid, or on an isotropic grid over the fixed stack. Writes OUT and "
        "OUT.json.",
        "irem sample irem.pt -o irem_0.5mm.nii.gz --spacing 0.5",
    )
    p.add_argument("model", metavar="MODEL.pt", help="model file written by reconstruct")
    p.add_argument("-o", "--output", required=True, metavar="OUT.nii.gz", help="HR output image")
    _add_grid_args(p, "the training target grid")
    _add_device_args(p)
    p.set_defaults(func=cmd_sample)


def _add_metrics(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "metrics",
        "PSNR/SSIM of a reconstruction against the ground truth (JSON)",
        "PSNR and SSIM (scikit-image, data_range from the ground truth, Gaussian window sigma 1.5) "
        "over the volume and inside a mask; JSON on stdout.",
        "irem metrics irem.nii.gz hr.nii.gz --mask mask.nii.gz -o irem.metrics.json \\\n"
        "    --meta dataset=mni152_t1 --meta k=4 --meta method=irem",
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
    p.add_argument(
        "--meta",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help='store KEY: VALUE (strings) under "meta" in the JSON; repeatable',
    )
    p.set_defaults(func=cmd_metrics)


#: Sub-commands that other modules add to the parser: (module, function).
EXTERNAL_COMMANDS = (("irem.datasets", "add_dataset_parser"), ("irem.report", "add_report_parser"))


#: Sub-commands defined here; for these the other modules are not imported (a faster start).
BUILTIN_COMMANDS = frozenset({"simulate", "reconstruct", "baseline", "sample", "metrics"})


def _first_command(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (the first word that is no option or --log's value)."""
    words = iter(argv)
    for word in words:
        if word == "--log":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _add_external(sub: argparse._SubParsersAction) -> None:
    """``dataset`` and ``report``, from the modules that own them (skipped if not there)."""
    for module, func in EXTERNAL_COMMANDS:
        try:
            add = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError):
            continue
        add(sub)


def build_parser(external: bool = True) -> argparse.ArgumentParser:
    """The argument parser of the ``irem`` command (``external``: with ``dataset`` and ``report``)."""
    parser = Parser(
        prog="irem",
        description="Multi-stack MRI super-resolution with implicit neural representations (IREM, "
        "Wu et al. 2021) and its baselines, on NIfTI files in world coordinates.",
        formatter_class=FMT,
    )
    parser.add_argument("--version", action="version", version=f"irem-bench {__version__}")
    _add_output_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_simulate(sub)
    _add_reconstruct(sub)
    _add_baseline(sub)
    _add_sample(sub)
    _add_metrics(sub)
    if external:
        _add_external(sub)
    return parser


class _StderrFormatter(logging.Formatter):
    """Information as is; warnings and worse prefixed by their level (``warning: ...``)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno <= logging.INFO else f"{record.levelname.lower()}: {text}"


def setup_logging(verbose: int = 0, quiet: bool = False, log_file: str | None = None) -> None:
    """Send the ``irem`` loggers' messages to stderr (and to ``log_file``), replacing the handlers
    of an earlier call."""
    root = logging.getLogger("irem")
    for h in [h for h in root.handlers if getattr(h, "_irem_cli", False)]:
        root.removeHandler(h)
        h.close()
    detail = logging.DEBUG if verbose else logging.INFO
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING if quiet else detail)
    console.setFormatter(_StderrFormatter("%(message)s"))
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        if not Path(log_file).parent.is_dir():
            raise InputError(f"--log {log_file}: folder does not exist")
        fh = logging.FileHandler(log_file, encoding="utf-8")
        fh.setLevel(detail)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(fh)
    for h in handlers:
        h._irem_cli = True  # type: ignore[attr-defined]
        root.addHandler(h)
    root.setLevel(detail)
    root.propagate = False


def _log_to_files(message: str) -> None:
    """Record ``message`` in the ``--log`` file only (stderr already has it)."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for h in logging.getLogger("irem").handlers:
        if isinstance(h, logging.FileHandler):
            h.handle(record)


def cmd_simulate(args: argparse.Namespace) -> None:
    from irem.simulate import (
        REORIENT_CODES,
        move,
        random_rigid,
        reorient,
        simulate_scan_time_matched,
        simulate_stacks,
    )
    from irem.volume import load_volume, voxel_centres

    if args.thickness is not None and args.profile == "none":
        raise InputError("--thickness needs --profile box or gaussian ('none' takes one HR slice)")
    hr = load_volume(args.hr)
    if args.k > min(hr.shape):
        raise InputError(f"--k {args.k} is larger than the smallest image extent {min(hr.shape)}")
    if args.thickness is not None and args.thickness > min(hr.shape):
        raise InputError(
            f"--thickness {args.thickness:g} is larger than the smallest image extent "
            f"{min(hr.shape)}"
        )
    thickness = 1.0 if args.profile == "none" else float(args.thickness or args.k)
    wm = load_volume(args.wm_mask, mask=True).data if args.wm_mask else None
    noise: dict[str, Any] = {"subject_seed": args.subject_seed, "wm_mask": args.wm_mask}
    hr_scan = None
    if args.hr_snr is not None:
        stacks, hr_scan, info = simulate_scan_time_matched(
            hr, args.k, args.hr_snr, args.profile, args.seed, wm, args.subject_seed,
            thickness=args.thickness,
        )  # fmt: skip
        noise.update(info)
    else:
        stacks = simulate_stacks(
            hr, args.k, args.profile, args.snr, args.seed, wm, args.subject_seed,
            thickness=args.thickness,
        )  # fmt: skip
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
    params = {
        "source": str(args.hr),
        "k": args.k,
        "thickness": thickness,
        "slice_thickness_mm": [thickness * float(v) for v in hr.spacing],
        "profile": args.profile,
        "snr": args.snr,
        "noise": noise,
        "seed": args.seed,
        "motion": args.motion,
        "reorient": args.reorient,
        "version": __version__,
    }
    _write_simulation(Path(args.out_dir), stacks, params, motions, hr_scan)


def _write_simulation(
    out: Path, stacks: list[Any], params: dict[str, Any], motions: list[Any], hr_scan: Any
) -> None:
    """The stacks (with sidecars), the scan-time experiment's HR scan and simulation.json."""
    from irem.volume import save_volume, write_json

    out.mkdir(parents=True, exist_ok=True)
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
    if hr_scan is not None:
        save_volume(out / "hr.nii.gz", hr_scan.data, hr_scan.affine, sidecar=params)
    write_json(out / "simulation.json", {**params, "stacks": files, "motions": motions})
    print("\n".join(str(out / f) for f in files))


def _request(args: argparse.Namespace) -> Any:
    from irem.pipeline import Request

    return Request(
        stacks=list(args.stacks),
        output=args.output,
        fixed_index=args.fixed_index,
        register=not args.no_register,
        seed=args.seed,
        reference=args.reference,
        spacing=args.spacing,
        thickness=None if args.thickness is None else tuple(args.thickness),
        stack_masks=None if args.stack_masks is None else tuple(args.stack_masks),
        mask=args.mask,
        n4=args.n4,
        packages=args.packages,
        max_memory_gb=args.max_memory,
    )


def _bars(args: argparse.Namespace) -> bool:
    """Whether to draw tqdm bars of evaluation and SRR: not quiet, and stderr is a terminal."""
    return not args.quiet and sys.stderr.isatty()


def _set_threads(n: int | None) -> None:
    if n is not None:
        import torch

        torch.set_num_threads(n)


def _load_irem_config(args: argparse.Namespace) -> Any:
    from irem.config import load_config, parse_set

    overrides: dict[str, Any] = parse_set(args.set)
    for option in ("epochs", "time_budget", "time_per_mvoxel", "steps", "steps_per_mvoxel",
                   "precision"):  # fmt: skip
        if getattr(args, option) is not None:  # the option overrides train.<option>
            overrides[f"train.{option}"] = getattr(args, option)
    return load_config(args.config, overrides)


def _check_model_path(path: str | None) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if not p.parent.is_dir():
        raise InputError(f"{p.parent}: output directory does not exist")
    if p.is_dir():
        raise InputError(f"--save-model {p}: is a directory")
    return p


def _irem_sidecar(
    cfg: Any,
    device: Any,
    norm: Any,
    result: Any,
    eval_seconds: float,
    model_path: Path | None,
    start: dict[str, Any],
) -> dict[str, Any]:
    """The IREM-specific fields of the sidecar: config, device, training summary and budget."""
    import torch

    return {
        "config": cfg.to_dict(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "normaliser": norm.to_dict(),
        "training_seconds": result.training_seconds,
        "evaluation_seconds": eval_seconds,
        "final_loss": result.final_loss,
        "epochs_completed": result.epochs_completed,
        "steps": result.steps,
        "profile_points": result.profile_points,
        "start_image": start or None,
        "held_out": result.held_out or None,
        "precision": result.precision or None,
        "budget": result.budget.to_dict(),
        "stopped_by": result.stopped_by,
        "resumed": result.resumed,
        "loss_per_epoch": result.loss_history,
        "model_file": str(model_path) if model_path else None,
    }


def cmd_reconstruct(args: argparse.Namespace) -> None:
    from irem.memory import inr_model
    from irem.pipeline import run
    from irem.reconstruct import predict, resolve_device, save_model
    from irem.start import make_start
    from irem.train import train

    cfg = _load_irem_config(args)
    device = resolve_device(args.device)
    model_path = _check_model_path(args.save_model)
    _set_threads(args.threads)
    req = _request(args)
    out = Path(args.output)
    ckpt = Path(args.checkpoint) if args.checkpoint else out.with_name(f".{out.name}.ckpt.pt")
    trained: dict[str, Any] = {}

    def method(stacks: list[Any], grid: Any) -> tuple[np.ndarray, dict[str, Any]]:
        if args.start_image is not None and cfg.model.kind != "grid":
            raise InputError("--start-image needs a grid INR (--config fast)")
        start, start_info = make_start(
            stacks, grid, cfg.train, args.seed, device, args.start_image
        )
        model, norm, result = train(
            stacks,
            cfg,
            seed=args.seed,
            device=device,
            checkpoint=ckpt,
            resume=args.resume,
            progress=not args.quiet,
            target_voxels=grid.size,
            grid=grid,
            start=start,
        )
        t0 = time.perf_counter()
        chunk = cfg.reconstruct.chunk
        hr = predict(model, norm, grid, chunk=chunk, device=device, progress=_bars(args))
        trained.update(model=model, norm=norm)
        seconds = time.perf_counter() - t0
        return hr, _irem_sidecar(cfg, device, norm, result, seconds, model_path, start_info)

    done = run(req, "irem", method, mask_lr_voxels=True, memory=inr_model(cfg))
    if model_path is not None:
        save_model(
            model_path,
            trained["model"],
            trained["norm"],
            cfg,
            seed=args.seed,
            grid=done.grid,
            stacks=done.stacks,
            fixed_index=args.fixed_index,
        )
    if ckpt.exists() and not args.checkpoint:
        ckpt.unlink()
    print(done.output)


def cmd_baseline(args: argparse.Namespace) -> None:
    from irem.pipeline import run

    device = None
    if args.method == "srr":
        from irem.reconstruct import resolve_device

        device = resolve_device(args.device)
        _set_threads(args.threads)

    def method(stacks: list[Any], grid: Any) -> tuple[np.ndarray, dict[str, Any]]:
        from baselines.bspline import bspline

        t0 = time.perf_counter()
        hr = bspline(stacks, grid)
        extra: dict[str, Any] = {"bspline_seconds": time.perf_counter() - t0}
        if args.method != "srr":
            return hr, extra
        from baselines.srr import TUNED_ALPHA, srr

        kwargs: dict[str, Any] = {"regulariser": args.regulariser, "psf": args.psf}
        if args.alpha is not None:
            kwargs["alpha"] = args.alpha
        elif args.psf == "box":
            kwargs["alpha"] = TUNED_ALPHA[args.regulariser]
        if args.iterations is not None:
            kwargs["iterations"] = args.iterations
        t0 = time.perf_counter()
        hr, info = srr(stacks, grid, device=device, init=hr, progress=_bars(args), **kwargs)
        extra.update(srr_seconds=time.perf_counter() - t0, srr=info, device=str(device))
        return hr, extra

    from irem.memory import bspline_model, srr_model

    memory = srr_model(args.regulariser) if args.method == "srr" else bspline_model()
    print(run(_request(args), args.method, method, memory=memory).output)


def _sample_grid(args: argparse.Namespace, saved: Any) -> Any:
    from irem.grid import isotropic_grid, reference_grid
    from irem.volume import load_volume

    if args.reference is not None:
        return reference_grid(load_volume(args.reference))
    if args.spacing is not None:
        return isotropic_grid(saved.fixed, args.spacing)
    return saved.grid


def cmd_sample(args: argparse.Namespace) -> None:
    from irem.pipeline import write_result
    from irem.reconstruct import load_model, predict, resolve_device
    from irem.volume import check_output_path

    t_start = time.perf_counter()
    out = check_output_path(args.output)
    device = resolve_device(args.device)
    _set_threads(args.threads)
    saved = load_model(args.model, device)
    grid = _sample_grid(args, saved)
    chunk = saved.cfg.reconstruct.chunk
    hr = predict(saved.model, saved.norm, grid, chunk=chunk, device=device, progress=_bars(args))
    sidecar = {
        "method": "irem",
        "model_file": str(args.model),
        "seed": saved.seed,
        "config": saved.cfg.to_dict(),
        "normaliser": saved.norm.to_dict(),
        "transforms": saved.transforms,
        "training_grid": {"shape": list(saved.grid.shape), "affine": saved.grid.affine.tolist()},
        "device": str(device),
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
        m = load_volume(args.mask, mask=True)
        if m.shape != gt.shape:
            raise InputError(f"{args.mask}: mask shape {m.shape} differs from {gt.shape}")
        mask = m.data > 0.5
    res = compute_metrics(pred.data, gt.data, mask=mask, threshold=args.threshold)
    res.update({"pred": str(args.pred), "gt": str(args.gt), "mask_file": args.mask})
    res["meta"] = dict(args.meta)
    if args.output:
        write_json(args.output, res)
    json.dump(res, sys.stdout, indent=2)
    sys.stdout.write("\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``irem`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(external=_first_command(argv) not in BUILTIN_COMMANDS)
    args = parser.parse_args(argv)
    try:
        setup_logging(args.verbose, args.quiet, args.log)
        args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        _log_to_files(f"error: {exc}")
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
