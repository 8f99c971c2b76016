"""Peak memory of every method against the estimate the command checks before it starts.

Usage: ``python benchmarks/memory_estimate.py [--out results/benchmarks]`` (about four minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
FAST = ["reconstruct", "--config", "fast", "--steps", "20"]
PAPER = ["reconstruct", "--steps", "5"]
#: method label -> (command after ``irem``, grid sizes n of the n^3 phantom)
SRR = ["baseline", "srr", "--psf", "box", "--regulariser"]
METHODS: dict[str, tuple[list[str], tuple[int, ...]]] = {
    "bspline": (["baseline", "bspline"], (64, 112, 160)),
    "srr-tk1": ([*SRR, "tk1"], (64, 112, 160)),
    "srr-tv": ([*SRR, "tv", "--iterations", "5"], (64, 112, 160)),
    "irem-grid": (FAST, (64, 96, 128)),
    "irem-paper": (PAPER, (32, 48, 64)),
}
MB = 2**20


def make_inputs(folder: Path, n: int) -> None:
    """Write the phantom (``hr.nii.gz``, HR grid) and its three k = 4 stacks into ``folder``."""
    from irem.acquisition.simulate import simulate_stacks
    from irem.data.phantom import shepp_logan
    from irem.volume import save_volume

    hr = shepp_logan((n, n, n))
    save_volume(folder / "hr.nii.gz", hr.data, hr.affine)
    for s in simulate_stacks(hr, 4):
        save_volume(folder / f"{s.name}.nii.gz", s.data, s.affine)


def measure(command: list[str], stacks: list[str], gt: str, out: Path) -> dict[str, float]:
    """Run one command in a fresh process: its peak RSS, wall time and the sidecar's estimate."""
    argv = [sys.executable, "-m", "irem.cli", "-q", *command, *stacks, "-o", str(out)]
    argv += ["--reference", gt, "--no-register"]
    if command[0] == "reconstruct" or "srr" in command:
        argv += ["--threads", "1", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{err[-2000:]}")
    sidecar = out.with_name(out.name.replace(".nii.gz", ".json"))
    mem = json.loads(sidecar.read_text(encoding="utf-8"))["memory"]
    return {"peak_mb": usage.ru_maxrss * 1024 / MB, "estimate_mb": mem["estimate_bytes"] / MB,
            "baseline_mb": mem["baseline_bytes"] / MB,
            "working_estimate_mb": mem["working_bytes"] / MB, "seconds": seconds}  # fmt: skip


def run() -> list[dict[str, object]]:
    """Measure every method at its grid sizes."""
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for method, (command, sizes) in METHODS.items():
            for n in sizes:
                folder = Path(tmp) / f"n{n}"
                if not folder.exists():
                    folder.mkdir()
                    make_inputs(folder, n)
                stacks = sorted(str(p) for p in folder.glob("*.nii.gz") if p.name != "hr.nii.gz")
                r = measure(command, stacks, str(folder / "hr.nii.gz"), folder / "out.nii.gz")
                working = r["peak_mb"] - r["baseline_mb"]
                row = {
                    "method": method, "grid": f"{n}^3", "grid_voxels": n**3,
                    **{k: round(v, 1) for k, v in r.items()},
                    "measured_working_mb": round(working, 1),
                    "estimate_over_peak": round(r["estimate_mb"] / r["peak_mb"], 3),
                    "working_estimate_over_measured": round(
                        r["working_estimate_mb"] / max(working, 1e-9), 3),
                }  # fmt: skip
                print(row, flush=True)
                rows.append(row)
    return rows


def write(rows: list[dict[str, Any]], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out_dir / "memory_estimate.csv", index=False)
    worst = max(abs(r["estimate_over_peak"] - 1) for r in rows)
    lines = [
        "# Peak memory: estimate against measurement",
        "",
        "Made by `python benchmarks/memory_estimate.py` (one thread, fresh process per run, HR grid,",
        "no registration; Shepp-Logan phantom, three k = 4 box-profile stacks). Peak = `ru_maxrss`;",
        "estimate = the sidecar's `memory` record, checked before any work: resident memory at the",
        "check (interpreter, libraries, stacks) + the method's arrays (`irem/training/memory.py`). Training is",
        "cut short (`--steps`), which does not change the INRs' arrays.",
        "",
        "| method | grid | peak (MB) | estimate (MB) | estimate / peak | at check (MB) "
        "| working: measured / estimated (MB) | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['grid']} | {r['peak_mb']:.0f} | {r['estimate_mb']:.0f} "
            f"| {r['estimate_over_peak']:.2f} | {r['baseline_mb']:.0f} "
            f"| {r['measured_working_mb']:.0f} / {r['working_estimate_mb']:.0f} | {r['seconds']:.0f} |"
        )
    lines += ["", f"Largest deviation of the estimate from the peak: {100 * worst:.0f}%.", ""]
    (out_dir / "memory_estimate.md").write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    write(run(), p.parse_args().out)


if __name__ == "__main__":
    main()
