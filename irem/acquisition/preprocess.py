"""Pre-processing of real scans before a method sees them: a foreground mask found in the images
themselves, N4 bias-field correction, and the split of a stack into its interleaved packages.

Pure functions on arrays and affines (SimpleITK does the image processing, in the image's own
voxel spacing); the pipeline writes what they return and records their parameters in the sidecar.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

from irem.acquisition.registration import from_sitk, to_sitk
from irem.errors import InputError
from irem.volume import Stack, Volume

#: The value of ``--mask`` and ``--stack-masks`` that asks for a mask found in the images.
AUTO = "auto"


@dataclass(frozen=True)
class AutoMaskParams:
    """How :func:`auto_mask` finds the foreground.

    The first mask is :func:`otsu_foreground`: Otsu's threshold over a histogram of ``bins`` bins,
    the largest connected component (face connectivity), a morphological closing with a ball of
    ``closing_mm`` radius (per axis in voxels, rounded: thick-slice axes may get none), then 3-D
    hole filling. The background level is the median of the voxels farther than
    ``background_mm`` from it. The threshold at the half-height of the edge is then searched over
    ``levels`` even steps from the background level up, and refined by ``steps`` bisections.
    """

    bins: int = 128
    closing_mm: float = 3.0
    background_mm: float = 10.0
    levels: int = 16
    steps: int = 6

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "half_height_edge+largest_component+fill_holes",
            **dataclasses.asdict(self),
        }


def _radius(spacing: np.ndarray, mm: float) -> list[int]:
    """A radius of ``mm`` in whole voxels per axis (0 where a voxel is wider than 2 ``mm``)."""
    return [int(r) for r in np.rint(mm / np.asarray(spacing, dtype=np.float64))]


def _largest_filled(fg: sitk.Image) -> sitk.Image:
    """The largest face-connected component of ``fg`` with its holes filled (UInt8, 0/1)."""
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(fg, False), sortByObjectSize=True)
    return sitk.BinaryFillhole(sitk.Cast(labels == 1, sitk.sitkUInt8), fullyConnected=False)


def otsu_foreground(
    vol: Volume, params: AutoMaskParams = AutoMaskParams()
) -> tuple[np.ndarray, float]:
    """Otsu's foreground of ``vol``: threshold, largest component, closing, holes filled.

    Returns:
        The boolean mask (``vol``'s shape, maybe empty) and Otsu's threshold.
    """
    img = to_sitk(Volume(np.asarray(vol.data, dtype=np.float32), vol.affine))
    otsu = sitk.OtsuThresholdImageFilter()
    otsu.SetInsideValue(0)
    otsu.SetOutsideValue(1)
    otsu.SetNumberOfHistogramBins(int(params.bins))
    fg = otsu.Execute(img)
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(fg, False), sortByObjectSize=True)
    largest = sitk.Cast(labels == 1, sitk.sitkUInt8)
    radius = _radius(np.asarray(img.GetSpacing()), params.closing_mm)
    if any(radius):
        largest = sitk.BinaryMorphologicalClosing(largest, radius, sitk.sitkBall)
    filled = sitk.BinaryFillhole(largest, fullyConnected=False)
    return from_sitk(filled).data > 0, float(otsu.GetThreshold())


def _edge_balance(img: sitk.Image, values: np.ndarray, t: float, background: float) -> float:
    """How far ``t`` lies below the half-height of the edge of the mask that ``t`` gives.

    The mask: voxels above ``t``, largest component, holes filled. Across an edge, a symmetric blur
    moves as much signal out (into the face-neighbour layer outside the mask) as it takes from the
    layer inside, so the edge layer's unblurred level above ``background`` is the signal above
    ``background`` of both layers per inner-layer voxel.

    Returns:
        ``background`` plus half that level, minus ``t``: positive while ``t`` is below the
        half-height (``inf`` for a mask that fills the image, ``-inf`` for an empty one).
    """
    mask = _largest_filled(img > t)
    inner = sitk.And(mask, sitk.Not(sitk.BinaryErode(mask, [1, 1, 1], sitk.sitkCross)))
    outer = sitk.And(sitk.BinaryDilate(mask, [1, 1, 1], sitk.sitkCross), sitk.Not(mask))
    in_layer = sitk.GetArrayViewFromImage(inner).astype(bool)
    out_layer = sitk.GetArrayViewFromImage(outer).astype(bool)
    n = int(in_layer.sum())
    if n == 0:  # no mask (t too high), or a mask without an edge (t too low)
        return -np.inf if not sitk.GetArrayViewFromImage(mask).any() else np.inf
    signal = float((values[in_layer] - background).sum() + (values[out_layer] - background).sum())
    return background + 0.5 * signal / n - t


def auto_mask(vol: Volume, params: AutoMaskParams = AutoMaskParams()) -> tuple[np.ndarray, float]:
    """A foreground (brain) mask of ``vol`` whose edge sits at the half-height of the blurred edge.

    A step edge blurred by a symmetric point-spread function crosses half its height above the
    background at the true edge, whatever the height: the bright surface CSF of a T2w image and
    the dark one of a T1w image alike (Otsu's single threshold between background and tissue keeps
    the blur halo of the first and cuts into the second). The blur lowers the edge layer, so its
    level is estimated from both sides of the edge (:func:`_edge_balance`).

    Steps: :func:`otsu_foreground` gives a first mask; the background level is the median of the
    voxels far outside it. For a threshold ``t``, the mask is the voxels above ``t``, largest
    component, holes filled. The threshold is the lowest ``t`` (above the background level, up to
    the 90th percentile inside the first mask) at which ``t`` reaches the half-height of its own
    mask's edge: the outer edge (a higher root would be an edge inside the foreground). Without
    such a ``t``, Otsu's threshold is used.

    The estimate assumes that the blur spreads an edge over about one voxel on either side (the
    B-spline of orthogonal stacks on their in-plane grid, or a stack on its own grid) and that
    the edge layer is about as thick as the blur; a thinner dark layer over brighter tissue is
    partly left out.

    Args:
        vol: an image whose foreground is brighter than its background (MR magnitude).
        params: first-mask, background and search settings (:class:`AutoMaskParams`).

    Returns:
        The boolean mask (``vol``'s shape) and its threshold (image intensity units).

    Raises:
        InputError: if the mask comes out empty (a constant image, for instance).
    """
    data = np.asarray(vol.data, dtype=np.float32)
    first, otsu = otsu_foreground(vol, params)
    if not first.any():
        raise InputError("the automatic mask is empty (no foreground above Otsu's threshold)")
    img = to_sitk(Volume(data, vol.affine))
    values = sitk.GetArrayViewFromImage(img).astype(np.float64)
    first_img = to_sitk(Volume(first.astype(np.uint8), vol.affine))
    margin = _radius(np.asarray(img.GetSpacing()), params.background_mm)
    near = sitk.BinaryDilate(first_img, [max(1, r) for r in margin], sitk.sitkBall)
    far = ~sitk.GetArrayViewFromImage(near).astype(bool)
    outside = far if far.any() else ~sitk.GetArrayViewFromImage(first_img).astype(bool)
    background = float(np.median(values[outside])) if outside.any() else 0.0
    top = float(np.percentile(data[first], 90))
    threshold = otsu
    lo = background
    for hi in np.linspace(background, top, int(params.levels) + 1)[1:]:
        if _edge_balance(img, values, float(hi), background) <= 0:
            for _ in range(int(params.steps)):
                mid = 0.5 * (lo + hi)
                if _edge_balance(img, values, mid, background) > 0:
                    lo = mid
                else:
                    hi = mid
            threshold = 0.5 * (lo + hi)
            break
        lo = float(hi)
    mask = from_sitk(_largest_filled(img > threshold)).data > 0
    if not mask.any():
        raise InputError("the automatic mask is empty (no foreground above the threshold)")
    return mask, threshold


@dataclass(frozen=True)
class N4Params:
    """N4 bias-field correction (Tustison et al. 2010, SimpleITK's filter).

    The field is fitted on the image shrunk to voxels of about ``shrink_mm`` along every axis
    (axes already coarser, thick-slice axes, are not shrunk), with ``iterations`` per fitting
    level (one level per entry; the B-spline mesh doubles at each), ``control_points`` per axis
    at the coarsest level, and evaluated at full resolution. The log field is shifted to mean zero inside
    the mask, so that the corrected image keeps the original's mean intensity there.
    """

    shrink_mm: float = 3.0
    iterations: tuple[int, ...] = (50, 50, 50, 50)
    control_points: int = 4
    spline_order: int = 3
    convergence: float = 1e-3
    bins: int = 200

    def to_dict(self) -> dict[str, Any]:
        return {"method": "N4BiasFieldCorrection", **dataclasses.asdict(self)}


def _shrink_factors(spacing: np.ndarray, shrink_mm: float, size: np.ndarray) -> list[int]:
    """Per axis, the whole factor that takes the spacing to about ``shrink_mm``, keeping at least 4
    voxels."""
    factors = np.maximum(1, np.round(shrink_mm / spacing)).astype(int)
    return [int(f) for f in np.minimum(factors, np.maximum(1, size // 4))]


def n4_log_field(
    vol: Volume, mask: np.ndarray | None, params: N4Params = N4Params()
) -> tuple[np.ndarray, dict[str, Any]]:
    """N4's estimate of the log bias field of ``vol``: ``vol / exp(field)`` is the corrected image.

    Args:
        vol: the image (positive inside the mask).
        mask: the voxels the field is fitted to; ``None``: Otsu's foreground
            (:func:`otsu_foreground`).
        params: the fitting settings.

    Returns:
        The log field (float32, ``vol``'s shape) and facts for the sidecar (the mask used, the
        shrink factors, the iterations done and the field's range in the mask).

    Raises:
        InputError: if the mask is empty or holds no positive voxel.
    """
    data = np.asarray(vol.data, dtype=np.float32)
    source = "given"
    if mask is None:
        mask, _ = otsu_foreground(vol)
        source = "otsu"
        if not mask.any():
            raise InputError("N4: Otsu's foreground is empty")
    fit = np.asarray(mask, dtype=bool) & (data > 0)
    if not fit.any():
        raise InputError("N4: no positive voxel inside the mask")
    img = to_sitk(Volume(data, vol.affine))
    mask_img = to_sitk(Volume(fit.astype(np.uint8), vol.affine))
    factors = _shrink_factors(
        np.asarray(img.GetSpacing()), params.shrink_mm, np.asarray(img.GetSize())
    )
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([int(i) for i in params.iterations])
    n4.SetNumberOfControlPoints([int(params.control_points)] * 3)
    n4.SetSplineOrder(int(params.spline_order))
    n4.SetConvergenceThreshold(float(params.convergence))
    n4.SetNumberOfHistogramBins(int(params.bins))
    try:
        n4.Execute(sitk.Shrink(img, factors), sitk.Shrink(mask_img, factors))
    except RuntimeError as exc:
        lines = [ln for ln in str(exc).splitlines() if ln.strip()]
        raise InputError(f"N4 failed: {lines[-1].strip() if lines else exc}") from None
    log_field = from_sitk(n4.GetLogBiasFieldAsImage(img)).data.astype(np.float64)
    log_field -= float(log_field[fit].mean())
    info = {
        "mask": source,
        "shrink_factors": factors,
        "iterations_done": int(n4.GetElapsedIterations()),
        "log_field_range_in_mask": [float(log_field[fit].min()), float(log_field[fit].max())],
    }
    return log_field.astype(np.float32), info


def correct_bias(stack: Stack, log_field: np.ndarray) -> Stack:
    """A copy of ``stack`` divided by ``exp(log_field)``."""
    data = (np.asarray(stack.data, dtype=np.float64) / np.exp(log_field)).astype(np.float32)
    return dataclasses.replace(stack, data=data)


def split_packages(stack: Stack, n: int) -> list[Stack]:
    """The ``n`` interleaved packages of ``stack``: package ``i`` holds slices ``i, i + n, ...``.

    Each package is a :class:`Stack` of its own: the slice spacing is ``n`` times the stack's, the
    origin moves by ``i`` slices, and the slice thickness stays the stack's (so every method models
    the gaps between a package's slices). Masks are split likewise; names get ``_pkg-<i>``.

    Raises:
        InputError: if ``n`` is below 1 or above the number of slices.
    """
    axis = stack.thick_axis
    slices = stack.shape[axis]
    if not 1 <= n <= slices:
        raise InputError(
            f"--packages {n}: stack {stack.name!r} has {slices} slices; choose 1 to {slices}"
        )
    if n == 1:
        return [stack]
    thickness = stack.slice_thickness
    out = []
    for i in range(n):
        index: list[slice] = [slice(None)] * 3
        index[axis] = slice(i, None, n)
        step = np.eye(4)
        step[axis, axis] = n
        step[axis, 3] = i
        out.append(
            dataclasses.replace(
                stack,
                data=np.ascontiguousarray(stack.data[tuple(index)]),
                affine=stack.affine @ step,
                name=f"{stack.name}_pkg-{i}",
                thickness=thickness,
                mask=None if stack.mask is None else stack.mask[tuple(index)].copy(),
            )
        )
    return out
