"""DICOM series as stacks: a directory holding one series reads as a :class:`~irem.volume.Stack`.

SimpleITK's GDCM reader sorts the slices by their position along the slice normal and takes the
geometry from the headers (Image Position / Orientation Patient, Pixel Spacing; the slice spacing
from the positions, not from Slice Thickness). ITK's LPS image is converted to a RAS volume by
:func:`irem.acquisition.registration.from_sitk`. Slice Thickness (0018,0050) becomes the stack's slice
thickness when it differs from the slice spacing (gaps or overlaps).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from irem.acquisition.registration import from_sitk, to_sitk
from irem.errors import InputError
from irem.volume import Stack, Volume, validate

#: Headers every slice must carry: without them the voxels have no place in the scanner's space.
REQUIRED_TAGS = {
    "0020|0032": "Image Position (Patient)",
    "0020|0037": "Image Orientation (Patient)",
}
SLICE_THICKNESS = "0018|0050"
#: Relative spread of the slice spacing above which a series counts as irregular.
SPACING_TOLERANCE = 0.01


def is_dicom_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a directory (which is then read as a DICOM series)."""
    return Path(path).is_dir()


def _series_files(directory: Path) -> list[str]:
    """The files of the one series in ``directory``; refuses none or several."""
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(directory))
    if not ids:
        raise InputError(f"{directory}: no DICOM series in this directory")
    if len(ids) > 1:
        raise InputError(
            f"{directory}: holds {len(ids)} DICOM series; give a directory with exactly one"
        )
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(directory), ids[0]))


def _check_positions(
    reader: sitk.ImageSeriesReader, n: int, normal: np.ndarray, path: Path
) -> None:
    """Every slice has position and orientation, and the slices are evenly spaced."""
    for i in range(n):
        for tag, name in REQUIRED_TAGS.items():
            if not reader.HasMetaDataKey(i, tag):
                raise InputError(f"{path}: slice {i + 1} of {n} has no {name} ({tag})")
    if n < 3:
        return
    pos = np.array(
        [[float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")] for i in range(n)]
    )
    steps = np.diff(pos @ normal)
    if np.any(steps <= 0) or np.ptp(steps) > SPACING_TOLERANCE * float(np.mean(steps)):
        raise InputError(
            f"{path}: the slices are not evenly spaced (steps {steps.min():.3f} to "
            f"{steps.max():.3f} mm): missing or repeated slices"
        )


def read_series(directory: str | os.PathLike[str]) -> tuple[Volume, float | None]:
    """The one DICOM series in ``directory`` as a RAS volume, and its Slice Thickness (mm) if given.

    Raises:
        InputError: no series, several series, unreadable files, a slice without position or
            orientation, unevenly spaced slices, or a non-3-D image.
    """
    path = Path(directory)
    files = _series_files(path)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        lines = [ln for ln in str(exc).splitlines() if ln.strip()]
        raise InputError(f"{path}: cannot read the DICOM series ({lines[-1].strip()})") from None
    if img.GetDimension() != 3:
        raise InputError(f"{path}: expected a 3-D series, got {img.GetDimension()}-D")
    direction = np.asarray(img.GetDirection()).reshape(3, 3)
    _check_positions(reader, len(files), direction[:, 2], path)
    vol = from_sitk(img)
    data, affine = validate(vol.data, vol.affine, str(path))
    thickness = None
    if reader.HasMetaDataKey(0, SLICE_THICKNESS):
        try:
            thickness = float(reader.GetMetaData(0, SLICE_THICKNESS).strip())
        except ValueError:
            thickness = None
        if thickness is not None and not thickness > 0:
            thickness = None
    return Volume(data, affine), thickness


def load_dicom_stack(directory: str | os.PathLike[str]) -> Stack:
    """A DICOM series directory as a :class:`Stack` named after the directory.

    Slice Thickness becomes the stack's ``thickness`` when the slices are the thick axis (the third
    voxel axis) and it differs from their spacing by more than 1%.
    """
    vol, thickness = read_series(directory)
    stack = Stack(data=vol.data, affine=vol.affine, name=Path(directory).resolve().name)
    if (
        thickness is not None
        and stack.thick_axis == 2
        and abs(thickness - stack.slice_thickness) > 0.01 * thickness
    ):
        stack.thickness = thickness
    return stack


def write_series(
    vol: Volume,
    directory: str | os.PathLike[str],
    slice_thickness: float | None = None,
    series_uid: str | None = None,
) -> list[Path]:
    """Write ``vol`` as a DICOM series (int16 MR slices along its third voxel axis).

    The intensities are rounded to integers, so integer-valued images round-trip exactly. The third
    voxel axis must be the slice normal's direction (``cross(row, column)`` in LPS), as DICOM
    readers assume; a volume whose axes are left-handed in LPS is refused.

    Args:
        vol: the volume (RAS affine).
        directory: an existing directory.
        slice_thickness: Slice Thickness to record (default: the spacing of the third axis).
        series_uid: the Series Instance UID (default: a new one).

    Returns:
        The files written, one per slice.
    """
    img = sitk.Cast(sitk.Round(to_sitk(vol)), sitk.sitkInt16)
    direction = np.asarray(img.GetDirection()).reshape(3, 3)
    if np.linalg.det(direction) < 0:
        raise InputError(
            "the volume's voxel axes are left-handed in LPS: flip its third axis first"
        )
    out = Path(directory)
    uid = series_uid or f"1.2.826.0.1.3680043.2.1125.{int(time.time() * 1e6)}.{os.getpid()}"
    orientation = "\\".join(f"{v:.10g}" for v in (*direction[:, 0], *direction[:, 1]))
    spacing = img.GetSpacing()
    thick = float(spacing[2] if slice_thickness is None else slice_thickness)
    shared = {
        "0008|0060": "MR",
        "0008|0008": "DERIVED\\SECONDARY",
        "0020|000d": uid.rsplit(".", 1)[0] + ".1",
        "0020|000e": uid,
        "0020|0037": orientation,
        "0018|0050": f"{thick:.10g}",
        "0018|0088": f"{spacing[2]:.10g}",
        "0008|103e": "irem-bench stack",
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for k in range(img.GetSize()[2]):
        sl = img[:, :, k]
        for tag, value in shared.items():
            sl.SetMetaData(tag, value)
        position = img.TransformIndexToPhysicalPoint((0, 0, k))
        sl.SetMetaData("0020|0032", "\\".join(f"{v:.10g}" for v in position))
        sl.SetMetaData("0020|0013", str(k + 1))
        sl.SetMetaData("0008|0018", f"{uid}.{k + 1}")
        path = out / f"slice{k + 1:04d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(sl)
        files.append(path)
    return files
