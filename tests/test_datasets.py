"""Embedded datasets: the synthetic FLAIR, the phantom, masks, crops and the command line."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from irem.cli import dataset as dataset_cli
from irem.cli import main
from irem.data import datasets
from irem.errors import InputError
from irem.volume import Volume, apply_affine


def dataset_main(argv: list[str]) -> int:
    """``irem dataset ARGV``: the exit status (argparse's errors included)."""
    try:
        return main(["dataset", *argv])
    except SystemExit as exc:
        return int(exc.code or 0)


def flair_lesions(seed: int = 0) -> list[datasets.Lesion]:
    """The lesions that :func:`datasets.mni152_flair` draws for ``seed`` (world mm)."""
    t1 = datasets.mni152_t1(crop=False)
    wm = datasets.mni152_tissue("wm").data / 255.0
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xF1A1]))
    return datasets.sample_lesions(apply_affine(t1.affine, np.argwhere(wm > 0.95)), rng)


@pytest.fixture(scope="module")
def flair() -> Volume:
    return datasets.mni152_flair(seed=0)


def test_flair_grid_is_1x1x2_and_cropped_like_t1(flair: Volume) -> None:
    assert np.allclose(flair.spacing, [1.0, 1.0, 2.0])
    assert all(n % 8 == 0 for n in flair.shape)
    t1 = datasets.mni152_t1()
    # Same in-plane extent as the T1 crop, half as many slices (2 mm).
    assert flair.shape[:2] == t1.shape[:2]
    assert abs(flair.shape[2] - t1.shape[2] / 2) <= 8
    assert flair.data.dtype == np.float32
    assert float(flair.data.min()) >= 0.0 and float(flair.data.max()) == pytest.approx(1.0)


def test_flair_slice_centres_average_two_1mm_slices(flair: Volume) -> None:
    # The centre of a 2 mm slice lies halfway between the two 1 mm slices it averages.
    t1 = datasets.mni152_t1(crop=False)
    z_t1 = apply_affine(t1.affine, [[0, 0, 0], [0, 0, 1]])[:, 2]
    full = datasets.mni152_flair(seed=0, crop=False)
    z_flair = apply_affine(full.affine, [[0, 0, 0]])[0, 2]
    assert z_flair == pytest.approx(z_t1.mean())


def test_flair_contrast_csf_dark_gm_brighter_than_wm(flair: Volume) -> None:
    lesion_free = datasets.mni152_flair(seed=0, crop=False)
    gm = datasets.block_mean(datasets.mni152_tissue("gm"), 2, 2)
    wm = datasets.block_mean(datasets.mni152_tissue("wm"), 2, 2)
    brain = lesion_free.data > 0
    pure_gm = brain & (gm.data > 0.9 * 255)
    pure_wm = brain & (wm.data > 0.9 * 255)
    csf = brain & (gm.data + wm.data < 0.1 * 255)
    img = lesion_free.data
    assert np.median(img[csf]) < np.median(img[pure_wm]) < np.median(img[pure_gm])
    assert np.median(img[csf]) < 0.2


def test_flair_has_3_to_6_bright_lesions_in_white_matter(flair: Volume) -> None:
    lesions = flair_lesions(seed=0)
    assert 3 <= len(lesions) <= 6
    inv = np.linalg.inv(flair.affine)
    wm_level = np.percentile(flair.data[flair.data > 0], 50)
    for les in lesions:
        i, j, k = np.round(apply_affine(inv, [les.centre])[0]).astype(int)
        # The brightest tissue in the image: far above the white matter around it.
        assert flair.data[i, j, k] > 0.9
        assert flair.data[i, j, k] > 1.5 * wm_level


def test_flair_is_deterministic_and_seeded(flair: Volume) -> None:
    again = datasets.mni152_flair(seed=0)
    assert np.array_equal(again.data, flair.data)
    assert np.array_equal(again.affine, flair.affine)
    other = datasets.mni152_flair(seed=1)
    assert not np.array_equal(other.data, flair.data)
    assert flair_lesions(0) != flair_lesions(1)


def test_sample_lesions_counts_and_spacing() -> None:
    cand = np.random.default_rng(0).uniform(-50, 50, size=(5000, 3))
    for seed in range(20):
        lesions = datasets.sample_lesions(cand, np.random.default_rng(seed))
        assert 3 <= len(lesions) <= 6
        centres = np.array([les.centre for les in lesions])
        d = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
        assert np.all(d[np.triu_indices(len(lesions), 1)] >= 12.0)
        assert all(2.5 <= r <= 6.0 for les in lesions for r in les.radii)


def test_render_lesions_inside_one_outside_zero() -> None:
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    les = datasets.Lesion(centre=(20.0, 20.0, 20.0), radii=(4.0, 4.0, 4.0))
    m = datasets.render_lesions((40, 40, 20), affine, [les])
    assert m[20, 20, 10] == pytest.approx(1.0, abs=1e-3)
    assert m[20, 20, 10 + 3] < 1e-3  # 6 mm away along z
    assert m[0, 0, 0] == 0.0
    assert m[24, 20, 10] == pytest.approx(0.5, abs=0.05)  # on the surface


def test_block_mean_keeps_world_positions() -> None:
    vol = Volume(data=np.arange(24, dtype=np.float32).reshape(2, 3, 4), affine=np.eye(4))
    out = datasets.block_mean(vol, axis=2, factor=2)
    assert out.shape == (2, 3, 2)
    assert out.data[0, 0, 0] == pytest.approx(0.5)
    assert apply_affine(out.affine, [[0, 0, 1]])[0, 2] == pytest.approx(2.5)


def test_phantom_and_its_mask() -> None:
    ph = datasets.phantom(size=24)
    assert ph.shape == (24, 24, 24)
    mask = datasets.brain_mask(ph)
    assert set(np.unique(mask.data)) == {0.0, 1.0}
    # Holes (dark ellipses inside the head) are filled; the corners are background.
    assert mask.data[12, 12, 12] == 1.0 and mask.data[0, 0, 0] == 0.0
    assert mask.data.sum() >= (ph.data > 0).sum()
    with pytest.raises(InputError):
        datasets.phantom(size=4)


def test_brain_mask_keeps_the_largest_component_and_relative_threshold() -> None:
    data = np.zeros((20, 20, 20), dtype=np.float32)
    data[2:12, 2:12, 2:12] = 1.0
    data[5:8, 5:8, 5:8] = 0.0  # a hole
    data[16:18, 16:18, 16:18] = 1.0  # a speck
    data += 0.01  # noisy background
    vol = Volume(data=data, affine=np.eye(4))
    m = datasets.brain_mask(vol, threshold=0.1, relative=True)
    assert m.data.sum() == 1000
    with pytest.raises(InputError):
        datasets.brain_mask(vol, threshold=5.0)


def test_mni152_t1_mask_is_the_skull_stripped_brain() -> None:
    t1 = datasets.mni152_t1()
    mask = datasets.brain_mask(t1)
    frac = float(mask.data.mean())
    assert 0.3 < frac < 0.7  # the crop removed most background
    assert np.all(t1.data[mask.data == 0] == 0)


def test_crop_box_centred() -> None:
    vol = Volume(
        data=np.random.default_rng(0).random((10, 12, 14)).astype(np.float32),
        affine=np.diag([1.0, 2.0, 3.0, 1.0]),
    )
    out = datasets.crop_box(vol, (4, 6, 14))
    assert out.shape == (4, 6, 14)
    assert np.array_equal(out.data, vol.data[3:7, 3:9, :])
    # The voxel kept at (0, 0, 0) is at the world position of (3, 3, 0) in the input.
    assert np.allclose(apply_affine(out.affine, [[0, 0, 0]]), apply_affine(vol.affine, [[3, 3, 0]]))
    with pytest.raises(InputError):
        datasets.crop_box(vol, (11, 2, 2))


def test_load_dataset_unknown_name() -> None:
    with pytest.raises(InputError, match="unknown dataset"):
        dataset_cli.load_dataset("nope")


def test_cli_writes_volume_mask_and_sidecar(tmp_path) -> None:
    out, mask = tmp_path / "sub-01_PD.nii.gz", tmp_path / "sub-01_mask.nii.gz"
    rc = dataset_main(
        [
            "phantom",
            "-o",
            str(out),
            "--mask-out",
            str(mask),
            "--phantom-size",
            "32",
            "--crop",
            "24",
            "24",
            "16",
        ]
    )
    assert rc == 0
    img, m = nib.load(out), nib.load(mask)
    assert img.shape == (24, 24, 16) and m.shape == (24, 24, 16)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    assert np.allclose(img.affine, m.affine)
    side = json.loads((tmp_path / "sub-01_PD.json").read_text(encoding="utf-8"))
    assert side["dataset"] == "phantom" and side["shape"] == [24, 24, 16]
    assert side["mask_voxels"] == int(np.asarray(m.dataobj).sum())
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave nothing behind


def test_cli_copies_a_user_file_with_a_relative_mask(tmp_path) -> None:
    src = tmp_path / "hr.nii.gz"
    data = np.full((16, 16, 16), 0.02, dtype=np.float32)
    data[4:12, 4:12, 4:12] = 1.0
    nib.save(nib.Nifti1Image(data, np.eye(4)), src)
    out, mask = tmp_path / "gt.nii.gz", tmp_path / "mask.nii.gz"
    assert dataset_main([str(src), "-o", str(out), "--mask-out", str(mask)]) == 0
    assert np.asarray(nib.load(mask).dataobj).sum() == 512
    assert np.allclose(np.asarray(nib.load(out).dataobj), data)


def test_cli_reports_errors_with_status_2(tmp_path, capsys) -> None:
    assert dataset_main(["nope", "-o", str(tmp_path / "x.nii.gz")]) == 2
    assert "error: unknown dataset" in capsys.readouterr().err
    assert dataset_main(["phantom", "-o", str(tmp_path / "missing" / "x.nii.gz")]) == 2
    assert dataset_main(["phantom", "-o", str(tmp_path / "x.txt")]) == 2


def test_cli_mask_only_from_a_ground_truth(tmp_path) -> None:
    # How the workflow's brain_mask rule calls it: the GT file in, only the mask out.
    gt = tmp_path / "gt.nii.gz"
    assert dataset_main(["phantom", "-o", str(gt), "--phantom-size", "24"]) == 0
    mask = tmp_path / "mask.nii.gz"
    assert dataset_main([str(gt), "--mask-out", str(mask), "--mask-threshold", "0"]) == 0
    expected = datasets.brain_mask(datasets.phantom(size=24)).data
    assert np.array_equal(np.asarray(nib.load(mask).dataobj), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gt.json", "gt.nii.gz", "mask.nii.gz"]


def test_cli_needs_an_output(capsys) -> None:
    assert dataset_main(["phantom"]) == 2
    assert "error: give -o" in capsys.readouterr().err


def test_cli_writes_a_cohort_subject_with_its_masks(tmp_path) -> None:
    out, mask, wm = (tmp_path / f"sub-01_{n}.nii.gz" for n in ("T2w", "mask", "label-WM_mask"))
    args = ["mni152_cohort", "--index", "1", "--seed", "2", "--crop", "40", "48", "40"]
    rc = dataset_main([*args, "-o", str(out), "--mask-out", str(mask), "--wm-mask-out", str(wm)])
    assert rc == 0
    img, m, w = (np.asarray(nib.load(p).dataobj) for p in (out, mask, wm))
    assert img.shape == m.shape == w.shape == (40, 48, 40)
    assert np.allclose(nib.load(out).affine, nib.load(wm).affine)
    assert set(np.unique(w)) == {0.0, 1.0} and np.all(m[w > 0] == 1)
    assert np.all(img[m == 0] == 0)
    side = json.loads((tmp_path / "sub-01_T2w.json").read_text(encoding="utf-8"))
    assert side["dataset"] == "mni152_cohort" and side["subject"] == 1
    assert side["contrast"] == "T2w" and side["cohort_seed"] == 2
    assert side["wm_mask_voxels"] == int(w.sum()) and side["jacobian_min"] > 0
    from irem.data.cohort import cohort_subject

    expected = cohort_subject(1, seed=2, crop=(40, 48, 40))
    np.testing.assert_array_equal(img, expected.image.data)


def test_cli_wm_mask_needs_the_cohort(tmp_path, capsys) -> None:
    out = tmp_path / "x.nii.gz"
    assert dataset_main(["phantom", "-o", str(out), "--wm-mask-out", str(tmp_path / "w.nii")]) == 2
    assert "--wm-mask-out needs the mni152_cohort" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    assert dataset_main(["mni152_cohort", "--subject", "-2", "-o", str(out)]) == 2
    assert not list(tmp_path.iterdir())


def test_add_dataset_parser_is_a_subcommand(tmp_path, capsys) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="irem")
    dataset_cli.add_dataset_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "sub-01_PD.nii.gz"
    args = parser.parse_args(["dataset", "phantom", "--phantom-size", "16", "-o", str(out)])
    args.func(args)
    assert nib.load(out).shape == (16, 16, 16)
    bad = parser.parse_args(["dataset", "nope", "-o", str(tmp_path / "y.nii.gz")])
    with pytest.raises(InputError, match="unknown dataset"):
        bad.func(bad)
    with pytest.raises(SystemExit):
        parser.parse_args(["dataset", "--help"])
    assert "irem dataset mni152_cohort --subject 3" in capsys.readouterr().out


def test_crop_box_placed_at_the_far_corner() -> None:
    vol = Volume(data=np.arange(10 * 12 * 14, dtype=np.float32).reshape(10, 12, 14),
                 affine=np.eye(4))  # fmt: skip
    out = datasets.crop_box(vol, (4, 6, 5), (1.0, 0.0, 0.5))
    assert np.array_equal(out.data, vol.data[6:10, 0:6, 4:9])
    with pytest.raises(InputError, match="position"):
        datasets.crop_box(vol, (4, 6, 5), (1.5, 0.0, 0.5))
