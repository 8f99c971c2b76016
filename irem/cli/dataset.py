"""``irem dataset``: write an embedded ground truth, a cohort subject or a user's HR file with its
brain and white-matter masks (the registry of embedded datasets by name)."""

from __future__ import annotations

import argparse

from irem import __version__
from irem.data.cohort import cohort_subject
from irem.data.datasets import brain_mask, crop_box, mni152_flair, mni152_t1, phantom
from irem.errors import InputError
from irem.volume import NIFTI_SUFFIXES, Volume, check_output_path, load_volume, save_volume

COHORT = "mni152_cohort"
DATASETS = ("mni152_t1", "mni152_flair", "phantom", COHORT)  # the embedded datasets


def load_dataset(name: str, seed: int = 0, phantom_size: int = 64) -> Volume:
    """An embedded dataset by name (not the cohort), or a user's HR NIfTI file by path."""
    if name == "mni152_t1":
        return mni152_t1()
    if name == "mni152_flair":
        return mni152_flair(seed=seed)
    if name == "phantom":
        return phantom(size=phantom_size)
    if name.endswith(NIFTI_SUFFIXES):
        return load_volume(name)
    raise InputError(f"unknown dataset {name!r}: choose from {', '.join(DATASETS)} "
                     "or give a .nii/.nii.gz path")


DATASET_EPILOG = """examples:
  irem dataset mni152_t1 --crop 80 96 80 -o sub-01_T1w.nii.gz --mask-out sub-01_mask.nii.gz
  irem dataset mni152_cohort --subject 3 --crop 80 96 80 -o sub-03_T1w.nii.gz \\
      --wm-mask-out sub-03_label-WM_mask.nii.gz
  irem dataset sub-01_T1w.nii.gz --mask-out sub-01_mask.nii.gz --mask-threshold 0

mni152_cohort: subject i of cohort --seed is a smooth random deformation of the MNI152 template
with a T1w-, T2w- or FLAIR-like contrast (cycled by index: 0 T1w, 1 T2w, 2 FLAIR, 3 T1w, ...) and
a smooth bias field; see irem.data.cohort. Every volume is written with a JSON sidecar."""


def add_dataset_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``dataset`` subcommand (ground truths, masks, cohort subjects) to ``irem``."""
    p = sub.add_parser(
        "dataset", help="write an embedded ground truth, a cohort subject or a brain mask",
        description="Write an embedded ground-truth volume, a synthetic cohort subject (or a "
        "checked copy of a user's HR NIfTI file) and optionally its brain / white-matter masks. "
        "Nothing is downloaded.",
        epilog=DATASET_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.set_defaults(func=run_dataset)
    p.add_argument("name", help=f"{', '.join(DATASETS)}, or a path to an HR .nii/.nii.gz file")
    p.add_argument("-o", "--out", help="output NIfTI (.nii or .nii.gz)")
    p.add_argument("--mask-out", help="write the brain mask here (with or without -o)")
    p.add_argument("--wm-mask-out",
                   help="mni152_cohort: write the white-matter mask (the SNR reference) here")
    p.add_argument("--seed", type=int, default=0,
                   help="seed (mni152_flair: lesions; mni152_cohort: cohort)")  # fmt: skip
    p.add_argument("--subject", "--index", dest="subject", type=int, default=0, help="mni152_cohort"
                   ": subject index (>= 0; --index is the same option)")  # fmt: skip
    p.add_argument("--contrast", choices=("T1w", "T2w", "FLAIR"), default=None, help="mni152_cohort"
                   ": contrast family (default: cycled by subject index)")  # fmt: skip
    p.add_argument("--crop", type=int, nargs=3, metavar=("NX", "NY", "NZ"), help="keep a box of "
                   "this many voxels (after the brain crop), placed by "
                   "--crop-position")  # fmt: skip
    p.add_argument(
        "--crop-position", type=float, nargs=3, metavar=("PX", "PY", "PZ"), default=(0.5, 0.5, 0.5),
        help="where the --crop box lies along each voxel axis: 0 at the first voxel, 1 at the "
        "last, 0.5 centred (RAS: 1 1 1 is the right anterior superior corner)",
    )  # fmt: skip
    p.add_argument("--phantom-size", type=int, default=64, help="phantom: voxels a side (64)")
    p.add_argument(
        "--mask-threshold", type=float, default=None,
        help="mask threshold as a fraction of the 99.5th percentile "
        "(default: 0.1 for user files, exactly > 0 for the embedded volumes)",
    )  # fmt: skip


def run_dataset(args: argparse.Namespace) -> None:
    """Write what ``irem dataset`` asks for (nothing on bad input)."""
    if not (args.out or args.mask_out or args.wm_mask_out):
        raise InputError("give -o OUT.nii.gz, --mask-out MASK.nii.gz, --wm-mask-out or several")
    paths = (args.out, args.mask_out, args.wm_mask_out)
    outs = [check_output_path(p) if p else None for p in paths]
    thr = args.mask_threshold
    if args.name == COHORT:
        subj = cohort_subject(args.subject, seed=args.seed, contrast=args.contrast, crop=args.crop,
                              crop_position=args.crop_position)  # fmt: skip
        thr = 0.0 if thr is None else thr
        vol, wm, extra = subj.image, subj.wm_mask, subj.sidecar()
        mask = brain_mask(vol, threshold=thr, relative=thr > 0)
    else:
        if args.wm_mask_out:
            raise InputError("--wm-mask-out needs the mni152_cohort dataset")
        vol, wm = load_dataset(args.name, seed=args.seed, phantom_size=args.phantom_size), None
        thr = thr if thr is not None else (0.0 if args.name in DATASETS else 0.1)
        mask = brain_mask(vol, threshold=thr, relative=thr > 0)
        if args.crop:  # after the mask, which sees the whole volume
            pos = args.crop_position
            vol, mask = crop_box(vol, args.crop, pos), crop_box(mask, args.crop, pos)
        extra = {"phantom_size": args.phantom_size if args.name == "phantom" else None}
    sidecar = {"dataset": args.name, "seed": args.seed, "shape": list(vol.shape),
               "spacing_mm": [float(s) for s in vol.spacing],
               "crop": list(args.crop) if args.crop else None,
               "crop_position": list(args.crop_position) if args.crop else None,
               "mask_threshold": thr, **extra,
               "mask_voxels": int(mask.data.sum()),
               "software": {"irem-bench": __version__}}  # fmt: skip
    if wm is not None:
        sidecar["wm_mask_voxels"] = int(wm.data.sum())
    for path, image, side in zip(outs, (vol, mask, wm), (sidecar, None, None), strict=True):
        if path is not None and image is not None:
            save_volume(path, image.data, image.affine, sidecar=side)
