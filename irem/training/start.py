"""Start images of the grid INR (``train.base``: it represents ``start image + network``): SRR-TV
of the LR voxels the network fits (held-out voxels left out, so that step 0 is scored on voxels it
has not seen) at the weight of ``train.base_alphas`` that predicts them best, or a user's volume."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from irem.acquisition.grid import Grid
from irem.errors import InputError
from irem.training.config import TrainConfig
from irem.training.train import fitted_masks
from irem.volume import Stack


def with_masks(stacks: Sequence[Stack], masks: Sequence[np.ndarray]) -> list[Stack]:
    """The stacks restricted to ``masks`` (and their own), masked-out voxels filled with the mean
    of their kept 3x3x3 neighbours, so that nothing computed from them depends on those voxels."""
    from scipy.ndimage import uniform_filter

    out = []
    for s, m in zip(stacks, masks, strict=True):
        mask = m if s.mask is None else np.asarray(s.mask, dtype=bool) & m
        data = np.where(mask, s.data, 0.0).astype(np.float64)
        weight = uniform_filter(mask.astype(np.float64), size=3, mode="nearest")
        local = uniform_filter(data, size=3, mode="nearest")
        filled = np.where(weight > 0, local / np.maximum(weight, 1e-12), 0.0)
        data = np.where(mask, s.data, filled).astype(np.float32)
        out.append(dataclasses.replace(s, data=data, mask=mask))
    return out


def held_out_error(
    image: np.ndarray, stacks: Sequence[Stack], held: Sequence[np.ndarray], op: Any
) -> float:
    """MSE of ``image``'s LR voxels predicted by ``op`` at the ``held`` voxels it covers."""
    x = torch.as_tensor(np.ascontiguousarray(image, dtype=np.float32), device=op.device)
    total, count = 0.0, 0
    for o, s, h, pred in zip(op.ops, stacks, held, op.forward(x), strict=True):
        sel = torch.as_tensor(h, device=op.device) & o.valid
        y = torch.as_tensor(np.ascontiguousarray(s.data, dtype=np.float32), device=op.device)
        total += float((pred - y)[sel].square().sum())
        count += int(sel.sum())
    return total / max(count, 1)


def srr_tv_start(
    stacks: Sequence[Stack], grid: Grid, t: TrainConfig, seed: int, device: torch.device
) -> tuple[np.ndarray, dict[str, Any]]:
    """SRR-TV (box PSF) of the LR voxels a run with ``seed`` fits, at the ``t.base_alphas`` weight
    that predicts its held-out voxels best (none held out: the first), and the sidecar's record."""
    from baselines.bspline import bspline
    from baselines.operators import MultiStackOperator
    from baselines.srr import srr

    masks = fitted_masks(list(stacks), t, seed)
    fitted = list(stacks) if masks is None else with_masks(stacks, masks)
    init = bspline(fitted, grid)
    choose = masks is not None and len(t.base_alphas) > 1
    if choose:  # the held-out voxels and the forward model that predicts them, made once
        held = [~m for m in masks]  # type: ignore[union-attr]
        op = MultiStackOperator(stacks, grid, psf="box", device=device)
    tried: list[dict[str, float]] = []
    best: tuple[float, np.ndarray, dict[str, Any]] | None = None
    for alpha in t.base_alphas if masks is not None else t.base_alphas[:1]:
        image, info = srr(fitted, grid, alpha=alpha, regulariser="tv", iterations=t.base_iterations,
                          psf="box", device=device, init=init, progress=False)  # fmt: skip
        error = held_out_error(image, stacks, held, op) if choose else float("nan")
        tried.append({"alpha": float(alpha), "held_out_mse": error})
        if best is None or error < best[0]:
            best = (error, image, info)
    assert best is not None
    _, image, info = best
    return image, {"method": "srr_tv", "alpha": info["alpha"], "alphas_tried": tried,
                   "iterations": info["iterations"], "relative_residual": info["relative_residual"],
                   "held_out_excluded": masks is not None}  # fmt: skip


def file_start(path: str, grid: Grid) -> tuple[np.ndarray, dict[str, Any]]:
    """A user's start image, resampled (trilinear) onto ``grid`` in world space."""
    import nibabel as nib
    from scipy.ndimage import map_coordinates

    try:
        img = nib.load(path)
        data = np.asarray(img.dataobj, dtype=np.float32)
    except (OSError, ValueError) as exc:
        raise InputError(f"--start-image {path}: {exc}") from None
    if data.ndim != 3:
        raise InputError(f"--start-image {path}: not a 3-D image")
    to_vox = np.linalg.inv(img.affine) @ grid.affine
    ijk = np.indices(grid.shape, dtype=np.float64).reshape(3, -1)
    coords = to_vox[:3, :3] @ ijk + to_vox[:3, 3:4]
    image = map_coordinates(data, coords, order=1, mode="nearest").reshape(grid.shape)
    return image.astype(np.float32), {"method": "file", "file": str(path)}


def make_start(
    stacks: Sequence[Stack],
    grid: Grid,
    t: TrainConfig,
    seed: int,
    device: torch.device,
    path: str | None = None,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """A run's start image: the file at ``path``, else ``t.base``'s (``none``: no image)."""
    t0 = time.perf_counter()
    if path is not None:
        image, info = file_start(path, grid)
    elif t.base == "srr_tv":
        image, info = srr_tv_start(stacks, grid, t, seed, device)
    else:
        return None, {}
    info["seconds"] = time.perf_counter() - t0
    return image, info
