"""The flow every method (IREM, B-spline, SRR) shares, so that each sees identical inputs: load
the stacks, choose the grid, check the memory, pre-process (masks, N4), register (stacks, then
packages), run the method, write the result, its sidecar and what pre-processing made."""

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
from irem.acquisition.grid import (
    Grid,
    check_overlap,
    isotropic_grid,
    reference_grid,
    to_stack_voxels,
)
from irem.acquisition.preprocess import (
    AUTO,
    AutoMaskParams,
    N4Params,
    auto_mask,
    correct_bias,
    n4_log_field,
    split_packages,
)
from irem.errors import InputError
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
#: A method's peak-memory model: (stacks, target grid) -> estimate (:mod:`irem.training.memory`).
MemoryModel = Callable[[list[Stack], Grid], Any]


def read_stack(path: str) -> Stack:
    """One stack: a NIfTI file, or a directory holding one DICOM series."""
    from irem.acquisition.dicom import load_dicom_stack

    return load_dicom_stack(path) if Path(path).is_dir() else load_stack(path)


def load_stacks(paths: list[str]) -> list[Stack]:
    """Read and validate the stacks (one is enough), renaming duplicate names."""
    if not paths:
        raise InputError("need at least one stack")
    stacks = [read_stack(p) for p in paths]
    names = [s.name for s in stacks]
    for i, s in enumerate(stacks):
        if names.count(s.name) > 1:
            s.name = f"{s.name}-{i}"
    return stacks


def set_thickness(stacks: list[Stack], thickness: Sequence[float] | None) -> list[Stack]:
    """Copies of ``stacks`` with their slice thickness (mm): one value for all or one per stack
    (``None``: unchanged)."""
    if thickness is None:
        return stacks
    values = [float(t) for t in thickness] * (len(stacks) if len(thickness) == 1 else 1)
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
        n = len(stacks)
        raise InputError(f"--stack-masks: give one mask per stack ({n}), got {len(paths)}")
    out = []
    for s, p in zip(stacks, paths, strict=True):
        vol = load_volume(p, mask=True)
        if vol.shape != s.shape or not np.allclose(vol.affine, s.affine, atol=1e-3):
            raise InputError(f"{p}: not on the grid of stack {s.name!r} (shape or affine differ)")
        out.append(dataclasses.replace(s, mask=_as_mask(vol, p)))
    return out


def target_mask(vol: Volume, path: str, grid: Grid) -> np.ndarray:
    """The mask ``vol`` on the target grid: as is, or resampled to it (nearest neighbour)."""
    if vol.shape == tuple(grid.shape) and np.allclose(vol.affine, grid.affine, atol=1e-3):
        return _as_mask(vol, path)
    log.info("resampling the mask %s onto the target grid (nearest neighbour)", path)
    m = np.linalg.inv(vol.affine) @ grid.affine
    data = ndimage.affine_transform(vol.data, m[:3, :3], m[:3, 3], output_shape=tuple(grid.shape),
                                    order=0, mode="grid-constant", cval=0.0)  # fmt: skip
    return _as_mask(Volume(data, grid.affine), f"{path} on the target grid")


def lr_voxels_near(stack: Stack, grid: Grid, mask: np.ndarray) -> np.ndarray:
    """LR voxels of ``stack`` containing the centre of a voxel of the target ``mask``, dilated by
    one LR voxel (boolean, the stack's shape)."""
    vox = np.rint(to_stack_voxels(stack, apply_affine(grid.affine, np.argwhere(mask))))
    shape = np.asarray(stack.shape)
    vox = vox[np.all((vox >= 0) & (vox < shape), axis=1)].astype(np.int64)
    hit = np.zeros(stack.shape, dtype=bool)
    hit[tuple(vox.T)] = True
    return ndimage.binary_dilation(hit, structure=np.ones((3, 3, 3), dtype=bool))


def restrict_to_mask(stacks: list[Stack], grid: Grid, mask: np.ndarray) -> list[Stack]:
    """Copies of ``stacks`` whose masks keep only LR voxels near the target ``mask``."""
    out = []
    for s in stacks:
        near = lr_voxels_near(s, grid, mask)
        out.append(dataclasses.replace(s, mask=near if s.mask is None else near & s.mask))
    if not any(s.mask.any() for s in out):  # type: ignore[union-attr]
        raise InputError("no LR voxel of any stack lies near the mask")
    return out


@dataclass(frozen=True)
class Derived:
    """An image that pre-processing made, written beside the output (a mask, a log bias field)."""

    path: Path
    data: np.ndarray
    affine: np.ndarray


def derived_path(out: Path, label: str) -> Path:
    """``OUT_<label>.nii.gz`` beside the output ``OUT.nii.gz``."""
    return out.with_name(f"{strip_nifti_suffix(out.name)}_{label}.nii.gz")


def auto_stack_masks(
    stacks: list[Stack], out: Path, params: AutoMaskParams
) -> tuple[list[Stack], list[Derived], dict[str, Any]]:
    """Copies of ``stacks`` with masks found in themselves, the mask files and the record."""
    masked, files, record = [], [], []
    for s in stacks:
        mask, threshold = auto_mask(s, params)
        path = derived_path(out, f"stack-{s.name}_desc-auto_mask")
        masked.append(dataclasses.replace(s, mask=mask))
        files.append(Derived(path, mask.astype(np.float32), s.affine))
        record.append({"stack": s.name, "file": str(path), "threshold": threshold,
                       "voxels": int(mask.sum())})  # fmt: skip
    return masked, files, {"step": "stack_masks", "params": params.to_dict(), "stacks": record}


def n4_stacks(
    stacks: list[Stack], out: Path, params: N4Params
) -> tuple[list[Stack], list[Derived], dict[str, Any]]:
    """Copies of ``stacks`` corrected by N4 (in their masks), the log-field files and the record."""
    corrected, files, record = [], [], []
    for s in stacks:
        log.info("N4 bias-field correction of %r", s.name)
        field, info = n4_log_field(s, s.mask, params)
        path = derived_path(out, f"stack-{s.name}_desc-n4_logfield")
        corrected.append(correct_bias(s, field))
        files.append(Derived(path, field, s.affine))
        record.append({"stack": s.name, "file": str(path), **info})
    return corrected, files, {"step": "n4", "params": params.to_dict(), "stacks": record}


def register_packages(
    stacks: list[Stack], packages: int, grid: Grid, seed: int
) -> tuple[list[Stack], list[tuple[int, int | None]], dict[str, Any]]:
    """Every registered stack's interleaved packages, each registered to the B-spline of the stacks
    on ``grid``; also each one's (input stack, package) index and the sidecar's record."""
    from baselines.bspline import bspline
    from irem.acquisition.registration import register_to_reference

    split = [
        (i, j, p) for i, s in enumerate(stacks) for j, p in enumerate(split_packages(s, packages))
    ]
    reference = Volume(bspline(stacks, grid), grid.affine)
    moved = register_to_reference([p for _, _, p in split], reference, seed=seed)
    sources: list[tuple[int, int | None]] = [(i, j) for i, j, _ in split]
    record = {"step": "packages", "packages": packages,
              "reference": "B-spline of the registered stacks on the target grid",
              "slice_thickness_mm": [p.slice_thickness for p in moved]}  # fmt: skip
    return moved, sources, record


def normalise(stacks: list[Stack], fixed_index: int, register: bool, seed: int = 0) -> list[Stack]:
    """Put every stack into the fixed stack's world space (paper section 2.1) and check overlap."""
    check_overlap(stacks, fixed_index)
    if register:
        from irem.acquisition.registration import normalise_stacks

        stacks = normalise_stacks(stacks, fixed_index=fixed_index, register=True, seed=seed)
        check_overlap(stacks, fixed_index)
    return stacks


def target_grid(fixed: Stack, reference: str | None, spacing: float | None) -> Grid:
    """The reference image's grid, or an isotropic grid over the fixed stack (default: finest)."""
    if reference is not None:
        return reference_grid(load_volume(reference))
    return isotropic_grid(fixed, float(min(fixed.spacing)) if spacing is None else spacing)


def save_transforms(out: Path, stacks: list[Stack], fixed_index: int | None) -> list[str]:
    """Write each stack's transform but the fixed one's as ITK ``.tfm`` beside ``out``; paths."""
    from irem.acquisition.registration import save_transform

    written = []
    for i, s in enumerate(stacks):
        if i != fixed_index:
            path = out.with_name(f"{strip_nifti_suffix(out.name)}_from-{s.name}.tfm")
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

    return {"irem_bench": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__, "torch": torch.__version__,
            "nibabel": nibabel.__version__, "SimpleITK": SimpleITK.Version_VersionString(),
            "scikit_image": skimage.__version__, "platform": platform.platform()}  # fmt: skip


def describe_inputs(
    paths: list[str],
    stacks: list[Stack],
    fixed_index: int,
    mask_paths: Sequence[str | None] | None,
    sources: Sequence[tuple[int, int | None]],
    thickness_given: Sequence[bool],
) -> list[dict[str, Any]]:
    """The sidecar's record of each stack or package (``sources``: input and package index)."""
    masks = [None] * len(paths) if mask_paths is None else list(mask_paths)
    return [
        {"path": str(paths[i]), "name": s.name, "package": package, "shape": list(s.shape),
         "spacing_mm": [float(v) for v in s.spacing], "slice_thickness_mm": s.slice_thickness,
         "thickness_given": thickness_given[i], "mask": None if masks[i] is None else str(masks[i]),
         "lr_voxels_in_mask": None if s.mask is None else int(np.count_nonzero(s.mask)),
         "fixed": i == fixed_index and package is None,
         "transform_to_normalised": s.transform.tolist()}
        for s, (i, package) in zip(stacks, sources, strict=True)
    ]  # fmt: skip


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
    """What the user asked for (the options of :func:`irem.cli.common.add_stack_args`; thickness in
    mm, masks as files or ``"auto"``, the memory cap in GB)."""

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
    n4: bool = False
    packages: int = 1
    max_memory_gb: float | None = None

    @property
    def auto_stack_masks(self) -> bool:
        """Whether ``--stack-masks auto`` was asked for."""
        return self.stack_masks is not None and tuple(self.stack_masks) == (AUTO,)


@dataclass(frozen=True)
class Prepared:
    """The inputs of a method (stacks or packages, grid, target mask), the whole registered stacks,
    each stack's (input, package) index, and what pre-processing made and recorded."""

    output: Path
    stacks: list[Stack]
    grid: Grid
    mask: np.ndarray | None = None
    whole: list[Stack] = dataclasses.field(default_factory=list)
    sources: list[tuple[int, int | None]] = dataclasses.field(default_factory=list)
    derived: list[Derived] = dataclasses.field(default_factory=list)
    steps: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    memory: dict[str, Any] | None = None


@dataclass(frozen=True)
class Outcome:
    """What :func:`run` wrote and the inputs the method saw (whole stacks, not packages)."""

    output: Path
    stacks: list[Stack]
    grid: Grid


def prepare(req: Request, memory: MemoryModel | None = None) -> Prepared:
    """Check the request; load the stacks; choose the grid; check the memory (``memory``: the
    method's model); stack masks, N4, registration, packages; and the target mask on the grid."""
    if req.packages < 1:
        raise InputError(f"--packages must be >= 1, got {req.packages}")
    if req.packages > 1 and not req.register:
        raise InputError("--packages registers each package: it cannot go with --no-register")
    out = check_output_path(req.output)
    mask_vol = None
    if req.mask is not None and req.mask != AUTO:
        mask_vol = load_volume(req.mask, mask=True)
        _as_mask(mask_vol, req.mask)  # refuse an empty mask before any work
    stacks = set_thickness(load_stacks(req.stacks), req.thickness)
    if not 0 <= req.fixed_index < len(stacks):
        n = len(stacks)
        raise InputError(f"--fixed-index {req.fixed_index} is out of range for {n} stacks")
    # The fixed stack's transform is the identity before and after registration: grid known now.
    grid = target_grid(stacks[req.fixed_index], req.reference, req.spacing)
    log.info("target grid %s voxels (%.2f M)", "x".join(map(str, grid.shape)), grid.size / 1e6)
    from irem.training.memory import check_memory

    budget = None if memory is None else check_memory(memory(stacks, grid), req.max_memory_gb)
    steps: list[dict[str, Any]] = []
    derived: list[Derived] = []
    if req.auto_stack_masks:
        stacks, files, record = auto_stack_masks(stacks, out, AutoMaskParams())
        derived += files
        steps.append(record)
    else:
        stacks = set_stack_masks(stacks, req.stack_masks)
    if req.n4:
        stacks, files, record = n4_stacks(stacks, out, N4Params())
        derived += files
        steps.append(record)
    stacks = normalise(stacks, req.fixed_index, req.register, seed=req.seed)
    whole = stacks
    sources: list[tuple[int, int | None]] = [(i, None) for i in range(len(stacks))]
    if req.packages > 1:
        stacks, sources, record = register_packages(whole, req.packages, grid, req.seed)
        steps.append(record)
    mask = None if mask_vol is None else target_mask(mask_vol, str(req.mask), grid)
    if req.mask == AUTO:
        from baselines.bspline import bspline

        params = AutoMaskParams()
        mask, threshold = auto_mask(Volume(bspline(stacks, grid), grid.affine), params)
        path = derived_path(out, "desc-auto_mask")
        derived.append(Derived(path, mask.astype(np.float32), grid.affine))
        steps.append({"step": "target_mask", "params": params.to_dict(), "file": str(path),
                      "image": "B-spline of the registered stacks", "threshold": threshold,
                      "voxels": int(mask.sum())})  # fmt: skip
    return Prepared(out, stacks, grid, mask, whole, sources, derived, steps, budget)


def describe_masks(req: Request, prep: Prepared, restricted: bool) -> dict[str, Any]:
    """The sidecar's record of the masks: files, target-mask voxels, what they restricted."""
    target = str(derived_path(prep.output, "desc-auto_mask")) if req.mask == AUTO else req.mask
    stack_masks = None if req.stack_masks is None else list(req.stack_masks)
    if req.auto_stack_masks:
        paths = [derived_path(prep.output, f"stack-{s.name}_desc-auto_mask") for s in prep.whole]
        stack_masks = [str(p) for p in paths]
    return {"target": target, "target_auto": req.mask == AUTO,
            "target_voxels": None if prep.mask is None else int(np.count_nonzero(prep.mask)),
            "output_zero_outside_target": prep.mask is not None,
            "lr_voxels_restricted_to_target": restricted, "stack_masks": stack_masks,
            "stack_masks_auto": req.auto_stack_masks}  # fmt: skip


def run(
    req: Request, name: str, method: Method, mask_lr_voxels: bool = False,
    memory: MemoryModel | None = None,
) -> Outcome:  # fmt: skip
    """:func:`prepare`, then ``method`` (named ``name`` in the sidecar; ``mask_lr_voxels``: given
    only the LR voxels near the target mask), the output 0 outside the target mask; writes the
    masks, log fields, transforms and last the NIfTI and its sidecar (on failure, none of them)."""
    t_start = time.perf_counter()
    prep = prepare(req, memory)
    out, stacks, grid = prep.output, prep.stacks, prep.grid
    restricted = mask_lr_voxels and prep.mask is not None
    seen = restrict_to_mask(stacks, grid, prep.mask) if restricted else stacks  # type: ignore
    hr, extra = method(seen, grid)
    if prep.mask is not None:
        hr = np.where(prep.mask, hr, 0).astype(np.float32)
    masks = describe_masks(req, prep, restricted)
    given = [req.thickness is not None or s.thickness is not None for s in prep.whole]
    stack_masks = masks["stack_masks"]
    inputs = describe_inputs(req.stacks, seen, req.fixed_index, stack_masks, prep.sources, given)
    sidecar = {"method": name, "inputs": inputs, "registered": req.register, "seed": req.seed,
               "masks": masks, "preprocessing": prep.steps, "memory": prep.memory,
               **extra}  # fmt: skip
    written: list[Path] = []
    try:
        for d in prep.derived:
            save_volume(d.path, d.data, d.affine)
            written.append(d.path)
        fixed = None if req.packages > 1 else req.fixed_index
        tfms = save_transforms(out, stacks, fixed) if req.register else []
        written += [Path(t) for t in tfms]
        write_result(out, hr, grid, {**sidecar, "transform_files": tfms}, t_start)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    log.info("wrote %s", out)
    return Outcome(out, prep.whole, grid)
