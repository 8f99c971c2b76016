"""``irem simulate``: three orthogonal thick-slice LR stacks from an HR volume."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from irem import __version__
from irem.cli.common import add_subcommand, nonneg_float, positive_float, positive_int
from irem.errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``irem simulate`` to the ``irem`` parser."""
    p = add_subcommand(
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
        "--k", type=positive_int, required=True,
        help="down-sampling factor: slice spacing (and, without --thickness, slice thickness) in "
        "HR voxels",
    )  # fmt: skip
    p.add_argument(
        "--thickness", type=positive_float, metavar="T",
        help="slice thickness in HR voxels (box width or Gaussian FWHM; may be fractional): below "
        "K leaves a gap between slices, above K makes them overlap; the NIfTI files keep only the "
        "spacing, so reconstruct with the methods' --thickness in mm (simulation.json and the "
        "sidecars give it as slice_thickness_mm, one per stack in the order of simulation.json's "
        "stacks); e.g. --k 4 --thickness 2 (default: K)",
    )  # fmt: skip
    p.add_argument("--out-dir", required=True, help="output folder (created if missing)")
    p.add_argument("--profile", choices=("box", "gaussian", "none"), default="box",
                   help="slice profile")  # fmt: skip
    p.set_defaults(func=run)
    noise = p.add_mutually_exclusive_group()
    noise.add_argument(
        "--snr", type=positive_float,
        help="Rician noise of each stack at this SNR (mean white-matter signal of the noise-free "
        "HR image over the noise sigma of each channel; see --wm-mask)",
    )  # fmt: skip
    noise.add_argument(
        "--hr-snr", type=positive_float,
        help="scan-time-matched: an HR scan of this SNR (written as hr.nii.gz) and three stacks of "
        "a third of its scan time each, at T / sqrt(3) times its SNR (T: --thickness, default K)",
    )  # fmt: skip
    p.add_argument(
        "--wm-mask", metavar="MASK.nii.gz",
        help="white-matter mask of HR, the SNR's reference region (default: the upper half of the "
        "foreground's intensities)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed for noise and motion")
    p.add_argument("--subject-seed", type=int,
                   help="a per-subject seed, combined with --seed for the noise")  # fmt: skip
    p.add_argument("--motion", type=nonneg_float, nargs=2, metavar=("DEG", "MM"), help="move every "
                   "stack but the sagittal one by a seeded random rigid motion")  # fmt: skip
    p.add_argument("--reorient", action="store_true",
                   help="store the stacks in different voxel orientations")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    """Carry out ``irem simulate``."""
    from irem.acquisition import simulate as sim
    from irem.volume import load_volume, save_volume, voxel_centres, write_json

    if args.thickness is not None and args.profile == "none":
        raise InputError("--thickness needs --profile box or gaussian ('none' takes one HR slice)")
    hr = load_volume(args.hr)
    n = min(hr.shape)
    for option, value in (("--k", args.k), ("--thickness", args.thickness)):
        if value is not None and value > n:
            raise InputError(f"{option} {value:g} is larger than the smallest image extent {n}")
    thickness = 1.0 if args.profile == "none" else float(args.thickness or args.k)
    wm = load_volume(args.wm_mask, mask=True).data if args.wm_mask else None
    noise: dict[str, Any] = {"subject_seed": args.subject_seed, "wm_mask": args.wm_mask}
    hr_scan = None
    kwargs = {"profile": args.profile, "seed": args.seed, "wm_mask": wm,
              "subject_seed": args.subject_seed, "thickness": args.thickness}  # fmt: skip
    if args.hr_snr is not None:
        stacks, hr_scan, info = sim.simulate_scan_time_matched(hr, args.k, args.hr_snr, **kwargs)
        noise.update(info)
    else:
        stacks = sim.simulate_stacks(hr, args.k, snr=args.snr, **kwargs)
    motions: list[Any] = [None] * 3
    if args.motion is not None:  # stacks 1 and 2 moved by seeded random rigid motions
        rng = np.random.default_rng(np.random.SeedSequence([args.seed, 7]))
        centre = voxel_centres(hr.shape, hr.affine).mean(axis=0)
        for i in (1, 2):
            m = sim.random_rigid(args.motion[0], args.motion[1], rng, centre)
            stacks[i] = sim.move(stacks[i], m)
            motions[i] = m.tolist()
    if args.reorient:
        codes = sim.REORIENT_CODES
        stacks = [sim.reorient(s, c) if c else s for s, c in zip(stacks, codes, strict=True)]
    params = {"source": str(args.hr), "k": args.k, "thickness": thickness,
              "slice_thickness_mm": [thickness * float(v) for v in hr.spacing],
              "profile": args.profile, "snr": args.snr, "noise": noise, "seed": args.seed,
              "motion": args.motion, "reorient": args.reorient, "version": __version__}  # fmt: skip
    out = Path(args.out_dir)  # the stacks with sidecars, the scan-time HR scan, simulation.json
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for s, motion in zip(stacks, motions, strict=True):
        path = out / f"acq-{s.name}.nii.gz"
        sidecar = {**params, "orientation": s.name, "thick_axis": s.thick_axis,
                   "spacing_mm": [float(v) for v in s.spacing],
                   "motion_applied": motion}  # fmt: skip
        save_volume(path, s.data, s.affine, sidecar=sidecar)
        files.append(path.name)
    if hr_scan is not None:
        save_volume(out / "hr.nii.gz", hr_scan.data, hr_scan.affine, sidecar=params)
    write_json(out / "simulation.json", {**params, "stacks": files, "motions": motions})
    print("\n".join(str(out / f) for f in files))
