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


def held_out_residuals(
    image: np.ndarray, stacks: Sequence[Stack], held: Sequence[np.ndarray], op: Any
) -> np.ndarray:
    """``image``'s LR voxels predicted by ``op`` minus the data at the ``held`` voxels it covers."""
    x = torch.as_tensor(np.ascontiguousarray(image, dtype=np.float32), device=op.device)
    out = []
    for o, s, h, pred in zip(op.ops, stacks, held, op.forward(x), strict=True):
        sel = torch.as_tensor(h, device=op.device) & o.valid
        y = torch.as_tensor(np.ascontiguousarray(s.data, dtype=np.float32), device=op.device)
        out.append((pred - y)[sel].double().cpu().numpy())
    return np.concatenate(out)


def held_out_error(
    image: np.ndarray, stacks: Sequence[Stack], held: Sequence[np.ndarray], op: Any
) -> float:
    """MSE of ``image``'s LR voxels predicted by ``op`` at the ``held`` voxels it covers."""
    r = held_out_residuals(image, stacks, held, op)
    return float(np.square(r).sum() / max(r.size, 1))


def blend_weight(a: np.ndarray, b: np.ndarray) -> float:
    """The ``w`` in [0, 1] that minimises ``||w a + (1 - w) b||``: the blend of two images whose
    residuals are ``a`` and ``b`` that predicts the data best (0 if they are equal)."""
    diff = a - b
    norm = float(diff @ diff)
    return 0.0 if norm == 0 else float(np.clip(-(b @ diff) / norm, 0.0, 1.0))


#: One SRR candidate: weight, image, solve record and held-out MSE (nan: nothing to predict).
Candidate = tuple[float, np.ndarray, dict[str, Any], float]


def srr_candidates(
    stacks: Sequence[Stack], grid: Grid, alphas: Sequence[float], masks: Sequence[np.ndarray] | None,
    device: torch.device, **kw: Any,
) -> list[Candidate]:  # fmt: skip
    """SRR (``kw``: regulariser, iterations, psf) of the LR voxels in ``masks`` at each of
    ``alphas``, with the MSE of its forward model at the held-out voxels (outside the masks);
    masks None: all voxels, the first alpha."""
    from baselines.bspline import bspline
    from baselines.operators import MultiStackOperator
    from baselines.srr import srr

    fitted = list(stacks) if masks is None else with_masks(stacks, masks)
    init = bspline(fitted, grid)
    op, held = None, None if masks is None else [~m for m in masks]
    if held is not None and len(alphas) > 1:  # the forward model that predicts them, made once
        op = MultiStackOperator(stacks, grid, psf=kw.get("psf", "gaussian"), device=device)
    out: list[Candidate] = []
    for alpha in alphas if masks is not None else alphas[:1]:
        image, info = srr(fitted, grid, alpha=alpha, device=device, init=init, progress=False, **kw)
        error = float("nan") if op is None else held_out_error(image, stacks, held, op)  # type: ignore[arg-type]
        out.append((float(alpha), image, info, error))
    return out


def best(candidates: Sequence[Candidate]) -> int:
    """The index of the candidate of lowest held-out MSE (the first on ties or without any)."""
    return min(range(len(candidates)), key=lambda i: np.nan_to_num(candidates[i][3], nan=np.inf))


def tried(candidates: Sequence[Candidate]) -> list[dict[str, float]]:
    return [{"alpha": c[0], "held_out_mse": c[3]} for c in candidates]


def srr_tv_start(
    stacks: Sequence[Stack], grid: Grid, t: TrainConfig, seed: int, device: torch.device
) -> tuple[np.ndarray, dict[str, Any]]:
    """SRR-TV (box PSF) of the LR voxels a run with ``seed`` fits, at the ``t.base_alphas`` weight
    that predicts its held-out voxels best (none held out: the first), or ``t.base_smoother``
    places above it, and the sidecar's record."""
    masks = fitted_masks(list(stacks), t, seed)
    found = srr_candidates(stacks, grid, t.base_alphas, masks, device, regulariser="tv",
                           iterations=t.base_iterations, psf="box")  # fmt: skip
    chosen = best(found)
    _, image, info, _ = found[min(chosen + t.base_smoother, len(found) - 1)]
    record = {"method": "srr_tv", "alpha": info["alpha"], "alphas_tried": tried(found),
              "iterations": info["iterations"], "relative_residual": info["relative_residual"],
              "held_out_excluded": masks is not None}  # fmt: skip
    choice = t.base_smoother and len(found) > 1  # one weight or none held out: no choice
    return image, record | ({"chosen_alpha": found[chosen][0]} if choice else {})


def returned_image(
    image: np.ndarray, stacks: Sequence[Stack], grid: Grid, t: TrainConfig, seed: int,
    device: torch.device, record: dict[str, Any],
) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
    """What a run with ``t.base_smoother`` returns: the network's ``image`` if it predicts the
    run's held-out LR voxels (box PSF) better than SRR-TV at the held-out choice did, else that
    SRR-TV of all LR voxels; with ``t.base_return`` blend, ``w image + (1 - w) SRR-TV`` at the
    ``w`` whose held-out prediction is best. ``record`` (the start's) gets the network's held-out
    MSE, ``w`` and what is returned (``network``, ``srr_tv`` or ``blend``)."""
    from baselines.bspline import bspline
    from baselines.operators import MultiStackOperator
    from baselines.srr import srr

    t0 = time.perf_counter()
    masks = fitted_masks(list(stacks), t, seed)
    assert masks is not None  # a start records a choice only with held-out voxels
    alpha, held = record["chosen_alpha"], [~m for m in masks]
    op = MultiStackOperator(stacks, grid, psf="box", device=device)
    net = held_out_residuals(image, stacks, held, op)
    error = float(np.square(net).mean())
    kw = {"regulariser": "tv", "iterations": t.base_iterations, "psf": "box"}
    if t.base_return == "blend":  # SRR-TV of the fitted voxels, as the start solved it
        [(_, rival, _, _)] = srr_candidates(stacks, grid, [alpha], masks, device, **kw)
        w = blend_weight(net, held_out_residuals(rival, stacks, held, op))
    else:
        w = float(error < next(d["held_out_mse"] for d in record["alphas_tried"]
                               if d["alpha"] == alpha))  # fmt: skip
    out = image
    if w < 1:
        full, _ = srr(list(stacks), grid, alpha=alpha, device=device,
                      init=bspline(list(stacks), grid), progress=False, **kw)  # fmt: skip
        out = (w * image + (1 - w) * full).astype(np.float32) if w > 0 else full
    returned = {0.0: "srr_tv", 1.0: "network"}.get(w, "blend")
    seconds = time.perf_counter() - t0
    return out, record | {"network_held_out_mse": error, "network_weight": w,
                          "returned": returned, "choice_seconds": seconds}  # fmt: skip


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
