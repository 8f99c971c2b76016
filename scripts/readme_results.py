"""Keep the README's results section equal to the committed tables of the default run.

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
    text = f"{mean:.{digits}f}"
    return text if math.isnan(lo) else f"{text} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _diff(row: pd.Series) -> str:
    if pd.isna(row["psnr_mask_diff"]):
        return "best baseline"
    p, holm = ("n/a" if pd.isna(row[c]) else f"{row[c]:.3f}"
               for c in ("psnr_mask_p", "psnr_mask_p_holm"))
    wtl = "/".join(str(int(row[f"psnr_mask_{w}"])) for w in ("wins", "ties", "losses"))
    return f"{row['psnr_mask_diff']:+.2f} (p {p}, Holm {holm}, {wtl})"


def verdict(row: pd.Series, baseline_label: str) -> str | None:
    """One sentence on a method against the best baseline (None for the baseline itself)."""
    if pd.isna(row["psnr_mask_diff"]):
        return None
    p, n = row["psnr_mask_p_holm"], int(row["n"])
    if n >= MIN_N and not pd.isna(p) and p < ALPHA:
        side = "ahead of" if row["psnr_mask_diff"] > 0 else "behind"
        return (f"{row['label']} is {side} {baseline_label} by {abs(row['psnr_mask_diff']):.2f} dB "
                f"(Holm-adjusted p = {p:.3f}, n = {n})")
    if n < MIN_N:
        return f"{row['label']} against {baseline_label}: too few subjects to test (n = {n})"
    return (f"{row['label']}: no significant difference from {baseline_label} "
            f"({row['psnr_mask_diff']:+.2f} dB, Holm-adjusted p = {p:.3f}, n = {n})")


def main_table(metrics: pd.DataFrame, dataset: str) -> list[str]:
    """The README's table and verdicts for one dataset (main runs: no ablation, no scan time)."""
    df = metrics[(metrics["dataset"] == dataset) & metrics["hr_snr"].isna()
                 & metrics["ablation"].isna()]
    lines = []
    for k, sub in df.groupby("k", sort=False):
        base = sub.loc[sub["psnr_mask_diff"].isna(), "label"]
        base_label = base.iloc[0] if len(base) else "the best baseline"
        lines += [
            f"**{dataset}, k = {k}** (n = {int(sub['n'].max())} evaluation subjects; PSNR in dB "
            f"and SSIM inside the brain mask and PSNR on the edges, mean [95% CI]; difference to "
            f"the best baseline, {base_label}, with Wilcoxon p, Holm-adjusted p and "
            "wins/ties/losses)",
            "",
            "| method | PSNR brain | SSIM brain | PSNR edges | Δ PSNR brain vs best baseline |",
            "|---|---|---|---|---|",
        ]
        for _, row in sub.iterrows():
            lines.append(f"| {row['label']} | {_ci(row, 'psnr_mask', 2)} | "
                         f"{_ci(row, 'ssim_mask', 4)} | {_ci(row, 'psnr_edge', 2)} | "
                         f"{_diff(row)} |")
        sentences = [v for _, r in sub.iterrows() if (v := verdict(r, base_label))]
        lines += ["", "; ".join(sentences) + ".", ""]
    return lines


def contrast_lines(runs: pd.DataFrame, method: str, baselines: dict[str, str]) -> list[str]:
    """``method`` - the best baseline of each k (``baselines``) in brain PSNR per contrast and k,
    and the grid INR's escape steps."""
    runs = runs[(runs["split"] == "evaluation") & runs["hr_snr"].isna() & runs["ablation"].isna()]
    runs = runs[runs["dataset"] != "realscan"].copy()
    runs["contrast"] = runs["metrics_file"].str.extract(r"_([A-Za-z0-9]+)_metrics\.json$")[0]
    wide = runs.pivot_table(index=["k", "contrast", "subject"], columns="method",
                            values="psnr_mask")
    ks = sorted(runs["k"].unique())
    if method not in wide or any(baselines.get(k) not in wide for k in ks):
        return []
    base = wide.apply(lambda row: row[baselines[row.name[0]]], axis=1)
    diff = (wide[method] - base).groupby(level=["contrast", "k"]).mean()
    cells = [f"{c} " + " / ".join(f"{diff[(c, k)]:+.2f}" for k in ks)
             for c in sorted(diff.index.get_level_values(0).unique())]
    baseline = " / ".join(dict.fromkeys(baselines[k] for k in ks))
    own = runs[runs["method"] == method]
    flat = int(own["escape_step"].isna().sum())
    return [f"By contrast ({method} - {baseline}, brain PSNR in dB, "
             + " / ".join(f"k = {k}" for k in ks) + "): " + ", ".join(cells) + ". "
             f"Escape step of the grid INR (the first at which its held-out loss is 1% below its "
             f"start image's): median {own['escape_step'].median():.0f} of "
             f"{own['steps'].median():.0f} steps; runs that never left the start: {flat} of "
             f"{len(own)}." + _returned(own), ""]


def _returned(own: pd.DataFrame) -> str:
    """What the runs returned, when they chose (train.base_smoother): network, SRR-TV or blend."""
    chose = own["returned"].dropna() if "returned" in own else own.iloc[:0, 0]
    if chose.empty:
        return ""
    n = chose.value_counts()
    blend = (f", a blend of the two in {n.get('blend', 0)} (median weight of the network "
             f"{own['network_weight'].median():.2f})") if "blend" in n else ""
    return (f" The network's image was returned in {n.get('network', 0)} of {len(chose)} runs, "
            f"SRR-TV at the held-out weight in {n.get('srr_tv', 0)}{blend}.")


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


def converged_lines(runs: pd.DataFrame) -> list[str]:
    """``converged_runs.csv``: each variant's paired differences to the lines, and a verdict."""
    from irem.evaluation.stats import holm, paired

    names = [c.removeprefix("minus_") for c in runs.columns if c.startswith("minus_")]
    n = runs["subject"].nunique()
    rows, tests = [], []
    for (method, k), g in runs.groupby(["method", "k"], sort=False):
        res = {b: paired(g[f"minus_{b}"], pd.Series(0.0, index=g.index), 0.1) for b in names}
        tests += [(method, k, b, r) for b, r in res.items()]
        rows.append((method, k, g, res))
    adjusted = {}
    for method in runs["method"].unique():
        mine = [t for t in tests if t[0] == method]
        for t, p in zip(mine, holm([t[3].p_wilcoxon for t in mine]), strict=True):
            adjusted[t[:3]] = p
    out = [f"**The paper's network until its held-out loss stops improving** (evaluation "
           f"subjects, n = {n}; `snakemake converged`, "
           "[`results/tables/converged.md`](results/tables/converged.md), figure "
           "[`results/figures/converged.png`](results/figures/converged.png); Δ: mean paired "
           "difference in brain PSNR, Holm-adjusted Wilcoxon p over each run's comparisons, W/T/L)",
           "", "| run | k | epochs (median) | PSNR brain | "
           + " | ".join(f"Δ vs {b}" for b in names) + " |", "|---" * (4 + len(names)) + "|"]
    for method, k, g, res in rows:
        cells = " | ".join(f"{r.diff:+.2f} (p {adjusted[(method, k, b)]:.3f}, "
                           f"{r.wins}/{r.ties}/{r.losses})" for b, r in res.items())
        out.append(f"| {g['label'].iloc[0]} | {k} | {g['epochs_completed'].median():.0f} | "
                   f"{g['psnr_mask'].mean():.2f} | {cells} |")
    first = runs["method"].iloc[0]
    mine = [(k, b, r, adjusted[(first, k, b)]) for m, k, b, r in tests if m == first]
    ahead = all(r.diff > 0 and p < ALPHA for _, _, r, p in mine) and n >= MIN_N
    behind = [(k, b, r, p) for k, b, r, p in mine if r.diff < 0 and p < ALPHA and n >= MIN_N]
    found = "is reproduced" if ahead else "is not reproduced" if behind else "is not settled"
    why = "; ".join(f"{r.diff:+.2f} dB against {b} at k = {k} (p {p:.3f})" for k, b, r, p in mine)
    out += ["", f"Verdict ({runs['label'].iloc[0]}): the paper's ordering, its network ahead of "
                f"every baseline at each k, {found} on this data: {why}.", ""]
    return out


def block(results: Path) -> str:
    metrics = pd.read_csv(results / "tables" / "metrics.csv", dtype={"k": str})
    datasets = [d for d in metrics["dataset"].unique() if d != "realscan"]
    lines = [START, "<!-- generated by scripts/readme_results.py from results/tables/; do not "
                    "edit -->", ""]
    for d in datasets:
        lines += main_table(metrics, d)
    runs = pd.read_csv(results / "tables" / "runs.csv", dtype={"k": str, "subject": str})
    own = metrics[(metrics["dataset"] == "cohort") & (metrics["method"] == "iremfast")]
    best = own[own["hr_snr"].isna()].set_index("k")["baseline"].to_dict()
    lines += contrast_lines(runs, "iremfast", best)
    scantime = results / "tables" / "scantime.csv"
    if scantime.exists():
        lines += scantime_lines(pd.read_csv(scantime))
    converged = results / "tables" / "converged_runs.csv"  # `snakemake converged`
    if converged.exists():
        lines += converged_lines(pd.read_csv(converged, dtype={"k": str, "subject": str}))
    return "\n".join(lines + [END])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is out of date")
    parser.add_argument("--readme", default=str(ROOT / "README.md"))
    parser.add_argument("--results", default=str(ROOT / "results"))
    args = parser.parse_args(argv)
    readme, new = Path(args.readme).read_text(encoding="utf-8"), block(Path(args.results))
    if START not in readme or END not in readme:
        raise ValueError("README.md has no results markers")
    head, rest = readme.split(START, 1)
    updated = head + new + rest.split(END, 1)[1]
    if args.check and updated != readme:
        print("README.md results differ from results/tables/: run "
              "python scripts/readme_results.py", file=sys.stderr)
        return 1
    if not args.check:
        Path(args.readme).write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
