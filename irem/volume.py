"""Volumes and stacks: arrays with a voxel-to-world affine (nibabel's RAS+ mm), NIfTI input/output
and validation. A :class:`Stack`'s rigid ``transform`` maps its world space into the normalised
space N of the paper (section 2.1): the fixed stack's world space after registration."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.affines import voxel_sizes

from irem.errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class Volume:
    """A 3-D image: ``data[i, j, k]`` sits at world position ``affine @ [i, j, k, 1]`` (mm)."""

    data: np.ndarray
    affine: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along each voxel axis."""
        return voxel_sizes(self.affine)


@dataclass
class Stack(Volume):
    """A low-resolution stack: a volume, a name, its rigid map into normalised space, its slice
    ``thickness`` in mm (None: the spacing along :attr:`thick_axis`) and a boolean ``mask`` of the
    LR voxels the methods may use (None: all)."""

    name: str = "stack"
    transform: np.ndarray = field(default_factory=lambda: np.eye(4))
    thickness: float | None = None
    mask: np.ndarray | None = None

    @property
    def thick_axis(self) -> int:
        """The voxel axis with the largest spacing (the slice-select direction)."""
        return int(np.argmax(self.spacing))

    @property
    def slice_thickness(self) -> float:
        """Slice thickness in mm: ``thickness`` if given, else the spacing along the thick axis."""
        return float(self.spacing[self.thick_axis] if self.thickness is None else self.thickness)

    @property
    def to_normalised(self) -> np.ndarray:
        """4x4 map from voxel indices to normalised-space millimetres."""
        return self.transform @ self.affine


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 affine to an ``(..., 3)`` array of points (in float64)."""
    return nib.affines.apply_affine(affine, np.asarray(points, dtype=np.float64))


def voxel_centres(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """World coordinates of every voxel centre, shape ``(prod(shape), 3)``, C order."""
    return apply_affine(affine, np.indices(shape).reshape(len(shape), -1).T.copy())


def validate(
    data: np.ndarray, affine: np.ndarray, what: str, mask: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Check that an image is 3-D, finite, not constant (unless a ``mask``) and has an invertible
    affine; the data as float32 and the affine as float64."""
    data = np.asarray(data)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{what}: expected a 3-D image, got shape {tuple(data.shape)}")
    if min(data.shape) < 1:
        raise InputError(f"{what}: empty image of shape {tuple(data.shape)}")
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise InputError(f"{what}: unsupported voxel type {data.dtype}")
    data = data.astype(np.float32, copy=False)
    if not np.all(np.isfinite(data)):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise InputError(f"{what}: {bad} voxels are NaN or infinite")
    if not mask and float(data.max()) == float(data.min()):
        raise InputError(f"{what}: the image is constant ({float(data.min())!r} everywhere)")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputError(f"{what}: the affine is not a finite 4x4 matrix")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(f"{what}: the affine is singular")
    return data, affine


def load_volume(path: str | os.PathLike[str], mask: bool = False) -> Volume:
    """Read and validate a 3-D NIfTI file (``.nii`` or ``.nii.gz``); a ``mask`` may be constant
    (a crop inside the brain is all brain)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for garbage
        raise InputError(f"{path}: not a readable NIfTI image ({type(exc).__name__})") from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(f"{path}: not a NIfTI image ({type(img).__name__})")
    try:
        arr = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise InputError(f"{path}: cannot read voxel data ({type(exc).__name__}: {exc})") from None
    data, affine = validate(arr, img.affine, str(path), mask=mask)
    return Volume(data=data, affine=affine)


def load_stack(path: str | os.PathLike[str]) -> Stack:
    """Read a NIfTI file as a :class:`Stack` named after the file."""
    vol = load_volume(path)
    return Stack(data=vol.data, affine=vol.affine, name=strip_nifti_suffix(Path(path).name))


def strip_nifti_suffix(name: str) -> str:
    """``"a.nii.gz"`` -> ``"a"``; ``"a.nii"`` -> ``"a"``."""
    return re.sub(r"\.nii(\.gz)?\Z", "", name)


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The JSON sidecar beside a NIfTI file: ``x.nii.gz`` -> ``x.json``."""
    p = Path(path)
    return p.with_name(strip_nifti_suffix(p.name) + ".json")


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """Validate an output NIfTI path: right suffix and an existing parent directory."""
    p = Path(path)
    if not p.name.endswith(NIFTI_SUFFIXES):
        raise InputError(f"{p}: output must end in .nii or .nii.gz")
    if not p.parent.exists():
        raise InputError(f"{p.parent}: output directory does not exist")
    return p


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[str]:
    """A temporary name beside ``path`` (a plain ``open``'s permissions), renamed onto ``path``
    when the block ends and removed if it fails."""
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix.lower()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_volume(
    path: str | os.PathLike[str], data: np.ndarray, affine: np.ndarray,
    sidecar: dict[str, Any] | None = None,
) -> Path:  # fmt: skip
    """Write a float32 NIfTI with sform and qform (code 1) set, and its JSON sidecar, atomically."""
    path = Path(path)
    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.asarray(affine, dtype=np.float64))
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
        if sidecar is not None:
            write_json(sidecar_path(path), sidecar)
    return path


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write JSON atomically (temporary name, then rename)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, default=_json_default)
        fh.write("\n")
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray | np.generic):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")
