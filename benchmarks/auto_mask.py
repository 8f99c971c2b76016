"""Brain PSNR in the automatic mask (``--mask auto``) against brain PSNR in the true brain mask.

Three subjects of the synthetic MNI152 cohort (``irem.cohort``, one per contrast family), over the
whole 1 mm brain crop (152x184x160: the workflow's 64x80x64 crops lie inside the brain and have no
background for a foreground mask to find), three k = 4 box-profile stacks with Rician noise at
SNR 40 (``irem simulate``), no motion. ``irem baseline bspline --mask auto`` writes the automatic
mask (Otsu on the B-spline of the stacks, largest component, closing, holes filled); the B-spline
and SRR-TV (box PSF, the CLI's tuned weight) reconstructions, made without a mask, are scored by
``irem.metrics.compute_metrics`` inside the cohort's brain mask and inside the automatic one.

Usage: ``python benchmarks/auto_mask.py [--out results/benchmarks]`` (writes ``auto_mask.csv`` and
``.md``; about three minutes on one core).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = (4, 5, 6)  # evaluation subjects 04-06: T2w, FLAIR, T1w
K = 4
SNR = 40.0
METHODS = {
    "bspline": ["baseline", "bspline"],
    "srr-tv": ["baseline", "srr", "--psf", "box", "--regulariser", "tv", "--threads", "1"],
}


def irem(*args: str) -> None:
    """Run ``irem`` on one thread; raise with its stderr on failure."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "irem.cli", "-q", *args], env=env,
                         capture_output=True, text=True)  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(f"irem {' '.join(args)}:\n{res.stderr[-2000:]}")


def subject_rows(index: int, folder: Path) -> list[dict[str, object]]:
    """Simulate one subject, reconstruct, score in both masks."""
    from irem.cohort import cohort_subject
    from irem.metrics import compute_metrics
    from irem.volume import load_volume, save_volume

    subj = cohort_subject(index)
    hr, wm = folder / "hr.nii.gz", folder / "wm.nii.gz"
    save_volume(hr, subj.image.data, subj.image.affine)
    save_volume(wm, subj.wm_mask.data, subj.wm_mask.affine)
    irem("simulate", str(hr), "--k", str(K), "--snr", str(SNR), "--wm-mask", str(wm), "--seed", "1",
         "--subject-seed", str(index), "--out-dir", str(folder / "lr"))  # fmt: skip
    stacks = sorted(str(p) for p in (folder / "lr").glob("acq-*.nii.gz"))
    common = ["--reference", str(hr), "--no-register"]
    irem(*METHODS["bspline"], *stacks, "-o", str(folder / "masked.nii.gz"), "--mask", "auto",
         *common)  # fmt: skip
    auto = load_volume(folder / "masked_desc-auto_mask.nii.gz", mask=True).data > 0.5
    true = subj.brain_mask.data > 0.5
    gt = subj.image.data
    rows = []
    for method, command in METHODS.items():
        out = folder / f"{method}.nii.gz"
        irem(*command, *stacks, "-o", str(out), *common)
        pred = load_volume(out).data
        in_true = compute_metrics(pred, gt, mask=true)["psnr_mask"]
        in_auto = compute_metrics(pred, gt, mask=auto)["psnr_mask"]
        rows.append({
            "subject": f"sub-{index:02d}",
            "contrast": subj.params.contrast,
            "method": method,
            "psnr_true_mask": round(in_true, 3),
            "psnr_auto_mask": round(in_auto, 3),
            "difference_db": round(in_auto - in_true, 3),
            "dice": round(float(2 * (auto & true).sum() / (auto.sum() + true.sum())), 4),
            "auto_over_true_voxels": round(float(auto.sum() / true.sum()), 4),
        })  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def write(rows: list[dict[str, object]], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "auto_mask.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    diffs = np.array([float(r["difference_db"]) for r in rows])  # type: ignore[arg-type]
    within = int((np.abs(diffs) <= 0.2).sum())
    lines = [
        "# Brain PSNR in the automatic mask against the true brain mask",
        "",
        "Made by `python benchmarks/auto_mask.py`: cohort subjects over the whole 1 mm brain crop,",
        f"three k = {K} box-profile stacks with Rician noise at SNR {SNR:g}, no motion, HR grid.",
        "The automatic mask is `irem baseline bspline --mask auto`'s (Otsu on the B-spline of the",
        "stacks, largest component, 3 mm closing, holes filled); both reconstructions are made",
        "without a mask and scored inside each mask (`irem.metrics`, data range of the ground truth).",
        "",
        "| subject | contrast | method | brain PSNR, true mask | brain PSNR, auto mask "
        "| auto - true (dB) | Dice | auto / true voxels |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['subject']} | {r['contrast']} | {r['method']} | {r['psnr_true_mask']:.2f} "
            f"| {r['psnr_auto_mask']:.2f} | {float(r['difference_db']):+.2f} | {r['dice']:.3f} "  # type: ignore[arg-type]
            f"| {r['auto_over_true_voxels']:.3f} |"
        )
    lines += [
        "",
        f"Within 0.2 dB: {within} of {len(rows)} (mean |difference| "
        f"{float(np.abs(diffs).mean()):.2f} dB, largest {float(np.abs(diffs).max()):.2f} dB).",
        "",
        "The brain PSNR is set by the errors at the brain's edge, where thick slices blur most: a",
        "mask a few percent smaller or larger than the true one moves it by a decibel or more. Otsu's",
        "threshold lies between the background and the brain's mean tissue, so it leaves out dark",
        "surface CSF (T1w: a smaller mask, PSNR too high) and keeps the blur halo of bright surface",
        "CSF (T2w: a larger mask, PSNR too low). Report brain PSNR in a true mask where there is one;",
        "the automatic mask is for restricting and zeroing, not for scoring.",
        "",
    ]
    (out_dir / "auto_mask.md").write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = p.parse_args()
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in SUBJECTS:
            folder = Path(tmp) / f"sub-{index:02d}"
            folder.mkdir()
            rows += subject_rows(index, folder)
    write(rows, args.out)


if __name__ == "__main__":
    main()
