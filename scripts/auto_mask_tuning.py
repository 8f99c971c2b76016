"""The automatic mask's margin and hole rule, chosen on the cohort's tuning subjects (01-03):
``python scripts/auto_mask_tuning.py WHOLE`` from the repository root after `snakemake automask`
(WHOLE: the root of a checkout that ran it with config/overlays/wholebrain.yaml) ->
results/tuning/auto_mask_{margin,crops}.csv.

- margin: the workflows' B-spline and SRR-TV images (k = 4; default crops and whole brains) set to 0
  outside the mask at margins 0-3 mm; rule: the smallest margin with every image within 0.1 dB of
  its brain PSNR in the true mask;
- crops: the subjects simulated (k = 4, SNR 20 and 40) with the crop at 27 positions, B-spline, at
  that margin, filling the regions outside the mask that are not mostly air (median below 5% or
  10% of the 99.5th percentile: `air_fraction`) or not filling them.
"""

import dataclasses
import itertools
import sys

import numpy as np
import pandas as pd

from baselines.bspline import bspline
from irem import layout as L
from irem.acquisition.grid import reference_grid
from irem.acquisition.preprocess import AutoMaskParams, auto_mask
from irem.acquisition.simulate import simulate_stacks
from irem.data.cohort import cohort_subject
from irem.evaluation.metrics import compute_metrics
from irem.pipeline import read_stack
from irem.volume import Volume, load_volume


def score(rec, gt, brain, image, **params) -> dict:
    """Brain PSNR of ``rec`` set to 0 outside the automatic mask of ``image`` minus in ``brain``."""
    mask, _ = auto_mask(image, dataclasses.replace(AutoMaskParams(), **params))
    true = compute_metrics(rec, gt, mask=brain)["psnr_mask"]
    auto = compute_metrics(np.where(mask, rec, 0.0), gt, mask=brain)["psnr_mask"]
    return {**params, "psnr_true_mask": true, "difference_db": auto - true,
            "auto_over_true_voxels": mask.sum() / brain.sum()}  # fmt: skip


margin, crops, run, subjects = [], [], L.Run("cohort", 4), {"01": "T1w", "02": "T2w", "03": "FLAIR"}
roots = {"crop": ".", "whole": sys.argv[1]}  # the default crops here, whole brains in WHOLE
for (volume, root), (subject, contrast) in itertools.product(roots.items(), subjects.items()):
    gt = load_volume(f"{root}/{L.gt_path('cohort', subject, contrast)}")
    brain = load_volume(f"{root}/{L.mask_path('cohort', subject)}", mask=True).data > 0.5
    stacks = [read_stack(f"{root}/{p}") for p in L.stack_paths(run, subject, 0)]
    image = Volume(bspline(stacks, reference_grid(gt)), gt.affine)
    for method, mm in itertools.product(("bspline", "srrtv"), (0.0, 1.0, 2.0, 3.0)):
        rec = load_volume(f"{root}/{L.rec_path(run, subject, method, 0, contrast)}").data
        margin.append({"volume": volume, "subject": subject, "method": method,
                       **score(rec, gt.data, brain, image, margin_mm=mm)})  # fmt: skip
table = pd.DataFrame(margin)
table.to_csv("results/tuning/auto_mask_margin.csv", index=False, float_format="%.4f")
worst = table.groupby("margin_mm")["difference_db"].apply(lambda d: d.abs().max())
chosen = float(worst[worst <= 0.1].index.min())
print(worst.to_string(), f"\nchosen: {chosen} mm")
positions = list(itertools.product((0, 0.5, 1), repeat=3))  # the crop box's place along each axis
for index, snr, position in itertools.product(range(len(subjects)), (20.0, 40.0), positions):
    subj = cohort_subject(index, crop=(64, 80, 64), crop_position=position)
    hr, wm, brain = subj.image, subj.wm_mask.data > 0.5, subj.brain_mask.data > 0.5
    stacks = simulate_stacks(hr, 4, snr=snr, wm_mask=wm, subject_seed=index)
    image = Volume(bspline(stacks, reference_grid(hr)), hr.affine)
    for air in (0.05, 0.1, np.inf):  # inf: every region outside is air (no filling)
        where = "/".join(map(str, position))
        crops.append({"subject": f"0{index + 1}", "snr": snr, "position": where,
                      **score(image.data, hr.data, brain, image, margin_mm=chosen,
                              air_fraction=air)})  # fmt: skip
table = pd.DataFrame(crops)
table.to_csv("results/tuning/auto_mask_crops.csv", index=False, float_format="%.4f")
print(table.groupby(["air_fraction", "snr"]).agg(
    worst=("difference_db", "min"), within=("difference_db", lambda d: (d.abs() <= 0.2).sum()),
    largest_ratio=("auto_over_true_voxels", "max")))
