"""``irem metrics``: PSNR/SSIM of a reconstruction against its ground truth."""

from __future__ import annotations

import argparse
import json

import numpy as np

from irem.cli.common import add_subcommand, key_value, nonneg_float
from irem.errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``irem metrics`` to the ``irem`` parser."""
    p = add_subcommand(
        sub,
        "metrics",
        "PSNR/SSIM of a reconstruction against the ground truth (JSON)",
        "PSNR and SSIM (scikit-image, data_range from the ground truth, Gaussian window sigma 1.5) "
        "over the volume and inside a mask; JSON on stdout.",
        "irem metrics irem.nii.gz hr.nii.gz --mask mask.nii.gz -o irem.evaluation.metrics.json \\\n"
        "    --meta dataset=mni152_t1 --meta k=4 --meta method=irem",
    )
    p.add_argument("pred", metavar="PRED.nii.gz")
    p.add_argument("gt", metavar="GT.nii.gz")
    p.add_argument("--mask", metavar="MASK.nii.gz",
                   help="brain mask (default: GT above --threshold x max)")  # fmt: skip
    p.add_argument("--threshold", type=nonneg_float, default=0.05,
                   help="relative threshold of the default mask")  # fmt: skip
    p.add_argument("-o", "--output", metavar="OUT.json", help="also write the JSON here")
    p.add_argument(
        "--meta", type=key_value, action="append", default=[], metavar="KEY=VALUE",
        help='store KEY: VALUE (strings) under "meta" in the JSON; repeatable',
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Carry out ``irem metrics``."""
    from irem.evaluation.metrics import compute_metrics
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
    res.update(pred=str(args.pred), gt=str(args.gt), mask_file=args.mask, meta=dict(args.meta))
    if args.output:
        write_json(args.output, res)
    print(json.dumps(res, indent=2))
