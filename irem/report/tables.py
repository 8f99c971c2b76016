"""Tables of the benchmark from the run files: every run, quality per method, run time, scan time.

A run is identified by the ``"meta"`` dict of its metrics JSON, never by its file name; quality is
summarised over subjects per condition and variant, paired with the condition's best baseline.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from irem.evaluation import stats
from irem.volume import atomic_path

META_REQUIRED = ("dataset", "k", "subject", "seed", "method")
META_OPTIONAL = ("split", "hr_snr", "ablation", "value")
METRICS = ("psnr", "ssim", "psnr_mask", "ssim_mask")
#: Every score of a run: METRICS and the PSNR on the strongest edges (irem/evaluation/metrics.py).
SCORES = (*METRICS, "psnr_edge")
PAIRED_METRICS = ("psnr_mask", "ssim_mask")
CONDITION = ["dataset", "k", "hr_snr"]
GROUP = [*CONDITION, "method", "ablation", "value"]
SIDECAR_FIELDS = ("training_seconds", "evaluation_seconds", "total_seconds", "final_loss",
                  "epochs_completed", "stopped_by", "device", "steps")  # fmt: skip
RUN_COLUMNS = [*META_REQUIRED, *META_OPTIONAL, *SCORES, "data_range", "mask_voxels", "fourier_dim",
               *SIDECAR_FIELDS, "escape_step", "returned", "network_weight", "start_seconds",
               "metrics_file"]  # fmt: skip
#: Colours given to the methods in the order of ``--method`` (then to any other method met).
PALETTE = ("#8c8c8c", "#4c72b0", "#dd8452", "#55a868", "#c44e52",
           "#8172b3", "#937860", "#da8bc3", "#ccb974", "#64b5cd")  # fmt: skip
HR_SCAN = "hrscan"
DEFAULT_LABELS = {HR_SCAN: "HR scan (direct)"}


@dataclass(frozen=True)
class Methods:
    """Labels of the methods in display order (``--method``) and the baselines (``--baselines``)."""

    labels: dict[str, str] = field(default_factory=dict)
    baselines: tuple[str, ...] = ()

    def label(self, method: str) -> str:
        """The given label, else a default (``hrscan``), else the name itself."""
        return self.labels.get(method) or DEFAULT_LABELS.get(method, method)

    def sort_key(self, method: str) -> tuple[int, str]:
        """Given methods in their order, then any other alphabetically."""
        order = list(self.labels)
        return (order.index(method), "") if method in order else (len(order), method)

    def colours(self, present: Sequence[str]) -> dict[str, str]:
        """A colour per method: the palette in display order over the given and present methods."""
        names = list(self.labels) + sorted(set(present) - set(self.labels))
        return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(names)}


def parse_pairs(items: Sequence[str], what: str = "NAME=VALUE") -> dict[str, str]:
    """``["a=b", ...]`` -> ``{"a": "b"}`` in order (ValueError without ``=`` or a name)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected {what}, got {item!r}")
        out[key] = value
    return out


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON object from a file (ValueError if it is not valid JSON or not an object)."""
    with open(path, encoding="utf-8") as fh:
        try:
            obj = json.load(fh)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return obj


def run_meta(obj: dict[str, Any], path: str | Path) -> dict[str, str]:
    """The run's identity from a metrics JSON's ``meta`` (optional keys default to ``""``)."""
    meta = obj.get("meta")
    if not isinstance(meta, dict):
        raise ValueError(f'{path}: no "meta" dict (write it with `irem metrics --meta KEY=VALUE`)')
    missing = [key for key in META_REQUIRED if key not in meta]
    if missing:
        raise ValueError(f"{path}: meta lacks {', '.join(missing)}")
    return {key: str(meta.get(key) or "") for key in (*META_REQUIRED, *META_OPTIONAL)}


def load_run(path: str | Path) -> dict[str, Any]:
    """One run: meta, scores and (from the sidecar ``..._metrics.json`` -> ``....json``) timings."""
    met, path = read_json(path), Path(path)
    row: dict[str, Any] = run_meta(met, path)
    row |= {key: met.get(key, math.nan) for key in (*SCORES, "data_range", "mask_voxels")}
    side_path = path.with_name(path.name.replace("_metrics.json", ".json"))
    side = read_json(side_path) if side_path.exists() and side_path != path else {}
    row["fourier_dim"] = ((side.get("config") or {}).get("model") or {}).get("fourier_dim")
    row |= {key: side.get(key) for key in SIDECAR_FIELDS}
    row["escape_step"] = (side.get("held_out") or {}).get("escape_step", math.nan)
    start = side.get("start_image") or {}
    row["returned"] = start.get("returned")  # train.base_smoother: network, srr_tv or blend
    row["network_weight"] = start.get("network_weight", math.nan)  # the network's in the image
    row["start_seconds"] = start.get("seconds", math.nan)
    return row | {"metrics_file": str(path)}


def load_runs(paths: Sequence[str | Path], methods: Methods | None = None) -> pd.DataFrame:
    """One row per metrics JSON, sorted by :func:`sort_runs`; scores as floats, meta as strings."""
    df = pd.DataFrame([load_run(p) for p in paths], columns=RUN_COLUMNS)
    for col in SCORES:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return sort_runs(df, methods or Methods())


def evaluation_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs outside the tuning split."""
    return runs[runs["split"] != "tuning"].reset_index(drop=True)


def _number(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.inf


def sort_runs(df: pd.DataFrame, methods: Methods) -> pd.DataFrame:
    """Sort by dataset, k (real scans last), HR SNR, method, ablation, value, subject, seed."""
    if df.empty:
        return df.reset_index(drop=True)
    keys = {"_k": df["k"].map(_number), "_snr": df["hr_snr"].map(_number),
            "_m": df["method"].map(methods.sort_key), "_v": df["value"].map(_number)}  # fmt: skip
    by = ["dataset", "_k", "_snr", "_m", "ablation", "_v", "value"]
    by += [c for c in ("subject", "seed") if c in df.columns]
    out = df.assign(**keys).sort_values(by, kind="stable")
    return out.drop(columns=list(keys)).reset_index(drop=True)


def _summaries(
    runs: pd.DataFrame, keys: list[str], metrics: Sequence[str], fields: tuple, methods: Methods
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-subject means and one row per ``keys`` group: label, n and each metric's ``fields``."""
    per_subject = runs.groupby([*keys, "subject"], sort=False)[list(metrics)].mean()
    rows = []
    for key, scores in per_subject.groupby(level=list(range(len(keys))), sort=False):
        row: dict[str, Any] = dict(zip(keys, key, strict=True))
        row |= {"label": methods.label(row["method"]), "n": len(scores)}
        for m in metrics:
            s = stats.summarise(scores[m])
            row |= {f"{m}_{a}": getattr(s, a) for a in fields}
        rows.append(row)
    return per_subject, pd.DataFrame(rows)


def quality_table(runs: pd.DataFrame, methods: Methods) -> pd.DataFrame:
    """Per condition and variant: every metric over subjects, paired with the best baseline."""
    runs = evaluation_runs(runs)
    if runs.empty:
        return pd.DataFrame(columns=[*GROUP, "label", "n", "n_runs"])
    fields = ("mean", "std", "ci_low", "ci_high")
    per_subject, summary = _summaries(runs, GROUP, SCORES, fields, methods)
    summary.insert(len(GROUP) + 2, "n_runs", runs.groupby(GROUP, sort=False).size().values)
    base = summary[summary["method"].isin(methods.baselines) & (summary["ablation"] == "")]
    base = base.dropna(subset=["psnr_mask_mean"])  # each condition's best baseline (brain PSNR)
    top = base.loc[base.groupby(CONDITION, sort=False)["psnr_mask_mean"].idxmax()]
    best = {tuple(r[CONDITION]): r["method"] for _, r in top.iterrows()}
    per_subject = per_subject.sort_index()
    paired = []
    for key in map(tuple, summary[GROUP].itertuples(index=False)):
        baseline = best.get(key[:3])
        row: dict[str, Any] = {"baseline": baseline or ""}
        for m in PAIRED_METRICS:
            cols = [f"{m}_{c}" for c in ("diff", "diff_ci_low", "diff_ci_high", "p", "wins", "ties",
                                         "losses")]  # fmt: skip
            if baseline is None or key[3] == baseline and key[4] == "":
                row |= dict.fromkeys(cols, math.nan)
                continue
            ref = per_subject.loc[(*key[:3], baseline, "", ""), m]
            p = stats.paired(per_subject.loc[key, m], ref, stats.TIE_TOLERANCE[m])
            values = (p.diff, p.ci_low, p.ci_high, p.p_wilcoxon, p.wins, p.ties, p.losses)
            row |= dict(zip(cols, values, strict=True))
        paired.append(row)
    table = pd.concat([summary, pd.DataFrame(paired)], axis=1)
    # Holm's families: one metric's comparisons within one condition (one table of the README).
    for m in PAIRED_METRICS:
        holm = table.groupby(CONDITION, sort=False)[f"{m}_p"].transform(
            lambda p: stats.holm(p.to_numpy(dtype=float))
        )
        table.insert(table.columns.get_loc(f"{m}_p") + 1, f"{m}_p_holm", holm.to_numpy())
    return sort_runs(table, methods)


def fmt(value: float, digits: int) -> str:
    """``value`` with ``digits`` decimals, ``n/a`` when missing."""
    return f"{value:.{digits}f}" if value is not None and math.isfinite(value) else "n/a"


def fmt_summary(row: Any, metric: str, digits: int) -> str:
    """``mean ± std [low, high]`` (std and interval only where the row has them and defined)."""
    mean, std, low, high = (
        getattr(row, f"{metric}_{c}", math.nan) for c in ("mean", "std", "ci_low", "ci_high")
    )
    text = fmt(mean, digits)
    if math.isfinite(std):
        text += f" ± {fmt(std, digits)}"
    if math.isfinite(low):
        text += f" [{fmt(low, digits)}, {fmt(high, digits)}]"
    return text


def fmt_paired(row: Any, metric: str, digits: int) -> list[str]:
    """Cells ``diff [low, high]``, ``p``, Holm's ``p``, ``W/T/L`` of a comparison (or empty)."""
    diff = getattr(row, f"{metric}_diff")
    if not math.isfinite(diff):
        return ["", "", "", ""]
    text = f"{diff:+.{digits}f}"
    low, high = getattr(row, f"{metric}_diff_ci_low"), getattr(row, f"{metric}_diff_ci_high")
    if math.isfinite(low):
        text += f" [{low:+.{digits}f}, {high:+.{digits}f}]"
    p, holm = getattr(row, f"{metric}_p"), getattr(row, f"{metric}_p_holm")
    wtl = "/".join(str(int(getattr(row, f"{metric}_{c}"))) for c in ("wins", "ties", "losses"))
    return [text, fmt(p, 3), fmt(holm, 3), wtl]


def k_label(k: str) -> str:
    """``""`` (a real scan) -> ``real``."""
    return k if k else "real"


def variant_label(row: Any) -> str:
    """The method's label, with the ablation's value and the HR SNR when set."""
    text = row.label + (f" ({row.ablation}={row.value})" if row.ablation else "")
    return text + (f", HR SNR {row.hr_snr}" if row.hr_snr else "")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


QUALITY_NOTE = (
    "PSNR (dB) and SSIM (scikit-image, Gaussian window sigma 1.5, data range of the ground truth) "
    "over the whole volume and inside the brain mask, and PSNR on the edges (the quarter of the "
    "dilated brain mask with the strongest ground-truth gradients: cortex and tissue boundaries). Several seeds of one subject are averaged "
    "first; then mean ± sample standard deviation [95% Student-t confidence interval of the mean] "
    "over the n subjects. Each method is compared subject by subject with the best baseline of its "
    "dataset and k (highest mean brain PSNR, column 'vs'): mean difference [95% paired-t interval], "
    "two-sided Wilcoxon signed-rank p (n/a with fewer than two subjects or all differences zero), "
    "the same p adjusted by Holm's method over the methods compared at one dataset, k and HR SNR "
    "(one family per metric: the p to read before claiming an ordering) and wins/ties/losses (tie: |difference| < {tp} dB for PSNR, < {ts} for SSIM). k = real: "
    "real-scan protocol against its HR reference. Runs of the tuning split are not included."
)


def quality_markdown(table: pd.DataFrame) -> str:
    """``metrics.md``: the quality table with its caption."""
    headers = ["dataset", "k", "method", "n", "PSNR", "SSIM", "PSNR brain", "SSIM brain",
               "PSNR edges", "vs", "Δ PSNR brain", "p", "p Holm", "W/T/L", "Δ SSIM brain", "p",
               "p Holm", "W/T/L"]  # fmt: skip
    rows = [
        [r.dataset, k_label(r.k), variant_label(r), str(int(r.n))]
        + [fmt_summary(r, m, 4 if m.startswith("ssim") else 2) for m in SCORES]
        + [r.baseline, *fmt_paired(r, "psnr_mask", 2), *fmt_paired(r, "ssim_mask", 4)]
        for r in table.itertuples(index=False)
    ]
    tol = stats.TIE_TOLERANCE
    note = QUALITY_NOTE.format(tp=tol["psnr_mask"], ts=tol["ssim_mask"])
    return "# Reconstruction quality\n\n" + note + "\n\n" + markdown_table(headers, rows)


def scantime_table(runs: pd.DataFrame, methods: Methods) -> pd.DataFrame:
    """Brain PSNR/SSIM per dataset, k, HR SNR and method over subjects (mean, 95% CI)."""
    runs = evaluation_runs(runs)
    runs = runs[runs["hr_snr"] != ""]
    if runs.empty:
        return pd.DataFrame(columns=["dataset", "k", "hr_snr", "method", "label", "n"])
    keys = ["dataset", "k", "hr_snr", "method"]
    out = _summaries(runs, keys, PAIRED_METRICS, ("mean", "ci_low", "ci_high"), methods)[1]
    return sort_runs(out.assign(ablation="", value=""), methods).drop(columns=["ablation", "value"])


def scantime_markdown(table: pd.DataFrame) -> str:
    """The scan-time table with its caption."""
    headers = ["dataset", "k", "HR SNR", "method", "n", "PSNR brain", "SSIM brain"]
    rows = [
        [r.dataset, k_label(r.k), r.hr_snr, r.label, str(int(r.n)),
         fmt_summary(r, "psnr_mask", 2), fmt_summary(r, "ssim_mask", 4)]
        for r in table.itertuples(index=False)
    ]  # fmt: skip
    note = (
        "Brain PSNR (dB) and SSIM at equal scan time: the LR stacks and an HR scan of the same "
        "duration with the given SNR ('HR scan (direct)': the noisy HR scan scored against the "
        "ground truth). Seeds are averaged per subject; mean [95% Student-t CI] over n subjects."
    )
    return "# Equal scan time\n\n" + note + "\n\n" + markdown_table(headers, rows)


def load_benchmarks(pairs: Sequence[tuple[str | Path, str | Path]]) -> pd.DataFrame:
    """Snakemake ``benchmark:`` TSVs with the meta of their run, from (TSV, metrics JSON) pairs."""
    frames = [pd.read_csv(t, sep="\t").assign(**run_meta(read_json(m), m)) for t, m in pairs]
    if not frames:
        return pd.DataFrame(columns=[*META_REQUIRED, *META_OPTIONAL, "s", "max_rss"])
    return pd.concat(frames, ignore_index=True)


def runtime_table(bench: pd.DataFrame, runs: pd.DataFrame, methods: Methods) -> pd.DataFrame:
    """Wall, CPU and training time and peak memory per condition and variant (no tuning runs)."""
    cols = [*GROUP, "label", "n", "wall_s_mean", "wall_s_std", "cpu_s_mean", "max_rss_mb",
            "training_s_mean"]  # fmt: skip
    if bench.empty or (b := evaluation_runs(bench)).empty:
        return pd.DataFrame(columns=cols)
    for col in ("s", "cpu_time", "max_rss"):
        b[col] = pd.to_numeric(b[col], errors="coerce") if col in b.columns else np.nan
    out = b.groupby(GROUP, sort=False).agg(
        n=("s", "size"), wall_s_mean=("s", "mean"), wall_s_std=("s", "std"),
        cpu_s_mean=("cpu_time", "mean"), max_rss_mb=("max_rss", "max"),
    )  # fmt: skip
    runs = evaluation_runs(runs)
    train = pd.to_numeric(runs["training_seconds"], errors="coerce")
    t = train.groupby([runs[c] for c in GROUP], sort=False).mean()
    out["training_s_mean"] = t.reindex(out.index) if not t.empty else np.nan
    out = out.reset_index()
    out.insert(len(GROUP), "label", out["method"].map(methods.label))
    return sort_runs(out, methods)[cols]


def runtime_markdown(table: pd.DataFrame) -> str:
    """``runtime.md``: the run-time table with its caption."""
    headers = ["dataset", "k", "method", "n", "wall time (s)", "CPU time (s)", "peak RSS (MB)",
               "IREM training (s)"]  # fmt: skip
    rows = [
        [r.dataset, k_label(r.k), variant_label(r), str(int(r.n)), fmt_summary(r, "wall_s", 1)]
        + [fmt(r.cpu_s_mean, 1), fmt(r.max_rss_mb, 0), fmt(r.training_s_mean, 1)]
        for r in table.itertuples(index=False)
    ]
    note = (
        "Per reconstruction job, from Snakemake's `benchmark:` files (mean ± std over runs); "
        "IREM's training time from its sidecar. Measured on the machine that ran the workflow, "
        "with whatever else it was running."
    )
    return "# Run time\n\n" + note + "\n\n" + markdown_table(headers, rows)


#: |brain PSNR with ``--mask auto`` - with the true mask| counted as within bounds (dB).
AUTO_MASK_TOLERANCE = 0.2
AUTO_MASK_NOTE = (
    "Brain PSNR (true brain mask) of each reconstruction and of the same image set to 0 outside "
    "the automatic mask of its stacks: what `--mask auto` writes where the mask only zeroes the "
    "output (B-spline, SRR; not an INR, which trains near it); brain PSNR inside the automatic "
    "mask; the masks' Dice and voxel ratio. The mask's rules were chosen on the tuning split "
    "(results/tuning/README.md)."
)
AUTO_MASK_COLUMNS = {"psnr_true_mask": "brain PSNR", "psnr_mask_auto": "with --mask auto",
                     "difference_db": "difference (dB)", "psnr_in_auto_mask": "in the auto mask",
                     "dice": "Dice", "auto_over_true_voxels": "auto / true voxels"}  # fmt: skip


def auto_mask_table(paths: Sequence[str | Path], methods: Methods) -> pd.DataFrame:
    """One row per ``irem metrics --compare-mask`` JSON (:data:`AUTO_MASK_NOTE`)."""
    rows = []
    for path in paths:
        obj = read_json(path)
        meta, other = run_meta(obj, path), obj.get("compare_mask")
        if not isinstance(other, dict):
            raise ValueError(f'{path}: no "compare_mask" (`irem metrics --compare-mask` writes it)')
        zeroed = other["psnr_mask_zeroed"]
        rows.append({"split": meta["split"] or "evaluation", "dataset": meta["dataset"],
                     "k": k_label(meta["k"]), "subject": meta["subject"], "seed": meta["seed"],
                     "contrast": obj["meta"].get("contrast", ""), "method": meta["method"],
                     "label": methods.label(meta["method"]), "psnr_true_mask": obj["psnr_mask"],
                     "psnr_mask_auto": zeroed, "difference_db": zeroed - obj["psnr_mask"],
                     "psnr_in_auto_mask": other["psnr_mask"], "dice": other["dice"],
                     "auto_over_true_voxels": other["voxel_ratio"]})  # fmt: skip
    if not rows:
        raise ValueError("no metrics JSON given")
    table = pd.DataFrame(rows)
    table = table.assign(_s=table["split"] != "tuning", _m=table["method"].map(methods.sort_key))
    table = table.sort_values(["_s", "dataset", "k", "subject", "seed", "_m"])
    return table.drop(columns=["_s", "_m"]).reset_index(drop=True)


def auto_mask_markdown(table: pd.DataFrame) -> str:
    """``auto_mask.md``: the table, and per split how many rows are within the tolerance."""
    ids = ["split", "dataset", "k", "subject", "contrast", "label"]
    digits = {"difference_db": "{:+.2f}", "dice": "{:.3f}", "auto_over_true_voxels": "{:.3f}"}
    rows = [[*r[ids], *(digits.get(c, "{:.2f}").format(r[c]) for c in AUTO_MASK_COLUMNS)]
            for _, r in table.iterrows()]  # fmt: skip
    counts = []
    for split, diff in table.groupby("split", sort=False)["difference_db"]:
        within, tol = int((diff.abs() <= AUTO_MASK_TOLERANCE).sum()), AUTO_MASK_TOLERANCE
        mean, largest = diff.abs().mean(), diff.abs().max()
        counts.append(f"- {split}: {within} of {len(diff)} within {tol:g} dB (mean |difference| "
                      f"{mean:.2f} dB, largest {largest:.2f} dB)")  # fmt: skip
    headers = [*ids[:-1], "method", *AUTO_MASK_COLUMNS.values()]
    head = "# Brain PSNR with the automatic mask against the true brain mask\n\n"
    text = head + AUTO_MASK_NOTE + "\n\n" + markdown_table(headers, rows)
    return text + "\n" + "\n".join(counts) + "\n"


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed into place."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_tables(
    runs: pd.DataFrame, bench: pd.DataFrame, methods: Methods, out_dir: str | Path
) -> dict[str, Path]:
    """metrics, runs, runtime (and scantime) tables, written under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    quality = quality_table(runs, methods)
    runtime = runtime_table(bench, runs, methods)
    texts = {
        "metrics.csv": quality.to_csv(index=False),
        "metrics.md": quality_markdown(quality),
        "runs.csv": runs.to_csv(index=False),
        "runtime.csv": runtime.to_csv(index=False),
        "runtime.md": runtime_markdown(runtime),
    }
    scan = scantime_table(runs, methods)
    if not scan.empty:
        texts |= {"scantime.csv": scan.to_csv(index=False), "scantime.md": scantime_markdown(scan)}
    for name, text in texts.items():
        write_text(out / name, text)
    return {name: out / name for name in texts}
