"""Multi-stack B-spline interpolation: geometry (oblique, flipped, permuted stacks) and coverage."""

from __future__ import annotations

import numpy as np
import pytest

import baselines.bspline as bs
from baselines.bspline import bspline
from irem.acquisition.grid import Grid, inside, reference_grid, to_stack_voxels
from irem.acquisition.simulate import simulate_stacks
from irem.data.phantom import shepp_logan
from irem.errors import InputError
from irem.volume import Stack, voxel_centres

from .conftest import rigid


def ramp(points: np.ndarray) -> np.ndarray:
    """A linear function of normalised-space position (mm)."""
    return 1.0 + points @ np.array([0.011, -0.007, 0.013])


def oblique_stack(thick: int, angles: tuple[float, float, float], flip: bool) -> Stack:
    """A thick-slice stack of 32x32 voxels of 1.5 mm in-plane and 20 slices 3 mm thick along ``thick``,
    rotated/shifted into normalised space, its voxel axis 0 optionally flipped; data = ramp."""
    shape = [32, 32, 32]
    shape[thick] = 20
    spacing = np.full(3, 1.5)
    spacing[thick] = 3.0
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -spacing * (np.asarray(shape) - 1) / 2.0
    if flip:
        f = np.eye(4)
        f[0, 0], f[0, 3] = -1.0, shape[0] - 1
        affine = affine @ f
    transform = rigid(angles, (0.8, -0.5, 0.3))
    stack = Stack(data=np.zeros(shape, np.float32), affine=affine, transform=transform)
    stack.data = (
        ramp(voxel_centres(tuple(shape), stack.to_normalised)).reshape(shape).astype(np.float32)
    )
    return stack


def test_coinciding_grid_gives_the_data_back() -> None:
    rng = np.random.default_rng(0)
    data = rng.random((9, 7, 5)).astype(np.float32)
    affine = np.array([[0, -2.0, 0, 5], [1.5, 0, 0, -3], [0, 0, -1.0, 2], [0, 0, 0, 1]])
    transform = rigid((0.2, -0.4, 0.1), (1.0, 2.0, -3.0))
    stack = Stack(data=data, affine=affine, transform=transform)
    grid = Grid(shape=(9, 7, 5), affine=transform @ affine)
    np.testing.assert_allclose(bspline([stack], grid), data, atol=1e-5)


def test_flipped_and_permuted_stack_lands_on_the_right_voxels() -> None:
    rng = np.random.default_rng(1)
    data = rng.random((4, 5, 6)).astype(np.float32)
    grid = Grid(shape=(6, 4, 5), affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    # Stack voxel (i, j, k) sits on grid voxel (5 - k, i, 4 - j).
    index_map = np.array([[0, 0, -1, 5], [1, 0, 0, 0], [0, -1, 0, 4], [0, 0, 0, 1.0]])
    stack = Stack(data=data, affine=grid.affine @ index_map)
    expected = np.transpose(data, (2, 0, 1))[::-1, :, ::-1]
    np.testing.assert_allclose(bspline([stack], grid), expected, atol=1e-5)


@pytest.mark.parametrize("general", [False, True])
def test_linear_ramp_reproduced_on_oblique_grid(general: bool, monkeypatch) -> None:
    """Cubic B-splines reproduce linear functions: oblique, flipped stacks, oblique target grid."""
    if general:  # force the 3-D map_coordinates path even where the separable one applies
        monkeypatch.setattr(bs, "aligned_permutation", lambda m: None)
    stacks = [
        oblique_stack(0, (0.3, -0.2, 0.1), flip=True),
        oblique_stack(1, (-0.1, 0.25, -0.3), flip=False),
        oblique_stack(2, (0.0, 0.0, 0.0), flip=True),
    ]
    affine = rigid((0.5, 0.2, -0.7), (0.0, 0.0, 0.0)) @ np.diag([1.3, 1.3, 1.3, 1.0])
    affine[:3, 3] = -affine[:3, :3] @ np.full(3, 5.5)  # 12^3 grid centred on the origin
    grid = Grid(shape=(12, 12, 12), affine=affine)
    out = bspline(stacks, grid)
    expected = ramp(grid.points()).reshape(grid.shape)
    # Every grid point is >= 5.6 voxels inside every stack, where the boundary condition's influence
    # (decaying as 0.27^distance) is small: measured max error 1.8e-6 (mirror boundary).
    np.testing.assert_allclose(out, expected, atol=5e-6)


def test_separable_path_matches_general_path(monkeypatch) -> None:
    hr = shepp_logan((20, 18, 16))
    stacks = simulate_stacks(hr, 3)
    grid = reference_grid(hr)
    fast = bspline(stacks, grid)
    monkeypatch.setattr(bs, "aligned_permutation", lambda m: None)
    slow = bspline(stacks, grid)
    np.testing.assert_allclose(fast, slow, atol=1e-6)  # measured 1.5e-8


def test_coverage_edge_to_edge_and_average() -> None:
    """Two constant stacks overlapping on part of a 1-D row of grid points."""
    grid = Grid(shape=(12, 1, 1), affine=np.eye(4))
    a = Stack(data=np.full((4, 1, 1), 1.0, np.float32), affine=np.eye(4))  # covers x in [-0.5, 3.5]
    shift = np.eye(4)
    shift[0, 3] = 3.0
    b = Stack(data=np.full((2, 1, 1), 3.0, np.float32), affine=shift @ np.diag([2.0, 1, 1, 1]))
    # b: voxel centres at x = 3 and 5, field of view [2, 6].
    out = bspline([a, b], grid)[:, 0, 0]
    np.testing.assert_allclose(out[:2], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[2:4], 2.0, atol=1e-6)
    np.testing.assert_allclose(out[4:7], 3.0, atol=1e-6)
    np.testing.assert_array_equal(out[7:], 0.0)


def test_coverage_matches_irem_grid_inside() -> None:
    stack = oblique_stack(2, (0.4, 0.1, -0.2), flip=True)
    grid = Grid(shape=(20, 20, 20), affine=np.diag([2.5, 2.5, 2.5, 1.0]) @ _centre(20))
    out = bspline([stack], grid)
    covered = inside(stack, to_stack_voxels(stack, grid.points())).reshape(grid.shape)
    assert covered.any() and (~covered).any()
    assert np.all(out[~covered] == 0.0)
    assert np.all(out[covered] > 0.0)  # the ramp is positive over the stack


def _centre(n: int) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = -(n - 1) / 2.0
    return m


def test_bad_order() -> None:
    stack = oblique_stack(2, (0.0, 0.0, 0.0), flip=False)
    with pytest.raises(InputError):
        bspline([stack], Grid(shape=(2, 2, 2), affine=np.eye(4)), order=7)
    with pytest.raises(InputError):
        bspline([], Grid(shape=(2, 2, 2), affine=np.eye(4)))
