"""``irem mask``: the automatic target mask of ``--mask auto``, without a reconstruction."""

from __future__ import annotations

import argparse

from irem.cli.common import add_stack_args, add_subcommand, request
from irem.errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``irem mask`` to the ``irem`` parser."""
    p = add_subcommand(
        sub, "mask", "the automatic mask of --mask auto, without a reconstruction",
        "The target mask `--mask auto` gives a reconstruction with the same options (0/1, with a "
        "JSON sidecar); what --stack-masks auto and --n4 make is written beside it.",
        "irem mask lr/acq-*.nii.gz -o mask.nii.gz --spacing 1 --n4",
    )  # fmt: skip
    add_stack_args(p, "bspline")
    p.set_defaults(func=run, mask="auto")


def run(args: argparse.Namespace) -> None:
    """Carry out ``irem mask``: :func:`irem.pipeline.prepare`, then write what it made."""
    from irem.pipeline import derived_path, prepare
    from irem.training.memory import bspline_model
    from irem.volume import save_volume, sidecar_path

    if args.mask != "auto":
        raise InputError("irem mask finds the mask itself: give no --mask")
    prep = prepare(request(args), bspline_model())
    target, written = derived_path(prep.output, "desc-auto_mask"), [sidecar_path(prep.output)]
    for step in (s for s in prep.steps if s["step"] == "target_mask"):
        step["file"] = str(prep.output)  # written as -o, not beside it
    try:
        for d in prep.derived:
            side = {"preprocessing": prep.steps} if d.path == target else None
            written.append(save_volume(prep.output if side else d.path, d.data, d.affine, side))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    print(prep.output)
