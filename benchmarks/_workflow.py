"""What the benchmarks share with the workflow: its data, brain mask, IREM settings and metrics.

Everything is read from ``config/config.yaml`` and the packaged IREM configurations
(:func:`irem.training.config.load_config`) instead of being copied, and every PSNR/SSIM goes through
:func:`irem.evaluation.metrics.compute_metrics` with the workflow's brain mask
(:func:`irem.data.datasets.brain_mask` on the whole volume, then the same centre crop as the data), as
``irem metrics --mask`` scores the workflow's runs.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from irem import layout as L
from irem.data.cohort import CONTRASTS
from irem.data.datasets import brain_mask, crop_box, load_dataset
from irem.evaluation.metrics import compute_metrics
from irem.report.labels import fill
from irem.training.config import IremConfig, load_config, parse_set
from irem.volume import Volume

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "config.yaml"
OUT = Path("results/benchmarks")


def workflow_config() -> dict[str, Any]:
    """The workflow's default configuration (``config/config.yaml``)."""
    return yaml.safe_load(CONFIG.read_text(encoding="utf-8"))


def workflow_crop() -> list[int] | None:
    """The centre crop of the workflow's first simulated dataset (None: the whole volume)."""
    crop = workflow_config()["datasets"][0].get("crop")
    return [int(c) for c in crop] if crop else None


def load_with_mask(
    name: str = "mni152_t1", crop: list[int] | None = None, phantom_size: int = 64
) -> tuple[Volume, np.ndarray]:
    """An embedded volume and the workflow's brain mask of it, both cropped to ``crop``.

    The mask is :func:`irem.data.datasets.brain_mask` with threshold 0 (exact for the embedded
    volumes, whose background is zero), computed before cropping as ``irem dataset`` does.
    """
    vol = load_dataset(name, phantom_size=phantom_size)
    mask = brain_mask(vol, threshold=0.0)
    if crop:
        vol, mask = crop_box(vol, crop), crop_box(mask, crop)
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


def irem(*args: str) -> list[str]:
    """The ``irem`` command of this checkout."""
    return [sys.executable, "-m", "irem.cli", *args]


def run_logged(cmd: list[str] | str, log: Path) -> None:
    """Run a command (a list, or a shell string) on one thread, its output in ``log``; raise on
    failure."""
    with log.open("w", encoding="utf-8") as fh:
        res = subprocess.run(
            cmd, shell=isinstance(cmd, str), stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        )
    if res.returncode != 0:
        raise RuntimeError(f"failed ({res.returncode}): {cmd}; see {log}")


def method_shell(
    command: str, stacks: list[str], output: Path, reference: Path, checkpoint: Path
) -> str:
    """A workflow method's command template filled in as the ``reconstruct`` rule does for one
    simulated case (known geometry, no registration; 1 thread, CPU, seed 0), ``irem`` being this
    checkout's."""
    geometry = shlex.join(["--no-register", "--fixed-index", "0", "--reference", str(reference)])
    cmd = fill(command, stacks=shlex.join(stacks), output=shlex.quote(str(output)),
               reference=shlex.quote(str(reference)), geometry=geometry, threads=1,
               device="cpu", seed=0, checkpoint=shlex.quote(str(checkpoint)))
    return re.sub(r"^irem\s", f"{shlex.quote(sys.executable)} -m irem.cli ", cmd)


def cpu_description() -> str:
    """CPU model and the SIMD flags that matter for torch (from /proc/cpuinfo)."""
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    wanted = ["avx2", "avx512f", "avx512_bf16", "amx_bf16"]
    return f"{model}; flags: {', '.join(f for f in wanted if f in flags) or 'none of avx2/avx512'}"


def cohort_subject_cases(
    config: dict[str, Any],
    index: int,
    work: Path,
    crop: list[int] | None,
    subject_seed: int | None = None,
) -> list[dict[str, Any]]:
    """Cohort subject ``index`` of a workflow config as the workflow makes it: ground truth (the
    config's cohort seed, contrast cycled by index, centre ``crop`` or the whole brain crop), brain
    and white-matter masks, and the three stacks at every k of the config (its profile and SNR,
    seed 0, plus ``subject_seed`` for the noise when given). Writes into ``work``; one case per k:
    subject, contrast, k, gt, mask, stacks, dir."""
    cohort = next(d for d in config["datasets"] if d.get("cohort"))["cohort"]
    subject, contrast = f"{index + 1:02d}", CONTRASTS[index % len(CONTRASTS)]
    gt, wm = work / f"sub-{subject}_{contrast}.nii.gz", work / f"sub-{subject}_wm.nii.gz"
    mask = work / f"sub-{subject}_mask.nii.gz"
    box = ["--crop", *map(str, crop)] if crop else []
    run_logged(irem("dataset", "mni152_cohort", "--index", str(index), "--seed",
                    str(cohort.get("seed", 0)), "--contrast", contrast, *box, "-o", str(gt),
                    "--wm-mask-out", str(wm)), work / f"gt-{subject}.log")
    run_logged(irem("dataset", str(gt), "--mask-out", str(mask), "--mask-threshold", "0"),
               work / f"mask-{subject}.log")
    sim = config["simulation"]
    noise = ["--snr", str(sim["snr"]), "--wm-mask", str(wm)] if sim.get("snr") else []
    if subject_seed is not None:
        noise += ["--subject-seed", str(subject_seed)]
    cases = []
    for k in config["ks"]:
        out = work / f"k{k}" / f"sub-{subject}"
        run_logged(irem("simulate", str(gt), "--k", str(k), "--seed", "0", "--profile",
                        sim["profile"], *noise, "--out-dir", str(out)),
                   work / f"sim-{subject}-k{k}.log")
        stacks = [str(out / f"acq-{o}.nii.gz") for o in L.ORIENTATIONS]
        cases.append({"subject": subject, "contrast": contrast, "k": k, "gt": gt,
                      "mask": mask, "stacks": stacks, "dir": out})
    return cases
