"""A 3-D Shepp-Logan phantom (Kak & Slaney's ellipsoids with MRI-like positive contrasts)."""

from __future__ import annotations

import numpy as np
from nibabel.affines import from_matvec

from irem.volume import Volume

# (value, a, b, c, x0, y0, z0, phi [deg]) in the unit cube [-1, 1]^3, rotation about z.
_ELLIPSOIDS = (
    (1.0, 0.69, 0.92, 0.81, 0.0, 0.0, 0.0, 0.0),
    (-0.8, 0.6624, 0.874, 0.78, 0.0, -0.0184, 0.0, 0.0),
    (-0.2, 0.11, 0.31, 0.22, 0.22, 0.0, 0.0, -18.0),
    (-0.2, 0.16, 0.41, 0.28, -0.22, 0.0, 0.0, 18.0),
    (0.1, 0.21, 0.25, 0.41, 0.0, 0.35, -0.15, 0.0),
    (0.1, 0.046, 0.046, 0.05, 0.0, 0.1, 0.25, 0.0),
    (0.1, 0.046, 0.046, 0.05, 0.0, -0.1, 0.25, 0.0),
    (0.1, 0.046, 0.023, 0.05, -0.08, -0.605, 0.0, 0.0),
    (0.1, 0.023, 0.023, 0.02, 0.0, -0.606, 0.0, 0.0),
    (0.1, 0.023, 0.046, 0.02, 0.06, -0.605, 0.0, 0.0),
)


def shepp_logan(shape: tuple[int, int, int] = (48, 48, 48), spacing: float = 1.0) -> Volume:
    """A 3-D Shepp-Logan phantom, intensities in [0, 1], centred on the world origin (RAS, mm)."""
    axes = [np.linspace(-1.0, 1.0, n) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    img = np.zeros(shape, dtype=np.float64)
    for value, a, b, c, x0, y0, z0, phi in _ELLIPSOIDS:
        t = np.deg2rad(phi)
        xr = (x - x0) * np.cos(t) + (y - y0) * np.sin(t)
        yr = -(x - x0) * np.sin(t) + (y - y0) * np.cos(t)
        inside = (xr / a) ** 2 + (yr / b) ** 2 + ((z - z0) / c) ** 2 <= 1.0
        img[inside] += value
    img = np.clip(img, 0.0, None)
    affine = from_matvec(spacing * np.eye(3), -spacing * (np.asarray(shape) - 1) / 2.0)
    return Volume(data=(img / img.max()).astype(np.float32), affine=affine)
