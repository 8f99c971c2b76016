"""Training-step cost of the fast grid INR against the target volume's size: dense, sparse and
hashed grid updates, with independent or local batches.

For each target size (millions of HR voxels; HR grids in the proportions of a 144x176x144 head at
1 mm) a smooth random volume is cut into three k-fold box-profile stacks (``irem.simulate``), and
a fresh process per (size, variant) runs :meth:`irem.train.Trainer.step` on the trainer's own
batches (:meth:`irem.train.TrainingData.order`: batch of LR voxels with slice-profile points and the
start image read at each, MSE, backward, grid prior, optimiser step; the held-out checks are not
timed) with the fast configuration (``irem/configs/fast.yaml`` with the variant's settings,
:data:`VARIANTS`; the start image is zeros, not SRR-TV, so that SRR's memory stays out of the
peak) on one thread, for ``--seconds`` after ``--warmup`` steps. Each process reports steps/s and
its peak resident memory (``ru_maxrss``) once the data are built and after training. Each of
``--repeats`` rounds measures every size, the variants back to back (in reversed order every other
round), so that load from other users of the CPU hits all variants and sizes alike; compare them
by ratios.

  python benchmarks/inr_step_cost.py [--sizes 0.3 0.6 1.2 2.4 3.6 5.0] [--repeats 3]
      [--seconds 5] [--k 4]
  -> results/benchmarks/inr_step_cost.{csv,md,png}
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _workflow import cpu_description
from scipy import ndimage

from irem.config import load_config
from irem.errors import InputError
from irem.grid import Grid
from irem.simulate import simulate_stacks
from irem.train import Trainer, inputs_to_unit
from irem.volume import Stack, Volume

OUT = Path("results/benchmarks")
HEAD = np.array([144.0, 176.0, 144.0])  # proportions of the HR grid
#: What is compared: the grid update, and batches of independent LR voxels or of compact runs of
#: them (``train.batch_chunk``).
VARIANTS: dict[str, dict[str, object]] = {
    "dense": {"model.grid_update": "dense", "train.batch_chunk": 0},
    "sparse": {"model.grid_update": "sparse", "train.batch_chunk": 0},
    "local": {"model.grid_update": "sparse", "train.batch_chunk": 128},
    "hashed": {"model.grid_update": "hashed", "train.batch_chunk": 0},
}


def hr_shape(mvoxels: float) -> tuple[int, int, int]:
    """An HR grid of about ``mvoxels`` million voxels in the proportions of ``HEAD``."""
    scale = (mvoxels * 1e6 / HEAD.prod()) ** (1 / 3)
    return tuple(int(max(8, round(s * scale))) for s in HEAD)  # type: ignore[return-value]


def synthetic_stacks(shape: tuple[int, int, int], k: int, seed: int) -> list[Stack]:
    """Three k-fold box-profile stacks of a smooth random volume (1 mm voxels): noise on a grid 8
    times coarser, interpolated linearly."""
    rng = np.random.default_rng(seed)
    coarse = rng.random(tuple(max(2, s // 8) for s in shape)).astype(np.float32)
    data = ndimage.zoom(coarse, [s / c for s, c in zip(shape, coarse.shape, strict=True)], order=1)
    return simulate_stacks(Volume(data=data, affine=np.eye(4)), k)


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def step_rate(trainer: Trainer, seconds: float, warmup: int) -> tuple[int, float]:
    """Steps per second of the trainer's own step (data term, backward, grid prior, optimiser
    update) on the batches of its epochs' orders: (steps, seconds)."""
    gen = torch.Generator().manual_seed(1)
    data = trainer.data
    batches: list[torch.Tensor] = []

    def step() -> None:
        if not batches:
            order = data.order(gen)
            batches.extend(order[i * data.batch : (i + 1) * data.batch]
                           for i in range(data.steps_per_epoch))
        trainer.step(batches.pop(0))
        trainer.state.steps += 1

    for _ in range(warmup):
        step()
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        steps += 1
    return steps, time.perf_counter() - t0


def worker(mvoxels: float, variant: str, k: int, seconds: float, warmup: int) -> dict:
    """One measurement in this (fresh) process: steps/s and peak RSS."""
    torch.set_num_threads(1)
    cfg = load_config("fast", {**VARIANTS[variant], "train.base": "none"})
    shape = hr_shape(mvoxels)
    stacks = synthetic_stacks(shape, k, seed=0)
    trainer = Trainer(stacks, cfg, seed=0)
    # A start image on the HR grid the stacks were cut from: zeros, which cost a step what
    # fast.yaml's SRR-TV image costs, without SRR's memory in the peak.
    grid = Grid(shape, np.eye(4))
    unit = torch.from_numpy(inputs_to_unit(grid, trainer.norm))
    trainer.model.set_base(torch.zeros(shape[::-1]), unit)
    rss_data = _max_rss_mb()  # data and model built, nothing trained
    model, t = trainer.model, cfg.train
    steps, secs = step_rate(trainer, seconds, warmup)
    return {
        "target_mvoxels": mvoxels,
        "hr_shape": "x".join(map(str, shape)),
        "hr_voxels": int(np.prod(shape)),
        "grid_values": sum(g.numel() for g in model.grids),
        "sparse_levels": sum(model.sparse_levels),
        "hashed_levels": sum(model.hashed_levels),
        "variant": variant,
        "batch_size": t.batch_size,
        "batch_chunk": t.batch_chunk,
        "steps": steps,
        "seconds": secs,
        "steps_per_s": steps / secs,
        "rss_data_mb": rss_data,
        "rss_peak_mb": _max_rss_mb(),
    }


def run_all(args: argparse.Namespace) -> pd.DataFrame:
    """All measurements, each in a fresh single-threaded process: rounds over all sizes, the
    variants back to back per size (in alternating order)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    rows = []
    for rep in range(args.repeats):  # every size in every round: load drift hits all sizes
        for size in args.sizes:
            for variant in list(VARIANTS) if rep % 2 == 0 else list(VARIANTS)[::-1]:
                cmd = [sys.executable, __file__, "--worker", str(size), variant]
                cmd += ["--k", str(args.k)]
                cmd += ["--seconds", str(args.seconds), "--warmup", str(args.warmup)]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    raise RuntimeError(f"worker {size} {variant} failed:\n{out.stderr[-2000:]}")
                row = json.loads(out.stdout.strip().splitlines()[-1]) | {"repeat": rep}
                print(
                    f"{size:4.1f} M  {variant:6s}  {row['steps_per_s']:6.2f} steps/s  "
                    f"peak RSS {row['rss_peak_mb']:7.0f} MB",
                    flush=True,
                )
                rows.append(row)
    return pd.DataFrame(rows)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Median steps/s and peak RSS per size and variant, and the speed-ups over dense."""
    keys = ["target_mvoxels", "hr_shape", "hr_voxels"]
    runs = runs.assign(train_mb=runs["rss_peak_mb"] - runs["rss_data_mb"])
    med = runs.groupby([*keys, "variant"]).agg(
        steps_per_s=("steps_per_s", "median"),
        best_steps_per_s=("steps_per_s", "max"),
        rss_peak_mb=("rss_peak_mb", "max"),
        train_mb=("train_mb", "max"),
    )
    table = med.unstack("variant")
    table.columns = [f"{v} {q}" for q, v in table.columns]
    table = table.reset_index()
    for v in VARIANTS:
        if v != "dense" and f"{v} steps_per_s" in table:
            table[f"{v} / dense steps/s"] = table[f"{v} steps_per_s"] / table["dense steps_per_s"]
    for variant, column in (("sparse", "sparse_levels"), ("hashed", "hashed_levels")):
        if column in runs and (runs["variant"] == variant).any():
            levels = runs[runs["variant"] == variant].groupby("target_mvoxels")[column].first()
            table[column.replace("_", " ")] = table["target_mvoxels"].map(levels)
    return table


def size_ratios(runs: pd.DataFrame, big: float, small: float) -> dict[str, list[float]]:
    """Per variant, steps/s at ``big`` M voxels over steps/s at ``small`` M voxels in each round
    (the two measured minutes apart, under similar load); empty if a size was not run."""
    steps = runs.pivot_table(
        index="repeat", columns=["variant", "target_mvoxels"], values="steps_per_s"
    )
    return {
        v: list(steps[(v, big)] / steps[(v, small)])
        for v in VARIANTS
        if (v, big) in steps.columns and (v, small) in steps.columns
    }


def write_outputs(runs: pd.DataFrame, table: pd.DataFrame, args: argparse.Namespace) -> None:
    """CSV of every run, Markdown summary with the machine, and the plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    OUT.mkdir(parents=True, exist_ok=True)
    runs.to_csv(OUT / "inr_step_cost.csv", index=False)
    ratios = size_ratios(runs, 3.6, 0.6)
    lines = [
        "# Grid INR training-step cost against volume size: grid updates and batches",
        "",
        f"- command: `{' '.join(['python benchmarks/inr_step_cost.py', *sys.argv[1:]])}`",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- CPU: {cpu_description()}; {os.cpu_count()} cores visible, shared with other users",
        f"- torch {torch.__version__}, 1 thread per measurement, a fresh process each",
        f"- fast.yaml training settings (batch {int(runs['batch_size'].iloc[0])} LR voxels x "
        f"profile points), k = {args.k} box-profile stacks of a smooth random volume, "
        f"{args.seconds:g} s timed after {args.warmup} warm-up steps, {args.repeats} repeat(s), "
        "rounds over all sizes, variants back to back; steps/s: median and best over rounds; "
        "peak RSS: the process's "
        "largest (torch, data and model), train MB: its growth during training",
        "- variants: "
        + "; ".join(f"`{v}`: " + ", ".join(f"{k} {x}" for k, x in o.items())
                    for v, o in VARIANTS.items())
        + " (batch_chunk 0: independent LR voxels; > 0: runs of that many neighbouring ones)",
        "- `sparse levels` / `hashed levels`: grid levels above `dense_max_nodes` (sparse: "
        "sparse gradients, LazyAdam, local prior; hashed: fixed tables of `hash_rows` rows, "
        "fused Adam, the prior on the batch's cells); with none, the variants run the dense "
        "code and their difference is measurement noise (the CPU is shared)",
        "",
        table.to_markdown(index=False, floatfmt=".2f"),
        "",
    ]
    for u, r in ratios.items():
        lines.append(
            f"- {u}: steps/s at 3.6 M voxels / at 0.6 M voxels, per round: "
            f"{', '.join(f'{x:.2f}' for x in r)} (median {np.median(r):.2f})"
        )
    (OUT / "inr_step_cost.md").write_text("\n".join(lines) + "\n")
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for v in VARIANTS:
        if f"{v} steps_per_s" in table:
            a.plot(table["target_mvoxels"], table[f"{v} steps_per_s"], "o-", label=v)
            b.plot(table["target_mvoxels"], table[f"{v} rss_peak_mb"], "o-", label=v)
    a.set(xlabel="target volume (M voxels)", ylabel="training steps/s (1 thread)", ylim=(0, None))
    b.set(xlabel="target volume (M voxels)", ylabel="peak RSS (MB)", ylim=(0, None))
    a.legend()
    fig.tight_layout()
    fig.savefig(OUT / "inr_step_cost.png", dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--sizes",
        type=float,
        nargs="+",
        default=[0.3, 0.6, 1.2, 2.4, 3.6, 5.0],
        help="target volume sizes in millions of HR voxels",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0, help="timed seconds per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--k", type=int, default=4, help="slice thickness factor of the stacks")
    p.add_argument("--worker", nargs=2, metavar=("MVOXELS", "VARIANT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        if args.worker:
            if args.worker[1] not in VARIANTS:
                raise InputError(f"variant must be one of {list(VARIANTS)}")
            row = worker(float(args.worker[0]), args.worker[1], args.k, args.seconds, args.warmup)
            print(json.dumps(row))
            return 0
        if min(args.sizes) <= 0 or args.repeats < 1 or args.seconds <= 0 or args.k < 1:
            raise InputError("--sizes, --repeats, --seconds and --k must be positive")
        runs = run_all(args)
    except (InputError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    table = summarise(runs)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    write_outputs(runs, table, args)
    print(f"wrote {OUT}/inr_step_cost.{{csv,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
