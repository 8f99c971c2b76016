"""Multi-stack cubic B-spline interpolation: every stack resampled onto the grid, averaged where
covered."""

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
    plane = np.stack(
        np.meshgrid(np.arange(shape[1]), np.arange(shape[2]), indexing="ij"), axis=-1
    ).reshape(-1, 2)
    rows = max(1, _CHUNK // max(1, plane.shape[0]))
    for stack in stacks:
        data = np.asarray(stack.data, dtype=np.float64)
        to_stack = np.linalg.inv(stack.to_normalised) @ np.asarray(grid.affine, dtype=np.float64)
        perm = aligned_permutation(to_stack[:3, :3])
        if perm is not None:
            vals, cover = _separable(data, to_stack, perm, shape, order)
            if stack.mask is not None:
                cover &= (
                    _separable(stack_mask(stack, np.float64), to_stack, perm, shape, 0)[0] > 0.5
                )
            total += (vals * cover).reshape(total.shape)
            count += cover.reshape(count.shape)
            continue
        _accumulate_oblique(stack, data, to_stack, order, plane, rows, total, count)
    out = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return out.reshape(shape).astype(np.float32)


def _accumulate_oblique(
    stack: Stack, data: np.ndarray, to_stack: np.ndarray, order: int, plane: np.ndarray, rows: int,
    total: np.ndarray, count: np.ndarray,
) -> None:  # fmt: skip
    """Add one oblique stack's spline values and coverage to ``total`` and ``count``, by rows."""
    shape0 = total.shape[0]
    coeffs = ndimage.spline_filter(data, order=order, mode=BOUNDARY_MODE) if order > 1 else data
    for start in range(0, shape0, rows):
        stop = min(shape0, start + rows)
        idx = np.concatenate(
            [
                np.repeat(np.arange(start, stop), plane.shape[0])[:, None],
                np.tile(plane, (stop - start, 1)),
            ],
            axis=1,
        )
        vox = apply_affine(to_stack, idx)
        cover = inside(stack, vox)
        if stack.mask is not None:
            cover[cover] = _nearest(stack_mask(stack, np.float64), vox[cover]) > 0.5
        if not cover.any():
            continue
        vals = ndimage.map_coordinates(
            coeffs, vox[cover].T, order=order, mode=BOUNDARY_MODE, prefilter=False
        )
        block_total = total[start:stop].reshape(-1)  # views: rows are contiguous
        block_count = count[start:stop].reshape(-1)
        block_total[cover] += vals
        block_count[cover] += 1


def _nearest(image: np.ndarray, vox: np.ndarray) -> np.ndarray:
    """Nearest-neighbour values of ``image`` at continuous voxel indices ``vox`` ``(n, 3)``."""
    return ndimage.map_coordinates(image, vox.T, order=0, mode="nearest", prefilter=False)


def _axis_matrix(n: int, q: np.ndarray, order: int) -> np.ndarray:
    """1-D spline interpolation as a matrix ``(len(q), n)``: row ``i`` evaluates at ``q[i]``."""
    eye = np.eye(n)
    coeffs = ndimage.spline_filter1d(eye, order, axis=0, mode=BOUNDARY_MODE) if order > 1 else eye
    cols = [
        ndimage.map_coordinates(
            coeffs[:, j], q[None, :], order=order, mode=BOUNDARY_MODE, prefilter=False
        )
        for j in range(n)
    ]
    return np.stack(cols, axis=1)


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
        view = [1, 1, 1]
        view[i] = shape[i]
        cover &= ok.reshape(view)
    return out, cover
