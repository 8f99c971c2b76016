"""Target grids in normalised space N (the fixed stack's world space), on which every method's HR
reconstruction is evaluated, and the geometry that relates them to stacks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel.affines import from_matvec

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
    """An isotropic grid of ``spacing`` mm along the fixed stack's axes, centred on its field of
    view and covering it (voxel edge to voxel edge) in whole HR voxels."""
    if not spacing > 0:
        raise InputError(f"--spacing must be positive, got {spacing}")
    sizes = voxel_sizes(fixed.affine)
    shape = np.maximum(1, np.round(np.asarray(fixed.shape) * sizes / spacing).astype(int))
    if np.prod(shape) > 2_000_000_000:
        raise InputError(f"--spacing {spacing} mm gives an absurd grid of {tuple(shape)} voxels")
    centre = apply_affine(fixed.to_normalised, (np.asarray(fixed.shape) - 1) / 2.0)
    linear = fixed.transform[:3, :3] @ (fixed.affine[:3, :3] / sizes) * spacing
    affine = from_matvec(linear, centre - linear @ ((shape - 1) / 2.0))
    return Grid(shape=tuple(int(s) for s in shape), affine=affine)  # type: ignore[arg-type]


def to_stack_voxels(stack: Stack, points: np.ndarray) -> np.ndarray:
    """Continuous voxel indices in ``stack`` of normalised-space ``points`` ``(n, 3)``."""
    return apply_affine(np.linalg.inv(stack.to_normalised), points)


def inside(stack: Stack, voxels: np.ndarray) -> np.ndarray:
    """Whether continuous voxel indices fall inside the stack's field of view (edge to edge)."""
    return np.all((voxels >= -0.5) & (voxels <= np.asarray(stack.shape) - 0.5), axis=-1)


def stack_points(stack: Stack) -> np.ndarray:
    """Normalised-space coordinates of all voxel centres of a stack, ``(n, 3)``."""
    return voxel_centres(stack.shape, stack.to_normalised)


def check_overlap(stacks: list[Stack], fixed_index: int = 0) -> None:
    """Refuse a stack with under 1% of its voxel centres in the fixed stack's field of view."""
    fixed = stacks[fixed_index]
    for i, stack in enumerate(stacks):
        if i == fixed_index:
            continue
        step = max(1, int(round((stack.data.size / 200_000) ** (1 / 3))))  # every step-th voxel
        shape = stack.data[::step, ::step, ::step].shape
        to_n = stack.transform @ (stack.affine @ np.diag([step, step, step, 1.0]))
        frac = float(inside(fixed, to_stack_voxels(fixed, voxel_centres(shape, to_n))).mean())
        if frac < 0.01:
            raise InputError(f"stack {stack.name!r} does not overlap the fixed stack "
                             f"{fixed.name!r} ({100 * frac:.1f}% of its voxels inside the fixed "
                             "field of view)")
