"""Spatial normalisation: RAS <-> SimpleITK conversion, rigid registration, transform files."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from irem.acquisition.registration import (
    FLIP,
    MAX_SAMPLES,
    from_sitk,
    normalise_stacks,
    register_rigid,
    rotation_angle_deg,
    save_transform,
    to_sitk,
)
from irem.acquisition.simulate import simulate_stacks
from irem.errors import InputError
from irem.volume import Stack, Volume, apply_affine, voxel_centres

N_HR = 64
SPACING_HR = 1.5  # mm: a 96 mm field of view centred on the world origin
HALF_FOV = SPACING_HR * (N_HR - 1) / 2
FOV_CORNERS = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) * HALF_FOV

# Tolerances of the acceptance test (issue): 0.5 degree and 0.5 mm.
MAX_ROTATION_ERROR_DEG = 0.5
MAX_TRANSLATION_ERROR_MM = 0.5


def rigid_matrix(
    rotation_deg: tuple[float, float, float],
    translation_mm: tuple[float, float, float],
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """A 4x4 rigid map in RAS mm: ``R (p - centre) + centre + translation``, ``R = Rz Ry Rx``."""
    ax, ay, az = np.deg2rad(np.asarray(rotation_deg, dtype=np.float64))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    rot = rz @ ry @ rx
    c = np.asarray(centre, dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = c - rot @ c + np.asarray(translation_mm, dtype=np.float64)
    return m


def read_transform(path) -> np.ndarray:
    """The RAS moving -> fixed matrix of an affine ITK transform file (LPS, fixed -> moving)."""
    tx = sitk.ReadTransform(str(path))
    images = np.array([tx.TransformPoint(p.tolist()) for p in np.vstack([np.zeros(3), np.eye(3)])])
    itk = np.eye(4)
    itk[:3, 3] = images[0]
    itk[:3, :3] = (images[1:] - images[0]).T
    return np.linalg.inv(FLIP @ itk @ FLIP)


def blob_phantom(
    n: int = N_HR, spacing: float = SPACING_HR, count: int = 40, seed: int = 0
) -> Volume:
    """Smooth, asymmetric HR phantom: a sum of random Gaussian blobs centred on the world origin.

    The Shepp-Logan phantom is nearly symmetric and made of aligned ellipsoids, which leaves some
    rotations almost unconstrained (errors of about 1 degree); random blobs register reliably.
    """
    rng = np.random.default_rng(seed)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -spacing * (n - 1) / 2
    points = voxel_centres((n, n, n), affine)
    half = spacing * (n - 1) / 2
    img = np.zeros(len(points))
    for _ in range(count):
        centre = rng.uniform(-0.6, 0.6, 3) * half
        sigma = rng.uniform(3.0, 8.0)
        weight = rng.uniform(0.3, 1.0)
        img += weight * np.exp(-0.5 * ((points - centre) ** 2).sum(axis=1) / sigma**2)
    img = img.reshape(n, n, n)
    return Volume(data=(img / img.max()).astype(np.float32), affine=affine)


def restore(stack: Stack, axcodes: tuple[str, str, str]) -> Stack:
    """The same stack stored in another voxel order (flips and permutations, no resampling)."""
    current = nib.orientations.io_orientation(stack.affine)
    change = nib.orientations.ornt_transform(current, nib.orientations.axcodes2ornt(axcodes))
    data = nib.orientations.apply_orientation(stack.data, change)
    affine = stack.affine @ nib.orientations.inv_ornt_aff(change, stack.data.shape)
    return Stack(data=np.ascontiguousarray(data), affine=affine, name=stack.name)


def moved(stack: Stack, motion: np.ndarray) -> Stack:
    """The stack after a rigid motion of the subject: its data now sit at ``motion @ affine``."""
    return Stack(data=stack.data, affine=motion @ stack.affine, name=stack.name)


def motion_5deg_3mm(axis: tuple[float, float, float] = (1.0, 2.0, 3.0)) -> np.ndarray:
    """A rotation of exactly 5 degrees about an oblique axis through the origin, then 3 mm."""
    from scipy.spatial.transform import Rotation

    unit = np.asarray(axis) / np.linalg.norm(axis)
    m = np.eye(4)
    m[:3, :3] = Rotation.from_rotvec(np.deg2rad(5.0) * unit).as_matrix()
    m[:3, 3] = 3.0 * np.array([1.0, -1.0, 1.0]) / np.sqrt(3.0)
    return m


def registration_errors(estimate: np.ndarray, motion: np.ndarray) -> tuple[float, float]:
    """Rotation error (degrees) and translation error (mm) of an estimate of ``inv(motion)``.

    The translation error is the largest displacement of the residual map ``estimate @ motion``
    over the 8 corners of the phantom's field of view (stricter than the displacement at the
    centre, since it also contains the rotation error: 0.1 degree moves a corner by 0.15 mm).
    """
    residual = estimate @ motion
    displacement = apply_affine(residual, FOV_CORNERS) - FOV_CORNERS
    return rotation_angle_deg(residual), float(np.linalg.norm(displacement, axis=1).max())


@pytest.fixture(scope="module")
def lr_stacks() -> list[Stack]:
    """Axial, sagittal and coronal 4x thick-slice stacks (64x64x16 etc., 1.5 x 1.5 x 6 mm)."""
    stacks = simulate_stacks(blob_phantom(), k=4)
    return [stacks[2], stacks[0], stacks[1]]


# --- SimpleITK conversion ----------------------------------------------------------------------


def _oblique_affine() -> np.ndarray:
    rot = rigid_matrix((20.0, -35.0, 50.0), (0.0, 0.0, 0.0))
    affine = rot @ np.diag([0.9, 1.3, 4.0, 1.0])
    affine[:3, 3] = [-40.0, 12.5, 7.0]
    return affine


AFFINES = {
    "ras": np.diag([1.5, 1.5, 6.0, 1.0])
    + np.array([[0, 0, 0, -30], [0, 0, 0, 10], [0, 0, 0, 5], [0] * 4]),
    "lps_stored": np.array(
        [[-1.2, 0, 0, 40.0], [0, -1.2, 0, 35.0], [0, 0, 3.0, -20.0], [0, 0, 0, 1]]
    ),
    "permuted": np.array(
        [[0, 0, -2.0, 30.0], [1.1, 0, 0, -25.0], [0, -0.9, 0, 18.0], [0, 0, 0, 1]]
    ),
    "oblique": _oblique_affine(),
    "oblique_left_handed": _oblique_affine() @ np.diag([1.0, -1.0, 1.0, 1.0]),
}


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_sitk_round_trip(name: str) -> None:
    affine = AFFINES[name]
    data = np.random.default_rng(1).random((5, 6, 7)).astype(np.float32)
    img = to_sitk(Volume(data=data, affine=affine))
    assert img.GetSize() == (5, 6, 7)
    # Pixel (i, j, k) is data[i, j, k] and sits at the same place: RAS world = FLIP @ LPS world.
    for index in [(0, 0, 0), (4, 0, 6), (2, 5, 3)]:
        assert img.GetPixel(index) == data[index]
        lps = np.asarray(img.TransformIndexToPhysicalPoint(index))
        np.testing.assert_allclose(FLIP[:3, :3] @ lps, apply_affine(affine, index), atol=1e-9)
    back = from_sitk(img)
    np.testing.assert_array_equal(back.data, data)
    assert back.data.dtype == data.dtype
    np.testing.assert_allclose(back.affine, affine, rtol=0, atol=1e-12)


def test_sitk_matches_nifti_reader(tmp_path) -> None:
    """SimpleITK's own NIfTI reader agrees with to_sitk for an oblique, left-handed affine."""
    affine = AFFINES["oblique_left_handed"]
    data = np.random.default_rng(2).random((4, 5, 6)).astype(np.float32)
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, tmp_path / "x.nii.gz")
    read = sitk.ReadImage(str(tmp_path / "x.nii.gz"))
    ours = to_sitk(Volume(data=data, affine=affine))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(ours))
    np.testing.assert_allclose(read.GetOrigin(), ours.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(read.GetSpacing(), ours.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(read.GetDirection(), ours.GetDirection(), atol=1e-5)


def test_sitk_rejects_shear_and_non_3d() -> None:
    sheared = np.eye(4)
    sheared[0, 1] = 0.5
    with pytest.raises(InputError, match="shear"):
        to_sitk(Volume(data=np.zeros((3, 3, 3), np.float32), affine=sheared))
    with pytest.raises(InputError, match="3-D"):
        from_sitk(sitk.Image(4, 4, sitk.sitkFloat32))


# --- helpers -----------------------------------------------------------------------------------


def test_rigid_matrix_and_angle() -> None:
    centre = (10.0, -5.0, 3.0)
    m = rigid_matrix((5.0, 0.0, 0.0), (1.0, 2.0, 3.0), centre=centre)
    assert rotation_angle_deg(m) == pytest.approx(5.0)
    np.testing.assert_allclose(apply_affine(m, centre), np.add(centre, (1.0, 2.0, 3.0)))
    np.testing.assert_allclose(m[:3, :3].T @ m[:3, :3], np.eye(3), atol=1e-12)
    assert rotation_angle_deg(motion_5deg_3mm()) == pytest.approx(5.0)
    assert np.linalg.norm(motion_5deg_3mm()[:3, 3]) == pytest.approx(3.0)


def test_restore_keeps_world_content(lr_stacks: list[Stack]) -> None:
    """Re-storing a stack in another orientation moves no voxel in world space."""
    stack = lr_stacks[1]
    other = restore(stack, ("S", "L", "A"))
    assert nib.aff2axcodes(other.affine) == ("S", "L", "A")
    assert other.shape != stack.shape
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in other.shape], indexing="ij"), -1)
    idx = idx.reshape(-1, 3)
    src = apply_affine(np.linalg.inv(stack.affine) @ other.affine, idx)
    src = np.rint(src).astype(int)
    np.testing.assert_array_equal(other.data[tuple(idx.T)], stack.data[tuple(src.T)])


# --- registration ------------------------------------------------------------------------------


def test_recovers_known_motion_across_orientations(lr_stacks: list[Stack]) -> None:
    """Acceptance test: 5 degrees and 3 mm are recovered to 0.5 degree and 0.5 mm.

    The fixed stack is axial stored LPS (x and y flipped), the moving one sagittal stored with
    permuted and flipped axes (S, L, A) and then moved, so that its affine is oblique.
    """
    fixed = restore(lr_stacks[0], ("L", "P", "S"))
    motion = motion_5deg_3mm()
    moving = moved(restore(lr_stacks[1], ("S", "L", "A")), motion)
    estimate = register_rigid(fixed, moving, seed=0)
    rot_err, trans_err = registration_errors(estimate, motion)
    assert rot_err < MAX_ROTATION_ERROR_DEG, rot_err
    assert trans_err < MAX_TRANSLATION_ERROR_MM, trans_err
    # The result is a proper rigid map.
    np.testing.assert_allclose(estimate[:3, :3].T @ estimate[:3, :3], np.eye(3), atol=1e-9)
    np.testing.assert_array_equal(estimate[3], [0, 0, 0, 1])


@pytest.mark.slow  # three registrations: 3-7 s depending on the machine's load
def test_registration_is_deterministic(lr_stacks: list[Stack]) -> None:
    fixed, moving = lr_stacks[0], moved(lr_stacks[1], motion_5deg_3mm())
    assert fixed.data.size > MAX_SAMPLES  # the finest level samples randomly
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    first = register_rigid(fixed, moving, seed=7)
    second = register_rigid(fixed, moving, seed=7)
    assert np.array_equal(first, second)
    assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == threads
    # The seed does drive the sampling (0 is not SimpleITK's "wall clock" seed here).
    assert not np.array_equal(first, register_rigid(fixed, moving, seed=0))


def test_normalise_stacks_registers_all_to_fixed(lr_stacks: list[Stack]) -> None:
    """Three stacks, two of them moved; the fixed one is index 1 and is stored LPS."""
    motions = [motion_5deg_3mm((0.0, 1.0, 0.0)), np.eye(4), motion_5deg_3mm((3.0, -1.0, 2.0))]
    stacks = [
        moved(lr_stacks[0], motions[0]),
        restore(lr_stacks[1], ("L", "P", "S")),
        moved(restore(lr_stacks[2], ("A", "I", "R")), motions[2]),
    ]
    out = normalise_stacks(stacks, fixed_index=1, seed=0)
    assert [s.name for s in out] == [s.name for s in stacks]
    np.testing.assert_array_equal(out[1].transform, np.eye(4))
    for i in (0, 2):
        rot_err, trans_err = registration_errors(out[i].transform, motions[i])
        assert rot_err < MAX_ROTATION_ERROR_DEG, (i, rot_err)
        assert trans_err < MAX_TRANSLATION_ERROR_MM, (i, trans_err)
        # Voxels reach normalised space through transform @ affine: back at their true places.
        np.testing.assert_allclose(
            out[i].to_normalised, np.linalg.inv(motions[i]) @ stacks[i].affine, atol=0.5
        )


def test_registration_without_overlap_is_an_input_error(lr_stacks: list[Stack]) -> None:
    far = moved(lr_stacks[1], rigid_matrix((0.0, 0.0, 0.0), (500.0, 0.0, 0.0)))
    with pytest.raises(InputError, match="registration of stack"):
        register_rigid(lr_stacks[0], far, init="world")
    with pytest.raises(InputError, match="init"):
        register_rigid(lr_stacks[0], far, init="centre")


def test_normalise_without_registration_and_bad_index(lr_stacks: list[Stack]) -> None:
    stacks = [moved(s, motion_5deg_3mm()) if i else s for i, s in enumerate(lr_stacks)]
    stacks[2].transform = rigid_matrix((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    out = normalise_stacks(stacks, fixed_index=2, register=False)
    assert len(out) == 3
    for src, dst in zip(stacks, out, strict=True):
        np.testing.assert_array_equal(dst.transform, np.eye(4))
        np.testing.assert_array_equal(dst.data, src.data)
        np.testing.assert_array_equal(dst.affine, src.affine)
        assert dst.name == src.name
        assert dst is not src and dst.data is not src.data
    out[0].data[0, 0, 0] += 1.0
    assert out[0].data[0, 0, 0] != stacks[0].data[0, 0, 0]

    for bad in (3, -1, 1.0, True, None):
        with pytest.raises(InputError, match="fixed stack index"):
            normalise_stacks(stacks, fixed_index=bad, register=False)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="no stacks"):
        normalise_stacks([], register=False)


# --- transform files ---------------------------------------------------------------------------


def test_transform_file_round_trip(tmp_path) -> None:
    matrix = rigid_matrix((4.0, -7.0, 12.0), (3.5, -2.0, 11.0), centre=(20.0, -10.0, 5.0))
    path = tmp_path / "moving_to_fixed.tfm"
    save_transform(path, matrix)
    assert os.listdir(tmp_path) == ["moving_to_fixed.tfm"]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert "Euler3DTransform_double_3_3" in path.read_text(encoding="utf-8")
    np.testing.assert_allclose(read_transform(path), matrix, rtol=0, atol=1e-10)

    # ITK's convention: the file maps fixed-space LPS points to moving-space LPS points.
    itk = sitk.ReadTransform(str(path))
    p_fixed = np.array([12.0, -30.0, 44.0])
    p_moving = apply_affine(np.linalg.inv(matrix), p_fixed)
    lps = FLIP[:3, :3] @ p_fixed
    np.testing.assert_allclose(itk.TransformPoint(lps.tolist()), FLIP[:3, :3] @ p_moving, atol=1e-9)

    # A non-rigid affine is stored as an AffineTransform and also survives; overwriting works.
    affine = matrix @ np.diag([1.1, 0.9, 1.0, 1.0])
    save_transform(path, affine)
    assert "AffineTransform_double_3_3" in path.read_text(encoding="utf-8")
    np.testing.assert_allclose(read_transform(path), affine, rtol=0, atol=1e-10)


def test_registration_result_resamples_with_itk(tmp_path, lr_stacks: list[Stack]) -> None:
    """The saved file is usable as is by an ITK resampler: moving onto fixed lands in place."""
    fixed = lr_stacks[0]
    motion = rigid_matrix((0.0, 0.0, 8.0), (4.0, 0.0, 0.0))
    moving = moved(fixed, motion)  # the same data, moved: a perfect match exists
    save_transform(tmp_path / "t.tfm", np.linalg.inv(motion))
    tx = sitk.ReadTransform(str(tmp_path / "t.tfm"))
    out = sitk.Resample(to_sitk(moving), to_sitk(fixed), tx, sitk.sitkLinear, 0.0)
    got = from_sitk(out).data
    inner = (slice(8, -8), slice(8, -8), slice(2, -2))
    np.testing.assert_allclose(got[inner], fixed.data[inner], atol=1e-4)


def test_transform_file_errors(tmp_path) -> None:
    with pytest.raises(InputError, match="must end in"):
        save_transform(tmp_path / "t.json", np.eye(4))
    with pytest.raises(InputError, match="does not exist"):
        save_transform(tmp_path / "missing" / "t.tfm", np.eye(4))
    with pytest.raises(InputError, match="4x4"):
        save_transform(tmp_path / "t.tfm", np.eye(3))
    assert os.listdir(tmp_path) == []
