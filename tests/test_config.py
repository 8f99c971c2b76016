from pathlib import Path

import pytest

from irem.errors import InputError
from irem.training.config import IremConfig, load_config, packaged_configs, parse_set


def test_paper_config_is_the_default() -> None:
    assert load_config("paper") == IremConfig()
    cfg = IremConfig()
    assert (cfg.model.fourier_dim, cfg.model.depth, cfg.model.width, cfg.model.skips) == (
        256,
        18,
        256,
        (6, 12),
    )
    assert (cfg.train.batch_size, cfg.train.lr, cfg.train.lr_decay, cfg.train.lr_step_epochs) == (
        2500,
        1e-4,
        0.5,
        500,
    )
    assert cfg.train.betas == (0.9, 0.999) and cfg.train.eps == 1e-8


def test_packaged_fast_config_and_overrides() -> None:
    assert {"paper", "fast"} <= set(packaged_configs())
    over = ["train.profile_spacing_mm=0", "train.profile_points=2", "model.skips=3,5"]
    cfg = load_config("fast", parse_set(over))
    assert cfg.model.kind == "grid" and cfg.train.profile_points == 2 and cfg.model.skips == (3, 5)


@pytest.mark.parametrize(
    "override",
    [
        "model.kind=transformer",
        "train.precision=fp8",
        "train.batch_size=1.5",
        "train.lr=-1",
        "train.betas=0.9,1.0",
        "train.betas=0.9",
        "train.eps=0",
        "train.grid_smoothness=-0.1",
        "train.grid_smoothness=0.1",  # the paper's network has no grids
        "nope.x=1",
        "model=1",
    ],
)
def test_bad_overrides_are_refused(override: str) -> None:
    with pytest.raises(InputError):
        load_config(None, parse_set([override]))


def test_yaml_file_and_unknown_name(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  fourier_dim: 64\ntrain:\n  time_budget: 10\n", encoding="utf-8")
    cfg = load_config(f)
    assert cfg.model.fourier_dim == 64 and cfg.train.time_budget == 10.0
    with pytest.raises(InputError, match="packaged configs"):
        load_config("no-such-config")
    f.write_text("- a list\n", encoding="utf-8")
    with pytest.raises(InputError, match="mapping"):
        load_config(f)


def test_time_per_mvoxel_key() -> None:
    assert IremConfig().train.time_per_mvoxel is None
    cfg = load_config("fast", parse_set(["train.time_per_mvoxel=30"]))
    assert cfg.train.time_per_mvoxel == 30.0
    assert load_config(None, {"train.time_per_mvoxel": "null"}).train.time_per_mvoxel is None
    for bad in ("0", "-2", "fast"):
        with pytest.raises(InputError):
            load_config(None, parse_set([f"train.time_per_mvoxel={bad}"]))


def test_grid_smoothness_large_is_a_float_or_unset() -> None:
    assert IremConfig().train.grid_smoothness_large is None
    cfg = load_config("fast", parse_set(["train.grid_smoothness_large=0.01"]))
    assert cfg.train.grid_smoothness_large == 0.01
    unset = load_config("fast", parse_set(["train.grid_smoothness_large=null"]))
    assert unset.train.grid_smoothness_large is None


def test_config_round_trips_through_its_dict() -> None:
    from irem.training.config import config_from_dict

    cfg = load_config("fast", parse_set(["model.skips=3,5", "train.time_budget=12"]))
    assert config_from_dict(cfg.to_dict()) == cfg
    assert config_from_dict(IremConfig().to_dict()) == IremConfig()
    with pytest.raises(InputError):
        config_from_dict({"model": {"kind": "nope"}})


@pytest.mark.parametrize(
    "override",
    ["train.grid_prior=l3", "train.grid_prior_delta=0", "model.grid_update=dense",
     "train.profile_points=2", "train.base_head=one", "model.hash_rows=0",
     "train.grid_smoothness_large=-1"],
)
def test_bad_grid_options_are_refused(override: str) -> None:
    with pytest.raises(InputError):
        load_config("fast", parse_set([override]))
