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
    p.add_argument("--compare-mask", metavar="OTHER.nii.gz",
                   help="also score inside OTHER (e.g. a --mask auto mask), score the image set to "
                   "0 outside OTHER inside --mask, and give OTHER's Dice and voxel ratio against "
                   '--mask, under "compare_mask"')  # fmt: skip
    p.add_argument("-o", "--output", metavar="OUT.json", help="also write the JSON here")
    p.add_argument(
        "--meta", type=key_value, action="append", default=[], metavar="KEY=VALUE",
        help='store KEY: VALUE (strings) under "meta" in the JSON; repeatable',
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Carry out ``irem metrics``."""
    from skimage.metrics import peak_signal_noise_ratio

    from irem.evaluation.metrics import compute_metrics, mask_overlap
    from irem.volume import load_volume, write_json

    pred, gt = load_volume(args.pred), load_volume(args.gt)
    if pred.shape != gt.shape or not np.allclose(pred.affine, gt.affine, atol=1e-3):
        raise InputError(f"{args.pred} is not on the grid of {args.gt} (shape or affine differ)")
    mask = None if args.mask is None else _mask(args.mask, gt.shape)
    res = compute_metrics(pred.data, gt.data, mask=mask, threshold=args.threshold)
    res.update(pred=str(args.pred), gt=str(args.gt), mask_file=args.mask, meta=dict(args.meta))
    if args.compare_mask:
        if mask is None:
            raise InputError("--compare-mask needs --mask (the mask it is compared with)")
        other = _mask(args.compare_mask, gt.shape)
        scores = compute_metrics(pred.data, gt.data, mask=other)
        # What the image written with OTHER as its --mask (0 outside it) scores in --mask: its
        # PSNR only, as compute_metrics takes it (float64, the ground truth's data range).
        zeroed = np.where(other, pred.data, 0.0)[mask].astype(np.float64)
        truth = np.asarray(gt.data, dtype=np.float64)[mask]
        res["compare_mask"] = {"file": args.compare_mask, **mask_overlap(other, mask),
                               **{k: scores[k] for k in ("psnr_mask", "ssim_mask", "mask_voxels")},
                               "psnr_mask_zeroed": float(peak_signal_noise_ratio(
                                   truth, zeroed, data_range=res["data_range"]))}  # fmt: skip
    if args.output:
        write_json(args.output, res)
    print(json.dumps(res, indent=2))


def _mask(path: str, shape: tuple[int, ...]) -> np.ndarray:
    """A mask file as booleans, on a grid of ``shape``."""
    from irem.volume import load_volume

    m = load_volume(path, mask=True)
    if m.shape != shape:
        raise InputError(f"{path}: mask shape {m.shape} differs from {shape}")
    return m.data > 0.5
