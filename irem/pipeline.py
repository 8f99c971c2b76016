"""The steps every reconstruction method shares: load stacks, normalise them, choose the grid,
run the method, write the result and its sidecar. Each method (IREM, B-spline, SRR) sees identical
inputs through :func:`run`, which is the whole flow of ``irem reconstruct`` and ``irem baseline``.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from irem import __version__
from irem.errors import InputError
from irem.grid import Grid, check_overlap, isotropic_grid, reference_grid, to_stack_voxels
from irem.volume import (
    Stack,
    Volume,
    apply_affine,
    check_output_path,
    load_stack,
    load_volume,
    save_volume,
    strip_nifti_suffix,
)

log = logging.getLogger(__name__)

#: A reconstruction method: (normalised stacks, target grid) -> (HR image, sidecar fields).
Method = Callable[[list[Stack], Grid], tuple[np.ndarray, dict[str, Any]]]


def load_stacks(paths: list[str]) -> list[Stack]:
    """Read and validate the LR stacks; at least two are needed."""
    if len(paths) < 2:
        raise InputError(f"need at least two stacks, got {len(paths)}")
    stacks = [load_stack(p) for p in paths]
    names = [s.name for s in stacks]
    for i, s in enumerate(stacks):
        if names.count(s.name) > 1:
            s.name = f"{s.name}-{i}"
    return stacks


def set_thickness(stacks: list[Stack], thickness: Sequence[float] | None) -> list[Stack]:
    """Copies of ``stacks`` with their slice thickness (mm): one value for all or one per stack.

    ``None`` leaves every stack as thick as its slice spacing.
    """
    if thickness is None:
        return stacks
    values = [float(t) for t in thickness]
    if len(values) == 1:
        values *= len(stacks)
    if len(values) != len(stacks):
        raise InputError(
            f"--thickness: give one value or one per stack ({len(stacks)}), got {len(thickness)}"
        )
    for t in values:
        if not (np.isfinite(t) and t > 0):
            raise InputError(f"--thickness: {t} is not a positive number of mm")
    return [dataclasses.replace(s, thickness=t) for s, t in zip(stacks, values, strict=True)]


def _as_mask(vol: Volume, path: str) -> np.ndarray:
    """A mask image as booleans (> 0.5); refuses an empty mask."""
    mask = vol.data > 0.5
    if not mask.any():
        raise InputError(f"{path}: the mask is empty")
    return mask


def set_stack_masks(stacks: list[Stack], paths: Sequence[str] | None) -> list[Stack]:
    """Copies of ``stacks`` with a mask each, read from ``paths`` (one per stack, on its grid)."""
    if paths is None:
        return stacks
    if len(paths) != len(stacks):
        raise InputError(
            f"--stack-masks: give one mask per stack ({len(stacks)}), got {len(paths)}"
        )
    out = []
    for s, p in zip(stacks, paths, strict=True):
        vol = load_volume(p, mask=True)
        if vol.shape != s.shape or not np.allclose(vol.affine, s.affine, atol=1e-3):
            raise InputError(f"{p}: not on the grid of stack {s.name!r} (shape or affine differ)")
        out.append(dataclasses.replace(s, mask=_as_mask(vol, p)))
    return out


def target_mask(vol: Volume, path: str, grid: Grid) -> np.ndarray:
    """The mask ``vol`` on the target grid: as is when it has the grid's shape and affine,
    otherwise resampled to it (nearest neighbour, 0 outside the mask image)."""
    if vol.shape == tuple(grid.shape) and np.allclose(vol.affine, grid.affine, atol=1e-3):
        return _as_mask(vol, path)
    log.info("resampling the mask %s onto the target grid (nearest neighbour)", path)
    m = np.linalg.inv(vol.affine) @ grid.affine
    data = ndimage.affine_transform(
        vol.data,
        m[:3, :3],
        m[:3, 3],
        output_shape=tuple(grid.shape),
        order=0,
        mode="grid-constant",
        cval=0.0,
    )
    return _as_mask(Volume(data, grid.affine), f"{path} on the target grid")


def lr_voxels_near(stack: Stack, grid: Grid, mask: np.ndarray) -> np.ndarray:
    """LR voxels of ``stack`` near the target ``mask``: those containing the centre of a mask voxel
    of ``grid``, dilated by one LR voxel (3x3x3 in the stack's voxel axes). Boolean, stack shape."""
    vox = np.rint(to_stack_voxels(stack, apply_affine(grid.affine, np.argwhere(mask))))
    shape = np.asarray(stack.shape)
    vox = vox[np.all((vox >= 0) & (vox < shape), axis=1)].astype(np.int64)
    hit = np.zeros(stack.shape, dtype=bool)
    hit[tuple(vox.T)] = True
    return ndimage.binary_dilation(hit, structure=np.ones((3, 3, 3), dtype=bool))


def restrict_to_mask(stacks: list[Stack], grid: Grid, mask: np.ndarray) -> list[Stack]:
    """Copies of ``stacks`` whose masks keep only LR voxels near the target ``mask`` (and inside
    their own masks, if any)."""
    out = []
    for s in stacks:
        near = lr_voxels_near(s, grid, mask)
        out.append(dataclasses.replace(s, mask=near if s.mask is None else near & s.mask))
    if not any(s.mask.any() for s in out):  # type: ignore[union-attr]
        raise InputError("no LR voxel of any stack lies near the mask")
    return out


def normalise(stacks: list[Stack], fixed_index: int, register: bool, seed: int = 0) -> list[Stack]:
    """Put every stack into the fixed stack's world space (paper section 2.1) and check overlap."""
    if not 0 <= fixed_index < len(stacks):
        raise InputError(f"--fixed-index {fixed_index} is out of range for {len(stacks)} stacks")
    check_overlap(stacks, fixed_index)
    if register:
        from irem.registration import normalise_stacks

        stacks = normalise_stacks(stacks, fixed_index=fixed_index, register=True, seed=seed)
        check_overlap(stacks, fixed_index)
    return stacks


def target_grid(fixed: Stack, reference: str | None, spacing: float | None) -> Grid:
    """The reference image's grid, an isotropic grid over the fixed stack, or (neither given) an
    isotropic grid at the fixed stack's finest spacing."""
    if reference is not None:
        return reference_grid(load_volume(reference))
    if spacing is None:
        spacing = float(min(fixed.spacing))
    return isotropic_grid(fixed, spacing)


def save_transforms(out: Path, stacks: list[Stack], fixed_index: int) -> list[str]:
    """Write each moving stack's transform as an ITK ``.tfm`` beside the output."""
    from irem.registration import save_transform

    written = []
    stem = strip_nifti_suffix(out.name)
    for i, s in enumerate(stacks):
        if i == fixed_index:
            continue
        path = out.with_name(f"{stem}_from-{s.name}.tfm")
        save_transform(path, s.transform)
        written.append(str(path))
    return written


def provenance() -> dict[str, Any]:
    """Software versions for sidecars."""
    import nibabel
    import scipy
    import SimpleITK
    import skimage
    import torch

    return {
        "irem_bench": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": torch.__version__,
        "nibabel": nibabel.__version__,
        "SimpleITK": SimpleITK.Version_VersionString(),
        "scikit_image": skimage.__version__,
        "platform": platform.platform(),
    }


def describe_inputs(
    paths: list[str],
    stacks: list[Stack],
    fixed_index: int,
    mask_paths: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Per input stack: path, name, shape, spacing, slice thickness (and whether it was given),
    mask file and LR voxels inside the stack's mask (as the method saw it), whether fixed, and its
    transform to N."""
    masks = list(mask_paths) if mask_paths is not None else [None] * len(stacks)
    return [
        {
            "path": str(p),
            "name": s.name,
            "shape": list(s.shape),
            "spacing_mm": [float(v) for v in s.spacing],
            "slice_thickness_mm": s.slice_thickness,
            "thickness_given": s.thickness is not None,
            "mask": None if m is None else str(m),
            "lr_voxels_in_mask": None if s.mask is None else int(np.count_nonzero(s.mask)),
            "fixed": i == fixed_index,
            "transform_to_normalised": s.transform.tolist(),
        }
        for i, (p, s, m) in enumerate(zip(paths, stacks, masks, strict=True))
    ]


def write_result(
    out: Path, data: np.ndarray, grid: Grid, sidecar: dict[str, Any], t_start: float
) -> None:
    """Write the HR NIfTI (sform and qform set) and its JSON sidecar atomically."""
    sidecar = dict(sidecar)
    sidecar["grid"] = {"shape": list(grid.shape), "affine": grid.affine.tolist()}
    sidecar["software"] = provenance()
    sidecar["total_seconds"] = time.perf_counter() - t_start
    save_volume(out, data, grid.affine, sidecar=sidecar)


@dataclass(frozen=True)
class Request:
    """What the user asked for: input stacks, output file, target grid, normalisation, and the
    acquisition details: slice thickness (one value or one per stack, mm), per-stack masks and a
    mask on the target grid."""

    stacks: list[str]
    output: str
    fixed_index: int = 0
    register: bool = True
    seed: int = 0
    reference: str | None = None
    spacing: float | None = None
    thickness: tuple[float, ...] | None = None
    stack_masks: tuple[str, ...] | None = None
    mask: str | None = None


@dataclass(frozen=True)
class Prepared:
    """The inputs of a method: output path, normalised stacks, target grid and target mask."""

    output: Path
    stacks: list[Stack]
    grid: Grid
    mask: np.ndarray | None = None


@dataclass(frozen=True)
class Outcome:
    """What :func:`run` wrote and the inputs the method saw."""

    output: Path
    stacks: list[Stack]
    grid: Grid


def prepare(req: Request) -> Prepared:
    """Check the output path and masks, load the stacks with their thickness and masks, normalise
    them, and choose the target grid (and put the target mask on it)."""
    out = check_output_path(req.output)
    mask_vol = load_volume(req.mask, mask=True) if req.mask is not None else None
    stacks = set_thickness(load_stacks(req.stacks), req.thickness)
    stacks = set_stack_masks(stacks, req.stack_masks)
    stacks = normalise(stacks, req.fixed_index, req.register, seed=req.seed)
    grid = target_grid(stacks[req.fixed_index], req.reference, req.spacing)
    log.info("target grid %s voxels (%.2f M)", "x".join(map(str, grid.shape)), grid.size / 1e6)
    mask = None if mask_vol is None else target_mask(mask_vol, str(req.mask), grid)
    return Prepared(out, stacks, grid, mask)


def describe_masks(req: Request, prep: Prepared, restricted: bool) -> dict[str, Any]:
    """The sidecar's record of the masks: files, target-mask voxels, what they restricted."""
    return {
        "target": req.mask,
        "target_voxels": None if prep.mask is None else int(np.count_nonzero(prep.mask)),
        "output_zero_outside_target": prep.mask is not None,
        "lr_voxels_restricted_to_target": restricted,
        "stack_masks": None if req.stack_masks is None else list(req.stack_masks),
    }


def run(req: Request, name: str, method: Method, mask_lr_voxels: bool = False) -> Outcome:
    """Load -> normalise/register -> target grid -> ``method`` -> NIfTI + JSON sidecar.

    The target mask (``req.mask``) sets the output to 0 outside it, for every method.

    Args:
        req: the inputs, output, grid, thickness and masks.
        name: the method's name in the sidecar.
        method: the reconstruction itself.
        mask_lr_voxels: also hand the method only the LR voxels near the target mask (stack masks
            from :func:`restrict_to_mask`): IREM's training points.

    Returns:
        The output path, the normalised stacks and the grid.
    """
    t_start = time.perf_counter()
    prep = prepare(req)
    out, stacks, grid = prep.output, prep.stacks, prep.grid
    seen = stacks
    if mask_lr_voxels and prep.mask is not None:
        seen = restrict_to_mask(stacks, grid, prep.mask)
    restricted = seen is not stacks
    hr, extra = method(seen, grid)
    if prep.mask is not None:
        hr = np.where(prep.mask, hr, 0).astype(np.float32)
    tfms = save_transforms(out, stacks, req.fixed_index) if req.register else []
    sidecar = {
        "method": name,
        "inputs": describe_inputs(req.stacks, seen, req.fixed_index, req.stack_masks),
        "registered": req.register,
        "transform_files": tfms,
        "seed": req.seed,
        "masks": describe_masks(req, prep, restricted),
        **extra,
    }
    write_result(out, hr, grid, sidecar, t_start)
    log.info("wrote %s", out)
    return Outcome(out, stacks, grid)
