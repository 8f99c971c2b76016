import math

import pytest
import torch

from irem.grid_inr import (
    HASH_PRIMES,
    HEADS,
    CellPrior,
    GridINR,
    cell_prior,
    cell_prior_grad,
    cell_shares,
    corner_lookup,
    edge_penalty,
    edge_penalty_grad,
    gather_rows,
    hashed_lookup,
    local_smoothness_grad,
    put_rows,
)

BOX, EXTENT = (20.0, 12.0, 9.0), (1.0, 0.6, 0.45)


def _grid_inr(update: str = "dense", dense_max_nodes: int = 0) -> GridINR:
    return GridINR(
        BOX, EXTENT, levels=3, features=2, finest_mm=2.0, seed=3, update=update,
        dense_max_nodes=dense_max_nodes,
    )  # fmt: skip


def _random_pair(dense_max_nodes: int = 0) -> tuple[GridINR, GridINR]:
    """A dense-mode and a sparse-mode model holding the same random grid values."""
    a, b = _grid_inr("dense"), _grid_inr("sparse", dense_max_nodes)
    with torch.no_grad():
        for level, ga in enumerate(a.grids):
            ga.copy_(torch.randn_like(ga))
            b.grid_volume(level).copy_(ga)
    return a, b


def _points(n: int = 300) -> torch.Tensor:
    """Random points over 1.2 times the box (some outside: border clamping), plus its 8 corners
    (exactly on the first and last nodes: align_corners)."""
    ext = torch.tensor(EXTENT)
    corners = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) * ext
    gen = torch.Generator().manual_seed(0)
    return torch.cat([(torch.rand(n, 3, generator=gen) * 2.4 - 1.2) * ext, corners.float()])


def _dense_grad(model: GridINR, level: int) -> torch.Tensor:
    """A level's gradient as a (1, F, D, H, W) dense tensor."""
    g = model.grids[level].grad
    if not model.sparse_levels[level]:
        return g
    return g.to_dense().t().reshape(model.grid_volume(level).shape)


def test_sparse_mode_starts_from_the_same_values() -> None:
    a, b = _grid_inr("dense"), _grid_inr("sparse")
    for level in range(3):
        assert torch.equal(a.grid_volume(level), b.grid_volume(level))


@pytest.mark.parametrize(
    ("dense_max_nodes", "sparse_levels"), [(0, [True] * 3), (100, [False, False, True])]
)
def test_gather_interpolation_equals_grid_sample(
    dense_max_nodes: int, sparse_levels: list[bool]
) -> None:
    """Value and grid gradient of the corner-gather path are those of grid_sample; only levels
    of more than ``dense_max_nodes`` nodes (36, 96, 462 here) take it."""
    a, b = _random_pair(dense_max_nodes)
    assert b.sparse_levels == sparse_levels
    p = _points()
    ya, yb = a(p), b(p)
    torch.testing.assert_close(yb, ya, rtol=1e-5, atol=1e-6)
    w = torch.randn(len(p))
    (w * ya).sum().backward()
    (w * yb).sum().backward()
    for level, ga in enumerate(a.grids):
        assert b.grids[level].grad.is_sparse == sparse_levels[level]
        torch.testing.assert_close(_dense_grad(b, level), ga.grad, rtol=1e-5, atol=1e-6)


def test_training_order_does_not_change_outputs() -> None:
    """Points are sorted spatially in training mode; outputs come back in input order."""
    _, b = _random_pair()
    p = _points()
    y_train = b.train()(p)
    with torch.no_grad():
        y_eval = b.eval()(p)
    torch.testing.assert_close(y_train.detach(), y_eval, rtol=0, atol=1e-6)


def test_corner_lookup_on_a_node_and_between_nodes() -> None:
    shape = (3, 4, 5)  # D, H, W
    # x at node 2 of 5, y halfway between nodes 1 and 2 of 4, z on the last node (2 of 3)
    u = torch.tensor([[0.0, -1 / 3 + 1 / 3, 1.0]])
    rows, weights = corner_lookup(u, shape)
    assert rows.shape == weights.shape == (8, 1)
    got = {int(r): float(w) for r, w in zip(rows[:, 0], weights[:, 0], strict=True) if w > 0}
    expected = {(2 * 4 + 1) * 5 + 2: 0.5, (2 * 4 + 2) * 5 + 2: 0.5}
    assert got.keys() == expected.keys()
    assert all(got[k] == pytest.approx(v) for k, v in expected.items())
    assert weights.sum().item() == pytest.approx(1.0)


def test_sparse_gradient_holds_the_touched_rows_only() -> None:
    _, b = _random_pair()
    p = _points(5)[:5]
    b(p).sum().backward()
    for level, shape in enumerate(b.shapes):
        rows, _ = corner_lookup(p / b.extent, shape)
        grad = b.grids[level].grad.coalesce()
        assert set(grad.indices()[0].tolist()) == set(rows.reshape(-1).tolist())


def test_smoothness_gradient_equals_autograd() -> None:
    """The in-place gradient of the grid penalty is the gradient autograd gives for it (dense
    gradients: the whole grid)."""
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


def _assert_touched_rows_match(sparse: torch.Tensor, dense: torch.Tensor) -> None:
    """A sparse level's gradient holds some rows, not all, and equals the dense level's gradient
    (``(1, F, D, H, W)``) on them."""
    grad = sparse.grad.coalesce()
    rows = grad.indices()[0]
    assert 0 < len(rows) < sparse.shape[0]
    expected = dense.grad.reshape(dense.shape[1], -1).t()[rows]
    torch.testing.assert_close(grad.values(), expected, rtol=1e-5, atol=1e-7)


def test_local_smoothness_gradient_equals_autograd_on_touched_rows() -> None:
    """With sparse gradients the prior's gradient is added on the touched rows, exactly the
    full penalty's gradient there; the gradient stays sparse (no other row)."""
    a, b = _random_pair()
    p = _points(3)[:3]
    b(p).square().mean().backward()
    b.add_smoothness_grad(0.3)
    (a(p).square().mean() + 0.3 * a.smoothness()).backward()
    for level, ga in enumerate(a.grids):
        _assert_touched_rows_match(b.grids[level], ga)


def test_local_smoothness_grad_of_one_raised_node() -> None:
    """A node raised by 1 inside a constant level: the gradient there is 2 w / M_axis per
    neighbour, each neighbour gets minus its share."""
    shape = (4, 5, 6)
    table = torch.zeros(4 * 5 * 6, 1)
    centre = (1 * 5 + 2) * 6 + 3
    table[centre] = 1.0
    rows = torch.tensor([centre, centre + 1, centre + 6, centre + 30])
    g = local_smoothness_grad(table, rows, shape, weight=1.0)
    m = [3 * 5 * 6, 4 * 4 * 6, 4 * 5 * 5]  # differences along z, y, x
    per_axis = [2.0 / n for n in m]
    assert g[0, 0].item() == pytest.approx(2 * sum(per_axis))
    assert g[1, 0].item() == pytest.approx(-per_axis[2])  # x neighbour
    assert g[2, 0].item() == pytest.approx(-per_axis[1])  # y neighbour
    assert g[3, 0].item() == pytest.approx(-per_axis[0])  # z neighbour


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


def test_unknown_update_is_refused() -> None:
    with pytest.raises(ValueError, match="update"):
        _grid_inr("lazy")


@pytest.mark.parametrize("kind", ["huber", "tv"])
def test_edge_prior_gradient_equals_autograd(kind: str) -> None:
    """The in-place gradient of an edge-preserving prior is autograd's, with dense gradients and,
    on the touched rows only, with sparse ones; delta is set inside the differences' range so that
    both the quadratic and the linear parts are exercised."""
    a, b = _random_pair()
    p = _points(3)[:3]
    b(p).square().mean().backward()
    b.add_prior_grad(0.3, kind, 0.5)
    (a(p).square().mean() + 0.3 * a.prior(kind, 0.5)).backward()
    c = _grid_inr()
    with torch.no_grad():
        for gc, ga in zip(c.grids, a.grids, strict=True):
            gc.copy_(ga)
    c(p).square().mean().backward()
    c.add_prior_grad(0.3, kind, 0.5)
    for level, ga in enumerate(a.grids):
        torch.testing.assert_close(c.grids[level].grad, ga.grad, rtol=1e-5, atol=1e-7)
        _assert_touched_rows_match(b.grids[level], ga)


def test_edge_penalties_are_quadratic_near_zero_and_linear_on_edges() -> None:
    delta = 0.1
    small, large = torch.tensor([1e-3, -2e-3]), torch.tensor([5.0, -10.0])
    for kind in ("huber", "tv"):
        torch.testing.assert_close(
            edge_penalty(small, kind, delta), small.square(), rtol=1e-3, atol=0
        )
        slope = edge_penalty_grad(large, kind, delta)
        torch.testing.assert_close(slope.abs(), torch.full((2,), 2 * delta), rtol=1e-2, atol=0)
        assert bool((edge_penalty(large, kind, delta) < large.square()).all())
    model = _grid_inr()
    with torch.no_grad():
        for g in model.grids:
            g.copy_(torch.randn_like(g))
    torch.testing.assert_close(model.prior("tk1"), model.smoothness())
    with pytest.raises(ValueError, match="prior"):
        edge_penalty(small, "l3", delta)


@pytest.mark.parametrize("shape", [(50, 2), (50, 2, 2), (50, 3), (50,)])
def test_row_gather_and_put_equal_index_select_and_index_copy(shape) -> None:
    """Rows of 8/16 bytes go through a bit view; others through index_select (same values)."""
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(shape, generator=gen)
    rows = torch.tensor([3, 0, 17, 49, 8], dtype=torch.int32)
    assert torch.equal(gather_rows(table, rows), table.index_select(0, rows.long()))
    values = torch.randn((5, *shape[1:]), generator=gen)
    expected = table.clone().index_copy_(0, rows.long(), values)
    put_rows(table, rows, values)
    assert torch.equal(table, expected)


@pytest.mark.parametrize("head", HEADS)
def test_a_start_image_model_starts_at_the_image_and_its_grids_learn_as_the_head_says(
    head: str,
) -> None:
    """``zero``: exactly the start image, and no gradient reaches the grids (the zeroed output
    layer blocks it); ``cancel``: the start image within 1e-4, and every level gets a gradient."""
    m = _grid_inr()
    base = torch.rand(4, 5, 6, generator=torch.Generator().manual_seed(2))
    m.set_base(base, torch.cat([torch.diag(1 / torch.tensor(EXTENT)), torch.zeros(3, 1)], 1), head)
    p = _points(200)
    with torch.no_grad():
        net = m(p) - m.base_values(p)
    m(p).square().mean().backward()
    grid_grads = [float(g.grad.abs().sum()) for g in m.grids]
    if head == "zero":
        assert torch.equal(net, torch.zeros_like(net))
        assert grid_grads == [0.0] * len(m.grids)
    else:
        assert 0 < float(net.abs().max()) < 1e-4
        assert all(g > 0 for g in grid_grads)
    with pytest.raises(ValueError, match="head"):
        m.set_base(base, torch.zeros(3, 4), "none")


def _hashed(hash_rows: int = 64, dense_max_nodes: int = 100) -> GridINR:
    return GridINR(
        BOX, EXTENT, levels=3, features=2, finest_mm=2.0, seed=3, update="hashed",
        dense_max_nodes=dense_max_nodes, hash_rows=hash_rows,
    )  # fmt: skip


@pytest.mark.parametrize("rows", [64, 50])
def test_hashed_lookup_hashes_the_corner_nodes_with_the_trilinear_weights(rows: int) -> None:
    """Row of corner (x, y, z) = (x * p0 ^ y * p1 ^ z * p2) % rows (a power of two or not);
    weights those of the unhashed lookup."""
    shape = (5, 7, 11)
    u = _points() / torch.tensor(EXTENT)
    plain, weights = corner_lookup(u, shape)
    hashed, hashed_weights, cells = hashed_lookup(u, shape, rows)
    assert torch.equal(hashed_weights, weights)
    assert torch.equal(cells, plain[0])
    d, h, w = shape
    z, y, x = plain // (h * w), plain // w % h, plain % w
    expected = (x * HASH_PRIMES[0] ^ y * HASH_PRIMES[1] ^ z * HASH_PRIMES[2]) % rows
    assert torch.equal(hashed, expected)
    assert int(hashed.max()) < rows


def test_hashed_levels_are_fixed_size_tables_above_dense_max_nodes() -> None:
    model = _hashed(hash_rows=64, dense_max_nodes=100)  # levels of 36, 96, 462 nodes
    assert model.hashed_levels == [False, False, True]
    assert [tuple(g.shape) for g in model.grids][2] == (64, 2)
    assert not any(model.sparse_levels)
    with pytest.raises(ValueError, match="hashed"):
        model.grid_volume(2)
    with pytest.raises(ValueError, match="hash_rows"):
        _hashed(hash_rows=0)


@pytest.mark.parametrize("kind", ["tk1", "huber", "tv"])
def test_cell_prior_gradient_equals_autograd(kind: str) -> None:
    corners = torch.randn(8, 40, 2, requires_grad=True)
    shares = torch.rand(40)
    prior = CellPrior(0.7, kind, 0.5, (4, 5, 6), shares)
    (0.7 * cell_prior(corners, (4, 5, 6), shares, kind, 0.5)).backward()
    torch.testing.assert_close(
        cell_prior_grad(corners.detach(), prior), corners.grad, rtol=1e-5, atol=1e-7
    )
    out = torch.ones(8, 40, 2)  # added to a given gradient, in place
    assert cell_prior_grad(corners.detach(), prior, out=out) is out
    torch.testing.assert_close(out, corners.grad + 1, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("per_cell", [1, 3])
def test_cell_prior_counts_each_cell_once_and_inner_edges_fully(per_cell: int) -> None:
    """A level rising by the same step along x, each cell holding ``per_cell`` points: its
    prior restricted to all cells is the whole level's, except for the x edges on the y and z
    borders, which border fewer than 4 cells: (D - 1)(H - 1) / (D H) of it."""
    d, h, w = shape = (4, 5, 6)
    step = 0.3
    x = torch.arange(w, dtype=torch.float32) * step
    level = x.expand(d, h, w)[None, None].expand(1, 2, d, h, w).contiguous()
    exact = sum(edge_penalty(torch.diff(level, dim=a), "tk1", 0.0).mean() for a in (2, 3, 4))
    centres = torch.stack(torch.meshgrid(
        *(torch.arange(n - 1) + 0.5 for n in (w, h, d)), indexing="ij"), -1).reshape(-1, 3)
    u = (centres / torch.tensor([w - 1, h - 1, d - 1]) * 2 - 1).repeat(per_cell, 1)
    rows, _ = corner_lookup(u, shape)
    corners = level[0].reshape(2, -1).t()[rows.reshape(-1)].view(8, -1, 2)
    got = cell_prior(corners, shape, cell_shares(rows[0]), "tk1", 0.0)
    assert float(got) == pytest.approx(float(exact) * (d - 1) * (h - 1) / (d * h), rel=1e-5)


def test_hashed_backward_adds_the_cell_prior_to_the_data_gradient() -> None:
    """A hashed level's gradient is autograd's of the data term plus weight x cell_prior of the
    corners the batch read (rows shared by several nodes included); dense levels are untouched
    by it. Points outside the box share the border cells (clamping)."""
    a, b = _hashed(hash_rows=50), _hashed(hash_rows=50)
    with torch.no_grad():
        for ga, gb in zip(a.grids, b.grids, strict=True):
            gb.copy_(ga.copy_(torch.rand_like(ga)))
    p, w = _points(), torch.randn(len(_points()))
    a.hash_prior = (0.3, "huber", 0.05)
    (w * a(p)).sum().backward()
    u = p / b.extent
    rows, _, cells = hashed_lookup(u, b.shapes[2], 50)
    corners = b.grids[2][rows.reshape(-1)].view(8, -1, 2)
    shares = cell_shares(cells)
    prior = cell_prior(corners, b.shapes[2], shares, "huber", 0.05)
    ((w * b(p)).sum() + 0.3 * prior).backward()
    assert len(torch.unique(rows)) < rows.numel()  # rows repeat: collisions are exercised
    for ga, gb in zip(a.grids, b.grids, strict=True):
        assert not ga.grad.is_sparse
        torch.testing.assert_close(ga.grad, gb.grad, rtol=1e-5, atol=1e-7)
    a.zero_grad()
    a.add_prior_grad(0.3, "huber", 0.05)  # the hashed level's prior is its backward's alone
    assert a.grids[2].grad is None and a.grids[1].grad is not None
    a.zero_grad()
    b.zero_grad()
    with a.cell_prior_off():  # passes inside add the data term's gradient only
        (w * a(p)).sum().backward()
    assert a.hash_prior == (0.3, "huber", 0.05)
    (w * b(p)).sum().backward()
    torch.testing.assert_close(a.grids[2].grad, b.grids[2].grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("update", ["dense", "sparse"])
def test_large_levels_take_their_own_prior_weight(update: str) -> None:
    """With ``large_weight`` the levels over dense_max_nodes nodes (here the finest) get the prior's
    gradient at that weight and the others at ``weight``, in any update mode (sparse: on the
    touched rows)."""
    finest = math.prod(_grid_inr().shapes[-1])
    model = _grid_inr(update, finest - 1)
    assert model.large_levels == [False, False, True]
    assert model.sparse_levels == [False, False, update == "sparse"]
    ref = _grid_inr()
    with torch.no_grad():
        for level, g in enumerate(ref.grids):
            g.copy_(torch.randn_like(g))
            model.grid_volume(level).copy_(g)
    p = _points(3)[:3]
    model(p).square().mean().backward()
    model.add_prior_grad(0.3, "huber", 0.5, large_weight=0.05)
    priors = [edge_penalty(torch.diff(g, dim=a), "huber", 0.5).mean() for g in ref.grids
              for a in (2, 3, 4)]  # fmt: skip
    (ref(p).square().mean() + 0.3 * sum(priors[:6]) + 0.05 * sum(priors[6:])).backward()
    for level, g in enumerate(ref.grids):
        if model.sparse_levels[level]:
            _assert_touched_rows_match(model.grids[level], g)
        else:
            torch.testing.assert_close(model.grids[level].grad, g.grad, rtol=1e-5, atol=1e-7)
