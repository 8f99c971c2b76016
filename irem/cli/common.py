"""What the ``irem`` subcommands share: the parser class, argument types and groups, logging."""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

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


def _number_type(cast: type, ok: Callable[[Any], bool], need: str) -> Callable[[str], Any]:
    """An argparse type: the text as a ``cast`` number that must be ``ok`` (``need``)."""

    def parse(text: str) -> Any:
        try:
            v = cast(text)
        except ValueError:
            what = "an integer" if cast is int else "a number"
            from irem.volume import NIFTI_SUFFIXES

            hint = " (write an option of several values after the stacks)" * text.endswith(
                NIFTI_SUFFIXES
            )
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}{hint}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"{text!r} must be {need}")
        return v

    return parse


positive_int = _number_type(int, lambda v: v >= 1, ">= 1")
positive_float = _number_type(float, lambda v: np.isfinite(v) and v > 0, "a positive number")
nonneg_float = _number_type(float, lambda v: np.isfinite(v) and v >= 0, "a non-negative number")


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def add_output_options(p: argparse.ArgumentParser, top: bool) -> None:
    """``-v``, ``-q`` and ``--log`` (on a sub-command: overriding what came before it)."""
    verbose, quiet, log_file = (0, False, None) if top else [argparse.SUPPRESS] * 3
    p.add_argument("-v", "--verbose", action="count", default=verbose, help="more messages (debug)")
    p.add_argument("-q", "--quiet", action="store_true", default=quiet,
                   help="no progress output and warnings only")  # fmt: skip
    p.add_argument("--log", metavar="FILE", default=log_file,
                   help="also write log messages to FILE")  # fmt: skip


def add_subcommand(
    sub: argparse._SubParsersAction, name: str, help: str, description: str, example: str
) -> argparse.ArgumentParser:
    """A sub-command parser with its description and a usage example in the epilog."""
    epilog = "example:\n" + textwrap.indent(example.strip(), "  ")
    p = sub.add_parser(name, help=help, description=description, epilog=epilog, formatter_class=FMT)
    add_output_options(p, top=False)
    return p


def add_grid_args(p: argparse.ArgumentParser, what: str) -> None:
    grid = p.add_mutually_exclusive_group()
    grid.add_argument("--reference", metavar="REF.nii.gz",
                      help="exactly this image's grid (shape and affine); how the benchmark "
                      "scores")  # fmt: skip
    grid.add_argument("--spacing", type=positive_float, metavar="MM",
                      help=f"isotropic grid of this spacing over the fixed stack's field of view "
                      f"(default: {what})")  # fmt: skip


def add_stack_args(p: argparse.ArgumentParser, method: str) -> None:
    """Inputs, output, grid, registration and acquisition options of ``method``."""
    p.add_argument("stacks", nargs="+", metavar="STACK",
                   help="LR stacks, any orientation: NIfTI files, or directories holding one DICOM "
                   "series each")  # fmt: skip
    p.add_argument("-o", "--output", required=True, metavar="OUT.nii.gz", help="HR output image")
    add_grid_args(p, "the fixed stack's finest spacing")
    p.add_argument("--no-register", action="store_true",
                   help="skip rigid registration (aligned, simulated stacks)")  # fmt: skip
    p.add_argument("--fixed-index", type=int, default=0, metavar="I",
                   help="index of the fixed stack")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument(
        "--max-memory", type=positive_float, metavar="GB",
        help="stop before any work when the estimated peak memory exceeds GB (it always stops when "
        "the estimate exceeds the available memory; -v prints the estimate)",
    )  # fmt: skip
    add_acquisition_args(p, method)


#: What each method does with --thickness, --stack-masks and --mask (help texts).
ACQUISITION_USE = {
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


#: How ``auto`` masks are found (help texts).
AUTO_MASK = (
    "threshold at the half-height of the edge above the background, largest component, holes filled"
)


def add_acquisition_args(p: argparse.ArgumentParser, method: str) -> None:
    """``--thickness``, ``--stack-masks`` and ``--mask``, with what ``method`` does with them."""
    thick, stack_mask, mask = ACQUISITION_USE[method]
    g = p.add_argument_group("acquisition (real scans)")
    g.add_argument(
        "--thickness", type=positive_float, nargs="+", metavar="MM",
        help="slice thickness when it differs from the slice spacing (overlapping slices, or "
        "gaps): one value for all stacks or one per stack, in the order of STACK; "
        f"{thick}; e.g. --thickness 2 for 2 mm slices every 1.5 mm "
        "(default: each stack's spacing along its thick axis, or a DICOM series' Slice "
        "Thickness)",
    )  # fmt: skip
    g.add_argument(
        "--stack-masks", nargs="+", metavar="MASK",
        help="one mask per stack, on that stack's grid (same shape and affine), in the order of "
        f"STACK; LR voxels outside it are {stack_mask}; e.g. --stack-masks m1.nii.gz m2.nii.gz "
        f"m3.nii.gz; 'auto': found in each stack ({AUTO_MASK}; written as "
        "OUT_stack-<name>_desc-auto_mask.nii.gz)",
    )  # fmt: skip
    g.add_argument(
        "--mask", metavar="MASK.nii.gz",
        help="mask on the target grid (a mask on another grid in the fixed stack's world space is "
        f"resampled to it, nearest neighbour): the output is 0 outside it{mask}; e.g. --mask "
        f"brain.nii.gz; 'auto': found in the B-spline of the registered stacks ({AUTO_MASK}; "
        "written as OUT_desc-auto_mask.nii.gz)",
    )  # fmt: skip
    g.add_argument(
        "--n4", action="store_true",
        help="N4 bias-field correction of each stack before registration (inside its stack mask, "
        "else inside Otsu's foreground); log fields written as OUT_stack-<name>_desc-n4_logfield"
        ".nii.gz",
    )  # fmt: skip
    g.add_argument(
        "--packages", type=positive_int, default=1, metavar="N",
        help="each stack was acquired as N interleaved packages (slices i, i+N, ...): after the "
        "stacks, register each package on its own (to their B-spline) and reconstruct from the "
        "packages",
    )  # fmt: skip


def add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="torch device")
    p.add_argument("--threads", type=positive_int,
                   help="CPU threads for torch (default: torch's choice)")  # fmt: skip


def request(args: argparse.Namespace) -> Any:
    from irem.pipeline import Request

    same = ("output", "fixed_index", "seed", "reference", "spacing", "mask", "n4", "packages")
    return Request(
        **{name: getattr(args, name) for name in same},
        stacks=list(args.stacks),
        register=not args.no_register,
        thickness=None if args.thickness is None else tuple(args.thickness),
        stack_masks=None if args.stack_masks is None else tuple(args.stack_masks),
        max_memory_gb=args.max_memory,
    )


def bars(args: argparse.Namespace) -> bool:
    """Whether to draw tqdm bars of evaluation and SRR: not quiet, and stderr is a terminal."""
    return not args.quiet and sys.stderr.isatty()


def set_threads(n: int | None) -> None:
    if n is not None:
        import torch

        torch.set_num_threads(n)


class _StderrFormatter(logging.Formatter):
    """Information as is; warnings and worse prefixed by their level (``warning: ...``)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno <= logging.INFO else f"{record.levelname.lower()}: {text}"


def setup_logging(verbose: int = 0, quiet: bool = False, log_file: str | None = None) -> None:
    """Send the ``irem`` loggers' messages to stderr and ``log_file``, replacing earlier ones."""
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


def log_to_files(message: str) -> None:
    """Record ``message`` in the ``--log`` file only (stderr already has it)."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for h in logging.getLogger("irem").handlers:
        if isinstance(h, logging.FileHandler):
            h.handle(record)
