"""The convergence study's report: snapshots scored against the truth, runs against the lines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from irem.cli import main
from irem.evaluation.metrics import compute_metrics
from irem.report.convergence import snapshot_folder
from irem.volume import save_volume
from tests.report_fakes import meta, write_metrics


def _study(tmp_path: Path) -> tuple[list[Path], list[Path], dict[tuple[str, int], float]]:
    """Two subjects with a run of 'conv' (snapshots after epochs 1 and 3) and a 'bspline' line;
    the brain PSNR of every snapshot."""
    rng = np.random.default_rng(0)
    affine = np.eye(4)
    runs, lines, expected = [], [], {}
    for subject in ("01", "02"):
        gt = rng.random((14, 12, 11)).astype(np.float32)
        mask = np.zeros(gt.shape, np.float32)
        mask[2:12, 2:10, 2:9] = 1
        gt_path, mask_path = tmp_path / f"gt{subject}.nii.gz", tmp_path / f"m{subject}.nii.gz"
        save_volume(gt_path, gt, affine)
        save_volume(mask_path, mask, affine)
        files = {"gt": str(gt_path), "mask_file": str(mask_path)}
        side = {"epochs_completed": 3, "steps": 30, "stopped_by": "plateau",
                "training_seconds": 60.0}  # fmt: skip
        run = write_metrics(tmp_path, meta("4", "conv", subject, "0"), 30.0, side)
        data = json.loads(run.read_text(encoding="utf-8")) | files
        run.write_text(json.dumps(data), encoding="utf-8")
        folder = snapshot_folder(run)
        folder.mkdir()
        for epoch, noise in ((1, 0.2), (3, 0.05)):
            image = gt + noise * rng.standard_normal(gt.shape).astype(np.float32)
            info = {"epoch": epoch, "steps": 10 * epoch, "held_out_loss": noise**2}
            save_volume(folder / f"epoch-{epoch:04d}.nii.gz", image, affine, sidecar=info)
            expected[subject, epoch] = compute_metrics(image, gt, mask=mask > 0.5)["psnr_mask"]
        runs.append(run)
        lines.append(write_metrics(tmp_path, meta("4", "bspline", subject, "0"), 28.0))
    return runs, lines, expected


def test_report_scores_each_snapshot_and_pairs_runs_with_lines(tmp_path: Path) -> None:
    runs, lines, expected = _study(tmp_path)
    out = {n: tmp_path / f"c.{n}" for n in ("csv", "runs", "md", "png")}
    argv = ["report", "convergence", "--metrics", *map(str, runs), "--lines", *map(str, lines),
            "--method", "conv=Converged", "bspline=B-spline", "--csv", str(out["csv"]),
            "--runs", str(out["runs"]), "--md", str(out["md"]), "-o", str(out["png"])]  # fmt: skip
    assert main(argv) == 0
    import pandas as pd

    curves = pd.read_csv(out["csv"], dtype={"subject": str})
    assert len(curves) == 4
    for _, r in curves.iterrows():
        assert r["psnr_mask"] == pytest.approx(expected[r["subject"], r["epoch"]], abs=1e-4)
    assert set(curves["held_out_loss"].round(6)) == {0.04, 0.0025}
    summary = pd.read_csv(out["runs"])
    assert list(summary["minus_bspline"]) == pytest.approx([2.0, 2.0])
    text = out["md"].read_text(encoding="utf-8")
    assert "Converged" in text and "plateau" in text and "+2.00" in text and "2/0/0" in text
    assert out["png"].stat().st_size > 10_000


def test_report_refuses_a_run_without_snapshots(tmp_path: Path, capsys) -> None:
    runs, lines, _ = _study(tmp_path)
    for image in snapshot_folder(runs[0]).iterdir():
        image.unlink()
    argv = ["report", "convergence", "--metrics", *map(str, runs), "--lines", *map(str, lines),
            "--csv", str(tmp_path / "c.csv"), "--runs", str(tmp_path / "r.csv"),
            "--md", str(tmp_path / "c.md"), "-o", str(tmp_path / "c.png")]  # fmt: skip
    assert main(argv) == 2
    assert "no snapshots" in capsys.readouterr().err
    assert not (tmp_path / "c.csv").exists()


def _sweep_runs(tmp_path: Path, low: float, ks: tuple[str, ...] = ("8",)) -> list[Path]:
    """sigma 0.5, 1 and 4 on two subjects at each k (20 and 22 dB at sigma 1 and k = 8, 5 dB more
    at k = 4; 4 is 1 dB higher at k = 8 and 2 dB at k = 4, 0.5 ``low`` dB), and B-spline at 25 dB."""
    paths = []
    for k in ks:
        for subject, base in (("01", 20.0), ("02", 22.0)):
            for value, gain in (("0.5", low), ("1", 0.0), ("4", 1.0 if k == "8" else 2.0)):
                m = meta(k, f"convsigma{value}", subject, "0", ablation="sigma", value=value)
                paths.append(write_metrics(tmp_path, m, base + gain + (k == "4") * 5))
            paths.append(write_metrics(tmp_path, meta(k, "bspline", subject, "0"), 25.0))
    return paths


def test_sweep_table_pairs_each_value_with_the_reference(tmp_path: Path) -> None:
    paths = _sweep_runs(tmp_path, -0.05, ks=("4", "8"))
    csv, md, png = tmp_path / "s.csv", tmp_path / "s.md", tmp_path / "s.png"
    argv = ["report", "fig3", "--metrics", *map(str, paths), "--baselines", "bspline",
            "--reference", "sigma=1", "--csv", str(csv), "--md", str(md), "-o", str(png)]  # fmt: skip
    assert main(argv) == 0
    import pandas as pd

    both = pd.read_csv(csv)
    assert sorted(both["k"].unique()) == [4, 8]  # each k paired on its own
    assert both.set_index(["k", "value"]).loc[(4, 4.0), "minus_reference"] == pytest.approx(2.0)
    table = both[both["k"] == 8].set_index("value")
    assert list(table["n"]) == [2, 2, 2]
    assert table.loc[4.0, "minus_reference"] == pytest.approx(1.0)
    assert table.loc[4.0, "wins_ties_losses"] == "2/0/0"
    assert table.loc[0.5, "wins_ties_losses"] == "0/2/0"
    assert table.loc[1.0, "mean_psnr_mask"] == pytest.approx(21.0)
    text = md.read_text(encoding="utf-8")
    assert "+1.00" in text and "25.00" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_figure_draws_paired_differences(tmp_path: Path) -> None:
    from irem.report.convergence import sweep_figure, sweep_table
    from irem.report.tables import Methods, load_runs

    paths = _sweep_runs(tmp_path, -0.5)
    methods = Methods(labels={"bspline": "B-spline"}, baselines=("bspline",))
    runs = load_runs(paths, methods)
    table = sweep_table(runs, {"sigma": "1"})
    lines = runs[runs["method"] == "bspline"]
    fig = sweep_figure(table, lines, methods, {"sigma": "1"})
    ax = fig.axes[0]
    xs, ys = next(ln for ln in ax.lines if ln.get_marker() == "o").get_data()
    assert list(xs) == [0.5, 1, 4] and list(ys) == pytest.approx([-0.5, 0.0, 1.0])
    assert ax.get_xscale() == "log"
    dotted = [ln.get_ydata()[0] for ln in ax.lines if ln.get_linestyle() == ":"]
    assert dotted == pytest.approx([4.0])  # B-spline 25 minus the reference's mean 21
    with pytest.raises(ValueError, match="reference value"):
        sweep_figure(table, lines, methods, {"fourier_dim": "256"})
