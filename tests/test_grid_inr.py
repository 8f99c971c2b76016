import pytest
import torch

from irem.grid_inr import GridINR


def _grid_inr() -> GridINR:
    return GridINR((20.0, 12.0, 9.0), (1.0, 0.6, 0.45), levels=3, features=2, finest_mm=2.0, seed=3)


def test_smoothness_gradient_equals_autograd() -> None:
    """The in-place gradient of the grid penalty is the gradient autograd gives for it."""
    a, b = _grid_inr(), _grid_inr()
    with torch.no_grad():
        for ga, gb in zip(a.grids, b.grids, strict=True):
            ga.copy_(torch.randn_like(ga))
            gb.copy_(ga)
    p = torch.rand(64, 3) * 2 - 1
    a(p).square().mean().backward()
    a.add_smoothness_grad(0.3)
    (b(p).square().mean() + 0.3 * b.smoothness()).backward()
    for ga, gb in zip(a.grids, b.grids, strict=True):
        torch.testing.assert_close(ga.grad, gb.grad, rtol=1e-5, atol=1e-7)


def test_smoothness_of_constant_grids_and_of_one_raised_node() -> None:
    m = _grid_inr()
    with torch.no_grad():
        for g in m.grids:
            g.fill_(0.7)
    assert m.smoothness().item() == 0.0
    m.add_smoothness_grad(1.0)  # no gradient yet: created, and zero for constant grids
    assert all(torch.count_nonzero(g.grad) == 0 for g in m.grids)
    with torch.no_grad():
        m.grids[0][0, 0, 1, 1, 1] += 1.0  # one node raised by 1: 6 neighbours differ by 1
    d = m.grids[0].shape
    diffs = [(d[2] - 1) * d[3] * d[4], d[2] * (d[3] - 1) * d[4], d[2] * d[3] * (d[4] - 1)]
    # per axis: two differences of 1, in the mean over all features' differences
    expected = sum(2 / (d[1] * n) for n in diffs)
    assert m.smoothness().item() == pytest.approx(expected, rel=1e-6)
