"""Simulate thick-slice LR stacks from an HR volume: each is down-sampled by ``k`` along one voxel
axis, its slices ``k`` HR voxels apart, with a slice profile: ``box`` (the mean over a slab
``thickness`` HR voxels wide, partial voxels weighted), ``gaussian`` (FWHM ``thickness``, centred
where the box is) or ``none`` (the middle HR slice of each block of ``k``). ``thickness`` (default
``k``) below ``k`` leaves gaps, above it overlaps. Slice ``i``'s slab starts at HR index
``i * k - 1/2``; as many slices as fit whole are kept, each LR voxel centred on its profile."""

from __future__ import annotations

import dataclasses
from typing import Literal

import nibabel as nib
import numpy as np
from nibabel.affines import from_matvec

from irem.errors import InputError
from irem.volume import Stack, Volume

Profile = Literal["box", "gaussian", "none"]
PROFILES: tuple[str, ...] = ("box", "gaussian", "none")
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))

_ORIENTATION = dict.fromkeys("LR", "sagittal") | dict.fromkeys("AP", "coronal")
_ORIENTATION |= dict.fromkeys("SI", "axial")


def orientation_name(affine: np.ndarray, axis: int) -> str:
    """Sagittal, coronal or axial: the slice direction of the world axis nearest voxel ``axis``."""
    return _ORIENTATION[nib.orientations.aff2axcodes(affine)[axis]]


def profile_matrix(
    n_hr: int, k: int, profile: Profile, thickness: float | None = None
) -> tuple[np.ndarray, float]:
    """Weights ``W`` (n_lr x n_hr) with LR = W @ HR along one axis, and the HR index ``offset`` of
    LR voxel 0 (voxel ``i`` is centred at ``offset + i * k``); ``thickness`` in HR voxels."""
    if profile not in PROFILES:
        raise InputError(f"unknown slice profile {profile!r}; choose from {', '.join(PROFILES)}")
    if profile == "none":
        if thickness is not None:
            raise InputError("a slice thickness needs the box or gaussian profile, not 'none'")
        t = 1.0
    else:
        t = float(k if thickness is None else thickness)
        if not (np.isfinite(t) and t > 0):
            raise InputError(f"the slice thickness must be a positive number, got {thickness}")
    n_lr = int(np.floor((n_hr - t) / k)) + 1 if profile != "none" else n_hr // k
    if n_lr < 1:
        what = f"k={k}" if t <= k else f"thickness {t:g}"
        raise InputError(f"{what} is larger than the image extent ({n_hr} voxels)")
    w = np.zeros((n_lr, n_hr), dtype=np.float64)
    j = np.arange(n_hr)
    offset = float((k - 1) // 2) if profile == "none" else (t - 1.0) / 2.0
    for i in range(n_lr):
        if profile == "box":
            lo = i * k - 0.5
            w[i] = np.clip(np.minimum(j + 0.5, lo + t) - np.maximum(j - 0.5, lo), 0.0, None) / t
        elif profile == "gaussian":
            sigma = t * FWHM_TO_SIGMA
            g = np.exp(-0.5 * ((j - (offset + i * k)) / sigma) ** 2)
            g[np.abs(j - (offset + i * k)) > 4 * sigma] = 0.0
            w[i] = g / g.sum()
        else:
            w[i, int(offset) + i * k] = 1.0
    return w, offset


def lr_affine(hr_affine: np.ndarray, axis: int, k: int, offset: float) -> np.ndarray:
    """Affine of an LR stack: HR index along ``axis`` = ``offset + k * lr_index``."""
    m = np.eye(4)
    m[axis, axis], m[axis, 3] = k, offset
    return np.asarray(hr_affine, dtype=np.float64) @ m


# Noise. SNR = mean white-matter signal of the noise-free image / sigma, the standard deviation
# of the Gaussian noise of each of the real and imaginary channels; the magnitude image is Rician
# (Gudbjartsson & Patz 1995, Magn Reson Med 34:910). Without a WM mask, see reference_signal.
# The cohort's SNR 40: whole-volume SNR of clinical 3 T brain scans in healthy volunteers (Springer
# et al. 2016, Invest Radiol 51:469, table 5): 3-D T1 MP2RAGE 61 +- 18, T2 SPACE 28 +- 9, FLAIR
# SPACE 29 +- 11; 40 is the T1 mean minus one SD, a typical level, not an exact one.


def rician_noise(data: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of standard deviation ``sigma``."""
    real = data + rng.normal(0.0, sigma, data.shape)
    imag = rng.normal(0.0, sigma, data.shape)
    return np.sqrt(real**2 + imag**2).astype(np.float32)


def reference_signal(data: np.ndarray, wm_mask: np.ndarray | None = None) -> float:
    """The signal SNR is relative to: the mean of the noise-free ``data`` in the WM mask, else of
    the foreground (> 10% of the maximum) at or above its median."""
    data = np.asarray(data, dtype=np.float64)
    if wm_mask is not None:
        mask = np.asarray(wm_mask) > 0
        if mask.shape != data.shape:
            raise InputError(f"WM mask shape {mask.shape} differs from the image's {data.shape}")
        if not mask.any():
            raise InputError("the white-matter mask is empty")
        return float(data[mask].mean())
    fg = data[data > 0.1 * float(data.max())]
    if fg.size == 0:
        raise InputError("the image has no foreground to take a reference signal from")
    return float(fg[fg >= np.median(fg)].mean())


def noise_sigma_for_snr(reference_signal: float, snr: float) -> float:
    """Noise standard deviation per channel giving ``snr`` = reference signal / sigma."""
    if not (np.isfinite(snr) and snr > 0):
        raise InputError(f"the SNR must be a positive number, got {snr}")
    if not (np.isfinite(reference_signal) and reference_signal > 0):
        raise InputError(f"the reference signal must be positive, got {reference_signal}")
    return float(reference_signal) / float(snr)


def noise_generators(
    seed: int, subject_seed: int | None = None, n: int = 4
) -> list[np.random.Generator]:
    """Independent generators of ``SeedSequence([subject_seed, seed])`` (or ``(seed)``): 0-2 for
    the three stacks, 3 for the noisy HR scan."""
    entropy = int(seed) if subject_seed is None else [int(subject_seed), int(seed)]
    return [np.random.default_rng(s) for s in np.random.SeedSequence(entropy).spawn(n)]


def scan_time_matched_snr(hr_snr: float, k: int, n_stacks: int = 3) -> float:
    """SNR of each of ``n_stacks`` LR stacks sharing one HR scan's time: ``hr_snr * k /
    sqrt(n_stacks)`` (SNR ~ voxel volume, ``k`` HR voxels, x sqrt(scan time); Macovski 1996)."""
    if not k > 0 or n_stacks < 1:
        raise InputError(f"k must be > 0 and n_stacks >= 1, got k={k}, n_stacks={n_stacks}")
    if not (np.isfinite(hr_snr) and hr_snr > 0):
        raise InputError(f"the HR SNR must be a positive number, got {hr_snr}")
    return float(hr_snr) * k / np.sqrt(n_stacks)


def noisy_hr(
    hr: Volume, snr: float, seed: int = 0, subject_seed: int | None = None,
    wm_mask: np.ndarray | None = None,
) -> Volume:  # fmt: skip
    """The HR scan of the same subject with Rician noise at ``snr`` (generator 3 of
    :func:`noise_generators`, independent of the stacks')."""
    sigma = noise_sigma_for_snr(reference_signal(hr.data, wm_mask), snr)
    rng = noise_generators(seed, subject_seed)[3]
    return Volume(data=rician_noise(hr.data, sigma, rng), affine=np.array(hr.affine))


def simulate_stack(
    hr: Volume, axis: int, k: int, profile: Profile = "box", *, thickness: float | None = None
) -> Stack:
    """One noise-free LR stack, thick along voxel ``axis`` by a factor ``k``; a ``thickness`` (HR
    voxels) other than ``k`` is kept in mm as the stack's ``thickness``."""
    if axis not in (0, 1, 2):
        raise InputError(f"axis must be 0, 1 or 2, got {axis}")
    if k < 1:
        raise InputError(f"the down-sampling factor must be >= 1, got {k}")
    w, offset = profile_matrix(hr.shape[axis], k, profile, thickness)
    moved = np.moveaxis(hr.data.astype(np.float64), axis, 0)
    lr = np.tensordot(w, moved, axes=(1, 0))
    data = np.moveaxis(lr, 0, axis).astype(np.float32)
    affine = lr_affine(hr.affine, axis, k, offset)
    mm = None
    if thickness is not None and float(thickness) != k:
        mm = float(thickness) * float(hr.spacing[axis])
    return Stack(data=data, affine=affine, name=orientation_name(hr.affine, axis), thickness=mm)


def simulate_stacks(
    hr: Volume, k: int, profile: Profile = "box", snr: float | None = None, seed: int = 0,
    wm_mask: np.ndarray | None = None, subject_seed: int | None = None, *,
    thickness: float | None = None,
) -> list[Stack]:  # fmt: skip
    """Three orthogonal LR stacks, one thick along each voxel axis of ``hr``, with Rician noise at
    ``snr`` (relative to :func:`reference_signal` of ``hr`` and ``wm_mask``) if given."""
    if snr is not None and not snr > 0:
        raise InputError(f"--snr must be positive, got {snr}")
    stacks = [simulate_stack(hr, axis, k, profile, thickness=thickness) for axis in range(3)]
    if snr is not None:
        sigma = noise_sigma_for_snr(reference_signal(hr.data, wm_mask), snr)
        for stack, rng in zip(stacks, noise_generators(seed, subject_seed)[:3], strict=True):
            stack.data = rician_noise(stack.data, sigma, rng)
    return stacks


def simulate_scan_time_matched(
    hr: Volume, k: int, hr_snr: float, profile: Profile = "box", seed: int = 0,
    wm_mask: np.ndarray | None = None, subject_seed: int | None = None, *,
    thickness: float | None = None,
) -> tuple[list[Stack], Volume, dict[str, float]]:  # fmt: skip
    """Three LR stacks and one HR scan of equal total scan time (the paper's dataset #C): noise at
    :func:`scan_time_matched_snr` and ``hr_snr``; also the noise facts for the sidecar."""
    lr_snr = scan_time_matched_snr(hr_snr, k if thickness is None else thickness, n_stacks=3)
    stacks = simulate_stacks(hr, k, profile, lr_snr, seed, wm_mask, subject_seed,
                             thickness=thickness)  # fmt: skip
    hr_noisy = noisy_hr(hr, hr_snr, seed, subject_seed, wm_mask)
    ref = reference_signal(hr.data, wm_mask)
    info = {"hr_snr": float(hr_snr), "lr_snr": lr_snr, "hr_sigma": noise_sigma_for_snr(ref, hr_snr),
            "lr_sigma": noise_sigma_for_snr(ref, lr_snr), "reference_signal": ref}  # fmt: skip
    return stacks, hr_noisy, info


def random_rigid(
    rotation_deg: float, translation_mm: float, rng: np.random.Generator, centre: np.ndarray
) -> np.ndarray:
    """A 4x4 rigid motion: ``rotation_deg`` about a random axis through ``centre``, then a shift of
    ``translation_mm`` in a random direction (RAS millimetres)."""
    from scipy.spatial.transform import Rotation

    axis, direction = (v / np.linalg.norm(v) for v in (rng.normal(size=3), rng.normal(size=3)))
    rot = Rotation.from_rotvec(np.deg2rad(rotation_deg) * axis).as_matrix()
    return from_matvec(rot, centre - rot @ centre + translation_mm * direction)


def move(stack: Stack, motion: np.ndarray) -> Stack:
    """The stack after a rigid motion of the subject: its voxels now sit at ``motion @ affine``."""
    return dataclasses.replace(stack, affine=motion @ stack.affine)


def reorient(stack: Stack, codes: str) -> Stack:
    """The same image (and mask) stored with voxel axes in another orientation (e.g. ``"LPS"``):
    every intensity stays at its world position."""
    o = nib.orientations
    ornt = o.ornt_transform(o.io_orientation(stack.affine), o.axcodes2ornt(tuple(codes)))
    data = np.ascontiguousarray(o.apply_orientation(stack.data, ornt))
    affine = stack.affine @ o.inv_ornt_aff(ornt, stack.shape)
    mask = (
        None if stack.mask is None else np.ascontiguousarray(o.apply_orientation(stack.mask, ornt))
    )
    return dataclasses.replace(stack, data=data, affine=affine, mask=mask)


# Orientations that ``--reorient`` stores the three stacks in (sagittal stays as simulated).
REORIENT_CODES: tuple[str | None, ...] = (None, "LPS", "SAL")
