"""Does bf16 autocast keep the paper network's reconstruction quality? fp32 against bf16 at equal steps.

On the cohort's tuning subjects (01 T1w-like, 02 T2w-like: never scored by the workflow), made as
the workflow makes them (``config/config.yaml``: cohort seed, crop and its position, box profile,
SNR, per-subject noise seed), each k's three stacks are reconstructed by the paper's network
(``irem reconstruct``: the workflow's ``irem`` learning rate, 1e-3, but a fixed number of epochs
instead of its time budget, so that both precisions make the same steps) with
``--precision fp32`` and ``--precision bf16``: same seeds, one thread, known geometry. Scored with
``irem metrics --mask`` (brain PSNR). Training samples/s = steps x batch / training seconds (from
the sidecars; on a shared machine the benchmark irem_throughput.py is the speed reference).

At a constant rate of 1e-3 the brain PSNR of one run moves by up to ~1 dB from one 10-step probe
to the next after 150 steps, so a final-step comparison could not resolve 0.2 dB: the runs anneal
the rate over their steps (``train.lr_schedule=budget``: 1e-3 down to lr_final x 1e-3 = 1e-4)
and every case is run with two seeds (initialisation, Fourier matrix, sample order); fp32 seed 1
against seed 0 gives the scale of run-to-run differences.
-> results/benchmarks/bf16_quality.{csv,md}

  python benchmarks/bf16_quality.py                  # 2 subjects x k 4, 8 x 2 seeds: ~20-30 minutes
  python benchmarks/bf16_quality.py --epochs 1 --subjects 1 --ks 8 --seeds 0 --no-write  # smoke test
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

import pandas as pd
from _workflow import OUT, cpu_description, irem, run_logged, workflow_config

from irem import layout as L
from irem.data.cohort import CONTRASTS
from irem.evaluation.stats import t_interval

PRECISIONS = ("fp32", "bf16")


def make_subject(index: int, work: Path, ks: list[int]) -> dict[int, dict[str, Any]]:
    """Ground truth, brain mask and each k's stacks of cohort subject ``index``, as the workflow's
    first (cohort) dataset makes them."""
    config = workflow_config()
    entry = next(d for d in config["datasets"] if d.get("cohort"))
    subject, contrast = f"{index + 1:02d}", CONTRASTS[index % len(CONTRASTS)]
    gt, wm = work / f"sub-{subject}_{contrast}.nii.gz", work / f"sub-{subject}_wm.nii.gz"
    mask = work / f"sub-{subject}_mask.nii.gz"
    crop = []
    if entry.get("crop"):
        crop = ["--crop", *map(str, entry["crop"])]
        crop += ["--crop-position", *map(str, entry.get("crop_position", [0.5, 0.5, 0.5]))]
    run_logged(irem("dataset", "mni152_cohort", "--index", str(index), "--seed",
                    str(entry["cohort"].get("seed", 0)), "--contrast", contrast, *crop,
                    "-o", str(gt), "--wm-mask-out", str(wm)), work / f"gt-{subject}.log")
    run_logged(irem("dataset", str(gt), "--mask-out", str(mask), "--mask-threshold", "0"),
               work / f"mask-{subject}.log")
    sim = config["simulation"]
    noise = ["--snr", str(sim["snr"]), "--wm-mask", str(wm)] if sim.get("snr") else []
    noise += ["--subject-seed", str(zlib.crc32(f"{entry['name']}/{subject}".encode()))]
    cases = {}
    for k in ks:
        out = work / f"k{k}" / f"sub-{subject}"
        run_logged(irem("simulate", str(gt), "--k", str(k), "--seed", "0", "--profile",
                        sim["profile"], *noise, "--out-dir", str(out)),
                   work / f"sim-{subject}-k{k}.log")
        stacks = [str(out / f"acq-{o}.nii.gz") for o in L.ORIENTATIONS]
        cases[k] = {"subject": subject, "contrast": contrast, "gt": gt, "mask": mask,
                    "stacks": stacks, "dir": out}
    return cases


def reconstruct(
    case: dict[str, Any], precision: str, epochs: int, lr: float, seed: int = 0
) -> dict[str, Any]:
    """Train the paper network at ``precision`` and score it: brain PSNR, steps, seconds, rate."""
    name = f"{precision}_seed-{seed}"
    out = case["dir"] / f"rec-irem_{name}.nii.gz"
    run_logged(irem("reconstruct", *case["stacks"], "-o", str(out), "--no-register",
                    "--fixed-index", "0", "--reference", str(case["gt"]), "--seed", str(seed),
                    "--device", "cpu", "--threads", "1", "--set", f"train.lr={lr}",
                    "--set", "train.lr_schedule=budget",
                    "--epochs", str(epochs), "--precision", precision, "--quiet"),
               case["dir"] / f"rec-{name}.log")
    scores = case["dir"] / f"metrics-{name}.json"
    run_logged(irem("metrics", str(out), str(case["gt"]), "--mask", str(case["mask"]),
                    "-o", str(scores)), case["dir"] / f"metrics-{name}.log")
    side = json.loads(out.with_name(out.name.replace(".nii.gz", ".json")).read_text(encoding="utf-8"))
    metrics = json.loads(scores.read_text(encoding="utf-8"))
    batch = side["config"]["train"]["batch_size"]
    used = side["precision"]
    return {
        "psnr_mask": metrics["psnr_mask"],
        "psnr": metrics["psnr"],
        "steps": side["steps"],
        "seconds": side["training_seconds"],
        "samples/s": side["steps"] * batch / side["training_seconds"],
        "final_loss": side["final_loss"],
        "used": used["used"],
        "cpu_flags": " ".join(used["cpu_flags"]) or "-",
    }


def table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per subject, k and seed: each precision's numbers and bf16 - fp32 brain PSNR."""
    df = pd.DataFrame(rows)
    wide = df.pivot(index=["subject", "contrast", "k", "seed"], columns="precision")
    out = pd.DataFrame(index=wide.index)
    for p in PRECISIONS:
        out[f"{p} brain PSNR"] = wide["psnr_mask", p]
    out["bf16 - fp32 (dB)"] = out["bf16 brain PSNR"] - out["fp32 brain PSNR"]
    for p in PRECISIONS:
        out[f"{p} PSNR"] = wide["psnr", p]
    for p in PRECISIONS:
        out[f"{p} steps"] = wide["steps", p]
        out[f"{p} s"] = wide["seconds", p]
        out[f"{p} samples/s"] = wide["samples/s", p]
    out["bf16 / fp32 samples/s"] = out["bf16 samples/s"] / out["fp32 samples/s"]
    out["bf16 used"] = wide["used", "bf16"]
    return out.reset_index()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--subjects", type=int, default=2, help="tuning subjects 01.. (at most 3)")
    ap.add_argument("--ks", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--epochs", type=int, default=3, help="epochs of every run (equal steps)")
    ap.add_argument("--lr", type=float, default=1e-3, help="the workflow's irem learning rate")
    ap.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    args = ap.parse_args()
    tuning = next(d for d in workflow_config()["datasets"] if d.get("cohort"))["cohort"]["tuning"]
    if not 1 <= args.subjects <= tuning:
        raise SystemExit(f"error: --subjects must be 1..{tuning} (the tuning split)")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = []
        for index in range(args.subjects):
            for k, case in make_subject(index, work, args.ks).items():
                for seed, precision in itertools.product(args.seeds, PRECISIONS):
                    r = reconstruct(case, precision, args.epochs, args.lr, seed)
                    rows.append({"subject": case["subject"], "contrast": case["contrast"],
                                 "k": k, "seed": seed, "precision": precision, **r})
                    print(f"sub-{case['subject']} k={k} seed {seed} {precision}: brain PSNR "
                          f"{r['psnr_mask']:.3f} dB, {r['steps']} steps, {r['seconds']:.0f} s, "
                          f"{r['samples/s']:.0f} samples/s", flush=True)
    df = table(rows)
    diff = df["bf16 - fp32 (dB)"]
    low, high = t_interval(diff.to_numpy())
    lines = [
        "# bf16 autocast against fp32: the paper network's brain PSNR at equal steps",
        "",
        f"CPU: {cpu_description()}. Cohort tuning subjects, the workflow's crop, box profile and "
        f"SNR; `irem reconstruct` (paper network, `--set train.lr={args.lr:g} --set "
        f"train.lr_schedule=budget --epochs {args.epochs}`, seeds {args.seeds}, one thread) with "
        "`--precision fp32` and `--precision bf16`; brain PSNR from `irem metrics --mask` (dB).",
        "",
        df.round(3).to_markdown(index=False),
        "",
        f"bf16 - fp32 brain PSNR: mean {diff.mean():+.3f} dB (paired t 95% CI "
        f"[{low:+.3f}, {high:+.3f}]), largest |difference| "
        f"{diff.abs().max():.3f} dB over {len(df)} cases; bf16 / fp32 training samples/s: "
        f"median {df['bf16 / fp32 samples/s'].median():.2f}x.",
    ]
    fp32 = df.set_index(["subject", "k", "seed"])["fp32 brain PSNR"].unstack("seed")
    if fp32.shape[1] > 1:  # fp32 against fp32 with another seed: the run-to-run scale
        seeds = (fp32.iloc[:, 1:].sub(fp32.iloc[:, 0], axis=0)).stack()
        lines[-1] += (
            f" fp32 seed {fp32.columns[1]} - seed {fp32.columns[0]} (run-to-run scale): mean "
            f"{seeds.mean():+.3f} dB, largest |difference| {seeds.abs().max():.3f} dB."
        )
    print("\n".join(lines))
    if not args.no_write:
        OUT.mkdir(parents=True, exist_ok=True)
        df.to_csv(OUT / "bf16_quality.csv", index=False)
        (OUT / "bf16_quality.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
