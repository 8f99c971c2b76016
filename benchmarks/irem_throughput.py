"""Training throughput of the paper's IREM network on CPU against the matmul bound, and inference.

The paper's network (batch 2500): training samples/s of several variants (fused Adam,
torch.compile, bf16 autocast) and dense-grid inference samples/s, against two bounds measured in
the same run: the issue's (a 2500x256 @ 256x256 product's GFLOP/s over the network's 7.47 MFLOP
per training sample, 6 x multiply-adds; float32, and bfloat16 for the bf16 row) and the own-GEMM
bound (the step's 53 matrix products, each timed alone, in the same type). The bounds and the
variants are measured in interleaved rounds; the table gives medians and ranges over rounds, and
every row's rate over the fp32 training step's (fused Adam, as irem.training.train) of the same round.
On a CPU without native bf16 (no AVX512_BF16/AMX: ``train.precision: auto`` is fp32 there) bf16 is
many times slower than fp32 and is measured once, outside the rounds.
-> results/benchmarks/irem_throughput.{md,csv} (or <--name>.{md,csv}: one file per CPU kind)

  python benchmarks/irem_throughput.py [--threads 1] [--rounds 5] [--name irem_throughput_amx]
                                                                    # about 4 minutes per thread count
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from irem.acquisition.grid import Grid
from irem.models.paper import IREM, for_inference
from irem.models.precision import cpu_description, detect_precision
from irem.training.train import predict

OUT = Path("results/benchmarks")


def _best_seconds(fn: Callable[[], object], seconds: float, warmup: int = 3) -> float:
    """The fastest of repeated calls of ``fn`` over about ``seconds`` (after ``warmup`` calls)."""
    for _ in range(warmup):
        fn()
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_gflops(seconds: float = 2.0, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of the paper's typical layer product, 2500x256 @ 256x256 (the issue's bound)."""
    a, b = torch.randn(2500, 256, dtype=dtype), torch.randn(256, 256, dtype=dtype)
    c = torch.empty(2500, 256, dtype=dtype)
    return 2 * 2500 * 256 * 256 / _best_seconds(lambda: torch.mm(a, b, out=c), seconds) / 1e9


def gemm_seconds(
    model: torch.nn.Module, batch: int, seconds: float = 0.3, dtype: torch.dtype = torch.float32
) -> float:
    """One training step's matrix products (forward and gradients), each timed alone."""
    total = 0.0
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    for i, lin in enumerate(linears):
        n_in, n_out = lin.in_features, lin.out_features
        shapes = [(batch, n_in, n_out), (n_out, batch, n_in), (batch, n_out, n_in)][: 3 if i else 2]
        for m, k, n in shapes:
            a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
            c = torch.empty(m, n, dtype=dtype)
            total += _best_seconds(lambda a=a, b=b, c=c: torch.mm(a, b, out=c), seconds)
    return total


def flops_per_sample(model: torch.nn.Module) -> float:
    """Forward and backward FLOPs of the Linear layers per sample (6 x multiply-adds)."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return 6.0 * sum(m.in_features * m.out_features for m in linears)


TRAINING_VARIANTS = {
    # name: (autocast bf16, fused Adam, torch.compile)
    "fp32, foreach Adam (PyTorch default)": (False, False, False),
    "fp32, fused Adam": (False, True, False),
    "fp32, fused Adam, torch.compile": (False, True, True),
}
FP32 = "training: fp32, fused Adam"  # irem.training.train's fp32 step: the reference
BF16 = "bf16 autocast, fused Adam"  # irem.training.train's step at train.precision bf16
INFERENCE_VARIANTS = [(False, 8192), (True, 65_536), (True, 8192)]


def training_block(bf16: bool, fused: bool, compiled: bool, steps: int = 3) -> Callable[[], None]:
    """``steps`` training steps of the paper's network (as irem.training.train's) as one call."""
    model = IREM()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=fused)
    x, y = torch.rand(2500, 3) * 2 - 1, torch.rand(2500)  # the paper's batch
    net = torch.compile(model) if compiled else model

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            pred = net(x)
        loss = torch.mean((pred.float() - y) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up (and compilation)
        step()

    def block() -> None:
        for _ in range(steps):
            step()

    return block


def inference_call(folded: bool, chunk: int) -> Callable[[], object]:
    """One dense-grid evaluation of ``chunk`` points by a paper network (eval mode, no autograd)."""
    model = IREM().eval()
    net = for_inference(model) if folded else model
    x = torch.rand(chunk, 3) * 2 - 1

    def call() -> object:
        with torch.inference_mode():
            return net(x)

    call()  # warm-up
    return call


def predict_rate(size: int = 96) -> float:
    """Dense-grid evaluation samples/s of :func:`irem.training.train.predict` (paper network)."""
    from irem.training.train import Normaliser

    grid = Grid(shape=(size,) * 3, affine=np.eye(4))
    norm = Normaliser(centre=np.full(3, size / 2), half_extent=size / 2, intensity_scale=1.0)
    model = IREM().eval()
    t0 = time.perf_counter()
    predict(model, norm, grid)
    return grid.size / (time.perf_counter() - t0)


#: A measured run: its name, the call, samples per call and seconds of repeated calls.
_Call = tuple[str, Callable[[], object], int, float]


def _calls(native: bool) -> list[_Call]:
    """The training variants (bf16 autocast among them with ``native`` bf16) and inference ones."""
    calls: list[_Call] = []
    variants = dict(TRAINING_VARIANTS)
    if native:
        variants[BF16] = (True, True, False)
    for name, flags in variants.items():
        try:
            calls.append((f"training: {name}", training_block(*flags), 3 * 2500, 3.0))
        except Exception as exc:  # torch.compile needs a working C++ toolchain
            print(f"{name}: failed ({type(exc).__name__}: {exc})".splitlines()[0], flush=True)
    for folded, chunk in INFERENCE_VARIANTS:
        what = "BatchNorm folded" if folded else "eval mode"
        name = f"inference: {what}, chunks of {chunk}"
        calls.append((name, inference_call(folded, chunk), chunk, 2.0))
    return calls


def _rounds(
    calls: list[_Call], rounds: int, fps: float, native: bool, own: dict[torch.dtype, float]
) -> pd.DataFrame:
    """Every call's samples/s per round, against the round's bounds and fp32 training step."""
    raw = []
    for r in range(rounds):
        bound = matmul_gflops(1.0) * 1e9 / fps
        bound16 = matmul_gflops(1.0, torch.bfloat16) * 1e9 / fps if native else np.nan
        for run, fn, samples, seconds in calls:
            rate = samples / _best_seconds(fn, seconds, warmup=0)  # warmed up when built
            raw.append({"round": r, "run": run, "samples/s": rate, "bound": bound,
                        "bound16": bound16})  # fmt: skip
        print(f"round {r + 1}/{rounds}: fp32 bound {bound:.0f} samples/s", flush=True)
    df = pd.DataFrame(raw)
    inference = df["run"].str.startswith("inference")
    bf16 = df["run"] == f"training: {BF16}"
    flops = np.where(inference, 1 / 3, 1)  # forward only: a third of the training FLOPs per sample
    df["pct"] = 100 * df["samples/s"] * flops / np.where(bf16, df["bound16"], df["bound"])
    own_rate = np.where(bf16, own.get(torch.bfloat16, np.nan), own[torch.float32])
    df["own pct"] = 100 * df["samples/s"] * flops / own_rate
    fp32 = df[df["run"] == FP32].set_index("round")["samples/s"]
    df["x"] = df["samples/s"] / df["round"].map(fp32)
    return df


def _summary(df: pd.DataFrame, threads: int) -> list[dict[str, object]]:
    """One row per run: medians over the rounds and the ranges of the ratios."""
    return [{"threads": threads, "run": run, "samples/s": g["samples/s"].median(),
             "x fp32 training": g["x"].median(),
             "x range over rounds": f"{g['x'].min():.2f}-{g['x'].max():.2f}",
             "% of matmul bound": g["pct"].median(),
             "% range over rounds": f"{g['pct'].min():.1f}-{g['pct'].max():.1f}",
             "% of own-GEMM bound": g["own pct"].median()}
            for run, g in df.groupby("run", sort=False)]  # fmt: skip


def _header(
    threads: int, rounds: int, df: pd.DataFrame, fps: float, own: dict[torch.dtype, float],
    bf16_ratio: float | None,
) -> list[str]:  # fmt: skip
    """The paragraph above a thread count's table: the bounds and the bf16 / fp32 ratio."""
    gf = df["bound"] * fps / 1e9
    text = (
        f"{threads} thread(s), {rounds} interleaved rounds: 2500x256 @ 256x256 float32 product "
        f"{gf.median():.0f} GFLOP/s (median; {gf.min():.0f}-{gf.max():.0f}), "
        f"{fps / 1e6:.2f} MFLOP per training sample: matmul bound {df['bound'].median():.0f} "
        f"samples/s; own-GEMM bound (the step's {3 * 18 - 1} products timed one by one, once) "
        f"{own[torch.float32]:.0f} samples/s."
    )
    if torch.bfloat16 in own:
        gf16 = df["bound16"] * fps / 1e9
        text += (
            f" bfloat16 (the bf16 row's bounds): product {gf16.median():.0f} GFLOP/s "
            f"({gf16.min():.0f}-{gf16.max():.0f}), matmul bound {df['bound16'].median():.0f} "
            f"samples/s, own-GEMM bound {own[torch.bfloat16]:.0f} samples/s."
        )
    if bf16_ratio is not None:
        text += (
            f" **bf16 autocast / fp32 training step: {bf16_ratio:.2f}x** (median of the rounds' "
            "ratios)."
        )
    return [text, ""]


def throughput_table(threads: int, rounds: int = 5) -> tuple[list[str], pd.DataFrame]:
    """Training and inference rates against the bounds over ``rounds`` interleaved rounds."""
    torch.set_num_threads(threads)
    native = detect_precision("auto").used == "bf16"
    fps = flops_per_sample(IREM())
    own = {
        dtype: 2500 / gemm_seconds(IREM(), 2500, dtype=dtype)
        for dtype in (torch.float32, torch.bfloat16)
        if native or dtype == torch.float32
    }
    df = _rounds(_calls(native), rounds, fps, native, own)
    rows = _summary(df, threads)
    fp32 = df[df["run"] == FP32]["samples/s"].median()

    def once(run: str, rate: float, bound: float, passes: int = 1) -> dict[str, object]:
        """The row of a run measured once, outside the rounds; ``passes``: 3 if forward only."""
        return {"threads": threads, "run": run, "samples/s": rate, "x fp32 training": rate / fp32,
                "% of matmul bound": 100 * rate / bound / passes,
                "% of own-GEMM bound": 100 * rate / own[torch.float32] / passes}  # fmt: skip

    if not native:  # emulated bf16 is much slower: one step, once
        bound = matmul_gflops(1.0) * 1e9 / fps
        rate = 2500 / _best_seconds(training_block(True, True, False, steps=1), 1.0)
        run = f"training: {BF16} (no native bf16: once)"
        rows.append(once(run, rate, bound))
    run = "inference: irem.training.train.predict on a 96^3 grid (default chunks, coordinates too; once)"
    rate, bound = predict_rate(), df["bound"].median()
    rows.append(once(run, rate, bound, passes=3))
    out = pd.DataFrame(rows)
    ratio = out.set_index("run")["x fp32 training"].get(f"training: {BF16}")
    head = _header(threads, rounds, df, fps, own, ratio)
    return head, out.round(
        {"samples/s": 0, "x fp32 training": 2, "% of matmul bound": 1, "% of own-GEMM bound": 1}
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved measurement rounds")
    ap.add_argument("--name", default="irem_throughput",
                    help="file stem in results/benchmarks (one per CPU)")  # fmt: skip
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    auto = detect_precision("auto")
    lines = [
        f"# Paper IREM throughput on CPU (torch {torch.__version__})",
        "",
        f"CPU: {cpu_description()}. `train.precision: auto` resolves to **{auto.used}** here "
        f"(native bf16: {'yes, ' + ', '.join(auto.cpu_flags) if auto.native_bf16 else 'no'}).",
        "",
    ]
    frames = []
    for threads in args.threads:
        head, df = throughput_table(threads, args.rounds)
        lines += head + [df.to_markdown(index=False), ""]
        frames.append(df)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines.append(f"Peak resident memory: {rss:.0f} MiB")
    pd.concat(frames).to_csv(OUT / f"{args.name}.csv", index=False)
    (OUT / f"{args.name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
