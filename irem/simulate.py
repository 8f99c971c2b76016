"""Simulate thick-slice low-resolution stacks from a high-resolution volume.

Each stack is down-sampled by ``k`` along one voxel axis only. A slice profile says how the thick
slice integrates the HR signal along that axis:

- ``box``: the mean of ``k`` consecutive HR slices (the default; a thick slice integrates signal);
- ``gaussian``: a Gaussian profile with FWHM equal to the slice thickness (``k`` HR slices), centred
  where the box profile is centred;
- ``none``: one HR slice out of every ``k`` (the middle one of each block of ``k``).

The LR affine places each LR voxel centre at the profile's centre: for ``box`` exactly the mean of
the ``k`` HR voxel centres it averaged. Trailing HR slices that do not fill a whole LR slice are
dropped.
"""

from __future__ import annotations

from typing import Literal

import nibabel as nib
import numpy as np

from irem.errors import InputError
from irem.volume import Stack, Volume

Profile = Literal["box", "gaussian", "none"]
PROFILES: tuple[str, ...] = ("box", "gaussian", "none")
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))

_ORIENTATION = {
    "L": "sagittal",
    "R": "sagittal",
    "A": "coronal",
    "P": "coronal",
    "S": "axial",
    "I": "axial",
}


def orientation_name(affine: np.ndarray, axis: int) -> str:
    """Name a slice direction by the world axis nearest voxel axis ``axis``.

    Thick along x (left-right) is a sagittal stack, along y a coronal one, along z an axial one.
    """
    codes = nib.orientations.aff2axcodes(affine)
    return _ORIENTATION[codes[axis]]


def profile_matrix(n_hr: int, k: int, profile: Profile) -> tuple[np.ndarray, float]:
    """Weights ``W`` (n_lr x n_hr) with LR = W @ HR along one axis, and the HR index of LR voxel 0.

    LR voxel ``i`` is centred at HR index ``offset + i * k``.
    """
    n_lr = n_hr // k
    if n_lr < 1:
        raise InputError(f"k={k} is larger than the image extent ({n_hr} voxels)")
    w = np.zeros((n_lr, n_hr), dtype=np.float64)
    if profile == "box":
        offset = (k - 1) / 2.0
        for i in range(n_lr):
            w[i, i * k : (i + 1) * k] = 1.0 / k
    elif profile == "gaussian":
        offset = (k - 1) / 2.0
        sigma = k * FWHM_TO_SIGMA
        j = np.arange(n_hr)
        for i in range(n_lr):
            g = np.exp(-0.5 * ((j - (offset + i * k)) / sigma) ** 2)
            g[np.abs(j - (offset + i * k)) > 4 * sigma] = 0.0
            w[i] = g / g.sum()
    elif profile == "none":
        offset = float((k - 1) // 2)
        for i in range(n_lr):
            w[i, int(offset) + i * k] = 1.0
    else:
        raise InputError(f"unknown slice profile {profile!r}; choose from {', '.join(PROFILES)}")
    return w, offset


def lr_affine(hr_affine: np.ndarray, axis: int, k: int, offset: float) -> np.ndarray:
    """Affine of an LR stack: HR index along ``axis`` = ``offset + k * lr_index``."""
    m = np.eye(4)
    m[axis, axis] = k
    m[axis, 3] = offset
    return np.asarray(hr_affine, dtype=np.float64) @ m


def rician_noise(data: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of standard deviation ``sigma``."""
    real = data + rng.normal(0.0, sigma, data.shape)
    imag = rng.normal(0.0, sigma, data.shape)
    return np.sqrt(real**2 + imag**2).astype(np.float32)


def noise_sigma(hr: np.ndarray, snr: float) -> float:
    """Noise level for a given SNR: mean of the foreground (voxels above 10% of max) over SNR."""
    fg = hr[hr > 0.1 * float(hr.max())]
    return float(fg.mean()) / snr


def simulate_stack(hr: Volume, axis: int, k: int, profile: Profile = "box") -> Stack:
    """One LR stack, thick along voxel ``axis`` by a factor ``k``, without noise."""
    if axis not in (0, 1, 2):
        raise InputError(f"axis must be 0, 1 or 2, got {axis}")
    if k < 1:
        raise InputError(f"the down-sampling factor must be >= 1, got {k}")
    w, offset = profile_matrix(hr.shape[axis], k, profile)
    moved = np.moveaxis(hr.data.astype(np.float64), axis, 0)
    lr = np.tensordot(w, moved, axes=(1, 0))
    data = np.moveaxis(lr, 0, axis).astype(np.float32)
    affine = lr_affine(hr.affine, axis, k, offset)
    return Stack(data=data, affine=affine, name=orientation_name(hr.affine, axis))


def simulate_stacks(
    hr: Volume,
    k: int,
    profile: Profile = "box",
    snr: float | None = None,
    seed: int = 0,
) -> list[Stack]:
    """Three orthogonal LR stacks, one thick along each voxel axis, with optional Rician noise."""
    if snr is not None and not snr > 0:
        raise InputError(f"--snr must be positive, got {snr}")
    stacks = [simulate_stack(hr, axis, k, profile) for axis in range(3)]
    if snr is not None:
        sigma = noise_sigma(hr.data, snr)
        rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]
        for stack, rng in zip(stacks, rngs, strict=True):
            stack.data = rician_noise(stack.data, sigma, rng)
    return stacks


def random_rigid(
    rotation_deg: float, translation_mm: float, rng: np.random.Generator, centre: np.ndarray
) -> np.ndarray:
    """A 4x4 rigid motion: ``rotation_deg`` about a random axis through ``centre``, then a shift of
    ``translation_mm`` in a random direction (RAS millimetres)."""
    from scipy.spatial.transform import Rotation

    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    m = np.eye(4)
    m[:3, :3] = Rotation.from_rotvec(np.deg2rad(rotation_deg) * axis).as_matrix()
    m[:3, 3] = centre - m[:3, :3] @ centre + translation_mm * direction
    return m


def move(stack: Stack, motion: np.ndarray) -> Stack:
    """The stack after a rigid motion of the subject: its voxels now sit at ``motion @ affine``."""
    return Stack(
        data=stack.data, affine=motion @ stack.affine, name=stack.name, transform=stack.transform
    )


def reorient(stack: Stack, codes: str) -> Stack:
    """Store the same image with voxel axes in another orientation (e.g. ``"LPS"``, ``"SRA"``).

    The world position of every intensity is unchanged; only the array layout and affine change.
    """
    cur = nib.orientations.io_orientation(stack.affine)
    target = nib.orientations.axcodes2ornt(tuple(codes))
    ornt = nib.orientations.ornt_transform(cur, target)
    data = nib.orientations.apply_orientation(stack.data, ornt)
    affine = stack.affine @ nib.orientations.inv_ornt_aff(ornt, stack.shape)
    return Stack(
        data=np.ascontiguousarray(data), affine=affine, name=stack.name, transform=stack.transform
    )


# Orientations that ``--reorient`` stores the three stacks in (sagittal stays as simulated).
REORIENT_CODES: tuple[str | None, ...] = (None, "LPS", "SAL")
