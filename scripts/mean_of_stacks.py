"""An example external method for the workflow (docs/methods.md): the mean of the LR stacks, each
resampled (trilinear) onto the reference grid. It only needs nibabel and scipy: any program that
reads the stacks and writes a NIfTI on the reference grid can be a method.

    python scripts/mean_of_stacks.py SAG.nii.gz COR.nii.gz AX.nii.gz --reference REF.nii.gz -o OUT
"""

from __future__ import annotations

import argparse
import sys

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stacks", nargs="+", help="LR stacks (NIfTI, world coordinates)")
    parser.add_argument("--reference", required=True, help="the output grid (NIfTI)")
    parser.add_argument("-o", "--output", required=True, help="output NIfTI")
    args = parser.parse_args(argv)
    try:
        ref = nib.load(args.reference)
        grid = (ref.shape[:3], ref.affine)
        total = sum(resample_from_to(nib.load(p), grid, order=1).get_fdata() for p in args.stacks)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = nib.Nifti1Image((total / len(args.stacks)).astype(np.float32), ref.affine)
    nib.save(out, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
