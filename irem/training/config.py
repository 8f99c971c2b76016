"""IREM configuration: the paper's defaults, YAML files and ``KEY=VALUE`` overrides."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from irem.errors import InputError
from irem.models.precision import PRECISIONS


@dataclass
class ModelConfig:
    """Network hyperparameters: ``kind: irem`` is the paper's network (Fourier features, ``depth``
    layers of ``width`` with BatchNorm, skips); ``kind: grid`` the fast CPU representation of
    :mod:`irem.models.grid_inr` (``levels`` feature grids, the finest at ``finest_mm``, levels over
    ``dense_max_nodes`` nodes hashed into ``hash_rows`` rows; an MLP of ``hidden_layers``)."""

    kind: str = "irem"
    fourier_dim: int = 256
    sigma: float = 1.0
    width: int = 256
    depth: int = 18
    skips: tuple[int, ...] = (6, 12)
    levels: int = 5
    features: int = 2
    finest_mm: float = 1.0
    hidden_layers: int = 1
    dense_max_nodes: int = 2**21
    hash_rows: int = 2**19


@dataclass
class TrainConfig:
    """Optimisation hyperparameters (paper section 3.2); grid options need ``model.kind: grid``."""

    epochs: int = 2000
    batch_size: int = 2500  # LR voxels per step
    lr: float = 1e-4  # learning rate (of the MLP with model.kind: grid)
    lr_grid: float = 1e-2  # learning rate of the feature grids
    #: weight of the grid prior on neighbouring node differences (0: none; not in the reported loss)
    grid_smoothness: float = 0.0
    grid_smoothness_large: float | None = None  # its weight on hashed levels (None: the same)
    grid_prior: str = "tk1"  # penalty of a difference d: tk1 (d**2), huber or tv
    grid_prior_delta: float = 0.01  # where huber and tv turn from quadratic to linear in |d|
    #: points across each thick slice whose mean is fitted to the LR voxel (1: its centre)
    profile_points: int = 1
    profile_spacing_mm: float = 0.0  # > 0: a profile point per that many mm of the thickest slice
    base: str = "none"  # srr_tv: the model is a start image (irem.training.start) plus the network
    #: fraction of the LR voxels held out (at most holdout_max_voxels), their loss checked every
    #: validate_every steps; a run returns the model where it was lowest
    holdout: float = 0.0
    holdout_max_voxels: int = 32768
    validate_every: int = 25
    #: > 0: stop when the held-out loss's lowest over the last plateau_epochs epochs is not
    #: plateau_min_drop (a fraction) below its lowest before
    plateau_epochs: int = 0
    plateau_min_drop: float = 0.005
    base_alphas: tuple[float, ...] = (0.01,)  # SRR-TV start weights; the held-out voxels pick one
    base_iterations: int = 20  # ADMM iterations of the start image
    #: > 0 with held-out voxels: the network refines the start of the weight this many places
    #: above the held-out choice (the last at most), and the run returns SRR-TV at the choice (of
    #: all LR voxels) when that predicts the held-out voxels better (irem.training.start)
    base_smoother: int = 0
    #: with base_smoother: return the better of the network's image and that SRR-TV on the
    #: held-out voxels, or their blend that predicts them best
    base_return: str = "better"
    base_head: str = "zero"  # the network starts at zero: zero output layer, or cancel its output
    precision: str = "auto"  # bf16 autocast, fp32, or auto (irem.models.precision)
    lr_decay: float = 0.5  # lr_schedule step: rates times lr_decay every lr_step_epochs epochs
    lr_step_epochs: int = 500
    lr_schedule: str = "step"  # step (the paper), or budget: down to lr_final over the run
    lr_final: float = 0.1
    lr_warmup_steps: int = 0  # rates ramped up linearly over this many first steps (0: none)
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's moment decay rates
    eps: float = 1e-8  # Adam's epsilon
    time_budget: float | None = None  # seconds (the cap with time_per_mvoxel)
    time_per_mvoxel: float | None = None  # seconds per million target grid voxels
    steps: int | None = None  # optimiser steps (the cap with steps_per_mvoxel)
    steps_per_mvoxel: float | None = None  # optimiser steps per million target grid voxels
    checkpoint_every: float = 60.0  # training seconds between checkpoints


@dataclass
class ReconstructConfig:
    """Dense-grid evaluation: points per forward pass (small chunks stay in the CPU caches)."""

    chunk: int = 8192


@dataclass
class IremConfig:
    """Everything that defines an IREM run besides its inputs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    reconstruct: ReconstructConfig = field(default_factory=ReconstructConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Options that are a float, or an integer, or null (``None``: unset).
_OPTIONAL_FLOATS = ("time_budget", "time_per_mvoxel", "grid_smoothness_large", "steps_per_mvoxel")
_OPTIONAL_INTS = ("steps",)


def _coerce(section: str, key: str, value: Any, current: Any) -> Any:
    """``value`` as the type of the key's ``current`` value."""
    if isinstance(current, str):
        return str(value)
    try:
        if isinstance(current, tuple):
            if isinstance(value, str):
                value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
            return tuple(type(current[0])(v) if current else int(v) for v in value)
        optional_float = current is None or key in _OPTIONAL_FLOATS
        if (optional_float or key in _OPTIONAL_INTS) and value in (None, "null", "none", "None"):
            return None
        if key in _OPTIONAL_INTS or (isinstance(current, int) and not optional_float):
            f = float(value)
            if f != int(f):
                raise ValueError
            return int(f)
        if optional_float or isinstance(current, float):
            return float(value)
    except (TypeError, ValueError):
        kind = type(current).__name__
        raise InputError(f"config: {section}.{key} = {value!r} is not a valid {kind}") from None
    return value


#: A test of a config value (given the whole config, for the rules that relate two keys).
_Test = Callable[[Any, IremConfig], bool]
_POSITIVE: tuple[_Test, str] = (lambda v, _: v > 0, "must be positive")


def _at_least(bound: int) -> tuple[_Test, str]:
    return (lambda v, _: v >= bound), f"must be >= {bound}"


def _one_of(*options: str) -> tuple[_Test, str]:
    return (lambda v, _: v in options), f"must be {', '.join(options[:-1])} or {options[-1]}"


#: The config's rules in the order they are reported: ``section.key``, a test of its value and
#: what the value must be. ``None`` passes for the optional keys.
# fmt: off
_RULES: tuple[tuple[str, _Test, str], ...] = (
    ("model.fourier_dim", lambda v, _: v >= 2 and v % 2 == 0, "(2L) must be even and >= 2"),
    ("model.sigma", *_POSITIVE),
    ("model.width", *_at_least(1)),
    ("model.depth", *_at_least(2)),
    ("model.skips", lambda v, c: all(0 < s < c.model.depth for s in v), "must lie in 1..depth-1"),
    ("train.epochs", *_at_least(1)),
    ("train.batch_size", lambda v, _: v >= 2, "must be >= 2 (BatchNorm)"),
    ("train.lr", *_POSITIVE),
    ("train.lr_decay", lambda v, _: 0 < v <= 1, "must be in (0, 1]"),
    ("train.lr_step_epochs", *_at_least(1)),
    ("train.lr_schedule", *_one_of("step", "budget")),
    ("train.lr_final", lambda v, _: 0 < v <= 1, "must be in (0, 1]"),
    ("train.lr_warmup_steps", *_at_least(0)),
    ("train.betas", lambda v, _: len(v) == 2 and all(0 <= b < 1 for b in v),
     "must be two numbers in [0, 1)"),
    ("train.eps", *_POSITIVE),
    ("train.time_budget", *_POSITIVE),
    ("train.time_per_mvoxel", *_POSITIVE),
    ("train.steps", *_at_least(1)),
    ("train.steps_per_mvoxel", *_POSITIVE),
    ("train.checkpoint_every", *_POSITIVE),
    ("reconstruct.chunk", *_at_least(1)),
    ("model.kind", *_one_of("irem", "grid")),
    ("model.dense_max_nodes", *_at_least(0)),
    ("model.hash_rows", *_at_least(1)),
    ("model.levels", lambda v, c: v >= 1 and c.model.features >= 1,
     "and model.features must be >= 1"),
    ("model.finest_mm", *_POSITIVE),
    ("model.hidden_layers", *_at_least(0)),
    ("train.lr_grid", *_POSITIVE),
    ("train.grid_smoothness", *_at_least(0)),
    ("train.grid_smoothness_large", *_at_least(0)),
    ("train.grid_smoothness", lambda v, c: v == 0 or c.model.kind == "grid",
     "needs model.kind: grid"),
    ("train.grid_prior", *_one_of("tk1", "huber", "tv")),
    ("train.grid_prior_delta", *_POSITIVE),
    ("train.profile_points", *_at_least(1)),
    ("train.profile_spacing_mm", *_at_least(0)),
    ("train.profile_points", lambda v, c: v == 1 or c.train.profile_spacing_mm == 0,
     "is unused when train.profile_spacing_mm > 0 sets the points; "
     "set train.profile_spacing_mm: 0 for a fixed number"),
    ("train.precision", *_one_of(*PRECISIONS)),
    ("train.base", *_one_of("none", "srr_tv")),
    ("train.holdout", lambda v, _: 0 <= v < 1, "must be in [0, 1)"),
    ("train.validate_every", *_at_least(1)),
    ("train.holdout_max_voxels", *_at_least(1)),
    ("train.plateau_epochs", *_at_least(0)),
    ("train.plateau_min_drop", lambda v, _: 0 <= v < 1, "must be in [0, 1)"),
    ("train.plateau_epochs", lambda v, c: v == 0 or c.train.holdout > 0, "needs train.holdout > 0"),
    ("train.base", lambda v, c: v == "none" or c.model.kind == "grid", "needs model.kind: grid"),
    ("train.base_alphas", lambda v, _: len(v) >= 1 and all(a >= 0 for a in v),
     "must be one or more weights >= 0"),
    ("train.base_iterations", *_at_least(1)),
    ("train.base_smoother", *_at_least(0)),
    ("train.base_return", *_one_of("better", "blend")),
    ("train.base_head", *_one_of("zero", "cancel")),
)
# fmt: on


def _check(cfg: IremConfig) -> None:
    """Raise an :class:`InputError` for the first rule ``cfg`` breaks."""
    for key, test, text in _RULES:
        section, _, name = key.partition(".")
        value = getattr(getattr(cfg, section), name)
        if not ((value is None and name in _OPTIONAL_FLOATS + _OPTIONAL_INTS) or test(value, cfg)):
            raise InputError(f"config: {key} {text}")


def apply_overrides(cfg: IremConfig, overrides: dict[str, Any]) -> IremConfig:
    """Set ``section.key`` values, checking names and types; returns the same object."""
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        sub = getattr(cfg, section, None) if section in ("model", "train", "reconstruct") else None
        if sub is None or not key or not hasattr(sub, key):
            raise InputError(f"config: unknown key {dotted!r}")
        setattr(sub, key, _coerce(section, key, value, getattr(sub, key)))
    _check(cfg)
    return cfg


def config_from_dict(tree: dict[str, Any]) -> IremConfig:
    """An :class:`IremConfig` from :meth:`IremConfig.to_dict` output (checked like a YAML file)."""
    if not isinstance(tree, dict):
        raise InputError("config: expected a mapping of sections")
    return apply_overrides(IremConfig(), flatten(tree))


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"width": 8}}`` -> ``{"model.width": 8}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


PACKAGED = Path(__file__).parents[1] / "configs"


def packaged_configs() -> list[str]:
    """Names of the configurations shipped with the package (``paper``, ``fast``)."""
    return sorted(p.stem for p in PACKAGED.glob("*.yaml"))


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> IremConfig:
    """The paper's defaults, updated by a YAML file (or packaged config name) and then overrides."""
    cfg = IremConfig()
    if path is not None:
        p = Path(path)
        if not p.exists() and str(path) in packaged_configs():
            p = PACKAGED / f"{path}.yaml"
        elif not p.exists():
            names = ", ".join(packaged_configs())
            raise InputError(f"{p}: no such config file (packaged configs: {names})")
        try:
            tree = yaml.safe_load(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(f"{p}: cannot read config ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise InputError(f"{p}: invalid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance({} if tree is None else tree, dict):
            raise InputError(f"{p}: a config must be a mapping of sections")
        apply_overrides(cfg, flatten(tree or {}))
    apply_overrides(cfg, overrides or {})
    return cfg


def parse_set(items: list[str]) -> dict[str, str]:
    """Parse repeated ``--set KEY=VALUE`` arguments."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out
