"""The ``irem`` command: outputs on the asked grid, determinism, and every refused input."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from irem.cli import main
from irem.volume import load_volume, save_volume

FAST = [
    "--epochs",
    "1",
    "--set",
    "model.width=16",
    "--set",
    "model.fourier_dim=16",
    "--set",
    "train.batch_size=256",
    "--quiet",
]
METHODS = {
    "reconstruct": ["reconstruct", *FAST],
    "bspline": ["baseline", "bspline", "--quiet"],
    "srr": ["baseline", "srr", "--iterations", "2", "--quiet"],
}


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def test_simulate_writes_named_stacks_and_sidecars(tmp_path: Path, stack_files, capsys) -> None:
    _, gt = stack_files
    code, _ = run(
        [
            "simulate",
            gt,
            "--k",
            "4",
            "--out-dir",
            str(tmp_path / "lr"),
            "--motion",
            "5",
            "3",
            "--reorient",
        ],
        capsys,
    )
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "lr").iterdir())
    assert names == sorted(
        [f"acq-{o}.{e}" for o in ("axial", "coronal", "sagittal") for e in ("nii.gz", "json")]
        + ["simulation.json"]
    )
    sim = json.loads((tmp_path / "lr" / "simulation.json").read_text(encoding="utf-8"))
    assert sim["motions"][0] is None and sim["motions"][1] is not None
    assert nib.aff2axcodes(nib.load(tmp_path / "lr" / "acq-coronal.nii.gz").affine) == (
        "L",
        "P",
        "S",
    )


@pytest.mark.parametrize("method", ["reconstruct", "bspline"])
def test_reference_grid_is_honoured_and_seeded(
    tmp_path: Path, stack_files, capsys, method: str
) -> None:
    stacks, gt = stack_files
    outs = []
    for i in range(2):
        out = tmp_path / f"out{i}.nii.gz"
        code, err = run(
            [
                *METHODS[method],
                *stacks,
                "-o",
                str(out),
                "--reference",
                gt,
                "--no-register",
                "--seed",
                "7",
            ],
            capsys,
        )
        assert code == 0, err
        outs.append(nib.load(out))
    ref = nib.load(gt)
    assert outs[0].shape == ref.shape
    np.testing.assert_array_equal(outs[0].affine, ref.affine)
    assert int(outs[0].header["sform_code"]) == 1 and int(outs[0].header["qform_code"]) == 1
    np.testing.assert_array_equal(outs[0].get_fdata(), outs[1].get_fdata())
    side = json.loads((tmp_path / "out0.json").read_text(encoding="utf-8"))
    assert side["method"] in ("irem", "bspline") and side["seed"] == 7 and side["total_seconds"] > 0


def test_spacing_grid_and_metrics(tmp_path: Path, stack_files, capsys) -> None:
    stacks, gt = stack_files
    out = tmp_path / "iso.nii.gz"
    code, err = run(
        [*METHODS["bspline"], *stacks, "-o", str(out), "--spacing", "2", "--no-register"], capsys
    )
    assert code == 0, err
    img = nib.load(out)
    assert img.shape == (16, 16, 16)
    np.testing.assert_allclose(np.abs(np.diag(img.affine)[:3]), 2.0)
    out1 = tmp_path / "ref.nii.gz"
    run([*METHODS["bspline"], *stacks, "-o", str(out1), "--reference", gt, "--no-register"], capsys)
    code, err = run(["metrics", str(out1), gt, "-o", str(tmp_path / "m.json")], capsys)
    assert code == 0, err
    m = json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))
    assert 10 < m["psnr"] < 40 and 0 < m["ssim"] <= 1 and m["data_range"] == pytest.approx(1.0)


def _bad_inputs(tmp_path: Path, stacks: list[str], gt: str) -> dict[str, list[str]]:
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"\x00not a nifti at all")
    text = tmp_path / "notes.txt"
    text.write_text("hello", encoding="utf-8")
    img = nib.load(stacks[1])
    four_d = tmp_path / "4d.nii.gz"
    nib.save(
        nib.Nifti1Image(np.stack([img.get_fdata()] * 2, -1).astype(np.float32), img.affine), four_d
    )
    nan = tmp_path / "nan.nii.gz"
    d = img.get_fdata().astype(np.float32)
    d[0, 0, 0] = np.nan
    save_volume(nan, d, img.affine)
    const = tmp_path / "const.nii.gz"
    save_volume(const, np.ones(img.shape, np.float32), img.affine)
    far = tmp_path / "far.nii.gz"
    shifted = img.affine.copy()
    shifted[:3, 3] += 1000
    save_volume(far, img.get_fdata(), shifted)
    s0, s1, s2 = stacks
    return {
        "missing": [s0, str(tmp_path / "missing.nii.gz"), s2],
        "garbage": [s0, str(garbage), s2],
        "not-nifti": [s0, str(text), s2],
        "4-D": [s0, str(four_d), s2],
        "NaN": [s0, str(nan), s2],
        "constant": [s0, str(const), s2],
        "no-overlap": [s0, str(far), s2],
        "fixed-index": [*stacks, "--fixed-index", "3"],
        "spacing": [*stacks, "--spacing", "0"],
        "both-grids": [*stacks, "--spacing", "1", "--reference", gt],
        "bad-reference": [*stacks, "--reference", str(garbage)],
    }


@pytest.mark.parametrize("method", list(METHODS))
def test_bad_inputs_exit_2_with_one_line_and_no_output(
    tmp_path: Path, stack_files, capsys, method: str
) -> None:
    stacks, gt = stack_files
    cases = _bad_inputs(tmp_path, stacks, gt)
    if method == "reconstruct":
        cases["epochs"] = [*stacks, "--epochs", "-3"]
        cases["set-key"] = [*stacks, "--set", "model.nonsense=1"]
        cases["set-value"] = [*stacks, "--set", "model.fourier_dim=7"]
        cases["time-budget"] = [*stacks, "--time-budget", "-1"]
        bad_yaml = tmp_path / "bad.yaml"
        bad_yaml.write_text("model: [unclosed", encoding="utf-8")
        cases["config"] = [*stacks, "--config", str(bad_yaml)]
    if method == "srr":
        cases["alpha"] = [*stacks, "--alpha", "-1"]
        cases["regulariser"] = [*stacks, "--regulariser", "l7"]
        cases["holdout"] = [*stacks, "--alpha", "0.01", "0.1", "--holdout", "0"]
        cases["alpha-first"] = ["--alpha", "0.01", "0.1", *stacks]  # takes the stacks: says so
    before = set(tmp_path.iterdir())
    for name, args in cases.items():
        out = tmp_path / f"out-{name}.nii.gz"
        code, err = run([*METHODS[method], *args, "-o", str(out)], capsys)
        lines = err.strip().splitlines()
        assert code == 2, (name, err)
        assert len(lines) == 1 and lines[0].startswith("error:"), (name, err)
        assert set(tmp_path.iterdir()) == before, name  # nothing written, not even a temporary file
        assert name != "alpha-first" or "after the stacks" in err, err


def test_one_isotropic_scan_is_denoised_by_srr_tv(tmp_path: Path, stack_files, capsys) -> None:
    """A single stack is valid input: SRR-TV of one isotropic scan on its own grid is TV
    denoising (the scan-time experiment's "HR scan + TV")."""
    _, gt = stack_files
    truth = load_volume(gt)
    noisy = tmp_path / "noisy.nii.gz"
    rng = np.random.default_rng(0)
    save_volume(noisy, truth.data + rng.normal(0, 0.1, truth.shape).astype(np.float32), truth.affine)
    out = tmp_path / "tv.nii.gz"
    code, err = run(["baseline", "srr", str(noisy), "-o", str(out), "--no-register",
                     "--reference", gt, "--psf", "box", "--regulariser", "tv", "--alpha", "0.1"],
                    capsys)  # fmt: skip
    assert code == 0, err
    error = lambda path: float(np.mean((load_volume(path).data - truth.data) ** 2))  # noqa: E731
    assert error(out) < 0.7 * error(noisy)


def test_srr_with_several_weights_takes_the_held_out_choice_and_fits_all_voxels(
    tmp_path: Path, stack_files, capsys
) -> None:
    """Several --alpha: the sidecar records each weight's held-out error and the chosen one (the
    lowest), and the image is the SRR of all LR voxels at that weight."""
    stacks, gt = stack_files
    common = [*METHODS["srr"], *stacks, "--no-register", "--reference", gt, "--psf", "box",
              "--regulariser", "tv"]  # fmt: skip
    chose = tmp_path / "chose.nii.gz"
    code, err = run([*common, "-o", str(chose), "--alpha", "1e-4", "0.01", "10", "--seed", "1"],
                    capsys)  # fmt: skip
    assert code == 0, err
    side = json.loads(chose.with_name("chose.json").read_text(encoding="utf-8"))
    tried = {d["alpha"]: d["held_out_mse"] for d in side["alpha_choice"]["alphas_tried"]}
    assert set(tried) == {1e-4, 0.01, 10.0} and side["alpha_choice"]["holdout"] == 0.05
    assert side["srr"]["alpha"] == min(tried, key=tried.__getitem__) != 10.0
    fixed = tmp_path / "fixed.nii.gz"
    code, err = run([*common, "-o", str(fixed), "--alpha", str(side["srr"]["alpha"])], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(load_volume(chose).data, load_volume(fixed).data)


def test_output_folder_must_exist(tmp_path: Path, stack_files, capsys) -> None:
    stacks, _ = stack_files
    code, err = run(
        [*METHODS["bspline"], *stacks, "-o", str(tmp_path / "nope" / "x.nii.gz")], capsys
    )
    assert code == 2 and err.startswith("error:")


def test_console_script_reports_errors_without_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "irem.cli",
            "metrics",
            str(tmp_path / "a.nii.gz"),
            str(tmp_path / "b.nii.gz"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'a.nii.gz'}: no such file"]


@pytest.mark.slow
def test_registration_undoes_simulated_motion(tmp_path: Path, capsys) -> None:
    """The real-scan path: moved and re-stored stacks, registered, score like aligned ones."""
    from scipy.ndimage import gaussian_filter

    from irem.data.phantom import shepp_logan

    hr = shepp_logan((48, 48, 48))
    gt = tmp_path / "gt.nii.gz"
    save_volume(gt, gaussian_filter(hr.data, 1.0), hr.affine)
    psnr = {}
    for case, extra, register in [
        ("aligned", [], False),
        ("moved", ["--motion", "5", "3", "--reorient"], True),
        ("moved-unregistered", ["--motion", "5", "3", "--reorient"], False),
    ]:
        lr = tmp_path / case
        assert (
            run(
                ["simulate", str(gt), "--k", "3", "--out-dir", str(lr), "--seed", "1", *extra],
                capsys,
            )[0]
            == 0
        )
        stacks = [str(lr / f"acq-{o}.nii.gz") for o in ("sagittal", "coronal", "axial")]
        out = tmp_path / f"{case}.nii.gz"
        args = [*METHODS["bspline"], *stacks, "-o", str(out), "--reference", str(gt)]
        assert run(args + ([] if register else ["--no-register"]), capsys)[0] == 0
        metrics = tmp_path / f"{case}.metrics.json"
        assert run(["metrics", str(out), str(gt), "-o", str(metrics)], capsys)[0] == 0
        psnr[case] = json.loads(metrics.read_text(encoding="utf-8"))["psnr"]
    # Measured: aligned 35.04 dB, registered 35.00 dB; without registration the motion costs dB.
    assert psnr["moved"] > psnr["aligned"] - 0.3
    assert psnr["moved-unregistered"] < psnr["aligned"] - 3.0
    assert (tmp_path / "moved_from-acq-coronal.tfm").exists()


def test_help_lists_every_subcommand_with_an_example(capsys) -> None:
    from irem.cli import build_parser

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for name in ("simulate", "reconstruct", "baseline", "sample", "metrics", "dataset", "report"):
        assert f"    {name} " in text, name
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("simulate", "reconstruct", "sample", "metrics"):
        assert f"irem {name} " in sub.choices[name].epilog, name


def test_metrics_meta_is_stored_as_strings(tmp_path: Path, stack_files, capsys) -> None:
    _, gt = stack_files
    pred = tmp_path / "pred.nii.gz"
    img = nib.load(gt)
    save_volume(pred, 0.9 * img.get_fdata(), img.affine)
    out = tmp_path / "m.json"
    meta = ["--meta", "dataset=mni152_t1", "--meta", "k=4", "--meta", "method=irem", "--meta", "x="]
    code, err = run(["metrics", str(pred), gt, "-o", str(out), *meta], capsys)
    assert code == 0, err
    m = json.loads(out.read_text(encoding="utf-8"))
    assert m["meta"] == {"dataset": "mni152_t1", "k": "4", "method": "irem", "x": ""}
    code, err = run(["metrics", gt, gt, "--meta", "novalue"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "KEY=VALUE" in err


def test_metrics_compare_mask_scores_the_other_mask(tmp_path: Path, stack_files, capsys) -> None:
    _, gt = stack_files
    img = nib.load(gt)
    data = img.get_fdata()
    pred, true, other = (tmp_path / f"{n}.nii.gz" for n in ("pred", "true", "other"))
    save_volume(pred, 0.9 * data, img.affine)
    save_volume(true, (data > 0.1 * data.max()).astype(np.uint8), img.affine)
    save_volume(other, (data > 0.3 * data.max()).astype(np.uint8), img.affine)
    out, alone = tmp_path / "m.json", tmp_path / "alone.json"
    code, err = run(["metrics", str(pred), gt, "--mask", str(true), "--compare-mask", str(other),
                     "-o", str(out)], capsys)  # fmt: skip
    assert code == 0, err
    assert run(["metrics", str(pred), gt, "--mask", str(other), "-o", str(alone)], capsys)[0] == 0
    both, single = (json.loads(p.read_text(encoding="utf-8")) for p in (out, alone))
    assert both["compare_mask"]["psnr_mask"] == pytest.approx(single["psnr_mask"])
    assert both["psnr_mask"] != pytest.approx(single["psnr_mask"])
    assert 0 < both["compare_mask"]["dice"] < 1 and both["compare_mask"]["voxel_ratio"] < 1
    code, err = run(["metrics", str(pred), gt, "--compare-mask", str(other)], capsys)
    assert code == 2 and "--compare-mask needs --mask" in err


def test_reconstruct_sidecar_records_budget_rule_and_stop(
    tmp_path: Path, stack_files, capsys
) -> None:
    stacks, gt = stack_files
    out = tmp_path / "r.nii.gz"
    log = tmp_path / "run.log"
    argv = ["--log", str(log), "reconstruct", *stacks, "-o", str(out), "--reference", gt]
    budget = ["--time-per-mvoxel", "1", "--time-budget", "3600", "--no-register"]
    code, err = run([*argv, *budget, *FAST[2:]], capsys)
    assert code == 0, err
    side = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    # 1 s per million voxels of the 32^3 reference grid
    assert side["budget"]["rule"] == "per_mvoxel"
    assert side["budget"]["seconds"] == pytest.approx(32**3 / 1e6)
    assert side["budget"]["cap_seconds"] == 3600
    assert side["stopped_by"] in ("budget", "epochs") and side["steps"] >= 1
    assert side["config"]["train"]["time_per_mvoxel"] == 1.0
    text = log.read_text(encoding="utf-8")
    assert "trained" in text and "stopped by" in text and "wrote" in text


def test_quiet_after_the_subcommand_still_works_and_verbose_logs(
    tmp_path: Path, stack_files, capsys
) -> None:
    stacks, _ = stack_files
    out = tmp_path / "b.nii.gz"
    code, err = run(["-v", "baseline", "bspline", *stacks, "-o", str(out), "--no-register"], capsys)
    assert code == 0 and "target grid" in err
    code, err = run(["baseline", "bspline", *stacks, "-o", str(out), "--no-register", "-q"], capsys)
    assert code == 0 and err == ""
    code, err = run(["--log", str(tmp_path / "no" / "x.log"), "metrics", "a", "b"], capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"error: --log {tmp_path / 'no' / 'x.log'}: folder does not exist"
    ]


def test_snapshots_follow_the_epochs_and_the_plateau_stops_the_run(
    tmp_path: Path, stack_files, capsys
) -> None:
    stacks, gt = stack_files
    out, snaps = tmp_path / "r.nii.gz", tmp_path / "snaps"
    argv = ["reconstruct", *stacks, "-o", str(out), "--reference", gt, "--no-register"]
    options = [*FAST[2:], "--epochs", "40", "--snapshots", str(snaps), "--snapshot-epochs", "1,3"]
    # a plateau window of one epoch and a drop no run can reach: the run stops after 2 epochs
    plateau = ["--set", "train.holdout=0.1", "--set", "train.plateau_epochs=1",
               "--set", "train.plateau_min_drop=0.99"]  # fmt: skip
    code, err = run([*argv, *options, *plateau], capsys)
    assert code == 0, err
    side = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert side["stopped_by"] == "plateau" and side["epochs_completed"] == 2
    assert sorted(p.name for p in snaps.glob("*.nii.gz")) == ["epoch-0001.nii.gz"]
    info = json.loads((snaps / "epoch-0001.json").read_text(encoding="utf-8"))
    trace = dict(side["held_out"]["trace"])
    assert info["epoch"] == 1 and info["held_out_loss"] == trace[info["steps"]]
    snap = load_volume(snaps / "epoch-0001.nii.gz")
    assert snap.shape == load_volume(out).shape
    code, err = run([*argv, "-o", str(tmp_path / "x.nii.gz"), "--snapshot-epochs", "1,0"], capsys)
    assert code == 2 and "must be >= 1" in err
