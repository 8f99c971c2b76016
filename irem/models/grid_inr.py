"""A fast CPU implicit neural representation in the spirit of Instant-NGP: multiresolution feature
grids over the box of the LR voxel centres (level ``l`` at ``finest_mm * 2**(levels - 1 - l)`` mm),
read trilinearly and mapped to an intensity by a small MLP, plus a start image if set. A level above
``dense_max_nodes`` nodes is hashed into a table (:func:`hashed_lookup`), its prior covering only
the cells a batch's points fall in; the prior (:class:`GridPrior`) enters in
:meth:`GridINR.backward`."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PRIORS: tuple[str, ...] = ("tk1", "huber", "tv")
#: How the network of ``start image + network`` starts at zero (:meth:`GridINR.set_base`).
HEADS: tuple[str, ...] = ("zero", "cancel")


def edge_penalty_grad(d: torch.Tensor, kind: str, delta: float) -> torch.Tensor:
    """Derivative of the penalty of node differences ``d``: ``tk1`` ``d**2``; ``huber`` ``d**2`` up
    to ``|d| = delta``, then ``2 * delta * |d| - delta**2``; ``tv`` (smoothed total variation)
    ``2 * delta * (sqrt(d**2 + delta**2) - delta)``: all ``d**2`` near 0."""
    if kind == "tk1":
        return 2 * d
    if kind == "huber":
        return 2 * d.clamp(-delta, delta)
    if kind == "tv":
        return 2 * delta * d / torch.sqrt(d.square() + delta**2)
    raise ValueError(f"prior must be one of {PRIORS}, got {kind!r}")


def _cells(u: torch.Tensor, shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Lowest corner nodes ``(3, n)`` (x, y, z) of the cells of points ``u`` and the positions in
    them, as ``grid_sample`` reads a grid of ``shape`` (``align_corners=True``, border clamping)."""
    d, h, w = shape
    sizes = torch.tensor([w, h, d], dtype=u.dtype, device=u.device)
    pos = ((u + 1) / 2 * (sizes - 1)).clamp_(min=0).minimum(sizes - 1).t().contiguous()
    low = pos.floor().minimum((sizes - 2)[:, None])  # every node count is >= 2
    return low.long(), pos - low


def _corner_weights(frac: torch.Tensor) -> torch.Tensor:
    """``(8, n)`` trilinear weights of the corners from ``(3, n)`` fractional positions; corner
    ``c`` lies ``((c >> 2) & 1, (c >> 1) & 1, c & 1)`` nodes above the lowest along (z, y, x)."""
    corner = torch.arange(8, device=frac.device)
    cz, cy, cx = (corner >> 2) & 1, (corner >> 1) & 1, corner & 1
    pair = torch.stack((1 - frac, frac), dim=1)  # (axis x/y/z, low/high, n)
    weights = pair[2].index_select(0, cz) * pair[1].index_select(0, cy)
    return weights.mul_(pair[0].index_select(0, cx))


#: Multipliers of the spatial hash for x, y, z (Teschner et al. 2003, as Instant-NGP uses them).
HASH_PRIMES: tuple[int, int, int] = (1, 2654435761, 805459861)


def hashed_lookup(
    u: torch.Tensor, shape: tuple[int, int, int], rows: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(8, n)`` table rows and trilinear weights (corner order of :func:`_corner_weights`) of
    the nodes around points ``u`` ``(n, 3)`` in a level of ``shape`` ``(D, H, W)`` hashed into
    ``rows`` rows (node ``(x, y, z)`` at ``(x * p0 ^ y * p1 ^ z * p2) % rows``), and the points'
    ``(n,)`` cells (the unhashed row ``(z * H + y) * W + x`` of their lowest corner)."""
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
    """``(n,)`` float32: one over the number of points in each point's cell."""
    _, inverse, counts = torch.unique(cells, return_inverse=True, return_counts=True)
    return counts.reciprocal().float()[inverse]


def _edge_denominator(shape: tuple[int, int, int], axis: int, features: int) -> int:
    """4 cells per inner edge x the level's node pairs along ``axis`` (0: z) x features."""
    return 4 * math.prod(n - 1 if a == axis else n for a, n in enumerate(shape)) * features


def cell_prior_grad(
    corners: torch.Tensor,
    prior: tuple[float, str, float],
    shape: tuple[int, int, int],
    shares: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gradient, with respect to the ``(8, n, F)`` corner values of a batch's points, of a hashed
    level's ``prior`` (weight, kind, delta) restricted to the cells they fall in: the edge penalty
    along each cell's 12 edges, each cell once (``shares``), each edge a quarter per cell, over
    :func:`_edge_denominator`; added to ``out`` (in place; None: zeros) and returned."""
    weight, kind, delta = prior
    c = corners.view(2, 2, 2, *corners.shape[1:])  # (z, y, x, n, F)
    if out is None:
        out = torch.zeros_like(corners)
    g = out.view(c.shape)
    for a in (0, 1, 2):
        d = c.select(a, 1) - c.select(a, 0)
        scale = weight / _edge_denominator(shape, a, corners.shape[2])
        slope = edge_penalty_grad(d, kind, delta).mul_(shares[:, None] * scale)
        g.select(a, 1).add_(slope)
        g.select(a, 0).sub_(slope)
    return out


#: One-element dtypes of rows of 8 and 16 bytes, for :func:`gather_rows`.
_ROW_WORDS: dict[int, torch.dtype] = {8: torch.float64, 16: torch.complex128}


def gather_rows(t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``t.index_select(0, rows)``; contiguous rows of 8 or 16 bytes (two float32 features) go
    through a one-element-per-row view, which a CPU gathers faster than narrow rows."""
    plain = t.dim() < 1 or not t.is_contiguous() or t.is_complex() or not t.shape[0]
    dtype = None if plain else _ROW_WORDS.get(t[0].numel() * t.element_size())
    if dtype is None:
        return t.index_select(0, rows.long())
    words = t.view(t.shape[0], -1).view(dtype).view(-1)
    return words.index_select(0, rows.long()).view(t.dtype).view(-1, *t.shape[1:])


@dataclass(frozen=True)
class GridPrior:
    """The ``kind`` penalty (:func:`edge_penalty_grad`) of neighbouring node differences at
    ``weight`` on dense levels and ``large_weight`` on hashed ones (None: ``weight``)."""

    weight: float
    kind: str = "tk1"
    delta: float = 0.01
    large_weight: float | None = None


def _trilinear(volume: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``(C, n)`` values of ``volume`` ``(1, C, D, H, W)`` at points ``u`` (trilinear, clamped)."""
    f = F.grid_sample(volume, u.view(1, 1, 1, -1, 3), padding_mode="border", align_corners=True)
    return f.view(volume.shape[1], -1)


class DenseLevel(nn.Module):
    """A level stored as its nodes: a ``(1, features, D, H, W)`` parameter (``grid_sample``)."""

    def __init__(self, values: torch.Tensor):
        super().__init__()
        self.values = nn.Parameter(values)
        self.shape: tuple[int, int, int] = (values.shape[2], values.shape[3], values.shape[4])

    def lookup(self, u: torch.Tensor) -> torch.Tensor:
        """``(features, n)`` values at points ``u`` ``(n, 3)``."""
        return _trilinear(self.values, u)

    @contextmanager
    def prior_grad(self, weight: float, kind: str, delta: float) -> Iterator[None]:
        """After the backward pass run inside, add in place the gradient of ``weight`` x the mean
        penalty of neighbouring node differences per axis, summed over the axes."""
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
    """A level of ``shape`` nodes ``(D, H, W)`` hashed into a ``(rows, features)`` parameter."""

    def __init__(self, table: torch.Tensor, shape: tuple[int, int, int]):
        super().__init__()
        self.values = nn.Parameter(table)
        self.shape = shape
        self.prior: tuple[float, str, float] | None = None  # set by prior_grad

    def lookup(self, u: torch.Tensor) -> torch.Tensor:
        """``(features, n)`` values at points ``u`` ``(n, 3)``: the trilinear sum of 8 rows."""
        return _HashedTrilinear.apply(self.values, u, self).t()

    @contextmanager
    def prior_grad(self, weight: float, kind: str, delta: float) -> Iterator[None]:
        """The backward pass run inside adds the gradient of the prior on the cells each lookup
        read (:func:`cell_prior_grad`; only the pass knows the batch's cells)."""
        self.prior = (weight, kind, delta) if weight > 0 else None
        try:
            yield
        finally:
            self.prior = None


class _HashedTrilinear(torch.autograd.Function):
    """``(n, F)`` trilinear sums of the ``level``'s table at points ``u``; the table's gradient is
    dense and holds the level's prior gradient on the points' cells when set."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, table: torch.Tensor, u: torch.Tensor, level: HashedLevel
    ) -> torch.Tensor:
        rows, weights, cells = hashed_lookup(u, level.shape, table.shape[0])
        corners = gather_rows(table, rows.reshape(-1)).view(*rows.shape, table.shape[1])
        ctx.save_for_backward(rows, weights, cells, corners)
        ctx.level, ctx.table_shape = level, table.shape
        return (corners * weights.unsqueeze(2)).sum(dim=0)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None
        rows, weights, cells, corners = ctx.saved_tensors
        grad = grad.contiguous()
        corners_grad = weights.unsqueeze(2) * grad.unsqueeze(0)
        level = ctx.level
        if level.prior is not None:
            cell_prior_grad(corners, level.prior, level.shape, cell_shares(cells), out=corners_grad)
        out = grad.new_zeros(ctx.table_shape).index_add_(
            0, rows.reshape(-1), corners_grad.view(-1, grad.shape[1])
        )
        return out, None, None


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
        """Build the levels (dense up to ``dense_max_nodes`` nodes) over a box of sides ``box_mm``
        (mm; ``extent``: its half sides in input units) and the MLP, drawn from ``seed``."""
        super().__init__()
        self.register_buffer("extent", torch.tensor(extent, dtype=torch.float32))
        gen = torch.Generator().manual_seed(int(seed))
        grids: list[DenseLevel | HashedLevel] = []  # coarsest first
        for level in range(levels):
            spacing = finest_mm * 2 ** (levels - 1 - level)
            nodes = [max(2, math.ceil(b / spacing) + 1) for b in box_mm]
            shape = (nodes[2], nodes[1], nodes[0])  # grid_sample reads (x, y, z) from (W, H, D)
            # drawn for every level: a level's values do not depend on which levels are hashed
            values = (torch.rand((1, features, *shape), generator=gen) * 2 - 1) * 1e-4
            if math.prod(shape) <= dense_max_nodes:
                grids.append(DenseLevel(values))
            else:
                table = (torch.rand((hash_rows, features), generator=gen) * 2 - 1) * 1e-4
                grids.append(HashedLevel(table, shape))
        self.grids = nn.ModuleList(grids)
        layers: list[nn.Module] = []
        with torch.random.fork_rng(devices=[]):  # the global generator is left as it was
            torch.manual_seed(int(seed))
            for i in range(hidden_layers):
                layers += [nn.Linear(width if i else levels * features, width), nn.ReLU()]
            layers.append(nn.Linear(width if hidden_layers else levels * features, 1))
        self.mlp = nn.Sequential(*layers)

    def backward(self, loss: torch.Tensor, prior: GridPrior) -> None:
        """Back-propagate the data term ``loss``, each level adding its ``prior``'s gradient."""
        large = prior.weight if prior.large_weight is None else prior.large_weight
        with ExitStack() as stack:
            for level in self.grids:
                weight = large if isinstance(level, HashedLevel) else prior.weight
                stack.enter_context(level.prior_grad(weight, prior.kind, prior.delta))
            loss.backward()

    def set_base(self, volume: torch.Tensor, to_unit: torch.Tensor, head: str = "zero") -> None:
        """Represent ``base + network``, ``volume`` a start image ``(D, H, W)`` (normalised
        intensity, indexed ``[k, j, i]``), ``to_unit`` the ``(3, 4)`` affine from network inputs to
        its ``grid_sample`` coordinates. ``head``: ``zero`` zeroes the MLP's output layer,
        ``cancel`` sets its bias to cancel all-zero features, ``keep`` changes nothing."""
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
        return _trilinear(base, torch.addmm(self.base_map[:, 3], p, self.base_map[:, :3].t()))[0]

    def grid_parameters(self) -> list[nn.Parameter]:
        return [level.values for level in self.grids]

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        """Intensity ``(n,)`` at inputs ``p`` ``(n, 3)``; the MLP runs channels first (``W @ h``),
        the grids' layout, which a CPU multiplies faster."""
        u = p / self.extent
        h = torch.cat([level.lookup(u) for level in self.grids], dim=0)  # (levels * features, n)
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                h = torch.addmm(layer.bias[:, None], layer.weight, h)
            else:
                h = layer(h)
        base = self.base_values(p)
        return h.squeeze(0) if base is None else h.squeeze(0) + base
