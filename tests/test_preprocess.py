"""Real scans without hand work: automatic masks, N4, DICOM series, interleaved packages, slice
thickness in every slice model, the memory check and the SRR defaults for noisy scans."""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from baselines.bspline import bspline
from baselines.operators import psf_widths
from irem.acquisition.dicom import load_dicom_stack, read_series
from irem.acquisition.grid import reference_grid
from irem.acquisition.preprocess import (
    AutoMaskParams,
    N4Params,
    auto_mask,
    n4_log_field,
    otsu_foreground,
    split_packages,
)
from irem.acquisition.registration import to_sitk
from irem.acquisition.simulate import (
    REORIENT_CODES,
    move,
    reorient,
    simulate_stack,
    simulate_stacks,
)
from irem.cli import main
from irem.errors import InputError
from irem.pipeline import read_stack
from irem.training.config import TrainConfig
from irem.training.memory import MemoryEstimate, available_memory, check_memory
from irem.training.train import slice_profile_points
from irem.volume import Stack, Volume, load_volume, save_volume, voxel_centres

from .test_cli import run
from .test_registration import blob_phantom, rigid_matrix

BSPLINE = ["-q", "baseline", "bspline"]


def write_series(
    vol: Volume,
    directory: str | Path,
    slice_thickness: float | None = None,
    series_uid: str | None = None,
) -> list[Path]:
    """Write ``vol`` as a DICOM series (int16 MR slices along its third voxel axis, which must be
    right-handed in LPS); ``slice_thickness`` default: the third axis's spacing."""
    img = sitk.Cast(sitk.Round(to_sitk(vol)), sitk.sitkInt16)
    direction = np.asarray(img.GetDirection()).reshape(3, 3)
    if np.linalg.det(direction) < 0:
        raise InputError(
            "the volume's voxel axes are left-handed in LPS: flip its third axis first"
        )
    out = Path(directory)
    uid = series_uid or f"1.2.826.0.1.3680043.2.1125.{int(time.time() * 1e6)}.{os.getpid()}"
    orientation = "\\".join(f"{v:.10g}" for v in (*direction[:, 0], *direction[:, 1]))
    spacing = img.GetSpacing()
    thick = float(spacing[2] if slice_thickness is None else slice_thickness)
    shared = {
        "0008|0060": "MR",
        "0008|0008": "DERIVED\\SECONDARY",
        "0020|000d": uid.rsplit(".", 1)[0] + ".1",
        "0020|000e": uid,
        "0020|0037": orientation,
        "0018|0050": f"{thick:.10g}",
        "0018|0088": f"{spacing[2]:.10g}",
        "0008|103e": "irem-bench stack",
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for k in range(img.GetSize()[2]):
        sl = img[:, :, k]
        for tag, value in shared.items():
            sl.SetMetaData(tag, value)
        position = img.TransformIndexToPhysicalPoint((0, 0, k))
        sl.SetMetaData("0020|0032", "\\".join(f"{v:.10g}" for v in position))
        sl.SetMetaData("0020|0013", str(k + 1))
        sl.SetMetaData("0008|0018", f"{uid}.{k + 1}")
        path = out / f"slice{k + 1:04d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(sl)
        files.append(path)
    return files


def sidecar(out: Path) -> dict:
    return json.loads(
        out.with_name(out.name.replace(".nii.gz", ".json")).read_text(encoding="utf-8")
    )


def ellipsoids(n: int = 40, spacing: float = 1.5) -> Volume:
    """Three nested tissue classes (1.0, 0.6, 0.3) in a zero background: N4's ideal case."""
    affine = np.diag([spacing, spacing, spacing, 1.0])
    u = voxel_centres((n, n, n), affine).reshape(n, n, n, 3)
    u = (u - u.reshape(-1, 3).mean(axis=0)) / (spacing * n / 2)

    def inside(centre: tuple[float, float, float], axes: tuple[float, float, float]) -> np.ndarray:
        return (((u - np.asarray(centre)) / np.asarray(axes)) ** 2).sum(axis=-1) < 1

    img = np.where(inside((0, 0, 0), (0.85, 0.9, 0.8)), 1.0, 0.0)
    img = np.where(inside((0.1, 0, 0), (0.45, 0.5, 0.4)), 0.6, img)
    img = np.where(inside((-0.35, 0.2, 0.1), (0.15, 0.2, 0.2)), 0.3, img)
    return Volume(img.astype(np.float32), affine)


def log_bias(vol: Volume) -> np.ndarray:
    """A smooth log bias field over ``vol``'s grid (range about +-0.5)."""
    n = vol.shape[0]
    u = voxel_centres(vol.shape, vol.affine).reshape(*vol.shape, 3)
    u = (u - u.reshape(-1, 3).mean(axis=0)) / (float(vol.spacing[0]) * n / 2)
    return 0.35 * u[..., 0] - 0.25 * u[..., 1] ** 2 + 0.2 * u[..., 2]


def write_stacks(folder: Path, stacks: list[Stack], scale: float = 1.0) -> list[str]:
    paths = []
    for s in stacks:
        p = folder / f"{s.name}.nii.gz"
        save_volume(p, np.round(s.data * scale) if scale != 1.0 else s.data, s.affine)
        paths.append(str(p))
    return paths


# -- automatic masks -----------------------------------------------------------------------------


def test_auto_mask_finds_the_object_fills_holes_and_drops_specks() -> None:
    vol = ellipsoids()
    data = vol.data.copy()
    data[data == 0.3] = 0.0  # a dark hole inside the object
    data[2:4, 2:4, 2:4] = 1.0  # a bright speck in the background
    rng = np.random.default_rng(0)
    noisy = np.abs(data + rng.normal(0, 0.05, data.shape)).astype(np.float32)
    mask, threshold = auto_mask(Volume(noisy, vol.affine), AutoMaskParams(margin_mm=0.0))
    truth = vol.data > 0
    assert 0.05 < threshold < 0.9
    assert not mask[2:4, 2:4, 2:4].any()
    assert mask[vol.data == 0.3].all()
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert dice > 0.97
    # The default margin: every voxel of the object inside, nothing beyond the margin (+1 voxel).
    wide, _ = auto_mask(Volume(noisy, vol.affine))
    margin = int(np.ceil(AutoMaskParams().margin_mm / float(vol.spacing[0]))) + 1
    assert wide[truth].all() and (wide >= mask).all()
    assert not (wide & ~ndimage.binary_dilation(truth, iterations=margin)).any()


def test_auto_mask_fills_dark_tissue_open_to_the_border_but_not_air() -> None:
    """A bright slab with a dark core that reaches the field of view's faces (white matter cut by
    a crop) and air on one side: the core is filled, the air stays out."""
    rng = np.random.default_rng(0)
    data = np.full((32, 32, 32), 0.01, np.float32)
    data[:, :, 8:] = 1.0  # tissue from z = 8 on, air below
    data[:, 10:22, 16:] = 0.3  # a dark core open to three faces
    noisy = np.abs(data + rng.normal(0, 0.01, data.shape)).astype(np.float32)
    tissue = data > 0.1
    mask, threshold = auto_mask(Volume(noisy, np.eye(4)), AutoMaskParams(margin_mm=0.0))
    assert threshold > 0.3  # the core is below the edge's half-height...
    assert mask[tissue].all() and not mask[:, :, :7].any()  # ...and filled; the air is not
    opened, _ = auto_mask(Volume(noisy, np.eye(4)), AutoMaskParams(margin_mm=0.0, air_fraction=np.inf))
    assert not opened[:, 10:22, 20:].any()  # every region outside counted as air: the core left out


def test_auto_mask_works_on_a_thick_slice_stack_and_an_empty_mask_is_refused() -> None:
    vol = ellipsoids(n=24)
    stack = simulate_stack(vol, 2, 4)  # 1.5 x 1.5 x 6 mm voxels: no closing along the thick axis
    mask, _ = auto_mask(stack, AutoMaskParams(closing_mm=3.0, margin_mm=0.0))
    assert mask.shape == stack.shape
    truth = simulate_stack(Volume((vol.data > 0).astype(np.float32), vol.affine), 2, 4).data
    assert mask[truth == 1].all() and not mask[truth == 0].any()
    with pytest.raises(InputError, match="empty"):
        auto_mask(Volume(np.zeros((8, 8, 8), np.float32), np.eye(4)))


def rim_sphere(
    rim: float, interior: float, rim_mm: float, n: int = 32
) -> tuple[Volume, np.ndarray]:
    """A ball of radius 10.5 mm whose outer ``rim_mm`` has intensity ``rim`` and the rest
    ``interior``, in a zero background (1 mm voxels), and the ball's mask."""
    g = np.indices((n, n, n)).astype(np.float64) - (n - 1) / 2 + 0.3
    d = np.sqrt((g**2).sum(axis=0))
    truth = d <= 10.5
    img = np.where(truth, np.where(d > 10.5 - rim_mm, rim, interior), 0.0)
    return Volume(img.astype(np.float32), np.eye(4)), truth


@pytest.mark.parametrize(
    ("rim", "interior", "rim_mm"),
    [(1.0, 0.4, 3.0), (0.2, 1.0, 4.0)],  # bright surface (T2w-like CSF), dark one (T1w-like)
)
def test_auto_mask_edge_is_at_half_height_for_bright_and_dark_surfaces(
    rim: float, interior: float, rim_mm: float
) -> None:
    """In the B-spline of three k = 4 stacks (SNR 40), the automatic mask has the ball's volume
    within 2% whether the surface layer is brighter or darker than the inside; Otsu's threshold
    keeps the bright surface's blur halo or cuts off the dark surface (measured: 1.05 and 0.26
    times the volume)."""
    hr, truth = rim_sphere(rim, interior, rim_mm)
    grid = reference_grid(hr)
    image = Volume(bspline(simulate_stacks(hr, 4, snr=40.0, seed=1), grid), grid.affine)
    mask, threshold = auto_mask(image, AutoMaskParams(margin_mm=0.0))
    assert abs(mask.sum() / truth.sum() - 1) < 0.02
    assert 2 * (mask & truth).sum() / (mask.sum() + truth.sum()) > 0.98
    assert 0.3 * rim < threshold < 0.7 * rim  # about half the surface layer's level
    otsu, _ = otsu_foreground(image)
    assert abs(otsu.sum() / truth.sum() - 1) > 0.04


def test_cli_auto_masks_are_written_and_recorded(tmp_path: Path, stack_files, capsys) -> None:
    stacks, gt = stack_files
    out = tmp_path / "rec.nii.gz"
    argv = [*BSPLINE, *stacks, "-o", str(out), "--reference", gt, "--no-register"]
    code, err = run([*argv, "--mask", "auto", "--stack-masks", "auto"], capsys)
    assert code == 0, err
    target = tmp_path / "rec_desc-auto_mask.nii.gz"
    mask = load_volume(target, mask=True)
    hr = np.asarray(nib.load(out).dataobj)
    assert mask.shape == hr.shape and np.all(hr[mask.data < 0.5] == 0)
    truth, found = load_volume(gt).data > 0, mask.data > 0.5
    # The phantom's bright rim is thinner than a slice, so its blurred edge has no half-height
    # level to find: the mask holds the object and a halo (measured: 100% of the object, 1.4
    # times its volume before the margin, 2.0 times with the 2 mm margin on this 7.6k-voxel object).
    assert (truth & found).sum() > 0.98 * truth.sum() and found.sum() < 2.2 * truth.sum()
    side = sidecar(out)
    steps = {s["step"]: s for s in side["preprocessing"]}
    assert steps["target_mask"]["params"]["method"].startswith("half_height")
    assert steps["target_mask"]["file"] == str(target)
    assert len(steps["stack_masks"]["stacks"]) == 3
    for entry, inp in zip(steps["stack_masks"]["stacks"], side["inputs"], strict=True):
        assert Path(entry["file"]).is_file() and inp["mask"] == entry["file"]
        assert inp["lr_voxels_in_mask"] == entry["voxels"]
    assert side["masks"]["target_auto"] and side["masks"]["stack_masks_auto"]


def test_cli_mask_writes_the_mask_a_reconstruction_would_use(
    tmp_path: Path, stack_files, capsys
) -> None:
    stacks, gt = stack_files
    common = [*stacks, "--reference", gt, "--no-register"]
    rec, alone = tmp_path / "rec.nii.gz", tmp_path / "mask.nii.gz"
    assert run([*BSPLINE, *common, "-o", str(rec), "--mask", "auto"], capsys)[0] == 0
    code, err = run(["-q", "mask", *common, "-o", str(alone)], capsys)
    assert code == 0, err
    used = load_volume(tmp_path / "rec_desc-auto_mask.nii.gz", mask=True).data
    assert np.array_equal(load_volume(alone, mask=True).data, used) and used.any()
    assert sidecar(alone)["preprocessing"][0] | {"file": None} == sidecar(rec)["preprocessing"][0] | {
        "file": None
    }
    assert sidecar(alone)["preprocessing"][0]["file"] == str(alone)
    code, err = run(["-q", "mask", *common, "-o", str(tmp_path / "x.nii.gz"), "--mask", gt], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "give no --mask" in err
    assert not (tmp_path / "x.nii.gz").exists()


@pytest.mark.parametrize("bad", ["empty_mask", "empty_stack_mask"])
def test_cli_empty_masks_leave_nothing_behind(
    tmp_path: Path, stack_files, capsys, bad: str
) -> None:
    stacks, gt = stack_files
    empty = tmp_path / "empty.nii.gz"
    save_volume(empty, np.zeros((32, 32, 32), np.float32), load_volume(gt).affine)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    extra = ["--mask", str(empty)]
    if bad == "empty_stack_mask":
        extra = ["--stack-masks", str(empty), str(empty), str(empty)]
    argv = [*BSPLINE, *stacks, "-o", str(out_dir / "rec.nii.gz"), "--n4", *extra]
    code, err = run(argv, capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "empty" in err
    assert list(out_dir.iterdir()) == []


# -- N4 ------------------------------------------------------------------------------------------


def test_n4_recovers_a_known_bias_field() -> None:
    vol = ellipsoids()
    truth = log_bias(vol)
    biased = Volume((vol.data * np.exp(truth)).astype(np.float32), vol.affine)
    field, info = n4_log_field(biased, None, N4Params())
    inside = vol.data > 0
    assert info["mask"] == "otsu" and info["iterations_done"] > 0
    assert abs(float(field[inside].mean())) < 1e-5  # mean zero in the mask
    # Measured: correlation 0.99, error 0.02 (the field's range is about 1).
    assert np.corrcoef(field[inside], truth[inside])[0, 1] > 0.95


def test_cli_n4_brings_the_reconstruction_closer_to_the_truth(tmp_path: Path, capsys) -> None:
    vol = ellipsoids()
    gt = tmp_path / "gt.nii.gz"
    save_volume(gt, vol.data, vol.affine)
    biased = Volume((vol.data * np.exp(log_bias(vol))).astype(np.float32), vol.affine)
    stacks = write_stacks(tmp_path, simulate_stacks(biased, 4))
    errors = {}
    for tag, extra in {"plain": [], "n4": ["--n4"]}.items():
        out = tmp_path / f"{tag}.nii.gz"
        argv = [*BSPLINE, *stacks, "-o", str(out), "--reference", str(gt), "--no-register"]
        code, err = run([*argv, *extra], capsys)
        assert code == 0, err
        x = np.asarray(nib.load(out).dataobj, dtype=np.float64)
        m = vol.data > 0
        gain = (x[m] * vol.data[m]).sum() / (x[m] ** 2).sum()  # N4 leaves the scale free
        errors[tag] = float(np.sqrt(np.mean((gain * x[m] - vol.data[m]) ** 2)))
    # Measured: 0.198 without, 0.128 with N4 (0.126 from unbiased stacks).
    assert errors["n4"] < 0.8 * errors["plain"]
    side = sidecar(tmp_path / "n4.nii.gz")
    (step,) = [s for s in side["preprocessing"] if s["step"] == "n4"]
    assert step["params"]["shrink_mm"] == N4Params().shrink_mm
    for entry in step["stacks"]:
        field = load_volume(entry["file"], mask=True)
        assert entry["mask"] == "otsu" and np.abs(field.data).max() > 0.1


# -- DICOM series --------------------------------------------------------------------------------


@pytest.fixture()
def moved_stacks(phantom: Volume) -> list[Stack]:
    """The phantom's three stacks, moved and stored in three orientations, integer-valued."""
    stacks = simulate_stacks(phantom, 4)
    out = []
    for i, (s, codes) in enumerate(zip(stacks, REORIENT_CODES, strict=True)):
        s = s if codes is None else reorient(s, codes)
        s = move(s, rigid_matrix((5.0 * i, -3.0, 2.0), (1.5, -2.0, 0.5 * i)))
        out.append(dataclasses.replace(s, data=np.round(s.data * 1000).astype(np.float32)))
    return out


def test_dicom_round_trip_keeps_voxels_and_affine(tmp_path: Path, moved_stacks) -> None:
    for s in moved_stacks:
        folder = tmp_path / s.name
        folder.mkdir()
        write_series(s, folder)
        vol, thickness = read_series(folder)
        assert vol.shape == s.shape
        np.testing.assert_array_equal(vol.data, s.data)
        np.testing.assert_allclose(vol.affine, s.affine, atol=1e-5)
        assert thickness == pytest.approx(float(s.spacing[2]))
        stack = read_stack(str(folder))
        assert stack.name == s.name and stack.thickness is None


def test_dicom_slice_thickness_becomes_the_stack_thickness(tmp_path: Path, phantom: Volume) -> None:
    axial = simulate_stack(phantom, 2, 4)  # thick along the third axis: the DICOM slice axis
    write_series(Volume(np.round(axial.data * 100), axial.affine), tmp_path, slice_thickness=3.0)
    stack = load_dicom_stack(tmp_path)
    assert stack.thickness == 3.0 and stack.slice_thickness == 3.0
    assert psf_widths(stack, "box")[2] == 3.0  # SRR's slice model follows it


def test_cli_reads_dicom_series_like_nifti(tmp_path: Path, moved_stacks, capsys) -> None:
    nifti = write_stacks(tmp_path, moved_stacks)
    series = []
    for s in moved_stacks:
        folder = tmp_path / f"dcm-{s.name}"
        folder.mkdir()
        write_series(s, folder)
        series.append(str(folder))
    outs = {}
    for tag, paths in {"nifti": nifti, "dicom": series}.items():
        out = tmp_path / f"{tag}.nii.gz"
        argv = [*BSPLINE, *paths, "-o", str(out), "--spacing", "2", "--no-register"]
        code, err = run(argv, capsys)
        assert code == 0, err
        outs[tag] = np.asarray(nib.load(out).dataobj)
        assert sidecar(out)["inputs"][1]["path"] == paths[1]
    np.testing.assert_allclose(outs["dicom"], outs["nifti"], atol=1e-3 * outs["nifti"].max())


def strip_element(path: Path, group: int, element: int) -> None:
    """Remove one element from a DICOM file written by GDCM (implicit VR little endian)."""
    data = path.read_bytes()
    at = data.find(struct.pack("<HH", group, element), 132)
    assert at > 0
    (length,) = struct.unpack("<I", data[at + 4 : at + 8])
    path.write_bytes(data[:at] + data[at + 8 + length :])


@pytest.mark.parametrize("bad", ["two_series", "no_dicom", "no_orientation"])
def test_cli_bad_dicom_directories(
    tmp_path: Path, moved_stacks, stack_files, capsys, bad: str
) -> None:
    folder = tmp_path / "series"
    folder.mkdir()
    if bad == "two_series":
        other = tmp_path / "other"
        other.mkdir()
        write_series(moved_stacks[0], folder, series_uid="1.2.3.4.1")
        for f in write_series(moved_stacks[1], other, series_uid="1.2.3.4.2"):
            f.rename(folder / f"b-{f.name}")
        expected = "2 DICOM series"
    elif bad == "no_dicom":
        (folder / "notes.txt").write_text("not an image\n", encoding="utf-8")
        expected = "no DICOM series"
    else:
        write_series(moved_stacks[2], folder)
        for f in folder.glob("*.dcm"):
            strip_element(f, 0x0020, 0x0037)
        expected = "Image Orientation"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    stacks, _ = stack_files
    code, err = run([*BSPLINE, str(folder), *stacks[1:], "-o", str(out_dir / "r.nii.gz")], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert list(out_dir.iterdir()) == []


# -- slice thickness and packages ----------------------------------------------------------------


def test_packages_are_interleaved_stacks_with_the_slice_thickness(phantom: Volume) -> None:
    stack = simulate_stack(phantom, 1, 4)  # 32 x 8 x 32, thick along y
    stack.mask = np.ones(stack.shape, dtype=bool)
    stack.mask[:, 3] = False
    packages = split_packages(stack, 3)
    assert [p.shape[1] for p in packages] == [3, 3, 2]
    world = voxel_centres(stack.shape, stack.affine).reshape(*stack.shape, 3)
    for i, p in enumerate(packages):
        assert p.name == f"{stack.name}_pkg-{i}" and p.thick_axis == 1
        assert p.slice_thickness == stack.slice_thickness == 4.0
        np.testing.assert_allclose(p.spacing[1], 12.0)
        np.testing.assert_array_equal(p.data, stack.data[:, i::3])
        np.testing.assert_array_equal(p.mask, stack.mask[:, i::3])
        mine = voxel_centres(p.shape, p.affine).reshape(*p.shape, 3)
        np.testing.assert_allclose(mine, world[:, i::3], atol=1e-9)
        # every slice model sees the original slices: SRR's PSF and the INR's profile points
        assert psf_widths(p, "box")[1] == 4.0
    assert split_packages(stack, 1) == [stack]
    with pytest.raises(InputError, match="--packages 9"):
        split_packages(stack, 9)


def test_every_slice_model_follows_the_slice_thickness(phantom: Volume) -> None:
    """The simulator's stacks are as thick as their spacing; SRR's PSF and the INR's profile points
    follow a given thickness (the B-spline records it: tests/test_thickness_mask.py)."""
    stacks = simulate_stacks(phantom, 4)
    assert [s.slice_thickness for s in stacks] == [4.0] * 3
    assert [psf_widths(s, "box")[s.thick_axis] for s in stacks] == [4.0] * 3
    t = TrainConfig(profile_points=1, profile_spacing_mm=1.0)
    assert slice_profile_points(t, [s.slice_thickness for s in stacks]) == 4
    gapped = [dataclasses.replace(s, thickness=2.0) for s in stacks]
    assert slice_profile_points(t, [s.slice_thickness for s in gapped]) == 2
    assert [psf_widths(s, "gaussian")[s.thick_axis] for s in gapped] == pytest.approx(
        [2.0 / (2 * np.sqrt(2 * np.log(2)))] * 3
    )


def test_cli_packages_register_a_package_that_moved(tmp_path: Path, capsys) -> None:
    """The coronal stack's second package was acquired after the subject moved (5 deg, 3 mm):
    registering each package on its own brings SRR much closer to the truth."""
    hr = blob_phantom(n=40, spacing=1.5, seed=3)
    motion = rigid_matrix((4.0, 0.0, 3.0), (2.0, -2.0, 1.0))
    to_source = np.linalg.inv(hr.affine) @ np.linalg.inv(motion) @ hr.affine
    moved = ndimage.affine_transform(hr.data, to_source[:3, :3], to_source[:3, 3], order=3)
    stacks = simulate_stacks(hr, 4)
    stacks[1].data[:, 1::2] = simulate_stack(Volume(moved, hr.affine), 1, 4).data[:, 1::2]
    paths = write_stacks(tmp_path, stacks)
    gt = tmp_path / "gt.nii.gz"
    save_volume(gt, hr.data, hr.affine)
    psnr = {}
    for tag, extra in {"stacks": [], "packages": ["--packages", "2"]}.items():
        out = tmp_path / f"{tag}.nii.gz"
        argv = ["-q", "baseline", "srr", *paths, "-o", str(out), "--reference", str(gt)]
        argv += ["--psf", "box", "--regulariser", "tk1", "--alpha", "0.003", *extra]
        code, err = run(argv, capsys)
        assert code == 0, err
        x = np.asarray(nib.load(out).dataobj, dtype=np.float64)
        psnr[tag] = 10 * np.log10(1.0 / np.mean((x - hr.data) ** 2))
    # Measured: 41.8 dB without packages, 51.3 dB with.
    assert psnr["packages"] > psnr["stacks"] + 3.0
    side = sidecar(tmp_path / "packages.nii.gz")
    assert [(i["name"], i["package"]) for i in side["inputs"][2:4]] == [
        ("coronal_pkg-0", 0),
        ("coronal_pkg-1", 1),
    ]
    assert len(side["inputs"]) == 6 and len(side["transform_files"]) == 6
    assert all(i["slice_thickness_mm"] == pytest.approx(6.0) for i in side["inputs"])
    (step,) = [s for s in side["preprocessing"] if s["step"] == "packages"]
    assert step["packages"] == 2


def test_cli_packages_need_registration(tmp_path: Path, stack_files, capsys) -> None:
    stacks, _ = stack_files
    out = tmp_path / "r.nii.gz"
    code, err = run([*BSPLINE, *stacks, "-o", str(out), "--packages", "2", "--no-register"], capsys)
    assert code == 2 and "--no-register" in err and not out.exists()


# -- memory --------------------------------------------------------------------------------------


def test_memory_estimate_is_printed_and_recorded(tmp_path: Path, stack_files, capsys) -> None:
    stacks, gt = stack_files
    out = tmp_path / "r.nii.gz"
    argv = ["-v", "baseline", "srr", *stacks, "-o", str(out), "--reference", gt, "--no-register"]
    code, err = run([*argv, "--iterations", "2", "--psf", "box"], capsys)
    assert code == 0, err
    assert "estimated peak memory of srr-tk1" in err
    mem = sidecar(out)["memory"]
    assert mem["estimate_bytes"] == mem["baseline_bytes"] + mem["working_bytes"]
    assert mem["working_bytes"] > 32**3 * 44 and mem["available_bytes"] > 0


@pytest.mark.parametrize("limit", ["max_memory", "available"])
def test_memory_over_the_limit_stops_before_any_work(
    tmp_path: Path, stack_files, capsys, monkeypatch, limit: str
) -> None:
    stacks, gt = stack_files
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv = [*BSPLINE, *stacks, "-o", str(out_dir / "r.nii.gz"), "--mask", "auto", "--n4"]
    if limit == "max_memory":
        argv += ["--max-memory", "0.01"]
    else:
        monkeypatch.setattr("irem.training.memory.available_memory", lambda: (10**6, "test"))
    code, err = run(argv, capsys)
    assert code == 2 and err.count("\n") == 1
    assert ("--max-memory 0.01 GB" if limit == "max_memory" else "0.00 GB available") in err
    assert list(out_dir.iterdir()) == []


def test_available_memory_without_psutil_reads_proc(monkeypatch) -> None:
    if not Path("/proc/meminfo").is_file():
        pytest.skip("no /proc/meminfo")
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil -> ImportError
    available, source = available_memory()
    assert source == "/proc/meminfo" and available > 0
    est = MemoryEstimate("x", 1, 2, {"a": 2})
    assert check_memory(est)["estimate_bytes"] == 3


# -- SRR defaults for noisy scans ----------------------------------------------------------------


def test_srr_cli_defaults_are_the_tuned_weights(tmp_path: Path, stack_files, capsys) -> None:
    stacks, gt = stack_files
    for regulariser, alpha in (("tk1", 0.1), ("tv", 0.01)):
        out = tmp_path / f"{regulariser}.nii.gz"
        argv = ["-q", "baseline", "srr", *stacks, "-o", str(out), "--reference", gt]
        argv += ["--no-register", "--psf", "box", "--regulariser", regulariser]
        code, err = run([*argv, "--iterations", "2"], capsys)
        assert code == 0, err
        assert sidecar(out)["srr"]["alpha"] == alpha
    with pytest.raises(SystemExit):
        main(["baseline", "srr", "--help"])
    assert "results/tuning/README.md" in capsys.readouterr().out.replace("\n", " ")
