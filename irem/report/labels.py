"""Method labels in tables and figures: a method entry's ``label`` (``config/*.yaml``), else its
name. Each label says what its run changes from the paper (Wu et al. 2021): ``tests/test_labels.py``
checks that against the command; placeholders of commands are filled in by :func:`fill`."""

from __future__ import annotations

from typing import Any

#: Dummy values of the command placeholders, enough to parse a command.
PLACEHOLDERS = {
    "stacks": "sag.nii.gz cor.nii.gz ax.nii.gz", "hr": "hr.nii.gz", "output": "out.nii.gz",
    "reference": "ref.nii.gz", "geometry": "", "threads": "1", "device": "cpu", "seed": "0",
    "checkpoint": "ckpt.pt", "snapshots": "snapshots",
}  # fmt: skip


def fill(command: str, **values: Any) -> str:
    """A command template with its placeholders filled in (missing ones: :data:`PLACEHOLDERS`)."""
    merged = {**PLACEHOLDERS, **{k: str(v) for k, v in values.items()}}
    try:
        return " ".join(command.split()).format(**merged)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"method command {command!r}: bad placeholder ({exc})") from None


def method_label(entry: dict[str, Any]) -> str:
    """The label of a method entry: its ``label`` if given, else its ``name``."""
    return str(entry.get("label") or entry["name"])
