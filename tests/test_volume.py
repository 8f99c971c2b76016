from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from irem.errors import InputError
from irem.volume import load_volume, save_volume, sidecar_path, validate


def test_save_sets_sform_qform_and_sidecar(tmp_path: Path) -> None:
    aff = np.diag([0.5, 0.7, 2.0, 1.0])
    aff[:3, 3] = [1, 2, 3]
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    out = save_volume(tmp_path / "x.nii.gz", data, aff, sidecar={"a": np.float32(1.5)})
    img = nib.load(out)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    np.testing.assert_allclose(img.get_sform(), aff)
    np.testing.assert_allclose(img.get_qform(), aff, atol=1e-6)
    np.testing.assert_array_equal(img.get_fdata(), data)
    assert sidecar_path(out).read_text(encoding="utf-8").strip().startswith("{")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.nii.gz"]  # no temp files
    assert (out.stat().st_mode & 0o444) == 0o444  # readable like any other file


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        save_volume(tmp_path / "y.nii.gz", np.ones((2, 2, 2)), np.eye(4), sidecar={"bad": object()})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.ones((4, 4, 4, 2)), "3-D"),
        (np.ones((4, 4)), "3-D"),
        (np.full((4, 4, 4), np.nan), "NaN"),
        (np.ones((4, 4, 4)), "constant"),
    ],
)
def test_validate_refuses(data: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        validate(data, np.eye(4), "img")


def test_validate_accepts_trailing_singleton() -> None:
    data, _ = validate(np.random.default_rng(0).random((3, 4, 5, 1)), np.eye(4), "img")
    assert data.shape == (3, 4, 5) and data.dtype == np.float32


def test_load_refuses_garbage_and_missing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="not a readable NIfTI"):
        load_volume(bad)
    with pytest.raises(InputError, match="no such file"):
        load_volume(tmp_path / "missing.nii.gz")
    with pytest.raises(InputError, match="singular"):
        validate(np.random.default_rng(0).random((3, 3, 3)), np.diag([1, 0, 1, 1.0]), "img")
