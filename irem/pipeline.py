"""The steps every reconstruction method shares: load stacks, normalise them, choose the grid,
run the method, write the result and its sidecar. Each method (IREM, B-spline, SRR) sees identical
inputs through :func:`run`, which is the whole flow of ``irem reconstruct`` and ``irem baseline``.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from irem import __version__
from irem.errors import InputError
from irem.grid import Grid, check_overlap, isotropic_grid, reference_grid
from irem.volume import (
    Stack,
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
    paths: list[str], stacks: list[Stack], fixed_index: int
) -> list[dict[str, Any]]:
    """Per input stack: path, name, shape, spacing, whether fixed, and its transform to N."""
    return [
        {
            "path": str(p),
            "name": s.name,
            "shape": list(s.shape),
            "spacing_mm": [float(v) for v in s.spacing],
            "fixed": i == fixed_index,
            "transform_to_normalised": s.transform.tolist(),
        }
        for i, (p, s) in enumerate(zip(paths, stacks, strict=True))
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
    """What the user asked for: input stacks, output file, target grid and normalisation."""

    stacks: list[str]
    output: str
    fixed_index: int = 0
    register: bool = True
    seed: int = 0
    reference: str | None = None
    spacing: float | None = None


@dataclass(frozen=True)
class Outcome:
    """What :func:`run` wrote and the inputs the method saw."""

    output: Path
    stacks: list[Stack]
    grid: Grid


def prepare(req: Request) -> tuple[Path, list[Stack], Grid]:
    """Check the output path, load and normalise the stacks, and choose the target grid."""
    out = check_output_path(req.output)
    stacks = normalise(load_stacks(req.stacks), req.fixed_index, req.register, seed=req.seed)
    grid = target_grid(stacks[req.fixed_index], req.reference, req.spacing)
    log.info("target grid %s voxels (%.2f M)", "x".join(map(str, grid.shape)), grid.size / 1e6)
    return out, stacks, grid


def run(req: Request, name: str, method: Method) -> Outcome:
    """Load -> normalise/register -> target grid -> ``method`` -> NIfTI + JSON sidecar.

    Args:
        req: the inputs, output and grid.
        name: the method's name in the sidecar.
        method: the reconstruction itself.

    Returns:
        The output path, the normalised stacks and the grid.
    """
    t_start = time.perf_counter()
    out, stacks, grid = prepare(req)
    hr, extra = method(stacks, grid)
    tfms = save_transforms(out, stacks, req.fixed_index) if req.register else []
    sidecar = {
        "method": name,
        "inputs": describe_inputs(req.stacks, stacks, req.fixed_index),
        "registered": req.register,
        "transform_files": tfms,
        "seed": req.seed,
        **extra,
    }
    write_result(out, hr, grid, sidecar, t_start)
    log.info("wrote %s", out)
    return Outcome(out, stacks, grid)
