"""A synthetic cohort from the embedded MNI152 2009 template: subject ``i`` of cohort ``seed`` is
drawn from ``np.random.SeedSequence([seed, i, ...])`` only.

1. Anatomy: the template's brain mask and GM/WM maps warped by a random cubic B-spline (control
   points :data:`CONTROL_SPACING_MM` apart, coefficients within +- :data:`MAX_DISPLACEMENT_MM`,
   below the injectivity bound ``spacing / 2.48`` of Choi & Lee 2000, Graphical Models 62:411;
   the Jacobian determinant is checked positive at every output voxel).
2. Contrast: T1w, T2w or FLAIR-like (``index % 3`` unless given): pure-tissue intensities drawn
   around :data:`TISSUE_INTENSITIES`, mixed by the warped probabilities (CSF = brain - GM - WM),
   times TorchIO's polynomial bias field; zero outside the warped brain.
3. Crop: optionally a box of the brain crop, exactly a window of the uncropped subject.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import SimpleITK as sitk

from irem.acquisition.registration import FLIP, to_sitk
from irem.data.datasets import crop_box, crop_to_content, mni152_t1, mni152_tissue
from irem.errors import InputError
from irem.volume import Volume

#: Contrast families, in the order ``index % 3`` cycles through them.
CONTRASTS: tuple[str, ...] = ("T1w", "T2w", "FLAIR")
#: Mean and standard deviation of each pure tissue's intensity per family (arbitrary units).
TISSUE_INTENSITIES: dict[str, dict[str, tuple[float, float]]] = {
    "T1w": {"csf": (0.20, 0.04), "gm": (0.55, 0.04), "wm": (0.85, 0.04)},
    "T2w": {"csf": (0.95, 0.04), "gm": (0.60, 0.04), "wm": (0.42, 0.04)},
    "FLAIR": {"csf": (0.08, 0.02), "gm": (0.65, 0.04), "wm": (0.48, 0.04)},
}
#: Approximate B-spline control-point spacing (mm).
CONTROL_SPACING_MM = 25.0
#: Largest B-spline coefficient (mm); the displacement never exceeds it (convex combination).
MAX_DISPLACEMENT_MM = 6.0
#: Injectivity constant of uniform cubic B-splines in 3-D (Choi & Lee 2000).
INJECTIVITY_K = 2.48
#: Order and coefficient range of the polynomial log-bias field (TorchIO's default is 3 and 0.5).
BIAS_ORDER = 3
BIAS_COEFFICIENT = 0.2
#: Warped WM probability above which a voxel counts as white matter (for the SNR reference).
WM_THRESHOLD = 0.9
_TAG = 0xC0407


@dataclass(frozen=True)
class SubjectParams:
    """Everything random about one subject, sampled by :func:`sample_subject`."""

    index: int
    seed: int
    contrast: str
    intensities: dict[str, float]
    mesh: tuple[int, int, int]
    coefficients: np.ndarray = field(repr=False)
    bias_coefficients: tuple[float, ...] = field(repr=False)


@dataclass
class CohortSubject:
    """A rendered subject: image, brain and white-matter masks (0/1) on the same grid."""

    image: Volume
    brain_mask: Volume
    wm_mask: Volume
    params: SubjectParams
    jacobian_range: tuple[float, float]
    max_displacement_mm: float

    def sidecar(self) -> dict[str, Any]:
        """The subject's parameters and checks, for a JSON sidecar."""
        p = self.params
        return {"subject": p.index, "cohort_seed": p.seed, "contrast": p.contrast,
                "tissue_intensities": p.intensities, "bspline_mesh": list(p.mesh),
                "control_spacing_mm": CONTROL_SPACING_MM, "max_coefficient_mm": MAX_DISPLACEMENT_MM,
                "max_displacement_mm": self.max_displacement_mm,
                "jacobian_min": self.jacobian_range[0], "jacobian_max": self.jacobian_range[1],
                "bias_order": BIAS_ORDER, "bias_coefficients": list(p.bias_coefficients),
                "wm_threshold": WM_THRESHOLD}  # fmt: skip


@dataclass(frozen=True)
class _Template:
    grid: Volume  # the brain crop of the T1 template: the uncropped cohort grid
    brain: sitk.Image
    gm: sitk.Image
    wm: sitk.Image


@lru_cache(maxsize=1)
def _template() -> _Template:
    t1 = mni152_t1(crop=False)
    brain = to_sitk(Volume((t1.data > 0).astype(np.float32), t1.affine))
    gm, wm = (to_sitk(Volume(mni152_tissue(t).data / 255.0, t1.affine)) for t in ("gm", "wm"))
    return _Template(grid=crop_to_content(t1), brain=brain, gm=gm, wm=wm)


def contrast_for(index: int, contrast: str | None = None) -> str:
    """The contrast family of subject ``index``: ``contrast`` if given, else cycled by index."""
    if contrast is None:
        return CONTRASTS[index % len(CONTRASTS)]
    if contrast not in CONTRASTS:
        raise InputError(f"unknown contrast {contrast!r}; choose from {', '.join(CONTRASTS)}")
    return contrast


def control_mesh(grid: Volume, spacing_mm: float = CONTROL_SPACING_MM) -> tuple[int, int, int]:
    """Number of B-spline intervals per axis so that control points are ~``spacing_mm`` apart."""
    extent = np.asarray(grid.shape) * grid.spacing
    return tuple(max(1, int(round(e / spacing_mm))) for e in extent)  # type: ignore[return-value]


def n_bias_coefficients(order: int) -> int:
    """Number of monomials ``x^i y^j z^k`` with ``i + j + k <= order``."""
    return (order + 1) * (order + 2) * (order + 3) // 6


def sample_subject(index: int, seed: int = 0, contrast: str | None = None) -> SubjectParams:
    """Draw the random parameters of subject ``index`` of cohort ``seed`` (nothing is rendered)."""
    if index < 0:
        raise InputError(f"the subject index must be >= 0, got {index}")
    family = contrast_for(index, contrast)
    grid = _template().grid
    mesh = control_mesh(grid)
    spacing = float(np.min(np.asarray(grid.shape) * grid.spacing / np.asarray(mesh)))
    if MAX_DISPLACEMENT_MM >= spacing / INJECTIVITY_K:
        raise ValueError(f"{MAX_DISPLACEMENT_MM} mm coefficients may fold a {spacing:.1f} mm mesh")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), _TAG]))
    intensities = {t: float(max(0.02, rng.normal(mu, sd)))
                   for t, (mu, sd) in TISSUE_INTENSITIES[family].items()}  # fmt: skip
    n_ctrl = 3 * int(np.prod(np.asarray(mesh) + 3))  # cubic: mesh + 3 control points per axis
    coefficients = rng.uniform(-MAX_DISPLACEMENT_MM, MAX_DISPLACEMENT_MM, n_ctrl)
    bias = rng.uniform(-BIAS_COEFFICIENT, BIAS_COEFFICIENT, n_bias_coefficients(BIAS_ORDER))
    bias[0] = 0.0  # no global gain: the bias is 1 at the centre of the grid
    biases = tuple(float(c) for c in bias)
    return SubjectParams(int(index), int(seed), family, intensities, mesh, coefficients, biases)


def bspline_transform(
    grid: Volume, mesh: tuple[int, int, int], coefficients: np.ndarray
) -> sitk.BSplineTransform:
    """A cubic B-spline displacement over ``grid``'s field of view (SimpleITK, LPS millimetres)."""
    tx = sitk.BSplineTransformInitializer(to_sitk(grid), list(mesh), 3)
    if len(coefficients) != (n := len(tx.GetParameters())):
        raise ValueError(f"expected {n} coefficients, got {len(coefficients)}")
    tx.SetParameters([float(c) for c in coefficients])
    return tx


def jacobian_determinant(displacement: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Determinant of the Jacobian of ``x -> x + u(x)`` at every voxel of a grid (``u``: ``(X, Y,
    Z, 3)`` in world mm; > 0 everywhere: no folding); central differences, one-sided at borders."""
    to_index = np.linalg.inv(np.asarray(affine, dtype=np.float64)[:3, :3])
    v = np.asarray(displacement, dtype=np.float64) @ to_index.T
    v = np.pad(v, [(1, 1)] * 3 + [(0, 0)], mode="reflect", reflect_type="odd")
    img = sitk.GetImageFromArray(np.ascontiguousarray(v.transpose(2, 1, 0, 3)), isVector=True)
    det = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(img))
    return det.transpose(2, 1, 0)[1:-1, 1:-1, 1:-1].astype(np.float64)


def bias_field(
    shape: tuple[int, int, int], offset: tuple[int, int, int], full_shape: tuple[int, int, int],
    coefficients: tuple[float, ...] | np.ndarray, order: int = BIAS_ORDER,
) -> np.ndarray:  # fmt: skip
    """TorchIO's polynomial bias field ``exp(sum c x^i y^j z^k)`` (coordinates in [-1, 1] over
    ``full_shape``) on the window of ``shape`` voxels at ``offset``: a crop's field is the field's
    crop."""
    if len(coefficients) != n_bias_coefficients(order):
        raise ValueError(f"order {order} needs {n_bias_coefficients(order)} coefficients")
    axes = []
    for n, o, full in zip(shape, offset, full_shape, strict=True):
        half = (full - 1) / 2.0
        axes.append((np.arange(o, o + n) - half) / max(half, 1e-12))
    x, y, z = (np.stack([a**p for p in range(order + 1)]) for a in axes)
    log = np.zeros(shape, dtype=np.float64)
    it = iter(coefficients)
    for i in range(order + 1):
        for j in range(order + 1 - i):
            for k in range(order + 1 - i - j):
                log += next(it) * x[i][:, None, None] * y[j][None, :, None] * z[k][None, None, :]
    return np.exp(log).astype(np.float32)


def mix_tissues(
    gm: np.ndarray, wm: np.ndarray, brain: np.ndarray, intensities: dict[str, float]
) -> np.ndarray:
    """Partial-volume mixture of pure-tissue intensities; CSF fills the brain beyond GM and WM."""
    total = np.maximum(gm + wm, 1.0)  # renormalise where the maps overlap beyond 1
    gm, wm = gm / total, wm / total
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    img = intensities["csf"] * csf + intensities["gm"] * gm + intensities["wm"] * wm
    return (img * brain).astype(np.float32)


def _warp(img: sitk.Image, tx: sitk.Transform, grid: sitk.Image) -> np.ndarray:
    out = sitk.Resample(img, grid, tx, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out).transpose(2, 1, 0)


def render_subject(params: SubjectParams, out: Volume | None = None) -> CohortSubject:
    """Render a subject on ``out``'s grid (a crop of the template's brain box; default: all of it);
    refuses a deformation that folds."""
    tpl = _template()
    out = tpl.grid if out is None else out
    ref = to_sitk(Volume(np.zeros(out.shape, np.float32), out.affine))
    # The displacement u (RAS mm) at every output voxel: voxel x samples the input at x + u(x).
    warp = bspline_transform(tpl.grid, params.mesh, params.coefficients)
    geometry = (ref.GetSize(), ref.GetOrigin(), ref.GetSpacing(), ref.GetDirection())
    field_img = sitk.TransformToDisplacementField(warp, sitk.sitkVectorFloat64, *geometry)
    lps = sitk.GetArrayFromImage(field_img).transpose(2, 1, 0, 3)
    disp = (lps * np.diag(FLIP)[:3]).astype(np.float32)  # LPS -> RAS: flip x and y components
    jac = jacobian_determinant(disp, out.affine)
    if not float(jac.min()) > 0.0:
        raise RuntimeError(f"subject {params.index}: the deformation folds (det J {jac.min():.3f})")
    # The field holds the B-spline's exact values at these voxels: resampling through it is the
    # same warp as through the B-spline, and much faster.
    tx = sitk.DisplacementFieldTransform(field_img)  # takes the field image over
    brain = (_warp(tpl.brain, tx, ref) >= 0.5).astype(np.float32)
    gm = _warp(tpl.gm, tx, ref) * brain
    wm = _warp(tpl.wm, tx, ref) * brain
    offset = np.rint(np.linalg.inv(tpl.grid.affine) @ out.affine[:, 3])[:3].astype(int)
    bias = bias_field(out.shape, tuple(offset), tpl.grid.shape, params.bias_coefficients)
    image = mix_tissues(gm, wm, brain, params.intensities) * bias
    return CohortSubject(
        image=Volume(image.astype(np.float32), np.array(out.affine)),
        brain_mask=Volume(brain, np.array(out.affine)),
        wm_mask=Volume((wm > WM_THRESHOLD).astype(np.float32), np.array(out.affine)),
        params=params,
        jacobian_range=(float(jac.min()), float(jac.max())),
        max_displacement_mm=float(np.sqrt((disp**2).sum(axis=-1)).max()),
    )


def cohort_subject(
    index: int, seed: int = 0, contrast: str | None = None,
    crop: tuple[int, int, int] | list[int] | None = None,
    crop_position: tuple[float, float, float] | list[float] = (0.5, 0.5, 0.5),
) -> CohortSubject:  # fmt: skip
    """Subject ``index`` of the synthetic MNI152 cohort ``seed`` (a pure function of its arguments)
    with its brain and WM masks; ``crop``: a box of the 1 mm brain crop (152x184x160) placed at
    ``crop_position`` (0 to 1 per axis)."""
    params = sample_subject(index, seed, contrast)
    grid = _template().grid
    return render_subject(params, crop_box(grid, crop, crop_position) if crop is not None else grid)


def cohort_figure(volumes: dict[str, Volume]) -> Any:
    """A matplotlib figure of the mid-slices (sagittal, coronal, axial) of every volume (label ->
    volume, about axis-aligned): one row per subject."""
    if not volumes:
        raise InputError("cohort_figure needs at least one volume")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 2.5 * len(volumes)), layout="constrained")
    axes = fig.subplots(len(volumes), 3, squeeze=False)
    for row, (label, vol) in zip(axes, volumes.items(), strict=True):
        vmax = float(np.percentile(vol.data, 99.5)) or 1.0
        mid = [n // 2 for n in vol.shape]
        slices = (vol.data[mid[0]], vol.data[:, mid[1]], vol.data[:, :, mid[2]])
        for ax, sl, name in zip(row, slices, ("sagittal", "coronal", "axial"), strict=True):
            ax.imshow(sl.T, cmap="gray", origin="lower", vmin=0.0, vmax=vmax)
            ax.set(xticks=[], yticks=[])
            ax.set_title(f"{label} {name}", fontsize=8)
    return fig
