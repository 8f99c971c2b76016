"""Brain PSNR in the automatic mask (``--mask auto``) against brain PSNR in the true brain mask.

Cohort subjects 01-03 are the tuning subjects, on which the mask's design was chosen
(``--subjects 1 2 3 --name auto_mask_tuning``); 04-06, the default, the evaluation subjects.

Usage: ``python benchmarks/auto_mask.py [--subjects 4 5 6] [--out results/benchmarks] [--name
auto_mask]`` (writes ``NAME.csv`` and ``NAME.md``; about three minutes on one core);
``--table-only`` rewrites ``NAME.md`` from ``NAME.csv``.
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
    from irem.data.cohort import cohort_subject
    from irem.evaluation.metrics import compute_metrics
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


def write_md(rows: list[dict[str, object]], path: Path, command: str) -> None:
    diffs = np.array([float(r["difference_db"]) for r in rows])  # type: ignore[arg-type]
    within = int((np.abs(diffs) <= 0.2).sum())
    subjects = sorted({int(str(r["subject"])[4:]) for r in rows})
    role = (
        "Evaluation subjects, run once after the mask's design was fixed on the tuning subjects "
        "01-03 (`auto_mask_tuning.md`)."
        if set(subjects) <= set(SUBJECTS)
        else "Tuning subjects: the automatic mask's design was chosen on these (the evaluation "
        "subjects 04-06 are in `auto_mask.md`)."
    )
    lines = [
        "# Brain PSNR in the automatic mask against the true brain mask",
        "",
        f"Made by `{command}`: cohort subjects over the whole 1 mm brain crop,",
        f"three k = {K} box-profile stacks with Rician noise at SNR {SNR:g}, no motion, HR grid.",
        role,
        "The automatic mask is `irem baseline bspline --mask auto`'s: on the B-spline of the stacks,",
        "the threshold at the half-height of the brain's blurred edge above the background level,",
        "largest component, holes filled (`irem.acquisition.preprocess.auto_mask`). Both reconstructions are",
        "made without a mask and scored inside each mask (`irem.evaluation.metrics`, data range of the ground",
        "truth).",
        "",
        "| subject | contrast | method | brain PSNR, true mask | brain PSNR, auto mask "
        "| auto - true (dB) | Dice | auto / true voxels |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['subject']} | {r['contrast']} | {r['method']} "
            f"| {float(r['psnr_true_mask']):.2f} | {float(r['psnr_auto_mask']):.2f} "  # type: ignore[arg-type]
            f"| {float(r['difference_db']):+.2f} | {float(r['dice']):.3f} "  # type: ignore[arg-type]
            f"| {float(r['auto_over_true_voxels']):.3f} |"  # type: ignore[arg-type]
        )
    lines += [
        "",
        f"Within 0.2 dB: {within} of {len(rows)} (mean |difference| "
        f"{float(np.abs(diffs).mean()):.2f} dB, largest {float(np.abs(diffs).max()):.2f} dB).",
        "",
        *EXPLANATION,
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


#: The paragraph under both tables (tuning and evaluation).
EXPLANATION = [
    "The brain PSNR is set by the errors at the brain's edge, where thick slices blur most: a",
    "mask one percent smaller or larger than the true one moves it by tenths of a decibel. Where",
    "the brain's surface is bright (T2w CSF), the half-height threshold puts the edge where the",
    "true one is (the same voxel count, Dice 0.999). Where the surface CSF is dark and thinner",
    "than the blur (FLAIR, T1w), the blurred profile keeps rising into the brighter cortex and",
    "part of the surface layer is left out: the mask is 0.4-2.3% too small. That moves the",
    "B-spline's brain PSNR by at most 0.13 dB, but SRR-TV's by +0.36 to +0.48 dB: its errors away",
    "from the edge are smaller, so the edge voxels left out carry a larger share of them. The",
    "previous rule, Otsu's threshold, missed by -1.61 to +1.42 dB on the evaluation subjects",
    "(1 of 6 within 0.2 dB). Report brain PSNR in a true mask where there is one; the automatic",
    "mask is for restricting and zeroing, and for scoring only to within about half a decibel.",
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subjects", type=int, nargs="+", default=list(SUBJECTS),
                   help="cohort subject indices (tuning: 1 2 3; evaluation: 4 5 6)")  # fmt: skip
    p.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    p.add_argument("--name", default="auto_mask", help="file stem of the CSV and Markdown tables")
    p.add_argument("--table-only", action="store_true", help="rewrite NAME.md from NAME.csv")
    args = p.parse_args()
    csv_path, md_path = args.out / f"{args.name}.csv", args.out / f"{args.name}.md"
    if args.table_only:
        lines = md_path.read_text(encoding="utf-8").splitlines()
        command = next(ln for ln in lines if ln.startswith("Made by `")).split("`")[1]
        with open(csv_path, encoding="utf-8", newline="") as fh:
            write_md(list(csv.DictReader(fh)), md_path, command)
        return
    threads = os.environ.get("OMP_NUM_THREADS")
    env = [f"OMP_NUM_THREADS={threads}"] if threads else []
    command = " ".join([*env, "python benchmarks/auto_mask.py", *sys.argv[1:]])
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in args.subjects:
            folder = Path(tmp) / f"sub-{index:02d}"
            folder.mkdir()
            rows += subject_rows(index, folder)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    write_md(rows, md_path, command)


if __name__ == "__main__":
    main()
