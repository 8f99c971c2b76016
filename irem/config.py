"""IREM configuration: the paper's defaults, YAML files and ``KEY=VALUE`` overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from irem.errors import InputError


@dataclass
class ModelConfig:
    """Network hyperparameters.

    ``kind: irem`` is the paper's network (section 2.2: Fourier features, ``depth`` layers of
    ``width`` with BatchNorm, skips); ``kind: grid`` is the fast CPU representation of
    :mod:`irem.grid_inr` (``levels`` dense feature grids, the finest at ``finest_mm``, then an MLP of
    ``hidden_layers`` layers of ``width``); ``grid_update: sparse`` updates only the nodes a batch
    touches on levels of more than ``dense_max_nodes`` nodes (lazy Adam, :mod:`irem.optim`; 2^21:
    the finest level of a volume of more than about 2 M voxels at 1 mm), ``hashed`` hashes those
    levels into tables of ``hash_rows`` rows (a step's cost then does not grow with the
    volume), ``dense`` updates every node.
    """

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
    grid_update: str = "dense"
    dense_max_nodes: int = 2**21
    hash_rows: int = 2**19


@dataclass
class TrainConfig:
    """Optimisation hyperparameters (paper section 3.2).

    ``profile_points`` > 1 fits the mean of that many points spread evenly across each thick slice
    (a box slice profile of the stack's slice thickness, stratified and jittered each step) to the
    LR voxel, instead of the network's value at the voxel centre (the paper: 1). ``lr_grid`` is the
    learning rate of the feature grids of ``model.kind: grid`` (``lr`` is the MLP's), and
    ``grid_smoothness`` the weight of a first-order Tikhonov penalty on them (the squared
    difference of neighbouring nodes, averaged over nodes and features, summed over levels and
    axes; 0: none), the prior that fills in what three thick-slice stacks leave undetermined, as
    SRR's tk1 regulariser does (the reported loss is the data term alone). ``grid_prior`` picks
    that penalty of a node difference ``d``: ``tk1`` (``d**2``), or the edge-preserving ``huber``
    or ``tv`` (smoothed total variation), both ``d**2`` near 0 and linear in ``|d|`` beyond about
    ``grid_prior_delta`` (see :func:`irem.grid_inr.edge_penalty`). ``grid_smoothness_large``, when
    set, is that weight on the levels of more than ``model.dense_max_nodes`` nodes instead (the
    finest levels of volumes over about 2 M voxels, whichever ``model.grid_update``), so that
    large volumes can take a prior of their own while crops keep ``grid_smoothness``.
    ``profile_spacing_mm`` > 0 sets the number of those points from the slices instead: one per
    ``profile_spacing_mm`` of the thickest stack's slice thickness (rounded up), so that thicker
    slices get more points (:func:`irem.train.slice_profile_points`).
    ``image_prior`` (weight; 0: none) adds a prior on the represented image itself, as SRR-TV's
    regulariser is: each step renders a random ``image_prior_block``-cubed block of points spaced
    ``model.finest_mm`` apart inside the stacks' box and adds the mean ``image_prior_kind``
    penalty (:func:`irem.grid_inr.edge_penalty`, delta ``image_prior_delta`` in normalised
    intensity) of neighbouring points' differences along each axis, summed over the axes.
    ``lr_schedule: step`` (the paper) multiplies the learning rates by ``lr_decay`` every
    ``lr_step_epochs`` epochs; ``budget`` lowers them exponentially with the fraction of the run
    done (steps of ``epochs``, or seconds of ``time_budget``, whichever is further) to ``lr_final``
    times their start at its end, so that a time-budgeted run anneals before its end on any machine
    (its result then depends on the machine's speed, as the number of steps of any time-budgeted
    run does).
    ``base: srr_tv`` makes a ``model.kind: grid`` representation the sum of a start image and the
    network: the start image is SRR with total variation (box PSF, relative weight ``base_alpha``,
    ``base_iterations`` ADMM iterations; :func:`baselines.srr.srr`) of the same stacks on the
    target grid, and the network is fitted to what it leaves over; its time counts against the
    time budget. ``base_head`` sets how the network starts at zero: ``zero`` zeroes its output
    layer (the grids then get no gradient until that layer has grown); ``cancel`` keeps the
    layer's random weights and sets its bias to cancel the output of all-zero grid features (the
    network starts within ~1e-4 of zero and its grids learn from the first step).
    ``holdout`` > 0 keeps that fraction of the LR voxels (drawn from the seed; at most
    ``holdout_max_voxels``, so that checking them costs the same on any volume) out of the fit:
    their loss is measured every ``validate_every`` steps and at the end (and before the first step),
    and the run returns the model where it was lowest (early stopping on held-out data, so that
    the noise the fit takes in after that point is left out).
    ``batch_chunk`` > 0, when the grid INR has sparse levels (``model.grid_update: sparse`` on a
    volume whose finest level exceeds ``model.dense_max_nodes``), draws each batch as runs of that many
    neighbouring LR voxels (compact regions; every voxel still once per epoch) instead of
    independent voxels: a batch then touches about the same number of grid nodes on any volume,
    which keeps the sparse update's step cost independent of the volume's size
    (``benchmarks/inr_step_cost.py``). Without sparse levels it changes nothing (dense updates
    cost the same for any batch).
    ``precision: bf16`` runs forward and backward under bfloat16 autocast (weights and Adam stay
    float32).
    ``time_per_mvoxel`` (seconds per million target voxels) scales the time budget with the size of
    the output grid: the run gets ``time_per_mvoxel * voxels / 1e6`` seconds, capped by
    ``time_budget`` when both are set (see :func:`irem.train.resolve_budget`).
    """

    epochs: int = 2000
    batch_size: int = 2500
    batch_chunk: int = 0
    lr: float = 1e-4
    lr_grid: float = 1e-2
    grid_smoothness: float = 0.0
    grid_smoothness_large: float | None = None
    grid_prior: str = "tk1"
    grid_prior_delta: float = 0.01
    profile_points: int = 1
    profile_spacing_mm: float = 0.0
    image_prior: float = 0.0
    image_prior_kind: str = "huber"
    image_prior_delta: float = 0.01
    image_prior_block: int = 16
    base: str = "none"
    holdout: float = 0.0
    holdout_max_voxels: int = 32768
    validate_every: int = 25
    base_alpha: float = 0.01
    base_iterations: int = 20
    base_head: str = "zero"
    precision: str = "fp32"
    lr_decay: float = 0.5
    lr_step_epochs: int = 500
    lr_schedule: str = "step"
    lr_final: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    time_budget: float | None = None
    time_per_mvoxel: float | None = None
    checkpoint_every: float = 60.0


@dataclass
class ReconstructConfig:
    """Dense-grid evaluation: points per forward pass (small chunks stay in the CPU caches; measured
    on one thread with the paper's network: 1.5x faster for 8192 than for 262144,
    ``benchmarks/irem_speed.py throughput``)."""

    chunk: int = 8192


@dataclass
class IremConfig:
    """Everything that defines an IREM run besides its inputs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    reconstruct: ReconstructConfig = field(default_factory=ReconstructConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Options that are a float or null (``None``: unset).
_OPTIONAL_FLOATS = ("time_budget", "time_per_mvoxel", "grid_smoothness_large")


def _coerce(section: str, key: str, value: Any, current: Any) -> Any:
    name = f"{section}.{key}"
    if isinstance(current, bool):
        raise InputError(f"config: {name} cannot be set")
    if isinstance(current, str):
        return str(value)
    try:
        if isinstance(current, tuple):
            if isinstance(value, str):
                value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
            return tuple(type(current[0])(v) if current else int(v) for v in value)
        if current is None or key in _OPTIONAL_FLOATS:
            return None if value in (None, "null", "none", "None") else float(value)
        if isinstance(current, int):
            f = float(value)
            if f != int(f):
                raise ValueError
            return int(f)
        if isinstance(current, float):
            return float(value)
    except (TypeError, ValueError):
        raise InputError(
            f"config: {name} = {value!r} is not a valid {type(current).__name__}"
        ) from None
    return value


def _check(cfg: IremConfig) -> None:
    m, t = cfg.model, cfg.train
    checks = [
        (
            m.fourier_dim >= 2 and m.fourier_dim % 2 == 0,
            "model.fourier_dim (2L) must be even and >= 2",
        ),
        (m.sigma > 0, "model.sigma must be positive"),
        (m.width >= 1, "model.width must be >= 1"),
        (m.depth >= 2, "model.depth must be >= 2"),
        (all(0 < s < m.depth for s in m.skips), "model.skips must lie in 1..depth-1"),
        (t.epochs >= 1, "train.epochs must be >= 1"),
        (t.batch_size >= 2, "train.batch_size must be >= 2 (BatchNorm)"),
        (t.lr > 0, "train.lr must be positive"),
        (0 < t.lr_decay <= 1, "train.lr_decay must be in (0, 1]"),
        (t.lr_step_epochs >= 1, "train.lr_step_epochs must be >= 1"),
        (t.lr_schedule in ("step", "budget"), "train.lr_schedule must be step or budget"),
        (0 < t.lr_final <= 1, "train.lr_final must be in (0, 1]"),
        (
            len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas),
            "train.betas must be two numbers in [0, 1)",
        ),
        (t.eps > 0, "train.eps must be positive"),
        (t.time_budget is None or t.time_budget > 0, "train.time_budget must be positive"),
        (
            t.time_per_mvoxel is None or t.time_per_mvoxel > 0,
            "train.time_per_mvoxel must be positive",
        ),
        (t.checkpoint_every > 0, "train.checkpoint_every must be positive"),
        (cfg.reconstruct.chunk >= 1, "reconstruct.chunk must be >= 1"),
    ]
    checks += [
        (m.kind in ("irem", "grid"), "model.kind must be irem or grid"),
        (
            m.grid_update in ("dense", "sparse", "hashed"),
            "model.grid_update must be dense, sparse or hashed",
        ),
        (m.dense_max_nodes >= 0, "model.dense_max_nodes must be >= 0"),
        (m.hash_rows >= 1, "model.hash_rows must be >= 1"),
        (m.levels >= 1 and m.features >= 1, "model.levels and model.features must be >= 1"),
        (m.finest_mm > 0, "model.finest_mm must be positive"),
        (m.hidden_layers >= 0, "model.hidden_layers must be >= 0"),
        (t.lr_grid > 0, "train.lr_grid must be positive"),
        (t.grid_smoothness >= 0, "train.grid_smoothness must be >= 0"),
        (
            t.grid_smoothness_large is None or t.grid_smoothness_large >= 0,
            "train.grid_smoothness_large must be >= 0",
        ),
        (
            t.grid_smoothness == 0 or m.kind == "grid",
            "train.grid_smoothness needs model.kind: grid",
        ),
        (t.grid_prior in ("tk1", "huber", "tv"), "train.grid_prior must be tk1, huber or tv"),
        (t.grid_prior_delta > 0, "train.grid_prior_delta must be positive"),
        (t.profile_points >= 1, "train.profile_points must be >= 1"),
        (t.profile_spacing_mm >= 0, "train.profile_spacing_mm must be >= 0"),
        (t.image_prior >= 0, "train.image_prior must be >= 0"),
        (
            t.image_prior_kind in ("tk1", "huber", "tv"),
            "train.image_prior_kind must be tk1, huber or tv",
        ),
        (t.image_prior_delta > 0, "train.image_prior_delta must be positive"),
        (t.image_prior_block >= 2, "train.image_prior_block must be >= 2"),
        (t.precision in ("fp32", "bf16"), "train.precision must be fp32 or bf16"),
        (t.base in ("none", "srr_tv"), "train.base must be none or srr_tv"),
        (0 <= t.holdout < 1, "train.holdout must be in [0, 1)"),
        (t.batch_chunk >= 0, "train.batch_chunk must be >= 0"),
        (t.validate_every >= 1, "train.validate_every must be >= 1"),
        (t.holdout_max_voxels >= 1, "train.holdout_max_voxels must be >= 1"),
        (t.base == "none" or m.kind == "grid", "train.base needs model.kind: grid"),
        (t.base_alpha >= 0, "train.base_alpha must be >= 0"),
        (t.base_iterations >= 1, "train.base_iterations must be >= 1"),
        (t.base_head in ("zero", "cancel"), "train.base_head must be zero or cancel"),
    ]
    for ok, msg in checks:
        if not ok:
            raise InputError(f"config: {msg}")


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


PACKAGED = Path(__file__).parent / "configs"


def packaged_configs() -> list[str]:
    """Names of the configurations shipped with the package (``paper``, ``fast``)."""
    return sorted(p.stem for p in PACKAGED.glob("*.yaml"))


def resolve_config_path(path: str | Path) -> Path:
    """A config file path, or the name of a packaged configuration."""
    p = Path(path)
    if not p.exists() and str(path) in packaged_configs():
        return PACKAGED / f"{path}.yaml"
    if not p.exists():
        names = ", ".join(packaged_configs())
        raise InputError(f"{p}: no such config file (packaged configs: {names})")
    return p


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> IremConfig:
    """The paper's defaults, updated by a YAML file (or packaged config name) and then overrides."""
    cfg = IremConfig()
    if path is not None:
        p = resolve_config_path(path)
        try:
            tree = yaml.safe_load(p.read_text())
        except OSError as exc:
            raise InputError(f"{p}: cannot read config ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise InputError(f"{p}: invalid YAML ({str(exc).splitlines()[0]})") from None
        if tree is None:
            tree = {}
        if not isinstance(tree, dict):
            raise InputError(f"{p}: a config must be a mapping of sections")
        apply_overrides(cfg, flatten(tree))
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
