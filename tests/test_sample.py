"""``irem sample``: a saved model evaluated again, on its own grid or any other."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from irem.cli import main

TINY = [
    "--epochs",
    "1",
    "--set",
    "model.width=16",
    "--set",
    "model.fourier_dim=16",
    "--set",
    "train.batch_size=1024",
    "--quiet",
    "--no-register",
    "--seed",
    "3",
]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.fixture()
def saved(tmp_path: Path, stack_files, capsys) -> tuple[Path, Path, str]:
    """A reconstruction on the reference grid and the model saved beside it."""
    stacks, gt = stack_files
    out, model = tmp_path / "rec.nii.gz", tmp_path / "rec.pt"
    argv = ["reconstruct", *stacks, "-o", str(out), "--reference", gt, "--save-model", str(model)]
    code, err = run([*argv, *TINY], capsys)
    assert code == 0, err
    return out, model, gt


def test_sampling_the_training_grid_reproduces_the_reconstruction(
    saved: tuple[Path, Path, str], tmp_path: Path, capsys
) -> None:
    rec, model, gt = saved
    for extra in ([], ["--reference", gt]):  # default grid = the training target grid
        out = tmp_path / f"sample{len(extra)}.nii.gz"
        code, err = run(["sample", str(model), "-o", str(out), "--quiet", *extra], capsys)
        assert code == 0, err
        a, b = nib.load(rec), nib.load(out)
        np.testing.assert_array_equal(a.affine, b.affine)
        assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    side = json.loads((tmp_path / "sample0.json").read_text(encoding="utf-8"))
    assert side["seed"] == 3 and side["model_file"] == str(model)
    assert json.loads(rec.with_suffix("").with_suffix(".json").read_text(encoding="utf-8"))["model_file"] == str(
        model
    )


def test_saved_model_holds_what_resampling_needs(saved: tuple[Path, Path, str]) -> None:
    _, model, gt = saved
    state = torch.load(model, weights_only=True)
    assert {"weights", "normaliser", "config", "seed", "grid", "transforms", "fixed_stack"} <= set(
        state
    )
    assert state["seed"] == 3 and state["config"]["model"]["width"] == 16
    assert state["grid"]["shape"] == list(nib.load(gt).shape)
    assert len(state["transforms"]) == 3


def test_sampling_at_another_spacing(saved: tuple[Path, Path, str], tmp_path: Path, capsys) -> None:
    _, model, _ = saved
    out = tmp_path / "coarse.nii.gz"
    code, err = run(["sample", str(model), "-o", str(out), "--spacing", "2", "--quiet"], capsys)
    assert code == 0, err
    img = nib.load(out)
    # the fixed (sagittal, 4 mm thick) stack covers 32 mm along each axis: 16 voxels of 2 mm
    assert img.shape == (16, 16, 16)
    np.testing.assert_allclose(np.abs(np.diag(img.affine)[:3]), 2.0)
    assert np.isfinite(img.get_fdata()).all() and img.get_fdata().std() > 0


@pytest.mark.parametrize("content", [b"", b"\x00garbage", None, "checkpoint"])
def test_bad_model_file_is_one_line_exit_2(
    tmp_path: Path, capsys, content: bytes | str | None
) -> None:
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "checkpoint":  # a torch file, but not a saved model
        torch.save({"fingerprint": {}, "model": {}}, path)
    out = tmp_path / "x.nii.gz"
    before = set(tmp_path.iterdir())
    code, err = run(["sample", str(path), "-o", str(out)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "bad.pt" in lines[0], err
    assert set(tmp_path.iterdir()) == before


def test_save_model_into_a_missing_folder_is_refused_before_training(
    tmp_path: Path, stack_files, capsys
) -> None:
    stacks, _ = stack_files
    out = tmp_path / "r.nii.gz"
    argv = ["reconstruct", *stacks, "-o", str(out), "--save-model", str(tmp_path / "no" / "m.pt")]
    code, err = run([*argv, *TINY], capsys)
    assert code == 2 and err.startswith("error:") and not out.exists()
