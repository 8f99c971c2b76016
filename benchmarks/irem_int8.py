"""Can lower precision make the paper network's dense-grid inference 5x faster than its training?

In float32 a forward pass has a third of a training step's FLOPs, so inference is at most about
3-4x faster per sample at equal efficiency (benchmarks/irem_throughput.py). This CPU
(AVX2, no AVX-512 VNNI/BF16, no AMX) has no faster float format, so the remaining candidate is
int8. This script trains the paper network (the workflow's `irem` settings) on the k-fold MNI152
stacks for a time budget, then evaluates the same trained network on the whole HR grid three ways:

  fp32          BatchNorm folded (irem.model.FoldedIREM), what `irem reconstruct` does;
  int8 dynamic  torch.ao.quantization.quantize_dynamic of the folded Linear layers (int8 weights,
                activations quantised per call, float between layers);
  int8 static   int8 weights (per channel) and activations between all 18 layers, scales from the
                99.9th percentile of each layer's output on 1/20 of the grid's points, fused
                Linear+ReLU kernels (fbgemm). Activations use 7 bits: on AVX2 the u8 x s8 products
                are summed in pairs into int16, which 8-bit activations can overflow (checked on a
                prototype of this script: with 8 bits the PSNR fell to 11 dB).

and prints samples/s, the ratio to the training rate of the same run, PSNR in the brain against
the ground truth, and the error against the fp32 output. -> results/benchmarks/irem_int8.{md,csv}

  python benchmarks/irem_int8.py [--k 4] [--seconds 120] [--crop 80 96 80]

Data, brain mask, crop and the `irem` settings are the workflow's (benchmarks/_workflow.py);
`--crop 80 96 80` is the crop of the committed results.

The quantized tensor API it uses is deprecated in PyTorch (still present in 2.13); the script is a
measurement, nothing in `irem` depends on it.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from _workflow import OUT, load_with_mask, method_config, scores, workflow_crop
from torch import nn

from irem.grid import reference_grid
from irem.model import FoldedIREM
from irem.simulate import simulate_stacks
from irem.train import train

LEVELS = 127  # 7-bit activations (see the module docstring)


def _qweight(w: torch.Tensor) -> torch.Tensor:
    scale = (w.abs().amax(dim=1) / 127).clamp_min(1e-12).double()
    return torch.quantize_per_channel(
        w, scale, torch.zeros(len(scale), dtype=torch.long), 0, torch.qint8
    )


class StaticInt8IREM(nn.Module):
    """The folded paper network with int8 weights and activations between its layers."""

    def __init__(self, folded: FoldedIREM, calibration: torch.Tensor, quantile: float = 0.999):
        super().__init__()
        self.encoding, self.skips = folded.encoding, folded.skips
        tops = []  # each layer's output range on the calibration points (float network)
        with torch.inference_mode():
            enc = self.encoding(calibration)
            x = enc
            for i, lin in enumerate(folded.linears):
                if i in self.skips:
                    x = torch.cat([x, enc], dim=-1)
                x = lin(x)
                if i < len(folded.linears) - 1:
                    x = torch.relu(x)
                    tops.append(float(x.flatten()[::7].quantile(quantile)))
                else:
                    tops.append(float(x.abs().max()))
        self.scales = [max(t, 1e-8) / LEVELS for t in tops]
        self.packed = [
            torch.ops.quantized.linear_prepack(_qweight(lin.weight), lin.bias)
            for lin in folded.linears
        ]

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        enc = torch.quantize_per_tensor(self.encoding(p), 2 / LEVELS, LEVELS // 2 + 1, torch.quint8)
        x, last = enc, len(self.packed) - 1
        for i, packed in enumerate(self.packed):
            if i in self.skips:  # [ReLU output >= 0, encoding in [-1, 1]] on one scale
                top = self.scales[i - 1] * LEVELS
                scale = (top + 1) / LEVELS
                x = torch.ops.quantized.cat([x, enc], 1, scale, round(1 / scale))
            if i < last:
                x = torch.ops.quantized.linear_relu(x, packed, self.scales[i], 0)
            else:  # the output feeds no product: all 8 bits, signed range
                x = torch.ops.quantized.linear(x, packed, self.scales[i] * LEVELS / 127.5, 128)
        return x.dequantize().squeeze(-1)


def evaluate(net: Callable[[torch.Tensor], torch.Tensor], pts: torch.Tensor, chunk: int = 8192):
    """The network on all points in chunks; returns (values, seconds)."""
    out = torch.empty(len(pts))
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(pts), chunk):
            out[s : s + chunk] = net(pts[s : s + chunk])
    return out.numpy(), time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--k", type=int, default=4, choices=(4, 8))
    ap.add_argument("--seconds", type=float, default=120.0, help="training time budget")
    ap.add_argument(
        "--crop", type=int, nargs=3, default=None, help="HR crop (default: the workflow's)"
    )
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message=".*quantiz.*deprecated", category=UserWarning)
    torch.set_num_threads(1)
    torch.backends.quantized.engine = "x86"
    crop = args.crop or workflow_crop()
    hr, mask = load_with_mask("mni152_t1", crop)
    stacks = simulate_stacks(hr, args.k)
    grid = reference_grid(hr)
    # the workflow's `irem` method (its --config/--set options in config/config.yaml)
    cfg = method_config("irem", {"train.time_budget": args.seconds, "train.epochs": 10**6})
    model, norm, res = train(stacks, cfg, progress=False)
    train_rate = res.steps * cfg.train.batch_size / res.training_seconds
    pts = torch.from_numpy(norm.coords(grid.points())).float()
    folded = FoldedIREM(model)
    nets = {
        "fp32 (BatchNorm folded)": folded,
        "int8 dynamic": torch.ao.quantization.quantize_dynamic(
            folded, {nn.Linear}, dtype=torch.qint8
        ),
        "int8 static (7-bit activations)": StaticInt8IREM(folded, pts[::20]),
    }
    rows, ref = [], None
    for name, net in nets.items():
        evaluate(net, pts[:8192])  # warm-up
        values, seconds = evaluate(net, pts)
        volume = values.reshape(grid.shape) * norm.intensity_scale
        ref = volume if ref is None else ref
        err = volume - ref
        rows.append(
            {
                "inference": name,
                "samples/s": len(pts) / seconds,
                "x training": len(pts) / seconds / train_rate,
                "PSNR in brain (dB)": scores(volume, hr, mask)["psnr_mask"],
                "RMS error vs fp32 (% of fp32 RMS)": 100
                * float(np.sqrt((err**2).mean()) / np.sqrt((ref**2).mean())),
            }
        )
        print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    df["x fp32"] = df["samples/s"] / df["samples/s"].iloc[0]
    head = (
        f"Paper IREM trained {res.training_seconds:.0f} s ({res.steps} steps, "
        f"{train_rate:.0f} training samples/s) on the MNI152 {'x'.join(map(str, hr.shape))} crop, "
        f"k = {args.k}, one "
        f"thread; the whole HR grid ({len(pts)} points) evaluated in chunks of 8192 "
        f"(torch {torch.__version__}). Written by `python benchmarks/irem_int8.py`."
    )
    table = df.round(2).to_markdown(index=False)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "irem_int8.md").write_text(f"# Paper IREM inference in int8\n\n{head}\n\n{table}\n", encoding="utf-8")
    df.to_csv(OUT / "irem_int8.csv", index=False)
    print(head, table, sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
