"""DICOM series as stacks: a directory holding one series reads as a :class:`~irem.volume.Stack`
(SimpleITK's GDCM reader sorts the slices and takes the geometry from the headers)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from irem.acquisition.registration import from_sitk, itk_reason
from irem.errors import InputError
from irem.volume import Stack, Volume, validate

#: Headers every slice must carry: without them the voxels have no place in the scanner's space.
REQUIRED_TAGS = {"0020|0032": "Image Position (Patient)",
                 "0020|0037": "Image Orientation (Patient)"}
SLICE_THICKNESS = "0018|0050"
#: Relative spread of the slice spacing above which a series counts as irregular.
SPACING_TOLERANCE = 0.01


def read_series(directory: str | os.PathLike[str]) -> tuple[Volume, float | None]:
    """The one DICOM series in ``directory`` as a RAS volume, and its Slice Thickness (mm) if given;
    refuses several series, unreadable files, missing positions and unevenly spaced slices."""
    path = Path(directory)
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
    if not ids:
        raise InputError(f"{path}: no DICOM series in this directory")
    if len(ids) > 1:
        raise InputError(f"{path}: holds {len(ids)} DICOM series; "
                         "give a directory with exactly one")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), ids[0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{path}: cannot read the DICOM series ({itk_reason(exc)})") from None
    if img.GetDimension() != 3:
        raise InputError(f"{path}: expected a 3-D series, got {img.GetDimension()}-D")
    n = len(files)
    for i in range(n):
        for tag, name in REQUIRED_TAGS.items():
            if not reader.HasMetaDataKey(i, tag):
                raise InputError(f"{path}: slice {i + 1} of {n} has no {name} ({tag})")
    if n >= 3:  # evenly spaced along the slice normal
        pos = [[float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")] for i in range(n)]
        steps = np.diff(np.array(pos) @ np.asarray(img.GetDirection()).reshape(3, 3)[:, 2])
        if np.any(steps <= 0) or np.ptp(steps) > SPACING_TOLERANCE * float(np.mean(steps)):
            raise InputError(f"{path}: the slices are not evenly spaced (steps {steps.min():.3f} "
                             f"to {steps.max():.3f} mm): missing or repeated slices")
    vol = from_sitk(img)
    data, affine = validate(vol.data, vol.affine, str(path))
    thickness = 0.0
    if reader.HasMetaDataKey(0, SLICE_THICKNESS):
        with contextlib.suppress(ValueError):
            thickness = float(reader.GetMetaData(0, SLICE_THICKNESS).strip())
    return Volume(data, affine), thickness if thickness > 0 else None


def load_dicom_stack(directory: str | os.PathLike[str]) -> Stack:
    """A DICOM series directory as a :class:`Stack` named after it; Slice Thickness becomes its
    ``thickness`` when the slices are the thick axis and it differs from their spacing by > 1%."""
    vol, thickness = read_series(directory)
    stack = Stack(data=vol.data, affine=vol.affine, name=Path(directory).resolve().name)
    differs = thickness is not None and abs(thickness - stack.slice_thickness) > 0.01 * thickness
    if differs and stack.thick_axis == 2:
        stack.thickness = thickness
    return stack
