import pytest
import torch

from irem.models.grid_inr import (
    HASH_PRIMES,
    HEADS,
    DenseLevel,
    GridINR,
    GridPrior,
    HashedLevel,
    _edge_denominator,
    cell_prior_grad,
    cell_shares,
    edge_penalty_grad,
    gather_rows,
    hashed_lookup,
)

BOX, EXTENT = (20.0, 12.0, 9.0), (1.0, 0.6, 0.45)


def edge_penalty(d: torch.Tensor, kind: str, delta: float) -> torch.Tensor:
    """The penalty whose derivative is :func:`edge_penalty_grad`."""
    if kind == "tk1":
        return d.square()
    if kind == "huber":
        a = d.abs()
        return torch.where(a <= delta, d.square(), 2 * delta * a - delta**2)
    if kind == "tv":
        return 2 * delta * (torch.sqrt(d.square() + delta**2) - delta)
    raise ValueError(f"prior must be tk1, huber or tv, got {kind!r}")


def cell_prior(corners, shape, shares, kind: str, delta: float) -> torch.Tensor:
    """A hashed level's prior on the cells of a batch's points, whose gradient
    :func:`cell_prior_grad` adds: each cell once, each edge a quarter per cell."""
    c = corners.view(2, 2, 2, *corners.shape[1:])  # (z, y, x, n, F)
    total = corners.new_zeros(())
    for a in (0, 1, 2):
        penalty = edge_penalty(c.select(a, 1) - c.select(a, 0), kind, delta) * shares[:, None]
        total = total + penalty.sum() / _edge_denominator(shape, a, corners.shape[2])
    return total


def _grid_inr(hash_rows: int = 64, dense_max_nodes: int = 2**21) -> GridINR:
    """Levels of 36, 96 and 462 nodes: all dense, or the larger ones hashed."""
    return GridINR(
        BOX, EXTENT, levels=3, features=2, finest_mm=2.0, seed=3,
        dense_max_nodes=dense_max_nodes, hash_rows=hash_rows,
    )  # fmt: skip


def _points(n: int = 300) -> torch.Tensor:
    """Random points over 1.2 times the box (some outside: border clamping), plus its 8 corners
    (exactly on the first and last nodes: align_corners)."""
    ext = torch.tensor(EXTENT)
    corners = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) * ext
    gen = torch.Generator().manual_seed(0)
    return torch.cat([(torch.rand(n, 3, generator=gen) * 2.4 - 1.2) * ext, corners.float()])


def _node_rows(cells: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """``(8, n)`` unhashed rows ``(z * H + y) * W + x`` of the corners of the points' cells, in
    :func:`hashed_lookup`'s corner order."""
    _, h, w = shape
    corner = torch.arange(8)
    offsets = ((corner >> 2) & 1) * (h * w) + ((corner >> 1) & 1) * w + (corner & 1)
    return cells[None, :] + offsets[:, None]


def _randomise(model: GridINR) -> None:
    with torch.no_grad():
        for g in model.grid_parameters():
            g.copy_(torch.randn_like(g))


def test_levels_over_dense_max_nodes_are_fixed_size_hash_tables() -> None:
    model = _grid_inr(hash_rows=64, dense_max_nodes=100)
    assert [type(level) for level in model.grids] == [DenseLevel, DenseLevel, HashedLevel]
    assert [tuple(g.shape) for g in model.grid_parameters()][2] == (64, 2)
    assert all(isinstance(level, DenseLevel) for level in _grid_inr().grids)


@pytest.mark.parametrize("rows", [64, 50])
def test_hashed_lookup_hashes_the_corner_nodes_with_the_trilinear_weights(rows: int) -> None:
    """Row of corner (x, y, z) = (x * p0 ^ y * p1 ^ z * p2) % rows (a power of two or not)."""
    shape = (5, 7, 11)
    u = _points() / torch.tensor(EXTENT)
    hashed, weights, cells = hashed_lookup(u, shape, rows)
    assert torch.allclose(weights.sum(dim=0), torch.ones(len(u)))
    _, h, w = shape
    plain = _node_rows(cells, shape)
    z, y, x = plain // (h * w), plain // w % h, plain % w
    expected = (x * HASH_PRIMES[0] ^ y * HASH_PRIMES[1] ^ z * HASH_PRIMES[2]) % rows
    assert torch.equal(hashed, expected)
    assert int(hashed.max()) < rows


def test_a_hashed_level_reads_and_learns_as_a_dense_level_whose_nodes_share_rows() -> None:
    """The hashed path is the dense one on a volume whose node (x, y, z) holds its hashed row:
    the same values (trilinear, border-clamped) and, gathered back through the hash, the same
    gradient."""
    shape, rows = (5, 7, 11), 50
    table = torch.randn(rows, 2, generator=torch.Generator().manual_seed(1))
    d, h, w = shape
    z, y, x = torch.meshgrid(*(torch.arange(n) for n in shape), indexing="ij")
    node_row = (x * HASH_PRIMES[0] ^ y * HASH_PRIMES[1] ^ z * HASH_PRIMES[2]) % rows
    hashed = HashedLevel(table.clone(), shape)
    dense = DenseLevel(table[node_row].permute(3, 0, 1, 2).unsqueeze(0).contiguous())
    u = _points() / torch.tensor(EXTENT)
    a, b = hashed.lookup(u), dense.lookup(u)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    weight = torch.randn_like(a)
    (weight * a).sum().backward()
    (weight * b).sum().backward()
    shared = torch.zeros(rows, 2).index_add_(
        0, node_row.reshape(-1), dense.values.grad[0].reshape(2, -1).t()
    )
    torch.testing.assert_close(hashed.values.grad, shared, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["tk1", "huber", "tv"])
def test_the_prior_hook_adds_autograds_gradient_of_the_prior(kind: str) -> None:
    """GridINR.backward(loss, prior) = autograd of loss + weight x each dense level's prior (mean
    edge penalty per axis, summed over axes) + large_weight x each hashed level's cell_prior on the
    cells the batch read (rows shared by several nodes included; delta inside the differences'
    range: both parts of huber and tv)."""
    a, b = (
        _grid_inr(hash_rows=50, dense_max_nodes=100),
        _grid_inr(hash_rows=50, dense_max_nodes=100),
    )
    _randomise(a)
    b.load_state_dict(a.state_dict())
    p, w = _points(), torch.randn(len(_points()))
    prior = GridPrior(0.3, kind, 0.5, large_weight=0.05)
    a.backward((w * a(p)).sum(), prior)
    dense = [level.values for level in b.grids[:2]]
    total = sum(
        edge_penalty(torch.diff(g, dim=ax), kind, 0.5).mean() for g in dense for ax in (2, 3, 4)
    )
    finest = b.grids[2]
    rows, _, cells = hashed_lookup(p / b.extent, finest.shape, 50)
    corners = finest.values[rows.reshape(-1)].view(8, -1, 2)
    cells_prior = cell_prior(corners, finest.shape, cell_shares(cells), kind, 0.5)
    assert len(torch.unique(rows)) < rows.numel()  # rows repeat: collisions are exercised
    ((w * b(p)).sum() + 0.3 * total + 0.05 * cells_prior).backward()
    for ga, gb in zip(a.grid_parameters(), b.grid_parameters(), strict=True):
        torch.testing.assert_close(ga.grad, gb.grad, rtol=1e-5, atol=1e-7)
    assert all(level.prior is None for level in a.grids[2:])  # the hashed prior ends with the pass
    a.zero_grad()
    a.backward((w * a(p)).sum(), GridPrior(0.0))  # no prior: the data term's gradient alone
    b.zero_grad()
    (w * b(p)).sum().backward()
    for ga, gb in zip(a.grid_parameters(), b.grid_parameters(), strict=True):
        torch.testing.assert_close(ga.grad, gb.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["tk1", "huber", "tv"])
def test_cell_prior_gradient_equals_autograd(kind: str) -> None:
    corners = torch.randn(8, 40, 2, requires_grad=True)
    shares = torch.rand(40)
    prior = (0.7, kind, 0.5)
    (0.7 * cell_prior(corners, (4, 5, 6), shares, kind, 0.5)).backward()
    got = cell_prior_grad(corners.detach(), prior, (4, 5, 6), shares)
    torch.testing.assert_close(got, corners.grad, rtol=1e-5, atol=1e-7)
    out = torch.ones(8, 40, 2)  # added to a given gradient, in place
    assert cell_prior_grad(corners.detach(), prior, (4, 5, 6), shares, out=out) is out
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
    centres = torch.stack(
        torch.meshgrid(*(torch.arange(n - 1) + 0.5 for n in (w, h, d)), indexing="ij"), -1
    ).reshape(-1, 3)
    u = (centres / torch.tensor([w - 1, h - 1, d - 1]) * 2 - 1).repeat(per_cell, 1)
    _, _, cells = hashed_lookup(u, shape, 64)
    rows = _node_rows(cells, shape)
    corners = level[0].reshape(2, -1).t()[rows.reshape(-1)].view(8, -1, 2)
    got = cell_prior(corners, shape, cell_shares(cells), "tk1", 0.0)
    assert float(got) == pytest.approx(float(exact) * (d - 1) * (h - 1) / (d * h), rel=1e-5)


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
    with pytest.raises(ValueError, match="prior"):
        edge_penalty_grad(small, "l3", delta)


@pytest.mark.parametrize("shape", [(50, 2), (50, 2, 2), (50, 3), (50,)])
def test_row_gather_equals_index_select(shape) -> None:
    """Rows of 8/16 bytes go through a bit view; others through index_select (same values)."""
    table = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    rows = torch.tensor([3, 0, 17, 49, 8], dtype=torch.int32)
    assert torch.equal(gather_rows(table, rows), table.index_select(0, rows.long()))


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
    grid_grads = [float(g.grad.abs().sum()) for g in m.grid_parameters()]
    if head == "zero":
        assert torch.equal(net, torch.zeros_like(net))
        assert grid_grads == [0.0] * len(m.grids)
    else:
        assert 0 < float(net.abs().max()) < 1e-4
        assert all(g > 0 for g in grid_grads)
    with pytest.raises(ValueError, match="head"):
        m.set_base(base, torch.zeros(3, 4), "none")
