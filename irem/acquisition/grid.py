"""Target grids in normalised space and the geometry that relates them to stacks.

A :class:`Grid` is a shape and a voxel-to-world affine in normalised space N (the fixed stack's
world space). The HR reconstruction of every method is evaluated on such a grid: either exactly the
grid of a reference image, or an isotropic grid covering the fixed stack's field of view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from irem.errors import InputError
from irem.volume import Stack, Volume, apply_affine, voxel_centres, voxel_sizes


@dataclass(frozen=True)
class Grid:
    """A regular grid: ``shape`` voxels placed in normalised space by ``affine``."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def points(self) -> np.ndarray:
        """Normalised-space coordinates of every voxel centre, ``(size, 3)``, C order."""
        return voxel_centres(self.shape, self.affine)


def reference_grid(ref: Volume) -> Grid:
    """Exactly the grid of a reference image (same shape and affine)."""
    return Grid(shape=ref.shape, affine=np.array(ref.affine, dtype=np.float64))


def isotropic_grid(fixed: Stack, spacing: float) -> Grid:
    """An isotropic grid of ``spacing`` mm over the fixed stack's field of view.

    The grid keeps the fixed stack's axis directions and covers the same extent (voxel edge to
    voxel edge), rounded to whole HR voxels; it is centred on the fixed stack's field of view.
    """
    if not spacing > 0:
        raise InputError(f"--spacing must be positive, got {spacing}")
    sizes = voxel_sizes(fixed.affine)
    extent = np.asarray(fixed.shape) * sizes
    shape = np.maximum(1, np.round(extent / spacing).astype(int))
    if np.prod(shape) > 2_000_000_000:
        raise InputError(f"--spacing {spacing} mm gives an absurd grid of {tuple(shape)} voxels")
    directions = fixed.affine[:3, :3] / sizes
    to_n = fixed.transform @ fixed.affine
    centre = apply_affine(to_n, (np.asarray(fixed.shape) - 1) / 2.0)
    affine = np.eye(4)
    affine[:3, :3] = fixed.transform[:3, :3] @ directions * spacing
    affine[:3, 3] = centre - affine[:3, :3] @ ((shape - 1) / 2.0)
    return Grid(shape=tuple(int(s) for s in shape), affine=affine)  # type: ignore[arg-type]


def to_stack_voxels(stack: Stack, points: np.ndarray) -> np.ndarray:
    """Continuous voxel indices in ``stack`` of normalised-space ``points`` ``(n, 3)``."""
    return apply_affine(np.linalg.inv(stack.to_normalised), points)


def inside(stack: Stack, voxels: np.ndarray, margin: float = 0.5) -> np.ndarray:
    """Whether continuous voxel indices fall inside the stack's field of view (edge to edge)."""
    hi = np.asarray(stack.shape) - 1 + margin
    return np.all((voxels >= -margin) & (voxels <= hi), axis=-1)


def stack_points(stack: Stack) -> np.ndarray:
    """Normalised-space coordinates of all voxel centres of a stack, ``(n, 3)``."""
    return voxel_centres(stack.shape, stack.to_normalised)


def check_overlap(stacks: list[Stack], fixed_index: int = 0, min_fraction: float = 0.01) -> None:
    """Refuse stacks whose fields of view do not overlap the fixed stack's.

    Raises :class:`InputError` when fewer than ``min_fraction`` of a stack's voxel centres fall inside
    the fixed stack's field of view.
    """
    fixed = stacks[fixed_index]
    for i, stack in enumerate(stacks):
        if i == fixed_index:
            continue
        step = max(1, int(round((stack.data.size / 200_000) ** (1 / 3))))
        sub = Stack(
            data=stack.data[::step, ::step, ::step],
            affine=stack.affine @ np.diag([step, step, step, 1.0]),
            transform=stack.transform,
        )
        frac = float(inside(fixed, to_stack_voxels(fixed, stack_points(sub))).mean())
        if frac < min_fraction:
            raise InputError(
                f"stack {stack.name!r} does not overlap the fixed stack {fixed.name!r} "
                f"({100 * frac:.1f}% of its voxels inside the fixed field of view)"
            )
