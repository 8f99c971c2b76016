"""``irem sample``: evaluate a saved model on a grid."""

from __future__ import annotations

import argparse
import time

from irem.cli.common import add_device_args, add_grid_args, add_subcommand, bars, set_threads


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``irem sample`` to the ``irem`` parser."""
    p = add_subcommand(
        sub,
        "sample",
        "evaluate a saved IREM model on any grid",
        "Evaluate a model saved by `irem reconstruct --save-model` on its training target grid, on "
        "a reference image's grid, or on an isotropic grid over the fixed stack. Writes OUT and "
        "OUT.json.",
        "irem sample irem.pt -o irem_0.5mm.nii.gz --spacing 0.5",
    )
    p.add_argument("model", metavar="MODEL.pt", help="model file written by reconstruct")
    p.add_argument("-o", "--output", required=True, metavar="OUT.nii.gz", help="HR output image")
    add_grid_args(p, "the training target grid")
    add_device_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Carry out ``irem sample``."""
    from irem.acquisition.grid import isotropic_grid, reference_grid
    from irem.pipeline import write_result
    from irem.training.reconstruct import load_model, predict, resolve_device
    from irem.volume import check_output_path, load_volume

    t_start = time.perf_counter()
    out = check_output_path(args.output)
    device = resolve_device(args.device)
    set_threads(args.threads)
    saved = load_model(args.model, device)
    grid = saved.grid
    if args.reference is not None:
        grid = reference_grid(load_volume(args.reference))
    elif args.spacing is not None:
        grid = isotropic_grid(saved.fixed, args.spacing)
    chunk = saved.cfg.reconstruct.chunk
    hr = predict(saved.model, saved.norm, grid, chunk=chunk, device=device, progress=bars(args))
    sidecar = {"method": "irem", "model_file": str(args.model), "seed": saved.seed,
               "config": saved.cfg.to_dict(), "normaliser": saved.norm.to_dict(),
               "transforms": saved.transforms, "device": str(device),
               "training_grid": {"shape": list(saved.grid.shape),
                                 "affine": saved.grid.affine.tolist()}}  # fmt: skip
    write_result(out, hr, grid, sidecar, t_start)
    print(out)
