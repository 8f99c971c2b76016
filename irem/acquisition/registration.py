"""Spatial normalisation (paper section 2.1): rigid registration of LR stacks to a fixed stack.

Every stack is registered rigidly to one fixed stack. The result is a 4x4 matrix in RAS world
millimetres that maps points of the moving stack's world space into the fixed stack's world space,
which is the normalised space N. It is stored as the stack's ``transform``, so that a voxel index
reaches N through ``transform @ affine`` (:attr:`irem.volume.Stack.to_normalised`); the LR data are
never resampled.

Conventions. nibabel is RAS+ with arrays indexed ``(x, y, z)``; SimpleITK is LPS with arrays indexed
``(z, y, x)``. The two world frames differ by ``F = diag(-1, -1, 1)``, which is its own inverse, so a
world map ``T`` converts as ``F @ T @ F`` in either direction. An ITK registration (and an ITK
``.tfm`` file) holds the *fixed -> moving* point map used by resamplers; this module's matrices are
the inverse, *moving -> fixed*.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from irem.errors import InputError
from irem.volume import Stack, Volume

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
    """Convert a RAS volume to a SimpleITK image with the same voxels at the same places.

    Args:
        vol: A volume; its affine may be flipped, permuted or oblique but must not shear.

    Returns:
        An image whose pixel ``(i, j, k)`` is ``vol.data[i, j, k]``, in LPS physical coordinates.

    Raises:
        InputError: if the data are not 3-D or the affine shears (ITK directions are orthonormal).
    """
    data = np.asarray(vol.data)
    if data.ndim != 3:
        raise InputError(f"expected a 3-D image, got shape {data.shape}")
    spacing, direction, origin = _itk_geometry(np.asarray(vol.affine, dtype=np.float64))
    img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)), isVector=False)
    img.SetSpacing(spacing.tolist())
    img.SetDirection(direction.ravel().tolist())
    img.SetOrigin(origin.tolist())
    return img


def from_sitk(img: sitk.Image) -> Volume:
    """Convert a 3-D scalar SimpleITK image back to a RAS volume (inverse of :func:`to_sitk`).

    Args:
        img: A 3-D, single-component image.

    Returns:
        A volume with ``data[i, j, k]`` equal to pixel ``(i, j, k)`` and the matching RAS affine.

    Raises:
        InputError: if the image is not 3-D or has several components per pixel.
    """
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"expected a 3-D scalar image, got {img.GetDimension()}-D with "
            f"{img.GetNumberOfComponentsPerPixel()} components per pixel"
        )
    data = sitk.GetArrayFromImage(img).transpose(2, 1, 0).copy()
    lps = np.eye(4)
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps[:3, :3] = direction * np.asarray(img.GetSpacing(), dtype=np.float64)
    lps[:3, 3] = img.GetOrigin()
    return Volume(data=data, affine=FLIP @ lps)


def _itk_geometry(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spacing, direction cosines (3x3, columns) and origin in LPS of a RAS affine."""
    lps = FLIP @ affine
    linear = lps[:3, :3]
    spacing = np.sqrt((linear**2).sum(axis=0))
    if np.any(spacing <= 0) or not np.all(np.isfinite(lps)):
        raise InputError("the affine has a zero-length or non-finite voxel axis")
    direction = linear / spacing
    gram = direction.T @ direction
    if np.max(np.abs(gram - np.eye(3))) > 1e-4:
        raise InputError(
            "the affine shears (its voxel axes are not perpendicular); SimpleITK cannot represent it"
        )
    return spacing, direction, lps[:3, 3].copy()


def rigid_matrix(
    rotation_deg: tuple[float, float, float],
    translation_mm: tuple[float, float, float],
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """A 4x4 rigid map in RAS mm: rotate about ``centre``, then translate.

    Args:
        rotation_deg: Angles about the x, y and z axes, applied in that order (``R = Rz Ry Rx``).
        translation_mm: Translation applied after the rotation.
        centre: Centre of rotation (mm).

    Returns:
        ``M`` with ``M @ [p, 1] = R (p - centre) + centre + translation``.
    """
    ax, ay, az = np.deg2rad(np.asarray(rotation_deg, dtype=np.float64))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    rot = rz @ ry @ rx
    c = np.asarray(centre, dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = c - rot @ c + np.asarray(translation_mm, dtype=np.float64)
    return m


def rotation_angle_deg(matrix: np.ndarray) -> float:
    """Rotation angle (degrees) of the linear part of a rigid 4x4 or 3x3 matrix."""
    rot = np.asarray(matrix, dtype=np.float64)[:3, :3]
    cos = (np.trace(rot) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def _euler_to_matrix(tx: sitk.Euler3DTransform) -> np.ndarray:
    """The 4x4 LPS matrix of an Euler transform: ``x -> R (x - c) + c + t``."""
    rot = np.asarray(tx.GetMatrix(), dtype=np.float64).reshape(3, 3)
    centre = np.asarray(tx.GetCenter(), dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = centre - rot @ centre + np.asarray(tx.GetTranslation(), dtype=np.float64)
    return m


def _set_euler(tx: sitk.Euler3DTransform, lps: np.ndarray) -> None:
    """Set ``tx`` (keeping its centre) to the rigid LPS map ``lps``: ``x -> R x + o``."""
    rot, offset = lps[:3, :3], lps[:3, 3]
    if not _is_rotation(rot, tol=1e-4):
        raise InputError("the initial transform is not rigid")
    centre = np.asarray(tx.GetCenter(), dtype=np.float64)
    tx.SetMatrix(rot.ravel().tolist(), 1e-4)
    tx.SetTranslation((offset - centre + rot @ centre).tolist())


def _level(img: sitk.Image, target_mm: float) -> sitk.Image:
    """Smooth and bin-shrink ``img`` towards a physical resolution of ``target_mm`` per axis.

    Axes already coarser than the target (the thick-slice axis) are neither smoothed nor shrunk, so
    a 6 mm slice axis keeps all its slices while the 1.5 mm in-plane axes are reduced.
    """
    spacing = np.asarray(img.GetSpacing(), dtype=np.float64)
    size = np.asarray(img.GetSize())
    factors = np.maximum(1, np.round(target_mm / spacing)).astype(int)
    factors = np.minimum(factors, np.maximum(1, size // MIN_LEVEL_VOXELS))
    if np.all(factors == 1):
        return img
    # Extra blur so that the effective resolution is about the new voxel size (FWHM-like).
    sigma = 0.5 * np.sqrt(np.maximum(0.0, (factors * spacing) ** 2 - spacing**2))
    smoothed = sitk.DiscreteGaussian(img, variance=(sigma**2).tolist(), useImageSpacing=True)
    return sitk.BinShrink(smoothed, factors.tolist())


def register_rigid(
    fixed: Stack,
    moving: Stack,
    *,
    seed: int = 0,
    init: str = "geometry",
    initial: np.ndarray | None = None,
) -> np.ndarray:
    """Rigidly register ``moving`` to ``fixed`` (Euler angles, Mattes mutual information).

    The images are registered in their own world coordinates, over a pyramid whose levels are set in
    millimetres (4x, 2x and 1x the finest in-plane spacing), so that thick slice axes are not
    shrunk further. The optimiser is regular-step gradient descent with scales from physical shifts.
    The sampling seed and the thread count are fixed, so the result is reproducible.

    Args:
        fixed: The stack that defines normalised space.
        moving: The stack to align to it.
        seed: Seed of the metric's random sampling.
        init: ``"geometry"`` (align the field-of-view centres, ITK's centred initialiser) or
            ``"world"`` (trust the headers: start from the identity, rotating about the fixed
            stack's centre).
        initial: a rigid 4x4 RAS moving -> fixed map to start from instead (``init`` is then
            ignored), e.g. the transform of the whole stack when registering one of its packages.

    Returns:
        A 4x4 matrix in RAS mm mapping points of the moving stack's world space into the fixed
        stack's world space (normalised space).

    Raises:
        InputError: for a bad ``init`` or ``seed``, images SimpleITK cannot represent, or when ITK
            fails (for instance because the stacks do not overlap).
    """
    if init not in ("geometry", "world"):
        raise InputError(f"init must be 'geometry' or 'world', got {init!r}")
    sampling_seed = _sampling_seed(seed)
    fixed_img = sitk.Cast(to_sitk(fixed), sitk.sitkFloat32)
    moving_img = sitk.Cast(to_sitk(moving), sitk.sitkFloat32)
    tx = _initial_transform(fixed_img, moving_img, init, initial)
    try:
        with _global_threads(REGISTRATION_THREADS):
            _run_pyramid(fixed_img, moving_img, tx, sampling_seed)
    except RuntimeError as exc:
        raise InputError(
            f"rigid registration of stack {moving.name!r} to {fixed.name!r} failed: "
            f"{_itk_reason(exc)}"
        ) from None
    fixed_to_moving_lps = _euler_to_matrix(tx)
    return np.linalg.inv(FLIP @ fixed_to_moving_lps @ FLIP)


def _initial_transform(
    fixed_img: sitk.Image, moving_img: sitk.Image, init: str, initial: np.ndarray | None
) -> sitk.Euler3DTransform:
    """The Euler transform to start from (``init``, ``initial``: see :func:`register_rigid`)."""
    tx = sitk.Euler3DTransform(
        sitk.CenteredTransformInitializer(
            fixed_img,
            moving_img,
            sitk.Euler3DTransform(),
            sitk.CenteredTransformInitializerFilter.GEOMETRY,
        )
    )
    if init == "world":
        tx.SetTranslation((0.0, 0.0, 0.0))
    if initial is not None:
        _set_euler(tx, FLIP @ np.linalg.inv(_check_matrix(initial)) @ FLIP)
    return tx


@contextlib.contextmanager
def _global_threads(threads: int) -> Iterator[None]:
    """SimpleITK's global default thread count set to ``threads`` inside the block, then restored.

    ITK's multi-threaded metric sums in a run-dependent order: results differ in the 8th digit.
    """
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


def _itk_reason(exc: RuntimeError) -> str:
    """The last non-blank line of an ITK error (its reason), else the exception's type name."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


def _sampling_seed(seed: int) -> int:
    """A SimpleITK sampling seed in [1, 2**32 - 1]: 0 would mean "seed from the wall clock"."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise InputError(f"the registration seed must be an integer, got {seed!r}")
    return int(seed) % 0xFFFFFFFF + 1


def _run_pyramid(
    fixed_img: sitk.Image, moving_img: sitk.Image, tx: sitk.Euler3DTransform, seed: int
) -> None:
    """Optimise ``tx`` (in place) level by level, from coarse to fine."""
    finest = float(min(min(fixed_img.GetSpacing()), min(moving_img.GetSpacing())))
    for factor in LEVEL_FACTORS:
        target = factor * finest
        f_img = _level(fixed_img, target)
        m_img = _level(moving_img, target)
        reg = sitk.ImageRegistrationMethod()
        reg.SetNumberOfThreads(REGISTRATION_THREADS)
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=HISTOGRAM_BINS)
        n_voxels = int(np.prod(f_img.GetSize()))
        if n_voxels > MAX_SAMPLES:
            reg.SetMetricSamplingStrategy(reg.RANDOM)
            reg.SetMetricSamplingPercentage(MAX_SAMPLES / n_voxels, seed)
        else:
            reg.SetMetricSamplingStrategy(reg.NONE)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=target,
            minStep=0.002 * target,
            numberOfIterations=MAX_ITERATIONS,
            relaxationFactor=RELAXATION,
            gradientMagnitudeTolerance=1e-10,
        )
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetInitialTransform(tx, inPlace=True)
        reg.Execute(f_img, m_img)
        log.log(
            logging.INFO if factor == LEVEL_FACTORS[-1] else logging.DEBUG,
            "  %.3g mm level: Mattes MI %.5f after %d iterations",
            target,
            reg.GetMetricValue(),
            reg.GetOptimizerIteration(),
        )
        log.debug("  %s", reg.GetOptimizerStopConditionDescription())


def normalise_stacks(
    stacks: list[Stack],
    fixed_index: int = 0,
    register: bool = True,
    seed: int = 0,
) -> list[Stack]:
    """Copies of ``stacks`` whose ``transform`` maps each stack's world space into normalised space.

    Args:
        stacks: The LR stacks.
        fixed_index: Index of the stack that defines normalised space (its transform is identity).
        register: Register the other stacks to the fixed one; if false all transforms are identity.
        seed: Seed of the registration's metric sampling.

    Returns:
        New :class:`Stack` objects (data and affine copied) with ``transform`` set.

    Raises:
        InputError: if there are no stacks or ``fixed_index`` is out of range.
    """
    if not stacks:
        raise InputError("no stacks to normalise")
    if (
        isinstance(fixed_index, bool)
        or not isinstance(fixed_index, int | np.integer)
        or not 0 <= fixed_index < len(stacks)
    ):
        raise InputError(
            f"fixed stack index {fixed_index!r} is out of range: choose an integer from 0 to "
            f"{len(stacks) - 1} (there are {len(stacks)} stacks)"
        )
    fixed = stacks[fixed_index]
    out = []
    for i, stack in enumerate(stacks):
        if register and i != fixed_index:
            log.info("registering stack %r to %r", stack.name, fixed.name)
            transform = register_rigid(fixed, stack, seed=seed)
            log.info(
                "  %r: rotation %.2f deg, translation %.2f mm",
                stack.name,
                rotation_angle_deg(transform),
                float(np.linalg.norm(transform[:3, 3])),
            )
        else:
            transform = np.eye(4)
        out.append(
            dataclasses.replace(
                stack,
                data=np.array(stack.data, copy=True),
                affine=np.array(stack.affine, dtype=np.float64, copy=True),
                transform=transform,
            )
        )
    return out


def register_to_reference(stacks: list[Stack], reference: Volume, seed: int = 0) -> list[Stack]:
    """Copies of ``stacks`` (packages, typically) each rigidly registered to ``reference``.

    ``reference`` is an image in normalised space (e.g. the B-spline of the already registered
    stacks). Each stack starts from its own ``transform`` (its whole stack's) and is registered on
    its own: the stack's voxels are the metric's samples (fixed image) and the dense reference is
    interpolated (moving image), so the gaps between a package's slices are never interpolated.

    Returns:
        New :class:`Stack` objects whose ``transform`` maps each one's world space into normalised
        space.
    """
    ref = Stack(data=np.asarray(reference.data, dtype=np.float32), affine=reference.affine)
    ref.name = "reference"
    out = []
    for stack in stacks:
        log.info("registering %r to the reference", stack.name)
        to_stack = register_rigid(stack, ref, seed=seed, initial=np.linalg.inv(stack.transform))
        transform = np.linalg.inv(to_stack)
        change = np.linalg.inv(stack.transform) @ transform
        log.info(
            "  %r: %.2f deg, %.2f mm from its stack's transform",
            stack.name,
            rotation_angle_deg(change),
            float(np.linalg.norm(change[:3, 3])),
        )
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
    """Write a RAS moving -> fixed matrix as an ITK transform file, atomically.

    The file holds ITK's own convention: the LPS *fixed -> moving* point map that ITK resamplers
    expect, as an ``Euler3DTransform`` when the matrix is rigid, else an ``AffineTransform``. So
    ``Resample(moving, fixed, ReadTransform(path))`` puts the moving stack onto the fixed grid.

    Args:
        path: Output file; ``.tfm`` (or ``.txt``, ``.mat``, ``.h5``, ``.hdf5``).
        matrix: 4x4 RAS map from the moving stack's world space into normalised space.

    Raises:
        InputError: for a bad suffix, a missing output folder or an invalid matrix.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TRANSFORM_SUFFIXES:
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give what a plain open() would
    try:
        sitk.WriteTransform(tx, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_transform(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an ITK transform file written by :func:`save_transform` (or any 3-D affine ITK file).

    Args:
        path: An ITK transform file holding an LPS fixed -> moving affine map.

    Returns:
        The 4x4 RAS moving -> fixed matrix.

    Raises:
        InputError: if the file is missing, unreadable or does not hold an invertible 3-D affine map.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        tx = sitk.ReadTransform(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise InputError(f"{path}: not a readable ITK transform file {first}".rstrip()) from None
    if tx.GetDimension() != 3:
        raise InputError(f"{path}: expected a 3-D transform, got {tx.GetDimension()}-D")
    # Sample the map at the origin and the unit vectors: works for any affine ITK transform type.
    basis = np.vstack([np.zeros(3), np.eye(3)])
    try:
        images = np.array([tx.TransformPoint(p.tolist()) for p in basis])
    except RuntimeError:
        raise InputError(f"{path}: the transform cannot map points") from None
    itk = np.eye(4)
    itk[:3, 3] = images[0]
    itk[:3, :3] = (images[1:] - images[0]).T
    probe = np.array([[37.0, -11.0, 53.0], [-80.0, 64.0, -29.0]])
    mapped = np.array([tx.TransformPoint(p.tolist()) for p in probe])
    if not np.allclose(mapped, probe @ itk[:3, :3].T + itk[:3, 3], atol=1e-6):
        raise InputError(f"{path}: the transform is not affine")
    return np.linalg.inv(FLIP @ _check_matrix(itk) @ FLIP)
