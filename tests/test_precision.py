"""Training precision: ``auto`` resolved from the CPU flags, forced fp32/bf16, bf16 close to fp32."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import irem.models.precision as P
from irem.acquisition.grid import reference_grid
from irem.acquisition.simulate import simulate_stacks
from irem.cli import main
from irem.errors import InputError
from irem.models.precision import Precision, cpu_flags, native_bf16, resolve_precision
from irem.training.config import TrainConfig, load_config
from irem.training.train import Trainer, predict, train
from irem.volume import Volume

AVX2 = {"sse2", "avx", "avx2", "fma"}
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512_vnni"}  # AVX-512 without bf16 instructions


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (set(), "fp32"),
        (AVX2, "fp32"),
        (AVX512, "fp32"),
        (AVX512 | {"avx512_bf16"}, "bf16"),  # e.g. AMD Zen 4, Intel Cooper Lake
        (AVX512 | {"amx_bf16", "amx_tile"}, "bf16"),  # Intel Sapphire Rapids
    ],
)
def test_auto_resolves_by_the_cpu_flags(flags: set[str], expected: str) -> None:
    assert resolve_precision("auto", "cpu", flags) == expected
    # forcing wins over the flags
    assert resolve_precision("fp32", "cpu", flags) == "fp32"
    assert resolve_precision("bf16", "cpu", flags) == "bf16"


def test_auto_keeps_unmeasured_model_kinds_on_fp32() -> None:
    bf16_cpu = {"avx512_bf16"}
    assert resolve_precision("auto", "cpu", bf16_cpu, kind="grid") == "fp32"
    assert resolve_precision("bf16", "cpu", bf16_cpu, kind="grid") == "bf16"  # forced


def test_auto_on_other_devices() -> None:
    bf16_cpu = {"avx512_bf16"}
    assert resolve_precision("auto", "cuda", set(), cuda_bf16=True) == "bf16"
    assert resolve_precision("auto", "cuda", bf16_cpu, cuda_bf16=False) == "fp32"
    assert resolve_precision("auto", "mps", bf16_cpu) == "fp32"  # elsewhere: fp32
    assert not native_bf16("mps", bf16_cpu)
    with pytest.raises(ValueError, match="auto, fp32, bf16"):
        resolve_precision("fp16", "cpu", bf16_cpu)


def test_cpu_flags_are_read_from_the_first_processor() -> None:
    text = "processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\n"
    assert cpu_flags(text) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags("processor : 0\nFeatures : fp asimd\n") == frozenset()


def test_auto_is_the_default_of_the_paper_network_only() -> None:
    assert TrainConfig().precision == "auto"
    assert load_config("paper").train.precision == "auto"
    assert load_config("fast").train.precision == "fp32"
    with pytest.raises(InputError, match="auto, fp32 or bf16"):
        load_config(overrides={"train.precision": "fp16"})


#: A small paper-kind network (Fourier features, 18 BatchNorm layers, skips), 512 voxels a batch.
SMALL = {"model.width": 32, "model.fourier_dim": 32, "train.batch_size": 512, "train.lr": 1e-3}


def _fit(stacks: list, grid, precision: str, steps: int) -> tuple[float, np.ndarray, dict, Any]:
    """``steps`` training steps of :data:`SMALL` at ``precision``: loss, image on ``grid``, the
    recorded precision and the model."""
    cfg = load_config(overrides={**SMALL, "train.epochs": 1, "train.precision": precision})
    model, norm, res = train(stacks, cfg, seed=0, progress=False, on_step=lambda s, *_: s >= steps)
    assert res.steps == steps
    return res.final_loss, predict(model, norm, grid), res.precision, model


def test_bf16_training_agrees_with_fp32_and_is_recorded(phantom: Volume) -> None:
    stacks, grid = simulate_stacks(phantom, 4), reference_grid(phantom)
    loss32, out32, rec32, _ = _fit(stacks, grid, "fp32", 10)
    loss16, out16, rec16, model = _fit(stacks, grid, "bf16", 10)
    # Measured after 10 steps (seed 0): losses 0.1132 / 0.1131 (0.1%), outputs (phantom 0..1) differ
    # by 0.002 on average and 0.008 at most; bf16 rounds each layer's inputs to 8 mantissa bits.
    assert loss16 == pytest.approx(loss32, rel=0.01)
    assert np.abs(out16 - out32).mean() < 0.01
    assert np.abs(out16 - out32).max() < 0.03
    assert rec32["requested"] == rec32["used"] == "fp32"
    assert rec16["requested"] == rec16["used"] == "bf16"
    # the weights (and Adam's state) stay float32 under bf16 autocast
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize(
    ("flags", "expected"), [(frozenset({"avx2"}), "fp32"), (frozenset({"amx_bf16"}), "bf16")]
)
def test_a_trainer_resolves_auto_by_the_detected_flags(
    phantom: Volume, monkeypatch: pytest.MonkeyPatch, flags: frozenset[str], expected: str
) -> None:
    monkeypatch.setattr(P, "read_cpu_flags", lambda: flags)
    cfg = load_config(overrides={**SMALL, "train.precision": "auto"})
    trainer = Trainer(simulate_stacks(phantom, 4), cfg, seed=0)
    assert trainer.precision == Precision(
        requested="auto",
        used=expected,
        device="cpu",
        native_bf16=expected == "bf16",
        cpu_flags=tuple(sorted(flags & {"avx512_bf16", "amx_bf16"})),
    )


def test_fourier_features_stay_float32_precise_under_autocast() -> None:
    from irem.models.paper import FourierFeatures

    enc = FourierFeatures(64, sigma=1.0, seed=0)
    p = torch.rand(1000, 3) * 2 - 1
    exact = enc(p)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = enc(p)
    assert low.dtype == torch.bfloat16
    # only the final cast to bf16 rounds (relative 2^-9); bf16 phases would be off by up to 1/8 rad
    assert float((low.float() - exact).abs().max()) <= 2**-8


@pytest.mark.parametrize("flag", ["fp32", "bf16"])
def test_the_cli_flag_forces_the_precision_and_the_sidecar_records_it(
    tmp_path: Path, stack_files, flag: str
) -> None:
    stacks, gt = stack_files
    out = tmp_path / "r.nii.gz"
    tiny = ["--set", "model.width=16", "--set", "model.fourier_dim=16", "--epochs", "1"]
    tiny += ["--set", "train.batch_size=256", "--quiet", "--no-register"]
    argv = ["reconstruct", *stacks, "-o", str(out), "--reference", gt, "--precision", flag, *tiny]
    assert main(argv) == 0
    side = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert side["precision"]["requested"] == side["precision"]["used"] == flag
    assert side["config"]["train"]["precision"] == flag
    assert set(side["precision"]["cpu_flags"]) <= {"avx512_bf16", "amx_bf16"}
