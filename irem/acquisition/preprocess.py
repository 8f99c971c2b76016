"""Pre-processing of real scans: a foreground mask found in the images themselves, N4 bias-field
correction, and the split of a stack into its interleaved packages (pure functions: the pipeline
writes what they return and records their parameters)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from irem.acquisition.registration import from_sitk, itk_reason, shrink_factors, to_sitk
from irem.acquisition.simulate import lr_affine
from irem.errors import InputError
from irem.volume import Stack, Volume

#: The value of ``--mask`` and ``--stack-masks`` that asks for a mask found in the images.
AUTO = "auto"


@dataclass(frozen=True)
class AutoMaskParams:
    """How :func:`auto_mask` finds the foreground: Otsu's first mask over ``bins`` bins, closed by
    a ball of ``closing_mm``; background: the median beyond ``background_mm`` of it; the half-height
    threshold searched in ``levels`` steps from the background up and ``steps`` bisections; regions
    outside the mask whose median is below ``air_fraction`` of the 99.5th percentile are air, the
    others are filled; then a ball of ``margin_mm`` keeps the brain's edge when the output is
    zeroed outside (both chosen on the tuning split: results/tuning/README.md)."""

    bins: int = 128
    closing_mm: float = 3.0
    background_mm: float = 10.0
    levels: int = 16
    steps: int = 6
    margin_mm: float = 2.0
    air_fraction: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return {"method": "half_height_edge+largest_component+fill_non_air", **asdict(self)}


def _radius(img: sitk.Image, mm: float) -> list[int]:
    """``mm`` in whole voxels of ``img`` per axis (0 where a voxel is wider than 2 mm)."""
    return [int(r) for r in np.rint(mm / np.asarray(img.GetSpacing(), dtype=np.float64))]


def _largest_filled(fg: sitk.Image, closing: list[int] | None = None) -> sitk.Image:
    """The largest face-connected component of ``fg``, closed by a ball of ``closing`` voxels per
    axis (if any), with its holes filled (UInt8, 0/1)."""
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(fg, False), sortByObjectSize=True)
    largest = sitk.Cast(labels == 1, sitk.sitkUInt8)
    if closing and any(closing):
        largest = sitk.BinaryMorphologicalClosing(largest, closing, sitk.sitkBall)
    return sitk.BinaryFillhole(largest, fullyConnected=False)


def otsu_foreground(
    vol: Volume, params: AutoMaskParams = AutoMaskParams()
) -> tuple[np.ndarray, float]:
    """Otsu's foreground of ``vol`` (largest component, closed, holes filled; maybe empty) and
    Otsu's threshold."""
    img = to_sitk(Volume(np.asarray(vol.data, dtype=np.float32), vol.affine))
    otsu = sitk.OtsuThresholdImageFilter()
    otsu.SetInsideValue(0)
    otsu.SetOutsideValue(1)
    otsu.SetNumberOfHistogramBins(int(params.bins))
    fg = otsu.Execute(img)
    filled = _largest_filled(fg, _radius(img, params.closing_mm))
    return from_sitk(filled).data > 0, float(otsu.GetThreshold())


def _edge_balance(img: sitk.Image, values: np.ndarray, t: float, background: float) -> float:
    """How far ``t`` lies below the half-height of the edge of its mask (voxels above ``t``,
    largest component, filled): positive below it, ``inf`` for a full mask, ``-inf`` for none.

    A symmetric blur moves as much signal out of the mask's edge layer as into the layer outside,
    so the edge's unblurred level above ``background`` is both layers' signal per inner voxel.
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


def _without_open_holes(mask: sitk.Image, values: np.ndarray, air: float) -> sitk.Image:
    """``mask`` with every region outside it filled whose median is not below ``air``: dark tissue
    open to the field of view's border (white matter in T2w cut by a crop) is a hole too."""
    outside = sitk.ConnectedComponent(sitk.Not(mask), True)
    labels = sitk.GetArrayViewFromImage(outside)
    medians = np.asarray(ndimage.median(values, labels, np.arange(1, int(labels.max()) + 1)))
    background = 1 + np.flatnonzero(medians < air)  # the labels of the regions of air
    out = sitk.GetImageFromArray((~np.isin(labels, background)).astype(np.uint8))
    out.CopyInformation(mask)
    return out


def auto_mask(vol: Volume, params: AutoMaskParams = AutoMaskParams()) -> tuple[np.ndarray, float]:
    """A foreground (brain) mask of ``vol``: its edge at the half-height of the blurred edge, plus
    ``params.margin_mm``; and its threshold (intensity units).

    A step edge blurred by a symmetric PSF crosses half its height above the background at the true
    edge, for bright surface CSF (T2w) and dark (T1w) alike, where Otsu's single threshold keeps the
    blur halo of the first and cuts into the second. The threshold is the lowest ``t`` (above the
    background: the median beyond ``background_mm`` of Otsu's mask, up to the 90th percentile in
    it) at which ``t`` reaches the half-height of its own mask's edge (:func:`_edge_balance`);
    without one, Otsu's threshold. The estimate assumes a blur of about one voxel each side of the
    edge and an edge layer about as thick.
    """
    data = np.asarray(vol.data, dtype=np.float32)
    first, otsu = otsu_foreground(vol, params)
    if not first.any():
        raise InputError("the automatic mask is empty (no foreground above Otsu's threshold)")
    img = to_sitk(Volume(data, vol.affine))
    values = sitk.GetArrayViewFromImage(img).astype(np.float64)
    first_img = to_sitk(Volume(first.astype(np.uint8), vol.affine))
    # The background: the median beyond background_mm of Otsu's mask (all outside it if none is).
    margin = [max(1, r) for r in _radius(img, params.background_mm)]
    near = sitk.BinaryDilate(first_img, margin, sitk.sitkBall)
    far = ~sitk.GetArrayViewFromImage(near).astype(bool)
    outside = far if far.any() else ~sitk.GetArrayViewFromImage(first_img).astype(bool)
    background = float(np.median(values[outside])) if outside.any() else 0.0
    top = float(np.percentile(data[first], 90))
    lo, threshold = background, otsu  # Otsu's if no level up to top is at its half-height
    for hi in np.linspace(background, top, int(params.levels) + 1)[1:]:
        if _edge_balance(img, values, float(hi), background) <= 0:
            for _ in range(int(params.steps)):  # bisection between the last two levels
                mid = 0.5 * (lo + hi)
                if _edge_balance(img, values, mid, background) > 0:
                    lo = mid
                else:
                    hi = mid
            threshold = 0.5 * (lo + hi)
            break
        lo = float(hi)
    air = params.air_fraction * float(np.percentile(values, 99.5))
    found = _without_open_holes(_largest_filled(img > threshold), values, air)
    margin = _radius(img, params.margin_mm)
    if any(margin):
        found = sitk.BinaryDilate(found, margin, sitk.sitkBall)
    mask = from_sitk(found).data > 0
    if not mask.any():
        raise InputError("the automatic mask is empty (no foreground above the threshold)")
    return mask, threshold


@dataclass(frozen=True)
class N4Params:
    """N4 bias-field correction (Tustison et al. 2010): fitted on the image shrunk to about
    ``shrink_mm`` voxels, ``iterations`` per fitting level, ``control_points`` per axis at the
    coarsest; evaluated at full resolution."""

    shrink_mm: float = 3.0
    iterations: tuple[int, ...] = (50, 50, 50, 50)
    control_points: int = 4
    spline_order: int = 3
    convergence: float = 1e-3
    bins: int = 200

    def to_dict(self) -> dict[str, Any]:
        return {"method": "N4BiasFieldCorrection", **asdict(self)}


def n4_log_field(
    vol: Volume, mask: np.ndarray | None, params: N4Params = N4Params()
) -> tuple[np.ndarray, dict[str, Any]]:
    """N4's log bias field of ``vol`` (``vol / exp(field)`` is corrected; mean zero in the mask),
    fitted in ``mask`` (``None``: Otsu's foreground), and facts for the sidecar."""
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
    factors = shrink_factors(img, params.shrink_mm, 4).tolist()
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([int(i) for i in params.iterations])
    n4.SetNumberOfControlPoints([int(params.control_points)] * 3)
    n4.SetSplineOrder(int(params.spline_order))
    n4.SetConvergenceThreshold(float(params.convergence))
    n4.SetNumberOfHistogramBins(int(params.bins))
    try:
        n4.Execute(sitk.Shrink(img, factors), sitk.Shrink(mask_img, factors))
    except RuntimeError as exc:
        raise InputError(f"N4 failed: {itk_reason(exc)}") from None
    log_field = from_sitk(n4.GetLogBiasFieldAsImage(img)).data.astype(np.float64)
    log_field -= float(log_field[fit].mean())
    info = {"mask": source, "shrink_factors": factors,
            "iterations_done": int(n4.GetElapsedIterations()),
            "log_field_range_in_mask": [float(log_field[fit].min()), float(log_field[fit].max())]}
    return log_field.astype(np.float32), info


def correct_bias(stack: Stack, log_field: np.ndarray) -> Stack:
    """A copy of ``stack`` divided by ``exp(log_field)``."""
    data = (np.asarray(stack.data, dtype=np.float64) / np.exp(log_field)).astype(np.float32)
    return replace(stack, data=data)


def split_packages(stack: Stack, n: int) -> list[Stack]:
    """The ``n`` interleaved packages of ``stack`` (package ``i``: slices ``i, i + n, ...``, named
    ``<name>_pkg-<i>``), each keeping the stack's slice thickness so methods model the gaps."""
    axis = stack.thick_axis
    slices = stack.shape[axis]
    if not 1 <= n <= slices:
        raise InputError(f"--packages {n}: stack {stack.name!r} has {slices} slices; "
                         f"choose 1 to {slices}")
    if n == 1:
        return [stack]
    thick = stack.slice_thickness
    out = []
    for i in range(n):
        index = (slice(None),) * axis + (slice(i, None, n),)
        data = np.ascontiguousarray(stack.data[index])
        mask = None if stack.mask is None else stack.mask[index].copy()
        name = f"{stack.name}_pkg-{i}"
        affine = lr_affine(stack.affine, axis, n, i)
        out.append(replace(stack, data=data, affine=affine, name=name, thickness=thick, mask=mask))
    return out
