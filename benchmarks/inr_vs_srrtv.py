"""Paired quality of the grid INR (``iremfast``) against SRR-TV (box PSF) at the default budget.

One table, two sources, brain PSNR of the INR minus that of SRR-TV:

- ``cohort``: the workflow's evaluation subjects (``results/tables/runs.csv`` of the default run,
  SNR 40, box profile): per k the paired mean difference with its paired-t 95% interval, the
  Wilcoxon p-value, wins/ties/losses, the worst subject and how many subjects are more than
  ``--margin`` dB below. Nothing is run for this part.
- ``whole``: evaluation subjects of the cohort (by default the first of each contrast: 03 FLAIR,
  04 T1w, 05 T2w) generated over the whole 152x184x160 MNI152 brain crop (4.5 M voxels) instead
  of the workflow's crop, simulated as the workflow simulates
  (SNR 40, box profile, seed 0) at every k of the config and reconstructed with the config's
  ``iremfast`` and ``srrtv`` commands (the same ``irem`` path, one thread each; the INR's budget
  follows its ``--time-per-mvoxel`` rule; on this volume the finest grid level is hashed). Its
  runs are kept in ``results/benchmarks/inr_vs_srrtv_whole.csv``; ``--whole`` re-runs the
  methods on the subjects given and keeps every other run.

Each volume and k gets a row over all its subjects and, where they differ in contrast, one per
contrast.

  python benchmarks/inr_vs_srrtv.py                 # cohort part (+ kept whole-crop runs)
  python benchmarks/inr_vs_srrtv.py --whole [--subject 03 04 05]
                                    # also (re)run the whole crop (~15 min per pair of INR runs
                                    # on 2 cores)
  -> results/benchmarks/inr_vs_srrtv.{csv,md,png}
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from _workflow import (  # noqa: E402
    OUT,
    ROOT,
    cohort_subject_cases,
    cpu_description,
    irem,
    method_shell,
    run_logged,
    workflow_config,
)

from irem.stats import TIE_TOLERANCE, paired  # noqa: E402
from irem.volume import sidecar_path  # noqa: E402

INR, BASELINE = "iremfast", "srrtv"
WHOLE = OUT / "inr_vs_srrtv_whole.csv"


def cohort_runs(runs_csv: Path) -> pd.DataFrame:
    """Brain PSNR of the INR and SRR-TV per evaluation subject and k (main experiment only)."""
    df = pd.read_csv(runs_csv, dtype={"subject": str})
    main = df["hr_snr"].isna() & df["ablation"].isna() & (df["split"] == "evaluation")
    df = df[main & df["method"].isin([INR, BASELINE])]
    df = df.assign(volume="cohort", contrast=df["metrics_file"].str.extract(r"_(T1w|T2w|FLAIR)_")[0])
    return df[["volume", "k", "subject", "contrast", "method", "psnr_mask", "training_seconds",
               "total_seconds"]]


def method_commands() -> dict[str, str]:
    """The config's commands of the two methods."""
    return {m["name"]: str(m["command"]) for m in workflow_config()["methods"]
            if m["name"] in (INR, BASELINE)}


def held_out_summary(side: dict) -> dict:
    """From an INR run's sidecar: the step of its lowest held-out loss and how far that is below
    the start image's (step 0), in percent (NaN for a run without held-out voxels)."""
    held = side.get("held_out") or {}
    trace = held.get("trace") or []
    if not trace:
        return {"best_step": np.nan, "held_out_dip_pct": np.nan}
    return {"best_step": held["best_step"],
            "held_out_dip_pct": 100.0 * (1.0 - held["best_loss"] / trace[0][1])}


def run_whole(subject: str, jobs: int) -> pd.DataFrame:
    """Simulate and reconstruct one cohort subject over the whole brain crop at every k."""
    config = workflow_config()
    entry = next(d for d in config["datasets"] if d.get("cohort"))
    index = int(subject) - 1
    if index < entry["cohort"]["tuning"]:
        raise SystemExit(f"error: subject {subject} is a tuning subject; pick an evaluation one")
    commands = method_commands()
    work = Path(tempfile.mkdtemp(prefix="irem-whole-"))  # kept (with the logs) on a failure
    cases = cohort_subject_cases(config, index, work, None, zlib.crc32(f"cohort/{subject}".encode()))
    gt, mask = cases[0]["gt"], cases[0]["mask"]
    tasks = [(c["k"], name, c["stacks"]) for c in cases for name in commands]

    def one(task: tuple[int, str, list[str]]) -> dict:
        k, name, stacks = task
        rec = work / f"k{k}-{name}.nii.gz"
        cmd = method_shell(commands[name], stacks, rec, gt, work / f".k{k}-{name}.ckpt")
        run_logged(cmd, work / f"k{k}-{name}.log")
        met = work / f"k{k}-{name}_metrics.json"
        run_logged(irem("metrics", str(rec), str(gt), "--mask", str(mask), "-o", str(met)),
                   work / f"k{k}-{name}-metrics.log")
        m = json.loads(met.read_text())
        side = json.loads(sidecar_path(rec).read_text())
        return {"volume": "whole", "k": k, "subject": subject,
                "contrast": cases[0]["contrast"], "method": name,
                "psnr_mask": m["psnr_mask"],
                "training_seconds": side.get("training_seconds", np.nan),
                "total_seconds": side.get("total_seconds", np.nan),
                "steps": side.get("steps", np.nan), **held_out_summary(side)}

    with ThreadPoolExecutor(jobs) as pool:
        rows = list(pool.map(one, tasks))
    shutil.rmtree(work)
    return pd.DataFrame(rows)


def merge_whole(kept: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    """The whole-crop runs: ``new`` ones, and the ``kept`` ones of other (subject, method) pairs."""
    if kept is None or kept.empty:
        return new
    ran = set(zip(new["subject"], new["method"], strict=True))
    other = [(s, m) not in ran for s, m in zip(kept["subject"], kept["method"], strict=True)]
    return pd.concat([kept[other], new], ignore_index=True).sort_values(
        ["k", "subject", "method"], ignore_index=True)


def paired_table(runs: pd.DataFrame, margin: float) -> pd.DataFrame:
    """Per volume and k: INR minus SRR-TV brain PSNR, paired over subjects (contrast
    ``all``), and per contrast where the subjects have more than one."""
    rows = []
    for (volume, k), g in runs.groupby(["volume", "k"], sort=True):
        contrasts = sorted(g["contrast"].dropna().unique()) if "contrast" in g else []
        groups = [("all", g)] + ([(c, g[g["contrast"] == c]) for c in contrasts]
                                 if len(contrasts) > 1 else [])
        for contrast, part in groups:
            wide = part.pivot_table(index="subject", columns="method", values="psnr_mask")
            if INR in wide.columns:
                rows.append(_paired_row(wide, INR, volume, int(k), margin, contrast))
    return pd.DataFrame(rows)


def _paired_row(wide: pd.DataFrame, method: str, volume: str, k: int, margin: float,
                contrast: str = "all") -> dict:
    """INR variant ``method`` minus SRR-TV over the subjects that have both."""
    both = wide[[method, BASELINE]].dropna()
    diff = both[method] - both[BASELINE]
    p = paired(wide[method], wide[BASELINE], TIE_TOLERANCE["psnr_mask"])
    return {
        "volume": volume, "k": k, "contrast": contrast, "method": method, "n": p.n,
        "srrtv_psnr": float(both[BASELINE].mean()), "inr_psnr": float(both[method].mean()),
        "diff": p.diff, "ci_low": p.ci_low, "ci_high": p.ci_high, "p_wilcoxon": p.p_wilcoxon,
        "wins": p.wins, "ties": p.ties, "losses": p.losses, "worst": float(diff.min()),
        "margin": margin, "below_margin": int((diff < -margin).sum()),
        "per_subject": " ".join(f"{s}:{d:+.2f}" for s, d in diff.items()),
    }


def plot(runs: pd.DataFrame, table: pd.DataFrame, margin: float, path: Path) -> None:
    """Per-subject differences (points, coloured by contrast), paired mean and CI (bar) per
    volume and k over all subjects."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    labels = []
    colours = dict(zip(sorted(runs["contrast"].dropna().unique()),
                       ("tab:blue", "tab:orange", "tab:green", "tab:purple"), strict=False))
    table = table[table["contrast"] == "all"]
    for i, r in enumerate(table.itertuples()):
        g = runs[(runs["volume"] == r.volume) & (runs["k"] == r.k)]
        wide = g.pivot_table(index="subject", columns="method", values="psnr_mask")
        d = (wide[r.method] - wide[BASELINE]).dropna()
        contrast = g.drop_duplicates("subject").set_index("subject")["contrast"].reindex(d.index)
        x = np.full(d.size, i) + np.linspace(-0.12, 0.12, d.size)
        for c, colour in colours.items():
            at = (contrast == c).to_numpy()
            ax.scatter(x[at], d.to_numpy()[at], s=18, color=colour, zorder=3,
                       label=None if c in ax.get_legend_handles_labels()[1] else c)
        if np.isfinite(r.ci_low):
            ax.errorbar(i + 0.3, r.diff, yerr=[[r.diff - r.ci_low], [r.ci_high - r.diff]],
                        fmt="o", color="black", capsize=4)
        labels.append(f"{r.volume}\nk={r.k} (n={r.n})")
    ax.axhline(0, color="grey", lw=1)
    ax.axhline(-margin, color="tab:red", lw=1, ls="--", label=f"-{margin:g} dB")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("brain PSNR, INR - SRR-TV (dB)")
    ax.set_title("Grid INR against SRR-TV (box PSF): subjects, mean and 95% CI", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_md(table: pd.DataFrame, runs: pd.DataFrame, command: str, margin: float,
             path: Path) -> None:
    secs = runs.groupby(["volume", "k", "method"])["total_seconds"].mean().round(0)
    lines = [
        "# Grid INR against SRR-TV (box PSF): paired brain PSNR at the default budget",
        "",
        f"- command: `{command}`" + ("" if "--whole" in command else
                                     " (whole-crop runs kept from `--whole` runs before it)"),
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; CPU: {cpu_description()}; "
        f"torch {torch.__version__}",
        "- cohort: the default workflow's evaluation subjects (`results/tables/runs.csv`); "
        "whole: evaluation subjects over the whole 152x184x160 brain crop, same simulation "
        "and method commands, one thread per run; contrast `all`: every subject of the volume, "
        "else that contrast's subjects only",
        "- diff: mean of INR - SRR-TV over subjects, paired-t 95% CI, two-sided Wilcoxon p; "
        f"worst: the lowest subject; below_margin: subjects more than {margin:g} dB below",
        "",
        table.to_markdown(index=False, floatfmt=".2f"),
        "",
        "Mean run time per method (s, training and evaluation):",
        "",
        secs.unstack("method").reset_index().to_markdown(index=False, floatfmt=".0f"),
        "",
    ]
    whole = runs[(runs["volume"] == "whole") & (runs["method"] == INR)]
    if "held_out_dip_pct" in whole and whole["held_out_dip_pct"].notna().any():
        cols = ["k", "subject", "contrast", "method", "steps", "best_step", "held_out_dip_pct"]
        lines += [
            "Whole-crop INR runs: optimiser steps, the step of the lowest held-out loss (the "
            "returned model; 0 is the start image, SRR-TV) and how far it lies below the start "
            "image's (%):",
            "",
            whole[cols].astype({"k": int, "steps": "Int64", "best_step": "Int64"})
            .sort_values(["k", "subject", "method"]).to_markdown(index=False, floatfmt=".2f"),
            "",
        ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="results/tables/runs.csv",
                        help="the workflow's per-run table")
    parser.add_argument("--whole", action="store_true", help="(re)run the whole-crop volume")
    parser.add_argument("--subject", nargs="+", default=["03", "04", "05"],
                        help="cohort evaluation subjects (whole crop; default: one per contrast)")
    parser.add_argument("--jobs", type=int, default=2, help="whole-crop runs side by side")
    parser.add_argument("--margin", type=float, default=0.5, help="dB below SRR-TV to count")
    args = parser.parse_args(argv)
    runs_csv = ROOT / args.runs
    if not runs_csv.exists():
        raise SystemExit(f"error: {runs_csv} not found; run the workflow first")
    out = ROOT / OUT
    out.mkdir(parents=True, exist_ok=True)
    parts = [cohort_runs(runs_csv)]
    if args.whole:
        kept = pd.read_csv(ROOT / WHOLE, dtype={"subject": str}) if (ROOT / WHOLE).exists() else None
        new = pd.concat([run_whole(s, args.jobs) for s in args.subject], ignore_index=True)
        merge_whole(kept, new).to_csv(ROOT / WHOLE, index=False, float_format="%.4f")
    if (ROOT / WHOLE).exists():
        parts.append(pd.read_csv(ROOT / WHOLE, dtype={"subject": str}))
    runs = pd.concat(parts, ignore_index=True)
    table = paired_table(runs, args.margin)
    table.to_csv(out / "inr_vs_srrtv.csv", index=False, float_format="%.4f")
    command = " ".join(["python benchmarks/inr_vs_srrtv.py", *(argv or sys.argv[1:])])
    write_md(table, runs, command, args.margin, out / "inr_vs_srrtv.md")
    plot(runs, table, args.margin, out / "inr_vs_srrtv.png")
    print(table.drop(columns="per_subject").to_string(index=False, float_format="%.2f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
