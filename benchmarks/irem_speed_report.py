"""One table and one plot of all IREM time-to-quality runs (benchmarks/irem_quality.py).

PSNR at the asked times and the training time to reach the B-spline and SRR PSNR, per run
-> results/benchmarks/irem_speed.{md,csv}; PSNR against training time -> irem_psnr_vs_time.png.

  python benchmarks/irem_speed_report.py
"""

from __future__ import annotations

import argparse
import json
import sys

import pandas as pd
from _workflow import OUT
from irem_quality import BASELINES


def first_time(curve: list[list[float]], target: float) -> float | None:
    """Training seconds of the first probe at or above ``target`` dB."""
    return next((t for t, _, p in curve if p >= target), None)


def report() -> int:
    runs = [json.loads(f.read_text(encoding="utf-8")) for f in sorted((OUT / "irem_quality").glob("*.json"))]
    if not runs:
        print("no quality runs under results/benchmarks/irem_quality", file=sys.stderr)
        return 2
    all_times = sorted({t for r in runs for t in r["times"]})
    ks = sorted({r["k"] for r in runs})
    # The baselines are deterministic: any run of a k gives them (older runs lack the Gaussian PSF).
    baselines = {
        (k, key): next(
            (r[f"{key}_psnr"], r[f"{key}_s"]) for r in runs if r["k"] == k and f"{key}_psnr" in r
        )
        for k in ks
        for key in BASELINES
        if any(r["k"] == k and f"{key}_psnr" in r for r in runs)
    }
    rows = []
    for r in runs:
        row = {"k": r["k"], "config": r["config"], "budget s": max(r["times"])}
        row |= {f"PSNR @ {t:g} s": r.get(f"psnr_{t:g}s") for t in all_times}
        row |= {"steps": r["steps"], "LR voxels/s": r["samples_per_s"]}
        for key, name in BASELINES.items():
            if (r["k"], key) in baselines:
                reached = first_time(r["curve"], baselines[r["k"], key][0])
                row[f"s to {name.split(' (')[0]}"] = "-" if reached is None else round(reached, 1)
        row |= {"evaluate s": r["predict_s"], "peak MiB": r["peak_rss_mib"]}
        rows.append(row)
    df = pd.DataFrame(rows).sort_values(["k", "config", "budget s"]).round(2)
    df.to_csv(OUT / "irem_speed.csv", index=False)
    base_df = pd.DataFrame(
        [
            {"k": k, "baseline": BASELINES[key], "PSNR": psnr, "seconds": secs}
            for (k, key), (psnr, secs) in baselines.items()
        ]
    ).round(2)
    text = [
        "# IREM time-to-quality on one CPU thread",
        "",
        "PSNR (dB) inside the brain on the whole HR grid, MNI152 box-profile stacks; times are "
        "training seconds (evaluation excluded); 's to X': first probe at or above the PSNR of X, "
        "'-': not reached. Each row is one run whose time budget is 'budget s' (the fast "
        "configuration anneals its learning rate over the budget). Written by "
        "`python benchmarks/irem_speed_report.py`.",
        "",
        df.astype(object).where(df.notna(), "").to_markdown(index=False),
        "",
        "Baselines on the same stacks and grid (one thread; seconds of the whole reconstruction):",
        "",
        base_df.to_markdown(index=False),
        "",
    ]
    (OUT / "irem_speed.md").write_text("\n".join(text), encoding="utf-8")
    print("\n".join(text))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ks), figsize=(6 * len(ks), 4.2), squeeze=False)
    for ax, k in zip(axes[0], ks, strict=True):
        rk = [r for r in runs if r["k"] == k]
        for r in rk:
            t, _, p = zip(*r["curve"], strict=True)
            ax.plot(t, p, marker=".", label=f"IREM {r['config']}, {max(r['times']):g} s budget")
        for (key, name), style in zip(BASELINES.items(), "s^v", strict=True):
            if (k, key) in baselines:
                psnr, secs = baselines[k, key]
                ax.scatter([secs], [psnr], marker=style, color="k", zorder=3, label=name)
                ax.axhline(psnr, color="k", lw=0.6, ls="--")
        ax.set(
            title=f"k = {k}, {'x'.join(map(str, rk[0]['shape']))}",
            xlabel="seconds",
            ylabel="PSNR in the brain (dB)",
        )
        lowest = min(psnr for (kk, _), (psnr, _) in baselines.items() if kk == k)
        ax.set_ylim(bottom=lowest - 10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "irem_psnr_vs_time.png", dpi=120)
    return 0


def main() -> int:
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    return report()


if __name__ == "__main__":
    sys.exit(main())
