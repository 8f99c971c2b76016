"""Matrix-free slice-acquisition model ``A_k = D_k B_k`` of a stack, in torch, with its exact
adjoint: the HR grid (axes permuted when parallel to the stack's, else trilinearly interpolated onto
an intermediate grid along the stack's axes), a 1-D PSF matrix along each stack axis (``gaussian``:
NiftyMIC's; ``box``: the voxel footprint, integrated exactly) and each LR voxel's weights divided by
its PSF's mass on the HR grid (weight 0 below :data:`MIN_MASS` or outside the stack's mask).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from irem.acquisition.grid import Grid
from irem.acquisition.simulate import FWHM_TO_SIGMA
from irem.errors import InputError
from irem.volume import Stack, voxel_sizes

PSFS: tuple[str, ...] = ("gaussian", "box")
GAUSS_CUTOFF = 4.0  # Gaussian PSFs are cut at this many sigma (as irem.acquisition.simulate does)
MIN_MASS = 0.5  # LR voxels with less of their PSF on the HR grid are ignored
IN_PLANE_FWHM = 1.2  # NiftyMIC: in-plane FWHM = 1.2 x in-plane spacing


def psf_widths(stack: Stack, psf: str) -> np.ndarray:
    """Per stack axis, in mm: the Gaussian sigma or the box width (through-plane: the thickness)."""
    if psf not in PSFS:
        raise InputError(f"unknown psf {psf!r}; choose from {', '.join(PSFS)}")
    widths = voxel_sizes(stack.affine) * (IN_PLANE_FWHM if psf == "gaussian" else 1.0)
    widths[stack.thick_axis] = stack.slice_thickness
    return widths * FWHM_TO_SIGMA if psf == "gaussian" else widths


def psf_support(width: float, psf: str) -> float:
    """Half-width of the PSF's support in the same units as ``width``."""
    return GAUSS_CUTOFF * width if psf == "gaussian" else width / 2.0


def axis_weights(n_src: int, centres: np.ndarray, width: float, psf: str) -> np.ndarray:
    """Dense 1-D PSF matrix ``(len(centres), n_src)``, in source-index units; rows sum to 1."""
    centres = np.asarray(centres, dtype=np.float64)
    support = psf_support(width, psf)
    half = int(math.ceil(support)) + 1
    base = np.floor(centres).astype(np.int64)
    offsets = np.arange(-half, half + 2)
    t = base[:, None] + offsets[None, :]  # candidate source indices, (m, taps)
    d = t - centres[:, None]
    if psf == "gaussian":
        if width <= 0:
            raise InputError(f"Gaussian PSF of non-positive width {width}")
        w = np.exp(-0.5 * (d / width) ** 2)
        w[np.abs(d) > support] = 0.0
        w /= w.sum(axis=1, keepdims=True)
    else:
        lo = np.maximum(d - 0.5, -width / 2.0)
        hi = np.minimum(d + 0.5, width / 2.0)
        w = np.clip(hi - lo, 0.0, None) / width
    out = np.zeros((len(centres), n_src), dtype=np.float64)
    rows = np.broadcast_to(np.arange(len(centres))[:, None], t.shape)
    ok = (t >= 0) & (t < n_src) & (w != 0)
    np.add.at(out, (rows[ok], t[ok]), w[ok])
    return out


def aligned_permutation(linear: np.ndarray, tol: float = 1e-6) -> tuple[int, int, int] | None:
    """The HR axis of each stack axis if ``linear`` is a scaled signed permutation, else None."""
    perm = []
    for a in range(3):
        col = np.abs(linear[:, a])
        i = int(np.argmax(col))
        if np.any(np.delete(col, i) > tol * col[i]):
            return None
        perm.append(i)
    return tuple(perm) if sorted(perm) == [0, 1, 2] else None  # type: ignore[return-value]


def _phase(to_hr: np.ndarray, ratio: np.ndarray, pad: np.ndarray) -> np.ndarray:
    """Sub-voxel shift of the intermediate grid that puts its points on whole HR indices."""
    origin = to_hr @ np.append(-pad / ratio, 1.0)  # HR index of intermediate point 0 (no shift)
    phase = np.zeros(3)
    for a in range(3):
        i = int(np.argmax(np.abs(to_hr[:3, a])))
        step = to_hr[i, a] / ratio[a]  # HR index per intermediate voxel along that axis
        frac = origin[i] - np.floor(origin[i])
        phase[a] = ((frac if step > 0 else 1.0 - frac) / abs(step)) % 1.0
    return phase


class AxisMap:
    """A 1-D PSF matrix ``W`` (m x n) and its transpose along one axis of a 3-D tensor: as strided
    slices when every row holds the same taps shifted by a whole stride, else densely."""

    def __init__(self, w: np.ndarray, device: torch.device, dtype: torch.dtype) -> None:
        self.m, self.n = w.shape
        self.identity = self.m == self.n and bool(np.array_equal(w, np.eye(self.m)))
        self.dense = torch.as_tensor(w, dtype=dtype, device=device)
        self.taps: list[tuple[int, float]] | None = None
        self.stride = 0
        band = _as_band(w)
        if band is not None:
            self.start, self.stride, weights = band
            self.taps = [(self.start + i, float(v)) for i, v in enumerate(weights) if v != 0.0]

    def _ranges(self, first: int) -> tuple[int, int, int, int]:
        """For a tap at source index ``first + stride * j``: the valid rows ``j0:j1``, sources."""
        s = self.stride
        j0 = max(0, -(first // s)) if first < 0 else 0
        j1 = min(self.m, (self.n - 1 - first) // s + 1) if self.n - 1 >= first else 0
        return j0, j1, first + s * j0, first + s * (j1 - 1) + 1

    def apply(self, u: torch.Tensor, axis: int, transpose: bool = False) -> torch.Tensor:
        """``W`` (``W^T`` with ``transpose``) along ``axis``."""
        if self.identity:
            return u
        if self.taps is None:
            w = self.dense.T if transpose else self.dense
            return torch.movedim(torch.tensordot(w, u, dims=([1], [axis])), 0, axis).contiguous()
        shape = list(u.shape)
        shape[axis] = self.n if transpose else self.m
        out = torch.zeros(shape, dtype=u.dtype, device=u.device)
        for first, weight in self.taps:
            j0, j1, t0, t1 = self._ranges(first)
            if j1 <= j0:
                continue
            idx = [slice(None)] * 3
            idx[axis] = slice(t0, t1, self.stride)
            if transpose:
                out[tuple(idx)].add_(u.narrow(axis, j0, j1 - j0), alpha=weight)
            else:
                out.narrow(axis, j0, j1 - j0).add_(u[tuple(idx)], alpha=weight)
        return out


def _as_band(w: np.ndarray) -> tuple[int, int, np.ndarray] | None:
    """``(start, stride, taps)`` with ``W[j, start + stride*j + i] = taps[i]`` if that rebuilds
    ``W`` exactly (cut at the edges), else ``None``."""
    m, n = w.shape
    if m < 2:
        return None
    rows = [np.flatnonzero(r) for r in w]
    full = [j for j, r in enumerate(rows) if len(r) and r[0] > 0 and r[-1] < n - 1]
    if len(full) < 2:
        return None
    j, k = full[0], full[1]
    if rows[j].size != rows[k].size:
        return None
    stride_f = (rows[k][0] - rows[j][0]) / (k - j)
    stride = int(round(stride_f))
    if stride < 1 or stride != stride_f:
        return None
    taps = w[j, rows[j][0] : rows[j][-1] + 1]
    start = int(rows[j][0]) - stride * j
    rebuilt = np.zeros_like(w)
    for i, v in enumerate(taps):
        t = start + stride * np.arange(m) + i
        ok = (t >= 0) & (t < n)
        rebuilt[np.arange(m)[ok], t[ok]] = v
    return (start, stride, taps) if np.array_equal(rebuilt, w) else None


class StackOperator:
    """The linear map ``x`` (HR grid) -> predicted LR stack, and its adjoint."""

    def __init__(
        self, stack: Stack, grid: Grid, psf: str = "gaussian", device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:  # fmt: skip
        self.device = torch.device(device)
        self.dtype = dtype
        self.hr_shape = tuple(int(s) for s in grid.shape)
        self.lr_shape = tuple(int(s) for s in stack.shape)
        widths_mm = psf_widths(stack, psf)
        to_hr = np.linalg.inv(np.asarray(grid.affine, dtype=np.float64)) @ stack.to_normalised
        self.perm = aligned_permutation(to_hr[:3, :3])
        self.sample_grid: torch.Tensor | None = None
        if self.perm is not None:
            mats = self._aligned(self.perm, grid, to_hr, widths_mm, psf)
        else:
            mats = self._oblique(stack, grid, to_hr, widths_mm, psf)
        self.maps = [AxisMap(m, self.device, dtype) for m in mats]
        # Forward: apply the most reducing axis first; adjoint: the reverse.
        self.order = sorted(range(3), key=lambda a: mats[a].shape[0] / mats[a].shape[1])
        self.inv_perm = None if self.perm is None else tuple(int(i) for i in np.argsort(self.perm))
        ones = torch.ones(self.hr_shape, dtype=dtype, device=self.device)
        mass = self._blur(ones)
        keep = mass >= MIN_MASS
        if stack.mask is not None:  # masked-out LR voxels: weight 0 in the data term
            keep &= torch.as_tensor(stack_mask(stack, bool), device=self.device)
        self.valid = keep
        self.scale = torch.where(keep, 1.0 / torch.where(keep, mass, 1.0), 0.0).to(dtype)

    def _aligned(
        self, perm: tuple[int, ...], grid: Grid, to_hr: np.ndarray, widths_mm: np.ndarray, psf: str
    ) -> list[np.ndarray]:
        """The PSF matrices when the source grid is the HR grid, axes permuted to the stack's."""
        hr_spacing = voxel_sizes(grid.affine)
        mats = []
        for a, i in enumerate(perm):
            centres = to_hr[i, 3] + to_hr[i, a] * np.arange(self.lr_shape[a])
            mats.append(axis_weights(self.hr_shape[i], centres, widths_mm[a] / hr_spacing[i], psf))
        return mats

    def _oblique(
        self, stack: Stack, grid: Grid, to_hr: np.ndarray, widths_mm: np.ndarray, psf: str
    ) -> list[np.ndarray]:
        """The PSF matrices on an intermediate grid along the stack's axes, about the HR spacing."""
        h = float(voxel_sizes(grid.affine).min())
        spacing = voxel_sizes(stack.affine)
        ratio = np.maximum(1, np.round(spacing / h)).astype(np.int64)
        d = spacing / ratio  # intermediate spacing (mm)
        pad = np.array([int(math.ceil(psf_support(widths_mm[a] / d[a], psf))) for a in range(3)])
        phase = _phase(to_hr, ratio, pad)
        src_shape = ratio * (np.asarray(self.lr_shape) - 1) + 2 + 2 * pad
        self.src_shape = tuple(int(s) for s in src_shape)
        mats = []
        for a in range(3):
            centres = pad[a] + phase[a] + ratio[a] * np.arange(self.lr_shape[a])
            mats.append(axis_weights(self.src_shape[a], centres, widths_mm[a] / d[a], psf))
        # Intermediate index u -> LR index (u - pad - phase) / ratio -> HR index.
        src_to_lr = np.diag(np.append(1.0 / ratio, 1.0))
        src_to_lr[:3, 3] = -(pad + phase) / ratio
        m = torch.as_tensor(to_hr @ src_to_lr, dtype=torch.float64)
        idx = [torch.arange(n, dtype=torch.float64) for n in self.src_shape]
        u = torch.stack(torch.meshgrid(*idx, indexing="ij"), dim=-1)  # (*src_shape, 3)
        n = torch.as_tensor(self.hr_shape, dtype=torch.float64)
        norm = 2.0 * (u @ m[:3, :3].T + m[:3, 3]) / torch.clamp(n - 1, min=1) - 1.0
        # grid_sample's coordinates (1, *src_shape, 3) are (x, y, z) = (last, middle, first) axis.
        self.sample_grid = norm.flip(-1).to(self.dtype).to(self.device).unsqueeze(0)
        return mats

    def _to_source(self, x: torch.Tensor) -> torch.Tensor:
        if self.sample_grid is None:
            return x.permute(*self.perm)  # type: ignore[misc]
        u = F.grid_sample(x[None, None], self.sample_grid, padding_mode="zeros", align_corners=True)
        return u[0, 0]

    def _from_source(self, u: torch.Tensor) -> torch.Tensor:
        if self.sample_grid is None:
            return u.permute(*self.inv_perm).contiguous()  # type: ignore[misc]
        x = torch.zeros((1, 1, *self.hr_shape), dtype=u.dtype, device=u.device)
        grad_in, _ = torch.ops.aten.grid_sampler_3d_backward(
            u[None, None].contiguous(), x, self.sample_grid, 0, 0, True, [True, False]
        )
        return grad_in[0, 0]

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        u = self._to_source(x)
        for a in self.order:
            u = self.maps[a].apply(u, a)
        return u.contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted LR stack ``A x`` (zero at ignored LR voxels)."""
        return self._blur(x) * self.scale

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^T y`` on the HR grid."""
        u = y * self.scale
        for a in reversed(self.order):
            u = self.maps[a].apply(u, a, transpose=True)
        return self._from_source(u)


def stack_mask(stack: Stack, dtype: type) -> np.ndarray:
    """The stack's mask as a ``dtype`` array (checked against the stack's shape)."""
    mask = np.asarray(stack.mask, dtype=dtype)
    if mask.shape != tuple(stack.shape):
        raise InputError(f"stack {stack.name!r}: mask shape {mask.shape} is not {stack.shape}")
    return mask


class MultiStackOperator:
    """All stacks together: ``A x = (A_1 x, ..., A_K x)``, and the norm of ``sum A_k^T A_k``."""

    def __init__(
        self, stacks: Sequence[Stack], grid: Grid, psf: str = "gaussian",
        device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    ) -> None:  # fmt: skip
        if len(stacks) == 0:
            raise InputError("no stacks given")
        self.ops = [StackOperator(s, grid, psf, device, dtype) for s in stacks]
        self.hr_shape = self.ops[0].hr_shape
        self.device = torch.device(device)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[A_k x]`` for every stack."""
        return [op.forward(x) for op in self.ops]

    def adjoint(self, ys: Sequence[torch.Tensor]) -> torch.Tensor:
        """``sum_k A_k^T y_k``."""
        out = self.ops[0].adjoint(ys[0])  # a new tensor (the adjoint starts with y * scale)
        for op, y in zip(self.ops[1:], ys[1:], strict=True):
            out += op.adjoint(y)
        return out

    def data(self, stacks: Sequence[Stack]) -> list[torch.Tensor]:
        """The stacks' data as tensors, zeroed at the LR voxels the model ignores."""
        return [torch.as_tensor(np.ascontiguousarray(s.data), device=self.device).to(self.dtype)
                * op.valid for op, s in zip(self.ops, stacks, strict=True)]  # fmt: skip

    def norm(self, iterations: int = 20, rtol: float = 1e-3) -> float:
        """Largest eigenvalue of ``sum_k A_k^T A_k`` by power iteration from a constant volume."""
        v = torch.ones(self.hr_shape, dtype=self.dtype, device=self.device)
        v /= torch.linalg.vector_norm(v)
        est = 0.0
        for _ in range(iterations):
            w = self.adjoint(self.forward(v))
            new = float(torch.sum(v * w))
            nw = float(torch.linalg.vector_norm(w))
            if nw == 0:
                return 0.0
            v = w / nw
            if abs(new - est) <= rtol * abs(new):
                return new
            est = new
        return est


def gradient(x: torch.Tensor) -> torch.Tensor:
    """Forward differences along the 3 axes (Neumann: zero at the last index), ``(3, *shape)``."""
    g = torch.zeros((3, *x.shape), dtype=x.dtype, device=x.device)
    for a in range(3):
        g[a].narrow(a, 0, x.shape[a] - 1).copy_(torch.diff(x, dim=a))
    return g


def gradient_adjoint(g: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`gradient` (minus the divergence)."""
    out = torch.zeros(g.shape[1:], dtype=g.dtype, device=g.device)
    for a in range(3):
        d = g[a].narrow(a, 0, out.shape[a] - 1)
        out.narrow(a, 0, d.shape[a]).sub_(d)
        out.narrow(a, 1, d.shape[a]).add_(d)
    return out
