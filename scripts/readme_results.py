"""Keep the README's results section equal to the committed tables of the default run.

The block between ``<!-- results:start -->`` and ``<!-- results:end -->`` in README.md is generated
from ``results/tables/metrics.csv`` (and ``scantime.csv``): a compact table of brain PSNR/SSIM per
k and method on the evaluation subjects, and one sentence per k that claims an ordering only where
the paired test supports it (Wilcoxon signed-rank p < 0.05 over n >= 5 subjects).

    python scripts/readme_results.py            # rewrite the block
    python scripts/readme_results.py --check    # exit 1 if the README differs (tests run this)
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"
ALPHA, MIN_N = 0.05, 5


def _ci(row: pd.Series, col: str, digits: int) -> str:
    mean, lo, hi = row[f"{col}_mean"], row[f"{col}_ci_low"], row[f"{col}_ci_high"]
    if math.isnan(lo):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _diff(row: pd.Series) -> str:
    if pd.isna(row["psnr_mask_diff"]):
        return "best baseline"
    p = row["psnr_mask_p"]
    p_text = "n/a" if pd.isna(p) else f"{p:.3f}"
    wtl = f"{int(row['psnr_mask_wins'])}/{int(row['psnr_mask_ties'])}/{int(row['psnr_mask_losses'])}"
    return f"{row['psnr_mask_diff']:+.2f} (p {p_text}, {wtl})"


def verdict(row: pd.Series, baseline_label: str) -> str | None:
    """One sentence on a method against the best baseline, or None for the baseline itself."""
    if pd.isna(row["psnr_mask_diff"]):
        return None
    p, n = row["psnr_mask_p"], int(row["n"])
    if n >= MIN_N and not pd.isna(p) and p < ALPHA:
        side = "ahead of" if row["psnr_mask_diff"] > 0 else "behind"
        return (f"{row['label']} is {side} {baseline_label} by {abs(row['psnr_mask_diff']):.2f} dB "
                f"(p = {p:.3f}, n = {n})")
    if n < MIN_N:
        return f"{row['label']} against {baseline_label}: too few subjects to test (n = {n})"
    return f"{row['label']}: no significant difference from {baseline_label} (n = {n})"


def main_table(metrics: pd.DataFrame, dataset: str) -> list[str]:
    """The README's table and verdicts for one dataset (main runs: no ablation, no scan time)."""
    df = metrics[(metrics["dataset"] == dataset) & metrics["hr_snr"].isna()
                 & metrics["ablation"].isna()]
    lines = []
    for k, sub in df.groupby("k", sort=False):
        base = sub.loc[sub["psnr_mask_diff"].isna(), "label"]
        base_label = base.iloc[0] if len(base) else "the best baseline"
        lines += [
            f"**{dataset}, k = {k}** (n = {int(sub['n'].max())} evaluation subjects; brain PSNR "
            f"in dB and SSIM, mean [95% CI]; difference to the best baseline, {base_label}, with "
            "Wilcoxon p and wins/ties/losses)",
            "",
            "| method | PSNR brain | SSIM brain | Δ PSNR vs best baseline |",
            "|---|---|---|---|",
        ]
        for _, row in sub.iterrows():
            lines.append(f"| {row['label']} | {_ci(row, 'psnr_mask', 2)} | "
                         f"{_ci(row, 'ssim_mask', 4)} | {_diff(row)} |")
        sentences = [v for _, r in sub.iterrows() if (v := verdict(r, base_label))]
        lines += ["", "; ".join(sentences) + ".", ""]
    return lines


def scantime_lines(scantime: pd.DataFrame) -> list[str]:
    """Brain PSNR at equal scan time, one row per HR SNR."""
    wide = scantime.pivot_table(index="hr_snr", columns="label", values="psnr_mask_mean",
                                sort=False)
    cols = list(wide.columns)
    lines = ["**Equal scan time** (brain PSNR in dB, mean over subjects; "
             "`results/tables/scantime.md`)", "",
             "| HR SNR | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for snr, row in wide.iterrows():
        lines.append(f"| {snr:g} | " + " | ".join(f"{row[c]:.2f}" for c in cols) + " |")
    return lines + [""]


def inr_vs_srrtv_lines(table: pd.DataFrame) -> list[str]:
    """The paired INR - SRR-TV table of ``benchmarks/inr_vs_srrtv.py``."""
    margin = f"{table['margin'].iloc[0]:g}"
    table = table[table["method"] == "iremfast"]  # the workflow's INR only (the md has all)
    if "contrast" in table.columns:
        by_contrast = table[table["contrast"] != "all"]
        table = table[table["contrast"] == "all"]
    else:
        by_contrast = table.iloc[:0]
    lines = ["**Grid INR against SRR-TV (box PSF)**, brain PSNR, paired by subject "
             "(`python benchmarks/inr_vs_srrtv.py`; `results/benchmarks/inr_vs_srrtv.md`)", "",
             "| volume | k | n | SRR-TV | grid INR | INR - SRR-TV [95% CI] | Wilcoxon p | worst "
             f"subject | subjects > {margin} dB below |", "|---" * 9 + "|"]
    for r in table.itertuples():
        subjects = [part.split(":")[0] for part in r.per_subject.split()]
        name = {"cohort": "cohort (evaluation subjects)",
                "whole": f"subject{'s' if len(subjects) > 1 else ''} {', '.join(subjects)}, "
                         "whole 152x184x160 crop"}
        ci = "" if pd.isna(r.ci_low) else f" [{r.ci_low:+.2f}, {r.ci_high:+.2f}]"
        p = "-" if pd.isna(r.p_wilcoxon) else f"{r.p_wilcoxon:.3f}"
        lines.append(f"| {name.get(r.volume, r.volume)} | {r.k} | {r.n} | {r.srrtv_psnr:.2f} | "
                     f"{r.inr_psnr:.2f} | {r.diff:+.2f}{ci} | {p} | {r.worst:+.2f} | "
                     f"{r.below_margin} |")
    lines.append("")
    said = []
    for r in table.itertuples():
        where = "the cohort" if r.volume == "cohort" else "the whole crop"
        if round(abs(r.diff), 2) == 0:
            side = "within 0.01 dB of SRR-TV"
        else:
            side = f"{abs(r.diff):.2f} dB {'above' if r.diff > 0 else 'below'} SRR-TV"
        if r.n < 2:
            said.append(f"at k = {r.k} on {where} the grid INR is {side} (one subject)")
            continue
        test = "significant" if r.n >= 5 and r.p_wilcoxon < 0.05 else "not significant"
        below = (f"never more than {margin} dB below it" if r.below_margin == 0 else
                 f"more than {margin} dB below it on {r.below_margin} of {r.n} subjects")
        said.append(f"at k = {r.k} on {where} the grid INR is {side} on average ({test}, "
                    f"p = {r.p_wilcoxon:.3f}) and {below} (worst subject {r.worst:+.2f} dB)")
    lines.append("; ".join(said)[0].upper() + "; ".join(said)[1:] + ".")
    if len(by_contrast):
        ks = " / ".join(f"k = {k}" for k in sorted(by_contrast["k"].unique()))
        parts = []
        for volume, part in by_contrast.groupby("volume", sort=False):
            cells = [f"{c} " + " / ".join(f"{d:+.2f}" for d in g.sort_values("k")["diff"])
                     for c, g in part.groupby("contrast", sort=True)]
            parts.append(("cohort " if volume == "cohort" else "whole crop ") + ", ".join(cells))
        lines += ["", f"By contrast (INR - SRR-TV, dB, {ks}): " + "; ".join(parts) + "."]
    return lines + [""]


def step_cost_lines(runs: pd.DataFrame) -> list[str]:
    """Median steps/s per target size and variant of the recorded step-cost comparison."""
    chunk = runs.loc[runs["variant"] == "local", "batch_chunk"]
    names = {"dense": "dense update", "sparse": "sparse update",
             "local": f"sparse update, batches of {chunk.max():g}-voxel runs",
             "hashed": "hashed update (fast.yaml)"}
    wide = runs.pivot_table(index="target_mvoxels", columns="variant", values="steps_per_s",
                            aggfunc="median")
    cols = [c for c in names if c in wide.columns]
    lines = ["**Grid INR training steps per second** against the target's size (one thread, "
             "median of rounds; `results/benchmarks/inr_step_cost.md`, the comparison that "
             "chose the hashed update)", "",
             "| M voxels | " + " | ".join(names[c] for c in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for size, row in wide.iterrows():
        lines.append(f"| {size:g} | " + " | ".join(f"{row[c]:.1f}" for c in cols) + " |")
    rounds = runs.pivot_table(index="repeat", columns=["variant", "target_mvoxels"],
                              values="steps_per_s")
    if {3.6, 0.6} <= set(runs["target_mvoxels"]):
        ratio = {c: (rounds[(c, 3.6)] / rounds[(c, 0.6)]).median() for c in cols}
        lines += ["", "Steps per second at 3.6 M voxels over those at 0.6 M (median over rounds): "
                  + ", ".join(f"{names[c]} {ratio[c]:.2f}" for c in cols) + "."]
    return lines + [""]


def block(results: Path) -> str:
    metrics = pd.read_csv(results / "tables" / "metrics.csv", dtype={"k": str})
    datasets = [d for d in metrics["dataset"].unique() if d != "realscan"]
    lines = [START, "<!-- generated by scripts/readme_results.py from results/tables/ and "
                    "results/benchmarks/; do not edit -->", ""]
    for d in datasets:
        lines += main_table(metrics, d)
    scantime = results / "tables" / "scantime.csv"
    if scantime.exists():
        lines += scantime_lines(pd.read_csv(scantime))
    paired = results / "benchmarks" / "inr_vs_srrtv.csv"
    if paired.exists():
        lines += inr_vs_srrtv_lines(pd.read_csv(paired))
    cost = results / "benchmarks" / "inr_step_cost.csv"
    if cost.exists():
        lines += step_cost_lines(pd.read_csv(cost))
    return "\n".join(lines + [END])


def replace_block(readme: str, new: str) -> str:
    if START not in readme or END not in readme:
        raise ValueError("README.md has no results markers")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return head + new + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is out of date")
    parser.add_argument("--readme", default=str(ROOT / "README.md"))
    parser.add_argument("--results", default=str(ROOT / "results"))
    args = parser.parse_args(argv)
    readme = Path(args.readme).read_text()
    updated = replace_block(readme, block(Path(args.results)))
    if args.check:
        if updated != readme:
            print("README.md results differ from results/tables/: run "
                  "python scripts/readme_results.py", file=sys.stderr)
            return 1
        return 0
    Path(args.readme).write_text(updated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
