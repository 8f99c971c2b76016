"""Figures of the benchmark (Fig. 4 bars, Figs. 5/6 slices, quality at equal scan time): pure
functions of a runs table or of image files, returning a matplotlib figure (Agg backend)."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import astuple
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from irem.evaluation import stats
from irem.report.tables import HR_SCAN, METRICS, Methods, evaluation_runs
from irem.volume import apply_affine, atomic_path, load_volume, voxel_sizes

METRIC_LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "psnr_mask": "PSNR in brain (dB)",
                 "ssim_mask": "SSIM in brain"}  # fmt: skip


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, outputs: Sequence[str | Path], dpi: int = 150) -> None:
    """Write ``fig`` to each output (format from the extension, no time stamp), atomically."""
    for out in map(Path, outputs):
        fmt = out.suffix.lstrip(".").lower()
        if fmt not in ("png", "pdf", "svg"):
            raise ValueError(f"{out}: figures are written as .png, .pdf or .svg")
        meta = {"CreationDate": None} if fmt == "pdf" else {}
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata=meta)


def add_caption(fig: Any, caption: str, width: int = 130) -> None:
    """Caption text under the axes (kept by ``bbox_inches='tight'``)."""
    if caption:
        fig.text(0.5, 0.0, textwrap.fill(caption, width), ha="center", va="top", fontsize=8)


def axis_scale(values: Sequence[float]) -> str:
    """``log`` (base 2) for positive values spanning a factor of 4 or more, else ``linear``."""
    v = np.asarray(values, dtype=float)
    return "log" if v.size and v.min() > 0 and v.max() / v.min() >= 4 else "linear"


def _fig4_panel(ax: Any, runs: pd.DataFrame, metric: str, methods: Methods) -> None:
    ks = sorted(runs["k"].unique(), key=float)
    names = sorted(runs["method"].unique(), key=methods.sort_key)
    colours = methods.colours(names)
    width = 0.8 / len(names)
    per_subject = runs.groupby(["method", "k", "subject"])[metric].mean()
    for i, method in enumerate(names):
        for j, k in enumerate(ks):
            if (method, k) not in per_subject.index.droplevel("subject"):
                continue
            scores = per_subject.loc[(method, k)].to_numpy(dtype=float)
            pos = j + (i - (len(names) - 1) / 2) * width
            s = stats.summarise(scores)
            err = (s.ci_high - s.mean) if math.isfinite(s.ci_high) else 0.0
            ax.bar(
                pos, s.mean, width, yerr=err, capsize=3, color=colours[method], alpha=0.85,
                label=methods.label(method) if j == 0 else None,
            )  # fmt: skip
            spread = np.linspace(-0.25, 0.25, scores.size) * width if scores.size > 1 else [0.0]
            ax.scatter(pos + np.asarray(spread), scores, s=9, color="k", zorder=3)
    ax.set_xticks(range(len(ks)), [f"k={k}" for k in ks])
    ax.set_ylabel(METRIC_LABELS[metric])
    vals = runs[metric].to_numpy(dtype=float)
    vals = vals[np.isfinite(vals)]
    if vals.size:
        lo = 0.0 if metric.startswith("psnr") else max(0.0, float(vals.min()) - 0.1)
        hi = float(vals.max())
        ax.set_ylim(lo, hi + 0.08 * (hi - lo if hi > lo else 1.0))
    ax.grid(axis="y", alpha=0.3)


def fig4_bars(runs: pd.DataFrame, methods: Methods, title: str = "", caption: str = "") -> Any:
    """Fig. 4: PSNR and SSIM bars by k and method for one dataset, a dot per subject."""
    runs = evaluation_runs(runs)  # simulated data outside the ablations and the scan-time runs
    runs = runs[(runs["k"] != "") & (runs["ablation"] == "") & (runs["hr_snr"] == "")]
    if runs.empty:
        raise ValueError("no simulated evaluation run to plot")
    if runs["dataset"].nunique() > 1:
        raise ValueError(f"fig4 draws one dataset, got {sorted(runs['dataset'].unique())}")
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, metric in zip(axes.ravel(), METRICS, strict=True):
        _fig4_panel(ax, runs, metric, methods)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title or "Fig. 4")
    fig.tight_layout()
    add_caption(fig, caption)
    return fig


def scantime_figure(
    runs: pd.DataFrame, methods: Methods, title: str = "", caption: str = ""
) -> Any:
    """Brain PSNR against the HR scan's SNR at equal scan time, a curve per method."""
    runs = evaluation_runs(runs)
    runs = runs[runs["hr_snr"] != ""]
    if runs.empty:
        raise ValueError('no scan-time run (meta "hr_snr") to plot')
    per_subject = runs.groupby(["method", "hr_snr", "subject"])["psnr_mask"].mean().reset_index()
    per_subject["x"] = pd.to_numeric(per_subject["hr_snr"], errors="coerce")
    if per_subject["x"].isna().any():
        raise ValueError("hr_snr: a value is not a number")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    colours = methods.colours(per_subject["method"].unique())
    for method in sorted(per_subject["method"].unique(), key=methods.sort_key):
        sel = per_subject[per_subject["method"] == method]
        summ = [(x, *astuple(stats.summarise(g["psnr_mask"]))) for x, g in sel.groupby("x")]
        xs, n, mean, _, low, high = np.array(summ, dtype=float).T
        style = {"color": "k", "linestyle": "--"} if method == HR_SCAN else {}
        line = ax.plot(xs, mean, marker="o", label=methods.label(method), **style)[0]
        if not style:
            line.set_color(colours[method])
        # 95% CI bands from 3 subjects on (2: wider than the plot), else each subject's curve
        if n.min() >= 3:
            ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        else:
            for _, sub in sel.groupby("subject"):
                sub = sub.sort_values("x")
                ax.plot(sub["x"], sub["psnr_mask"], color=line.get_color(), lw=0.6, alpha=0.5)
    ax.set(xlabel="SNR of the HR scan", ylabel=METRIC_LABELS["psnr_mask"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "PSNR vs HR SNR at equal scan time")
    fig.tight_layout()
    add_caption(fig, caption)
    return fig


def slice_index(mask: np.ndarray, axis: int, fraction: float | str, img: Any = None) -> int:
    """The slice at ``fraction`` of the mask's extent along ``axis`` (the middle by default), or
    with ``"brightest"`` the one holding most of the brightest 0.1% of ``img`` in the mask."""
    other = tuple(a for a in range(3) if a != axis)
    found = img[mask] if fraction == "brightest" else np.flatnonzero(mask.any(axis=other))
    if found.size == 0:
        return mask.shape[axis] // 2
    if fraction == "brightest":  # a FLAIR's lesions
        level = float(np.quantile(found, 1.0 - 0.001))
        return int(np.argmax(((img >= level) & mask).sum(axis=other)))
    return int(round(found[0] + float(fraction) * (found[-1] - found[0])))


def sample_on_slice(
    data: np.ndarray, affine: np.ndarray, ref_shape: tuple[int, ...], ref_affine: np.ndarray,
    axis: int, index: int,
) -> np.ndarray:  # fmt: skip
    """Nearest-neighbour values of an image on one slice of a reference grid (0 outside it)."""
    grids = [np.arange(n) for n in ref_shape]
    grids[axis] = np.array([index])
    ijk = np.stack(np.meshgrid(*grids, indexing="ij"), axis=-1).reshape(-1, 3)
    vox = np.rint(apply_affine(np.linalg.inv(affine), apply_affine(ref_affine, ijk))).astype(int)
    ok = np.all((vox >= 0) & (vox < np.asarray(data.shape)), axis=1)
    out = np.zeros(len(vox), dtype=np.float32)
    out[ok] = data[vox[ok, 0], vox[ok, 1], vox[ok, 2]]
    return out.reshape([n for a, n in enumerate(ref_shape) if a != axis])


def zoom_window(img: np.ndarray, mask: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size``-wide square with the most gradient energy in the mask."""
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


def _draw_slices(
    axes: Any, panels: list[tuple[str, np.ndarray]], mask2: np.ndarray, aspect: float,
    titles: list[str],
) -> Any:  # fmt: skip
    """Each panel, its zoomed window and its error (the mask under the GT); the error image."""
    from matplotlib.patches import Rectangle

    gt2 = panels[0][1]
    size = max(8, min(gt2.shape) // 4)
    x0, y0 = zoom_window(gt2, mask2, size)
    vmax = float(np.percentile(gt2[mask2], 99.5)) if mask2.any() else float(gt2.max())
    errors = [np.abs(p - gt2) for _, p in panels[1:]]
    emax = max(float(np.percentile(e[mask2] if mask2.any() else e, 99)) for e in errors) or 1.0
    show = {"cmap": "gray", "origin": "lower", "vmin": 0, "vmax": vmax, "aspect": aspect}
    err_im = None
    for j, (_, img) in enumerate(panels):
        axes[0, j].imshow(img.T, **show)
        box = Rectangle((x0 - 0.5, y0 - 0.5), size, size, fill=False, edgecolor="yellow", lw=1)
        axes[0, j].add_patch(box)
        wrapped = "\n".join(textwrap.fill(part, 26) for part in titles[j].split("\n"))
        axes[0, j].set_title(wrapped, fontsize=8)
        axes[1, j].imshow(img[x0 : x0 + size, y0 : y0 + size].T, **show)
        axes[1, j].set_title("zoom", fontsize=8)
        if j == 0:
            axes[2, j].imshow(mask2.T, **(show | {"vmax": 1}))
            axes[2, j].set_title("brain mask", fontsize=8)
            continue
        err_im = axes[2, j].imshow(errors[j - 1].T, **(show | {"cmap": "magma", "vmax": emax}))
        axes[2, j].set_title("|error|", fontsize=8)
    return err_im


def fig5_slices(
    gt_path: str | Path, mask_path: str | Path, lr_path: str | Path, recs: dict[str, str | Path],
    methods: Methods, metrics: dict[str, dict[str, Any]] | None = None, axis: int = 2,
    fraction: float | str = 0.5, title: str = "", gt_label: str = "Ground truth", caption: str = "",
) -> Any:  # fmt: skip
    """Figs. 5/6: one slice through the GT, an LR stack and each reconstruction, zoom and error."""
    import nibabel as nib

    gt = load_volume(gt_path)
    try:  # a constant mask is allowed, unlike an image
        mask = np.asarray(nib.load(str(mask_path)).dataobj) > 0.5
    except FileNotFoundError:
        raise ValueError(f"{mask_path}: no such file") from None
    idx = slice_index(mask, axis, fraction, gt.data)
    sl = tuple(idx if a == axis else slice(None) for a in range(3))
    lr = load_volume(lr_path)
    lr_slice = sample_on_slice(lr.data, lr.affine, gt.shape, gt.affine, axis, idx)
    panels = [(gt_label, gt.data[sl]), (f"LR input: {Path(lr_path).name.split('.')[0]}", lr_slice)]
    for method, path in recs.items():
        rec = load_volume(path)
        if rec.shape != gt.shape or not np.allclose(rec.affine, gt.affine, atol=1e-3):
            raise ValueError(f"{path}: not on the grid of {gt_path}")
        panels.append((method, rec.data[sl]))
    sp = [s for a, s in enumerate(voxel_sizes(gt.affine)) if a != axis]
    mets, titles = metrics or {}, [name for name, _ in panels[:2]]
    for name, _ in panels[2:]:  # the method's label, with its scores when given
        label = methods.label(name)
        if name in mets:
            psnr, ssim = (mets[name].get(k, math.nan) for k in ("psnr_mask", "ssim_mask"))
            label += f"\n{psnr:.2f} dB / {ssim:.4f}"
        titles.append(label)
    plt = pyplot()
    n = len(panels)
    fig, axes = plt.subplots(3, n, figsize=(2.6 * n, 8.2), squeeze=False)
    err_im = _draw_slices(axes, panels, mask[sl], sp[1] / sp[0], titles)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if err_im is not None:
        fig.colorbar(err_im, ax=axes[2, :].tolist(), shrink=0.8, label="absolute error")
    sub = f" — slice {'xyz'[axis]}={idx}; titles: PSNR / SSIM in the brain mask"
    fig.suptitle((title or "Fig. 5") + sub, fontsize=10)
    add_caption(fig, caption)
    return fig
