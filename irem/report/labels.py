"""A method's label from its command template (``config/*.yaml``): what an ``irem`` command changes
from the paper (Wu et al. 2021); any other program needs a ``label`` (else its name is used)."""

from __future__ import annotations

import shlex
from typing import Any

from irem.training.config import flatten, load_config, parse_set

#: Dummy values of the command placeholders, enough to parse a command.
PLACEHOLDERS = {
    "stacks": "sag.nii.gz cor.nii.gz ax.nii.gz", "hr": "hr.nii.gz", "output": "out.nii.gz",
    "reference": "ref.nii.gz", "geometry": "", "threads": "1", "device": "cpu", "seed": "0",
    "checkpoint": "ckpt.pt", "snapshots": "snapshots",
}  # fmt: skip

#: Short names of IREM config keys in labels.
_SHORT = {"model.fourier_dim": "2L", "model.sigma": "sigma", "train.lr": "lr",
          "train.batch_size": "batch", "model.width": "width", "model.depth": "depth",
          "model.skips": "skips"}  # fmt: skip
#: Budget options of ``irem reconstruct`` as a label shows them (``{w}``: " CPU" on a CPU).
_BUDGETS = {"time_budget": "{:g} s{w} budget", "time_per_mvoxel": "{:g} s{w} per M voxels",
            "steps": "{} steps", "steps_per_mvoxel": "{:g} steps per M voxels"}  # fmt: skip


def fill(command: str, **values: Any) -> str:
    """A command template with its placeholders filled in (missing ones: :data:`PLACEHOLDERS`)."""
    merged = {**PLACEHOLDERS, **{k: str(v) for k, v in values.items()}}
    try:
        return " ".join(command.split()).format(**merged)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"method command {command!r}: bad placeholder ({exc})") from None


def _parse_irem(command: str, device: str) -> Any | None:
    """The parsed options of an ``irem`` command, or ``None`` for any other program."""
    words = shlex.split(fill(command, device=device))
    if not words or words[0] != "irem":
        return None
    from irem.cli import build_parser

    try:
        return build_parser().parse_args(words[1:])
    except SystemExit:
        raise ValueError(f"method command is not a valid irem command: {command!r}") from None


def _budget(args: Any, device: str, paper_epochs: int) -> list[str]:
    where = " CPU" if device == "cpu" else ""
    values = {key: getattr(args, key, None) for key in _BUDGETS}
    out = [_BUDGETS[k].format(v, w=where) for k, v in values.items() if v is not None]
    epochs = getattr(args, "epochs", None)
    if epochs is not None and epochs != paper_epochs:
        out.append(f"{epochs} epochs")
    return out


def _value(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "/".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def reconstruct_label(args: Any, device: str) -> str:
    """Label of an ``irem reconstruct`` run: plain "IREM" only with the paper's settings."""
    cfg = load_config(args.config, parse_set(args.set))
    paper = flatten(load_config(None).to_dict())
    diffs = {
        k: v
        for k, v in flatten(cfg.to_dict()).items()
        if paper.get(k) != v and not k.startswith("reconstruct.") and k != "train.checkpoint_every"
    }
    budget = _budget(args, device, int(paper["train.epochs"]))
    if cfg.model.kind == "grid":
        name = "grid INR on SRR-TV" if cfg.train.base == "srr_tv" else "grid INR"
        return name + (f" ({', '.join(budget)})" if budget else "")
    if not diffs and not budget:
        return "IREM"
    parts = ["paper network", *budget]
    parts += [f"{_SHORT.get(k, k)} {_value(v)}" for k, v in sorted(diffs.items())]
    return f"IREM ({', '.join(parts)})"


def method_label(entry: dict[str, Any]) -> str:
    """The label of a method entry (``name``, ``command``, optional ``label`` and ``device``)."""
    if entry.get("label"):
        return str(entry["label"])
    device = entry.get("device", "cpu")
    args = _parse_irem(entry["command"], device)
    command = getattr(args, "command", None)
    if command == "reconstruct":
        return reconstruct_label(args, device)
    if command == "baseline":  # e.g. "SRR-TV (box PSF)"
        if args.method == "bspline":
            return "B-spline"
        return f"SRR-{args.regulariser.upper()} ({args.psf} PSF)"
    return str(entry["name"])
