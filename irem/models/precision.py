"""Training precision: bfloat16 autocast where the hardware computes in bfloat16 natively.

``train.precision`` is ``auto``, ``fp32`` or ``bf16``. ``auto`` resolves to ``bf16`` for the model
kinds of :data:`AUTO_BF16_KINDS` on a CPU whose ``/proc/cpuinfo`` flags include one of
:data:`BF16_CPU_FLAGS` (AVX512_BF16 or AMX) and on a CUDA device that supports bfloat16, and to
``fp32`` elsewhere (without those instructions bf16 matrix products are emulated and many times
slower than fp32). The decision is a pure function of the requested precision, the model kind, the
device type and the flags (:func:`resolve_precision`); reading them is :func:`detect_precision`'s
job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16")
#: CPU flags (``/proc/cpuinfo``) of native bfloat16 arithmetic: AVX512_BF16 dot products, AMX tiles.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
#: Model kinds (``model.kind``) for which ``auto`` may pick bf16: those whose quality under bf16 was
#: measured (the paper's network: results/tuning/precision.csv); others stay fp32.
AUTO_BF16_KINDS = ("irem",)


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The flags of the first processor listed in the text of ``/proc/cpuinfo`` (x86)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def native_bf16(device_type: str, flags: Iterable[str], cuda_bf16: bool = False) -> bool:
    """Whether the device computes in bfloat16 natively: a CPU with one of
    :data:`BF16_CPU_FLAGS`, or a CUDA device for which ``cuda_bf16`` says so."""
    if device_type == "cuda":
        return cuda_bf16
    return device_type == "cpu" and any(f in set(flags) for f in BF16_CPU_FLAGS)


def resolve_precision(
    requested: str,
    device_type: str,
    flags: Iterable[str],
    cuda_bf16: bool = False,
    kind: str = "irem",
) -> str:
    """``fp32`` or ``bf16``: the requested precision, with ``auto`` resolved to bf16 where the model
    ``kind`` is one of :data:`AUTO_BF16_KINDS` and the device has :func:`native_bf16`."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested != "auto":
        return requested
    native = kind in AUTO_BF16_KINDS and native_bf16(device_type, flags, cuda_bf16)
    return "bf16" if native else "fp32"


@dataclass(frozen=True)
class Precision:
    """The precision a run uses (``fp32`` or ``bf16``) and what decided it, for the sidecar: the
    ``train.precision`` requested, the device type, its native bf16 and :data:`BF16_CPU_FLAGS`."""

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


def read_cpu_flags(path: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """This machine's CPU flags (empty where ``/proc/cpuinfo`` does not exist)."""
    try:
        return cpu_flags(path.read_text(encoding="utf-8"))
    except OSError:
        return frozenset()


def cpu_description(path: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name and which of the SIMD flags that matter for torch it has."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        text = ""
    fields = (line.partition(":") for line in text.splitlines())
    model = next((v.strip() for k, _, v in fields if k.strip() == "model name"), "unknown CPU")
    flags = cpu_flags(text)
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model}; flags: {', '.join(wanted) or 'none of avx2/avx512/amx'}"


def detect_precision(
    requested: str, device: torch.device | str = "cpu", kind: str = "irem"
) -> Precision:
    """Resolve ``requested`` for a model of ``kind`` on ``device`` on this machine (its CPU flags
    or its CUDA device)."""
    import torch

    device_type = torch.device(device).type
    flags = read_cpu_flags() if device_type == "cpu" else frozenset()
    cuda_bf16 = device_type == "cuda" and torch.cuda.is_bf16_supported()
    return Precision(
        requested=requested,
        used=resolve_precision(requested, device_type, flags, cuda_bf16, kind),
        device=device_type,
        native_bf16=native_bf16(device_type, flags, cuda_bf16),
        cpu_flags=tuple(f for f in BF16_CPU_FLAGS if f in flags),
    )
