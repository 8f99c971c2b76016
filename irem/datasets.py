"""Embedded ground-truth volumes: the MNI152 2009 template shipped with nilearn, and a phantom.

Nothing is downloaded: nilearn ships the 1 mm template (skull-stripped, uint8) and the grey/white
matter probability maps in its package data.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from irem.volume import Volume


def nilearn_data_dir() -> Path:
    """The folder of nilearn's package data that holds the MNI152 files."""
    from nilearn import datasets

    return Path(datasets.__file__).parent / "data"


def _load_packaged(name: str) -> Volume:
    img = nib.load(str(nilearn_data_dir() / name))
    return Volume(data=np.asarray(img.dataobj, dtype=np.float32), affine=np.array(img.affine))


def crop_to_content(vol: Volume, multiple: int = 8, threshold: float = 0.0) -> Volume:
    """Crop to the bounding box of voxels above ``threshold``, then zero-pad each axis to a multiple.

    The padding is split evenly on both sides; the affine follows the crop so that every kept voxel
    stays at its world position.
    """
    nz = np.argwhere(vol.data > threshold)
    lo, hi = nz.min(axis=0), nz.max(axis=0) + 1
    size = hi - lo
    padded = (np.ceil(size / multiple) * multiple).astype(int)
    before = (padded - size) // 2
    start = lo - before  # may be negative: those voxels are padding
    out = np.zeros(tuple(padded), dtype=np.float32)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(start + padded, vol.shape)
    dst_lo = src_lo - start
    dst_hi = dst_lo + (src_hi - src_lo)
    out[tuple(slice(a, b) for a, b in zip(dst_lo, dst_hi, strict=True))] = vol.data[
        tuple(slice(a, b) for a, b in zip(src_lo, src_hi, strict=True))
    ]
    shift = np.eye(4)
    shift[:3, 3] = start
    return Volume(data=out, affine=vol.affine @ shift)


def mni152_t1(crop: bool = True) -> Volume:
    """The 1 mm MNI152 2009 T1 template rescaled to [0, 1]; cropped to the brain by default.

    Uncropped it is 197x233x189; cropped to its non-zero bounding box and padded to multiples of 8 it
    is 152x192x160.
    """
    vol = _load_packaged("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    vol.data /= float(vol.data.max())
    return crop_to_content(vol) if crop else vol


def mni152_tissue(tissue: str) -> Volume:
    """Grey (``"gm"``) or white (``"wm"``) matter probability map of the MNI152 2009 template."""
    if tissue not in ("gm", "wm"):
        raise ValueError(f"tissue must be 'gm' or 'wm', got {tissue!r}")
    return _load_packaged(f"mni_icbm152_{tissue}_tal_nlin_sym_09a_converted.nii.gz")
