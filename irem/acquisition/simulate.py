"""Simulate thick-slice low-resolution stacks from a high-resolution volume.

Each stack is down-sampled by ``k`` along one voxel axis only: its slices are ``k`` HR voxels
apart. A slice profile says how a slice integrates the HR signal along that axis:

- ``box``: the mean over a slab ``thickness`` HR voxels wide (the default; a slice integrates
  signal), HR voxels cut by the slab's faces weighted by the part inside;
- ``gaussian``: a Gaussian profile with FWHM equal to ``thickness``, centred where the box is;
- ``none``: one HR slice out of every ``k`` (the middle one of each block of ``k``).

``thickness`` (HR voxels, default ``k``) below ``k`` leaves a gap between slices, above ``k`` makes
them overlap. Slice ``i`` starts at HR voxel ``i * k`` (its slab spans HR indices ``i * k - 1/2``
to ``i * k - 1/2 + thickness``); there are as many slices as fit whole in the HR extent, and the
HR slices after the last one are dropped. With ``thickness = k`` the box slice is the mean of
``k`` consecutive HR slices.

The LR affine places each LR voxel centre at the profile's centre: for ``box`` with ``thickness =
k`` exactly the mean of the ``k`` HR voxel centres it averaged.
"""

from __future__ import annotations

import dataclasses
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


def profile_matrix(
    n_hr: int, k: int, profile: Profile, thickness: float | None = None
) -> tuple[np.ndarray, float]:
    """Weights ``W`` (n_lr x n_hr) with LR = W @ HR along one axis, and the HR index of LR voxel 0.

    LR voxel ``i`` is centred at HR index ``offset + i * k``.

    Args:
        n_hr: HR voxels along the axis.
        k: slice spacing in HR voxels.
        profile: slice profile.
        thickness: slice thickness in HR voxels (box width or Gaussian FWHM); ``None``: ``k``.
            The ``none`` profile takes none.

    Raises:
        InputError: on an unknown profile, a thickness that is not positive or is given with the
            ``none`` profile, or slices that do not fit in ``n_hr``.
    """
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
    if profile == "box":
        offset = (t - 1.0) / 2.0
        for i in range(n_lr):
            lo = i * k - 0.5
            inside = np.minimum(j + 0.5, lo + t) - np.maximum(j - 0.5, lo)
            w[i] = np.clip(inside, 0.0, None) / t
    elif profile == "gaussian":
        offset = (t - 1.0) / 2.0
        sigma = t * FWHM_TO_SIGMA
        for i in range(n_lr):
            g = np.exp(-0.5 * ((j - (offset + i * k)) / sigma) ** 2)
            g[np.abs(j - (offset + i * k)) > 4 * sigma] = 0.0
            w[i] = g / g.sum()
    else:
        offset = float((k - 1) // 2)
        for i in range(n_lr):
            w[i, int(offset) + i * k] = 1.0
    return w, offset


def lr_affine(hr_affine: np.ndarray, axis: int, k: int, offset: float) -> np.ndarray:
    """Affine of an LR stack: HR index along ``axis`` = ``offset + k * lr_index``."""
    m = np.eye(4)
    m[axis, axis] = k
    m[axis, 3] = offset
    return np.asarray(hr_affine, dtype=np.float64) @ m


# --------------------------------------------------------------------------------------------------
# Noise
#
# Definition: SNR = mean white-matter signal of the noise-free image / sigma, where sigma is the
# standard deviation of the Gaussian noise on each of the real and imaginary channels and the
# magnitude image is |x + n_re + i n_im| (Rician; Gudbjartsson & Patz 1995, "The Rician
# distribution of noisy MRI data", Magn Reson Med 34:910-914). Without a white-matter mask the
# reference signal is the mean of the upper intensity half of the foreground (see
# :func:`reference_signal`): about the brightest large tissue (WM in T1w, GM/CSF in T2w).
#
# Literature levels for clinical 3 T brain scans (whole-volume SNR measured in healthy volunteers,
# Springer E et al. 2016, "Comparison of routine brain imaging at 3 T and 7 T", Invest Radiol 51(8):
# 469-482, table 5, mean +- SD over volunteers): 3-D T1 MP2RAGE 61 +- 18, 3-D T2 SPACE 28 +- 9,
# 3-D FLAIR SPACE 29 +- 11 (2-D TSE: T2 22, FLAIR 25). Their ROI tissue and exact voxel sizes are
# not restated here. :data:`LITERATURE_HR_SNR` takes the T2/FLAIR means as they are and, for T1w,
# the MP2RAGE mean minus one SD (a conservative estimate: MP2RAGE is not MPRAGE, and single-site
# numbers vary with coil, tissue ROI and noise estimate); treat all three as typical, not exact.

#: HR (1 mm, 3 T) SNR per contrast family, as defined above; an estimate from Springer et al. 2016.
LITERATURE_HR_SNR: dict[str, float] = {"T1w": 40.0, "T2w": 28.0, "FLAIR": 29.0}


def rician_noise(data: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of standard deviation ``sigma``."""
    real = data + rng.normal(0.0, sigma, data.shape)
    imag = rng.normal(0.0, sigma, data.shape)
    return np.sqrt(real**2 + imag**2).astype(np.float32)


def reference_signal(data: np.ndarray, wm_mask: np.ndarray | None = None) -> float:
    """The signal that SNR is relative to: mean over the white-matter mask of a noise-free image.

    Without a mask (fallback): the foreground is every voxel above 10% of the maximum, and the
    reference is the mean of the foreground voxels at or above the foreground's median intensity.

    Args:
        data: the noise-free image.
        wm_mask: white-matter mask on the same grid (non-zero = WM), or None.
    """
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


def noise_sigma(hr: np.ndarray, snr: float, wm_mask: np.ndarray | None = None) -> float:
    """Noise level for ``snr`` relative to :func:`reference_signal` of the noise-free ``hr``."""
    return noise_sigma_for_snr(reference_signal(hr, wm_mask), snr)


def noise_generators(
    seed: int, subject_seed: int | None = None, n: int = 4
) -> list[np.random.Generator]:
    """Independent generators: children 0-2 for the three stacks, 3 for the noisy HR scan.

    Seeded from ``SeedSequence([subject_seed, seed])``, or ``SeedSequence(seed)`` without a subject
    seed (the stacks' noise is then the same as before subject seeds existed).
    """
    entropy = int(seed) if subject_seed is None else [int(subject_seed), int(seed)]
    return [np.random.default_rng(s) for s in np.random.SeedSequence(entropy).spawn(n)]


def scan_time_matched_snr(hr_snr: float, k: int, n_stacks: int = 3) -> float:
    """SNR of each of ``n_stacks`` LR stacks taking, together, the scan time of one HR scan.

    SNR is proportional to voxel volume times the square root of the scan time. An LR voxel is
    ``k`` times the HR voxel's volume, and each stack has ``1 / n_stacks`` of the HR scan time, so
    ``snr_lr = hr_snr * k / sqrt(n_stacks)``: three stacks at ``k = 4`` each have 2.31 times the
    SNR of the HR scan (the textbook rule; e.g. Macovski 1996, "Noise in MRI", Magn Reson Med
    36:494-497).

    Args:
        hr_snr: SNR of the HR scan (same definition as everywhere here).
        k: LR voxel volume in HR voxels: the slice thickness in HR voxels.
        n_stacks: number of LR stacks sharing the HR scan time.
    """
    if not k > 0 or n_stacks < 1:
        raise InputError(f"k must be > 0 and n_stacks >= 1, got k={k}, n_stacks={n_stacks}")
    if not (np.isfinite(hr_snr) and hr_snr > 0):
        raise InputError(f"the HR SNR must be a positive number, got {hr_snr}")
    return float(hr_snr) * k / np.sqrt(n_stacks)


def noisy_hr(
    hr: Volume,
    snr: float,
    seed: int = 0,
    subject_seed: int | None = None,
    wm_mask: np.ndarray | None = None,
) -> Volume:
    """The HR scan of the same subject with Rician noise at ``snr`` (the same model as the stacks).

    Its noise comes from generator 3 of :func:`noise_generators`, independent of the stacks'.
    """
    sigma = noise_sigma(hr.data, snr, wm_mask)
    rng = noise_generators(seed, subject_seed)[3]
    return Volume(data=rician_noise(hr.data, sigma, rng), affine=np.array(hr.affine))


def _rician_xi(theta: float) -> float:
    """Koay & Basser's correction factor: variance of a Rician magnitude / sigma^2 at SNR theta."""
    from scipy.special import ive

    x = theta**2 / 4.0
    bracket = (2.0 + theta**2) * ive(0, x) + theta**2 * ive(1, x)
    return float(2.0 + theta**2 - np.pi / 8.0 * bracket**2)


def rician_signal_and_sigma(magnitude: np.ndarray) -> tuple[float, float]:
    """Estimate the underlying signal and sigma of a uniform region of a Rician magnitude image.

    Moment matching by Koay & Basser (2006, J Magn Reson 179:317-322): solves
    ``theta = sqrt(xi(theta) (1 + r^2) - 2)`` with ``r`` = mean / std of the magnitudes, then
    ``sigma = std / sqrt(xi(theta))`` and signal = ``theta * sigma``. Returns ``(0, ...)`` when the
    region is indistinguishable from pure noise.
    """
    from scipy.optimize import brentq

    m = np.asarray(magnitude, dtype=np.float64).ravel()
    mean, std = float(m.mean()), float(m.std())
    r = mean / std
    if r <= np.sqrt(np.pi / (4.0 - np.pi)):
        return 0.0, float(np.sqrt((m**2).mean() / 2.0))

    def f(theta: float) -> float:
        return np.sqrt(max(_rician_xi(theta) * (1.0 + r**2) - 2.0, 0.0)) - theta

    theta = brentq(f, 0.0, r + 1.0)
    sigma = std / np.sqrt(_rician_xi(theta))
    return float(theta * sigma), float(sigma)


def simulate_stack(
    hr: Volume, axis: int, k: int, profile: Profile = "box", *, thickness: float | None = None
) -> Stack:
    """One LR stack, thick along voxel ``axis`` by a factor ``k``, without noise.

    ``thickness`` (HR voxels; ``None``: ``k``) is the slice thickness, see
    :func:`profile_matrix`. A stack whose slices are not ``k`` HR voxels thick carries its
    thickness in mm (:attr:`~irem.volume.Stack.thickness`), so that the methods' slice models use
    it; ``thickness=k`` gives the same stack as ``None``.
    """
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
    hr: Volume,
    k: int,
    profile: Profile = "box",
    snr: float | None = None,
    seed: int = 0,
    wm_mask: np.ndarray | None = None,
    subject_seed: int | None = None,
    *,
    thickness: float | None = None,
) -> list[Stack]:
    """Three orthogonal LR stacks, one thick along each voxel axis, with optional Rician noise.

    Args:
        hr: the noise-free HR volume.
        k: slice spacing in HR voxels (the down-sampling factor).
        profile: slice profile.
        snr: SNR of each stack (reference signal of ``hr``, see :func:`reference_signal`).
        seed: run seed of the noise.
        wm_mask: white-matter mask on ``hr``'s grid defining the SNR reference (recommended).
        subject_seed: subject seed, combined with ``seed`` (see :func:`noise_generators`).
        thickness: slice thickness in HR voxels (``None``: ``k``; see :func:`profile_matrix`).
    """
    if snr is not None and not snr > 0:
        raise InputError(f"--snr must be positive, got {snr}")
    stacks = [simulate_stack(hr, axis, k, profile, thickness=thickness) for axis in range(3)]
    if snr is not None:
        sigma = noise_sigma(hr.data, snr, wm_mask)
        for stack, rng in zip(stacks, noise_generators(seed, subject_seed)[:3], strict=True):
            stack.data = rician_noise(stack.data, sigma, rng)
    return stacks


def simulate_scan_time_matched(
    hr: Volume,
    k: int,
    hr_snr: float,
    profile: Profile = "box",
    seed: int = 0,
    wm_mask: np.ndarray | None = None,
    subject_seed: int | None = None,
    *,
    thickness: float | None = None,
) -> tuple[list[Stack], Volume, dict[str, float]]:
    """Three LR stacks and one HR scan of equal total scan time (the paper's dataset #C argument).

    The HR scan gets Rician noise at ``hr_snr``; each stack at :func:`scan_time_matched_snr` of
    its voxel volume (``thickness`` HR voxels; ``None``: ``k``; the ``none`` profile: ``k``).

    Returns:
        The noisy stacks, the noisy HR scan and ``{"hr_snr", "lr_snr", "hr_sigma", "lr_sigma",
        "reference_signal"}`` for the sidecar.
    """
    lr_snr = scan_time_matched_snr(hr_snr, k if thickness is None else thickness, n_stacks=3)
    stacks = simulate_stacks(
        hr, k, profile, lr_snr, seed, wm_mask, subject_seed, thickness=thickness
    )
    hr_noisy = noisy_hr(hr, hr_snr, seed, subject_seed, wm_mask)
    ref = reference_signal(hr.data, wm_mask)
    info = {
        "hr_snr": float(hr_snr),
        "lr_snr": lr_snr,
        "hr_sigma": noise_sigma_for_snr(ref, hr_snr),
        "lr_sigma": noise_sigma_for_snr(ref, lr_snr),
        "reference_signal": ref,
    }
    return stacks, hr_noisy, info


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
    return dataclasses.replace(stack, affine=motion @ stack.affine)


def reorient(stack: Stack, codes: str) -> Stack:
    """Store the same image with voxel axes in another orientation (e.g. ``"LPS"``, ``"SRA"``).

    The world position of every intensity is unchanged; only the array layout and affine change
    (the mask, if any, follows the data; thickness and transform are kept).
    """
    cur = nib.orientations.io_orientation(stack.affine)
    target = nib.orientations.axcodes2ornt(tuple(codes))
    ornt = nib.orientations.ornt_transform(cur, target)
    data = nib.orientations.apply_orientation(stack.data, ornt)
    affine = stack.affine @ nib.orientations.inv_ornt_aff(ornt, stack.shape)
    mask = stack.mask
    if mask is not None:
        mask = np.ascontiguousarray(nib.orientations.apply_orientation(mask, ornt))
    return dataclasses.replace(stack, data=np.ascontiguousarray(data), affine=affine, mask=mask)


# Orientations that ``--reorient`` stores the three stacks in (sagittal stays as simulated).
REORIENT_CODES: tuple[str | None, ...] = (None, "LPS", "SAL")
