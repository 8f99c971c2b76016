import json
from pathlib import Path

import numpy as np
import pytest

from irem.acquisition.simulate import (
    REORIENT_CODES,
    move,
    noise_generators,
    noise_sigma_for_snr,
    noisy_hr,
    orientation_name,
    profile_matrix,
    reference_signal,
    reorient,
    rician_noise,
    scan_time_matched_snr,
    simulate_scan_time_matched,
    simulate_stack,
    simulate_stacks,
)
from irem.errors import InputError
from irem.volume import Volume, apply_affine, load_volume, save_volume, voxel_centres

from .conftest import oblique_affine
from .test_cli import run


def _rician_xi(theta: float) -> float:
    """Koay & Basser's correction factor: variance of a Rician magnitude / sigma^2 at SNR theta."""
    from scipy.special import ive

    x = theta**2 / 4.0
    bracket = (2.0 + theta**2) * ive(0, x) + theta**2 * ive(1, x)
    return float(2.0 + theta**2 - np.pi / 8.0 * bracket**2)


def rician_signal_and_sigma(magnitude: np.ndarray) -> tuple[float, float]:
    """Signal and sigma of a uniform region of a Rician magnitude image, by Koay & Basser's (2006,
    J Magn Reson 179:317) moment matching; ``(0, ...)`` for a region of pure noise."""
    from scipy.optimize import brentq

    m = np.asarray(magnitude, dtype=np.float64).ravel()
    mean, std = float(m.mean()), float(m.std())
    r = mean / std
    if r <= np.sqrt(np.pi / (4.0 - np.pi)):
        return 0.0, float(np.sqrt((m**2).mean() / 2.0))

    def f(theta: float) -> float:
        return np.sqrt(max(_rician_xi(theta) * (1.0 + r**2) - 2.0, 0.0)) - theta

    theta = brentq(f, 0.0, r + 1.0)
    sigma = std / np.sqrt(_rician_xi(theta))
    return float(theta * sigma), float(sigma)


AFFINES = {
    "identity": np.diag([1.0, 1.0, 1.0, 1.0]),
    "flipped": np.array([[-0.9, 0, 0, 40.0], [0, -1.1, 0, 30.0], [0, 0, 1.3, -20.0], [0, 0, 0, 1]]),
    "oblique": oblique_affine((0.8, 1.0, 1.2), (20.0, -15.0, 30.0)),
}


@pytest.mark.parametrize("name", list(AFFINES))
@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("k", [3, 4])
def test_lr_centre_is_mean_of_averaged_hr_centres(name: str, axis: int, k: int) -> None:
    rng = np.random.default_rng(axis)
    hr = Volume(rng.random((13, 10, 11)).astype(np.float32), AFFINES[name])
    lr = simulate_stack(hr, axis, k, "box")
    assert lr.shape[axis] == hr.shape[axis] // k
    for i in range(lr.shape[axis]):
        lr_idx = [1, 2, 3]
        lr_idx[axis] = i
        hr_idx = np.array([lr_idx] * k, dtype=float)
        hr_idx[:, axis] = np.arange(i * k, (i + 1) * k)
        # world position of the LR voxel = mean world position of the HR voxels it averaged
        np.testing.assert_allclose(
            apply_affine(lr.affine, np.array(lr_idx, float)),
            apply_affine(hr.affine, hr_idx).mean(axis=0),
            atol=1e-9,
        )
        # and its value is their direct average
        vals = [hr.data[tuple(int(v) for v in row)] for row in hr_idx]
        assert lr.data[tuple(lr_idx)] == pytest.approx(np.mean(vals), rel=1e-5)


def test_lr_spacing_and_orientation_names() -> None:
    hr = Volume(
        np.random.default_rng(0).random((16, 16, 16)).astype(np.float32), AFFINES["flipped"]
    )
    stacks = simulate_stacks(hr, 4)
    assert [s.name for s in stacks] == ["sagittal", "coronal", "axial"]
    for axis, s in enumerate(stacks):
        assert s.thick_axis == axis
        assert s.spacing[axis] == pytest.approx(4 * hr.spacing[axis])
    # a volume stored with permuted axes: voxel axis 0 runs along world z -> axial
    perm = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])
    assert orientation_name(perm, 0) == "axial"


def test_gaussian_profile_is_centred_like_box_and_normalised() -> None:
    hr = Volume(
        np.random.default_rng(1).random((12, 24, 10)).astype(np.float32), AFFINES["oblique"]
    )
    box = simulate_stack(hr, 1, 4, "box")
    gauss = simulate_stack(hr, 1, 4, "gaussian")
    np.testing.assert_allclose(box.affine, gauss.affine)
    const = Volume(np.full((12, 24, 10), 2.0, np.float32) + 0 * hr.data, hr.affine)
    np.testing.assert_allclose(simulate_stack(const, 1, 4, "gaussian").data, 2.0, rtol=1e-6)


def test_none_profile_takes_a_slice_at_its_own_position() -> None:
    hr = Volume(np.random.default_rng(2).random((12, 8, 8)).astype(np.float32), AFFINES["oblique"])
    lr = simulate_stack(hr, 0, 4, "none")
    np.testing.assert_array_equal(lr.data[2], hr.data[2 * 4 + 1])
    np.testing.assert_allclose(
        apply_affine(lr.affine, [2, 0, 0]), apply_affine(hr.affine, [9, 0, 0])
    )


# --------------------------------------------------------------------------------------------------
# Slice thickness: gaps and overlaps


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_thickness_k_is_the_block_mean_as_before(k: int) -> None:
    n = 13
    w, offset = profile_matrix(n, k, "box", thickness=k)
    block = np.zeros((n // k, n))
    for i in range(n // k):
        block[i, i * k : (i + 1) * k] = 1.0 / k
    assert np.array_equal(w, block) and offset == (k - 1) / 2
    for profile in ("box", "gaussian"):
        assert np.array_equal(profile_matrix(n, k, profile, k)[0], profile_matrix(n, k, profile)[0])
    hr = Volume(
        np.random.default_rng(k).random((13, 10, 11)).astype(np.float32), AFFINES["oblique"]
    )
    plain = simulate_stacks(hr, k, snr=20.0, seed=3)
    given = simulate_stacks(hr, k, snr=20.0, seed=3, thickness=float(k))
    for a, b in zip(plain, given, strict=True):
        assert np.array_equal(a.data, b.data) and np.array_equal(a.affine, b.affine)
        assert a.thickness is None and b.thickness is None


@pytest.mark.parametrize("thickness", [1, 2, 6])
@pytest.mark.parametrize("axis", [0, 2])
def test_gap_and_overlap_average_thickness_hr_slices_centred_on_them(
    thickness: int, axis: int
) -> None:
    """Every HR slice has its own value: an LR slice of thickness T every k = 4 is the mean of
    the T HR slices from 4 i on (fewer than k with a gap, more with an overlap), centred at the
    mean of their centres."""
    k, n = 4, 26
    values = np.random.default_rng(axis).random(n)
    shape = [5, 6, 7]
    shape[axis] = n
    data = np.moveaxis(np.broadcast_to(values, (*[s for a, s in enumerate(shape) if a != axis], n)),
                       -1, axis).astype(np.float32)  # fmt: skip
    hr = Volume(np.ascontiguousarray(data), AFFINES["flipped"])
    lr = simulate_stack(hr, axis, k, "box", thickness=thickness)
    assert lr.shape[axis] == (n - thickness) // k + 1
    assert lr.spacing[axis] == pytest.approx(k * hr.spacing[axis])
    assert lr.thickness == pytest.approx(thickness * hr.spacing[axis])
    assert lr.slice_thickness == pytest.approx(thickness * hr.spacing[axis])
    for i in range(lr.shape[axis]):
        index = [1, 2, 3]
        index[axis] = i
        averaged = np.arange(i * k, i * k + thickness)
        assert lr.data[tuple(index)] == pytest.approx(values[averaged].mean(), rel=1e-5)
        hr_index = np.array([index] * thickness, dtype=float)
        hr_index[:, axis] = averaged
        np.testing.assert_allclose(
            apply_affine(lr.affine, np.array(index, float)),
            apply_affine(hr.affine, hr_index).mean(axis=0),
            atol=1e-9,
        )


def test_a_gap_averages_less_noise_away() -> None:
    """White noise: a slice of T HR voxels has the HR variance over T."""
    hr = Volume(np.random.default_rng(0).normal(size=(64, 64, 64)).astype(np.float32), np.eye(4))
    for thickness in (1.0, 2.0, 4.0, 8.0):
        lr = simulate_stack(hr, 2, 4, thickness=thickness)
        assert float(lr.data.var()) == pytest.approx(1.0 / thickness, rel=0.05)


def test_fractional_thickness_weights_the_cut_hr_slices() -> None:
    w, offset = profile_matrix(10, 4, "box", thickness=2.5)
    np.testing.assert_allclose(w[0, :3], [0.4, 0.4, 0.2])
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert offset == pytest.approx(0.75)  # the slab spans HR indices -0.5 to 2
    g, goffset = profile_matrix(40, 4, "gaussian", thickness=2.0)
    assert goffset == pytest.approx(0.5)
    j = np.arange(40) - (goffset + 4 * 3)
    sigma2 = float((g[3] * j**2).sum())
    assert sigma2 == pytest.approx((2.0 / (2 * np.sqrt(2 * np.log(2)))) ** 2, rel=0.02)


def test_moved_and_reoriented_stacks_keep_their_thickness() -> None:
    hr = Volume(np.random.default_rng(4).random((16, 16, 16)).astype(np.float32), np.eye(4))
    stack = simulate_stacks(hr, 4, thickness=2.0)[1]
    assert move(stack, np.eye(4)).thickness == 2.0
    assert reorient(stack, "LPS").thickness == 2.0


@pytest.mark.parametrize(
    ("n", "k", "profile", "thickness", "match"),
    [
        (16, 4, "box", 0.0, "positive"),
        (16, 4, "gaussian", -2.0, "positive"),
        (16, 4, "box", float("nan"), "positive"),
        (16, 4, "none", 2.0, "box or gaussian"),
        (16, 4, "box", 17.0, "larger than the image extent"),
    ],
)
def test_bad_thickness_is_refused(
    n: int, k: int, profile: str, thickness: float, match: str
) -> None:
    with pytest.raises(InputError, match=match):
        profile_matrix(n, k, profile, thickness)  # type: ignore[arg-type]


def _simulate(gt: Path, out: Path, capsys, *extra: str) -> dict:
    code, err = run(["-q", "simulate", str(gt), "--k", "4", "--out-dir", str(out), *extra], capsys)
    assert code == 0, err
    return json.loads((out / "simulation.json").read_text(encoding="utf-8"))


def test_cli_thickness_k_writes_the_same_stacks_and_records_it(
    tmp_path: Path, phantom: Volume, capsys
) -> None:
    gt = tmp_path / "gt.nii.gz"
    save_volume(gt, phantom.data, phantom.affine)
    plain = _simulate(gt, tmp_path / "plain", capsys, "--snr", "20")
    given = _simulate(gt, tmp_path / "given", capsys, "--snr", "20", "--thickness", "4")
    gap = _simulate(gt, tmp_path / "gap", capsys, "--snr", "20", "--thickness", "2")
    assert plain["thickness"] == given["thickness"] == 4.0 and gap["thickness"] == 2.0
    assert gap["slice_thickness_mm"] == [2.0, 2.0, 2.0]
    for name in plain["stacks"]:
        a, b = (load_volume(tmp_path / d / name) for d in ("plain", "given"))
        assert np.array_equal(a.data, b.data) and np.array_equal(a.affine, b.affine)
        side = json.loads((tmp_path / "gap" / name).with_suffix("").with_suffix(".json")
                          .read_text(encoding="utf-8"))  # fmt: skip
        assert side["thickness"] == 2.0 and side["slice_thickness_mm"] == [2.0, 2.0, 2.0]
    assert _simulate(gt, tmp_path / "none", capsys, "--profile", "none")["thickness"] == 1.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--thickness", "0"], "must be a positive number"),
        (["--thickness", "-1"], "must be a positive number"),
        (["--thickness", "thin"], "is not a number"),
        (["--thickness", "inf"], "must be a positive number"),
        (["--thickness", "2", "--profile", "none"], "--thickness needs --profile box or gaussian"),
        (["--thickness", "33"], "--thickness 33 is larger than the smallest image extent 32"),
    ],
)
def test_cli_bad_thickness_exits_2_with_one_line(
    tmp_path: Path, phantom: Volume, capsys, extra: list[str], message: str
) -> None:
    gt = tmp_path / "gt.nii.gz"
    save_volume(gt, phantom.data, phantom.affine)
    out = tmp_path / "lr"
    code, err = run(["simulate", str(gt), "--k", "4", "--out-dir", str(out), *extra], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not out.exists()


@pytest.mark.parametrize("thickness", ["2", "6"])
def test_cli_srr_with_the_simulated_thickness_beats_the_spacing(
    tmp_path: Path, phantom: Volume, capsys, thickness: str
) -> None:
    """Slices 2 mm (a gap) or 6 mm (an overlap) thick every 4 mm: SRR's box PSF of the right
    thickness reconstructs the phantom better than one as thick as the spacing (measured: RMSE
    0.106 against 0.111 with the gap, 0.111 against 0.114 with the overlap)."""
    gt = tmp_path / "gt.nii.gz"
    save_volume(gt, phantom.data, phantom.affine)
    sim = _simulate(gt, tmp_path / "lr", capsys, "--thickness", thickness)
    stacks = [str(tmp_path / "lr" / name) for name in sim["stacks"]]
    rmse = {}
    for name, extra in (("matched", ["--thickness", thickness]), ("spacing", [])):
        out = tmp_path / f"{name}.nii.gz"
        argv = ["-q", "baseline", "srr", "--psf", "box", *stacks, "-o", str(out)]
        code, err = run([*argv, "--reference", str(gt), "--no-register", *extra], capsys)
        assert code == 0, err
        rmse[name] = float(np.sqrt(np.mean((load_volume(out).data - phantom.data) ** 2)))
    assert rmse["matched"] < 0.99 * rmse["spacing"]


def test_rician_noise_is_seeded_and_at_the_asked_snr() -> None:
    hr = Volume(np.ones((40, 40, 40), np.float32), np.eye(4))
    hr.data[0] = 0  # not constant
    a = simulate_stacks(hr, 4, snr=20, seed=3)
    b = simulate_stacks(hr, 4, snr=20, seed=3)
    c = simulate_stacks(hr, 4, snr=20, seed=4)
    np.testing.assert_array_equal(a[1].data, b[1].data)
    assert not np.array_equal(a[1].data, c[1].data)
    # at high SNR the Rician magnitude is close to Gaussian: std of the bright part ~ 1/20
    assert np.std(a[2].data[5:, 5:, 2:]) == pytest.approx(1 / 20, rel=0.1)


def test_reorient_keeps_world_content() -> None:
    hr = Volume(
        np.random.default_rng(3).random((16, 20, 12)).astype(np.float32), AFFINES["identity"]
    )
    for stack, codes in zip(simulate_stacks(hr, 4), REORIENT_CODES, strict=True):
        if codes is None:
            continue
        r = reorient(stack, codes)
        a, b = voxel_centres(stack.shape, stack.affine), voxel_centres(r.shape, r.affine)
        ia, ib = np.lexsort(a.T), np.lexsort(b.T)
        np.testing.assert_allclose(a[ia], b[ib], atol=1e-9)
        np.testing.assert_array_equal(stack.data.ravel()[ia], r.data.ravel()[ib])


# --------------------------------------------------------------------------------------------------
# Noise: definition, estimation, scan-time rule


def _two_tissue(shape: tuple[int, int, int] = (48, 48, 48)) -> tuple[Volume, np.ndarray]:
    """A 'GM' shell (0.5) around a large 'WM' block (0.8) in a zero background, and the WM mask."""
    data = np.zeros(shape, np.float32)
    data[4:-4, 4:-4, 4:-4] = 0.5
    wm = np.zeros(shape, bool)
    wm[8:-8, 8:-8, 8:-8] = True
    data[wm] = 0.8
    return Volume(data, np.eye(4)), wm


def test_noise_sigma_for_snr_and_bad_values() -> None:
    assert noise_sigma_for_snr(0.8, 20.0) == pytest.approx(0.04)
    for sig, snr in ((0.8, 0.0), (0.8, -3.0), (0.0, 10.0), (0.8, float("nan"))):
        with pytest.raises(InputError):
            noise_sigma_for_snr(sig, snr)


def test_reference_signal_is_the_wm_mean_else_the_upper_half() -> None:
    hr, wm = _two_tissue()
    assert reference_signal(hr.data, wm) == pytest.approx(0.8)
    # Fallback: foreground above 10% of max, mean of its upper intensity half (here: the WM).
    assert reference_signal(hr.data) == pytest.approx(0.8)
    shell = hr.data.copy()
    shell[shell == 0.8] = 0.5
    shell[20:24, 20:24, 20:24] = 1.0  # a small bright spot: the upper half still counts all 0.5s
    assert 0.5 < reference_signal(shell) < 0.52
    with pytest.raises(InputError):
        reference_signal(hr.data, np.zeros_like(wm))
    with pytest.raises(InputError):
        reference_signal(hr.data, wm[:-1])


@pytest.mark.parametrize("snr", [3.0, 10.0, 40.0])
def test_rician_noise_gives_the_asked_snr_within_5_percent(snr: float) -> None:
    signal = 0.7
    rng = np.random.default_rng(int(snr))
    mag = rician_noise(np.full(200_000, signal), noise_sigma_for_snr(signal, snr), rng)
    s_hat, sigma_hat = rician_signal_and_sigma(mag)
    assert signal / sigma_hat == pytest.approx(snr, rel=0.05)
    assert s_hat == pytest.approx(signal, rel=0.05)
    # The naive mean / std is biased at low SNR (the Rician floor): the estimator is needed.
    if snr <= 3:
        assert float(mag.mean() / mag.std()) > 1.05 * snr


def test_stacks_have_the_asked_snr_in_white_matter() -> None:
    hr, wm = _two_tissue()
    stacks = simulate_stacks(hr, 2, snr=15.0, seed=1, wm_mask=wm, subject_seed=7)
    for axis, stack in enumerate(stacks):
        sl = [slice(10, 38)] * 3
        sl[axis] = slice(5, 19)  # WM interior on the thick axis (k=2)
        _, sigma = rician_signal_and_sigma(stack.data[tuple(sl)])
        assert 0.8 / sigma == pytest.approx(15.0, rel=0.05)


def test_noise_is_seeded_by_subject_and_run() -> None:
    hr, wm = _two_tissue((24, 24, 24))
    a = simulate_stacks(hr, 4, snr=10, seed=0, wm_mask=wm, subject_seed=3)
    b = simulate_stacks(hr, 4, snr=10, seed=0, wm_mask=wm, subject_seed=3)
    c = simulate_stacks(hr, 4, snr=10, seed=0, wm_mask=wm, subject_seed=4)
    d = simulate_stacks(hr, 4, snr=10, seed=1, wm_mask=wm, subject_seed=3)
    assert all(np.array_equal(x.data, y.data) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].data, c[0].data)
    assert not np.array_equal(a[0].data, d[0].data)
    # Without a subject seed the generators are the historical SeedSequence(seed) children.
    old = [np.random.default_rng(s) for s in np.random.SeedSequence(5).spawn(3)]
    new = noise_generators(5)[:3]
    assert all(o.random() == n.random() for o, n in zip(old, new, strict=True))


def test_scan_time_matched_snr_rule() -> None:
    assert scan_time_matched_snr(1.0, 4) == pytest.approx(2.309, abs=5e-4)
    assert scan_time_matched_snr(30.0, 4) == pytest.approx(30.0 * 4 / np.sqrt(3))
    assert scan_time_matched_snr(10.0, 8, n_stacks=4) == pytest.approx(40.0)
    assert scan_time_matched_snr(10.0, 1, n_stacks=1) == pytest.approx(10.0)
    with pytest.raises(InputError):
        scan_time_matched_snr(10.0, 0)
    with pytest.raises(InputError):
        scan_time_matched_snr(-1.0, 4)


def test_scan_time_matched_hr_and_stacks() -> None:
    hr, wm = _two_tissue()
    hr_snr, k = 12.0, 2
    stacks, hr_noisy, info = simulate_scan_time_matched(
        hr, k, hr_snr, seed=2, wm_mask=wm, subject_seed=1
    )
    assert info["lr_snr"] == pytest.approx(hr_snr * k / np.sqrt(3))
    assert info["lr_sigma"] / info["hr_sigma"] == pytest.approx(np.sqrt(3) / k)
    assert info["reference_signal"] == pytest.approx(0.8)
    _, sigma_hr = rician_signal_and_sigma(hr_noisy.data[wm])
    assert 0.8 / sigma_hr == pytest.approx(hr_snr, rel=0.05)
    _, sigma_lr = rician_signal_and_sigma(stacks[2].data[10:38, 10:38, 5:19])
    assert 0.8 / sigma_lr == pytest.approx(info["lr_snr"], rel=0.05)
    assert np.allclose(hr_noisy.affine, hr.affine) and hr_noisy.shape == hr.shape
    # Same subject and run: the same HR scan; the HR noise is not any stack's noise.
    again = noisy_hr(hr, hr_snr, seed=2, subject_seed=1, wm_mask=wm)
    np.testing.assert_array_equal(again.data, hr_noisy.data)
    assert not np.array_equal(noisy_hr(hr, hr_snr, seed=3, subject_seed=1).data, again.data)
