import math

import numpy as np
import pytest

from irem.errors import InputError
from irem.evaluation.metrics import compute_metrics, mask_overlap


def test_psnr_of_a_known_error() -> None:
    rng = np.random.default_rng(0)
    gt = rng.random((16, 16, 16))
    gt[0, 0, 0], gt[1, 1, 1] = 0.0, 2.0  # data range 2
    pred = gt + 0.02  # MSE = 4e-4 -> PSNR = 10 log10(4 / 4e-4) = 40 dB
    m = compute_metrics(pred, gt, mask=np.ones_like(gt, bool))
    assert m["data_range"] == pytest.approx(2.0)
    assert m["psnr"] == pytest.approx(40.0, abs=1e-6)
    assert m["psnr_mask"] == pytest.approx(40.0, abs=1e-6)
    assert 0.9 < m["ssim"] <= 1.0


@pytest.mark.filterwarnings("ignore:divide by zero")
def test_mask_restricts_the_error() -> None:
    gt = np.zeros((24, 24, 24))
    gt[10:18, 10:18, 10:18] = 1.0  # farther than the SSIM window (radius 5) from the error
    pred = gt.copy()
    pred[:2] += np.random.default_rng(1).normal(0, 0.1, pred[:2].shape)  # error outside the mask
    m = compute_metrics(pred, gt)
    assert m["mask_voxels"] == 512
    assert m["psnr_mask"] == float("inf") or m["psnr_mask"] > 100
    assert m["psnr"] < 35  # noise of std 0.1 on 1/12 of the volume: ~31 dB
    assert m["ssim_mask"] > m["ssim"]


def test_refuses_mismatch_and_tiny() -> None:
    with pytest.raises(InputError, match="shape"):
        compute_metrics(np.zeros((16, 16, 16)), np.ones((16, 16, 15)))
    with pytest.raises(InputError, match="SSIM needs"):
        compute_metrics(np.zeros((16, 16, 5)), np.arange(16 * 16 * 5.0).reshape(16, 16, 5))


def test_edge_psnr_scores_the_boundaries() -> None:
    """The edge region holds the ground truth's strongest gradients in and around the mask: an
    error on an edge lowers the edge PSNR more than the brain PSNR; one inside a flat region
    leaves the edge PSNR alone."""
    from irem.evaluation.metrics import edge_band

    gt = np.zeros((24, 24, 24))
    gt[6:18, 6:18, 6:18] = 1.0
    mask = gt > 0
    edges = edge_band(gt, mask)
    assert edges[6, 12, 12] and edges[5, 12, 12] and not edges[12, 12, 12]
    blurred = gt.copy()
    blurred[5:8, 6:18, 6:18] = 0.5
    m = compute_metrics(blurred, gt, mask)
    assert m["psnr_edge"] < m["psnr_mask"]
    flat = gt.copy()
    flat[11:13, 11:13, 11:13] = 0.5
    assert math.isinf(compute_metrics(flat, gt, mask)["psnr_edge"])


def test_mask_overlap_dice_and_ratio() -> None:
    a = np.zeros((4, 4, 4), bool)
    a[:2] = True  # 32 voxels
    b = np.zeros_like(a)
    b[1:3] = True  # 32 voxels, 16 shared
    assert mask_overlap(a, a) == {"dice": 1.0, "voxel_ratio": 1.0}
    assert mask_overlap(a, b) == {"dice": 0.5, "voxel_ratio": 1.0}
    assert mask_overlap(a, ~a) == {"dice": 0.0, "voxel_ratio": 1.0}
    assert mask_overlap(a, a | b)["voxel_ratio"] == pytest.approx(32 / 48)

