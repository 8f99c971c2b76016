import math

import pytest
import torch

from irem.grid_inr import GridINR
from irem.optim import LazyAdam, grid_optimizer

BETAS, LR, EPS = (0.9, 0.95), 0.01, 1e-8


def _sparse(rows: list[int], values: torch.Tensor, n: int) -> torch.Tensor:
    shape = (n, values.shape[1])
    return torch.sparse_coo_tensor(torch.tensor([rows]), values, shape, check_invariants=True)


def _dense(rows: list[int], values: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(n, values.shape[1]).index_add_(0, torch.tensor(rows), values)


def test_dense_gradients_follow_torch_adam() -> None:
    gen = torch.Generator().manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(5, 3, generator=gen)), torch.nn.Parameter(torch.randn(4))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    lazy = LazyAdam([{"params": a[:1], "lr": 0.1}, {"params": a[1:]}], lr=LR, betas=BETAS, eps=EPS)
    ref = torch.optim.Adam([{"params": b[:1], "lr": 0.1}, {"params": b[1:]}], lr=LR, betas=BETAS)
    for _ in range(4):
        grads = [torch.randn(p.shape, generator=gen) for p in a]
        for p, q, g in zip(a, b, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        lazy.step()
        ref.step()
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_rows_in_every_step_follow_dense_adam_and_others_stay() -> None:
    """Rows touched at every step move exactly as dense Adam moves them; untouched rows keep
    their values (dense Adam leaves them too: their moments are zero)."""
    gen = torch.Generator().manual_seed(1)
    start = torch.randn(10, 2, generator=gen)
    a, b = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    lazy, ref = LazyAdam([a], lr=LR, betas=BETAS), torch.optim.Adam([b], lr=LR, betas=BETAS)
    touched = [1, 4, 7]
    for _ in range(3):
        values = torch.randn(3, 2, generator=gen)
        a.grad, b.grad = _sparse(touched, values, 10), _dense(touched, values, 10)
        lazy.step()
        ref.step()
    torch.testing.assert_close(a[touched], b[touched], rtol=1e-6, atol=1e-7)
    others = [i for i in range(10) if i not in touched]
    assert torch.equal(a[others], start[others])
    assert not torch.equal(a[touched], start[touched])


def test_row_left_out_of_a_step_skips_that_steps_decay() -> None:
    """The one difference from dense Adam: a row missing from step 2 keeps its moments and value
    there, and its bias corrections still count step 2."""
    g1, g3 = torch.tensor([[0.5, -2.0]]), torch.tensor([[1.5, 0.25]])
    a = torch.nn.Parameter(torch.zeros(3, 2))
    b = torch.nn.Parameter(torch.zeros(3, 2))
    lazy, ref = LazyAdam([a], lr=LR, betas=BETAS), torch.optim.Adam([b], lr=LR, betas=BETAS)
    for step, rows, g in [(1, [2], g1), (2, [0], g1), (3, [2], g3)]:
        a.grad, b.grad = _sparse(rows, g, 3), _dense(rows, g, 3)
        lazy.step()
        ref.step()
        if step == 1:
            after_1 = a[2].detach().clone()
        if step == 2:
            assert torch.equal(a[2], after_1)  # row 2 left alone by the lazy step 2
    (b1, b2) = BETAS
    m1, v1 = (1 - b1) * g1, (1 - b2) * g1**2
    x1 = -LR / (1 - b1) * m1 / (v1.sqrt() / math.sqrt(1 - b2) + EPS)
    m3, v3 = b1 * m1 + (1 - b1) * g3, b2 * v1 + (1 - b2) * g3**2
    x3 = x1 - LR / (1 - b1**3) * m3 / (v3.sqrt() / math.sqrt(1 - b2**3) + EPS)
    torch.testing.assert_close(a[2:3].detach(), x3, rtol=1e-6, atol=1e-8)
    assert not torch.allclose(a[2], b[2], rtol=1e-3)  # dense Adam moved it at step 2


def test_duplicate_rows_are_summed() -> None:
    a = torch.nn.Parameter(torch.zeros(4, 2))
    b = torch.nn.Parameter(torch.zeros(4, 2))
    g = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    a.grad = _sparse([2, 2], g, 4)  # not coalesced
    b.grad = _sparse([2], g.sum(0, keepdim=True), 4)
    LazyAdam([a], lr=LR, betas=BETAS).step()
    LazyAdam([b], lr=LR, betas=BETAS).step()
    assert torch.equal(a, b)


def test_state_dict_resumes_identically() -> None:
    gen = torch.Generator().manual_seed(2)
    grads = [_sparse([0, 3], torch.randn(2, 2, generator=gen), 5) for _ in range(4)]
    a = torch.nn.Parameter(torch.ones(5, 2))
    opt = LazyAdam([a], lr=LR, betas=BETAS)
    for g in grads:
        a.grad = g
        opt.step()
    b = torch.nn.Parameter(torch.ones(5, 2))
    first = LazyAdam([b], lr=LR, betas=BETAS)
    for g in grads[:2]:
        b.grad = g
        first.step()
    second = LazyAdam([b], lr=LR, betas=BETAS)
    second.load_state_dict(first.state_dict())
    for g in grads[2:]:
        b.grad = g
        second.step()
    assert torch.equal(a, b)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="lr"):
        LazyAdam([torch.nn.Parameter(torch.zeros(2))], lr=0.0)
    p = torch.nn.Parameter(torch.zeros(3, 3))
    p.grad = torch.eye(3).to_sparse(2)  # two sparse dimensions
    with pytest.raises(ValueError, match="one sparse dimension"):
        LazyAdam([p]).step()
    q = torch.nn.Parameter(torch.zeros(3, 2))
    opt = LazyAdam([q])
    q.grad = torch.ones(3, 2)
    opt.step()
    q.grad = torch.ones(3, 2).to_sparse(1)
    with pytest.raises(ValueError, match="changed layout"):
        opt.step()
    with pytest.raises(TypeError, match="GridINR"):
        grid_optimizer(torch.nn.Linear(2, 2), 0.1, 0.1, BETAS, EPS)


def _model(update: str) -> GridINR:
    return GridINR((20.0, 12.0, 9.0), (1.0, 0.6, 0.45), 3, 2, 2.0, 8, 1, 4, update, 0)


def test_one_sparse_training_step_matches_dense_on_touched_nodes() -> None:
    """Dense grid_sample + fused Adam and sparse gathers + LazyAdam, from the same start: after
    one step with the prior the touched nodes and the MLP agree; untouched nodes moved only in
    the dense model (by the prior)."""
    dense, sparse = _model("dense"), _model("sparse")
    opts = [grid_optimizer(m, 0.03, 0.003, BETAS, EPS) for m in (dense, sparse)]
    assert isinstance(opts[0], torch.optim.Adam) and isinstance(opts[1], LazyAdam)
    assert [g["lr"] for g in opts[1].param_groups] == [0.03, 0.003]
    before = [sparse.grid_volume(level).detach().clone() for level in range(3)]
    p = torch.rand(4, 3) * 0.8 - 0.4
    for model, opt in zip((dense, sparse), opts, strict=True):
        opt.zero_grad(set_to_none=True)
        (model(p) - 1.0).square().mean().backward()
        model.add_smoothness_grad(0.1)
        opt.step()
    for a, b in zip(dense.mlp_parameters(), sparse.mlp_parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    for level in range(3):
        rows = sparse.grids[level].grad.coalesce().indices()[0]
        mask = torch.zeros(sparse.grids[level].shape[0], dtype=torch.bool)
        mask[rows] = True
        d = dense.grid_volume(level).detach().reshape(2, -1).t()
        s = sparse.grids[level].detach()
        torch.testing.assert_close(s[mask], d[mask], rtol=1e-5, atol=1e-7)
        assert torch.equal(s[~mask], before[level].reshape(2, -1).t()[~mask])
        assert not torch.equal(d[~mask], before[level].reshape(2, -1).t()[~mask])
