"""Method labels come from the config's `label:` (else the name), and say what differs from the paper."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from irem.cli import build_parser
from irem.report.labels import fill, method_label
from irem.training.config import load_config, parse_set

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "config" / "config.yaml"
#: Every committed config; an overlay is merged over config/config.yaml (its methods come from it).
CONFIGS = [DEFAULT, ROOT / "config" / "paper.yaml", ROOT / "config" / "test.yaml",
           *sorted((ROOT / "config" / "overlays").glob("*.yaml"))]  # fmt: skip
BASE = "irem reconstruct {stacks} -o {output} {geometry} --seed {seed} --device {device}"
PAPER_EPOCHS = load_config(None).train.epochs
#: Budget options of ``irem reconstruct`` and how a label states their value.
BUDGETS = {"steps": "{:g} steps", "steps_per_mvoxel": "{:g} steps per M voxels",
           "time_budget": "{:g} s", "time_per_mvoxel": "{:g} s"}  # fmt: skip


def _args(command: str) -> argparse.Namespace | None:
    """The parsed options of an ``irem`` command, or ``None`` for any other program."""
    words = shlex.split(fill(command, device="cpu"))
    return build_parser().parse_args(words[1:]) if words[:1] == ["irem"] else None


def _states(label: str, value: object) -> bool:
    """Whether ``label`` states ``value``: a number as any number in it (1e-3 = 0.001)."""
    try:
        number = float(str(value))
    except ValueError:
        return str(value) in label
    return number in {float(x) for x in re.findall(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?", label)}


def label_problems(label: str, command: str, hr_scan: bool = False) -> list[str]:
    """What ``label`` fails to say about its ``irem`` command (nothing: ``[]``): plain "IREM"
    only with the paper's settings, every budget and ``--set`` value, "grid INR" for ``--config
    fast``, an SRR baseline's regulariser and (unless it denoises the HR scan) its PSF."""
    args = _args(command)
    if args is None or args.command not in ("reconstruct", "baseline"):
        return []
    if args.command == "baseline":
        wanted = ["B-spline"] if args.method == "bspline" else [args.regulariser.upper()]
        if args.method == "srr" and not hr_scan:
            wanted.append(f"{args.psf} PSF")
        return [w for w in wanted if w not in label]
    budget = [f.format(getattr(args, k)) for k, f in BUDGETS.items() if getattr(args, k)]
    if args.epochs not in (None, PAPER_EPOCHS):
        budget.append(f"{args.epochs} epochs")
    sets = parse_set(args.set)
    problems = [b for b in budget if b not in label]
    problems += [f"--set {k}={v}" for k, v in sets.items() if not _states(label, v)]
    if args.config == "fast" and not label.startswith("grid INR"):
        problems.append("grid INR")
    if label == "IREM" and (budget or sets or args.config not in (None, "paper")):
        problems.append("not the paper's settings")
    return problems


def _config(path: Path) -> dict[str, Any]:
    """A committed config as the workflow sees it: merged over config/config.yaml."""

    def merged(base: Any, over: Any) -> Any:
        if not (isinstance(base, dict) and isinstance(over, dict)):
            return over
        return {**base, **{k: merged(base.get(k), v) for k, v in over.items()}}

    load = yaml.safe_load
    return merged(load(DEFAULT.read_text(encoding="utf-8")), load(path.read_text(encoding="utf-8")))


def test_method_label_is_the_label_or_the_name() -> None:
    assert method_label({"name": "m", "command": BASE, "label": "mine"}) == "mine"
    assert method_label({"name": "m", "command": BASE}) == "m"
    assert method_label({"name": "m", "command": BASE + " --steps 100", "label": None}) == "m"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_committed_labels_say_what_differs_from_the_paper(path: Path) -> None:
    for m in _config(path)["methods"]:
        assert m.get("label"), f"{path.name}: method {m['name']} has no label"
        problems = label_problems(m["label"], m["command"], m.get("hr_scan", False))
        assert not problems, f"{path.name}: {m['name']} {m['label']!r} does not say {problems}"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_convergence_labels_state_the_learning_rate_and_epochs(path: Path) -> None:
    c = _config(path)["convergence"]
    runs = [(v["label"], v["options"]) for v in c["variants"]]
    runs += [(c["sweep"]["label"], c["sweep"]["options"])] if c["sweep"]["parameters"] else []
    for label, options in runs:
        assert label, f"{path.name}: a convergence run has no label"
        args = _args(f"{c['command']} {options}")
        assert args is not None
        for value in (parse_set(args.set).get("train.lr"), args.epochs):
            assert value is None or _states(label, value), f"{label!r} lacks {value}"


@pytest.mark.parametrize(
    ("label", "extra"),
    [
        ("IREM", " --steps 100"),
        ("IREM", " --set train.lr=1e-3"),
        ("IREM", " --config fast"),
        ("IREM (paper network, 100 steps)", " --steps 100 --set train.lr=1e-3"),
        ("IREM (paper network, 10 steps)", " --steps 100"),
        ("IREM (paper network, 6 epochs)", " --epochs 60"),
        ("IREM (2000 steps per M voxels)", " --config fast --steps-per-mvoxel 2000"),
    ],
)
def test_the_checker_rejects_labels_that_hide_a_difference(label: str, extra: str) -> None:
    assert label_problems(label, BASE + extra)


def test_the_checker_accepts_honest_labels() -> None:
    assert not label_problems("IREM", BASE + " --config paper --epochs 2000")
    assert not label_problems("IREM (paper network, 100 steps, lr 0.001)",
                              BASE + " --steps 100 --set train.lr=1e-3")  # fmt: skip
    srr = "irem baseline srr {stacks} -o {output} --psf box --regulariser tv"
    assert not label_problems("SRR-TV (box PSF)", srr)
    assert label_problems("SRR-TV", srr) == ["box PSF"]
    assert not label_problems("HR scan + TV", srr, hr_scan=True)
    assert label_problems("SRR", "irem baseline bspline {stacks} -o {output}") == ["B-spline"]
    assert not label_problems("anything", "python x.py {stacks} -o {output}")


def test_bad_placeholders_are_refused() -> None:
    with pytest.raises(ValueError, match="placeholder"):
        fill("run {nonsense}")
