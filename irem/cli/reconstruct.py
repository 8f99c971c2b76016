"""``irem reconstruct``: train IREM (or the grid INR) on LR stacks and write the HR image."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from irem.cli.common import (
    add_device_args,
    add_stack_args,
    add_subcommand,
    bars,
    positive_float,
    positive_int,
    request,
    set_threads,
)
from irem.errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``irem reconstruct`` to the ``irem`` parser."""
    p = add_subcommand(
        sub,
        "reconstruct",
        "reconstruct HR with IREM",
        "Register the stacks to the fixed one, train IREM on their voxels and evaluate it on a "
        "dense grid. Writes OUT and a JSON sidecar OUT.json.",
        "irem reconstruct lr/acq-*.nii.gz -o irem.nii.gz --config fast --time-per-mvoxel 30 \\\n"
        "    --time-budget 300 --save-model irem.pt",
    )
    add_stack_args(p, "irem")
    p.add_argument("--config", metavar="YAML",
                   help="IREM configuration (model/train/reconstruct sections)")  # fmt: skip
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. model.fourier_dim=64")  # fmt: skip
    p.add_argument("--epochs", type=positive_int, help="training epochs (overrides the config)")
    p.add_argument(
        "--steps", type=positive_int, metavar="N",
        help="stop after N optimiser steps (the cap with --steps-per-mvoxel); a step budget gives "
        "the same result on any machine",
    )  # fmt: skip
    p.add_argument("--steps-per-mvoxel", type=positive_float, metavar="N", help="step budget of N "
                   "optimiser steps per million target grid voxels")  # fmt: skip
    p.add_argument(
        "--time-budget", type=positive_float, metavar="SECONDS",
        help="stop training cleanly after this wall time (the cap with --time-per-mvoxel)",
    )  # fmt: skip
    p.add_argument("--time-per-mvoxel", type=positive_float, metavar="S",
                   help="time budget of S seconds per million target grid voxels")  # fmt: skip
    p.add_argument(
        "--precision", choices=["auto", "fp32", "bf16"],
        help="training precision (overrides train.precision): bf16 autocast, fp32, or auto: bf16 "
        "where the device computes in bf16 natively (AVX512_BF16/AMX CPUs, bf16 GPUs)",
    )  # fmt: skip
    add_device_args(p)
    _add_output_args(p)
    p.set_defaults(func=run)


def _add_output_args(p: argparse.ArgumentParser) -> None:
    """Checkpoint, start image, snapshots and the saved model."""
    p.add_argument("--resume", action="store_true",
                   help="resume from the checkpoint of an interrupted run")  # fmt: skip
    p.add_argument("--checkpoint", metavar="PATH",
                   help="checkpoint file (default: hidden file beside OUT)")  # fmt: skip
    p.add_argument(
        "--start-image", metavar="IMG.nii.gz",
        help="start image of a grid INR (any grid in the fixed stack's world space, resampled "
        "trilinearly; default: train.base, SRR-TV of the fitted LR voxels)",
    )  # fmt: skip
    p.add_argument(
        "--snapshots", metavar="DIR",
        help="also write the HR image after the epochs of --snapshot-epochs to "
        "DIR/epoch-NNNN.nii.gz (each with a JSON sidecar: epoch, steps, held-out loss; before any "
        "--mask)",
    )  # fmt: skip
    p.add_argument("--snapshot-epochs", type=epoch_list, default=SNAPSHOT_EPOCHS,
                   metavar="E1,E2,...", help="epochs after which --snapshots writes (default: "
                   "%(default)s)")  # fmt: skip
    p.add_argument("--save-model", metavar="MODEL.pt", help="save the trained model, normaliser, "
                   "config, transforms and grid (for irem sample)")  # fmt: skip


#: The epochs of ``--snapshots`` by default: about three per decade.
SNAPSHOT_EPOCHS = "1,2,5,10,20,50,100,200,500,1000,2000"


def epoch_list(text: str) -> frozenset[int]:
    """A comma-separated list of positive epochs (argparse parses the text default too)."""
    return frozenset(positive_int(item.strip()) for item in text.split(","))


def _snapshot_writer(args: argparse.Namespace, grid: Any, cfg: Any, device: Any) -> Any:
    """The ``on_epoch`` callback of ``--snapshots`` (None without it)."""
    if args.snapshots is None:
        return None
    from irem.training.reconstruct import predict
    from irem.volume import save_volume

    folder = Path(args.snapshots)
    folder.mkdir(parents=True, exist_ok=True)

    def write(epoch: int, steps: int, held_out: float | None, model: Any, norm: Any) -> None:
        if epoch not in args.snapshot_epochs:
            return
        hr = predict(model, norm, grid, chunk=cfg.reconstruct.chunk, device=device, progress=False)
        info = {"epoch": epoch, "steps": steps, "held_out_loss": held_out}
        save_volume(folder / f"epoch-{epoch:04d}.nii.gz", hr, grid.affine, sidecar=info)

    return write


def _irem_sidecar(
    cfg: Any, device: Any, norm: Any, result: Any, eval_seconds: float, model_path: Path | None,
    start: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """The IREM-specific fields of the sidecar: config, device, training summary and budget."""
    import torch

    return {"config": cfg.to_dict(), "device": str(device), "threads": torch.get_num_threads(),
            "normaliser": norm.to_dict(), "training_seconds": result.training_seconds,
            "evaluation_seconds": eval_seconds, "final_loss": result.final_loss,
            "epochs_completed": result.epochs_completed, "steps": result.steps,
            "profile_points": result.profile_points, "start_image": start or None,
            "held_out": result.held_out or None, "precision": result.precision or None,
            "budget": result.budget.to_dict(), "stopped_by": result.stopped_by,
            "resumed": result.resumed, "loss_per_epoch": result.loss_history,
            "model_file": str(model_path) if model_path else None}  # fmt: skip


def run(args: argparse.Namespace) -> None:
    """Carry out ``irem reconstruct``."""
    from irem.pipeline import run
    from irem.training.config import load_config, parse_set
    from irem.training.memory import inr_model
    from irem.training.reconstruct import predict, resolve_device, save_model
    from irem.training.start import make_start, returned_image
    from irem.training.train import rebase, train

    overrides: dict[str, Any] = parse_set(args.set)  # the options override train.<option>
    options = ("epochs", "time_budget", "time_per_mvoxel", "steps", "steps_per_mvoxel", "precision")
    overrides |= {f"train.{o}": getattr(args, o) for o in options if getattr(args, o) is not None}
    cfg = load_config(args.config, overrides)
    device = resolve_device(args.device)
    model_path = None if args.save_model is None else Path(args.save_model)
    if model_path is not None and not model_path.parent.is_dir():
        raise InputError(f"{model_path.parent}: output directory does not exist")
    if model_path is not None and model_path.is_dir():
        raise InputError(f"--save-model {model_path}: is a directory")
    set_threads(args.threads)
    req = request(args)
    out = Path(args.output)
    ckpt = Path(args.checkpoint) if args.checkpoint else out.with_name(f".{out.name}.ckpt.pt")
    trained: dict[str, Any] = {}

    def method(stacks: list[Any], grid: Any) -> tuple[np.ndarray, dict[str, Any]]:
        if args.start_image is not None and cfg.model.kind != "grid":
            raise InputError("--start-image needs a grid INR (--config fast)")
        start, start_info = make_start(stacks, grid, cfg.train, args.seed, device, args.start_image)
        model, norm, result = train(
            stacks, cfg, seed=args.seed, device=device, checkpoint=ckpt, resume=args.resume,
            progress=not args.quiet, target_voxels=grid.size, grid=grid, start=start,
            on_epoch=_snapshot_writer(args, grid, cfg, device),
        )  # fmt: skip
        t0 = time.perf_counter()
        hr = predict(
            model, norm, grid, chunk=cfg.reconstruct.chunk, device=device, progress=bars(args)
        )
        seconds = time.perf_counter() - t0
        if start_info.get("chosen_alpha") is not None:  # train.base_smoother: what to return
            hr, start_info = returned_image(hr, stacks, grid, cfg.train, args.seed, device,
                                            start_info)  # fmt: skip
            if start_info["returned"] != "network":  # the saved model is the image returned
                rebase(model, hr, grid, norm, "zero")
        trained.update(model=model, norm=norm)
        return hr, _irem_sidecar(cfg, device, norm, result, seconds, model_path, start_info)

    done = run(req, "irem", method, mask_lr_voxels=True, memory=inr_model(cfg))
    if model_path is not None:
        save_model(model_path, trained["model"], trained["norm"], cfg, seed=args.seed,
                   grid=done.grid, stacks=done.stacks, fixed_index=args.fixed_index)  # fmt: skip
    if ckpt.exists() and not args.checkpoint:
        ckpt.unlink()
    print(done.output)
