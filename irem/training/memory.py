"""Peak-memory estimates of the methods, checked before any work starts: this process's resident
memory now (the method's modules imported) plus the arrays the method holds at its peak, counted
from the voxels and the network's parameters (measured by ``benchmarks/memory_estimate.py``)."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irem.acquisition.grid import Grid
from irem.errors import InputError
from irem.volume import Stack, apply_affine

log = logging.getLogger(__name__)

GB = 1e9
BSPLINE_BYTES_PER_VOXEL = 52  # float64 sum and resampling intermediates, int32 count, result
SRR_BYTES_PER_VOXEL = {"tk1": 96, "tv": 130}  # float32 solver fields; TV adds ADMM's
TORCH_RUNTIME_BYTES = 20 * 2**20  # thread pools, allocator caches
SRR_BYTES_PER_LR_VOXEL = 24  # data, residuals, PSF scale, validity
OBLIQUE_BYTES_PER_SOURCE_POINT = 72  # an oblique stack's intermediate grid
INR_BYTES_PER_LR_VOXEL = 48  # float32 coordinates and intensity, int64 stack and order index
BYTES_PER_PARAMETER = 16  # float32 weight, gradient and Adam's two moments
ACTIVATION_BYTES = 18  # kept for the backward pass, per point and unit of width and depth


@dataclass(frozen=True)
class MemoryEstimate:
    """A method's estimated peak resident memory: this process now plus the method's arrays."""

    method: str
    baseline_bytes: int
    working_bytes: int
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return self.baseline_bytes + self.working_bytes

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "estimate_bytes": self.total_bytes,
                "baseline_bytes": self.baseline_bytes, "working_bytes": self.working_bytes,
                "parts": dict(self.parts)}  # fmt: skip


def _proc_bytes(path: str, key: str, what: str) -> int:
    """The ``key`` line (kB) of a /proc file in bytes; refuses a missing file or line."""
    if Path(path).is_file():
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise InputError(f"cannot tell {what} (no psutil, no {path})")


def process_rss() -> int:
    """This process's resident set size (bytes): psutil if installed, else /proc/self/status."""
    try:
        import psutil
    except ImportError:
        return _proc_bytes("/proc/self/status", "VmRSS:", "this process's memory use")
    return int(psutil.Process().memory_info().rss)


def available_memory() -> tuple[int, str]:
    """Memory available to a new allocation (bytes) and where the number came from."""
    try:
        import psutil
    except ImportError:
        path = "/proc/meminfo"
        return _proc_bytes(path, "MemAvailable:", "the available memory"), path
    return int(psutil.virtual_memory().available), "psutil"


def _lr_voxels(stacks: list[Stack]) -> int:
    return int(sum(s.data.size for s in stacks))


def _oblique_points(stacks: list[Stack], grid: Grid) -> int:
    """Points of the intermediate grids of the stacks not parallel to the grid."""
    from baselines.operators import aligned_permutation

    h = float(np.sqrt((grid.affine[:3, :3] ** 2).sum(axis=0)).min())
    total = 0
    for s in stacks:
        to_hr = np.linalg.inv(grid.affine) @ s.to_normalised
        if aligned_permutation(to_hr[:3, :3]) is None:
            total += int(np.prod(np.maximum(1, np.round(s.spacing / h)) * np.asarray(s.shape)))
    return total


def bspline_bytes(stacks: list[Stack], grid: Grid) -> dict[str, int]:
    """The B-spline's arrays at its peak."""
    return {"bspline_grid": BSPLINE_BYTES_PER_VOXEL * grid.size}


def srr_bytes(stacks: list[Stack], grid: Grid, regulariser: str) -> dict[str, int]:
    """SRR's arrays at its peak (the B-spline start image's result is kept alongside)."""
    return {
        "srr_grid": SRR_BYTES_PER_VOXEL[regulariser] * grid.size,
        "srr_lr": SRR_BYTES_PER_LR_VOXEL * _lr_voxels(stacks),
        "srr_oblique": OBLIQUE_BYTES_PER_SOURCE_POINT * _oblique_points(stacks, grid),
        "torch_runtime": TORCH_RUNTIME_BYTES,
    }


def estimate(method: str, parts: dict[str, int]) -> MemoryEstimate:
    """This process's RSS now plus ``parts`` (bytes)."""
    return MemoryEstimate(method, process_rss(), int(sum(parts.values())), parts)


def bspline_model() -> Callable[[list[Stack], Grid], MemoryEstimate]:
    """The B-spline baseline's memory model."""
    import baselines.bspline  # noqa: F401  (its libraries count in the baseline)

    return lambda stacks, grid: estimate("bspline", bspline_bytes(stacks, grid))


def srr_model(regulariser: str) -> Callable[[list[Stack], Grid], MemoryEstimate]:
    """SRR's memory model (``tk1`` or ``tv``): the larger of its B-spline start and its solver."""
    import baselines.srr  # noqa: F401

    def model(stacks: list[Stack], grid: Grid) -> MemoryEstimate:
        solver, start = srr_bytes(stacks, grid, regulariser), bspline_bytes(stacks, grid)
        return estimate(f"srr-{regulariser}", max(solver, start, key=lambda p: sum(p.values())))

    return model


def _normaliser(stacks: list[Stack]) -> Any:
    """The INR's normaliser (as :func:`irem.training.train.training_data`), from the corners."""
    from irem.training.reconstruct import Normaliser

    unit = np.array(list(itertools.product((0, 1), repeat=3)))
    corners = [apply_affine(s.to_normalised, unit * (np.asarray(s.shape) - 1)) for s in stacks]
    return Normaliser.of_box(np.concatenate(corners), 1.0)


def inr_bytes(cfg: Any, stacks: list[Stack], grid: Grid) -> dict[str, int]:
    """The INR's arrays: parameters with gradients and Adam's moments, the LR voxels, one batch's
    activations, the output, and a grid INR's SRR-TV start (the allocator keeps what SRR freed)."""
    from irem.training.reconstruct import build_model

    model = build_model(cfg, 0, _normaliser(stacks))
    n_params = sum(p.numel() for p in model.parameters())
    del model
    m, t = cfg.model, cfg.train
    spacing = float(t.profile_spacing_mm or 0.0)  # profile points follow the slice thickness
    spaced = int(math.ceil(max(s.slice_thickness for s in stacks) / spacing)) if spacing > 0 else 1
    points = t.batch_size * max(1, t.profile_points, spaced)
    if m.kind == "grid":
        layer_units = m.levels * m.features * 8 + m.width * max(1, m.hidden_layers)
    else:
        layer_units = m.fourier_dim + m.width * m.depth
    parts = {
        "inr_parameters": BYTES_PER_PARAMETER * n_params,
        "inr_lr": INR_BYTES_PER_LR_VOXEL * _lr_voxels(stacks),
        "inr_activations": ACTIVATION_BYTES * points * layer_units,
        "inr_output": 8 * grid.size,
        "torch_runtime": TORCH_RUNTIME_BYTES,
    }
    if m.kind == "grid" and t.base == "srr_tv":
        parts.update(srr_bytes(stacks, grid, "tv"))
        parts["inr_start_images"] = 8 * grid.size
    return parts


def inr_model(cfg: Any) -> Callable[[list[Stack], Grid], MemoryEstimate]:
    """The INR's memory model for configuration ``cfg`` (the paper's network or the grid INR)."""
    import irem.training.train  # noqa: F401

    name = "irem-grid" if cfg.model.kind == "grid" else "irem-paper"
    return lambda stacks, grid: estimate(name, inr_bytes(cfg, stacks, grid))


def check_memory(est: MemoryEstimate, max_memory_gb: float | None = None) -> dict[str, Any]:
    """Log ``est`` and refuse it above the available memory or ``max_memory_gb``; its record."""
    available, source = available_memory()
    need = est.total_bytes
    parts = ", ".join(f"{k} {v / GB:.2f}" for k, v in est.parts.items())
    cap = "" if max_memory_gb is None else f", --max-memory {max_memory_gb:g} GB"
    log.debug("estimated peak memory of %s: %.2f GB (%.2f GB now + %.2f GB: %s); available %.2f GB "
              "(%s)%s", est.method, need / GB, est.baseline_bytes / GB, est.working_bytes / GB,
              parts, available / GB, source, cap)  # fmt: skip
    over = None
    if max_memory_gb is not None and need > max_memory_gb * GB:
        over = f"more than --max-memory {max_memory_gb:g} GB"
    elif need > available:
        over = f"more than the {available / GB:.2f} GB available"
    if over is not None:
        raise InputError(f"{est.method} needs about {need / GB:.2f} GB, {over}: use a coarser "
                         "--spacing or a smaller field of view")  # fmt: skip
    return {**est.to_dict(), "available_bytes": available, "available_from": source,
            "max_memory_gb": max_memory_gb}  # fmt: skip
