"""The synthetic MNI152 cohort: folding-free deformations, contrasts, bias field, determinism."""

from __future__ import annotations

import io

import numpy as np
import pytest
import SimpleITK as sitk

from irem.acquisition.registration import FLIP, to_sitk
from irem.data import cohort
from irem.errors import InputError
from irem.volume import Volume, apply_affine, voxel_centres

from .conftest import oblique_affine

CROP = (40, 48, 40)


@pytest.fixture(scope="module")
def subjects() -> list[cohort.CohortSubject]:
    """Three consecutive subjects (one per contrast family), a small central crop."""
    return [cohort.cohort_subject(i, seed=0, crop=CROP) for i in range(3)]


def _grid(shape: tuple[int, int, int], affine: np.ndarray) -> Volume:
    return Volume(np.zeros(shape, np.float32), affine)


def _displacement(tx: sitk.Transform, grid: Volume) -> np.ndarray:
    """The displacement of ``tx`` at every voxel of ``grid`` in RAS mm, as render_subject takes it."""
    ref = to_sitk(grid)
    geometry = (ref.GetSize(), ref.GetOrigin(), ref.GetSpacing(), ref.GetDirection())
    field = sitk.TransformToDisplacementField(tx, sitk.sitkVectorFloat64, *geometry)
    return sitk.GetArrayFromImage(field).transpose(2, 1, 0, 3) * np.diag(FLIP)[:3]


@pytest.mark.parametrize("scale", [0.3, -0.4])
def test_jacobian_determinant_of_a_linear_displacement(scale: float) -> None:
    affine = oblique_affine((0.8, 1.0, 1.3), (20.0, -15.0, 30.0))
    shape = (7, 8, 6)
    m = scale * np.array([[1.0, 0.2, 0.0], [0.1, -0.5, 0.3], [0.0, 0.4, 0.8]])
    pts = voxel_centres(shape, affine).reshape(*shape, 3)
    jac = cohort.jacobian_determinant(pts @ m.T, affine)
    np.testing.assert_allclose(jac, np.linalg.det(np.eye(3) + m), rtol=1e-9)


def test_jacobian_determinant_detects_folding() -> None:
    shape, affine = (6, 6, 6), np.diag([1.0, 2.0, 1.0, 1.0])
    pts = voxel_centres(shape, affine).reshape(*shape, 3)
    disp = np.zeros_like(pts)
    disp[..., 0] = -2.0 * pts[..., 0]  # x -> -x: a mirror, det J = -1
    assert np.all(cohort.jacobian_determinant(disp, affine) < 0)


def test_deformations_are_folding_free_over_the_whole_brain_box() -> None:
    tpl = cohort._template()
    coarse = tpl.grid.affine @ np.diag([4.0, 4.0, 4.0, 1.0])
    shape = tuple(n // 4 for n in tpl.grid.shape)
    for index in range(3):
        p = cohort.sample_subject(index, seed=1)
        tx = cohort.bspline_transform(tpl.grid, p.mesh, p.coefficients)
        disp = _displacement(tx, _grid(shape, coarse))
        assert cohort.jacobian_determinant(disp, coarse).min() > 0.3
        size = np.sqrt((disp**2).sum(axis=-1))
        # A few millimetres, never above the largest coefficient (B-splines are convex weights).
        assert 1.0 < size.max() <= cohort.MAX_DISPLACEMENT_MM


def test_rendered_subjects_check_their_jacobian(subjects: list[cohort.CohortSubject]) -> None:
    for s in subjects:
        lo, hi = s.jacobian_range
        assert 0 < lo < 1 < hi
        assert s.max_displacement_mm > 0.5


def test_sample_subject_refuses_coefficients_that_may_fold(monkeypatch) -> None:
    monkeypatch.setattr(cohort, "MAX_DISPLACEMENT_MM", 15.0)
    with pytest.raises(ValueError, match="fold"):
        cohort.sample_subject(0)


def test_displacement_field_is_in_ras_millimetres() -> None:
    # A constant B-spline (every coefficient the same) translates by that vector in LPS.
    tpl = cohort._template()
    p = cohort.sample_subject(0)
    n = len(p.coefficients) // 3
    lps = np.repeat([2.0, -1.0, 0.5], n)  # SimpleITK orders all x, then all y, then all z
    tx = cohort.bspline_transform(tpl.grid, p.mesh, lps)
    affine = oblique_affine((2.0, 2.0, 2.0), (0.0, 0.0, 20.0), origin=(0.0, 0.0, 0.0))
    disp = _displacement(tx, _grid((4, 4, 4), affine))
    np.testing.assert_allclose(disp, np.broadcast_to([-2.0, 1.0, 0.5], disp.shape), atol=1e-9)


def test_same_seed_same_subject_other_seed_or_index_differs(
    subjects: list[cohort.CohortSubject],
) -> None:
    again = cohort.cohort_subject(0, seed=0, crop=CROP)
    assert np.array_equal(again.image.data, subjects[0].image.data)
    assert np.array_equal(again.wm_mask.data, subjects[0].wm_mask.data)
    other_seed = cohort.cohort_subject(0, seed=1, crop=CROP)
    assert other_seed.params.contrast == subjects[0].params.contrast
    assert not np.array_equal(other_seed.image.data, subjects[0].image.data)
    # Same contrast family, different index: the anatomy differs too.
    sub3 = cohort.cohort_subject(3, seed=0, crop=CROP)
    assert not np.array_equal(sub3.wm_mask.data, subjects[0].wm_mask.data)


def test_contrast_families_cycle_and_are_ordered(subjects: list[cohort.CohortSubject]) -> None:
    assert [cohort.contrast_for(i) for i in range(7)] == [
        "T1w", "T2w", "FLAIR", "T1w", "T2w", "FLAIR", "T1w",
    ]  # fmt: skip
    assert [s.params.contrast for s in subjects] == ["T1w", "T2w", "FLAIR"]
    assert cohort.cohort_subject(1, crop=(8, 8, 8), contrast="FLAIR").params.contrast == "FLAIR"
    order = {"T1w": ("csf", "gm", "wm"), "T2w": ("wm", "gm", "csf"), "FLAIR": ("csf", "wm", "gm")}
    for index in range(30):
        p = cohort.sample_subject(index, seed=2)
        vals = [p.intensities[t] for t in order[p.contrast]]
        assert vals == sorted(vals), (p.contrast, p.intensities)


def test_mix_tissues_pure_classes_and_background() -> None:
    gm = np.array([1.0, 0.0, 0.0, 0.5, 0.3])
    wm = np.array([0.0, 1.0, 0.0, 0.5, 0.2])
    brain = np.array([1.0, 1.0, 1.0, 1.0, 0.0])
    inten = {"csf": 0.1, "gm": 0.5, "wm": 0.9}
    np.testing.assert_allclose(cohort.mix_tissues(gm, wm, brain, inten), [0.5, 0.9, 0.1, 0.7, 0.0])


def test_image_is_skull_stripped_and_wm_mask_is_white_matter(
    subjects: list[cohort.CohortSubject],
) -> None:
    for s in subjects:
        img, brain, wm = s.image.data, s.brain_mask.data > 0, s.wm_mask.data > 0
        assert np.all(img[~brain] == 0) and np.all(img[brain] > 0)
        assert wm.sum() > 100 and np.all(brain[wm])
        assert np.allclose(s.image.affine, s.wm_mask.affine)
        # WM voxels carry the WM intensity up to the bias field (coefficients <= 0.2).
        ratio = np.median(img[wm]) / s.params.intensities["wm"]
        assert 0.6 < ratio < 1.6
    t1 = subjects[0]
    brain = t1.brain_mask.data > 0
    assert np.median(t1.image.data[t1.wm_mask.data > 0]) > np.percentile(t1.image.data[brain], 60)


def test_crop_is_a_window_of_a_larger_crop() -> None:
    big = cohort.cohort_subject(4, seed=3, crop=(20, 20, 20))
    small = cohort.cohort_subject(4, seed=3, crop=(10, 10, 10))
    np.testing.assert_array_equal(small.image.data, big.image.data[5:15, 5:15, 5:15])
    np.testing.assert_allclose(
        apply_affine(small.image.affine, [0, 0, 0]), apply_affine(big.image.affine, [5, 5, 5])
    )


def test_bias_field_is_torchios_polynomial() -> None:
    """Where TorchIO is installed (it is not a dependency): its field, to the bit."""
    torchio = pytest.importorskip("torchio")
    coeffs = np.random.default_rng(0).uniform(-0.3, 0.3, cohort.n_bias_coefficients(3))
    shape = (6, 7, 5)
    ours = cohort.bias_field(shape, (0, 0, 0), shape, coeffs, order=3)
    theirs = torchio.BiasField.generate_bias_field(np.zeros((1, *shape)), 3, coeffs)
    np.testing.assert_array_equal(ours, theirs)


def test_bias_field_is_a_polynomial_and_crops_consistently() -> None:
    """exp of the monomials x^i y^j z^k in TorchIO's order, over [-1, 1] along each axis."""
    shape = (6, 7, 5)
    c = np.array([0.1, -0.2, 0.3, 0.05])  # order 1: 1, z, y, x
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    np.testing.assert_allclose(
        cohort.bias_field(shape, (0, 0, 0), shape, c, order=1),
        np.exp(c[0] + c[1] * z + c[2] * y + c[3] * x),
        rtol=1e-6,
    )
    coeffs = np.random.default_rng(0).uniform(-0.3, 0.3, cohort.n_bias_coefficients(3))
    ours = cohort.bias_field(shape, (0, 0, 0), shape, coeffs, order=3)
    window = cohort.bias_field((2, 3, 4), (1, 2, 1), shape, coeffs, order=3)
    np.testing.assert_allclose(window, ours[1:3, 2:5, 1:5], rtol=1e-6)
    with pytest.raises(ValueError):
        cohort.bias_field(shape, (0, 0, 0), shape, coeffs[:5], order=3)


def test_bad_input() -> None:
    with pytest.raises(InputError, match="contrast"):
        cohort.cohort_subject(0, contrast="PD", crop=(8, 8, 8))
    with pytest.raises(InputError, match=">= 0"):
        cohort.cohort_subject(-1, crop=(8, 8, 8))
    with pytest.raises(InputError, match="larger"):
        cohort.cohort_subject(0, crop=(8, 8, 400))


def test_sidecar_records_the_draw(subjects: list[cohort.CohortSubject]) -> None:
    side = subjects[1].sidecar()
    assert side["subject"] == 1 and side["contrast"] == "T2w"
    assert side["jacobian_min"] > 0
    assert set(side["tissue_intensities"]) == {"csf", "gm", "wm"}
    assert len(side["bias_coefficients"]) == cohort.n_bias_coefficients(cohort.BIAS_ORDER)


def test_cohort_figure_shows_three_views_per_subject(
    subjects: list[cohort.CohortSubject],
) -> None:
    fig = cohort.cohort_figure({f"sub-{i:02d}": s.image for i, s in enumerate(subjects[:2])})
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:3]] == [
        "sub-00 sagittal", "sub-00 coronal", "sub-00 axial",
    ]  # fmt: skip
    # Each panel shows the mid-slice of its volume.
    vol = subjects[1].image.data
    shown = fig.axes[5].get_images()[0].get_array()
    np.testing.assert_array_equal(np.asarray(shown), vol[:, :, vol.shape[2] // 2].T)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"
    with pytest.raises(InputError):
        cohort.cohort_figure({})
