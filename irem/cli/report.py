"""``irem report``: the tables and figures of the benchmark, from the files the workflow writes.

A thin command line over :mod:`irem.report.tables`, :mod:`irem.report.figures` and
:mod:`irem.evaluation.stats`. Every run is identified by the ``"meta"`` dict of its metrics JSON
(never by its file name); method labels, order and roles come from ``--method NAME=LABEL`` (order
given = order drawn) and ``--baselines NAME ...``. Sub-commands: ``tables``, ``fig3``, ``fig4``,
``fig5``, ``scantime``, ``cohort``, ``tuning``, ``tuning-summary``, ``convergence``,
``automask``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from irem.errors import InputError
from irem.evaluation.tuning import RUN_COLUMNS
from irem.evaluation.tuning import options as tuning_options
from irem.report import figures, tables
from irem.report.tables import Methods

Handler = Callable[[argparse.Namespace], None]
RAW = argparse.RawDescriptionHelpFormatter


def _input_errors(handler: Handler) -> Handler:
    """Turn ValueError (InputError too)/OSError of a handler into :class:`InputError`."""

    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> None:
        try:
            handler(args)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise InputError(f"{where}{exc.strerror or exc}") from None
        except ValueError as exc:
            raise InputError(str(exc)) from None

    return wrapped


def methods_of(args: argparse.Namespace) -> Methods:
    """The :class:`Methods` of ``--method`` and ``--baselines``."""
    return Methods(tables.parse_pairs(args.method, "NAME=LABEL"), tuple(args.baselines))


def _slice_arg(text: str) -> float | str:
    if text == "brightest":
        return text
    try:
        value = float(text)
    except ValueError:
        message = f"{text!r} is neither a fraction nor 'brightest'"
        raise argparse.ArgumentTypeError(message) from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not in [0, 1]")
    return value


def _benchmark_pair(text: str) -> tuple[str, str]:
    tsv, sep, metrics = text.partition("=")
    if not sep or not tsv or not metrics:
        raise argparse.ArgumentTypeError(f"expected BENCHMARK.tsv=METRICS.json, got {text!r}")
    return tsv, metrics


@_input_errors
def cmd_tables(args: argparse.Namespace) -> None:
    """metrics.csv/.md, runs.csv, runtime.csv/.md (and scantime.csv/.md) under ``--out-dir``."""
    methods = methods_of(args)
    runs = tables.load_runs(args.metrics, methods)
    bench = tables.load_benchmarks(args.benchmark)
    for name, path in tables.write_tables(runs, bench, methods, args.out_dir).items():
        print(f"{name}: {path}")


@_input_errors
def cmd_fig3(args: argparse.Namespace) -> None:
    """Fig. 3: one panel per swept parameter, paired with its reference value."""
    from irem.report.convergence import sweep_figure, sweep_markdown, sweep_table

    methods = methods_of(args)
    runs = tables.load_runs(args.metrics, methods)
    reference = tables.parse_pairs(args.reference, "PARAM=VALUE")
    table = sweep_table(runs, reference)
    if table.empty:
        raise ValueError('no run of a sweep (meta "ablation") among the inputs')
    lines = runs[runs["method"].isin(methods.baselines) & (runs["ablation"] == "")]
    fig = sweep_figure(table, lines, methods, reference, title=args.title, caption=args.caption)
    if args.csv:
        tables.write_text(Path(args.csv), table.to_csv(index=False, float_format="%.4f"))
    if args.md:
        tables.write_text(Path(args.md), sweep_markdown(table, lines, methods))
    figures.save_figure(fig, args.out, dpi=args.dpi)


@_input_errors
def cmd_fig4(args: argparse.Namespace) -> None:
    """Fig. 4: bars by method and k for one dataset."""
    methods = methods_of(args)
    runs = tables.load_runs(args.metrics, methods)
    fig = figures.fig4_bars(runs, methods, title=args.title, caption=args.caption)
    figures.save_figure(fig, args.out, dpi=args.dpi)
    drawn = sorted(set(runs["method"]), key=methods.sort_key)
    print("drawn: " + "; ".join(methods.label(m) for m in drawn))


@_input_errors
def cmd_cohort(args: argparse.Namespace) -> None:
    """The mid-slices of every subject of a cohort (one row each)."""
    from irem.data.cohort import cohort_figure
    from irem.volume import load_volume

    volumes = {Path(p).name.split("_")[0]: load_volume(p) for p in args.images}
    figures.save_figure(cohort_figure(volumes), args.out, dpi=args.dpi)


@_input_errors
def cmd_fig5(args: argparse.Namespace) -> None:
    """Figs. 5/6: the same slice through GT, an LR stack and each reconstruction."""
    methods = methods_of(args)
    recs = tables.parse_pairs(args.rec, "METHOD=PATH")
    objs = [(path, tables.read_json(path)) for path in args.metrics]
    mets = {tables.run_meta(obj, path)["method"]: obj for path, obj in objs}
    fig = figures.fig5_slices(
        args.gt, args.mask, args.lr, recs, methods, mets, axis=args.axis, fraction=args.slice,
        title=args.title, gt_label=args.gt_label, caption=args.caption,
    )  # fmt: skip
    figures.save_figure(fig, args.out, dpi=args.dpi)


@_input_errors
def cmd_scantime(args: argparse.Namespace) -> None:
    """PSNR against HR SNR at equal scan time (figure, and the table when asked)."""
    methods = methods_of(args)
    runs = tables.load_runs(args.metrics, methods)
    fig = figures.scantime_figure(runs, methods, title=args.title, caption=args.caption)
    table = tables.scantime_table(runs, methods)
    figures.save_figure(fig, args.out, dpi=args.dpi)
    if args.csv:
        tables.write_text(Path(args.csv), table.to_csv(index=False))
    if args.md:
        tables.write_text(Path(args.md), tables.scantime_markdown(table))


@_input_errors
def cmd_tuning(args: argparse.Namespace) -> None:
    """A tuning sweep's runs (one CSV row each) and its choice per group."""
    from irem.evaluation.tuning import choose

    cases = json.loads(args.cases)
    runs = tables.load_runs(args.metrics)
    params = list(next(iter(cases.values()))) if cases else []
    values = pd.DataFrame([cases[m] for m in runs["method"]], columns=params)
    keep = [c for c in RUN_COLUMNS if c not in ("sweep", "method")]
    runs = pd.concat([values, runs[keep].reset_index(drop=True)], axis=1)
    runs.insert(0, "sweep", args.sweep)
    runs.insert(1, "method", args.method)
    group = ["hr_snr"] if runs["hr_snr"].astype(str).str.len().gt(0).any() else []
    chosen = choose(runs, params, json.loads(args.prefer) if args.prefer else None, group)
    chosen.insert(0, "sweep", args.sweep)
    chosen.insert(1, "method", args.method)
    chosen["options"] = [tuning_options(args.options, r) for _, r in chosen[params].iterrows()]
    tables.write_text(Path(args.csv), runs.to_csv(index=False, float_format="%.4f"))
    tables.write_text(Path(args.chosen), chosen.to_csv(index=False, float_format="%.4f"))


@_input_errors
def cmd_automask(args: argparse.Namespace) -> None:
    """Brain PSNR in the automatic mask against the true mask (CSV and Markdown)."""
    table = tables.auto_mask_table(args.metrics, methods_of(args))
    tables.write_text(Path(args.csv), table.to_csv(index=False, float_format="%.4f"))
    tables.write_text(Path(args.md), tables.auto_mask_markdown(table))


@_input_errors
def cmd_convergence(args: argparse.Namespace) -> None:
    """The convergence study: curves (CSV), runs and paired differences (Markdown), figure."""
    from irem.report import convergence

    methods = methods_of(args)
    curves, summary, lines = convergence.convergence_report(args.metrics, args.lines, methods)
    names = list(dict.fromkeys(lines["method"]))
    tables.write_text(Path(args.csv), curves.to_csv(index=False, float_format="%.6g"))
    tables.write_text(Path(args.runs), summary.to_csv(index=False, float_format="%.4f"))
    tables.write_text(Path(args.md), convergence.convergence_markdown(summary, names))
    fig = convergence.convergence_figure(curves, lines, methods, title=args.title)
    figures.save_figure(fig, args.out, dpi=args.dpi)


@_input_errors
def cmd_tuning_summary(args: argparse.Namespace) -> None:
    """Every sweep's choice in one CSV and a Markdown table."""
    chosen = pd.concat([pd.read_csv(p, dtype=str) for p in args.chosen], ignore_index=True)
    tables.write_text(Path(args.csv), chosen.to_csv(index=False))
    rows = [
        [r["sweep"], str(r.get("hr_snr") or ""), f"`{r['options']}`", r["mean_psnr_mask"],
         r["n_runs"], "" if pd.isna(r["ci_low"]) else f"[{float(r['ci_low']):+.2f}, "
         f"{float(r['ci_high']):+.2f}]"]
        for _, r in chosen.fillna({"hr_snr": ""}).iterrows()
    ]  # fmt: skip
    headers = ["sweep", "HR SNR", "chosen options", "mean brain PSNR (dB)", "runs",
               "best challenger - preferred [95% CI]"]  # fmt: skip
    per_method = chosen["n_runs"].astype(int).groupby(chosen["method"], sort=False).sum()
    counts = [[m, str(n)] for m, n in per_method.items()]
    text = tables.markdown_table(headers, rows) + "\nTuning runs per method:\n\n"
    tables.write_text(Path(args.md), text + tables.markdown_table(["method", "runs"], counts))


def _add_methods(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--method", action="extend", nargs="+", default=[], metavar="NAME=LABEL",
        help="label of a method; the order given is the order of tables, bars and colours",
    )  # fmt: skip
    p.add_argument("--baselines", nargs="*", default=[], metavar="NAME",
                   help="which methods are baselines")  # fmt: skip


def _add_figure_out(p: argparse.ArgumentParser, metrics: bool = True) -> None:
    if metrics:
        p.add_argument("--metrics", nargs="+", required=True, help="metrics JSONs (with meta)")
    p.add_argument("--title", default="", help="figure title")
    p.add_argument("--caption", default="", help="caption text drawn under the figure")
    p.add_argument("-o", "--out", nargs="+", required=True, help="PNG and/or PDF paths")
    p.add_argument("--dpi", type=int, default=150, help="resolution of the PNG (default: 150)")


EPILOGS = {
    "tables": "example:\n  irem report tables --metrics results/*/k*/*_metrics.json \\\n"
    "    --method bspline=B-spline srr=SRR irem=IREM --baselines bspline srr \\\n"
    "    --benchmark results/runtime/a.tsv=results/a_metrics.json --out-dir results/tables",
    "fig3": "example:\n  irem report fig3 --metrics results/cohort/k8/*_metrics.json \\\n"
    "    --method bspline=B-spline srrtv=SRR-TV --baselines bspline srrtv \\\n"
    "    --reference sigma=1 fourier_dim=256 --title 'Fig. 3' -o fig3.png fig3.pdf",
    "fig4": "example:\n  irem report fig4 --metrics results/mni152_t1/k*/*_metrics.json \\\n"
    "    --method bspline=B-spline srr=SRR irem=IREM --baselines bspline srr -o fig4.png fig4.pdf",
    "fig5": "example:\n  irem report fig5 --gt gt.nii.gz --mask mask.nii.gz --lr sag.nii.gz \\\n"
    "    --rec bspline=b.nii.gz irem=i.nii.gz --metrics b_metrics.json i_metrics.json \\\n"
    "    --method bspline=B-spline irem=IREM --slice brightest -o fig5.png fig5.pdf",
    "cohort": "example:\n  irem report cohort results/cohort/sub-*_T1w.nii.gz -o cohort.png "
    "cohort.pdf",
    "scantime": "example:\n  irem report scantime --metrics results/scantime/*_metrics.json \\\n"
    "    --method srr=SRR irem=IREM hrscan='HR scan' -o scantime.png scantime.pdf \\\n"
    "    --csv scantime.csv --md scantime.md",
}


def _sub(
    rsub: argparse._SubParsersAction, name: str, func: Handler, text: str
) -> argparse.ArgumentParser:
    """Add the sub-command ``name``, run by ``func``, with its example."""
    p = rsub.add_parser(name, help=text, epilog=EPILOGS.get(name), formatter_class=RAW)
    p.set_defaults(func=func)
    return p


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``report`` and its sub-commands (each sets ``func``) to ``sub``."""
    p = sub.add_parser(
        "report",
        help="tables and figures from the workflow's metrics JSONs",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    rsub = p.add_subparsers(dest="report_command", required=True, metavar="SUBCOMMAND")
    p = _sub(rsub, "tables", cmd_tables,
             "metrics.csv/.md, runs.csv, runtime.csv/.md (+ scantime.csv/.md)")  # fmt: skip
    p.add_argument("--metrics", nargs="*", default=[], help="metrics JSONs (with meta)")
    _add_methods(p)
    p.add_argument(
        "--benchmark", nargs="*", default=[], type=_benchmark_pair, metavar="TSV=METRICS",
        help="a Snakemake benchmark TSV and the metrics JSON of the same run (its meta)",
    )  # fmt: skip
    p.add_argument("--out-dir", required=True, help="folder of the tables")
    _add_figures(rsub)
    p = _sub(rsub, "tuning", cmd_tuning, "a tuning sweep's runs and its choice")
    p.add_argument("--sweep", required=True, help="the sweep's name")
    p.add_argument("--method", default="", help="the method it tunes")
    p.add_argument("--options", required=True, help="the sweep's option template")
    p.add_argument("--cases", required=True, help="JSON: variant method name -> its values")
    p.add_argument("--prefer", default="null", help="JSON: the preferred candidate's values")
    p.add_argument("--metrics", nargs="+", required=True, help="metrics JSONs of its runs")
    p.add_argument("--csv", required=True, help="its runs (CSV)")
    p.add_argument("--chosen", required=True, help="its choice (CSV)")
    p = _sub(rsub, "tuning-summary", cmd_tuning_summary, "every sweep's choice in one table")
    p.add_argument("--chosen", nargs="+", required=True, help="the sweeps' choice CSVs")
    p.add_argument("--csv", required=True, help="all choices (CSV)")
    p.add_argument("--md", required=True, help="all choices (Markdown)")
    p = _sub(rsub, "automask", cmd_automask,
             "brain PSNR in the automatic mask against the true mask")  # fmt: skip
    _add_methods(p)
    p.add_argument("--metrics", nargs="+", required=True,
                   help="metrics JSONs written with `irem metrics --compare-mask`")  # fmt: skip
    p.add_argument("--csv", required=True, help="one row per reconstruction (CSV)")
    p.add_argument("--md", required=True, help="the table and its counts (Markdown)")
    p = _sub(rsub, "convergence", cmd_convergence,
             "the paper network's convergence study (curves, runs, figure)")  # fmt: skip
    _add_methods(p)
    p.add_argument("--lines", nargs="+", required=True, help="metrics JSONs of the baselines")
    p.add_argument("--csv", required=True, help="brain PSNR and held-out loss per snapshot (CSV)")
    p.add_argument("--runs", required=True, help="one row per run (CSV)")
    p.add_argument("--md", required=True, help="runs and paired differences (Markdown)")
    _add_figure_out(p)


def _add_figures(rsub: argparse._SubParsersAction) -> None:
    p = _sub(rsub, "fig3", cmd_fig3,
             "brain PSNR against each swept parameter, paired with its reference")  # fmt: skip
    _add_methods(p)
    p.add_argument(
        "--reference", action="extend", nargs="+", required=True, metavar="PARAM=VALUE",
        help="the value of PARAM the others are paired with (e.g. the paper's)",
    )  # fmt: skip
    p.add_argument("--csv", help="also write each value's mean and paired difference (CSV)")
    p.add_argument("--md", help="the same as Markdown, with the baselines' means")
    _add_figure_out(p)
    p = _sub(rsub, "fig4", cmd_fig4, "bars by method and k for one dataset")
    _add_methods(p)
    _add_figure_out(p)
    p = _sub(rsub, "scantime", cmd_scantime, "brain PSNR against HR SNR at equal scan time")
    _add_methods(p)
    _add_figure_out(p)
    p.add_argument("--csv", help="also write the scan-time table as CSV here")
    p.add_argument("--md", help="also write the scan-time table as Markdown here")
    p = _sub(rsub, "fig5", cmd_fig5,
             "the same slice through GT, LR and each method (Figs. 5 and 6)")  # fmt: skip
    p.add_argument("--gt", required=True, help="HR ground truth or reference (NIfTI)")
    p.add_argument("--mask", required=True, help="its brain mask (NIfTI)")
    p.add_argument("--lr", required=True, help="the LR stack shown (NIfTI)")
    p.add_argument("--rec", nargs="+", required=True, metavar="METHOD=PATH")
    p.add_argument("--metrics", nargs="*", default=[], help="metrics JSONs, for the titles")
    _add_methods(p)
    p.add_argument("--axis", type=int, choices=(0, 1, 2), default=2, help="slice normal")
    p.add_argument(
        "--slice", type=_slice_arg, default=0.5,
        help="fraction of the mask's extent along --axis, or 'brightest' (default: 0.5)",
    )  # fmt: skip
    p.add_argument("--gt-label", default="Ground truth", help="title of the first column")
    _add_figure_out(p, metrics=False)
    p = _sub(rsub, "cohort", cmd_cohort, "mid-slices of every subject of a cohort")
    p.add_argument("images", nargs="+", help="the subjects' ground truths (sub-<id>_*.nii.gz)")
    _add_figure_out(p, metrics=False)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m irem.cli.report SUBCOMMAND ...``: the same parser as ``irem report``."""
    parser = argparse.ArgumentParser(prog="irem")
    add_report_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", *(sys.argv[1:] if argv is None else argv)])
    try:
        args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
