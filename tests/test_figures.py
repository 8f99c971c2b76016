"""Figures from tiny fake inputs (irem/report/figures.py)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from irem.report import figures, tables
from irem.report.tables import Methods
from tests.report_fakes import meta, write_main_runs, write_metrics

METHODS = Methods(
    labels={"bspline": "B-spline", "srr": "SRR", "irem": "IREM"}, baselines=("bspline", "srr")
)


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _is_pdf(path: Path) -> bool:
    return path.read_bytes()[:5] == b"%PDF-"


def _save_both(fig, tmp_path: Path, name: str) -> None:
    out = [tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"]
    figures.save_figure(fig, out, dpi=40)
    assert _is_png(out[0]) and _is_pdf(out[1])
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave nothing behind


def test_fig4_bars_ci_and_subject_points(tmp_path: Path) -> None:
    runs = tables.load_runs(write_main_runs(tmp_path), METHODS)
    fig = figures.fig4_bars(runs, METHODS, title="t", caption="c")
    ax = fig.axes[2]  # brain PSNR
    heights = [p.get_height() for p in ax.patches]
    assert heights[:2] == pytest.approx([30.5, 25.5])  # B-spline at k=4, k=8
    assert heights[4] == pytest.approx(33.0)  # IREM at k=4: subjects 34 (two seeds) and 32
    from matplotlib.collections import PathCollection

    dots = [c for c in ax.collections if isinstance(c, PathCollection)]
    points = np.concatenate([c.get_offsets()[:, 1] for c in dots])
    assert sorted(points)[:2] == pytest.approx([24.0, 25.0])  # SRR k=8, one dot per subject
    assert len(points) == 12  # 3 methods x 2 k x 2 subjects
    _save_both(fig, tmp_path, "f4")


def test_scantime_figure(tmp_path: Path) -> None:
    paths = []
    for snr in ("5", "10", "20"):
        for subject, shift in (("01", 0.0), ("02", 1.0)):
            m = meta("4", "hrscan", subject, "0", hr_snr=snr)
            paths.append(write_metrics(tmp_path, m, 20 + float(snr) / 2 + shift))
            m = meta("4", "irem", subject, "0", hr_snr=snr)
            paths.append(write_metrics(tmp_path, m, 30 + shift))
    runs = tables.load_runs(paths, METHODS)
    fig = figures.scantime_figure(runs, METHODS, caption="c")
    ax = fig.axes[0]
    labels = [ln.get_label() for ln in ax.lines if not ln.get_label().startswith("_")]
    assert labels == ["IREM", "HR scan (direct)"]
    hr = next(ln for ln in ax.lines if ln.get_label() == "HR scan (direct)")
    xs, ys = hr.get_data()
    assert list(xs) == [5, 10, 20] and ys == pytest.approx([23.0, 25.5, 30.5])
    # Two subjects: no CI band (too wide to read), each subject's own thin curve instead.
    assert len(ax.collections) == 0 and len(ax.lines) == 2 + 2 * 2
    _save_both(fig, tmp_path, "st")
    with pytest.raises(ValueError, match="no scan-time run"):
        figures.scantime_figure(runs.assign(hr_snr=""), METHODS)


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(path))
    return path


def test_fig5_slices(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    shape = (24, 20, 16)
    gt = np.zeros(shape, dtype=np.float32)
    gt[4:20, 4:16, 3:13] = 0.5
    gt[8:14, 6:12, 5:10] = 1.0
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    gt_p = _save(tmp_path / "gt.nii.gz", gt, affine)
    mask_p = _save(tmp_path / "mask.nii.gz", (gt > 0).astype(np.float32), affine)
    # An LR stack thick along x (k=4), in another voxel orientation (x flipped).
    lr = gt.reshape(6, 4, *shape[1:]).mean(axis=1)[::-1]
    lr_aff = affine @ np.array([[-4, 0, 0, 21.5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    lr_p = _save(tmp_path / "acq-sagittal.nii.gz", lr, lr_aff)
    recs = {
        m: str(_save(tmp_path / f"{m}.nii.gz", gt + s * rng.standard_normal(shape), affine))
        for m, s in (("bspline", 0.1), ("irem", 0.02))
    }
    mets = {"irem": {"psnr_mask": 30.0, "ssim_mask": 0.9}}
    fig = figures.fig5_slices(gt_p, mask_p, lr_p, recs, METHODS, mets, axis=2, title="t")
    titles = [ax.get_title() for ax in fig.axes]
    assert "IREM\n30.00 dB / 0.9000" in titles and "B-spline" in titles
    _save_both(fig, tmp_path, "f5")
    bad = _save(tmp_path / "bad.nii.gz", gt[:-1], affine)
    with pytest.raises(ValueError, match="not on the grid"):
        figures.fig5_slices(gt_p, mask_p, lr_p, {"srr": str(bad)}, METHODS)


def test_sample_on_slice_follows_world_coordinates() -> None:
    # An image whose value is its world x coordinate, stored with x flipped and 2 mm voxels.
    data = np.repeat(np.arange(10, dtype=np.float32)[::-1, None, None] * 2.0, 3, axis=1)
    data = np.repeat(data, 3, axis=2)
    aff = np.array([[-2.0, 0, 0, 18.0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    out = figures.sample_on_slice(data, aff, (20, 3, 3), np.eye(4), axis=2, index=1)
    assert out.shape == (20, 3)
    assert out[0, 0] == 0.0 and out[4, 1] == 4.0 and out[18, 2] == 18.0


def test_slice_index_zoom_window_and_axis_scale() -> None:
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[:, :, 2:9] = True
    assert figures.slice_index(mask, 2, 0.5) == 5
    assert figures.slice_index(mask, 2, 0.0) == 2
    assert figures.slice_index(np.zeros_like(mask), 2, 0.5) == 5
    img = np.zeros((40, 40))
    img[30:34, 5:9] = 1.0  # the only detail
    x0, y0 = figures.zoom_window(img, np.ones_like(img), 8)
    assert x0 <= 30 and x0 + 8 >= 34 and y0 <= 5 and y0 + 8 >= 9
    assert figures.axis_scale([32, 512]) == "log" and figures.axis_scale([0.5, 1]) == "linear"
    assert figures.axis_scale([0, 1, 2]) == "linear"
