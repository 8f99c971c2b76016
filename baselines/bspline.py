"""Multi-stack cubic B-spline interpolation: the stacks resampled onto the grid and averaged."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from baselines.operators import aligned_permutation, stack_mask
from irem.acquisition.grid import Grid, inside
from irem.errors import InputError
from irem.volume import Stack, apply_affine

# Spline boundary condition of the prefilter and the evaluation: mirror (symmetric) extension, the
# default of scipy's spline_filter and of ITK's B-spline decomposition. It reproduces constants
# exactly even on 2-slice stacks ("nearest" is off by 2e-3 there).
BOUNDARY_MODE = "mirror"
_CHUNK = 1 << 20  # grid points resampled at a time (bounds the memory of the coordinates)


def bspline(stacks: Sequence[Stack], grid: Grid, order: int = 3) -> np.ndarray:
    """Average (float32) of the stacks resampled onto ``grid`` with B-splines of degree ``order``,
    each over the points in its field of view (edge to edge) whose nearest LR voxel is in its
    mask; points covered by no stack are 0. The slice thickness plays no part."""
    if not 0 <= order <= 5:
        raise InputError(f"B-spline order must be 0..5, got {order}")
    if len(stacks) == 0:
        raise InputError("no stacks given")
    shape = tuple(int(s) for s in grid.shape)
    total = np.zeros(shape, dtype=np.float64).reshape(shape[0], -1)
    count = np.zeros(total.shape, dtype=np.int32)
    for stack in stacks:
        data = np.asarray(stack.data, dtype=np.float64)
        to_stack = np.linalg.inv(stack.to_normalised) @ np.asarray(grid.affine, dtype=np.float64)
        perm = aligned_permutation(to_stack[:3, :3])
        if perm is None:
            _accumulate_oblique(stack, data, to_stack, order, shape, total, count)
            continue
        vals, cover = _separable(data, to_stack, perm, shape, order)
        if stack.mask is not None:
            mask = stack_mask(stack, np.float64)
            cover &= _separable(mask, to_stack, perm, shape, 0)[0] > 0.5
        total += (vals * cover).reshape(total.shape)
        count += cover.reshape(count.shape)
    out = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return out.reshape(shape).astype(np.float32)


def _accumulate_oblique(
    stack: Stack, data: np.ndarray, to_stack: np.ndarray, order: int, shape: tuple[int, ...],
    total: np.ndarray, count: np.ndarray,
) -> None:  # fmt: skip
    """Add one oblique stack's spline values and coverage to ``total`` and ``count``, by rows."""
    coeffs = ndimage.spline_filter(data, order=order, mode=BOUNDARY_MODE) if order > 1 else data
    mask = None if stack.mask is None else stack_mask(stack, np.float64)
    rows = max(1, _CHUNK // max(1, shape[1] * shape[2]))
    for start in range(0, shape[0], rows):
        stop = min(shape[0], start + rows)
        idx = np.meshgrid(np.arange(start, stop), *map(np.arange, shape[1:]), indexing="ij")
        vox = apply_affine(to_stack, np.stack(idx, axis=-1).reshape(-1, 3))
        cover = inside(stack, vox)
        if mask is not None:  # the nearest LR voxel in the mask
            near = ndimage.map_coordinates(mask, vox[cover].T, order=0, mode="nearest")
            cover[cover] = near > 0.5
        if not cover.any():
            continue
        vals = ndimage.map_coordinates(
            coeffs, vox[cover].T, order=order, mode=BOUNDARY_MODE, prefilter=False
        )
        total[start:stop].reshape(-1)[cover] += vals  # views: rows are contiguous
        count[start:stop].reshape(-1)[cover] += 1


def _axis_matrix(n: int, q: np.ndarray, order: int) -> np.ndarray:
    """1-D spline interpolation as a matrix ``(len(q), n)``: row ``i`` evaluates at ``q[i]``."""
    eye = np.eye(n)
    coeffs = ndimage.spline_filter1d(eye, order, axis=0, mode=BOUNDARY_MODE) if order > 1 else eye
    kw = {"order": order, "mode": BOUNDARY_MODE, "prefilter": False}
    return np.stack([ndimage.map_coordinates(c, q[None, :], **kw) for c in coeffs.T], axis=1)


def _separable(
    data: np.ndarray, to_stack: np.ndarray, perm: tuple[int, int, int], shape: tuple[int, ...],
    order: int,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Resampling when the stack's axes are parallel to the grid's (``perm[i]``: the stack axis
    along grid axis ``i``): a tensor product of 1-D splines, the 3-D path up to rounding."""
    out = np.transpose(data, perm)
    cover = np.ones(shape, dtype=bool)
    for i in range(3):
        a = perm[i]
        q = to_stack[a, i] * np.arange(shape[i]) + to_stack[a, 3]
        n = data.shape[a]
        out = np.moveaxis(np.tensordot(_axis_matrix(n, q, order), out, axes=([1], [i])), 0, i)
        ok = (q >= -0.5) & (q <= n - 0.5)
        cover &= ok.reshape([-1 if j == i else 1 for j in range(3)])
    return out, cover
