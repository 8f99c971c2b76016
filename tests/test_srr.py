"""SRR: exact adjoints of the slice-acquisition model, convergence, and gains over B-spline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from baselines.bspline import bspline
from baselines.operators import (
    MultiStackOperator,
    StackOperator,
    gradient,
    gradient_adjoint,
)
from baselines.srr import srr
from irem.acquisition.grid import Grid, reference_grid
from irem.acquisition.simulate import simulate_stack, simulate_stacks
from irem.data.phantom import shepp_logan
from irem.errors import InputError
from irem.volume import Stack, Volume, apply_affine, voxel_centres

from .conftest import rigid


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny problems: one thread avoids oversubscribing the shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


TRANSFORMS = (
    rigid((0.3, -0.2, 0.1), (0.7, -1.2, 0.4)),
    rigid((-0.15, 0.25, -0.3), (-0.5, 0.3, 0.9)),
    rigid((0.05, 0.1, 0.4), (0.2, 0.6, -0.8)),
)


def blobs(points: np.ndarray) -> np.ndarray:
    """A smooth analytic phantom (soft-edged ellipsoids), evaluated at normalised-space mm."""
    out = np.zeros(len(points))
    for value, centre, radii in (
        (1.0, (0, 0, 0), (9.0, 11.0, 8.0)),
        (-0.5, (2, 1, 0), (4.0, 6.0, 3.5)),
        (0.4, (-4, -3, 2), (2.5, 2.0, 3.0)),
        (0.3, (3, -5, -3), (1.8, 2.2, 1.6)),
    ):
        r = np.sqrt((((points - centre) / radii) ** 2).sum(axis=1))
        out += value / (1.0 + np.exp((r - 1.0) * 8.0))
    return out


def oblique_stacks(hr_affine: np.ndarray, shape: tuple[int, int, int], k: int) -> list[Stack]:
    """Box-profile stacks of ``blobs`` acquired in rotated frames: stack ``a`` is thick along axis ``a``
    of an HR grid moved into normalised space by ``TRANSFORMS[a]``."""
    stacks = []
    for axis, transform in enumerate(TRANSFORMS):
        pts = voxel_centres(shape, transform @ hr_affine)
        vol = Volume(data=blobs(pts).reshape(shape).astype(np.float32), affine=hr_affine)
        stack = simulate_stack(vol, axis, k)
        stack.transform = transform
        stacks.append(stack)
    return stacks


def psnr(gt: np.ndarray, x: np.ndarray) -> float:
    return peak_signal_noise_ratio(gt, x, data_range=float(gt.max() - gt.min()))


# --- the forward model ---------------------------------------------------------------------------


@pytest.mark.parametrize("psf", ["gaussian", "box"])
@pytest.mark.parametrize("oblique", [False, True])
def test_dot_product(psf: str, oblique: bool) -> None:
    """<A x, y> = <x, A^T y> for random x, y (float64), aligned and oblique, flipped stacks."""
    hr = shepp_logan((20, 22, 18))
    grid = reference_grid(hr)
    rng = np.random.default_rng(3)
    for i, stack in enumerate(simulate_stacks(hr, 3)):
        if oblique:
            flip = np.eye(4)
            flip[1, 1], flip[1, 3] = -1.0, stack.shape[1] - 1  # same field of view, axis 1 reversed
            stack = Stack(data=stack.data, affine=stack.affine @ flip, transform=TRANSFORMS[i])
        op = StackOperator(stack, grid, psf, dtype=torch.float64)
        assert (op.perm is None) == oblique
        x = torch.as_tensor(rng.normal(size=grid.shape))
        y = torch.as_tensor(rng.normal(size=stack.shape))
        lhs = float(torch.sum(op.forward(x) * y))
        rhs = float(torch.sum(x * op.adjoint(y)))
        assert abs(lhs - rhs) <= 1e-9 * abs(lhs)  # measured <= 1.2e-15


@pytest.mark.parametrize("psf", ["gaussian", "box"])
def test_banded_and_dense_axis_maps_agree(psf: str) -> None:
    """The strided-taps form of every 1-D PSF matrix equals the dense product, both ways; a
    non-integer LR/HR spacing ratio falls back to the dense form (and stays adjoint)."""
    hr = shepp_logan((20, 22, 18))
    grid = reference_grid(hr)
    stacks = simulate_stacks(hr, 3)
    scaled = Stack(
        data=np.zeros((13, 15, 6), np.float32), affine=hr.affine @ np.diag([1.5, 1.5, 3.0, 1.0])
    )
    rng = np.random.default_rng(5)
    dense_seen = 0
    for stack in [*stacks, scaled]:
        op = StackOperator(stack, grid, psf, dtype=torch.float64)
        for a, m in enumerate(op.maps):
            shape = [4, 5, 6]
            shape[a] = m.n
            u = torch.as_tensor(rng.normal(size=shape))
            ref = torch.movedim(torch.tensordot(m.dense, u, dims=([1], [a])), 0, a)
            torch.testing.assert_close(m.apply(u, a), ref, rtol=1e-12, atol=1e-12)
            shape[a] = m.m
            y = torch.as_tensor(rng.normal(size=shape))
            ref = torch.movedim(torch.tensordot(m.dense.T, y, dims=([1], [a])), 0, a)
            torch.testing.assert_close(m.apply(y, a, transpose=True), ref, rtol=1e-12, atol=1e-12)
            dense_seen += m.taps is None
        x = torch.as_tensor(rng.normal(size=grid.shape))
        y = torch.as_tensor(rng.normal(size=stack.shape))
        lhs = float(torch.sum(op.forward(x) * y))
        assert abs(lhs - float(torch.sum(x * op.adjoint(y)))) <= 1e-9 * abs(lhs)
    assert dense_seen >= 2  # the 1.5-mm axes of the scaled stack


def test_gradient_adjoint() -> None:
    rng = np.random.default_rng(4)
    x = torch.as_tensor(rng.normal(size=(5, 6, 7)))
    g = torch.as_tensor(rng.normal(size=(3, 5, 6, 7)))
    lhs, rhs = float(torch.sum(gradient(x) * g)), float(torch.sum(x * gradient_adjoint(g)))
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)


def test_box_model_is_the_simulator() -> None:
    """Known values: the box PSF applied to the HR volume gives exactly the simulated stacks."""
    hr = shepp_logan((20, 24, 16))
    stacks = simulate_stacks(hr, 4)
    op = MultiStackOperator(stacks, reference_grid(hr), "box", dtype=torch.float64)
    for pred, stack in zip(
        op.forward(torch.as_tensor(hr.data, dtype=torch.float64)), stacks, strict=True
    ):
        np.testing.assert_allclose(pred.numpy(), stack.data, atol=1e-6)


@pytest.mark.parametrize("psf", ["gaussian", "box"])
def test_nearly_aligned_oblique_path_matches_aligned_path(psf: str) -> None:
    """A 1e-5 rad rotation takes the interpolating path; it must agree with the aligned one."""
    hr = shepp_logan((20, 24, 16))
    grid = reference_grid(hr)
    x = torch.as_tensor(hr.data, dtype=torch.float64)
    for stack in simulate_stacks(hr, 4):
        moved = Stack(
            data=stack.data, affine=stack.affine, transform=rigid((0, 0, 1e-5), (0, 0, 0))
        )
        a = StackOperator(stack, grid, psf, dtype=torch.float64)
        b = StackOperator(moved, grid, psf, dtype=torch.float64)
        assert a.perm is not None and b.perm is None
        # Differences come from the rotation itself moving sharp edges: measured <= 6.1e-4.
        assert float((a.forward(x) - b.forward(x)).abs().max()) < 2e-3


# --- the solver ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phantom_k4() -> tuple[Volume, list[Stack], Grid, np.ndarray]:
    hr = shepp_logan((32, 32, 32))
    stacks = simulate_stacks(hr, 4)
    grid = reference_grid(hr)
    return hr, stacks, grid, bspline(stacks, grid)


def test_residual_decreases_and_vanishes_without_regularisation(phantom_k4) -> None:
    hr, stacks, grid, init = phantom_k4
    _, info = srr(
        stacks, grid, alpha=0.0, psf="box", iterations=100, tol=1e-7, init=init, progress=False
    )
    res = np.asarray(info["residual"])
    assert len(res) == info["iterations"] + 1
    assert np.all(np.diff(res) < 0)
    assert np.all(np.diff(info["objective"]) < 0)
    # Measured: 0.30 (B-spline) -> 8.0e-8 after 4 CG steps (float32, noise-free data, the exact
    # forward model: the normal operator of three orthogonal box averages has few eigenvalues).
    assert res[0] > 0.1
    assert info["relative_residual"] < 1e-5


@pytest.mark.parametrize(
    ("psf", "margin"),
    # Measured gains over B-spline (18.85 dB): box +2.29 dB, gaussian +1.34 dB (default alphas).
    [("box", 1.8), ("gaussian", 1.0)],
)
def test_srr_beats_bspline(phantom_k4, psf: str, margin: float) -> None:
    hr, stacks, grid, init = phantom_k4
    out, info = srr(stacks, grid, psf=psf, init=init, progress=False)
    assert out.shape == grid.shape and out.dtype == np.float32
    assert psnr(hr.data, out) > psnr(hr.data, init) + margin
    assert info["alpha"] > 0 and info["time"] > 0


def test_oblique_stacks_srr_beats_bspline() -> None:
    """Stacks acquired in three rotated frames; the grid is axis-aligned in normalised space."""
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = -11.5
    shape = (24, 24, 24)
    stacks = oblique_stacks(affine, shape, 4)
    grid = Grid(shape=shape, affine=affine)
    gt = blobs(grid.points()).reshape(shape)
    init = bspline(stacks, grid)
    out, info = srr(stacks, grid, psf="box", init=init, progress=False)
    assert np.all(np.diff(info["objective"]) < 0)
    assert info["residual"][-1] < 0.5 * info["residual"][0]  # measured 0.074 -> 0.011
    # Measured, away from the grid's edges: B-spline 31.8 dB, SRR 36.9 dB.
    inner = (slice(4, -4),) * 3
    assert psnr(gt[inner], out[inner]) > psnr(gt[inner], init[inner]) + 3.5


def test_tv_decreases_its_objective(phantom_k4) -> None:
    hr, stacks, grid, init = phantom_k4
    out, info = srr(
        stacks, grid, regulariser="tv", psf="box", iterations=8, init=init, progress=False
    )
    obj = info["objective"]
    assert info["iterations"] == 8 and len(obj) == 9
    # ADMM need not decrease it at every step; measured 29.1 -> 6.52, PSNR 18.85 -> 22.95 dB.
    assert obj[-1] < 0.3 * obj[0]
    assert psnr(hr.data, out) > psnr(hr.data, init) + 3.0


def test_deterministic(phantom_k4) -> None:
    _, stacks, grid, init = phantom_k4
    a, _ = srr(stacks, grid, iterations=5, init=init, progress=False)
    b, _ = srr(stacks, grid, iterations=5, init=init, progress=False)
    np.testing.assert_array_equal(a, b)


def test_default_init_is_bspline(phantom_k4) -> None:
    _, stacks, grid, init = phantom_k4
    a, _ = srr(stacks, grid, iterations=2, progress=False)
    b, _ = srr(stacks, grid, iterations=2, init=init, progress=False)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"regulariser": "tk2"},
        {"psf": "sinc"},
        {"alpha": -1e-3},
        {"alpha": float("nan")},
        {"iterations": 0},
        {"init": np.zeros((2, 2, 2), np.float32)},
    ],
)
def test_bad_options(kwargs: dict) -> None:
    hr = shepp_logan((8, 8, 8))
    stacks = simulate_stacks(hr, 2)
    with pytest.raises(InputError):
        srr(stacks, reference_grid(hr), progress=False, **kwargs)


def test_points_helper_consistent() -> None:
    """The oblique test phantom's stacks sit where their transforms say (sanity of the fixture)."""
    affine = np.eye(4)
    affine[:3, 3] = -3.5
    stacks = oblique_stacks(affine, (8, 8, 8), 2)
    for stack, transform in zip(stacks, TRANSFORMS, strict=True):
        centre = apply_affine(stack.to_normalised, (np.asarray(stack.shape) - 1) / 2.0)
        np.testing.assert_allclose(centre, transform[:3, 3], atol=1e-9)
