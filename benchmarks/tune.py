"""Choose the methods' free parameters on the cohort's tuning subjects only.

Protocol (the README's "Tuning"): the tuning subjects are the first ``cohort.tuning`` subjects of
the first cohort dataset of a workflow config (``config/config.yaml``); the evaluation subjects are
never generated here. Each subject is simulated as the workflow does (same crop, SNR, profile,
seed 0, every k of the config; without the workflow's per-subject noise seed, so the noise draw
differs), each candidate value is run through the method's own command
from the config (the same ``irem`` code path as the workflow), and the value with the highest mean
brain PSNR over tuning subjects and k is chosen. Writes ``results/tuning/<parameter>.csv`` (every
run) and ``results/tuning/chosen.csv`` + ``README.md`` (the choices); the config's commands must
carry the chosen values (``tests/test_tuning.py`` checks it).

Settings that act on any volume but whose effect changes with its size (:data:`WHOLE_CROP_TOO`)
are tuned on both the tuning crops and the tuning subjects generated over the whole 152x184x160
brain crop (4.5 M voxels; subject 01 at the config's first k, 02 at its last), one mean over all
cases. Sweeps whose options lost and left the code keep their CSVs and their rows of
``chosen.csv`` as the record.

    python benchmarks/tune.py                      # every sweep, 2 runs side by side
    python benchmarks/tune.py --only srr_alpha     # one sweep
    python benchmarks/tune.py --only base_head --resume   # only the runs its CSV lacks
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _workflow import cohort_subject_cases, irem, method_shell, run_logged  # noqa: E402

#: What is tuned, in order: parameter name -> (methods it applies to, option, candidate values);
#: an empty option: each candidate is a whole set of options. Sweeps of the same method run one
#: after the other, each with the values chosen before it (coordinate-wise search).
SWEEPS: dict[str, tuple[tuple[str, ...], str, tuple[float | str, ...]]] = {
    "srr_alpha": (("srrtk1", "srrtv"), "--alpha", (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)),
    "grid_prior_weight": (("iremfast",), "--set train.grid_smoothness=", (1.0, 3.0, 10.0)),
    "grid_prior_delta": (("iremfast",), "--set train.grid_prior_delta=", (0.003, 0.01, 0.03)),
    # 0: centres (train.profile_points 1); 1 and 2: one point per 1 or 2 mm of slice thickness
    "profile_spacing": (("iremfast",), "--set train.profile_spacing_mm=", (0.0, 1.0, 2.0)),
    # The start image and the grid prior's weight together (the prior then regularises what the
    # network adds to the start image, not the whole image): candidates are sets of --set options.
    "start_image": (("iremfast",), "", (
        "--set train.base=none --set train.grid_smoothness=3",
        *(f"--set train.base=srr_tv --set train.grid_smoothness={w:g}" for w in (0.03, 0.1, 0.3, 1)),
    )),
    # How the network added to the start image begins (zeroed output layer, or random with a
    # cancelling bias), on the tuning crops and the whole-crop volumes (WHOLE_CROP_TOO)
    "base_head": (("iremfast",), "", ("--set train.base_head=zero", "--set train.base_head=cancel")),
}
#: Sweeps run on the tuning crops and on the whole-crop volumes (settings that act on any volume
#: but whose effect changes with its size).
WHOLE_CROP_TOO: tuple[str, ...] = ("base_head",)


def cohort_entry(config: dict) -> dict:
    for entry in config["datasets"]:
        if entry.get("cohort"):
            return entry
    raise SystemExit("error: the config has no cohort dataset")


def prepare(config: dict, work: Path) -> list[dict]:
    """Ground truth, masks and stacks of every tuning subject and k (as the workflow makes them,
    without its per-subject noise seed)."""
    entry = cohort_entry(config)
    crop = [int(c) for c in entry["crop"]] if entry.get("crop") else None
    return [case | {"volume": "crop"} for index in range(entry["cohort"].get("tuning", 2))
            for case in cohort_subject_cases(config, index, work, crop)]


def prepare_whole(config: dict, work: Path) -> list[dict]:
    """One whole-crop case per tuning subject: subject 01 at the first k, 02 at the last, ..."""
    entry = cohort_entry(config)
    (work / "whole").mkdir(exist_ok=True)
    cases = []
    for index in range(entry["cohort"].get("tuning", 2)):
        made = cohort_subject_cases(config, index, work / "whole", None)
        cases.append((made[0] if index % 2 == 0 else made[-1]) | {"volume": "whole"})
    return cases


def with_value(command: str, option: str, value: float | str) -> str:
    """The command with ``option`` set to ``value`` (replacing any value it had); an empty
    ``option``: ``value`` is a set of options, appended (later ``--set`` options win)."""
    if not option:
        return f"{command} {value}"
    if option.endswith("="):
        return f"{command} {option}{value:g}"
    stripped = re.sub(rf"\s{re.escape(option)}\s+\S+", "", command)
    return f"{stripped} {option} {value:g}"


def score(case: dict, method: dict, option: str, value: float | str, work: Path) -> dict:
    """Run one candidate on one case; its brain PSNR/SSIM."""
    what = re.sub(r"[^\w.]+", "_", f"{option.strip('-=').split('.')[-1]}-{value}").strip("_")
    tag = f"{method['name']}-{what}-{case['subject']}-k{case['k']}-{case['volume']}"
    out = work / f"{tag}.nii.gz"
    command = method["command"]
    for prev_option, prev_value in method.get("chosen", []):
        command = with_value(command, prev_option, prev_value)
    cmd = method_shell(with_value(command, option, value), case["stacks"], out, case["gt"],
                       work / f".{tag}.ckpt")
    run_logged(cmd, work / f"{tag}.log")
    met = work / f"{tag}_metrics.json"
    run_logged(irem("metrics", str(out), str(case["gt"]), "--mask", str(case["mask"]), "-o", str(met)),
        work / f"{tag}-metrics.log")
    m = json.loads(met.read_text())
    return {"method": method["name"], "subject": case["subject"], "contrast": case["contrast"],
            "k": case["k"], "volume": case["volume"], "value": value,
            "psnr_mask": m["psnr_mask"], "ssim_mask": m["ssim_mask"]}


def run_key(method: str, subject: object, k: object, volume: str, value: object) -> tuple:
    """What names a run (a candidate on a case), the same from a task and from a CSV row."""
    try:
        value = f"{float(value):g}"
    except ValueError:
        value = str(value)
    return method, str(subject), int(k), volume, value


def sweep(name: str, config: dict, cases: list[dict], work: Path, jobs: int,
          done: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every candidate of sweep ``name`` on every case; the runs already in ``done`` (rows of an
    earlier run of the sweep, for ``--resume``) are kept instead of run again."""
    names, option, values = SWEEPS[name]
    methods = [m for m in config["methods"] if m["name"] in names]
    if not methods:
        raise SystemExit(f"error: no method of {names} in the config")
    tasks = {run_key(m["name"], c["subject"], c["k"], c["volume"], v): (c, m, v)
             for m in methods for v in values for c in cases}
    kept = pd.DataFrame()
    if done is not None and len(done):
        keys = [run_key(*r) for r in done[["method", "subject", "k", "volume", "value"]].itertuples(
            index=False)]
        kept = done[[key in tasks for key in keys]]
        for key in keys:
            tasks.pop(key, None)
    with ThreadPoolExecutor(jobs) as pool:
        rows = list(pool.map(lambda t: score(t[0], t[1], option, t[2], work), tasks.values()))
    return pd.concat([kept, pd.DataFrame(rows)], ignore_index=True)


def choose(df: pd.DataFrame) -> pd.DataFrame:
    """Per method, the value of highest mean brain PSNR over tuning subjects and k."""
    means = df.groupby(["method", "value"], as_index=False, sort=False)["psnr_mask"].mean()
    best = means.loc[means.groupby("method")["psnr_mask"].idxmax()]
    return best.rename(columns={"psnr_mask": "mean_psnr_mask"}).reset_index(drop=True)


def chosen_table(out: Path) -> pd.DataFrame:
    """Every sweep's choice from its CSV, in the order of the earlier ``chosen.csv``; the rows of
    sweeps no longer run (their options left the code) stay as they were, as the record."""
    fresh = {name: choose(pd.read_csv(out / f"{name}.csv")).assign(parameter=name)
             for name in SWEEPS if (out / f"{name}.csv").exists()}
    old = out / "chosen.csv"
    earlier = pd.read_csv(old) if old.exists() else pd.DataFrame({"parameter": []})
    parts = [fresh.pop(name, rows) for name, rows in earlier.groupby("parameter", sort=False)]
    columns = ["parameter", "method", "value", "mean_psnr_mask", "ci_low", "ci_high"]
    return pd.concat([*parts, *fresh.values()], ignore_index=True).reindex(columns=columns)


def write_readme(out: Path, chosen: pd.DataFrame, command: str, n_cases: int) -> None:
    lines = [
        "# Tuning results",
        "",
        f"Made by `{command}` (the latest run; each sweep's CSV holds its own runs, after "
        "`--resume` also the runs it kept from the sweep's earlier run) on "
        f"{dt.date.today().isoformat()}: every candidate value run on the cohort's tuning subjects "
        f"only ({n_cases} subject x k cases), chosen by the highest mean brain PSNR. The configs' "
        "method commands carry the chosen values (tests/test_tuning.py).",
        "",
        "| parameter | method | chosen | mean brain PSNR (dB) | challenger - preferred [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for _, r in chosen.iterrows():
        value = f"`{r['value']}`" if isinstance(r["value"], str) else f"{r['value']:g}"
        ci = "" if pd.isna(r.get("ci_low")) else f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
        lines.append(f"| {r['parameter']} | {r['method']} | {value} | "
                     f"{r['mean_psnr_mask']:.2f} | {ci} |")
    lines += ["", "Sweeps run in this order, each from the choices before it; a later choice of a "
              "setting replaces an earlier one. `start_image` chooses the start image together "
              "with the grid prior's weight (its earlier choice was made without a start "
              "image); all its candidates hold 5% of the LR voxels out, as `irem/configs/fast.yaml` "
              "does, the one without a start image included. `base_head` (how the network added "
              "to the start image begins: its output layer zeroed, or random with a bias "
              "cancelling its start output) runs on the tuning crops and on the tuning subjects "
              "generated over the whole 152x184x160 brain crop (subject 01 at k = 4, 02 at k = 8; "
              "six cases, one mean). The rows of sweeps no longer run (`image_prior`, "
              "`batch_chunk`, `large_volume`, `large_levels`, `large_update`: the options they "
              "rejected left the code) are kept from their last run; results/benchmarks/README.md "
              "tells how `large_update` chose the hashed update of large grid levels (the last "
              "column)."]
    lines += ["", "Every run: the `<parameter>.csv` files beside this one. The number of optimiser "
              "steps of Fig. 3 was chosen on a tuning subject as well: "
              "[`ablation_steps.md`](ablation_steps.md)."]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--only", nargs="*", choices=sorted(SWEEPS), default=sorted(SWEEPS))
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side (1 thread each)")
    parser.add_argument("--out", default="results/tuning")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in a sweep's CSV, run only the missing ones")
    args = parser.parse_args(argv)
    config = yaml.safe_load((ROOT / args.config).read_text())
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="irem-tune-") as tmp:
        work = Path(tmp)
        names = [n for n in SWEEPS if n in args.only]
        cases = prepare(config, work)
        whole = prepare_whole(config, work) if set(names) & set(WHOLE_CROP_TOO) else []
        for name in names:
            runs_on = cases + whole if name in WHOLE_CROP_TOO else cases
            csv = out / f"{name}.csv"
            done = pd.read_csv(csv, dtype={"subject": str}) if args.resume and csv.exists() else None
            df = sweep(name, config, runs_on, work, args.jobs, done)
            df.to_csv(csv, index=False, float_format="%.4f")
            print(df.groupby(["method", "value"])["psnr_mask"].mean().to_string(), flush=True)
            option = SWEEPS[name][1]
            for _, r in choose(df).iterrows():  # later sweeps of a method start from this choice
                entry = next(m for m in config["methods"] if m["name"] == r["method"])
                entry.setdefault("chosen", []).append((option, r["value"]))
    table = chosen_table(out)
    table.to_csv(out / "chosen.csv", index=False, float_format="%.4f")
    tuning = cohort_entry(config)["cohort"].get("tuning", 2)
    write_readme(out, table, " ".join(["python benchmarks/tune.py", *(argv or sys.argv[1:])]),
                 tuning * len(config["ks"]))
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
