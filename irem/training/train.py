"""Training IREM on the LR stacks (paper sections 2.2 and 3.2): network inputs are normalised-space
mm ``(p - centre) / half_extent`` over the box of all LR voxel centres (its longest side spans
[-1, 1]), intensities are divided by the largest LR intensity; an epoch is one pass over the LR
voxels in a seeded random order."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from irem.acquisition.grid import Grid, stack_points
from irem.errors import InputError
from irem.models.grid_inr import GridINR, GridPrior
from irem.models.precision import detect_precision
from irem.training.config import IremConfig, TrainConfig
from irem.training.progress import Progress
from irem.training.reconstruct import Normaliser, build_model
from irem.training.reconstruct import predict as predict  # re-exported for older callers
from irem.volume import Stack, atomic_path

log = logging.getLogger(__name__)

#: After each step (untimed): (steps, training seconds, model, normaliser); True stops the run.
OnStep = Callable[[int, float, torch.nn.Module, Normaliser], bool | None]
#: After each epoch (untimed): (epochs, steps, held-out loss or None, model, normaliser).
OnEpoch = Callable[[int, int, float | None, torch.nn.Module, Normaliser], None]


@dataclass(frozen=True)
class Budget:
    """A run's ``seconds`` and optimiser ``steps``; ``rule``: epochs, steps, fixed or per_mvoxel."""

    rule: str
    seconds: float | None
    seconds_per_mvoxel: float | None = None
    cap_seconds: float | None = None
    target_voxels: int | None = None
    steps: int | None = None
    steps_per_mvoxel: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_budget(
    time_budget: float | None,
    time_per_mvoxel: float | None,
    target_voxels: int | None,
    steps: int | None = None,
    steps_per_mvoxel: float | None = None,
) -> Budget:
    """The budget of the ``train`` keys of these names (per million ``target_voxels``, capped)."""
    per_voxel = time_per_mvoxel is not None or steps_per_mvoxel is not None
    if per_voxel and (target_voxels is None or target_voxels < 1):
        raise InputError("a per-million-voxel budget needs the number of target grid voxels")
    if steps_per_mvoxel is not None:
        scaled = max(1, math.ceil(steps_per_mvoxel * target_voxels / 1e6))  # type: ignore[operator]
        steps = scaled if steps is None else min(scaled, steps)
    rule = "fixed" if time_budget is not None else "steps" if steps is not None else "epochs"
    seconds, cap = time_budget, None
    if time_per_mvoxel is not None:
        scaled_s = time_per_mvoxel * target_voxels / 1e6  # type: ignore[operator]
        seconds = scaled_s if time_budget is None else min(scaled_s, time_budget)
        rule, cap, target_voxels = "per_mvoxel", time_budget, int(target_voxels)  # type: ignore
    return Budget(rule, seconds, time_per_mvoxel, cap, target_voxels, steps, steps_per_mvoxel)


@dataclass
class TrainResult:
    """What training did, for the sidecar."""

    epochs_completed: int
    steps: int
    final_loss: float
    training_seconds: float
    stopped_by: str
    resumed: bool
    loss_history: list[float]
    budget: Budget
    profile_points: int
    held_out: dict[str, Any]
    precision: dict[str, Any]  # irem.models.precision.Precision.to_dict


def training_data(stacks: list[Stack]) -> tuple[np.ndarray, np.ndarray, Normaliser]:
    """Inputs ``(n, 3)`` and intensities of the LR voxels in the masks; the normaliser of all."""
    pts = np.concatenate([stack_points(s) for s in stacks])
    vals = np.concatenate([s.data.reshape(-1) for s in stacks]).astype(np.float32)
    scale = float(np.abs(vals).max())
    norm = Normaliser.of_box(pts, scale)
    if any(s.mask is not None for s in stacks):
        used = np.concatenate([_used(s) for s in stacks])
        pts, vals = pts[used], vals[used]
    return norm.coords(pts), vals / scale, norm


def _used(stack: Stack) -> np.ndarray:
    """Flat (C order) boolean selection of the stack's LR voxels used for training."""
    if stack.mask is None:
        return np.ones(stack.data.size, dtype=bool)
    mask = np.asarray(stack.mask, dtype=bool)
    if mask.shape != tuple(stack.shape):
        raise InputError(f"stack {stack.name!r}: mask shape {mask.shape} is not {stack.shape}")
    return mask.reshape(-1)


def slice_vectors(stacks: list[Stack], norm: Normaliser) -> tuple[np.ndarray, np.ndarray]:
    """Per stack, the vector across one thick slice in input units; each used LR voxel's stack."""
    vectors = np.stack([_across(s) / norm.half_extent for s in stacks])
    owner = np.repeat(np.arange(len(stacks), dtype=np.int64), [int(_used(s).sum()) for s in stacks])
    return vectors.astype(np.float32), owner


def _across(stack: Stack) -> np.ndarray:
    """The normalised-space vector (mm) along the thick voxel axis, one slice thickness long."""
    axis = stack.to_normalised[:3, stack.thick_axis]
    if stack.thickness is None:
        return axis
    return axis * (stack.slice_thickness / float(np.linalg.norm(axis)))


@dataclass
class TrainingData:
    """The LR voxels as tensors on the training device, and how they are batched."""

    coords: torch.Tensor
    vals: torch.Tensor
    vectors: torch.Tensor
    owner: torch.Tensor
    norm: Normaliser
    batch: int
    steps_per_epoch: int
    fit: torch.Tensor | None = None
    held_out: torch.Tensor | None = None

    @property
    def n(self) -> int:
        """LR voxels fitted (all but the held-out ones)."""
        return len(self.vals) if self.fit is None else len(self.fit)

    def order(self, gen: torch.Generator) -> torch.Tensor:
        """A seeded random order of the fitted LR voxels (indices into ``vals``)."""
        perm = torch.randperm(self.n, generator=gen).to(self.vals.device)
        return perm if self.fit is None else self.fit[perm]


def split_held_out(
    n: int, fraction: float, seed: int, max_voxels: int | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Sorted indices of ``n`` LR voxels split at random into fitted and held out (``fraction``,
    at most ``max_voxels``, at least one of each); None when ``fraction`` is 0."""
    if fraction <= 0:
        return None
    held = min(max(1, round(n * fraction)), n - 1, max_voxels or n)
    if held < 1:
        raise InputError("train.holdout needs at least two LR voxels")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[held:]), np.sort(perm[:held])


def held_out_split(
    stacks: list[Stack], t: TrainConfig, seed: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The run's :func:`split_held_out` of the LR voxels used for training (``train.holdout``)."""
    n = sum(int(_used(s).sum()) for s in stacks)
    # seed + 2: the weights take the seed itself, the sample order seed + 1
    return split_held_out(n, t.holdout, seed + 2, t.holdout_max_voxels)


def fitted_masks(stacks: list[Stack], t: TrainConfig, seed: int) -> list[np.ndarray] | None:
    """Per stack, the mask of the LR voxels a run with ``seed`` fits (None: nothing held out)."""
    split = held_out_split(stacks, t, seed)
    if split is None:
        return None
    used = [_used(s) for s in stacks]
    fit = np.zeros(sum(u.size for u in used), dtype=bool)
    fit[np.flatnonzero(np.concatenate(used))[split[0]]] = True
    parts = np.split(fit, np.cumsum([u.size for u in used])[:-1])
    return [m.reshape(s.shape) for s, m in zip(stacks, parts, strict=True)]


def prepare_data(
    stacks: list[Stack], cfg: IremConfig, device: torch.device, seed: int = 0
) -> TrainingData:
    """The LR voxels as :class:`TrainingData` on ``device``, held out as drawn from ``seed``."""
    coords, vals, norm = training_data(stacks)
    vectors, owner = slice_vectors(stacks, norm)
    split = held_out_split(stacks, cfg.train, seed)
    fitted = len(vals) if split is None else len(split[0])
    batch = min(cfg.train.batch_size, fitted)
    arrays = [coords, vals, vectors, owner, *(split or (None, None))]
    c, v, vec, own, fit, held = (a if a is None else torch.from_numpy(a).to(device) for a in arrays)
    # the last partial batch is dropped (BatchNorm)
    return TrainingData(c, v, vec, own, norm, batch, max(1, fitted // batch), fit, held)


def grid_prior(t: TrainConfig) -> GridPrior:
    """The grid INR's feature-grid prior as ``t`` configures it (dense and hashed levels)."""
    return GridPrior(t.grid_smoothness, t.grid_prior, t.grid_prior_delta, t.grid_smoothness_large)


def build_optimizer(model: torch.nn.Module, cfg: IremConfig) -> torch.optim.Optimizer:
    """Adam (fused: the same algorithm in one pass); a grid INR's grids get ``train.lr_grid``."""
    t = cfg.train
    groups = [{"params": list(model.parameters())}]
    if isinstance(model, GridINR):
        grids = {"params": model.grid_parameters(), "lr": t.lr_grid}
        groups = [grids, {"params": list(model.mlp.parameters())}]
    return torch.optim.Adam(groups, lr=t.lr, betas=tuple(t.betas), eps=t.eps, fused=True)


class LearningRate:
    """An optimiser's rates: the start rates times ``lr_decay ** (epoch // lr_step_epochs)``
    (``lr_schedule: step``) or ``lr_final ** done`` (``budget``: ``done`` the fraction of the steps
    or seconds behind, whichever is further), ramped up over ``lr_warmup_steps``; stateless."""

    def __init__(
        self, opt: torch.optim.Optimizer, t: TrainConfig, total_steps: int,
        budget_seconds: float | None,
    ):  # fmt: skip
        self.opt, self.t, self.total_steps = opt, t, total_steps
        self.budget_seconds = budget_seconds
        self.base = [float(g["lr"]) for g in opt.param_groups]

    def factor(self, steps: int, seconds: float, epoch: int) -> float:
        """Multiplier of the start rates for the step after ``steps`` steps and ``seconds``."""
        t = self.t
        warm = min(1.0, (steps + 1) / t.lr_warmup_steps) if t.lr_warmup_steps > 0 else 1.0
        if t.lr_schedule == "step":
            return warm * t.lr_decay ** (epoch // t.lr_step_epochs)
        done = steps / self.total_steps
        if self.budget_seconds is not None:
            done = max(done, seconds / self.budget_seconds)
        return warm * t.lr_final ** min(done, 1.0)

    def step(self, steps: int, seconds: float, epoch: int) -> None:
        """Set the rates of the next optimiser step."""
        f = self.factor(steps, seconds, epoch)
        for group, base in zip(self.opt.param_groups, self.base, strict=True):
            group["lr"] = base * f


def slice_profile_points(t: TrainConfig, thickness: list[float]) -> int:
    """Points across each thick slice: ``profile_points``, or one per ``profile_spacing_mm`` mm."""
    if t.profile_spacing_mm <= 0 or not thickness:
        return t.profile_points
    return max(1, math.ceil(max(thickness) / t.profile_spacing_mm - 1e-6))


def profile_offsets(n: int, points: int, gen: torch.Generator) -> torch.Tensor:
    """``(n, points)`` positions across a slice in [-0.5, 0.5], one per stratum, jittered."""
    base = (torch.arange(points, dtype=torch.float32) + 0.5) / points - 0.5
    jitter = (torch.rand(n, points, generator=gen) - 0.5) / points
    return base + jitter


def _forward(
    model: torch.nn.Module, data: TrainingData, idx: torch.Tensor, points: int, jitter_seed: int
) -> torch.Tensor:
    """Predicted intensities of the LR voxels ``idx``: at the centre, or the mean over ``points``
    jittered points across the slice (a generator per step: resumes stay identical)."""
    if points == 1:
        return model(data.coords[idx])
    jitter = torch.Generator().manual_seed(jitter_seed)
    offsets = profile_offsets(len(idx), points, jitter).to(data.coords.device)
    vec = data.vectors[data.owner[idx]]
    across = data.coords[idx][:, None, :] + offsets[..., None] * vec[:, None, :]
    return model(across.reshape(-1, 3)).view(len(idx), points).mean(dim=1)


def inputs_to_unit(grid: Grid, norm: Normaliser) -> np.ndarray:
    """``(3, 4)`` affine from network inputs to ``grid``'s ``grid_sample`` coordinates."""
    to_mm = np.diag([norm.half_extent] * 3 + [1.0])
    to_mm[:3, 3] = norm.centre
    to_ijk = np.linalg.inv(grid.affine) @ to_mm
    n = np.asarray(grid.shape, dtype=np.float64)
    scale = np.where(n > 1, 2.0 / np.maximum(n - 1, 1), 0.0)
    unit = scale[:, None] * to_ijk[:3]
    unit[:, 3] -= np.where(n > 1, 1.0, 0.0)
    return unit


def rebase(model: GridINR, image: np.ndarray, grid: Grid, norm: Normaliser, head: str) -> None:
    """Make ``model`` ``image + network`` (:meth:`GridINR.set_base`), ``image`` on ``grid``."""
    device = model.extent.device
    volume = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 1, 0))).to(device)
    unit = torch.from_numpy(inputs_to_unit(grid, norm)).to(device)
    model.set_base(volume / norm.intensity_scale, unit, head)


def _fingerprint(cfg: IremConfig, n: int, seed: int, thickness: list[float]) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: config, data size, seed, slice thicknesses."""
    d = cfg.to_dict()
    for key in ("time_budget", "time_per_mvoxel", "checkpoint_every"):
        d["train"].pop(key, None)
    d.pop("reconstruct", None)
    return {"config": d, "samples": n, "seed": seed, "thickness": thickness}


@dataclass
class RunState:
    """Where a run is: the position in the epochs, steps, training seconds and losses."""

    epoch: int = 0
    step_in_epoch: int = 0
    steps: int = 0
    seconds: float = 0.0
    running: float = 0.0
    loss: float = float("nan")
    history: list[float] = field(default_factory=list)

    def record(self, loss: float) -> None:
        """Count a step and update the smoothed loss."""
        self.steps += 1
        self.loss = loss
        self.running = loss if self.steps == 1 else 0.98 * self.running + 0.02 * loss


#: The held-out loss's fall below its start (a fraction) that marks a run's escape step.
ESCAPE_DROP = 0.01


def plateaued(
    trace: list[tuple[int, float]], epoch_steps: int, epochs: int, window: int, min_drop: float
) -> bool:
    """Whether the lowest loss in the last ``window`` epochs is not ``min_drop`` below the best
    before them (``trace``: step and held-out loss)."""
    start = (epochs - window) * epoch_steps
    before = [v for s, v in trace if s <= start]
    after = [v for s, v in trace if s > start]
    if window < 1 or start <= 0 or not before or not after:
        return False
    return min(after) > (1 - min_drop) * min(before)


def _changing_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of what training changes: the parameters and the BatchNorm statistics."""
    state = {k: v.detach().clone() for k, v in model.named_parameters()}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            for b, v in module.named_buffers(recurse=False):
                state[f"{name}.{b}" if name else b] = v.detach().clone()
    return state


@dataclass
class HeldOut:
    """The held-out LR voxels' loss along a run, and the model state where it was lowest."""

    trace: list[tuple[int, float]] = field(default_factory=list)
    best_loss: float = float("inf")
    best_step: int = 0
    best_state: dict[str, torch.Tensor] | None = None

    def record(self, step: int, loss: float, model: torch.nn.Module) -> None:
        """Log ``loss`` at ``step``; keep the model's state if it is the lowest yet."""
        self.trace.append((step, loss))
        if loss < self.best_loss:
            self.best_loss, self.best_step = loss, step
            self.best_state = _changing_state(model)

    def restore(self, model: torch.nn.Module) -> None:
        """Put the kept state back into ``model`` (nothing kept: no change)."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state, strict=False)

    def summary(self, voxels: int) -> dict[str, Any]:
        """The sidecar's account: voxels, best step and loss, start loss, escape step (the first
        :data:`ESCAPE_DROP` below the start; None: a flat run) and the trace."""
        first = self.trace[0][1] if self.trace else None
        return {
            "voxels": voxels,
            "best_step": self.best_step,
            "best_loss": self.best_loss,
            "start_loss": first,
            "escape_step": next((s for s, v in self.trace if v <= (1 - ESCAPE_DROP) * first), None),
            "escape_drop": ESCAPE_DROP,
            "trace": [[s, v] for s, v in self.trace],
        }


class Stopwatch:
    """Training seconds on an injectable clock, with time spent in callbacks left out."""

    def __init__(self, clock: Callable[[], float], before: float = 0.0):
        self._clock, self._before = clock, before
        self._t0 = self._last = clock()

    def elapsed(self) -> float:
        """Training seconds now (reads the clock once)."""
        self._last = self._clock()
        return self._before + self._last - self._t0

    def exclude_since_last_read(self) -> None:
        """Leave the time since the last :meth:`elapsed` out of the training seconds."""
        now = self._clock()
        self._t0 += now - self._last
        self._last = now


class Trainer:
    """Fits a representation to the LR voxels of stacks in normalised space; ``seed`` seeds the
    weights, order and jitter, ``target_voxels`` (default: ``grid``'s size) per-voxel budgets."""

    def __init__(
        self,
        stacks: list[Stack],
        cfg: IremConfig,
        *,
        seed: int = 0,
        device: torch.device | None = None,
        target_voxels: int | None = None,
        clock: Callable[[], float] = time.perf_counter,
        grid: Grid | None = None,
        start: np.ndarray | None = None,
    ):
        self.cfg, self.seed, self.clock, t = cfg, int(seed), clock, cfg.train
        if target_voxels is None and grid is not None:
            target_voxels = grid.size
        self.device = device or torch.device("cpu")
        self.data = prepare_data(stacks, cfg, self.device, seed=self.seed)
        self.model = build_model(cfg, self.seed, self.data.norm).to(self.device)
        self.opt = build_optimizer(self.model, cfg)
        # the reported loss is the data term alone
        self.prior = grid_prior(t)
        self.budget = resolve_budget(
            t.time_budget, t.time_per_mvoxel, target_voxels, t.steps, t.steps_per_mvoxel
        )
        self.total_steps = min(t.epochs * self.data.steps_per_epoch, self.budget.steps or math.inf)
        self.lr = LearningRate(self.opt, t, self.total_steps, self.budget.seconds)
        self.gen = torch.Generator().manual_seed(self.seed + 1)
        self.state, self.held_out = RunState(), HeldOut()
        self.resumed, self._last_checkpoint = False, 0.0
        thickness = [float(s.slice_thickness) for s in stacks]
        self.profile_points = slice_profile_points(t, thickness)
        self.precision = detect_precision(t.precision, self.device, cfg.model.kind)
        self.fingerprint = _fingerprint(cfg, self.data.n, self.seed, thickness)
        if start is not None:
            self._set_base(start, grid)
        elif t.base != "none":
            raise InputError(f"train.base {t.base} needs a start image (irem.training.start)")

    def _set_base(self, image: np.ndarray, grid: Grid | None) -> None:
        """Make the model ``start image + network``, ``image`` on the target ``grid``."""
        if grid is None or tuple(image.shape) != tuple(grid.shape):
            raise InputError("the start image must lie on the target grid")
        if not isinstance(self.model, GridINR):
            raise InputError("a start image needs model.kind: grid")
        rebase(self.model, image, grid, self.norm, self.cfg.train.base_head)

    @property
    def norm(self) -> Normaliser:
        return self.data.norm

    def step(self, idx: torch.Tensor) -> float:
        """One optimisation step on the LR voxels ``idx``; returns the batch's data term (MSE)."""
        jitter_seed = self.seed * 1_000_003 + self.state.steps
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision.bf16):
            pred = _forward(self.model, self.data, idx, self.profile_points, jitter_seed)
        loss = torch.mean((pred.float() - self.data.vals[idx]) ** 2)
        self.opt.zero_grad(set_to_none=True)
        if isinstance(self.model, GridINR):
            self.model.backward(loss, self.prior)
        else:
            loss.backward()
        self.opt.step()
        return float(loss.detach())

    @torch.no_grad()
    def held_out_loss(self) -> float:
        """MSE of the model (eval mode) on the held-out LR voxels, at fixed profile points."""
        d = self.data
        assert d.held_out is not None
        training = self.model.training
        self.model.eval()
        total = 0.0
        for start in range(0, len(d.held_out), d.batch):
            idx = d.held_out[start : start + d.batch]
            pred = _forward(self.model, d, idx, self.profile_points, self.seed * 1_000_003 - 1)
            total += float((pred.float() - d.vals[idx]).square().sum())
        self.model.train(training)
        return total / len(d.held_out)

    def _validate(self, force: bool = False) -> None:
        """Record the held-out loss every ``train.validate_every`` steps, or now (``force``)."""
        s, trace = self.state, self.held_out.trace
        if self.data.held_out is None or (trace and trace[-1][0] == s.steps):
            return
        if force or s.steps % self.cfg.train.validate_every == 0:
            self.held_out.record(s.steps, self.held_out_loss(), self.model)

    def _save(self, gen_state: torch.Tensor) -> None:
        """Checkpoint what a resumed run needs, if asked (``gen_state`` re-draws this epoch)."""
        if self.checkpoint is None:
            return
        s = self.state
        state = {
            "fingerprint": self.fingerprint, "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(), "generator": gen_state, "epoch": s.epoch,
            "step_in_epoch": s.step_in_epoch, "steps": s.steps, "training_seconds": s.seconds,
            "history": s.history, "running": s.running,
            "held_out": dict(vars(self.held_out)),  # shallow: torch.save writes the tensors
        }  # fmt: skip
        with atomic_path(self.checkpoint) as tmp:
            torch.save(state, tmp)

    def resume(self, path: Path) -> None:
        """Continue from the checkpoint at ``path`` (refused if it belongs to another run)."""
        try:
            state = torch.load(path, map_location=self.device, weights_only=False)
        except Exception as exc:  # torch raises many types for garbage
            raise InputError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            raise InputError(
                f"{path}: checkpoint belongs to another run (config, data or seed differ)"
            )
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["generator"])
        self.state = RunState(state["epoch"], state["step_in_epoch"], state["steps"],
                              state["training_seconds"], state.get("running", 0.0),
                              history=list(state["history"]))  # fmt: skip
        if state.get("held_out") is not None:
            self.held_out = HeldOut(**state["held_out"])
        self._last_checkpoint = self.state.seconds
        self.resumed = True

    def fit(
        self,
        *,
        checkpoint: Path | None = None,
        progress: bool = True,
        progress_stream: TextIO | None = None,
        on_step: OnStep | None = None,
        on_epoch: OnEpoch | None = None,
    ) -> TrainResult:
        """Train until the epochs, budget or held-out plateau end it or ``on_step`` returns True,
        checkpointing and showing progress on ``progress_stream`` (stderr); ends in eval mode."""
        s = self.state
        self.checkpoint, self.on_step, self.on_epoch = checkpoint, on_step, on_epoch
        bar = Progress(self.total_steps, self.budget.seconds, start_steps=s.steps,
                       start_seconds=s.seconds, enabled=progress,
                       stream=progress_stream)  # fmt: skip
        watch = Stopwatch(self.clock, s.seconds)
        self.model.train()
        self._validate()
        stop: str | None = None
        with bar:
            while stop is None and s.epoch < self.cfg.train.epochs:
                stop = self._run_epoch(watch, bar)
        if stop is None:
            stop = "epochs"
            self._save(self.gen.get_state())
        self._validate(force=True)
        self.held_out.restore(self.model)
        self.model.eval()
        return self._result(stop)

    def _run_epoch(self, watch: Stopwatch, bar: Progress) -> str | None:
        """The rest of the epoch, its callback (untimed, eval mode) and plateau test; any stop."""
        s, d, t, trace = self.state, self.data, self.cfg.train, self.held_out.trace
        epoch_gen = self.gen.get_state()
        perm = d.order(self.gen)
        for i in range(s.step_in_epoch, d.steps_per_epoch):
            self.lr.step(s.steps, s.seconds, s.epoch)
            s.record(self.step(perm[i * d.batch : (i + 1) * d.batch]))
            s.step_in_epoch = i + 1
            self._validate()
            stop = self._check_stop(watch)
            bar.update(s.steps, s.seconds, s.running)
            if stop is not None:
                self.gen.set_state(epoch_gen)  # a resume re-draws this epoch's order
                self._save(epoch_gen)
                return stop
            if s.seconds - self._last_checkpoint >= t.checkpoint_every:
                self._save(epoch_gen)
                self._last_checkpoint = s.seconds
        s.history.append(s.running)
        s.epoch += 1
        s.step_in_epoch = 0
        if self.on_epoch is None and not t.plateau_epochs:
            return None
        s.seconds = watch.elapsed()
        self._validate(force=True)  # with a held-out set, the trace now ends at this step
        if self.on_epoch is not None:
            self.model.eval()
            self.on_epoch(s.epoch, s.steps, trace[-1][1] if trace else None, self.model, self.norm)
            self.model.train()
        watch.exclude_since_last_read()
        if plateaued(trace, d.steps_per_epoch, s.epoch, t.plateau_epochs, t.plateau_min_drop):
            self._save(self.gen.get_state())
            return "plateau"
        return None

    def _check_stop(self, watch: Stopwatch) -> str | None:
        """Read the clock, run the callback (untimed) and check the budget."""
        s = self.state
        s.seconds = watch.elapsed()
        if self.on_step is not None:
            asked = self.on_step(s.steps, s.seconds, self.model, self.norm)
            self.model.train()
            watch.exclude_since_last_read()
            if asked:
                return "callback"
        if self.budget.seconds is not None and s.seconds >= self.budget.seconds:
            return "budget"
        if self.budget.steps is not None and s.steps >= self.budget.steps:
            return "steps"
        return None

    def _result(self, stop: str) -> TrainResult:
        s, held = self.state, self.data.held_out
        r = TrainResult(
            s.epoch, s.steps, s.running if math.isfinite(s.running) else s.loss, s.seconds, stop,
            self.resumed, list(s.history), self.budget, self.profile_points,
            {} if held is None else self.held_out.summary(len(held)), self.precision.to_dict(),
        )  # fmt: skip
        log.info("trained %d steps (%d epochs) in %.1f s, stopped by %s, loss %.4g", r.steps,
                 r.epochs_completed, r.training_seconds, r.stopped_by, r.final_loss)  # fmt: skip
        return r


#: The keyword arguments of :meth:`Trainer.fit` that :func:`train` passes on.
_FIT_ARGS = ("progress", "progress_stream", "on_step", "on_epoch")


def train(
    stacks: list[Stack],
    cfg: IremConfig,
    *,
    checkpoint: Path | None = None,
    resume: bool = False,
    **kwargs: Any,
) -> tuple[torch.nn.Module, Normaliser, TrainResult]:
    """Fit IREM with a :class:`Trainer` (``kwargs``: its and :meth:`Trainer.fit`'s), resuming from
    ``checkpoint`` if asked and it exists; the model (eval mode), normaliser and summary."""
    fit = {k: kwargs.pop(k) for k in _FIT_ARGS if k in kwargs}
    t = Trainer(stacks, cfg, **kwargs)
    if resume and checkpoint is not None and checkpoint.exists():
        t.resume(checkpoint)
    elif resume:
        log.warning("no checkpoint at %s; starting from scratch", checkpoint)
    result = t.fit(checkpoint=checkpoint, **fit)
    return t.model, t.norm, result
