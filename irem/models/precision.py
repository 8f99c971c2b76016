"""Training precision (``train.precision``): ``fp32``, ``bf16`` autocast, or ``auto``: bf16 for the
model kinds of :data:`AUTO_BF16_KINDS` where the device computes in bfloat16 natively (a CPU with
:data:`BF16_CPU_FLAGS`, a CUDA device supporting it; elsewhere bf16 is emulated and slow)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 arithmetic
AUTO_BF16_KINDS = ("irem",)  # model kinds whose quality under bf16 was measured


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The flags of the first processor listed in the text of ``/proc/cpuinfo`` (x86)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def native_bf16(device_type: str, flags: Iterable[str], cuda_bf16: bool = False) -> bool:
    """Whether the device computes in bfloat16 natively (a CUDA device: ``cuda_bf16``)."""
    cpu = device_type == "cpu" and not set(flags).isdisjoint(BF16_CPU_FLAGS)
    return cuda_bf16 if device_type == "cuda" else cpu


def resolve_precision(
    requested: str,
    device_type: str,
    flags: Iterable[str],
    cuda_bf16: bool = False,
    kind: str = "irem",
) -> str:
    """``requested``, ``auto`` resolved to ``bf16`` or ``fp32`` by the model ``kind`` and device."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested != "auto":
        return requested
    native = kind in AUTO_BF16_KINDS and native_bf16(device_type, flags, cuda_bf16)
    return "bf16" if native else "fp32"


@dataclass(frozen=True)
class Precision:
    """The precision a run uses (``fp32`` or ``bf16``) and what decided it, for the sidecar."""

    requested: str
    used: str
    device: str
    native_bf16: bool
    cpu_flags: tuple[str, ...]

    @property
    def bf16(self) -> bool:
        return self.used == "bf16"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "cpu_flags": list(self.cpu_flags)}


def _cpuinfo(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def read_cpu_flags(path: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """This machine's CPU flags (empty where ``/proc/cpuinfo`` does not exist)."""
    return cpu_flags(_cpuinfo(path))


def cpu_description(path: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name and which of the SIMD flags that matter for torch it has."""
    text = _cpuinfo(path)
    fields = (line.partition(":") for line in text.splitlines())
    model = next((v.strip() for k, _, v in fields if k.strip() == "model name"), "unknown CPU")
    flags = cpu_flags(text)
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model}; flags: {', '.join(wanted) or 'none of avx2/avx512/amx'}"


def detect_precision(
    requested: str, device: torch.device | str = "cpu", kind: str = "irem"
) -> Precision:
    """Resolve ``requested`` for a model of ``kind`` on ``device`` on this machine."""
    import torch

    device_type = torch.device(device).type
    flags = read_cpu_flags() if device_type == "cpu" else frozenset()
    cuda_bf16 = device_type == "cuda" and torch.cuda.is_bf16_supported()
    used = resolve_precision(requested, device_type, flags, cuda_bf16, kind)
    native = native_bf16(device_type, flags, cuda_bf16)
    present = tuple(f for f in BF16_CPU_FLAGS if f in flags)
    return Precision(requested, used, device_type, native, present)
