"""PSNR and SSIM (scikit-image, Wang et al. 2004, ``data_range`` of the ground truth) over the whole
volume, inside a brain mask (masked SSIM: the mean of the SSIM map there) and on the edges."""

from __future__ import annotations

from typing import Any

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from irem.errors import InputError

SSIM_SIGMA = 1.5
SSIM_WINDOW = 2 * int(3.5 * SSIM_SIGMA + 0.5) + 1  # scikit-image's window for gaussian_weights
#: scikit-image's SSIM options (Wang et al.), recorded with the numbers as ``ssim_window``.
SSIM_OPTIONS: dict[str, Any] = {"gaussian_weights": True, "sigma": SSIM_SIGMA,
                                "use_sample_covariance": False}  # fmt: skip
DEFAULT_MASK_THRESHOLD = 0.05
EDGE_SIGMA = 1.0
EDGE_DILATION = 2
EDGE_FRACTION = 0.25


def edge_band(gt: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The strongest ground-truth gradients (top EDGE_FRACTION) in the dilated mask."""
    from scipy import ndimage

    around = ndimage.binary_dilation(mask, iterations=EDGE_DILATION)
    grad = ndimage.gaussian_gradient_magnitude(gt, sigma=EDGE_SIGMA)
    cut = np.quantile(grad[around], 1.0 - EDGE_FRACTION)
    return around & (grad >= cut) & (grad > 0)


def compute_metrics(
    pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None,
    threshold: float = DEFAULT_MASK_THRESHOLD,
) -> dict[str, Any]:  # fmt: skip
    """PSNR (dB)/SSIM against ``gt``: whole volume, in ``mask`` (or gt > threshold), on edges."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise InputError(f"prediction shape {pred.shape} differs from "
                         f"ground truth shape {gt.shape}")
    if min(gt.shape) < SSIM_WINDOW:
        raise InputError(f"SSIM needs every axis >= {SSIM_WINDOW} voxels, got shape {gt.shape}")
    data_range = float(gt.max() - gt.min())
    if data_range <= 0:
        raise InputError("the ground truth is constant")
    mask_source = "given" if mask is not None else f"gt > {threshold} * max(gt)"
    mask = np.asarray(gt > threshold * float(gt.max()) if mask is None else mask).astype(bool)
    if mask.shape != gt.shape:
        raise InputError(f"mask shape {mask.shape} differs from ground truth shape {gt.shape}")
    if not mask.any():
        raise InputError("the mask is empty")
    ssim, ssim_map = structural_similarity(gt, pred, data_range=data_range, full=True,
                                           **SSIM_OPTIONS)  # fmt: skip
    edges = edge_band(gt, mask)
    return {
        "psnr": float(peak_signal_noise_ratio(gt, pred, data_range=data_range)),
        "ssim": float(ssim),
        "psnr_mask": float(peak_signal_noise_ratio(gt[mask], pred[mask], data_range=data_range)),
        "ssim_mask": float(ssim_map[mask].mean()),
        "psnr_edge": float(peak_signal_noise_ratio(gt[edges], pred[edges], data_range=data_range)),
        "data_range": data_range,
        "mask": mask_source,
        "mask_voxels": int(mask.sum()),
        "edge_voxels": int(edges.sum()),
        "voxels": int(gt.size),
        "ssim_window": dict(SSIM_OPTIONS),
    }


def mask_overlap(mask: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Dice coefficient of two masks and the voxel count of ``mask`` over ``reference``'s."""
    mask, reference = np.asarray(mask, dtype=bool), np.asarray(reference, dtype=bool)
    both = int(mask.sum() + reference.sum())
    dice = 2.0 * float((mask & reference).sum()) / both if both else 1.0
    ratio = float(mask.sum()) / float(reference.sum()) if reference.any() else float("nan")
    return {"dice": dice, "voxel_ratio": ratio}
