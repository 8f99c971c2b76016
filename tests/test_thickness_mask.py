"""``--thickness``, ``--stack-masks`` and ``--mask``: the forward models use the slice thickness,
masks remove LR voxels from the data and zero the output, and bad values are refused."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from baselines.bspline import bspline
from baselines.operators import StackOperator
from baselines.srr import srr
from irem.acquisition.grid import Grid, reference_grid, to_stack_voxels
from irem.acquisition.simulate import FWHM_TO_SIGMA, simulate_stacks
from irem.cli import main
from irem.pipeline import lr_voxels_near, restrict_to_mask, target_mask
from irem.training.config import load_config
from irem.training.train import prepare_data, slice_vectors, training_data
from irem.volume import Stack, Volume, apply_affine, save_volume

FAST = ["--epochs", "1", "--set", "model.width=16", "--set", "model.fourier_dim=16"]
FAST += ["--set", "train.batch_size=256", "--set", "train.profile_points=4"]
METHODS = {
    "reconstruct": ["reconstruct", *FAST, "--quiet"],
    "bspline": ["baseline", "bspline", "--quiet"],
    "srr": ["baseline", "srr", "--iterations", "3", "--psf", "box", "--quiet"],
}


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def thick_stack(n: int = 24, thickness: float | None = None) -> tuple[Stack, Grid]:
    """A stack of 1 mm x 1 mm x 4 mm voxels over an n^3 1 mm grid, LR centres at the mean of 4 HR
    slices (as the simulator places them)."""
    affine = np.diag([1.0, 1.0, 4.0, 1.0])
    affine[2, 3] = 1.5
    stack = Stack(np.zeros((n, n, n // 4), np.float32), affine, thickness=thickness)
    return stack, Grid((n, n, n), np.eye(4))


def impulse_response(stack: Stack, grid: Grid, psf: str) -> np.ndarray:
    """The through-plane weights of one interior LR voxel: its row of ``A`` (``A^T e_i``) summed
    in-plane."""
    op = StackOperator(stack, grid, psf, dtype=torch.float64)
    e = torch.zeros(stack.shape, dtype=torch.float64)
    e[12, 12, 3] = 1.0
    row = op.adjoint(e).numpy()
    if psf == "box":  # in-plane: one HR column (same spacing)
        assert np.count_nonzero(row.sum(axis=2)) == 1
    return row.sum(axis=(0, 1))


@pytest.mark.parametrize("thickness", [None, 6.0, 2.0])
def test_box_psf_spans_the_slice_thickness(thickness: float | None) -> None:
    stack, grid = thick_stack(thickness=thickness)
    w = impulse_response(stack, grid, "box")
    width = 4.0 if thickness is None else thickness
    taps = w[w > 0]
    assert len(taps) == width  # HR slices of 1 mm fully inside the box
    np.testing.assert_allclose(taps, 1.0 / width)
    centre = float((np.arange(len(w)) * w).sum())
    assert centre == pytest.approx(13.5)  # LR voxel 3 sits at HR 3 * 4 + 1.5


@pytest.mark.parametrize("thickness", [None, 6.0])
def test_gaussian_psf_fwhm_is_the_slice_thickness(thickness: float | None) -> None:
    stack, grid = thick_stack(thickness=thickness)
    w = impulse_response(stack, grid, "gaussian")
    t = np.arange(len(w)) - 13.5
    sigma = (4.0 if thickness is None else thickness) * FWHM_TO_SIGMA
    assert float((w * t**2).sum()) == pytest.approx(sigma**2, rel=0.02)


def test_thickness_equal_to_spacing_changes_nothing(phantom: Volume) -> None:
    grid = reference_grid(phantom)
    plain = simulate_stacks(phantom, 4)
    given = [dataclasses.replace(s, thickness=4.0) for s in plain]
    for psf in ("box", "gaussian"):
        a, _ = srr(plain, grid, psf=psf, iterations=3, progress=False)
        b, _ = srr(given, grid, psf=psf, iterations=3, progress=False)
        assert np.array_equal(a, b)
    norm = training_data(plain)[2]
    assert np.array_equal(slice_vectors(plain, norm)[0], slice_vectors(given, norm)[0])
    thicker = [dataclasses.replace(s, thickness=6.0) for s in plain]
    np.testing.assert_allclose(
        slice_vectors(thicker, norm)[0], 1.5 * slice_vectors(plain, norm)[0], rtol=1e-6
    )


def test_srr_fits_overlapping_slices_only_with_their_thickness(phantom: Volume) -> None:
    """Stacks acquired with 6 mm slices every 4 mm: the right thickness explains the data (and the
    phantom) far better than the default of thickness = spacing."""
    grid = reference_grid(phantom)
    x = torch.as_tensor(phantom.data, dtype=torch.float64)
    acquired = []
    for s in simulate_stacks(phantom, 4):
        s6 = dataclasses.replace(s, thickness=6.0)
        y = StackOperator(s6, grid, "box", dtype=torch.float64).forward(x).numpy()
        acquired.append(dataclasses.replace(s6, data=y.astype(np.float32)))
    assumed = [dataclasses.replace(s, thickness=None) for s in acquired]
    right, info_right = srr(acquired, grid, psf="box", alpha=1e-4, progress=False)
    wrong, info_wrong = srr(assumed, grid, psf="box", alpha=1e-4, progress=False)
    assert info_right["slice_thickness_mm"] == [6.0] * 3
    assert info_wrong["slice_thickness_mm"] == [4.0] * 3
    assert info_right["relative_residual"] < 0.1 * info_wrong["relative_residual"]
    rmse = [float(np.sqrt(np.mean((r - phantom.data) ** 2))) for r in (right, wrong)]
    assert rmse[0] < 0.95 * rmse[1]


@pytest.mark.parametrize("method", ["reconstruct", "srr", "bspline"])
def test_cli_thickness_of_the_spacing_reconstructs_identically(
    tmp_path: Path, stack_files, capsys, method: str
) -> None:
    stacks, gt = stack_files
    outs = {}
    for tag, extra in {
        "none": [],
        "four": ["--thickness", "4"],
        "six": ["--thickness", "6"],
    }.items():
        out = tmp_path / f"{tag}.nii.gz"
        argv = [*METHODS[method], *stacks, "-o", str(out), "--reference", gt, "--no-register"]
        code, err = run([*argv, *extra], capsys)
        assert code == 0, err
        outs[tag] = np.asarray(nib.load(out).dataobj)
        side = json.loads(out.with_suffix("").with_suffix(".json").read_text(encoding="utf-8"))
        assert [i["slice_thickness_mm"] for i in side["inputs"]] == [
            4.0 if tag != "six" else 6.0
        ] * 3
        assert all(i["thickness_given"] == (tag != "none") for i in side["inputs"])
    assert np.array_equal(outs["none"], outs["four"])
    if method == "bspline":  # no slice profile
        assert np.array_equal(outs["none"], outs["six"])
    else:
        assert not np.array_equal(outs["none"], outs["six"])


def test_cli_thickness_per_stack_in_stack_order(tmp_path: Path, stack_files, capsys) -> None:
    stacks, gt = stack_files
    out = tmp_path / "b.nii.gz"
    argv = [*METHODS["bspline"], *stacks, "-o", str(out), "--thickness", "3", "4", "5"]
    assert run([*argv, "--no-register"], capsys)[0] == 0
    side = json.loads((tmp_path / "b.json").read_text(encoding="utf-8"))
    assert [i["slice_thickness_mm"] for i in side["inputs"]] == [3.0, 4.0, 5.0]
    assert [i["path"] for i in side["inputs"]] == stacks


def sphere(shape: tuple[int, int, int], radius: float) -> np.ndarray:
    idx = np.indices(shape) - (np.asarray(shape) - 1)[:, None, None, None] / 2.0
    return (idx**2).sum(axis=0) <= radius**2


@pytest.mark.parametrize("method", ["reconstruct", "srr", "bspline"])
def test_cli_output_is_zero_outside_the_target_mask(
    tmp_path: Path, stack_files, phantom: Volume, capsys, method: str
) -> None:
    stacks, gt = stack_files
    mask = sphere(phantom.shape, 9.0)
    save_volume(tmp_path / "mask.nii.gz", mask.astype(np.uint8), phantom.affine)
    out, plain = tmp_path / "out.nii.gz", tmp_path / "plain.nii.gz"
    argv = [*METHODS[method], *stacks, "--reference", gt, "--no-register"]
    code, err = run([*argv, "-o", str(out), "--mask", str(tmp_path / "mask.nii.gz")], capsys)
    assert code == 0, err
    assert run([*argv, "-o", str(plain)], capsys)[0] == 0
    data, unmasked = (np.asarray(nib.load(p).dataobj) for p in (out, plain))
    assert np.all(data[~mask] == 0) and np.any(unmasked[~mask] != 0)
    if method == "reconstruct":  # trained on the LR voxels near the mask only
        assert np.any(data[mask] != 0) and not np.array_equal(data[mask], unmasked[mask])
    else:  # the mask only zeroes the output
        assert np.array_equal(data[mask], unmasked[mask])
    masks = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))["masks"]
    assert masks["target"] == str(tmp_path / "mask.nii.gz")
    assert masks["target_voxels"] == int(mask.sum())
    assert masks["lr_voxels_restricted_to_target"] == (method == "reconstruct")


def test_one_mask_voxel_keeps_its_lr_voxel_and_the_26_around_it() -> None:
    stack, grid = thick_stack()
    mask = np.zeros(grid.shape, dtype=bool)
    mask[10, 7, 13] = True  # HR z 13 is inside LR slice 3 (HR 12..15)
    near = lr_voxels_near(stack, grid, mask)
    expected = np.zeros(stack.shape, dtype=bool)
    expected[9:12, 6:9, 2:5] = True
    assert np.array_equal(near, expected)


def test_target_mask_restricts_the_training_points(phantom: Volume) -> None:
    grid = reference_grid(phantom)
    stacks = simulate_stacks(phantom, 4)
    mask = sphere(phantom.shape, 6.0)
    kept = restrict_to_mask(stacks, grid, mask)
    cfg = load_config(None, {})
    full, part = prepare_data(stacks, cfg, "cpu"), prepare_data(kept, cfg, "cpu")
    assert part.n == sum(int(s.mask.sum()) for s in kept) < full.n
    assert (
        part.norm.to_dict() == full.norm.to_dict()
    )  # the normaliser still spans every stack's field of view
    # every kept LR voxel lies within 1.5 LR voxels (Chebyshev, stack axes) of a mask voxel centre
    centres = apply_affine(grid.affine, np.argwhere(mask))
    for s in kept:
        vox = to_stack_voxels(s, centres)
        for i in np.argwhere(s.mask)[:: max(1, int(s.mask.sum()) // 50)]:
            assert np.abs(vox - i).max(axis=1).min() <= 1.5


def half_masks(stacks: list[Stack]) -> list[Stack]:
    """The first stack masked to its first half along its first axis."""
    mask = np.zeros(stacks[0].shape, dtype=bool)
    mask[: stacks[0].shape[0] // 2] = True
    return [dataclasses.replace(stacks[0], mask=mask), *stacks[1:]]


def test_stack_mask_drops_training_data(phantom: Volume) -> None:
    stacks = simulate_stacks(phantom, 4)
    masked = half_masks(stacks)
    cfg = load_config(None, {})
    full, part = prepare_data(stacks, cfg, "cpu"), prepare_data(masked, cfg, "cpu")
    assert full.n - part.n == stacks[0].data.size // 2
    assert int((part.owner == 0).sum()) == stacks[0].data.size // 2
    kept = stacks[0].data[: stacks[0].shape[0] // 2].reshape(-1)
    np.testing.assert_allclose(part.vals[: kept.size].numpy() * part.norm.intensity_scale, kept)


def test_srr_ignores_lr_voxels_outside_the_stack_masks(phantom: Volume) -> None:
    grid = reference_grid(phantom)
    stacks = half_masks(simulate_stacks(phantom, 4))
    changed = stacks[0].data.copy()
    changed[stacks[0].shape[0] // 2 :] = 5.0  # only where the mask is 0
    other = [dataclasses.replace(stacks[0], data=changed), *stacks[1:]]
    init = np.zeros(phantom.shape, np.float32)
    kw = {"psf": "box", "iterations": 5, "progress": False, "init": init}
    a, info = srr(stacks, grid, **kw)
    b, _ = srr(other, grid, **kw)
    assert np.array_equal(a, b)
    assert info["lr_voxels_used"][0] == stacks[0].data.size // 2
    c, _ = srr([dataclasses.replace(stacks[0], mask=None), *stacks[1:]], grid, **kw)
    d, _ = srr([dataclasses.replace(other[0], mask=None), *stacks[1:]], grid, **kw)
    assert not np.array_equal(c, d)  # without the mask the same change does matter


def test_bspline_takes_no_value_from_masked_out_voxels(phantom: Volume) -> None:
    grid = reference_grid(phantom)
    stacks = simulate_stacks(phantom, 4)
    masked = half_masks(stacks)
    out, full, rest = bspline(masked, grid), bspline(stacks, grid), bspline(stacks[1:], grid)
    x0 = to_stack_voxels(stacks[0], grid.points())[:, 0].reshape(grid.shape)
    inside = np.rint(x0) < stacks[0].shape[0] // 2
    np.testing.assert_allclose(out[inside], full[inside], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out[~inside], rest[~inside], rtol=1e-6, atol=1e-6)


def test_target_mask_on_another_grid_is_resampled(phantom: Volume) -> None:
    grid = reference_grid(phantom)
    coarse = sphere((16, 16, 16), 5.0)
    pairs = np.diag([2.0, 2.0, 2.0, 1.0])
    pairs[:3, 3] = 0.5  # coarse voxel j covers HR voxels 2j and 2j + 1
    affine = phantom.affine @ pairs
    on_grid = target_mask(Volume(coarse.astype(np.float32), affine), "m", grid)
    expected = coarse.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    assert np.array_equal(on_grid, expected)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--thickness", "0"], "must be a positive number"),
        (["--thickness", "-2"], "must be a positive number"),
        (["--thickness", "4", "4"], "one value or one per stack (3), got 2"),
        (["--stack-masks", "M0", "M1"], "one mask per stack (3), got 2"),
        (["--stack-masks", "BAD", "BAD", "BAD"], "not on the grid of stack"),
        (["--stack-masks", "M0", "M1", "EMPTY"], "the mask is empty"),
        (["--mask", "EMPTY"], "the mask is empty"),
        (["--mask", "NONE"], "no such file"),
    ],
)
def test_bad_values_exit_2_with_one_line(
    tmp_path: Path, stack_files, capsys, extra: list[str], needle: str
) -> None:
    stacks, gt = stack_files
    files = {"NONE": str(tmp_path / "none.nii.gz")}
    for i, p in enumerate(stacks):
        img = nib.load(p)
        files[f"M{i}"] = str(save_volume(tmp_path / f"m{i}.nii.gz", np.ones(img.shape), img.affine))
    files["BAD"] = str(save_volume(tmp_path / "bad.nii.gz", np.ones((5, 5, 5)), np.eye(4)))
    img = nib.load(stacks[2])
    files["EMPTY"] = str(save_volume(tmp_path / "e.nii.gz", np.zeros(img.shape), img.affine))
    out = tmp_path / "out.nii.gz"
    argv = [*METHODS["bspline"], *stacks, "-o", str(out), "--no-register"]
    code, err = run([*argv, *[files.get(a, a) for a in extra]], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err
    assert not out.exists()


def test_cli_stack_masks_are_recorded_and_limit_the_training_voxels(
    tmp_path: Path, stack_files, capsys
) -> None:
    stacks, gt = stack_files
    masks = []
    for i, p in enumerate(stacks):
        img = nib.load(p)
        m = np.ones(img.shape, dtype=np.uint8)
        if i == 0:
            m[: img.shape[0] // 2] = 0
        masks.append(str(save_volume(tmp_path / f"m{i}.nii.gz", m, img.affine)))
    out = tmp_path / "irem.nii.gz"
    argv = [*METHODS["reconstruct"], *stacks, "-o", str(out), "--reference", gt, "--no-register"]
    code, err = run([*argv, "--stack-masks", *masks], capsys)
    assert code == 0, err
    side = json.loads((tmp_path / "irem.json").read_text(encoding="utf-8"))
    sizes = [int(np.prod(nib.load(p).shape)) for p in stacks]
    assert [i["mask"] for i in side["inputs"]] == masks
    assert [i["lr_voxels_in_mask"] for i in side["inputs"]] == [sizes[0] // 2, *sizes[1:]]
    assert side["masks"]["stack_masks"] == masks and side["masks"]["target"] is None
