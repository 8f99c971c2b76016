"""Reconstruction from a trained representation: the normaliser, the model's architecture,
evaluation on a dense grid, and a trained model saved by ``--save-model`` for ``irem sample``."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from irem.acquisition.grid import Grid
from irem.errors import InputError
from irem.models.grid_inr import GridINR
from irem.models.paper import IREM, for_inference
from irem.training.config import IremConfig, config_from_dict
from irem.volume import Stack, apply_affine, atomic_path

log = logging.getLogger(__name__)

#: Tag and version of the saved-model format (2: grid INR levels as modules, fewer config keys).
MODEL_FORMAT = "irem-bench-model"
MODEL_VERSION = 2


@dataclass(frozen=True)
class Normaliser:
    """Maps normalised-space millimetres to network inputs and intensities to [0, 1]."""

    centre: np.ndarray
    half_extent: float
    intensity_scale: float
    box_mm: tuple[float, float, float] = (2.0, 2.0, 2.0)

    def coords(self, points: np.ndarray) -> np.ndarray:
        """Network inputs of normalised-space points ``(n, 3)`` (float32)."""
        return ((np.asarray(points) - self.centre) / self.half_extent).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (for sidecars and saved models)."""
        return {
            "centre_mm": [float(c) for c in self.centre],
            "half_extent_mm": self.half_extent,
            "intensity_scale": self.intensity_scale,
            "box_mm": list(self.box_mm),
        }

    @classmethod
    def of_box(cls, pts: np.ndarray, intensity_scale: float) -> Normaliser:
        """The normaliser of the bounding box of points ``(n, 3)`` (mm)."""
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        box = tuple(float(max(b, 1e-6)) for b in hi - lo)
        half = float(max((hi - lo).max() / 2.0, 1e-6))
        return cls((lo + hi) / 2.0, half, intensity_scale, box)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normaliser:
        """Inverse of :meth:`to_dict`."""
        box = tuple(float(b) for b in d["box_mm"])
        centre, half = np.asarray(d["centre_mm"], dtype=np.float64), float(d["half_extent_mm"])
        return cls(centre, half, float(d["intensity_scale"]), box)  # type: ignore[arg-type]

    @property
    def extent(self) -> tuple[float, float, float]:
        """Half sides of the box in input units (the longest is 1)."""
        side = 2 * self.half_extent
        return tuple(float(b) / side for b in self.box_mm)  # type: ignore[return-value]


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU (warning if a GPU was given but is unusable)."""
    if name not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but CUDA is not available")
    if name == "auto" and torch.cuda.is_available():
        return torch.device("cuda")
    if name == "auto" and os.environ.get("CUDA_VISIBLE_DEVICES", "").strip() not in ("", "-1"):
        log.warning("a GPU slot was given but CUDA is not usable; running on CPU")
    return torch.device(name if name == "cuda" else "cpu")


def build_model(cfg: IremConfig, seed: int, norm: Normaliser) -> torch.nn.Module:
    """The paper's IREM network or the fast feature-grid representation, as configured."""
    m = cfg.model
    if m.kind == "grid":
        return GridINR(
            norm.box_mm, norm.extent, m.levels, m.features, m.finest_mm, m.width, m.hidden_layers,
            seed, dense_max_nodes=m.dense_max_nodes, hash_rows=m.hash_rows,
        )  # fmt: skip
    return IREM(m.fourier_dim, m.sigma, m.width, m.depth, tuple(m.skips), seed=seed)


@torch.inference_mode()
def predict(
    model: torch.nn.Module,
    norm: Normaliser,
    grid: Grid,
    *,
    chunk: int = 8192,
    device: torch.device | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Evaluate the trained model at every voxel centre of ``grid`` in chunks; returns float32."""
    device = device or torch.device("cpu")
    net = for_inference(model)
    out = np.empty(grid.size, dtype=np.float32)
    chunks = range(0, grid.size, chunk)
    for start in tqdm(chunks, disable=not progress, desc="evaluate", unit="chunk"):
        flat = np.arange(start, min(start + chunk, grid.size))
        pts = apply_affine(grid.affine, np.stack(np.unravel_index(flat, grid.shape), axis=-1))
        x = torch.from_numpy(norm.coords(pts)).to(device)
        out[start : start + len(flat)] = net(x).float().cpu().numpy()
    return (out * norm.intensity_scale).reshape(grid.shape)


@dataclass
class SavedModel:
    """A trained representation with everything needed to evaluate it again."""

    model: torch.nn.Module
    norm: Normaliser
    cfg: IremConfig
    seed: int
    grid: Grid
    fixed: Stack
    transforms: dict[str, list[list[float]]]


def _geometry(shape: tuple[int, ...], affine: np.ndarray) -> dict[str, Any]:
    return {"shape": [int(s) for s in shape], "affine": np.asarray(affine).tolist()}


def save_model(
    path: Path,
    model: torch.nn.Module,
    norm: Normaliser,
    cfg: IremConfig,
    *,
    seed: int,
    grid: Grid,
    stacks: list[Stack],
    fixed_index: int,
) -> None:
    """Write the weights, normaliser, config, seed, registration transforms and grids atomically."""
    f = stacks[fixed_index]
    fixed = {**_geometry(f.shape, f.affine), "name": f.name, "transform": f.transform.tolist()}
    state = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "weights": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "normaliser": norm.to_dict(),
        "config": cfg.to_dict(),
        "seed": int(seed),
        "grid": _geometry(grid.shape, grid.affine),
        "fixed_stack": fixed,
        "transforms": {s.name: s.transform.tolist() for s in stacks},
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_model(path: str | os.PathLike[str], device: torch.device | None = None) -> SavedModel:
    """Read a model written by :func:`save_model` (refuses anything else with an InputError)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for garbage
        raise InputError(f"{path}: not a saved IREM model ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
        raise InputError(f"{path}: not a saved IREM model (written by irem reconstruct "
                         "--save-model)")  # fmt: skip
    if state.get("version") != MODEL_VERSION:
        raise InputError(f"{path}: model format version {state.get('version')} is not supported")
    try:
        cfg = config_from_dict(state["config"])
        norm = Normaliser.from_dict(state["normaliser"])
        model = build_model(cfg, int(state["seed"]), norm)
        weights = state["weights"]
        if isinstance(model, GridINR) and "base" in weights:
            model.set_base(weights["base"], weights["base_map"], head="keep")
        model.load_state_dict(weights)
        g, f = state["grid"], state["fixed_stack"]
        grid = Grid(shape=tuple(g["shape"]), affine=np.asarray(g["affine"], dtype=np.float64))
        fixed = Stack(np.broadcast_to(np.float32(0), tuple(f["shape"])),
                      np.asarray(f["affine"], dtype=np.float64), name=str(f["name"]),
                      transform=np.asarray(f["transform"], dtype=np.float64))  # fmt: skip
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{path}: damaged model file ({type(exc).__name__})") from None
    model.to(device or torch.device("cpu")).eval()
    return SavedModel(model, norm, cfg, int(state["seed"]), grid, fixed, state["transforms"])
