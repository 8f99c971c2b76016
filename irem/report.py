"""Tables and figures of the benchmark, from the files the workflow writes.

Every number comes from a file: the metrics JSON of each run (``irem metrics``), the JSON sidecar
of each reconstruction (parameters and timings) and Snakemake's ``benchmark:`` TSVs. The run's
dataset, k, subject, method and seed are read from its BIDS-like path::

    <root>/<dataset>/k<k>/sub-<id>_rec-<method>_seed-<s>_<suffix>_metrics.json   (simulated)
    <root>/<scan>/sub-<id>_rec-<method>_seed-<s>_<suffix>_metrics.json           (real scan)

Pure functions build data frames and figures; :func:`main` (``python -m irem.report``) is the thin
command line the workflow calls. Figures use matplotlib's Agg backend and are written as PNG and PDF.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Order of the methods in tables and figures; ablation variants (``irem2L<n>``) follow by 2L.
METHOD_ORDER = ("bspline", "srr", "irem", "iremfast")
METHOD_LABELS = {"bspline": "B-spline", "srr": "SRR", "irem": "IREM", "iremfast": "IREM fast"}
METHOD_COLOURS = {
    "bspline": "#8c8c8c",
    "srr": "#4c72b0",
    "irem": "#dd8452",
    "iremfast": "#55a868",
}
METRICS = ("psnr", "ssim", "psnr_mask", "ssim_mask")
METRIC_LABELS = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "psnr_mask": "PSNR in mask (dB)",
    "ssim_mask": "SSIM in mask",
}

_NAME = re.compile(
    r"^sub-(?P<subject>[A-Za-z0-9]+)_rec-(?P<method>[A-Za-z0-9]+)_seed-(?P<seed>[0-9]+)"
    r"_(?P<suffix>[A-Za-z0-9]+)(?:_metrics)?\.(?:json|tsv|nii\.gz)$"
)
_K = re.compile(r"^k([0-9]+)$")


# --------------------------------------------------------------------------------------------------
# Reading runs


def parse_run_path(path: str | Path) -> dict[str, Any]:
    """Dataset, k (``None`` for a real scan), subject, method, seed and suffix of a run's file.

    Raises:
        ValueError: the file name does not follow the workflow's naming scheme.
    """
    p = Path(path)
    m = _NAME.match(p.name)
    if m is None:
        raise ValueError(f"{path}: not a run file (sub-<id>_rec-<method>_seed-<s>_<suffix>...)")
    km = _K.match(p.parent.name)
    if km:
        dataset, k = p.parent.parent.name, int(km.group(1))
    else:
        dataset, k = p.parent.name, None
    return {
        "dataset": dataset,
        "k": k,
        "subject": m.group("subject"),
        "method": m.group("method"),
        "seed": int(m.group("seed")),
        "suffix": m.group("suffix"),
    }


def method_sort_key(method: str) -> tuple[int, int, str]:
    """bspline, srr, irem, then ``irem2L<n>`` by n, then anything else alphabetically."""
    if method in METHOD_ORDER:
        return (METHOD_ORDER.index(method), 0, method)
    m = re.fullmatch(r"irem2L([0-9]+)", method)
    if m:
        return (len(METHOD_ORDER), int(m.group(1)), method)
    return (len(METHOD_ORDER) + 1, 0, method)


def method_label(method: str) -> str:
    m = re.fullmatch(r"irem2L([0-9]+)", method)
    if m:
        return f"IREM 2L={m.group(1)}"
    return METHOD_LABELS.get(method, method)


def _read_json(path: Path) -> dict[str, Any]:
    with open(path) as fh:
        return json.load(fh)


def sidecar_of(metrics_path: str | Path) -> Path:
    """``..._T1w_metrics.json`` -> ``..._T1w.json`` (the reconstruction's sidecar)."""
    p = Path(metrics_path)
    return p.with_name(p.name.replace("_metrics.json", ".json"))


def load_runs(metrics_paths: Sequence[str | Path]) -> pd.DataFrame:
    """One row per run: keys from the path, scores from the metrics JSON, parameters and timings
    from the reconstruction's sidecar (when it exists beside the metrics file)."""
    rows = []
    for path in metrics_paths:
        row: dict[str, Any] = parse_run_path(path)
        met = _read_json(Path(path))
        for key in (*METRICS, "data_range", "mask_voxels"):
            row[key] = met.get(key)
        side_path = sidecar_of(path)
        side = _read_json(side_path) if side_path.exists() else {}
        cfg = side.get("config") or {}
        row["fourier_dim"] = (cfg.get("model") or {}).get("fourier_dim")
        for key in (
            "training_seconds",
            "evaluation_seconds",
            "total_seconds",
            "final_loss",
            "epochs_completed",
            "stopped_by",
            "device",
        ):
            row[key] = side.get(key)
        row["metrics_file"] = str(path)
        rows.append(row)
    columns = [
        "dataset",
        "k",
        "subject",
        "method",
        "seed",
        "suffix",
        *METRICS,
        "data_range",
        "mask_voxels",
        "fourier_dim",
        "training_seconds",
        "evaluation_seconds",
        "total_seconds",
        "final_loss",
        "epochs_completed",
        "stopped_by",
        "device",
        "metrics_file",
    ]
    df = pd.DataFrame(rows, columns=columns)
    return sort_runs(df)


def sort_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Sort by dataset, k (real scans last), method order, then subject and seed."""
    if df.empty:
        return df.reset_index(drop=True)
    key = df.assign(
        _k=df["k"].fillna(10**9),
        _m=df["method"].map(method_sort_key),
    )
    by = ["dataset", "_k", "_m"] + [c for c in ("subject", "seed") if c in df.columns]
    return key.sort_values(by, kind="stable").drop(columns=["_k", "_m"]).reset_index(drop=True)


def load_benchmarks(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Snakemake ``benchmark:`` TSVs (one row per repeat) with the run keys of each file."""
    frames = []
    for path in paths:
        bench = pd.read_csv(path, sep="\t")
        keys = parse_run_path(path)
        for col, val in keys.items():
            bench[col] = val
        frames.append(bench)
    if not frames:
        return pd.DataFrame(columns=["dataset", "k", "subject", "method", "seed", "s", "max_rss"])
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------------------
# Tables


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation (over seeds and subjects) per dataset, k and method.

    The standard deviation is the sample one (ddof=1): empty for a single run.
    """
    cols = ["dataset", "k", "method", "n"]
    for m in METRICS:
        cols += [f"{m}_mean", f"{m}_std"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    groups = runs.groupby(["dataset", "k", "method"], dropna=False, sort=False)
    out = groups[list(METRICS)].agg(["mean", "std"])
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    out.insert(0, "n", groups.size())
    out = out.reset_index()
    return sort_runs(out)[cols]


def _fmt(mean: float, std: float, digits: int) -> str:
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _k_label(k: Any) -> str:
    return "real" if k is None or (isinstance(k, float) and math.isnan(k)) else str(int(k))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def metrics_markdown(summary: pd.DataFrame) -> str:
    """The table behind Fig. 4: mean ± std over seeds of PSNR/SSIM, whole volume and in mask."""
    headers = ["dataset", "k", "method", "n", "PSNR (dB)", "SSIM", "PSNR mask (dB)", "SSIM mask"]
    rows = []
    for r in summary.itertuples(index=False):
        rows.append(
            [
                r.dataset,
                _k_label(r.k),
                method_label(r.method),
                str(int(r.n)),
                _fmt(r.psnr_mean, r.psnr_std, 2),
                _fmt(r.ssim_mean, r.ssim_std, 4),
                _fmt(r.psnr_mask_mean, r.psnr_mask_std, 2),
                _fmt(r.ssim_mask_mean, r.ssim_mask_std, 4),
            ]
        )
    note = (
        "Mean ± sample standard deviation over seeds (and subjects); n runs per row. PSNR and SSIM "
        "(scikit-image, Gaussian window sigma 1.5) with the data range of the ground truth, over "
        "the whole volume and inside the brain mask. k = real: real-scan protocol against its HR "
        "reference.\n\n"
    )
    return "# Reconstruction quality\n\n" + note + markdown_table(headers, rows)


def runtime_summary(bench: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Wall time, CPU time and peak memory per dataset, k and method from the benchmark files,
    with IREM's training time from the sidecars where available."""
    cols = [
        "dataset",
        "k",
        "method",
        "n",
        "wall_s_mean",
        "wall_s_std",
        "cpu_s_mean",
        "max_rss_mb",
        "training_s_mean",
    ]
    if bench.empty:
        return pd.DataFrame(columns=cols)
    b = bench.copy()
    for col in ("s", "cpu_time", "max_rss"):
        if col not in b.columns:
            b[col] = np.nan
        b[col] = pd.to_numeric(b[col], errors="coerce")
    g = b.groupby(["dataset", "k", "method"], dropna=False, sort=False)
    out = pd.DataFrame(
        {
            "n": g.size(),
            "wall_s_mean": g["s"].mean(),
            "wall_s_std": g["s"].std(),
            "cpu_s_mean": g["cpu_time"].mean(),
            "max_rss_mb": g["max_rss"].max(),
        }
    )
    if runs is not None and not runs.empty:
        t = runs.groupby(["dataset", "k", "method"], dropna=False, sort=False)["training_seconds"]
        out["training_s_mean"] = pd.to_numeric(t.mean(), errors="coerce").reindex(out.index)
    else:
        out["training_s_mean"] = np.nan
    return sort_runs(out.reset_index())[cols]


def runtime_markdown(summary: pd.DataFrame) -> str:
    headers = [
        "dataset",
        "k",
        "method",
        "n",
        "wall time (s)",
        "CPU time (s)",
        "peak RSS (MB)",
        "IREM training (s)",
    ]
    rows = []
    for r in summary.itertuples(index=False):
        rows.append(
            [
                r.dataset,
                _k_label(r.k),
                method_label(r.method),
                str(int(r.n)),
                _fmt(r.wall_s_mean, r.wall_s_std, 1),
                _fmt(r.cpu_s_mean, float("nan"), 1),
                _fmt(r.max_rss_mb, float("nan"), 0),
                _fmt(r.training_s_mean, float("nan"), 1),
            ]
        )
    note = (
        "Per reconstruction job, from Snakemake's `benchmark:` files (mean ± std over runs); "
        "IREM's training time from its sidecar. Measured on the machine that ran the workflow, "
        "with whatever else it was running.\n\n"
    )
    return "# Run time\n\n" + note + markdown_table(headers, rows)


def write_tables(
    metrics_paths: Sequence[str | Path],
    benchmark_paths: Sequence[str | Path],
    out_dir: str | Path,
) -> dict[str, Path]:
    """metrics.csv/.md (summary), runs.csv (one row per run), runtime.csv/.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(metrics_paths)
    summary = summarise(runs)
    bench = load_benchmarks(benchmark_paths)
    rt = runtime_summary(bench, runs)
    files = {
        "metrics.csv": out / "metrics.csv",
        "metrics.md": out / "metrics.md",
        "runs.csv": out / "runs.csv",
        "runtime.csv": out / "runtime.csv",
        "runtime.md": out / "runtime.md",
    }
    summary.assign(k=summary["k"].map(_k_label)).to_csv(files["metrics.csv"], index=False)
    files["metrics.md"].write_text(metrics_markdown(summary))
    runs.assign(k=runs["k"].map(_k_label)).to_csv(files["runs.csv"], index=False)
    rt.assign(k=rt["k"].map(_k_label)).to_csv(files["runtime.csv"], index=False)
    files["runtime.md"].write_text(runtime_markdown(rt))
    return files


# --------------------------------------------------------------------------------------------------
# Figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, outputs: Sequence[str | Path], dpi: int = 150) -> None:
    """Write a figure to each output (format from the extension), without time stamps."""
    for out in outputs:
        out = Path(out)
        meta = {"CreationDate": None} if out.suffix == ".pdf" else {}
        fig.savefig(out, dpi=dpi, bbox_inches="tight", metadata=meta)


def fig3_fourier(
    ablation: pd.DataFrame, baselines: pd.DataFrame | None = None, title: str = ""
) -> Any:
    """Fig. 3: IREM's PSNR and SSIM (whole volume and in mask) against 2L, mean ± std over seeds.

    Args:
        ablation: runs with a ``fourier_dim`` column (from the sidecars).
        baselines: runs of other methods at the same dataset and k, drawn as dashed lines.
        title: figure title.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    if ablation.empty or ablation["fourier_dim"].isna().all():
        raise ValueError("no ablation run with a known 2L (fourier_dim) to plot")
    g = ablation.groupby("fourier_dim")
    dims = np.array(sorted(g.groups), dtype=float)
    for ax, (whole, masked, label) in zip(
        axes, (("psnr", "psnr_mask", "PSNR (dB)"), ("ssim", "ssim_mask", "SSIM")), strict=True
    ):
        for col, style, name in ((whole, "o-", "whole volume"), (masked, "s--", "in brain mask")):
            mean = g[col].mean().reindex(dims).to_numpy(dtype=float)
            std = g[col].std().reindex(dims).fillna(0.0).to_numpy(dtype=float)
            ax.errorbar(
                dims,
                mean,
                yerr=std,
                fmt=style,
                color=METHOD_COLOURS["irem"],
                capsize=3,
                label=f"IREM, {name}",
                alpha=1.0 if col == whole else 0.7,
            )
        if baselines is not None and not baselines.empty:
            for method, b in baselines.groupby("method", sort=False):
                ax.axhline(
                    float(b[whole].mean()),
                    color=METHOD_COLOURS.get(method, "k"),
                    linestyle=":",
                    label=f"{method_label(method)}, whole volume",
                )
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims)
        ax.set_xticklabels([str(int(d)) for d in dims])
        ax.set_xlabel("dimension 2L of the Fourier feature mapping")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(title or "Fig. 3: IREM against 2L")
    fig.tight_layout()
    return fig


def fig4_bars(runs: pd.DataFrame, title: str = "") -> Any:
    """Fig. 4: PSNR and SSIM bars (whole volume and in mask) by k and method, mean ± std."""
    plt = _pyplot()
    summary = summarise(runs)
    ks = sorted({int(k) for k in summary["k"].dropna()})
    methods = sorted(summary["method"].unique(), key=method_sort_key)
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(ks))
    for ax, metric in zip(axes.ravel(), METRICS, strict=True):
        for i, method in enumerate(methods):
            sel = summary[summary["method"] == method].set_index("k")
            mean = np.array([float(sel[f"{metric}_mean"].get(k, np.nan)) for k in ks])
            std = np.array([float(sel[f"{metric}_std"].get(k, np.nan)) for k in ks])
            pos = x + (i - (len(methods) - 1) / 2) * width
            bars = ax.bar(
                pos,
                mean,
                width,
                yerr=np.nan_to_num(std),
                capsize=3,
                color=METHOD_COLOURS.get(method, f"C{i}"),
                label=method_label(method),
            )
            digits = 3 if metric.startswith("ssim") else 1
            ax.bar_label(bars, labels=[f"{v:.{digits}f}" for v in mean], fontsize=7, padding=2)
        ax.set_xticks(x)
        ax.set_xticklabels([f"k={k}" for k in ks])
        ax.set_ylabel(METRIC_LABELS[metric])
        vals = summary[f"{metric}_mean"].to_numpy(dtype=float)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            lo = 0.0 if metric.startswith("psnr") else max(0.0, float(vals.min()) - 0.1)
            hi = float(vals.max())
            ax.set_ylim(lo, hi + 0.12 * (hi - lo if hi > lo else 1.0))
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title or "Fig. 4")
    fig.tight_layout()
    return fig


def _load(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(str(path))
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine, dtype=np.float64)


def brightest_slice(img: np.ndarray, mask: np.ndarray, axis: int, top: float = 0.001) -> int:
    """The slice holding the most of the brightest ``top`` fraction of voxels inside the mask
    (for a FLAIR: the slice through the lesions)."""
    other = tuple(a for a in range(3) if a != axis)
    inside = img[mask]
    if inside.size == 0:
        return img.shape[axis] // 2
    level = float(np.quantile(inside, 1.0 - top))
    return int(np.argmax(((img >= level) & mask).sum(axis=other)))


def slice_index(mask: np.ndarray, axis: int, fraction: float) -> int:
    """The slice at ``fraction`` of the mask's extent along ``axis`` (the middle by default)."""
    other = tuple(a for a in range(3) if a != axis)
    present = np.flatnonzero(mask.any(axis=other))
    if present.size == 0:
        return mask.shape[axis] // 2
    return int(round(present[0] + fraction * (present[-1] - present[0])))


def sample_on_slice(
    data: np.ndarray,
    affine: np.ndarray,
    ref_shape: tuple[int, ...],
    ref_affine: np.ndarray,
    axis: int,
    index: int,
) -> np.ndarray:
    """Nearest-neighbour values of an image (any grid and orientation) on one slice of a reference
    grid, through world coordinates; zero outside the image."""
    grids = [np.arange(n) for n in ref_shape]
    grids[axis] = np.array([index])
    ijk = np.stack(np.meshgrid(*grids, indexing="ij"), axis=-1).reshape(-1, 3).astype(float)
    world = ijk @ ref_affine[:3, :3].T + ref_affine[:3, 3]
    inv = np.linalg.inv(affine)
    vox = np.rint(world @ inv[:3, :3].T + inv[:3, 3]).astype(int)
    ok = np.all((vox >= 0) & (vox < np.asarray(data.shape)), axis=1)
    out = np.zeros(len(vox), dtype=np.float32)
    out[ok] = data[vox[ok, 0], vox[ok, 1], vox[ok, 2]]
    shape2 = [n for a, n in enumerate(ref_shape) if a != axis]
    return out.reshape(shape2)


def zoom_window(img: np.ndarray, mask: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` x ``size`` window with the most image detail (gradient
    energy) inside the mask: where super-resolution differences show."""
    from scipy import ndimage

    gx, gy = np.gradient(img.astype(np.float64))
    energy = (gx**2 + gy**2) * (mask > 0)
    summed = ndimage.uniform_filter(energy, size=size, mode="constant")
    half = size // 2
    valid = np.zeros_like(summed, dtype=bool)
    valid[half : img.shape[0] - (size - half) + 1, half : img.shape[1] - (size - half) + 1] = True
    if not valid.any():
        return 0, 0
    summed[~valid] = -np.inf
    cx, cy = np.unravel_index(int(np.argmax(summed)), summed.shape)
    return int(cx - half), int(cy - half)


def fig5_slices(
    gt_path: str | Path,
    mask_path: str | Path,
    lr_path: str | Path,
    recs: dict[str, str | Path],
    metrics: dict[str, dict[str, Any]] | None = None,
    axis: int = 2,
    fraction: float | str = 0.5,
    title: str = "",
    gt_label: str = "Ground truth",
) -> Any:
    """Fig. 5: one slice through the ground truth, an LR input stack and every reconstruction,
    with a zoomed window (second row) and the absolute error map (third row).

    Args:
        gt_path: the HR ground truth (or a real scan's HR reference); every reconstruction must be
            on its grid.
        mask_path: its brain mask (chooses the slice and the zoom window).
        lr_path: an LR stack, shown by nearest-neighbour sampling through world coordinates.
        recs: method -> reconstruction, in display order.
        metrics: method -> metrics JSON content, for the titles.
        axis: voxel axis normal to the slice.
        fraction: slice position within the mask's extent along ``axis``, or ``"brightest"``
            for the slice through the brightest voxels (:func:`brightest_slice`).
        title: figure title.
        gt_label: title of the ground-truth column.
    """
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    gt, gt_aff = _load(gt_path)
    mask, _ = _load(mask_path)
    if fraction == "brightest":
        idx = brightest_slice(gt, mask > 0.5, axis)
    else:
        idx = slice_index(mask > 0.5, axis, float(fraction))
    take = [slice(None)] * 3
    take[axis] = idx
    sl = tuple(take)
    gt2, mask2 = gt[sl], mask[sl]
    lr_data, lr_aff = _load(lr_path)
    panels = [
        (gt_label, gt2),
        (
            "LR input: " + Path(lr_path).name.split(".")[0],
            sample_on_slice(lr_data, lr_aff, gt.shape, gt_aff, axis, idx),
        ),
    ]
    for method, path in recs.items():
        data, aff = _load(path)
        if data.shape != gt.shape or not np.allclose(aff, gt_aff, atol=1e-3):
            raise ValueError(f"{path}: not on the grid of {gt_path}")
        panels.append((method, data[sl]))
    spacing = np.sqrt((gt_aff[:3, :3] ** 2).sum(axis=0))
    sp = [s for a, s in enumerate(spacing) if a != axis]
    aspect = sp[1] / sp[0]
    size = max(8, min(gt2.shape) // 4)
    x0, y0 = zoom_window(gt2, mask2, size)
    vmax = float(np.percentile(gt2[mask2 > 0], 99.5)) if (mask2 > 0).any() else float(gt2.max())
    errors = [np.abs(p - gt2) for _, p in panels[1:]]
    inside = mask2 > 0
    emax = (
        max(float(np.percentile(e[inside], 99)) if inside.any() else float(e.max()) for e in errors)
        or 1.0
    )
    n = len(panels)
    fig, axes = plt.subplots(3, n, figsize=(2.6 * n, 8.2), squeeze=False)
    err_im = None
    for j, (name, img) in enumerate(panels):
        ax = axes[0, j]
        ax.imshow(img.T, cmap="gray", origin="lower", vmin=0, vmax=vmax, aspect=aspect)
        ax.add_patch(
            Rectangle((x0 - 0.5, y0 - 0.5), size, size, fill=False, edgecolor="yellow", linewidth=1)
        )
        label = method_label(name) if j >= 2 else name
        if metrics and name in metrics:
            met = metrics[name]
            label += f"\n{met.get('psnr_mask', float('nan')):.2f} dB / {met.get('ssim_mask', float('nan')):.4f}"
        ax.set_title(label, fontsize=9)
        zoom = img[x0 : x0 + size, y0 : y0 + size]
        axes[1, j].imshow(zoom.T, cmap="gray", origin="lower", vmin=0, vmax=vmax, aspect=aspect)
        axes[1, j].set_title("zoom", fontsize=8)
        if j == 0:
            axes[2, j].imshow(mask2.T, cmap="gray", origin="lower", vmin=0, vmax=1, aspect=aspect)
            axes[2, j].set_title("brain mask", fontsize=8)
        else:
            err_im = axes[2, j].imshow(
                errors[j - 1].T, cmap="magma", origin="lower", vmin=0, vmax=emax, aspect=aspect
            )
            axes[2, j].set_title("|error|", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if err_im is not None:
        fig.colorbar(err_im, ax=axes[2, :].tolist(), shrink=0.8, label="absolute error")
    names = "xyz"
    sub = f" — slice {names[axis]}={idx}; titles: PSNR / SSIM in the brain mask"
    fig.suptitle((title or "Fig. 5") + sub, fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------------
# Command line


def _parse_pairs(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected METHOD=PATH, got {item!r}")
        out[key] = value
    return out


def _slice_arg(text: str) -> float | str:
    if text == "brightest":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a fraction nor 'brightest'"
        ) from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not in [0, 1]")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m irem.report {tables,fig3,fig4,fig5} ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m irem.report",
        description="Tables and figures of the irem-bench workflow from its metrics, sidecars and "
        "benchmark files.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tables", help="metrics.csv/.md, runs.csv, runtime.csv/.md")
    p.add_argument("--metrics", nargs="*", default=[], help="metrics JSONs of the runs")
    p.add_argument("--benchmarks", nargs="*", default=[], help="Snakemake benchmark TSVs")
    p.add_argument("--out-dir", required=True)

    p = sub.add_parser("fig3", help="IREM quality against 2L")
    p.add_argument("--metrics", nargs="+", required=True, help="ablation runs")
    p.add_argument("--baselines", nargs="*", default=[], help="runs drawn as reference lines")
    p.add_argument("--title", default="")
    p.add_argument("-o", "--out", nargs="+", required=True, help="PNG and/or PDF paths")
    p.add_argument("--dpi", type=int, default=150)

    p = sub.add_parser("fig4", help="PSNR/SSIM bars by method and k for one dataset")
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--title", default="")
    p.add_argument("-o", "--out", nargs="+", required=True)
    p.add_argument("--dpi", type=int, default=150)

    p = sub.add_parser("fig5", help="the same slice through GT, LR and each method")
    p.add_argument("--gt", required=True)
    p.add_argument("--mask", required=True)
    p.add_argument("--lr", required=True)
    p.add_argument("--rec", nargs="+", required=True, metavar="METHOD=PATH")
    p.add_argument("--metrics", nargs="*", default=[], help="metrics JSONs, for the titles")
    p.add_argument("--axis", type=int, choices=(0, 1, 2), default=2)
    p.add_argument(
        "--slice",
        type=_slice_arg,
        default=0.5,
        help="fraction of the mask's extent along --axis, or 'brightest'",
    )
    p.add_argument("--gt-label", default="Ground truth")
    p.add_argument("--title", default="")
    p.add_argument("-o", "--out", nargs="+", required=True)
    p.add_argument("--dpi", type=int, default=150)

    args = parser.parse_args(argv)
    try:
        if args.command == "tables":
            write_tables(args.metrics, args.benchmarks, args.out_dir)
            return 0
        if args.command == "fig3":
            runs = load_runs(args.metrics)
            base = load_runs(args.baselines) if args.baselines else None
            fig = fig3_fourier(runs, base, title=args.title)
        elif args.command == "fig4":
            fig = fig4_bars(load_runs(args.metrics), title=args.title)
        else:
            recs = _parse_pairs(args.rec)
            mets = {}
            for path in args.metrics:
                keys = parse_run_path(path)
                mets[keys["method"]] = _read_json(Path(path))
            fig = fig5_slices(
                args.gt,
                args.mask,
                args.lr,
                recs,
                mets,
                axis=args.axis,
                fraction=args.slice,
                title=args.title,
                gt_label=args.gt_label,
            )
        save_figure(fig, args.out, dpi=args.dpi)
    except (ValueError, OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
