"""The convergence study of the paper's network (brain PSNR and held-out LR loss against epochs,
from the snapshots of ``irem reconstruct --snapshots``) and Fig. 3, its one-parameter sweep."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from irem.evaluation import stats
from irem.evaluation.metrics import compute_metrics
from irem.layout import SNAPSHOTS
from irem.report.figures import add_caption, axis_scale, pyplot
from irem.report.tables import Methods, k_label, load_runs, markdown_table, read_json
from irem.volume import load_volume


def snapshot_folder(metrics_path: str | Path) -> Path:
    """``..._T1w_metrics.json`` -> ``..._T1w_snapshots`` (:func:`irem.layout.run_file`)."""
    p = Path(metrics_path)
    return p.with_name(p.name.replace("_metrics.json", SNAPSHOTS))


def score_snapshots(metrics_path: str | Path) -> pd.DataFrame:
    """One row per snapshot of a run: epoch, steps, held-out loss, brain PSNR/SSIM."""
    met = read_json(metrics_path)
    gt = load_volume(met["gt"]).data
    mask = load_volume(met["mask_file"], mask=True).data > 0.5 if met.get("mask_file") else None
    run = {key: str(met["meta"].get(key, "")) for key in ("method", "subject", "k", "seed")}
    rows = []
    for image in sorted(snapshot_folder(metrics_path).glob("epoch-*.nii.gz")):
        info = read_json(image.with_name(image.name.replace(".nii.gz", ".json")))
        scores = compute_metrics(load_volume(image).data, gt, mask=mask)
        rows.append({**run, "epoch": info["epoch"], "steps": info["steps"],
                     "held_out_loss": info.get("held_out_loss"), "psnr_mask": scores["psnr_mask"],
                     "ssim_mask": scores["ssim_mask"]})  # fmt: skip
    if not rows:
        raise ValueError(f"{snapshot_folder(metrics_path)}: no snapshots")
    return pd.DataFrame(rows)


def convergence_markdown(summary: pd.DataFrame, lines: Sequence[str]) -> str:
    """The runs and the paired differences as Markdown."""
    runs = [[r["label"], k_label(str(r["k"])), r["subject"], str(r["epochs_completed"]),
             str(r["steps"]), r["stopped_by"], f"{r['training_seconds'] / 60:.1f}",
             f"{r['psnr_mask']:.2f}", *(f"{r[f'minus_{n}']:+.2f}" for n in lines)]
            for _, r in summary.iterrows()]  # fmt: skip
    head = ["run", "k", "subject", "epochs", "steps", "stopped by", "training min",
            "brain PSNR (dB)", *(f"- {n}" for n in lines)]  # fmt: skip
    paired = ["run", "k", "baseline", "mean difference (dB)", "95% CI", "Wilcoxon p",
              "W/T/L (0.1 dB)"]  # fmt: skip
    rows = []  # per method and k, the paired difference to each baseline over subjects (0.1 dB)
    for (_, k), g in summary.groupby(["method", "k"], sort=False):
        for name in lines:
            d = g[f"minus_{name}"]
            r = stats.paired(d, pd.Series(0.0, index=d.index), tolerance=0.1)
            rows.append([g["label"].iloc[0], k_label(str(k)), name, f"{r.diff:+.2f}",
                         f"[{r.ci_low:+.2f}, {r.ci_high:+.2f}]", f"{r.p_wilcoxon:.3f}",
                         f"{r.wins}/{r.ties}/{r.losses}"])  # fmt: skip
    note = "\nPaired over subjects (the held-out-best image of each run):\n\n"
    return markdown_table(head, runs) + note + markdown_table(paired, rows)


def convergence_figure(
    curves: pd.DataFrame, lines: pd.DataFrame, methods: Methods, title: str = ""
) -> Any:
    """Brain PSNR and held-out LR loss against epochs, a column per subject, baselines as lines."""
    plt = pyplot()
    ks = sorted(curves["k"].unique(), key=int)
    subjects = sorted(curves["subject"].unique())
    fig, axes = plt.subplots(2 * len(ks), len(subjects), figsize=(3.6 * len(subjects),
                             2.6 * 2 * len(ks)), squeeze=False, sharex=True)  # fmt: skip
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, k in enumerate(ks):
        for j, subject in enumerate(subjects):
            top, bottom = axes[2 * i, j], axes[2 * i + 1, j]
            here = curves[(curves["k"] == k) & (curves["subject"] == subject)]
            for n, (method, g) in enumerate(here.groupby("method", sort=False)):
                g = g.sort_values("epoch")
                c = colours[n % len(colours)]
                top.plot(g["epoch"], g["psnr_mask"], "o-", ms=3, c=c, label=methods.label(method))
                bottom.plot(g["epoch"], g["held_out_loss"], "o-", ms=3, color=c)
            base = lines[(lines["k"] == k) & (lines["subject"] == subject)]
            for n, (_, r) in enumerate(base.iterrows()):
                top.axhline(r["psnr_mask"], ls="--", lw=1, color=f"C{7 + n}",
                            label=methods.label(r["method"]))  # fmt: skip
            top.set_title(f"sub-{subject}, k = {k_label(str(k))}", fontsize=9)
            bottom.set(yscale="log", xscale="log")
            if j == 0:
                top.set_ylabel("PSNR in brain (dB)")
                bottom.set_ylabel("held-out LR loss")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    legend = axes[0, 0].get_legend_handles_labels()
    fig.legend(*legend, loc="lower center", ncol=2, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def convergence_report(
    metrics: Sequence[str], lines: Sequence[str], methods: Methods
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The study's curves, a row per run (brain PSNR minus each line's) and the lines' runs."""
    runs = load_runs(metrics, methods)
    runs["label"] = [methods.label(m) for m in runs["method"]]
    base = load_runs(lines, methods)
    curves = pd.concat([score_snapshots(p) for p in runs["metrics_file"]], ignore_index=True)
    out = runs[["method", "label", "subject", "k", "seed", "epochs_completed", "steps",
                "stopped_by", "training_seconds", "psnr_mask"]].copy()  # fmt: skip
    key = ["subject", "k", "seed"]
    units = pd.MultiIndex.from_frame(out[key])
    for name, g in base.groupby("method", sort=False):
        ref = g.set_index(key)["psnr_mask"].reindex(units).to_numpy()
        out[f"minus_{name}"] = out["psnr_mask"].to_numpy() - ref
    return curves, out.reset_index(drop=True), base


def sweep_table(runs: pd.DataFrame, reference: dict[str, str]) -> pd.DataFrame:
    """Per k, swept parameter and value: brain PSNR and the paired difference to the reference."""
    unit = ["subject", "seed"]
    rows = []
    swept = runs[runs["ablation"] != ""].assign(k=lambda r: r["k"].astype(int))
    for (k, param), g in swept.groupby(["k", "ablation"], sort=False):
        g = g.assign(x=pd.to_numeric(g["value"]))
        ref = None
        if param in reference:
            ref = g[g["x"] == float(reference[param])].set_index(unit)["psnr_mask"]
        for x, h in g.groupby("x"):
            s = stats.summarise(h["psnr_mask"])
            row: dict[str, Any] = {"k": k, "parameter": param, "value": x, "n": s.n,
                                   "mean_psnr_mask": s.mean, "ci_low": s.ci_low,
                                   "ci_high": s.ci_high}  # fmt: skip
            if ref is not None:
                r = stats.paired(h.set_index(unit)["psnr_mask"], ref, tolerance=0.1)
                row |= {"minus_reference": r.diff, "diff_ci_low": r.ci_low,
                        "diff_ci_high": r.ci_high, "p_wilcoxon": r.p_wilcoxon,
                        "wins_ties_losses": f"{r.wins}/{r.ties}/{r.losses}"}  # fmt: skip
            rows.append(row)
    return pd.DataFrame(rows)


def sweep_markdown(table: pd.DataFrame, lines: pd.DataFrame, methods: Methods) -> str:
    """The sweep table as Markdown, with each baseline's mean brain PSNR on the same stacks."""
    rows = []
    for _, r in table.iterrows():
        paired = ["", "", "", ""]
        if pd.notna(r.get("minus_reference", np.nan)):
            paired = [f"{r['minus_reference']:+.2f}",
                      f"[{r['diff_ci_low']:+.2f}, {r['diff_ci_high']:+.2f}]",
                      f"{r['p_wilcoxon']:.3f}", r["wins_ties_losses"]]  # fmt: skip
        rows.append([str(r["k"]), r["parameter"], f"{r['value']:g}", str(r["n"]),
                     f"{r['mean_psnr_mask']:.2f}", f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]",
                     *paired])  # fmt: skip
    head = ["k", "parameter", "value", "runs", "brain PSNR (dB)", "95% CI", "- reference (dB)",
            "95% CI", "Wilcoxon p", "W/T/L (0.1 dB)"]  # fmt: skip
    base = [[str(k), methods.label(m), f"{g['psnr_mask'].mean():.2f}", str(len(g))]
            for (k, m), g in lines.groupby(["k", "method"], sort=False)]  # fmt: skip
    base_table = markdown_table(["k", "method", "brain PSNR (dB)", "runs"], base)
    return markdown_table(head, rows) + "\nBaselines on the same stacks:\n\n" + base_table


def sweep_figure(
    table: pd.DataFrame, lines: pd.DataFrame, methods: Methods, reference: dict[str, str],
    title: str = "", caption: str = "",
) -> Any:  # fmt: skip
    """Fig. 3: per k and swept parameter, brain PSNR minus the reference value's."""
    params = list(dict.fromkeys(table["parameter"]))
    ks = sorted(table["k"].unique())
    missing = [p for p in params if p not in reference]
    if not params or missing:
        raise ValueError(f"a sweep figure needs a reference value of {missing or 'each parameter'}")
    plt = pyplot()
    fig, axes = plt.subplots(len(ks), len(params), figsize=(4.8 * len(params), 3.8 * len(ks)),
                             squeeze=False)  # fmt: skip
    colours = methods.colours(lines["method"].unique())
    for (i, k), (j, param) in itertools.product(enumerate(ks), enumerate(params)):
        ax = axes[i, j]
        t = table[(table["parameter"] == param) & (table["k"] == k)].sort_values("value")
        ref = t.loc[t["value"] == float(reference[param]), "mean_psnr_mask"]
        if ref.empty:
            raise ValueError(f"{param}: no run at the reference value {reference[param]}")
        d = t["minus_reference"].to_numpy(dtype=float)
        err = [d - t["diff_ci_low"].to_numpy(dtype=float), t["diff_ci_high"].to_numpy() - d]
        ax.axhline(0, color="#999999", lw=0.8,
                   label=f"{param} = {reference[param]}: {ref.iloc[0]:.2f} dB")  # fmt: skip
        ax.errorbar(t["value"], d, yerr=err, fmt="o-", capsize=3, color="#333333",
                    label=f"{param} varied (95% CI)")  # fmt: skip
        for method, g in lines[lines["k"].astype(int) == k].groupby("method", sort=False):
            ax.axhline(g["psnr_mask"].mean() - ref.iloc[0], color=colours[method],
                       linestyle=":", label=methods.label(method))  # fmt: skip
        if axis_scale(t["value"]) == "log":
            ax.set_xscale("log", base=2)
        ax.set_xticks(t["value"], [f"{x:g}" for x in t["value"]])
        ax.set(xlabel=param, ylabel=f"brain PSNR minus {param} = {reference[param]} (dB)",
               title=f"k = {k}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(title or "Fig. 3")
    fig.tight_layout()
    add_caption(fig, caption)
    return fig
