import numpy as np
import pytest

from irem.simulate import (
    REORIENT_CODES,
    orientation_name,
    reorient,
    simulate_stack,
    simulate_stacks,
)
from irem.volume import Volume, apply_affine, voxel_centres

from .conftest import oblique_affine

AFFINES = {
    "identity": np.diag([1.0, 1.0, 1.0, 1.0]),
    "flipped": np.array([[-0.9, 0, 0, 40.0], [0, -1.1, 0, 30.0], [0, 0, 1.3, -20.0], [0, 0, 0, 1]]),
    "oblique": oblique_affine((0.8, 1.0, 1.2), (20.0, -15.0, 30.0)),
}


@pytest.mark.parametrize("name", list(AFFINES))
@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("k", [3, 4])
def test_lr_centre_is_mean_of_averaged_hr_centres(name: str, axis: int, k: int) -> None:
    rng = np.random.default_rng(axis)
    hr = Volume(rng.random((13, 10, 11)).astype(np.float32), AFFINES[name])
    lr = simulate_stack(hr, axis, k, "box")
    assert lr.shape[axis] == hr.shape[axis] // k
    for i in range(lr.shape[axis]):
        lr_idx = [1, 2, 3]
        lr_idx[axis] = i
        hr_idx = np.array([lr_idx] * k, dtype=float)
        hr_idx[:, axis] = np.arange(i * k, (i + 1) * k)
        # world position of the LR voxel = mean world position of the HR voxels it averaged
        np.testing.assert_allclose(
            apply_affine(lr.affine, np.array(lr_idx, float)),
            apply_affine(hr.affine, hr_idx).mean(axis=0),
            atol=1e-9,
        )
        # and its value is their direct average
        vals = [hr.data[tuple(int(v) for v in row)] for row in hr_idx]
        assert lr.data[tuple(lr_idx)] == pytest.approx(np.mean(vals), rel=1e-5)


def test_lr_spacing_and_orientation_names() -> None:
    hr = Volume(
        np.random.default_rng(0).random((16, 16, 16)).astype(np.float32), AFFINES["flipped"]
    )
    stacks = simulate_stacks(hr, 4)
    assert [s.name for s in stacks] == ["sagittal", "coronal", "axial"]
    for axis, s in enumerate(stacks):
        assert s.thick_axis == axis
        assert s.spacing[axis] == pytest.approx(4 * hr.spacing[axis])
    # a volume stored with permuted axes: voxel axis 0 runs along world z -> axial
    perm = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])
    assert orientation_name(perm, 0) == "axial"


def test_gaussian_profile_is_centred_like_box_and_normalised() -> None:
    hr = Volume(
        np.random.default_rng(1).random((12, 24, 10)).astype(np.float32), AFFINES["oblique"]
    )
    box = simulate_stack(hr, 1, 4, "box")
    gauss = simulate_stack(hr, 1, 4, "gaussian")
    np.testing.assert_allclose(box.affine, gauss.affine)
    const = Volume(np.full((12, 24, 10), 2.0, np.float32) + 0 * hr.data, hr.affine)
    np.testing.assert_allclose(simulate_stack(const, 1, 4, "gaussian").data, 2.0, rtol=1e-6)


def test_none_profile_takes_a_slice_at_its_own_position() -> None:
    hr = Volume(np.random.default_rng(2).random((12, 8, 8)).astype(np.float32), AFFINES["oblique"])
    lr = simulate_stack(hr, 0, 4, "none")
    np.testing.assert_array_equal(lr.data[2], hr.data[2 * 4 + 1])
    np.testing.assert_allclose(
        apply_affine(lr.affine, [2, 0, 0]), apply_affine(hr.affine, [9, 0, 0])
    )


def test_rician_noise_is_seeded_and_at_the_asked_snr() -> None:
    hr = Volume(np.ones((40, 40, 40), np.float32), np.eye(4))
    hr.data[0] = 0  # not constant
    a = simulate_stacks(hr, 4, snr=20, seed=3)
    b = simulate_stacks(hr, 4, snr=20, seed=3)
    c = simulate_stacks(hr, 4, snr=20, seed=4)
    np.testing.assert_array_equal(a[1].data, b[1].data)
    assert not np.array_equal(a[1].data, c[1].data)
    # at high SNR the Rician magnitude is close to Gaussian: std of the bright part ~ 1/20
    assert np.std(a[2].data[5:, 5:, 2:]) == pytest.approx(1 / 20, rel=0.1)


def test_reorient_keeps_world_content() -> None:
    hr = Volume(
        np.random.default_rng(3).random((16, 20, 12)).astype(np.float32), AFFINES["identity"]
    )
    for stack, codes in zip(simulate_stacks(hr, 4), REORIENT_CODES, strict=True):
        if codes is None:
            continue
        r = reorient(stack, codes)
        a, b = voxel_centres(stack.shape, stack.affine), voxel_centres(r.shape, r.affine)
        ia, ib = np.lexsort(a.T), np.lexsort(b.T)
        np.testing.assert_allclose(a[ia], b[ib], atol=1e-9)
        np.testing.assert_array_equal(stack.data.ravel()[ia], r.data.ravel()[ib])
