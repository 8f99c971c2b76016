"""Super-resolution reconstruction (SRR): on the HR grid,

    min_x  1/2 sum_k ||A_k x - y_k||^2 + lambda R(x),   A_k = D_k B_k  (baselines.operators)

with ``R`` first-order Tikhonov ``tk1`` (``1/2 ||grad x||^2``, NiftyMIC's default; conjugate
gradients on the normal equations) or isotropic total variation ``tv`` (ADMM as NiftyMIC's TVL2,
its ``x``-steps a few warm-started CG iterations); ``grad``: forward differences, Neumann.
The weight is relative: ``lambda = alpha * L`` (``tk1``) or ``alpha * L * s`` (``tv``), with
``L = ||sum_k A_k^T A_k||_2`` (power iteration) and ``s`` the largest LR intensity, so that one
``alpha`` fits any number of stacks, ``k``, PSF and intensity scale (``docs/baselines.md``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from baselines.bspline import bspline
from baselines.operators import PSFS, MultiStackOperator, gradient, gradient_adjoint
from irem.acquisition.grid import Grid
from irem.errors import InputError
from irem.volume import Stack

REGULARISERS: tuple[str, ...] = ("tk1", "tv")
# Relative weights chosen on a phantom sweep (results/tuning/round2/srr_alpha_sweep.md), per PSF.
DEFAULT_ALPHA: dict[tuple[str, str], float] = {
    ("tk1", "gaussian"): 3e-2, ("tk1", "box"): 3e-3, ("tv", "gaussian"): 1e-2, ("tv", "box"): 3e-3
}  # fmt: skip
#: Relative weights for noisy scans, per regulariser: chosen with the box PSF on the noisy cohort's
#: tuning split (SNR 40; results/tuning/README.md); ``irem baseline srr``'s defaults with that PSF.
TUNED_ALPHA: dict[str, float] = {"tk1": 0.1, "tv": 0.01}
DEFAULT_ITERATIONS: dict[str, int] = {"tk1": 50, "tv": 20}
DEFAULT_TOL = 1e-5  # CG stops when ||b - H x|| <= tol ||b||
TV_RHO = 10.0  # ADMM penalty rho = TV_RHO * alpha * L (measured: converges fastest near 3-10)
TV_RHO_MIN = 1e-3  # ... but at least TV_RHO_MIN * L
TV_INNER = 3  # CG iterations per ADMM x-step (more do not help: measured)


def _sq(t: torch.Tensor) -> float:
    """Squared Euclidean norm as a Python float."""
    return float(torch.linalg.vector_norm(t)) ** 2


def _objective(rd: Sequence[torch.Tensor], rg: torch.Tensor, mu: float) -> float:
    """``1/2 (sum ||rd_k||^2 + mu ||rg||^2)`` from the data and prior residuals."""
    return 0.5 * (sum(_sq(t) for t in rd) + mu * _sq(rg))


def _cg(
    op: MultiStackOperator, ys: Sequence[torch.Tensor], x: torch.Tensor, mu: float,
    c: torch.Tensor | None, iterations: int, tol: float,
    callback: Callable[[float, float], None] | None = None,
    aty: torch.Tensor | None = None, rd: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor, int, str]:  # fmt: skip
    """Conjugate gradients for ``min 1/2 sum ||A_k x - y_k||^2 + mu/2 ||grad x - c||^2``: ``x``,
    the residuals ``y_k - A_k x`` and ``c - grad x``, the steps taken and why it stopped (a step
    that would not decrease the objective, tracked through the residuals, stops it); ``aty`` and
    ``rd`` save operator calls."""
    if rd is None:
        rd = [y - a for y, a in zip(ys, op.forward(x), strict=True)]
    rg = -gradient(x) if c is None else c - gradient(x)
    b = op.adjoint(ys) if aty is None else aty
    if c is not None and mu:
        b = b + mu * gradient_adjoint(c)
    bnorm = float(torch.linalg.vector_norm(b))
    del b
    r = op.adjoint(rd)  # the residual of the normal equations
    if mu:
        r += mu * gradient_adjoint(rg)
    p = r.clone()
    rr = _sq(r)
    objective = _objective(rd, rg, mu)
    done, reason = 0, "iterations"
    while done < iterations:
        if bnorm == 0 or math.sqrt(rr) <= tol * bnorm:
            reason = "tolerance"
            break
        ap = op.forward(p)
        dp = gradient(p)
        hp = op.adjoint(ap)
        if mu:
            hp += mu * gradient_adjoint(dp)
        php = float(torch.sum(p * hp))
        if not php > 0 or not math.isfinite(php):
            reason = "breakdown"
            break
        a = rr / php
        step_rd = [torch.add(t, s, alpha=-a) for t, s in zip(rd, ap, strict=True)]
        step_rg = torch.add(rg, dp, alpha=-a)
        del ap, dp
        step_objective = _objective(step_rd, step_rg, mu)
        if not step_objective < objective:
            reason = "monotonicity"
            break
        x = torch.add(x, p, alpha=a)
        rd, rg, objective = step_rd, step_rg, step_objective
        r.add_(hp, alpha=-a)
        del hp
        step_rr = _sq(r)
        p.mul_(step_rr / rr).add_(r)
        rr = step_rr
        done += 1
        if callback is not None:  # the squared data residual and the objective
            callback(sum(_sq(t) for t in rd), objective)
    return x, rd, rg, done, reason


def _magnitude(v: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the first axis of a ``(3, ...)`` field."""
    mag = v[0] * v[0]
    mag.addcmul_(v[1], v[1]).addcmul_(v[2], v[2])
    return mag.sqrt_()


def _shrink(v: torch.Tensor, threshold: float) -> torch.Tensor:
    """Isotropic soft thresholding of the gradient field ``v`` ``(3, ...)``."""
    factor = _magnitude(v).clamp_(min=1e-30).reciprocal_().mul_(-threshold).add_(1.0)
    return v * factor.clamp_(min=0.0)


@dataclass
class _Trace:
    """Relative data residual and objective per iteration, and the progress bar."""

    residual: list[float]
    objective: list[float]
    ynorm: float
    bar: Any

    def add(self, data: float, objective: float) -> None:
        """Record one iteration from its squared data residual and objective."""
        self.residual.append(math.sqrt(data) / self.ynorm)
        self.objective.append(objective)
        self.bar.update(1)
        self.bar.set_postfix(residual=f"{self.residual[-1]:.3e}")


def _solve_tk1(
    op: MultiStackOperator, ys: Sequence[torch.Tensor], x: torch.Tensor, alpha: float, norm: float,
    iterations: int, tol: float, trace: _Trace,
) -> tuple[torch.Tensor, float, int, str, dict[str, Any]]:  # fmt: skip
    """First-order Tikhonov: CG on the normal equations, ``lambda = alpha * L``."""
    lam = alpha * norm
    prior = 0.5 * lam * _sq(gradient(x))
    trace.objective.append(0.5 * (trace.residual[0] * trace.ynorm) ** 2 + prior)
    x, _, _, done, reason = _cg(op, ys, x, lam, None, iterations, tol, trace.add)
    return x, lam, done, reason, {"cg_iterations": done}


def _solve_tv(
    op: MultiStackOperator, ys: Sequence[torch.Tensor], x: torch.Tensor, alpha: float, norm: float,
    iterations: int, tol: float, trace: _Trace,
) -> tuple[torch.Tensor, float, int, str, dict[str, Any]]:  # fmt: skip
    """Total variation by ADMM (split ``z = grad x``), ``lambda = alpha * L * s``."""
    scale = max(float(y.abs().max()) for y in ys) or 1.0
    lam = alpha * norm * scale
    rho = max(TV_RHO * alpha, TV_RHO_MIN) * norm
    dx = gradient(x)
    tv = float(_magnitude(dx).sum())
    trace.objective.append(0.5 * (trace.residual[0] * trace.ynorm) ** 2 + lam * tv)
    z = _shrink(dx, lam / rho) if rho > 0 else dx
    u = torch.zeros_like(dx)
    aty = op.adjoint(ys)
    rd, cg_total = None, 0
    for _ in range(iterations):
        c = z.sub_(u)  # z and u are replaced below
        x, rd, rg, n_cg, _ = _cg(op, ys, x, rho, c, TV_INNER, tol, aty=aty, rd=rd)
        cg_total += n_cg
        dx = c.sub_(rg)  # grad x
        del rg
        tv = float(_magnitude(dx).sum())
        v = dx.add_(u)
        z = _shrink(v, lam / rho)
        u = v.sub_(z)
        data = sum(_sq(t) for t in rd)
        trace.add(data, 0.5 * data + lam * tv)
    extra = {"cg_iterations": cg_total, "rho": rho, "intensity_scale": scale}
    return x, lam, iterations, "iterations", extra


def _check(
    stacks: Sequence[Stack], grid: Grid, alpha: float | None, regulariser: str,
    iterations: int | None, psf: str, init: np.ndarray | None, tol: float,
) -> tuple[float, int]:  # fmt: skip
    """The checked options: alpha and iterations with their defaults filled in."""
    if regulariser not in REGULARISERS:
        raise InputError(f"unknown regulariser {regulariser!r}; "
                         f"choose from {', '.join(REGULARISERS)}")
    if psf not in PSFS:
        raise InputError(f"unknown psf {psf!r}; choose from {', '.join(PSFS)}")
    if len(stacks) == 0:
        raise InputError("no stacks given")
    alpha = DEFAULT_ALPHA[regulariser, psf] if alpha is None else float(alpha)
    if not (math.isfinite(alpha) and alpha >= 0):
        raise InputError(f"alpha must be a finite number >= 0, got {alpha}")
    iterations = DEFAULT_ITERATIONS[regulariser] if iterations is None else iterations
    if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 1:
        raise InputError(f"iterations must be an integer >= 1, got {iterations}")
    if not tol > 0:
        raise InputError(f"tol must be positive, got {tol}")
    if init is not None and tuple(np.shape(init)) != tuple(grid.shape):
        raise InputError(f"init has shape {tuple(np.shape(init))}, the grid {tuple(grid.shape)}")
    return alpha, int(iterations)


def srr(
    stacks: Sequence[Stack], grid: Grid, *, alpha: float | None = None, regulariser: str = "tk1",
    iterations: int | None = None, psf: str = "gaussian", device: str | torch.device = "cpu",
    init: np.ndarray | None = None, progress: bool = True, tol: float = DEFAULT_TOL,
) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
    """SRR of the stacks on ``grid``: the float32 HR volume and a record of the solve (``None``
    options: :data:`DEFAULT_ALPHA`, :data:`DEFAULT_ITERATIONS`, the B-spline as ``init``)."""
    alpha, iterations = _check(stacks, grid, alpha, regulariser, iterations, psf, init, tol)
    t0 = time.perf_counter()
    device = torch.device(device)
    init = bspline(stacks, grid) if init is None else init
    op = MultiStackOperator(stacks, grid, psf=psf, device=device, dtype=torch.float32)
    x = torch.as_tensor(np.ascontiguousarray(init, dtype=np.float32), device=device).clone()
    ys = op.data(stacks)
    norm = op.norm()
    info: dict[str, Any] = {
        "method": "srr", "regulariser": regulariser, "psf": psf, "alpha": alpha,
        "operator_norm": norm, "max_iterations": iterations, "tol": tol, "device": str(device),
        "slice_thickness_mm": [s.slice_thickness for s in stacks],
        "lr_voxels_used": [int(o.valid.sum()) for o in op.ops],
    }  # fmt: skip
    ynorm = math.sqrt(sum(_sq(y) for y in ys)) or 1.0
    residual = math.sqrt(sum(_sq(y - a) for y, a in zip(ys, op.forward(x), strict=True))) / ynorm
    bar = tqdm(total=iterations, desc=f"srr {regulariser}", disable=not progress, leave=False)
    trace = _Trace([residual], [], ynorm, bar)
    solve = _solve_tk1 if regulariser == "tk1" else _solve_tv
    x, lam, done, reason, extra = solve(op, ys, x, alpha, norm, iterations, tol, trace)
    bar.close()
    out = x.detach().cpu().numpy().astype(np.float32)
    info.update({**extra, "lambda": lam, "iterations": done, "stop_reason": reason})
    info.update(residual=trace.residual, relative_residual=trace.residual[-1])
    info.update(objective=trace.objective, time=time.perf_counter() - t0)
    return out, info
