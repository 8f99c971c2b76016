"""Embedded ground-truth volumes: the MNI152 2009 template shipped with nilearn, and a phantom.

Nothing is downloaded: nilearn ships the 1 mm template (skull-stripped, uint8) and the grey/white
matter probability maps in its package data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.affines import from_matvec

from irem.acquisition.simulate import lr_affine
from irem.data.phantom import shepp_logan
from irem.errors import InputError
from irem.volume import Volume, apply_affine, voxel_centres


def _load_packaged(name: str) -> Volume:
    from nilearn import datasets

    img = nib.load(str(Path(datasets.__file__).parent / "data" / name))
    return Volume(data=np.asarray(img.dataobj, dtype=np.float32), affine=np.array(img.affine))


def crop_to_content(vol: Volume, multiple: int = 8, threshold: float = 0.0) -> Volume:
    """Crop to the bounding box of voxels above ``threshold``, then zero-pad each axis evenly to a
    multiple; every kept voxel stays at its world position."""
    nz = np.argwhere(vol.data > threshold)
    lo, hi = nz.min(axis=0), nz.max(axis=0) + 1
    size = hi - lo
    padded = (np.ceil(size / multiple) * multiple).astype(int)
    before = (padded - size) // 2
    start = lo - before  # may be negative: those voxels are padding
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(start + padded, vol.shape)
    out = np.zeros(tuple(padded), dtype=np.float32)
    src = vol.data[tuple(map(slice, src_lo, src_hi))]
    out[tuple(map(slice, src_lo - start, src_hi - start))] = src
    return Volume(data=out, affine=vol.affine @ from_matvec(np.eye(3), start))


def mni152_t1(crop: bool = True) -> Volume:
    """The 1 mm MNI152 2009 T1 template rescaled to [0, 1] (197x233x189); by default cropped to
    the brain and padded to multiples of 8 (152x184x160)."""
    vol = _load_packaged("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    vol.data /= float(vol.data.max())
    return crop_to_content(vol) if crop else vol


def mni152_tissue(tissue: str) -> Volume:
    """Grey (``"gm"``) or white (``"wm"``) matter probability map of the MNI152 2009 template."""
    if tissue not in ("gm", "wm"):
        raise ValueError(f"tissue must be 'gm' or 'wm', got {tissue!r}")
    return _load_packaged(f"mni_icbm152_{tissue}_tal_nlin_sym_09a_converted.nii.gz")


# --------------------------------------------------------------------------------------------------
# Synthetic FLAIR with white-matter lesions (the role of the paper's dataset #B, 1 x 1 x 2 mm)

#: FLAIR-like intensities of the pure tissue classes: fluid suppressed, GM brighter than WM.
FLAIR_CONTRAST = {"csf": 0.06, "gm": 0.62, "wm": 0.45, "lesion": 1.0}
#: Voxel size of the synthetic FLAIR (mm): 1 x 1 in plane, 2 mm slices along z, like dataset #B.
FLAIR_SPACING = (1.0, 1.0, 2.0)


@dataclass(frozen=True)
class Lesion:
    """An ellipsoidal hyperintense lesion: centre and semi-axes in world millimetres (RAS)."""

    centre: tuple[float, float, float]
    radii: tuple[float, float, float]


def sample_lesions(
    candidates: np.ndarray, rng: np.random.Generator, n_min: int = 3, n_max: int = 6
) -> list[Lesion]:
    """Draw ``n_min``..``n_max`` lesions at least 12 mm apart, centred on world points (mm) drawn
    from ``candidates`` ``(n, 3)``, with ``rng`` the only source of randomness."""
    if len(candidates) == 0:
        raise ValueError("no candidate positions for lesions")
    n = int(rng.integers(n_min, n_max + 1))
    lesions: list[Lesion] = []
    for _ in range(50 * n):
        if len(lesions) == n:
            break
        c = candidates[int(rng.integers(len(candidates)))]
        if any(np.linalg.norm(c - np.asarray(les.centre)) < 12.0 for les in lesions):
            continue
        radii = rng.uniform(2.5, 6.0, size=3)
        lesions.append(Lesion(centre=tuple(map(float, c)), radii=tuple(map(float, radii))))
    return lesions


def render_lesions(
    shape: tuple[int, int, int], affine: np.ndarray, lesions: list[Lesion]
) -> np.ndarray:
    """Soft lesion map in [0, 1] on a grid: 1 inside each ellipsoid, a 1 mm wide smooth edge."""
    out = np.zeros(shape, dtype=np.float32)
    for les in lesions:
        # Only a box around the lesion (its bounding sphere plus 3 mm) needs evaluating.
        reach = max(les.radii) + 3.0
        corners = np.array(np.meshgrid(*[[-reach, reach]] * 3, indexing="ij")).reshape(3, -1).T
        idx = apply_affine(np.linalg.inv(affine), corners + np.asarray(les.centre))
        lo = np.clip(np.floor(idx.min(axis=0)).astype(int), 0, np.asarray(shape))
        hi = np.clip(np.ceil(idx.max(axis=0)).astype(int) + 1, 0, np.asarray(shape))
        if np.any(hi <= lo):
            continue
        sub = tuple(int(v) for v in hi - lo)
        pts = voxel_centres(sub, affine @ from_matvec(np.eye(3), lo)).reshape(*sub, 3)
        d = np.sqrt((((pts - np.asarray(les.centre)) / np.asarray(les.radii)) ** 2).sum(axis=-1))
        # Normalised distance 1 is the ellipsoid surface; the edge is ~1 mm wide for these radii.
        edge = 1.0 / (1.0 + np.exp(np.clip((d - 1.0) * 4.0 * min(les.radii), -50, 50)))
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        np.maximum(out[box], edge.astype(np.float32), out=out[box])
    return out


def block_mean(vol: Volume, axis: int, factor: int) -> Volume:
    """Average ``factor`` consecutive voxels along ``axis`` (trailing ones dropped); each new voxel
    centre is the mean of those it averages."""
    n = vol.shape[axis] // factor
    moved = np.moveaxis(vol.data, axis, 0)[: n * factor]
    data = moved.reshape(n, factor, *moved.shape[1:]).mean(axis=1)
    affine = lr_affine(vol.affine, axis, factor, (factor - 1) / 2.0)
    return Volume(data=np.moveaxis(data, 0, axis).astype(np.float32), affine=affine)


def mni152_flair(seed: int = 0, crop: bool = True) -> Volume:
    """A FLAIR-like MNI152 brain at 1 x 1 x 2 mm (pairs of 1 mm slices averaged) from the GM/WM
    maps, with 3-6 lesions drawn from ``seed`` in deep WM (probability > 0.95); cropped like
    :func:`mni152_t1`."""
    t1 = mni152_t1(crop=False)
    gm, wm = (mni152_tissue(t).data / 255.0 for t in ("gm", "wm"))
    brain = t1.data > 0
    deep = np.argwhere(wm > 0.95)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xF1A1]))
    lesions = sample_lesions(apply_affine(t1.affine, deep), rng)
    lesion = render_lesions(t1.shape, t1.affine, lesions) * np.clip(wm + gm, 0.0, 1.0)
    c = FLAIR_CONTRAST  # CSF fills the brain beyond GM and WM
    tissue = c["csf"] * np.clip(1.0 - gm - wm, 0.0, 1.0) + c["gm"] * gm + c["wm"] * wm
    img = ((1.0 - lesion) * tissue + lesion * c["lesion"]) * brain
    hr = Volume(data=img.astype(np.float32), affine=t1.affine)
    flair = block_mean(hr, axis=2, factor=int(FLAIR_SPACING[2]))
    flair.data /= float(flair.data.max())
    return crop_to_content(flair) if crop else flair


# --------------------------------------------------------------------------------------------------
# Phantom, masks and crops


def phantom(size: int = 64, spacing: float = 1.0) -> Volume:
    """A cubic 3-D Shepp-Logan phantom of ``size`` voxels of ``spacing`` mm."""
    if size < 8:
        raise InputError(f"the phantom needs at least 8 voxels a side, got {size}")
    return shepp_logan((size, size, size), spacing=spacing)


def brain_mask(vol: Volume, threshold: float = 0.0, relative: bool = False) -> Volume:
    """Binary (0/1 float32) head/brain mask: voxels above ``threshold`` (``relative``: a fraction of
    the 99.5th percentile), largest component, holes filled."""
    from scipy import ndimage

    t = threshold * float(np.percentile(vol.data, 99.5)) if relative else threshold
    fg = vol.data > t
    if not fg.any():
        raise InputError(f"no voxel above the mask threshold {t:g}")
    labels, _ = ndimage.label(fg)
    fg = ndimage.binary_fill_holes(labels == 1 + np.argmax(np.bincount(labels.ravel())[1:]))
    return Volume(data=fg.astype(np.float32), affine=np.array(vol.affine))


def crop_box(
    vol: Volume, shape: tuple[int, int, int] | list[int],
    position: tuple[float, float, float] | list[float] = (0.5, 0.5, 0.5),
) -> Volume:  # fmt: skip
    """Keep a box of ``shape`` voxels placed along each axis by ``position`` (0: at the first voxel,
    1: at the last); every kept voxel stays at its world position."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or any(s < 1 for s in shape):
        raise InputError(f"crop shape must be three positive integers, got {shape}")
    if any(s > n for s, n in zip(shape, vol.shape, strict=True)):
        raise InputError(f"crop {shape} is larger than the image {vol.shape}")
    if len(position) != 3 or not all(0.0 <= float(p) <= 1.0 for p in position):
        raise InputError(f"crop position must be three numbers in [0, 1], got {list(position)}")
    start = [int(np.floor(float(p) * (n - s)))
             for p, s, n in zip(position, shape, vol.shape, strict=True)]  # fmt: skip
    sl = tuple(slice(a, a + s) for a, s in zip(start, shape, strict=True))
    affine = vol.affine @ from_matvec(np.eye(3), start)
    return Volume(data=np.ascontiguousarray(vol.data[sl]), affine=affine)
