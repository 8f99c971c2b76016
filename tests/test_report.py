"""The ``report`` command line (irem/cli/report.py) on fake metrics JSONs with meta."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from irem.cli import report
from tests.report_fakes import METHOD_ARGS, meta, write_benchmark, write_main_runs, write_metrics


def test_tables_command_line(tmp_path: Path) -> None:
    paths = write_main_runs(tmp_path)
    tsv = write_benchmark(tmp_path / "b.tsv", 2.0, 100.0)
    out = tmp_path / "tables"
    done = subprocess.run(
        [sys.executable, "-m", "irem.cli.report", "tables", "--metrics", *map(str, paths),
         *METHOD_ARGS, "--benchmark", f"{tsv}={paths[0]}", "--out-dir", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    metrics = pd.read_csv(out / "metrics.csv", dtype={"k": str})
    assert list(metrics["label"][metrics["k"] == "4"]) == ["B-spline", "SRR", "IREM"]
    assert len(pd.read_csv(out / "runtime.csv")) == 1


def test_metrics_without_meta_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "old_metrics.json"
    bad.write_text(json.dumps({"psnr": 30.0, "ssim": 0.9}), encoding="utf-8")
    out = tmp_path / "tables"
    done = subprocess.run(
        [sys.executable, "-m", "irem.cli.report", "tables", "--metrics", str(bad),
         "--out-dir", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and 'no "meta"' in done.stderr
    assert not (out / "metrics.csv").exists()


def test_figure_commands(tmp_path: Path, capsys) -> None:
    paths = write_main_runs(tmp_path)
    f4 = tmp_path / "f4.png"
    assert report.main(["fig4", "--metrics", *map(str, paths), *METHOD_ARGS, "-o", str(f4)]) == 0
    assert f4.stat().st_size > 0
    # No sweep among the inputs of Fig. 3: one error line, no figure.
    argv = ["fig3", "--metrics", str(paths[0]), "--reference", "sigma=1", "-o", str(tmp_path / "x.png")]
    assert report.main(argv) == 2
    assert "error: no run of a sweep" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    assert report.main(["fig4", "--metrics", str(tmp_path / "missing.json"), "-o", str(f4)]) == 2


def test_add_report_parser_plugs_into_a_main_parser() -> None:
    parser = argparse.ArgumentParser(prog="irem")
    report.add_report_parser(parser.add_subparsers(dest="command"))
    for name in ("tables", "fig3", "fig4", "fig5", "scantime"):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(["report", name, "--help"])
        assert exc.value.code == 0
    args = parser.parse_args(
        ["report", "fig4", "--metrics", "a.json", "--method", "x=X", "--method", "y=Y", "-o", "f"]
    )
    assert args.func is report.cmd_fig4 and args.method == ["x=X", "y=Y"]
    assert report.methods_of(args).labels == {"x": "X", "y": "Y"}


def test_scantime_command_writes_figure_and_tables(tmp_path: Path) -> None:
    paths = [
        write_metrics(tmp_path, meta("4", method, "01", "0", hr_snr=snr), value)
        for method, snr, value in (
            ("hrscan", "5", 20.0),
            ("hrscan", "10", 25.0),
            ("irem", "5", 30.0),
        )
    ]
    out = [tmp_path / "s.png", tmp_path / "s.csv", tmp_path / "s.md"]
    args = ["scantime", "--metrics", *map(str, paths), *METHOD_ARGS, "-o", str(out[0])]
    assert report.main([*args, "--csv", str(out[1]), "--md", str(out[2])]) == 0
    table = pd.read_csv(out[1])
    assert list(table["method"]) == ["irem", "hrscan", "hrscan"]
    assert "HR scan (direct)" in out[2].read_text(encoding="utf-8")
