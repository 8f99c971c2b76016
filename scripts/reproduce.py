#!/usr/bin/env python
"""Rerun the workflow in a fresh directory and compare its tables with committed ones.

Budgets are counts (steps, epochs), so a loaded machine gives the same tables, digit for digit.

    python scripts/reproduce.py                                  # default config vs results/tables
    python scripts/reproduce.py --configfile config/test.yaml --against OTHER/results/tables

Exit status 0 when every compared table is equal, 1 otherwise (the differing lines are printed).
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("metrics.md", "scantime.md", "auto_mask.md")


def fresh_copy(root: Path, dest: Path) -> Path:
    """A copy of the files git tracks in ``root`` (as a fresh clone has them, results/ left out)."""
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True, text=True
    ).stdout
    for name in out.split("\0"):
        if name and not name.startswith("results/") and (root / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, dest / name)
    return dest


def compare(new: Path, reference: Path, names: tuple[str, ...] = TABLES) -> list[str]:
    """Unified diffs of the tables ``names`` that differ (a table missing on one side too)."""
    diffs = []
    for name in names:
        a, b = reference / name, new / name
        if a.exists() != b.exists():
            diffs.append(f"{name}: only in {'the new run' if b.exists() else 'the reference'}")
        elif a.exists():
            text = [f.read_text(encoding="utf-8").splitlines() for f in (a, b)]
            label = (f"reference/{name}", f"rerun/{name}")
            diff = difflib.unified_diff(*text, *label, lineterm="", n=0)
            if lines := list(diff):
                diffs.append("\n".join(lines))
    return diffs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configfile", help="a config of config/ (default: config/config.yaml)")
    p.add_argument("--against", type=Path, default=ROOT / "results" / "tables",
                   help="folder of the reference tables (default: the committed ones)")  # fmt: skip
    p.add_argument("--cores", default="all", help="snakemake --cores (default: all)")
    p.add_argument("--workdir", type=Path, help="where to rerun (default: a new temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = p.parse_args(argv)
    if not (args.against / "metrics.md").exists():
        print(f"error: no metrics.md in {args.against}", file=sys.stderr)
        return 2
    work = args.workdir or Path(tempfile.mkdtemp(prefix="irem-reproduce-"))
    fresh_copy(ROOT, work)
    cmd = ["snakemake", "--cores", str(args.cores), "--resources", "gpu=1"]
    if args.configfile:
        cmd += ["--configfile", args.configfile]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        print(done.stdout[-2000:] + done.stderr[-2000:], file=sys.stderr)
        print(f"error: the workflow failed in {work}", file=sys.stderr)
        return 1
    diffs = compare(work / "results" / "tables", args.against)
    print(f"rerun in {work}: {seconds:.0f} s; compared {', '.join(TABLES)} with {args.against}")
    print("\n".join(diffs) if diffs else "equal, digit for digit")
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
