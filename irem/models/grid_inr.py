"""A fast implicit neural representation for CPU: multiresolution feature grids and a small MLP,
in the spirit of Instant-NGP.

Level ``l`` of ``levels`` holds ``features`` learnable values per node, with a node spacing of
``finest_mm * 2**(levels - 1 - l)`` millimetres over the bounding box of the LR voxel centres; a
point's features are read by trilinear interpolation at every level, concatenated and mapped to an
intensity by an MLP. It is still an implicit neural representation: a continuous function of the
coordinate, fitted to the LR voxels only. With a start image (:meth:`GridINR.set_base`,
``train.base``) it represents that image plus the network.

A level is one of two encodings, each a module that owns its lookup, its parameter and the
gradient of its prior:

- :class:`DenseLevel` (levels of up to ``dense_max_nodes`` nodes): the nodes themselves, a
  ``(1, features, D, H, W)`` volume read by ``grid_sample``; its prior covers every node.
- :class:`HashedLevel` (larger levels): the nodes share the rows of a fixed ``(hash_rows,
  features)`` table through Instant-NGP's spatial hash (:func:`hashed_lookup`), read with the
  same trilinear weights; the MLP and the dense levels tell apart nodes that share a row. Its
  prior is the level's restricted to the cells the batch's points fall in (:func:`cell_prior`),
  so nothing in a step grows with the volume but the dense levels.

Both have dense gradients, which Adam updates whole (one fused pass over all levels). The grid
prior (:class:`GridPrior`) enters through one hook, :meth:`GridINR.backward`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

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
    ``shape`` (``align_corners=True``, border clamping)."""
    d, h, w = shape
    sizes = torch.tensor([w, h, d], dtype=u.dtype, device=u.device)
    pos = ((u + 1) / 2 * (sizes - 1)).clamp_(min=0).minimum(sizes - 1).t().contiguous()
    low = pos.floor().minimum((sizes - 2)[:, None])  # every node count is >= 2
    return low.long(), pos - low


def _corner_weights(frac: torch.Tensor) -> torch.Tensor:
    """``(8, n)`` trilinear weights of the corners from the points' ``(3, n)`` fractional
    positions in their cells; corner ``c`` lies ``((c >> 2) & 1, (c >> 1) & 1, c & 1)`` nodes
    above the lowest along (z, y, x)."""
    corner = torch.arange(8, device=frac.device)
    cz, cy, cx = (corner >> 2) & 1, (corner >> 1) & 1, corner & 1
    pair = torch.stack((1 - frac, frac), dim=1)  # (axis x/y/z, low/high, n)
    weights = pair[2].index_select(0, cz) * pair[1].index_select(0, cy)
    return weights.mul_(pair[0].index_select(0, cx))


#: Multipliers of the spatial hash of hashed levels, for x, y, z (Teschner et al. 2003, as
#: Instant-NGP uses them).
HASH_PRIMES: tuple[int, int, int] = (1, 2654435761, 805459861)


def hashed_lookup(
    u: torch.Tensor, shape: tuple[int, int, int], rows: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(8, n)`` int64 table rows and ``(8, n)`` trilinear weights (corner order of
    :func:`_corner_weights`) of the nodes around points ``u`` ``(n, 3)`` (``(x, y, z)`` read as
    ``grid_sample`` does) in a level of ``shape`` ``(D, H, W)`` nodes hashed into ``rows`` rows,
    node ``(x, y, z)`` at row ``(x * p0 ^ y * p1 ^ z * p2) % rows`` (:data:`HASH_PRIMES`), and the
    points' ``(n,)`` cells (the unhashed row ``(z * H + y) * W + x`` of their lowest corner)."""
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
    """A level's prior (:meth:`DenseLevel.prior_grad`'s penalty) restricted to the cells a batch's
    points fall in, from their ``(8, n, F)`` corner values: the :func:`edge_penalty` of the
    differences along each cell's 12 edges, each cell counted once (``shares``) and each edge a
    quarter per cell (an inner edge borders 4 cells), over the level's number of differences along
    the edge's axis and the features. Edges away from the batch do not count."""
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


#: One-element dtypes of rows of 8 and 16 bytes, for :func:`gather_rows`.
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
    """``t.index_select(0, rows)``; rows of 8 or 16 bytes (a node's two float32 features) go
    through a one-element-per-row view, which torch gathers faster on a CPU than narrow rows."""
    words = _row_words(t)
    if words is None:
        return t.index_select(0, rows.long())
    return words.index_select(0, rows.long()).view(t.dtype).view(-1, *t.shape[1:])


@dataclass(frozen=True)
class GridPrior:
    """The grid prior: the ``kind`` :func:`edge_penalty` (linear beyond ``delta``) of neighbouring
    node differences, at ``weight`` on dense levels and ``large_weight`` on hashed ones (None:
    ``weight``); a weight of 0 adds nothing."""

    weight: float
    kind: str = "tk1"
    delta: float = 0.01
    large_weight: float | None = None


class DenseLevel(nn.Module):
    """A level stored as its nodes: a ``(1, features, D, H, W)`` parameter read by ``grid_sample``."""

    def __init__(self, values: torch.Tensor):
        super().__init__()
        self.values = nn.Parameter(values)
        self.shape: tuple[int, int, int] = (values.shape[2], values.shape[3], values.shape[4])

    def lookup(self, u: torch.Tensor) -> torch.Tensor:
        """``(features, n)`` values at points ``u`` ``(n, 3)`` (as :func:`hashed_lookup` reads
        them: trilinear, ``align_corners=True``, border-clamped)."""
        f = F.grid_sample(
            self.values, u.view(1, 1, 1, -1, 3), mode="bilinear", padding_mode="border",
            align_corners=True,
        )  # fmt: skip
        return f.view(self.values.shape[1], -1)

    @contextmanager
    def prior_grad(self, weight: float, kind: str, delta: float) -> Iterator[None]:
        """After the backward pass run inside, add the gradient of ``weight`` x the level's prior:
        the mean :func:`edge_penalty` of neighbouring node differences per axis (over the level's
        differences and features), summed over the axes. In place, in a few passes over the
        level (autograd of the penalty would take many)."""
        yield
        if weight == 0:
            return
        g = self.values
        with torch.no_grad():
            if g.grad is None:
                g.grad = torch.zeros_like(g)
            for axis in (2, 3, 4):
                d = torch.diff(g, dim=axis)
                slope = edge_penalty_grad(d, kind, delta).mul_(weight / d.numel())
                n = g.shape[axis]
                g.grad.narrow(axis, 0, n - 1).sub_(slope)
                g.grad.narrow(axis, 1, n - 1).add_(slope)


class HashedLevel(nn.Module):
    """A level of ``shape`` nodes ``(D, H, W)`` hashed into a ``(rows, features)`` parameter
    (:func:`hashed_lookup`)."""

    def __init__(self, table: torch.Tensor, shape: tuple[int, int, int]):
        super().__init__()
        self.values = nn.Parameter(table)
        self.shape = shape
        #: ``(weight, kind, delta)`` of the prior the backward pass adds (set by :meth:`prior_grad`)
        self.prior: tuple[float, str, float] | None = None

    def lookup(self, u: torch.Tensor) -> torch.Tensor:
        """``(features, n)`` values at points ``u`` ``(n, 3)``: the trilinear sum of the 8 hashed
        corner rows."""
        rows, weights, cells = hashed_lookup(u, self.shape, self.values.shape[0])
        return _HashedTrilinear.apply(self.values, rows, weights, cells, self).t()

    @contextmanager
    def prior_grad(self, weight: float, kind: str, delta: float) -> Iterator[None]:
        """The backward pass run inside adds the gradient of ``weight`` x :func:`cell_prior` on
        the cells of the points each lookup read, summed per corner with the data term's
        before the rows are scattered (it needs the batch's cells, which only the pass has)."""
        self.prior = (weight, kind, delta) if weight > 0 else None
        try:
            yield
        finally:
            self.prior = None


class _HashedTrilinear(torch.autograd.Function):
    """``(n, F)`` sums of the ``(8, n)`` weighted table ``rows`` over corners (rows may repeat);
    the table's gradient is dense and holds, besides the data term's, the gradient of the
    ``level``'s :attr:`HashedLevel.prior` on the points' cells, when set."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        table: torch.Tensor,
        rows: torch.Tensor,
        weights: torch.Tensor,
        cells: torch.Tensor,
        level: HashedLevel,
    ) -> torch.Tensor:
        corners = gather_rows(table, rows.reshape(-1)).view(*rows.shape, table.shape[1])
        ctx.save_for_backward(rows, weights, cells, corners)
        ctx.level, ctx.table_shape = level, table.shape
        return (corners * weights.unsqueeze(2)).sum(dim=0)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, None, None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        rows, weights, cells, corners = ctx.saved_tensors
        grad = grad.contiguous()
        corners_grad = weights.unsqueeze(2) * grad.unsqueeze(0)
        level = ctx.level
        if level.prior is not None:
            prior = CellPrior(*level.prior, level.shape, cell_shares(cells))
            cell_prior_grad(corners, prior, out=corners_grad)
        out = grad.new_zeros(ctx.table_shape).index_add_(
            0, rows.reshape(-1), corners_grad.view(-1, grad.shape[1])
        )
        return out, None, None, None, None


def _init_levels(
    box_mm: tuple[float, float, float],
    levels: int,
    features: int,
    finest_mm: float,
    seed: int,
    dense_max_nodes: int,
    hash_rows: int,
) -> list[DenseLevel | HashedLevel]:
    """Every level (coarsest first) with small random values drawn from ``seed``: dense up to
    ``dense_max_nodes`` nodes, hashed into ``hash_rows`` rows above."""
    gen = torch.Generator().manual_seed(int(seed))
    out: list[DenseLevel | HashedLevel] = []
    for level in range(levels):
        spacing = finest_mm * 2 ** (levels - 1 - level)
        nodes = [max(2, math.ceil(b / spacing) + 1) for b in box_mm]
        # grid_sample indexes (x, y, z) -> (W, H, D): store axis 0 last.
        shape = (nodes[2], nodes[1], nodes[0])
        # drawn for every level: a level's values do not depend on which levels are hashed
        values = (torch.rand((1, features, *shape), generator=gen) * 2 - 1) * 1e-4
        if math.prod(shape) <= dense_max_nodes:
            out.append(DenseLevel(values))
        else:
            table = (torch.rand((hash_rows, features), generator=gen) * 2 - 1) * 1e-4
            out.append(HashedLevel(table, shape))
    return out


class GridINR(nn.Module):
    """Multiresolution feature grids (:class:`DenseLevel`, :class:`HashedLevel`) and an MLP."""

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
        dense_max_nodes: int = 2**21,
        hash_rows: int = 2**19,
    ):
        """Build the levels over a box of sides ``box_mm`` (mm; ``extent``: its half sides in
        network input units) and the MLP; all parameters are drawn from ``seed``."""
        super().__init__()
        if levels < 1 or features < 1 or finest_mm <= 0 or width < 1 or hidden_layers < 0:
            raise ValueError("levels, features, width >= 1, hidden_layers >= 0, finest_mm > 0")
        if hash_rows < 1:
            raise ValueError(f"hash_rows must be >= 1, got {hash_rows}")
        self.register_buffer("extent", torch.tensor(extent, dtype=torch.float32))
        self.grids = nn.ModuleList(
            _init_levels(box_mm, levels, features, finest_mm, seed, dense_max_nodes, hash_rows)
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

    def backward(self, loss: torch.Tensor, prior: GridPrior) -> None:
        """Back-propagate ``loss`` (the data term) with the gradient of the grid ``prior`` added:
        the one way the prior enters training. Each level adds its own (:meth:`DenseLevel.prior_grad`,
        :meth:`HashedLevel.prior_grad`)."""
        large = prior.weight if prior.large_weight is None else prior.large_weight
        with ExitStack() as stack:
            for level in self.grids:
                weight = large if isinstance(level, HashedLevel) else prior.weight
                stack.enter_context(level.prior_grad(weight, prior.kind, prior.delta))
            loss.backward()

    def set_base(self, volume: torch.Tensor, to_unit: torch.Tensor, head: str = "zero") -> None:
        """Represent ``base + network``: the network then fits what a start image ``volume``
        (``(D, H, W)``, normalised intensity, indexed ``[k, j, i]``) leaves over; ``to_unit``:
        ``(3, 4)`` affine from network inputs to its ``grid_sample`` coordinates. ``head``: ``zero``
        zeroes the MLP's output layer (the grids get no gradient until it grows), ``cancel`` sets
        its bias to cancel the output for all-zero features, ``keep`` changes nothing."""
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

    def base_values(self, p: torch.Tensor) -> torch.Tensor | None:
        """The start image at inputs ``p`` ``(n, 3)`` (trilinear, border-clamped); None without."""
        base = getattr(self, "base", None)
        if base is None:
            return None
        u = torch.addmm(self.base_map[:, 3], p, self.base_map[:, :3].t())
        return F.grid_sample(
            base, u.view(1, 1, 1, -1, 3), mode="bilinear", padding_mode="border", align_corners=True
        ).view(-1)

    def grid_parameters(self) -> list[nn.Parameter]:
        return [level.values for level in self.grids]

    def mlp_parameters(self) -> list[nn.Parameter]:
        return list(self.mlp.parameters())

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        """Intensity at input coordinates ``p`` of shape ``(n, 3)``; returns ``(n,)``.

        The MLP runs channels first (``W @ h`` on ``(channels, n)`` activations), the layout the
        grids produce, which a CPU multiplies faster than ``(n, channels)``.
        """
        u = p / self.extent
        h = torch.cat([level.lookup(u) for level in self.grids], dim=0)  # (levels * features, n)
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                h = torch.addmm(layer.bias[:, None], layer.weight, h)
            else:
                h = layer(h)
        base = self.base_values(p)
        return h.squeeze(0) if base is None else h.squeeze(0) + base
