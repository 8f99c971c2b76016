"""What the benchmarks share with the workflow: its data, brain mask, IREM settings and metrics.

Everything is read from ``config/config.yaml`` and the packaged IREM configurations
(:func:`irem.config.load_config`) instead of being copied, and every PSNR/SSIM goes through
:func:`irem.metrics.compute_metrics` with the workflow's brain mask
(:func:`irem.datasets.brain_mask` on the whole volume, then the same centre crop as the data), as
``irem metrics --mask`` scores the workflow's runs.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from irem.config import IremConfig, load_config, parse_set
from irem.datasets import brain_mask, crop_centre, load_dataset
from irem.metrics import compute_metrics
from irem.volume import Volume

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "config.yaml"
OUT = Path("results/benchmarks")


def workflow_config() -> dict[str, Any]:
    """The workflow's default configuration (``config/config.yaml``)."""
    return yaml.safe_load(CONFIG.read_text())


def workflow_crop() -> list[int] | None:
    """The centre crop of the workflow's first simulated dataset (None: the whole volume)."""
    crop = workflow_config()["datasets"][0].get("crop")
    return [int(c) for c in crop] if crop else None


def load_with_mask(
    name: str = "mni152_t1", crop: list[int] | None = None, phantom_size: int = 64
) -> tuple[Volume, np.ndarray]:
    """An embedded volume and the workflow's brain mask of it, both cropped to ``crop``.

    The mask is :func:`irem.datasets.brain_mask` with threshold 0 (exact for the embedded
    volumes, whose background is zero), computed before cropping as ``irem dataset`` does.
    """
    vol = load_dataset(name, phantom_size=phantom_size)
    mask = brain_mask(vol, threshold=0.0)
    if crop:
        vol, mask = crop_centre(vol, crop), crop_centre(mask, crop)
    return vol, mask.data > 0.5


def method_command(method: str) -> list[str]:
    """The command of a workflow method (``config/config.yaml`` ``methods``), split into words."""
    for entry in workflow_config()["methods"]:
        if entry["name"] == method:
            return shlex.split(" ".join(str(entry["command"]).split()))
    raise SystemExit(f"error: {method!r} is not a method of {CONFIG}")


def method_config(method: str, overrides: dict[str, Any] | None = None) -> IremConfig:
    """The IREM configuration of a workflow method (``irem``, ``iremfast``): the ``--config`` and
    ``--set`` options of its command in ``config/config.yaml``, then ``overrides``."""
    words = method_command(method)
    name = words[words.index("--config") + 1] if "--config" in words else None
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    return load_config(name, {**parse_set(sets), **(overrides or {})})


def scores(pred: np.ndarray, hr: Volume, mask: np.ndarray) -> dict[str, Any]:
    """PSNR/SSIM over the volume and in the brain mask, as ``irem metrics`` computes them."""
    return compute_metrics(pred, hr.data, mask=mask)
