"""Start images of the grid INR (irem/training/start.py) and step budgets: what a run sees and how it ends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from irem.acquisition.grid import reference_grid
from irem.acquisition.simulate import simulate_stacks
from irem.errors import InputError
from irem.training.config import load_config
from irem.training.start import blend_weight, file_start, make_start, returned_image
from irem.training.train import Trainer, fitted_masks, held_out_split, resolve_budget, train
from irem.volume import Volume, save_volume

CPU = torch.device("cpu")
#: fast.yaml on the 32^3 phantom: small batches, no time budget.
FAST = {"train.batch_size": 512, "train.time_per_mvoxel": None, "train.time_budget": None}


def test_fitted_masks_leave_out_exactly_the_held_out_voxels(phantom: Volume) -> None:
    stacks = simulate_stacks(phantom, 4)
    t = load_config("fast", {**FAST, "train.holdout": 0.1}).train
    masks = fitted_masks(stacks, t, seed=3)
    assert masks is not None and [m.shape for m in masks] == [s.shape for s in stacks]
    split = held_out_split(stacks, t, seed=3)
    assert split is not None
    fit, held = split
    flat = np.concatenate([m.reshape(-1) for m in masks])
    np.testing.assert_array_equal(np.flatnonzero(flat), fit)
    np.testing.assert_array_equal(np.flatnonzero(~flat), held)
    assert fitted_masks(stacks, load_config("fast", {**FAST, "train.holdout": 0}).train, 3) is None


def test_the_start_image_does_not_see_the_held_out_voxels(phantom: Volume) -> None:
    """Changing the intensities of the held-out LR voxels leaves the start image unchanged, and
    changing a fitted voxel changes it."""
    stacks = simulate_stacks(phantom, 4)
    grid = reference_grid(phantom)
    t = load_config("fast", {**FAST, "train.holdout": 0.1, "train.base_alphas": [0.01]}).train
    image, info = make_start(stacks, grid, t, 0, CPU)
    assert info["held_out_excluded"] and info["seconds"] > 0
    masks = fitted_masks(stacks, t, 0)
    assert masks is not None
    for stack, fit in zip(stacks, masks, strict=True):
        stack.data = np.where(fit, stack.data, 0.0).astype(np.float32)
    again, _ = make_start(stacks, grid, t, 0, CPU)
    np.testing.assert_array_equal(again, image)
    stacks[0].data = stacks[0].data + np.where(masks[0], 0.1, 0.0).astype(np.float32)
    changed, _ = make_start(stacks, grid, t, 0, CPU)
    assert not np.array_equal(changed, image)


def test_the_start_weight_is_the_one_that_predicts_the_held_out_voxels_best(
    phantom: Volume,
) -> None:
    stacks = simulate_stacks(phantom, 4, snr=10, seed=1)
    grid = reference_grid(phantom)
    over = {**FAST, "train.base_alphas": [1e-4, 0.01, 1.0], "train.base_smoother": 0}
    _, info = make_start(stacks, grid, load_config("fast", over).train, 0, CPU)
    errors = {d["alpha"]: d["held_out_mse"] for d in info["alphas_tried"]}
    assert set(errors) == {1e-4, 0.01, 1.0}
    assert info["alpha"] == min(errors, key=errors.__getitem__)
    # on noisy stacks neither a weight that keeps the noise nor one that blurs everything wins
    assert info["alpha"] == 0.01


#: Three weights of which the held-out voxels of noisy phantom stacks choose the middle one.
SMOOTHER = {**FAST, "train.holdout": 0.05, "train.base_alphas": [1e-4, 0.01, 1.0],
            "train.base_smoother": 1}  # fmt: skip


def test_a_smoother_start_is_the_next_weight_and_the_held_out_choice_is_recorded(
    phantom: Volume,
) -> None:
    stacks = simulate_stacks(phantom, 4, snr=10, seed=1)
    grid = reference_grid(phantom)
    image, info = make_start(stacks, grid, load_config("fast", SMOOTHER).train, 0, CPU)
    assert (info["chosen_alpha"], info["alpha"]) == (0.01, 1.0) and len(info["alphas_tried"]) == 3
    alone = load_config("fast", {**SMOOTHER, "train.base_alphas": [1.0], "train.base_smoother": 0})
    np.testing.assert_array_equal(make_start(stacks, grid, alone.train, 0, CPU)[0], image)
    none_held = load_config("fast", {**SMOOTHER, "train.holdout": 0}).train
    first, info = make_start(stacks, grid, none_held, 0, CPU)
    assert info["alpha"] == 1e-4 and "chosen_alpha" not in info  # no choice without held-out voxels
    one = load_config("fast", {**SMOOTHER, "train.base_alphas": [0.01]}).train
    assert "chosen_alpha" not in make_start(stacks, grid, one, 0, CPU)[1]  # nor with one weight


def test_a_run_returns_srr_tv_at_the_choice_unless_the_network_predicts_better(
    phantom: Volume,
) -> None:
    """The network's image against SRR-TV at the held-out choice, on the held-out voxels: a blank
    image loses (SRR-TV of all LR voxels is returned), the noise-free truth wins (None)."""
    from baselines.bspline import bspline
    from baselines.srr import srr

    stacks = simulate_stacks(phantom, 4, snr=10, seed=1)
    grid = reference_grid(phantom)
    t = load_config("fast", {**SMOOTHER, "train.base_return": "better"}).train
    _, info = make_start(stacks, grid, t, 0, CPU)
    image, record = returned_image(np.zeros(grid.shape, np.float32), stacks, grid, t, 0, CPU, info)
    assert record["returned"] == "srr_tv" and image is not None
    expected, _ = srr(stacks, grid, alpha=0.01, regulariser="tv", iterations=t.base_iterations,
                      psf="box", device=CPU, init=bspline(stacks, grid), progress=False)  # fmt: skip
    np.testing.assert_array_equal(image, expected)
    image, record = returned_image(phantom.data, stacks, grid, t, 0, CPU, info)
    assert image is phantom.data and record["returned"] == "network"
    chosen = next(d for d in info["alphas_tried"] if d["alpha"] == 0.01)["held_out_mse"]
    assert record["network_held_out_mse"] < chosen
    # blended: a noisy truth (errors apart from SRR-TV's) gets a weight between 0 and 1
    blend = load_config("fast", {**SMOOTHER, "train.base_return": "blend"}).train
    rng = np.random.default_rng(0)
    noisy = phantom.data + rng.normal(0, 0.05 * phantom.data.max(), grid.shape).astype(np.float32)
    image, record = returned_image(noisy, stacks, grid, blend, 0, CPU, info)
    w = record["network_weight"]
    assert 0.1 < w < 0.9 and record["returned"] == "blend"
    np.testing.assert_allclose(image, w * noisy + (1 - w) * expected, atol=1e-6)


def test_the_blend_weight_predicts_best() -> None:
    """Against a scan of the weights, and no worse than either image alone."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.normal(size=50), rng.normal(size=50) + rng.normal()
        w = blend_weight(a, b)
        scan = np.linspace(0, 1, 10001)
        norms = [np.linalg.norm(v * a + (1 - v) * b) for v in scan]
        assert abs(w - scan[int(np.argmin(norms))]) < 2e-4
        assert np.linalg.norm(w * a + (1 - w) * b) <= min(np.linalg.norm(a), np.linalg.norm(b))
    assert blend_weight(a, a) == 0.0 and blend_weight(a, 2 * a) == 1.0


def test_a_start_image_from_a_file_is_resampled_onto_the_grid(phantom: Volume, tmp_path) -> None:
    grid = reference_grid(phantom)
    path = tmp_path / "start.nii.gz"
    save_volume(path, phantom.data, phantom.affine)
    image, info = file_start(str(path), grid)
    np.testing.assert_allclose(image, phantom.data, atol=1e-5)
    assert info == {"method": "file", "file": str(path)}
    with pytest.raises(InputError, match="--start-image"):
        file_start(str(tmp_path / "missing.nii.gz"), grid)


def test_a_grid_inr_with_a_base_needs_its_start_image(phantom: Volume) -> None:
    stacks = simulate_stacks(phantom, 4)
    cfg = load_config("fast", FAST)
    with pytest.raises(InputError, match="needs a start image"):
        Trainer(stacks, cfg, grid=reference_grid(phantom))


def test_step_budgets_resolve_per_million_voxels_and_cap() -> None:
    b = resolve_budget(None, None, 327_680, steps=None, steps_per_mvoxel=2000)
    assert (b.rule, b.steps, b.seconds) == ("steps", 656, None)
    assert resolve_budget(None, None, 327_680, steps=500, steps_per_mvoxel=2000).steps == 500
    assert resolve_budget(None, None, None, steps=40).steps == 40
    assert resolve_budget(None, None, None).rule == "epochs"
    with pytest.raises(InputError):
        resolve_budget(None, None, None, steps_per_mvoxel=10)


def test_a_step_budget_gives_the_same_voxels_on_a_slow_and_a_fast_clock(phantom: Volume) -> None:
    """The same config and seed stop after the same steps whatever the machine's speed."""
    stacks = simulate_stacks(phantom, 4)
    grid = reference_grid(phantom)
    cfg = load_config("fast", {**FAST, "train.base": "none", "train.steps": 7})
    slow = iter(range(0, 10**9, 1000))  # every step takes 1000 s
    a, norm_a, ra = train(stacks, cfg, grid=grid, progress=False, clock=lambda: next(slow))
    b, norm_b, rb = train(stacks, cfg, grid=grid, progress=False)
    assert ra.steps == rb.steps == 7 and ra.stopped_by == rb.stopped_by == "steps"
    from irem.training.reconstruct import predict

    np.testing.assert_array_equal(predict(a, norm_a, grid), predict(b, norm_b, grid))


@pytest.fixture(scope="module")
def cortex() -> Volume:
    """A tiny crop of tuning subject 01 (T1w-like) with cortex and background."""
    from irem.data.cohort import cohort_subject

    sub = cohort_subject(0, crop=(32, 40, 32), crop_position=(1.0, 0.5, 1.0))
    return Volume(sub.image.data, sub.image.affine)


def _first_run(vol: Volume, seed: int, over: dict) -> tuple[Trainer, torch.Tensor]:
    stacks = simulate_stacks(vol, 4, snr=40, seed=seed)
    grid = reference_grid(vol)
    cfg = load_config("fast", {**FAST, "train.batch_size": 1024, **over})
    start, _ = make_start(stacks, grid, cfg.train, seed, CPU)
    return Trainer(stacks, cfg, seed=seed, grid=grid, start=start), torch.arange(1024)


@pytest.mark.parametrize("head", ["cancel", "zero"])
def test_the_grids_get_a_gradient_at_the_first_step_only_with_a_cancelled_head(
    cortex: Volume, head: str
) -> None:
    """The saddle of a zeroed output layer: no gradient reaches the grids at step 0."""
    trainer, idx = _first_run(cortex, 0, {"train.base_head": head})
    model, data = trainer.model, trainer.data
    loss = torch.mean((model(data.coords[idx]) - data.vals[idx]) ** 2)  # the data term alone
    loss.backward()
    grads = [p.grad for p in model.grid_parameters()]
    reached = any(g is not None and bool(g.abs().sum() > 0) for g in grads)
    assert reached == (head == "cancel")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_default_grid_inr_leaves_its_start_image_within_50_steps(
    cortex: Volume, seed: int
) -> None:
    """fast.yaml (SRR-TV start of the fitted voxels, cancelled head, warmed-up rates): the
    held-out loss falls below its start within the first 50 steps, for every seed."""
    trainer, _ = _first_run(cortex, seed, {"train.steps": 50, "train.validate_every": 5})
    result = trainer.fit(progress=False)
    trace = result.held_out["trace"]
    start, best = trace[0][1], min(v for s, v in trace if s <= 50)
    assert best < (1 - 0.002) * start, trace


def test_warm_up_ramps_the_rates_over_the_first_steps() -> None:
    from irem.training.train import LearningRate

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=1.0)
    t = load_config("fast", {"train.lr_warmup_steps": 10, "train.lr_final": 0.01}).train
    lr = LearningRate(opt, t, total_steps=100, budget_seconds=None)
    assert lr.factor(0, 0.0, 0) == pytest.approx(0.1)
    assert lr.factor(4, 0.0, 0) == pytest.approx(0.5 * 0.01 ** 0.04)
    assert lr.factor(50, 0.0, 0) == pytest.approx(0.01**0.5)  # the budget schedule alone


@pytest.mark.parametrize("final", ["better", "blend"])
def test_the_command_writes_and_saves_the_image_the_held_out_voxels_chose(
    stack_files, tmp_path, final: str
) -> None:
    """Two steps cannot take the network from the smoother start past the held-out choice: the
    command writes SRR-TV at the choice (or mostly it, blended), says so in the sidecar, and the
    saved model is that image."""
    import json

    from irem.cli import main
    from irem.training.reconstruct import load_model, predict
    from irem.volume import load_volume

    stacks, gt = stack_files
    out, path = tmp_path / "rec.nii.gz", tmp_path / "model.pt"
    sets = ["train.batch_size=512", "train.holdout=0.05", "train.base_alphas=1e-4,0.01,1.0",
            "train.base_smoother=1", f"train.base_return={final}"]  # fmt: skip
    argv = ["reconstruct", *stacks, "-o", str(out), "--no-register", "--reference", gt,
            "--config", "fast", "--steps", "2", "--quiet", "--save-model", str(path)]  # fmt: skip
    assert main(argv + [a for s in sets for a in ("--set", s)]) == 0
    start = json.loads(out.with_name("rec.json").read_text(encoding="utf-8"))["start_image"]
    assert start["alpha"] != start["chosen_alpha"] and start["network_weight"] < 0.5
    assert start["returned"] == "srr_tv" or (final == "blend" and start["returned"] == "blend")
    saved = load_model(path)
    image = load_volume(out).data
    grid = reference_grid(load_volume(gt))
    np.testing.assert_allclose(predict(saved.model, saved.norm, grid), image, atol=1e-5)
