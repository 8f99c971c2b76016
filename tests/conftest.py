"""Shared fixtures: tiny synthetic images written to temporary folders; everything on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from irem.acquisition.simulate import simulate_stacks
from irem.data.phantom import shepp_logan
from irem.volume import Volume, save_volume

from .workflow_run import run_test_config


@pytest.fixture(scope="session")
def phantom() -> Volume:
    """A 32^3 Shepp-Logan phantom at 1 mm."""
    return shepp_logan((32, 32, 32))


@pytest.fixture()
def stack_files(tmp_path: Path, phantom: Volume) -> tuple[list[str], str]:
    """Three k=4 box-profile stacks of the phantom and the HR ground truth, as NIfTI files."""
    gt = tmp_path / "gt.nii.gz"
    save_volume(gt, phantom.data, phantom.affine)
    paths = []
    for s in simulate_stacks(phantom, 4):
        p = tmp_path / f"acq-{s.name}.nii.gz"
        save_volume(p, s.data, s.affine)
        paths.append(str(p))
    return paths, str(gt)


def oblique_affine(
    spacing: tuple[float, float, float],
    angles_deg: tuple[float, float, float],
    origin: tuple[float, float, float] = (3.0, -7.0, 11.0),
) -> np.ndarray:
    """A voxel-to-world affine with the given voxel sizes and rotation (x, y, z Euler angles)."""
    from scipy.spatial.transform import Rotation

    a = np.eye(4)
    a[:3, :3] = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix() @ np.diag(spacing)
    a[:3, 3] = origin
    return a


def rigid(angles: tuple[float, float, float], shift: tuple[float, float, float]) -> np.ndarray:
    """Rigid 4x4: rotations about x, y, z (radians), then a shift (mm)."""
    m = np.eye(4)
    for axis, ang in enumerate(angles):
        c, s = np.cos(ang), np.sin(ang)
        i, j = [a for a in range(3) if a != axis]
        r = np.eye(4)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        m = r @ m
    m[:3, 3] = shift
    return m


@pytest.fixture(scope="session")
def test_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test config run end to end in a temporary copy of the workflow (once a session: the
    workflow tests read it, and the Slurm tests compare their tables with it)."""
    return run_test_config(tmp_path_factory.mktemp("workflow"))
