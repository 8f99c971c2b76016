"""Spatial normalisation (paper section 2.1): rigid registration of LR stacks to a fixed stack.

A stack's ``transform`` is a 4x4 RAS mm map from its world space into the fixed stack's (the
normalised space N): voxels reach N through ``transform @ affine``; the LR data are never resampled.
nibabel is RAS+ with arrays indexed ``(x, y, z)``, SimpleITK LPS with ``(z, y, x)``; a world map
``T`` converts as ``F @ T @ F`` (``F = diag(-1, -1, 1)``). ITK registrations and ``.tfm`` files hold
the *fixed -> moving* point map; this module's matrices are the inverse, *moving -> fixed*.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from nibabel.affines import from_matvec

from irem.errors import InputError
from irem.volume import Stack, Volume, atomic_path, voxel_sizes

log = logging.getLogger(__name__)
#: RAS <-> LPS world flip as a 4x4 homogeneous matrix (its own inverse).
FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Suffixes that :func:`sitk.WriteTransform` understands.
TRANSFORM_SUFFIXES = (".tfm", ".txt", ".mat", ".h5", ".hdf5")

#: Pyramid levels as multiples of the finest in-plane spacing of the two stacks (coarse to fine).
LEVEL_FACTORS = (4.0, 2.0, 1.0)
#: Never shrink an axis below this many voxels.
MIN_LEVEL_VOXELS = 8
#: Metric samples per level: all voxels below this count, else a random subset of about this size.
MAX_SAMPLES = 50_000
HISTOGRAM_BINS = 32
MAX_ITERATIONS = 200
#: Step shrink factor of the regular-step gradient descent when the gradient changes direction.
RELAXATION = 0.7
#: Threads used inside the registration: fixed so that the result is reproducible.
REGISTRATION_THREADS = 1


def to_sitk(vol: Volume) -> sitk.Image:
    """A SimpleITK image (LPS) with pixel ``(i, j, k)`` = ``vol.data[i, j, k]`` at the same place;
    the affine may be flipped, permuted or oblique but must not shear."""
    data = np.asarray(vol.data)
    if data.ndim != 3:
        raise InputError(f"expected a 3-D image, got shape {data.shape}")
    lps = FLIP @ np.asarray(vol.affine, dtype=np.float64)
    spacing = voxel_sizes(lps)
    if np.any(spacing <= 0) or not np.all(np.isfinite(lps)):
        raise InputError("the affine has a zero-length or non-finite voxel axis")
    direction = lps[:3, :3] / spacing
    if np.max(np.abs(direction.T @ direction - np.eye(3))) > 1e-4:
        raise InputError("the affine shears (its voxel axes are not perpendicular); "
                         "SimpleITK cannot represent it")
    img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)), isVector=False)
    img.SetSpacing(spacing.tolist())
    img.SetDirection(direction.ravel().tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    return img


def from_sitk(img: sitk.Image) -> Volume:
    """A 3-D scalar SimpleITK image as a RAS volume (inverse of :func:`to_sitk`)."""
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"expected a 3-D scalar image, got {img.GetDimension()}-D with "
                         f"{img.GetNumberOfComponentsPerPixel()} components per pixel")
    data = sitk.GetArrayFromImage(img).transpose(2, 1, 0).copy()
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = from_matvec(direction * np.asarray(img.GetSpacing(), dtype=np.float64), img.GetOrigin())
    return Volume(data=data, affine=FLIP @ lps)


def rotation_angle_deg(matrix: np.ndarray) -> float:
    """Rotation angle (degrees) of the linear part of a rigid 4x4 or 3x3 matrix."""
    rot = np.asarray(matrix, dtype=np.float64)[:3, :3]
    cos = (np.trace(rot) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def _size(matrix: np.ndarray) -> tuple[float, float]:
    """Rotation angle (degrees) and translation length (mm) of a rigid 4x4 map."""
    return rotation_angle_deg(matrix), float(np.linalg.norm(matrix[:3, 3]))


def _set_euler(tx: sitk.Euler3DTransform, lps: np.ndarray) -> None:
    """Set ``tx`` (keeping its centre) to the rigid LPS map ``lps``: ``x -> R x + o``."""
    rot, offset = lps[:3, :3], lps[:3, 3]
    if not _is_rotation(rot, tol=1e-4):
        raise InputError("the initial transform is not rigid")
    centre = np.asarray(tx.GetCenter(), dtype=np.float64)
    tx.SetMatrix(rot.ravel().tolist(), 1e-4)
    tx.SetTranslation((offset - centre + rot @ centre).tolist())


def shrink_factors(img: sitk.Image, target_mm: float, min_voxels: int) -> np.ndarray:
    """Per axis, the whole factor that takes ``img``'s spacing to about ``target_mm`` (1 on axes
    already coarser), keeping at least ``min_voxels`` voxels."""
    spacing = np.asarray(img.GetSpacing(), dtype=np.float64)
    factors = np.maximum(1, np.round(target_mm / spacing)).astype(int)
    return np.minimum(factors, np.maximum(1, np.asarray(img.GetSize()) // min_voxels))


def _level(img: sitk.Image, target_mm: float) -> sitk.Image:
    """Smooth and bin-shrink ``img`` towards ``target_mm`` per axis (thick-slice axes, already
    coarser, are neither smoothed nor shrunk)."""
    spacing = np.asarray(img.GetSpacing(), dtype=np.float64)
    factors = shrink_factors(img, target_mm, MIN_LEVEL_VOXELS)
    if np.all(factors == 1):
        return img
    # Extra blur so that the effective resolution is about the new voxel size (FWHM-like).
    sigma = 0.5 * np.sqrt(np.maximum(0.0, (factors * spacing) ** 2 - spacing**2))
    smoothed = sitk.DiscreteGaussian(img, variance=(sigma**2).tolist(), useImageSpacing=True)
    return sitk.BinShrink(smoothed, factors.tolist())


def register_rigid(
    fixed: Stack, moving: Stack, *, seed: int = 0, init: str = "geometry",
    initial: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """Rigidly register ``moving`` to ``fixed`` (Euler angles, Mattes MI, a pyramid in mm over
    :data:`LEVEL_FACTORS`); returns the 4x4 RAS moving -> fixed map. Reproducible: fixed sampling
    seed and threads.

    ``init``: ``"geometry"`` (align the field-of-view centres) or ``"world"`` (trust the headers);
    ``initial``: a rigid RAS moving -> fixed map to start from instead (e.g. a package's stack's).
    """
    if init not in ("geometry", "world"):
        raise InputError(f"init must be 'geometry' or 'world', got {init!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise InputError(f"the registration seed must be an integer, got {seed!r}")
    fixed_img = sitk.Cast(to_sitk(fixed), sitk.sitkFloat32)
    moving_img = sitk.Cast(to_sitk(moving), sitk.sitkFloat32)
    geometry = sitk.CenteredTransformInitializerFilter.GEOMETRY
    tx = sitk.CenteredTransformInitializer(fixed_img, moving_img, sitk.Euler3DTransform(), geometry)
    tx = sitk.Euler3DTransform(tx)
    if init == "world":
        tx.SetTranslation((0.0, 0.0, 0.0))
    if initial is not None:
        _set_euler(tx, FLIP @ np.linalg.inv(_check_matrix(initial)) @ FLIP)
    # SimpleITK's global thread count too (ITK's multi-threaded metric sums in a run-dependent
    # order: results would differ in the 8th digit), restored afterwards.
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(REGISTRATION_THREADS)
    try:  # a sampling seed in [1, 2**32 - 1]: 0 would mean "seed from the wall clock"
        _run_pyramid(fixed_img, moving_img, tx, int(seed) % 0xFFFFFFFF + 1)
    except RuntimeError as exc:
        raise InputError(f"rigid registration of stack {moving.name!r} to {fixed.name!r} failed: "
                         f"{itk_reason(exc)}") from None
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    rot = np.asarray(tx.GetMatrix(), dtype=np.float64).reshape(3, 3)  # x -> R (x - c) + c + t
    centre = np.asarray(tx.GetCenter(), dtype=np.float64)
    shift = centre - rot @ centre + np.asarray(tx.GetTranslation(), dtype=np.float64)
    return np.linalg.inv(FLIP @ from_matvec(rot, shift) @ FLIP)


def itk_reason(exc: RuntimeError) -> str:
    """The last non-blank line of an ITK error (its reason), else the exception's type name."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


def _run_pyramid(
    fixed_img: sitk.Image, moving_img: sitk.Image, tx: sitk.Euler3DTransform, seed: int
) -> None:
    """Optimise ``tx`` (in place) level by level, from coarse to fine."""
    finest = float(min(min(fixed_img.GetSpacing()), min(moving_img.GetSpacing())))
    for factor in LEVEL_FACTORS:
        target = factor * finest
        f_img, m_img = _level(fixed_img, target), _level(moving_img, target)
        reg = sitk.ImageRegistrationMethod()
        reg.SetNumberOfThreads(REGISTRATION_THREADS)
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=HISTOGRAM_BINS)
        n_voxels = int(np.prod(f_img.GetSize()))
        if n_voxels > MAX_SAMPLES:  # else all voxels (SimpleITK's default strategy, NONE)
            reg.SetMetricSamplingStrategy(reg.RANDOM)
            reg.SetMetricSamplingPercentage(MAX_SAMPLES / n_voxels, seed)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=target, minStep=0.002 * target, numberOfIterations=MAX_ITERATIONS,
            relaxationFactor=RELAXATION, gradientMagnitudeTolerance=1e-10,
        )  # fmt: skip
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetInitialTransform(tx, inPlace=True)
        reg.Execute(f_img, m_img)
        level = logging.INFO if factor == LEVEL_FACTORS[-1] else logging.DEBUG
        msg = "  %.3g mm level: Mattes MI %.5f after %d iterations"
        log.log(level, msg, target, reg.GetMetricValue(), reg.GetOptimizerIteration())
        log.debug("  %s", reg.GetOptimizerStopConditionDescription())


def normalise_stacks(
    stacks: list[Stack], fixed_index: int = 0, register: bool = True, seed: int = 0
) -> list[Stack]:
    """Copies of ``stacks`` (data and affine copied) whose ``transform`` maps each one into the
    world space of stack ``fixed_index``: registered to it, or (``register`` false) the identity."""
    if not stacks:
        raise InputError("no stacks to normalise")
    integer = isinstance(fixed_index, int | np.integer) and not isinstance(fixed_index, bool)
    if not integer or not 0 <= fixed_index < len(stacks):
        raise InputError(f"fixed stack index {fixed_index!r} is out of range: choose an integer "
                         f"from 0 to {len(stacks) - 1} (there are {len(stacks)} stacks)")
    fixed = stacks[fixed_index]
    out = []
    for i, stack in enumerate(stacks):
        if register and i != fixed_index:
            log.info("registering stack %r to %r", stack.name, fixed.name)
            transform = register_rigid(fixed, stack, seed=seed)
            log.info("  %r: rotation %.2f deg, translation %.2f mm", stack.name, *_size(transform))
        else:
            transform = np.eye(4)
        data = np.array(stack.data, copy=True)
        affine = np.array(stack.affine, dtype=np.float64, copy=True)
        out.append(dataclasses.replace(stack, data=data, affine=affine, transform=transform))
    return out


def register_to_reference(stacks: list[Stack], reference: Volume, seed: int = 0) -> list[Stack]:
    """Copies of ``stacks`` (packages) each registered to ``reference``, an image in normalised
    space, from its own ``transform``. The stack is the fixed image (the metric samples its voxels),
    so the gaps between a package's slices are never interpolated."""
    data = np.asarray(reference.data, dtype=np.float32)
    ref = Stack(data=data, affine=reference.affine, name="reference")
    out = []
    for stack in stacks:
        log.info("registering %r to the reference", stack.name)
        to_stack = register_rigid(stack, ref, seed=seed, initial=np.linalg.inv(stack.transform))
        transform = np.linalg.inv(to_stack)
        change = np.linalg.inv(stack.transform) @ transform
        log.info("  %r: %.2f deg, %.2f mm from its stack's transform", stack.name, *_size(change))
        out.append(dataclasses.replace(stack, transform=transform))
    return out


def _check_matrix(matrix: np.ndarray) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise InputError("a transform must be a finite 4x4 matrix")
    if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0]):
        raise InputError(f"a transform's last row must be [0, 0, 0, 1], got {m[3].tolist()}")
    if abs(np.linalg.det(m[:3, :3])) < 1e-9:
        raise InputError("the transform is singular")
    return m


def _is_rotation(rot: np.ndarray, tol: float = 1e-6) -> bool:
    return bool(np.allclose(rot.T @ rot, np.eye(3), atol=tol) and np.linalg.det(rot) > 0)


def save_transform(path: str | os.PathLike[str], matrix: np.ndarray) -> None:
    """Write a RAS moving -> fixed matrix atomically as an ITK transform file: the LPS fixed ->
    moving map (Euler3DTransform if rigid, else AffineTransform) that ``sitk.Resample`` expects."""
    path = Path(path)
    if path.suffix.lower() not in TRANSFORM_SUFFIXES:
        raise InputError(f"{path}: a transform file must end in {', '.join(TRANSFORM_SUFFIXES)}")
    if not path.parent.exists():
        raise InputError(f"{path.parent}: output directory does not exist")
    itk = FLIP @ np.linalg.inv(_check_matrix(matrix)) @ FLIP  # LPS, fixed -> moving
    rot, trans = itk[:3, :3], itk[:3, 3]
    tx: sitk.Transform
    if _is_rotation(rot):
        tx = sitk.Euler3DTransform()
        tx.SetMatrix(rot.ravel().tolist(), 1e-6)
    else:
        tx = sitk.AffineTransform(3)
        tx.SetMatrix(rot.ravel().tolist())
    tx.SetTranslation(trans.tolist())
    with atomic_path(path) as tmp:
        sitk.WriteTransform(tx, tmp)
