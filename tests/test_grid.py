import numpy as np
import pytest

from irem.acquisition.grid import check_overlap, isotropic_grid, reference_grid, to_stack_voxels
from irem.acquisition.simulate import simulate_stacks
from irem.errors import InputError
from irem.volume import Stack, Volume, apply_affine

from .conftest import oblique_affine


def test_isotropic_grid_covers_the_fixed_stack() -> None:
    hr = Volume(
        np.random.default_rng(0).random((24, 20, 16)).astype(np.float32),
        oblique_affine((1.0, 1.0, 1.0), (10, 20, -5)),
    )
    fixed = simulate_stacks(hr, 4)[2]  # axial, 4 mm slices
    g = isotropic_grid(fixed, 1.0)
    assert g.shape == (24, 20, 16)
    np.testing.assert_allclose(g.affine, hr.affine, atol=1e-9)  # the HR grid is recovered exactly
    g2 = isotropic_grid(fixed, 2.0)
    assert g2.shape == (12, 10, 8)
    # the same centre
    np.testing.assert_allclose(
        apply_affine(g2.affine, (np.array(g2.shape) - 1) / 2),
        apply_affine(hr.affine, (np.array(hr.shape) - 1) / 2),
        atol=1e-9,
    )


def test_reference_grid_and_voxel_mapping() -> None:
    ref = Volume(np.zeros((5, 6, 7), np.float32), oblique_affine((0.7, 0.7, 2.0), (0, 30, 0)))
    g = reference_grid(ref)
    assert g.shape == (5, 6, 7) and np.array_equal(g.affine, ref.affine)
    s = Stack(data=ref.data, affine=ref.affine)
    np.testing.assert_allclose(
        to_stack_voxels(s, g.points()).reshape(5, 6, 7, 3)[2, 3, 4], [2, 3, 4], atol=1e-9
    )


def test_overlap_is_refused_when_stacks_are_apart() -> None:
    hr = Volume(np.random.default_rng(1).random((16, 16, 16)).astype(np.float32), np.eye(4))
    stacks = simulate_stacks(hr, 4)
    check_overlap(stacks)
    far = np.eye(4)
    far[:3, 3] = [500, 0, 0]
    stacks[1] = Stack(data=stacks[1].data, affine=far @ stacks[1].affine, name="coronal")
    with pytest.raises(InputError, match="does not overlap"):
        check_overlap(stacks)
