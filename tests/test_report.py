"""Tables and figures from tiny synthetic run files (irem/report.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from irem import report


def write_run(
    root: Path,
    dataset: str,
    k: int | None,
    method: str,
    seed: int,
    psnr: float,
    ssim: float,
    fourier_dim: int | None = None,
    training_seconds: float | None = None,
    subject: str = "01",
    suffix: str = "T1w",
) -> Path:
    """A metrics JSON, its reconstruction sidecar and a benchmark TSV, named like the workflow's."""
    folder = root / dataset / (f"k{k}" if k is not None else "")
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"sub-{subject}_rec-{method}_seed-{seed}_{suffix}"
    metrics = {
        "psnr": psnr,
        "ssim": ssim,
        "psnr_mask": psnr - 2.0,
        "ssim_mask": ssim - 0.05,
        "data_range": 1.0,
        "mask_voxels": 100,
    }
    (folder / f"{stem}_metrics.json").write_text(json.dumps(metrics))
    sidecar: dict = {"method": method, "seed": seed, "total_seconds": 3.0}
    if fourier_dim is not None:
        sidecar["config"] = {"model": {"fourier_dim": fourier_dim}}
    if training_seconds is not None:
        sidecar["training_seconds"] = training_seconds
    (folder / f"{stem}.json").write_text(json.dumps(sidecar))
    bench = root / "runtime" / dataset / (f"k{k}" if k is not None else "")
    bench.mkdir(parents=True, exist_ok=True)
    (bench / f"{stem}.tsv").write_text(
        "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
        f"{2.0 + seed}\t0:00:02\t300.5\t1\t1\t1\t0\t0\t50\t{1.5 + seed}\n"
    )
    return folder / f"{stem}_metrics.json"


@pytest.fixture()
def runs_dir(tmp_path: Path) -> tuple[Path, list[Path]]:
    paths = []
    for k, base in ((4, 30.0), (8, 25.0)):
        for seed in (0, 1):
            paths.append(write_run(tmp_path, "mni", k, "bspline", seed, base, 0.9))
            paths.append(write_run(tmp_path, "mni", k, "srr", seed, base + 3 + seed, 0.95))
            paths.append(
                write_run(
                    tmp_path,
                    "mni",
                    k,
                    "irem",
                    seed,
                    base + 1 + 2 * seed,
                    0.93,
                    fourier_dim=256,
                    training_seconds=10.0,
                )
            )
    for dim, value in ((32, 20.0), (64, 22.0), (128, 23.0), (512, 24.5)):
        paths.append(
            write_run(
                tmp_path,
                "mni",
                8,
                f"irem2L{dim}",
                0,
                value,
                0.8,
                fourier_dim=dim,
                training_seconds=10.0,
            )
        )
    paths.append(write_run(tmp_path, "scan", None, "irem", 0, 28.0, 0.9, fourier_dim=256))
    return tmp_path, paths


def test_parse_run_path_simulated_and_real() -> None:
    keys = report.parse_run_path(
        "results/mni152_t1/k8/sub-mni152_rec-irem2L64_seed-3_T1w_metrics.json"
    )
    assert keys == {
        "dataset": "mni152_t1",
        "k": 8,
        "subject": "mni152",
        "method": "irem2L64",
        "seed": 3,
        "suffix": "T1w",
    }
    keys = report.parse_run_path("/x/results/realscan/sub-01_rec-srr_seed-0_FLAIR.nii.gz")
    assert keys["dataset"] == "realscan" and keys["k"] is None and keys["suffix"] == "FLAIR"
    keys = report.parse_run_path("results/runtime/ph/k4/sub-sl_rec-bspline_seed-1_PD.tsv")
    assert keys["dataset"] == "ph" and keys["k"] == 4 and keys["seed"] == 1
    with pytest.raises(ValueError, match="not a run file"):
        report.parse_run_path("results/tables/metrics.csv")


def test_method_order() -> None:
    methods = ["irem2L512", "irem", "foo", "srr", "irem2L32", "bspline"]
    assert sorted(methods, key=report.method_sort_key) == [
        "bspline",
        "srr",
        "irem",
        "irem2L32",
        "irem2L512",
        "foo",
    ]
    assert report.method_label("irem2L64") == "IREM 2L=64"
    assert report.method_label("srr") == "SRR"


def test_load_runs_reads_metrics_and_sidecars(runs_dir) -> None:
    _, paths = runs_dir
    runs = report.load_runs(paths)
    assert len(runs) == len(paths)
    first = runs.iloc[0]
    assert (first["dataset"], first["k"], first["method"], first["seed"]) == (
        "mni",
        4,
        "bspline",
        0,
    )
    irem = runs[(runs["method"] == "irem") & (runs["k"] == 4)]
    assert set(irem["fourier_dim"]) == {256}
    assert set(irem["training_seconds"]) == {10.0}
    # Real scans sort after the simulated ks.
    assert runs.iloc[-1]["dataset"] == "scan"


def test_summary_mean_and_sample_std_over_seeds(runs_dir) -> None:
    _, paths = runs_dir
    summary = report.summarise(report.load_runs(paths))
    row = summary[(summary["k"] == 4) & (summary["method"] == "irem")].iloc[0]
    assert row["n"] == 2
    assert row["psnr_mean"] == pytest.approx(32.0)  # 31 and 33
    assert row["psnr_std"] == pytest.approx(math.sqrt(2.0))  # sample std of 31, 33
    assert row["psnr_mask_mean"] == pytest.approx(30.0)
    srr = summary[(summary["k"] == 8) & (summary["method"] == "srr")].iloc[0]
    assert srr["psnr_mean"] == pytest.approx(28.5)
    single = summary[summary["method"] == "irem2L32"].iloc[0]
    assert single["n"] == 1 and math.isnan(single["psnr_std"])
    assert list(summary["method"][:3]) == ["bspline", "srr", "irem"]


def test_write_tables(runs_dir) -> None:
    root, paths = runs_dir
    benches = sorted((root / "runtime").rglob("*.tsv"))
    files = report.write_tables(paths, benches, root / "tables")
    metrics = pd.read_csv(files["metrics.csv"])
    assert {"dataset", "k", "method", "n", "psnr_mean", "psnr_std", "ssim_mask_mean"} <= set(
        metrics.columns
    )
    assert set(metrics["k"].astype(str)) == {"4", "8", "real"}
    md = files["metrics.md"].read_text()
    assert "| mni | 4 | IREM | 2 | 32.00 ± 1.41 |" in md
    assert "| scan | real | IREM | 1 | 28.00 |" in md
    runs = pd.read_csv(files["runs.csv"])
    assert len(runs) == len(paths)
    runtime = pd.read_csv(files["runtime.csv"])
    row = runtime[(runtime["k"].astype(str) == "4") & (runtime["method"] == "irem")].iloc[0]
    assert row["wall_s_mean"] == pytest.approx(2.5)  # 2 s and 3 s
    assert row["max_rss_mb"] == pytest.approx(300.5)
    assert row["training_s_mean"] == pytest.approx(10.0)
    assert "wall time (s)" in files["runtime.md"].read_text()


def test_write_tables_without_benchmarks(runs_dir) -> None:
    root, paths = runs_dir
    files = report.write_tables(paths[:3], [], root / "t2")
    assert pd.read_csv(files["runtime.csv"]).empty
    assert len(pd.read_csv(files["metrics.csv"])) == 3


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _is_pdf(path: Path) -> bool:
    return path.read_bytes()[:5] == b"%PDF-"


def test_fig3_and_fig4_command_line(runs_dir, tmp_path: Path) -> None:
    _, paths = runs_dir
    ablation = [p for p in paths if "irem" in p.name and "_seed-0_" in p.name and "/k8/" in str(p)]
    baselines = [p for p in paths if "/k8/" in str(p) and ("bspline" in p.name or "srr" in p.name)]
    png, pdf = tmp_path / "f3.png", tmp_path / "f3.pdf"
    rc = report.main(
        [
            "fig3",
            "--metrics",
            *map(str, ablation),
            "--baselines",
            *map(str, baselines),
            "-o",
            str(png),
            str(pdf),
            "--dpi",
            "50",
        ]
    )
    assert rc == 0 and _is_png(png) and _is_pdf(pdf)
    sim = [p for p in paths if "/scan/" not in str(p) and "2L" not in p.name]
    png4, pdf4 = tmp_path / "f4.png", tmp_path / "f4.pdf"
    assert (
        report.main(
            ["fig4", "--metrics", *map(str, sim), "-o", str(png4), str(pdf4), "--dpi", "50"]
        )
        == 0
    )
    assert _is_png(png4) and _is_pdf(pdf4)


def test_fig3_plots_means_over_seeds(runs_dir) -> None:
    _, paths = runs_dir
    runs = report.load_runs([p for p in paths if "/k8/" in str(p) and "irem" in p.name])
    fig = report.fig3_fourier(runs)
    line = fig.axes[0].lines[0]
    xs, ys = line.get_data()
    assert list(xs) == [32, 64, 128, 256, 512]
    assert ys[3] == pytest.approx(27.0)  # 2L=256: seeds 0 and 1 (26, 28)
    with pytest.raises(ValueError):
        report.fig3_fourier(runs.assign(fourier_dim=None))


def test_fig3_without_ablation_runs_is_an_error(tmp_path: Path, capsys) -> None:
    p = write_run(tmp_path, "d", 8, "bspline", 0, 20.0, 0.5)
    assert report.main(["fig3", "--metrics", str(p), "-o", str(tmp_path / "x.png")]) == 2
    assert "error:" in capsys.readouterr().err


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
    mask = (gt > 0).astype(np.float32)
    gt_p = _save(tmp_path / "gt.nii.gz", gt, affine)
    mask_p = _save(tmp_path / "mask.nii.gz", mask, affine)
    # An LR stack thick along x (k=4), in another voxel orientation (x flipped).
    lr = gt.reshape(6, 4, *shape[1:]).mean(axis=1)[::-1]
    lr_aff = affine @ np.array([[-4, 0, 0, 21.5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    lr_p = _save(tmp_path / "acq-sagittal.nii.gz", lr, lr_aff)
    recs = {}
    for m, noise in (("bspline", 0.1), ("irem", 0.02)):
        recs[m] = str(
            _save(tmp_path / f"{m}.nii.gz", gt + noise * rng.standard_normal(shape), affine)
        )
    mets = {"irem": {"psnr_mask": 30.0, "ssim_mask": 0.9}}
    fig = report.fig5_slices(gt_p, mask_p, lr_p, recs, mets, axis=2, fraction=0.5, title="t")
    assert len(fig.axes) >= 3 * 4  # GT, LR, two methods; three rows (+ colour bar)
    titles = [ax.get_title() for ax in fig.axes]
    assert any("30.00 dB / 0.9000" in t for t in titles)
    out = [tmp_path / "f5.png", tmp_path / "f5.pdf"]
    report.save_figure(fig, out, dpi=50)
    assert _is_png(out[0]) and _is_pdf(out[1])
    # A reconstruction on another grid is refused.
    bad = _save(tmp_path / "bad.nii.gz", gt[:-1], affine)
    with pytest.raises(ValueError, match="not on the grid"):
        report.fig5_slices(gt_p, mask_p, lr_p, {"srr": str(bad)})


def test_sample_on_slice_follows_world_coordinates() -> None:
    # An image whose value is its world x coordinate, stored with x flipped and 2 mm voxels.
    data = np.repeat(np.arange(10, dtype=np.float32)[::-1, None, None] * 2.0, 3, axis=1)
    data = np.repeat(data, 3, axis=2)
    aff = np.array([[-2.0, 0, 0, 18.0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    ref_aff = np.eye(4)
    out = report.sample_on_slice(data, aff, (20, 3, 3), ref_aff, axis=2, index=1)
    assert out.shape == (20, 3)
    # World x = 0..19 mm; nearest 2 mm voxel centre value (even numbers), 0 beyond x=19.
    assert out[0, 0] == 0.0 and out[4, 1] == 4.0 and out[18, 2] == 18.0


def test_slice_index_and_zoom_window() -> None:
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[:, :, 2:9] = True
    assert report.slice_index(mask, 2, 0.5) == 5
    assert report.slice_index(mask, 2, 0.0) == 2
    assert report.slice_index(np.zeros_like(mask), 2, 0.5) == 5
    img = np.zeros((40, 40))
    img[30:34, 5:9] = 1.0  # the only detail
    x0, y0 = report.zoom_window(img, np.ones_like(img), 8)
    assert x0 <= 30 and x0 + 8 >= 34 and y0 <= 5 and y0 + 8 >= 9
