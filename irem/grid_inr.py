"""A fast implicit neural representation for CPU: a multiresolution dense feature grid and a small
MLP (in the spirit of Instant-NGP, with dense trilinear grids instead of hashing).

Level ``l`` of ``levels`` is a grid of ``features`` learnable values per node with a node spacing of
``finest_mm * 2**(levels - 1 - l)`` millimetres over the bounding box of the LR voxel centres; a
point's features are read by trilinear interpolation (``torch.nn.functional.grid_sample``) at every
level, concatenated and mapped to an intensity by an MLP. It is still an implicit neural
representation: a continuous function of the coordinate, fitted to the LR voxels only. With a
start image (:meth:`GridINR.set_base`, ``train.base``) it represents that image plus the network.

Two update modes give the same function of the same parameters:

- ``update="dense"``: each level is a ``(1, features, D, H, W)`` parameter read by ``grid_sample``;
  its gradient, Adam's update and the smoothness prior cover every node at every step, so a step
  costs time in proportion to the volume.
- ``update="sparse"``: levels of more than ``dense_max_nodes`` nodes become ``(D * H * W,
  features)`` tables (node ``(x, y, z)`` at row ``(z * H + y) * W + x``) read by gathering the 8
  corners of each point (the weights, ``align_corners=True`` and border clamping of
  ``grid_sample``). Their gradient is sparse: only the rows the batch touched, which
  :class:`irem.optim.LazyAdam` updates and :meth:`GridINR.add_smoothness_grad` regularises alone
  (the prior's gradient restricted to those rows). Smaller levels stay as in ``dense`` mode: they
  cost less to update whole than to update sparsely.

A third mode makes a step's cost independent of the volume's size:

- ``update="hashed"``: levels of more than ``dense_max_nodes`` nodes become fixed-size tables of
  ``hash_rows`` rows that the nodes share through a spatial hash (Instant-NGP's: the XOR of
  the node's coordinates times large primes, modulo the rows); a point reads its 8 hashed corners
  with the same trilinear weights. A different function of different parameters: nodes that share
  a row share its value (about ``nodes / rows`` per row), and the MLP with the dense levels tells
  them apart. Their gradient is dense over the fixed table (Adam updates every row, in one fused
  pass), and their prior is the level's restricted to the cells the batch's points fall in
  (:func:`cell_prior`, from the corner values the points read; the sparse mode restricts it to
  the touched nodes). Nothing in a step grows with the volume but the dense levels, which stay
  under ``dense_max_nodes``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

UPDATES: tuple[str, ...] = ("dense", "sparse", "hashed")
PRIORS: tuple[str, ...] = ("tk1", "huber", "tv")
#: How the network of ``start image + network`` starts at zero (:meth:`GridINR.set_base`).
HEADS: tuple[str, ...] = ("zero", "cancel")


def edge_penalty(d: torch.Tensor, kind: str, delta: float) -> torch.Tensor:
    """Elementwise penalty of node differences ``d``: ``tk1`` ``d**2``; ``huber`` ``d**2`` up to
    ``|d| = delta``, ``2 * delta * |d| - delta**2`` beyond; ``tv`` (smoothed total variation)
    ``2 * delta * (sqrt(d**2 + delta**2) - delta)``. All three equal ``d**2`` to second order at 0
    (the same weight means the same prior on small differences); ``huber`` and ``tv`` grow like
    ``2 * delta * |d|`` on large ones (edges)."""
    if kind == "tk1":
        return d.square()
    if kind == "huber":
        a = d.abs()
        return torch.where(a <= delta, d.square(), 2 * delta * a - delta**2)
    if kind == "tv":
        return 2 * delta * (torch.sqrt(d.square() + delta**2) - delta)
    raise ValueError(f"prior must be one of {PRIORS}, got {kind!r}")


def edge_penalty_grad(d: torch.Tensor, kind: str, delta: float) -> torch.Tensor:
    """Derivative of :func:`edge_penalty` with respect to ``d``."""
    if kind == "tk1":
        return 2 * d
    if kind == "huber":
        return 2 * d.clamp(-delta, delta)
    if kind == "tv":
        return 2 * delta * d / torch.sqrt(d.square() + delta**2)
    raise ValueError(f"prior must be one of {PRIORS}, got {kind!r}")


def _cells(u: torch.Tensor, shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Lowest corner ``(3, n)`` int64 node indices (x, y, z) of the cells points ``u`` fall in and
    the points' ``(3, n)`` fractional positions in them, as ``grid_sample`` reads a grid of
    ``shape`` (:func:`corner_lookup`)."""
    d, h, w = shape
    sizes = torch.tensor([w, h, d], dtype=u.dtype, device=u.device)
    pos = ((u + 1) / 2 * (sizes - 1)).clamp_(min=0).minimum(sizes - 1).t().contiguous()
    low = pos.floor().minimum((sizes - 2)[:, None])  # every node count is >= 2
    return low.long(), pos - low


def _corner_weights(frac: torch.Tensor) -> torch.Tensor:
    """``(8, n)`` trilinear weights of the corners (order of :func:`corner_lookup`) from the
    points' ``(3, n)`` fractional positions in their cells."""
    corner = torch.arange(8, device=frac.device)
    cz, cy, cx = (corner >> 2) & 1, (corner >> 1) & 1, corner & 1
    pair = torch.stack((1 - frac, frac), dim=1)  # (axis x/y/z, low/high, n)
    weights = pair[2].index_select(0, cz) * pair[1].index_select(0, cy)
    return weights.mul_(pair[0].index_select(0, cx))


def corner_lookup(
    u: torch.Tensor, shape: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and trilinear weights of the 8 nodes around points, as ``grid_sample`` reads them.

    Args:
        u: ``(n, 3)`` coordinates ``(x, y, z)`` in [-1, 1] over the grid (``align_corners=True``:
            -1 and 1 are the centres of the first and last nodes); outside values are clamped to
            the border, as ``padding_mode="border"`` does.
        shape: nodes ``(D, H, W)`` along z, y, x.

    Returns:
        ``(8, n)`` int64 rows ``(z * H + y) * W + x`` and ``(8, n)`` weights summing to 1 over the
        corners; corner ``c`` lies ``((c >> 2) & 1, (c >> 1) & 1, c & 1)`` nodes above the lowest
        along (z, y, x).
    """
    _, h, w = shape
    low, frac = _cells(u, shape)
    base = (low[2] * h + low[1]) * w + low[0]
    corner = torch.arange(8, device=u.device)
    cz, cy, cx = (corner >> 2) & 1, (corner >> 1) & 1, corner & 1
    offsets = cz * (h * w) + cy * w + cx
    return base[None, :] + offsets[:, None], _corner_weights(frac)


#: Multipliers of the spatial hash of ``update="hashed"`` levels, for x, y, z (Teschner et al.
#: 2003, as Instant-NGP uses them).
HASH_PRIMES: tuple[int, int, int] = (1, 2654435761, 805459861)


def hashed_lookup(
    u: torch.Tensor, shape: tuple[int, int, int], rows: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Table rows and trilinear weights of the 8 nodes around points in a level of ``shape``
    nodes hashed into ``rows`` rows: node ``(x, y, z)`` is row ``(x * p0 ^ y * p1 ^ z * p2) %
    rows`` (:data:`HASH_PRIMES`). Corners, weights and clamping as :func:`corner_lookup`.

    Returns:
        ``(8, n)`` int64 rows, ``(8, n)`` weights and the ``(n,)`` cells of the points (the
        unhashed row of their lowest corner, :func:`corner_lookup`'s corner 0).
    """
    _, h, w = shape
    low, frac = _cells(u, shape)
    step = torch.arange(2, device=u.device)[:, None]
    hx, hy, hz = ((low[a] + step) * prime for a, prime in enumerate(HASH_PRIMES))
    keys = (hz[:, None, None] ^ hy[None, :, None] ^ hx[None, None, :]).view(8, -1)  # z, y, x
    if rows & (rows - 1) == 0:  # a power of two: the remainder is the low bits
        keys.bitwise_and_(rows - 1)
    else:
        keys.remainder_(rows)
    return keys, _corner_weights(frac), (low[2] * h + low[1]) * w + low[0]


def cell_shares(cells: torch.Tensor) -> torch.Tensor:
    """``(n,)`` float32: one over the number of points in each point's cell, from the points'
    ``(n,)`` cells (summed over points, each cell the points fall in counts once)."""
    _, inverse, counts = torch.unique(cells, return_inverse=True, return_counts=True)
    return counts.reciprocal().float()[inverse]


class CellPrior(NamedTuple):
    """The grid prior of a hashed level on a batch's cells (:func:`cell_prior`)."""

    weight: float
    kind: str
    delta: float
    shape: tuple[int, int, int]  # the level's nodes (D, H, W), before hashing
    shares: torch.Tensor  # (n,) cell_shares of the batch's points


def _edge_denominator(shape: tuple[int, int, int], axis: int, features: int) -> int:
    """What :func:`cell_prior` divides an edge's penalty along ``axis`` (0: z, 1: y, 2: x) by:
    4 cells per inner edge, times the grid's neighbouring node pairs along that axis, times the
    features."""
    return 4 * math.prod(n - 1 if a == axis else n for a, n in enumerate(shape)) * features


def cell_prior(
    corners: torch.Tensor,
    shape: tuple[int, int, int],
    shares: torch.Tensor,
    kind: str,
    delta: float,
) -> torch.Tensor:
    """A level's :meth:`GridINR.prior` term restricted to the cells a batch's points fall in,
    from the values of their corners: the :func:`edge_penalty` of the differences along each
    cell's 12 edges, each cell counted once (``shares``) and each edge a quarter per cell (an
    inner edge borders 4 cells), over the level's number of differences along the edge's axis
    and the features. Where the batch covers every cell around an edge, the edge counts as in the
    whole level's term; edges away from the batch do not count (as the sparse mode's
    :func:`local_prior_grad` restricts the prior to the touched nodes).

    Args:
        corners: ``(8, n, F)`` corner values in :func:`corner_lookup`'s order.
        shape: the level's nodes ``(D, H, W)``.
        shares: ``(n,)`` :func:`cell_shares` of the points.
        kind: one of :data:`PRIORS`.
        delta: where ``huber`` and ``tv`` turn linear.
    """
    c = corners.view(2, 2, 2, *corners.shape[1:])  # (z, y, x, n, F)
    total = corners.new_zeros(())
    for a in (0, 1, 2):
        penalty = edge_penalty(c.select(a, 1) - c.select(a, 0), kind, delta) * shares[:, None]
        total = total + penalty.sum() / _edge_denominator(shape, a, corners.shape[2])
    return total


def cell_prior_grad(
    corners: torch.Tensor, prior: CellPrior, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Gradient of ``prior.weight * cell_prior(corners, ...)`` with respect to ``corners``, added
    to ``out`` (in place; a new tensor of zeros if None) and returned."""
    c = corners.view(2, 2, 2, *corners.shape[1:])
    if out is None:
        out = torch.zeros_like(corners)
    g = out.view(c.shape)
    for a in (0, 1, 2):
        d = c.select(a, 1) - c.select(a, 0)
        scale = prior.weight / _edge_denominator(prior.shape, a, corners.shape[2])
        slope = edge_penalty_grad(d, prior.kind, prior.delta).mul_(prior.shares[:, None] * scale)
        g.select(a, 1).add_(slope)
        g.select(a, 0).sub_(slope)
    return out


#: One-element dtypes of rows of 8 and 16 bytes, for :func:`gather_rows` and :func:`put_rows`.
_ROW_WORDS: dict[int, torch.dtype] = {8: torch.float64, 16: torch.complex128}


def _row_words(t: torch.Tensor) -> torch.Tensor | None:
    """A contiguous ``(N, ...)`` tensor whose rows are 8 or 16 bytes as a 1-D tensor of one
    element per row (a bit view, no copy); None for other tensors."""
    if t.dim() < 1 or not t.is_contiguous() or t.is_complex():
        return None
    dtype = _ROW_WORDS.get(t[0].numel() * t.element_size() if t.shape[0] else 0)
    if dtype is None:
        return None
    return t.view(t.shape[0], -1).view(dtype).view(-1)


def gather_rows(t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``t.index_select(0, rows)``; rows of 8 or 16 bytes (a node's two float32 features, or its
    two Adam moments) go through a one-element-per-row view, which torch gathers 2-5 times faster
    on a CPU than narrow rows (and int64 indices than int32 ones)."""
    words = _row_words(t)
    if words is None:
        return t.index_select(0, rows.long())
    return words.index_select(0, rows.long()).view(t.dtype).view(-1, *t.shape[1:])


def put_rows(t: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> None:
    """``t.index_copy_(0, rows, values)`` in place, through the view of :func:`gather_rows`."""
    words, source = _row_words(t), _row_words(values.contiguous())
    if words is None or source is None:
        t.index_copy_(0, rows.long(), values)
        return
    words.index_copy_(0, rows.long(), source)


def spatial_order(u: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Permutation sorting points ``u`` by the row of their lowest corner in a grid of ``shape``:
    gathers and scatters in that order walk the tables forwards (cache-friendly)."""
    d, h, w = shape
    sizes = torch.tensor([w, h, d], dtype=u.dtype)
    cell = ((u + 1) / 2 * (sizes - 1)).clamp_(min=0).minimum(sizes - 1).int()
    return torch.argsort((cell[:, 2] * h + cell[:, 1]) * w + cell[:, 0])


class _GatherTrilinear(torch.autograd.Function):
    """``(n, F)`` sums of the ``(8, n)`` weighted table ``rows`` over corners; the table's gradient
    is sparse: only the rows used, distinct and sorted."""

    @staticmethod
    def forward(table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        corners = gather_rows(table, rows.reshape(-1)).view(*rows.shape, table.shape[1])
        return (corners * weights.unsqueeze(2)).sum(dim=0)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        table, rows, weights = inputs
        ctx.save_for_backward(rows, weights)
        ctx.table_shape = table.shape

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None
        rows, weights = ctx.saved_tensors
        values = (weights.unsqueeze(2) * grad.unsqueeze(0)).reshape(-1, grad.shape[1])
        # int32 sorts about twice as fast as int64 on a CPU
        touched, inverse = torch.unique(rows.reshape(-1).int(), return_inverse=True)
        summed = grad.new_zeros(len(touched), grad.shape[1]).index_add_(0, inverse, values)
        out = torch.sparse_coo_tensor(
            touched.long().unsqueeze(0),
            summed,
            ctx.table_shape,
            is_coalesced=True,
            check_invariants=False,
        )
        return out, None, None


class _HashedTrilinear(torch.autograd.Function):
    """``(n, F)`` sums of the ``(8, n)`` weighted table ``rows`` over corners (rows may repeat);
    the table's gradient is dense and holds, besides the data term's, the gradient of the
    ``prior`` on the batch's cells (:func:`cell_prior_grad`; None: no prior)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        table: torch.Tensor,
        rows: torch.Tensor,
        weights: torch.Tensor,
        prior: CellPrior | None,
    ) -> torch.Tensor:
        corners = gather_rows(table, rows.reshape(-1)).view(*rows.shape, table.shape[1])
        ctx.save_for_backward(rows, weights, None if prior is None else corners)
        ctx.prior, ctx.table_shape = prior, table.shape
        return (corners * weights.unsqueeze(2)).sum(dim=0)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        rows, weights, corners = ctx.saved_tensors
        grad = grad.contiguous()
        corners_grad = weights.unsqueeze(2) * grad.unsqueeze(0)
        if corners is not None:
            cell_prior_grad(corners, ctx.prior, out=corners_grad)
        out = grad.new_zeros(ctx.table_shape).index_add_(
            0, rows.reshape(-1), corners_grad.view(-1, grad.shape[1])
        )
        return out, None, None, None


def coalesced(grad: torch.Tensor) -> torch.Tensor:
    """A sparse COO gradient with distinct sorted rows, marked so, without sorting it again when
    its rows already are (autograd's accumulation drops the mark of a coalesced gradient)."""
    if grad.is_coalesced():
        return grad
    rows = grad._indices()[0]
    if grad.sparse_dim() == 1 and bool((rows[1:] > rows[:-1]).all()):
        return torch.sparse_coo_tensor(
            grad._indices(), grad._values(), grad.shape, is_coalesced=True, check_invariants=False
        )
    return grad.coalesce()


def local_smoothness_grad(
    table: torch.Tensor, rows: torch.Tensor, shape: tuple[int, int, int], weight: float
) -> torch.Tensor:
    """Gradient of ``weight * (first-order penalty of the whole level)`` at the nodes ``rows``.

    The penalty is that of :meth:`GridINR.smoothness` for one level: the mean squared difference of
    neighbouring nodes per axis (over all the level's differences and features), summed over axes.
    Its gradient at a node needs only the node and its 6 neighbours, so this costs time in
    proportion to ``len(rows)``, not to the level.

    Args:
        table: ``(D * H * W, F)`` node values.
        rows: distinct node rows ``(m,)``.
        shape: nodes ``(D, H, W)``.
        weight: the penalty's weight.

    Returns:
        ``(m, F)`` gradient rows.
    """
    return local_prior_grad(table, rows, shape, weight, "tk1", 0.0)


def local_prior_grad(
    table: torch.Tensor,
    rows: torch.Tensor,
    shape: tuple[int, int, int],
    weight: float,
    kind: str,
    delta: float,
) -> torch.Tensor:
    """Gradient of ``weight * GridINR.prior(kind, delta)`` for one level at the nodes ``rows``.

    The :func:`local_smoothness_grad` of any :func:`edge_penalty`: a node's gradient needs only the
    node and its 6 neighbours.

    Args:
        table: ``(D * H * W, F)`` node values.
        rows: distinct node rows ``(m,)``.
        shape: nodes ``(D, H, W)``.
        weight: the penalty's weight.
        kind: one of :data:`PRIORS`.
        delta: the difference where ``huber`` and ``tv`` turn from quadratic to linear.

    Returns:
        ``(m, F)`` gradient rows.
    """
    d, h, w = shape
    r = rows.int()
    z = r // (h * w)
    y = (r - z * (h * w)) // w
    coords = (z, y, r - (z * h + y) * w)
    numel = d * h * w * table.shape[1]
    centre = gather_rows(table, r)
    out = torch.zeros_like(centre)
    for coord, size, stride in zip(coords, shape, (h * w, w, 1), strict=True):
        c = weight / (numel // size * (size - 1))
        # A missing neighbour is replaced by the node itself: its difference is then 0.
        below = gather_rows(table, torch.where(coord > 0, r - stride, r))
        above = gather_rows(table, torch.where(coord < size - 1, r + stride, r))
        out.add_(edge_penalty_grad(centre - below, kind, delta), alpha=c)
        out.sub_(edge_penalty_grad(above - centre, kind, delta), alpha=c)
    return out


class GridINR(nn.Module):
    """Multiresolution dense feature grids followed by an MLP."""

    def __init__(
        self,
        box_mm: tuple[float, float, float],
        extent: tuple[float, float, float],
        levels: int = 5,
        features: int = 2,
        finest_mm: float = 1.0,
        width: int = 64,
        hidden_layers: int = 1,
        seed: int = 0,
        update: str = "dense",
        dense_max_nodes: int = 2**21,
        hash_rows: int = 2**19,
    ):
        """Build the grids and the MLP; all parameters are drawn from ``seed``.

        Args:
            box_mm: side lengths (mm) of the box the grids cover (the LR voxel centres' bounding box).
            extent: half sides of that box in network input units (the longest is 1).
            levels: number of resolution levels.
            features: learnable features per grid node and level.
            finest_mm: node spacing of the finest level in millimetres.
            width: neurons of the MLP's hidden layers.
            hidden_layers: number of hidden layers of the MLP.
            seed: seed of the initialisation (the same values in the dense and sparse modes).
            update: ``dense`` (``grid_sample``, dense gradients), ``sparse`` (corner gathers,
                sparse gradients on levels of more than ``dense_max_nodes`` nodes) or ``hashed``
                (those levels hashed into tables of ``hash_rows`` rows).
            dense_max_nodes: in ``sparse`` and ``hashed`` modes, levels up to this many nodes stay
                dense grids. A fast.yaml batch touches ~250 k nodes of a fine level wherever it
                lies, and their lazy update and local prior cost about as much as a dense update
                of 1-2 M nodes (benchmarks/inr_step_cost.py, 1 thread: sparse 1.7 times faster at
                2.4 M voxels).
            hash_rows: rows of each hashed level's table (``hashed`` mode).
        """
        super().__init__()
        if levels < 1 or features < 1 or finest_mm <= 0 or width < 1 or hidden_layers < 0:
            raise ValueError("levels, features, width >= 1, hidden_layers >= 0, finest_mm > 0")
        if update not in UPDATES:
            raise ValueError(f"update must be one of {UPDATES}, got {update!r}")
        if hash_rows < 1:
            raise ValueError(f"hash_rows must be >= 1, got {hash_rows}")
        self.register_buffer("extent", torch.tensor(extent, dtype=torch.float32))
        self.update = update
        self.shapes: list[tuple[int, int, int]] = []
        self.sparse_levels: list[bool] = []
        self.hashed_levels: list[bool] = []
        #: levels of more than ``dense_max_nodes`` nodes (whichever ``update``): their prior can
        #: take a weight of its own (:meth:`add_prior_grad`'s ``large_weight``)
        self.large_levels: list[bool] = []
        #: ``(weight, kind, delta)`` of the hashed levels' prior, added in their backward pass
        #: (:func:`cell_prior`); the trainer sets it, a weight of 0 adds none.
        self.hash_prior: tuple[float, str, float] = (0.0, "tk1", 0.0)
        self.grids = nn.ParameterList(
            self._init_grids(box_mm, levels, features, finest_mm, seed, dense_max_nodes, hash_rows)
        )
        state = torch.random.get_rng_state()
        torch.manual_seed(int(seed))
        layers: list[nn.Module] = []
        in_f = levels * features
        for _ in range(hidden_layers):
            layers += [nn.Linear(in_f, width), nn.ReLU()]
            in_f = width
        layers.append(nn.Linear(in_f, 1))
        torch.random.set_rng_state(state)
        self.mlp = nn.Sequential(*layers)

    def _init_grids(
        self,
        box_mm: tuple[float, float, float],
        levels: int,
        features: int,
        finest_mm: float,
        seed: int,
        dense_max_nodes: int,
        hash_rows: int,
    ) -> list[nn.Parameter]:
        """Small random node values of every level (coarsest first), as dense volumes or, for
        sparse levels, ``(nodes, features)`` tables, for hashed levels ``(hash_rows, features)``
        tables; fills ``shapes``, ``sparse_levels``, ``hashed_levels`` and ``large_levels``."""
        gen = torch.Generator().manual_seed(int(seed))
        grids = []
        for level in range(levels):
            spacing = finest_mm * 2 ** (levels - 1 - level)
            nodes = [max(2, math.ceil(b / spacing) + 1) for b in box_mm]
            # grid_sample indexes (x, y, z) -> (W, H, D): store axis 0 last.
            shape = (1, features, nodes[2], nodes[1], nodes[0])
            values = (torch.rand(shape, generator=gen) * 2 - 1) * 1e-4
            large = nodes[0] * nodes[1] * nodes[2] > dense_max_nodes
            sparse, hashed = large and self.update == "sparse", large and self.update == "hashed"
            if sparse:
                values = values.view(features, -1).t().contiguous()
            if hashed:
                values = (torch.rand((hash_rows, features), generator=gen) * 2 - 1) * 1e-4
            grids.append(nn.Parameter(values))
            self.shapes.append((nodes[2], nodes[1], nodes[0]))
            self.sparse_levels.append(sparse)
            self.hashed_levels.append(hashed)
            self.large_levels.append(large)
        return grids

    def grid_volume(self, level: int) -> torch.Tensor:
        """Level ``level`` as a ``(1, features, D, H, W)`` tensor (a view; not for a hashed
        level, whose nodes share rows)."""
        if self.hashed_levels[level]:
            raise ValueError(f"level {level} is hashed: it has no volume of nodes")
        g = self.grids[level]
        if not self.sparse_levels[level]:
            return g
        return g.t().view(1, g.shape[1], *self.shapes[level])

    def _volumes(self) -> list[torch.Tensor]:
        """The levels that are volumes of nodes (all but hashed ones), as :meth:`grid_volume`."""
        return [self.grid_volume(i) for i, h in enumerate(self.hashed_levels) if not h]

    def smoothness(self) -> torch.Tensor:
        """The first-order Tikhonov penalty of the grids: the mean squared difference of
        neighbouring nodes along each axis, summed over levels and axes (features share the mean;
        hashed levels: see :attr:`hash_prior`)."""
        vols = self._volumes()
        return sum(
            (torch.diff(g, dim=axis).square().mean() for g in vols for axis in (2, 3, 4)),
            start=torch.zeros(()),
        )

    @torch.no_grad()
    def add_smoothness_grad(self, weight: float) -> None:
        """Add the gradient of ``weight * self.smoothness()`` to the grids' gradients.

        The same as back-propagating the penalty, in a few passes over the grids instead of
        autograd's many (measured on the workflow crop's grids, 1 thread: 6 ms instead of 41 ms).
        A level with a sparse gradient gets the penalty's gradient on the rows it holds only
        (:func:`local_smoothness_grad`); untouched nodes get none.
        """
        self.add_prior_grad(weight, "tk1")

    def prior(self, kind: str = "tk1", delta: float = 0.01) -> torch.Tensor:
        """The grids' :func:`edge_penalty` of neighbouring node differences, averaged per level and
        axis, summed over levels and axes (``tk1``: :meth:`smoothness`; hashed levels are left
        out: their prior is the batch's :func:`cell_prior`, see :attr:`hash_prior`)."""
        vols = self._volumes()
        return sum(
            (
                edge_penalty(torch.diff(g, dim=axis), kind, delta).mean()
                for g in vols
                for axis in (2, 3, 4)
            ),
            start=torch.zeros(()),
        )

    @torch.no_grad()
    def add_prior_grad(
        self, weight: float, kind: str = "tk1", delta: float = 0.01, large_weight: float | None = None
    ) -> None:
        """Add the gradient of ``weight * self.prior(kind, delta)`` to the grids' gradients, in
        place as :meth:`add_smoothness_grad` does (sparse gradients: on their rows only; hashed
        levels: none, their backward pass adds it). ``large_weight``, when given, is the weight on
        :attr:`large_levels` instead."""
        for level, g in enumerate(self.grids):
            if self.hashed_levels[level]:
                continue
            if large_weight is not None and self.large_levels[level]:
                w = large_weight
            else:
                w = weight
            if w == 0:
                continue
            if g.grad is not None and g.grad.is_sparse:
                grad = coalesced(g.grad)
                prior = local_prior_grad(
                    g, grad.indices()[0], self.shapes[level], w, kind, delta
                )
                g.grad = torch.sparse_coo_tensor(
                    grad.indices(),
                    grad.values() + prior,
                    grad.shape,
                    is_coalesced=True,
                    check_invariants=False,
                )
                continue
            if g.grad is None:
                if self.sparse_levels[level]:
                    continue  # nothing touched: no gradient to add to
                g.grad = torch.zeros_like(g)
            vol = self.grid_volume(level)
            grad_vol = g.grad if g.dim() == 5 else g.grad.t().view(vol.shape)
            for axis in (2, 3, 4):
                d = torch.diff(vol, dim=axis)
                slope = edge_penalty_grad(d, kind, delta).mul_(w / d.numel())
                n = vol.shape[axis]
                grad_vol.narrow(axis, 0, n - 1).sub_(slope)
                grad_vol.narrow(axis, 1, n - 1).add_(slope)

    def set_base(self, volume: torch.Tensor, to_unit: torch.Tensor, head: str = "zero") -> None:
        """Represent ``base + network``: the network then fits what a start image leaves over.

        Args:
            volume: ``(D, H, W)`` start image in normalised intensity, indexed ``[k, j, i]`` by
                the voxel indices ``(i, j, k)`` of its grid.
            to_unit: ``(3, 4)`` affine from network inputs to that grid's ``grid_sample``
                coordinates ``(i, j, k)`` in [-1, 1] (``align_corners=True``).
            head: how the network starts at zero (one of :data:`HEADS`): ``zero`` zeroes the
                MLP's output layer (exactly the start image; the grids get no gradient until
                that layer grows); ``cancel`` sets the output layer's bias to cancel the MLP's
                output for all-zero grid features (the grids' small start values leave ~1e-4;
                the grids learn from the first step); ``keep`` changes nothing (a saved model).
        """
        if head not in (*HEADS, "keep"):
            raise ValueError(f"head must be one of {HEADS} or keep, got {head!r}")
        self.register_buffer("base", volume.detach().float().reshape(1, 1, *volume.shape[-3:]))
        self.register_buffer("base_map", to_unit.detach().float().reshape(3, 4))
        if head == "keep":
            return
        out = self.mlp[-1]
        assert isinstance(out, nn.Linear)
        with torch.no_grad():
            if head == "zero":
                out.weight.zero_()
                out.bias.zero_()
                return
            features = out.weight.new_zeros(1, self.mlp[0].in_features)  # all-zero features
            out.bias.sub_(self.mlp(features).view(-1))

    @contextmanager
    def cell_prior_off(self) -> Iterator[None]:
        """Passes run inside add no hashed-level prior in their backward (for points that are not
        the batch's, such as the image prior's block: the grid prior counts once a step)."""
        saved = self.hash_prior
        self.hash_prior = (0.0, *saved[1:])
        try:
            yield
        finally:
            self.hash_prior = saved

    def base_values(self, p: torch.Tensor) -> torch.Tensor | None:
        """The start image at inputs ``p`` ``(n, 3)`` (trilinear, border-clamped); None without."""
        base = getattr(self, "base", None)
        if base is None:
            return None
        u = torch.addmm(self.base_map[:, 3], p, self.base_map[:, :3].t())
        v = F.grid_sample(
            base, u.view(1, 1, 1, -1, 3), mode="bilinear", padding_mode="border", align_corners=True
        )
        return v.view(-1)

    def grid_parameters(self) -> list[nn.Parameter]:
        return list(self.grids)

    def mlp_parameters(self) -> list[nn.Parameter]:
        return list(self.mlp.parameters())

    def encode(self, p: torch.Tensor) -> torch.Tensor:
        """Concatenated features of all levels at input coordinates ``p`` ``(n, 3)``, channels
        first: ``(levels * features, n)``."""
        u = p / self.extent
        feats = []
        levels = zip(self.grids, self.shapes, self.sparse_levels, self.hashed_levels, strict=True)
        for grid, shape, sparse, hashed in levels:
            if hashed:
                rows, weights, cells = hashed_lookup(u, shape, grid.shape[0])
                prior = None
                if self.hash_prior[0] > 0 and torch.is_grad_enabled() and grid.requires_grad:
                    prior = CellPrior(*self.hash_prior, shape, cell_shares(cells))
                feats.append(_HashedTrilinear.apply(grid, rows, weights, prior).t())
            elif sparse:
                rows, weights = corner_lookup(u, shape)
                feats.append(_GatherTrilinear.apply(grid, rows, weights).t())
            else:
                g = u.view(1, 1, 1, -1, 3)
                f = F.grid_sample(
                    grid, g, mode="bilinear", padding_mode="border", align_corners=True
                )
                feats.append(f.view(grid.shape[1], -1))
        return torch.cat(feats, dim=0)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        """Intensity at input coordinates ``p`` of shape ``(n, 3)``; returns ``(n,)``.

        The MLP runs channels first (``W @ h`` on ``(channels, n)`` activations), the layout the
        grids produce: on a CPU its products are 2-3 times faster than on ``(n, channels)``.
        """
        order = None
        if any(self.sparse_levels) and self.training:
            # In spatial order, the sparse levels' gathers, scatters and updates run 1.4 times
            # faster on a 3.6 M-voxel volume (1 thread); the output is put back in input order.
            order = spatial_order(p / self.extent, self.shapes[-1])
            p = p.index_select(0, order)
        h = self.encode(p)
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                h = torch.addmm(layer.bias[:, None], layer.weight, h)
            else:
                h = layer(h)
        out = h.squeeze(0)
        base = self.base_values(p)
        if base is not None:
            out = out + base
        if order is not None:
            out = torch.empty_like(out).index_copy(0, order, out)
        return out
