# Helpers shared by all rules. Every path of the workflow is built here, from the config.
#
# Layout (BIDS-derivative-like names):
#   results/<dataset>/sub-<id>_<suffix>.nii.gz                      HR ground truth (or reference)
#   results/<dataset>/sub-<id>_desc-brain_mask.nii.gz               its brain mask
#   results/<dataset>/k<k>/lr/sub-<id>_seed-<s>/acq-<orient>.nii.gz simulated LR stacks
#   results/<dataset>/k<k>/sub-<id>_rec-<method>_seed-<s>_<suffix>.nii.gz (+ .json, _metrics.json)
#   results/<scan>/lr/sub-<id>/acq-<orient>.nii.gz                  real-scan demo stacks
#   results/<scan>/sub-<id>_rec-<method>_seed-<s>_<suffix>.nii.gz   real-scan reconstructions
#   results/tables/, results/figures/, results/runtime/ (benchmark TSVs), results/logs/
#
# A "run" is the folder part of a reconstruction: "<dataset>/k<k>" for a simulated experiment,
# "<scan>" for a real scan.

import re
import shlex
import sys

# The workflow's own source tree first (as the rules' PYTHONPATH), then an installed irem-bench.
sys.path.insert(0, workflow.basedir)
from irem.config import load_config, packaged_configs  # noqa: E402

RESULTS = "results"
ORIENTATIONS = ("sagittal", "coronal", "axial")  # the fixed (sagittal) stack first
EMBEDDED = ("mni152_t1", "mni152_flair", "phantom")


def _by_name(entries, what):
    out = {}
    for entry in entries:
        if entry["name"] in out:
            raise ValueError(f"config: {what} {entry['name']!r} is defined twice")
        out[entry["name"]] = entry
    return out


DATASETS = _by_name(config["datasets"], "dataset")
SCANS = _by_name(config["real_scans"], "real scan")
KS = [int(k) for k in config["ks"]]
METHODS = list(config["methods"])
SEEDS = [int(s) for s in config["seeds"]]

_clash = set(DATASETS) & set(SCANS)
if _clash:
    raise ValueError(f"config: names used both as datasets and real_scans: {sorted(_clash)}")
for _name in list(DATASETS) + list(SCANS):
    if _name in ("tables", "figures", "runtime", "logs", "benchmarks"):
        raise ValueError(f"config: {_name!r} is reserved for the workflow's own outputs")


# --------------------------------------------------------------------------------------------------
# Datasets, subjects and ground truths


def suffix_of(dataset):
    """The modality suffix of a dataset's or a real scan's files."""
    entry = DATASETS.get(dataset) or SCANS.get(dataset)
    if entry is None:
        raise ValueError(f"unknown dataset or real scan {dataset!r}")
    return entry["suffix"]


def gt_path(dataset, subject):
    """The HR ground truth (simulated) or reference (real scan) of a subject."""
    return f"{RESULTS}/{dataset}/sub-{subject}_{suffix_of(dataset)}.nii.gz"


def mask_path(dataset, subject):
    return f"{RESULTS}/{dataset}/sub-{subject}_desc-brain_mask.nii.gz"


def has_reference(dataset, subject):
    """Whether a subject has a ground truth to score against (always, for simulated datasets)."""
    if dataset in DATASETS:
        return True
    entry = SCANS[dataset]["subjects"][subject]
    return "simulate" in entry or bool(entry.get("reference"))


def gt_source(wildcards):
    """What `python -m irem.datasets` reads for a ground truth: an embedded name or a file."""
    d, s = wildcards.dataset, wildcards.subject
    if d in DATASETS:
        return DATASETS[d]["subjects"][s]
    entry = SCANS[d]["subjects"][s]
    if "simulate" in entry:
        sim = entry["simulate"]
        return gt_path(sim["dataset"], sim["subject"])
    if not entry.get("reference"):
        raise ValueError(f"real scan {d}/{s} has no reference image")
    return entry["reference"]


def gt_input(wildcards):
    """The ground truth's source as a file input (nothing for an embedded dataset)."""
    src = gt_source(wildcards)
    return [] if src in EMBEDDED else [src]


def gt_args(wildcards):
    """Options of `python -m irem.datasets` for a ground truth."""
    d = wildcards.dataset
    if d not in DATASETS:
        return ""  # a real scan's reference: copied and checked as it is
    entry = DATASETS[d]
    args = ["--seed", str(entry["seed"]), "--phantom-size", str(entry["phantom_size"])]
    if entry["crop"]:
        args += ["--crop", *map(str, entry["crop"])]
    return shlex.join(args)


def _mask_threshold(dataset, subject):
    if dataset in DATASETS:
        thr = DATASETS[dataset]["mask_threshold"]
        if thr is None:
            thr = 0.0 if DATASETS[dataset]["subjects"][subject] in EMBEDDED else 0.1
        return thr
    entry = SCANS[dataset]["subjects"][subject]
    if "simulate" in entry:  # the reference is a copy of a dataset's ground truth
        return _mask_threshold(entry["simulate"]["dataset"], entry["simulate"]["subject"])
    return SCANS[dataset]["mask_threshold"]


def mask_threshold(wildcards):
    """Brain-mask threshold: exact (> 0) for the zero-background embedded volumes."""
    return _mask_threshold(wildcards.dataset, wildcards.subject)


def mask_input(wildcards):
    return gt_path(wildcards.dataset, wildcards.subject)


# --------------------------------------------------------------------------------------------------
# LR stacks


def sim_stack_paths(dataset, k, subject, seed):
    folder = f"{RESULTS}/{dataset}/k{k}/lr/sub-{subject}_seed-{seed}"
    return [f"{folder}/acq-{o}.nii.gz" for o in ORIENTATIONS]


def scan_stack_paths(scan, subject):
    entry = SCANS[scan]["subjects"][subject]
    if "simulate" in entry:
        return [f"{RESULTS}/{scan}/lr/sub-{subject}/acq-{o}.nii.gz" for o in ORIENTATIONS]
    return list(entry["stacks"])


_RUN = re.compile(r"^(?P<dataset>[A-Za-z0-9_]+)(?:/k(?P<k>[0-9]+))?$")


def parse_run(run):
    """'<dataset>/k<k>' -> (dataset, k); '<scan>' -> (scan, None)."""
    m = _RUN.match(run)
    if m is None:
        raise ValueError(f"not a run folder: {run!r}")
    return m.group("dataset"), (int(m.group("k")) if m.group("k") else None)


def stacks_input(wildcards):
    """The LR stacks of a reconstruction, fixed stack first."""
    dataset, k = parse_run(wildcards.run)
    if k is None:
        return scan_stack_paths(dataset, wildcards.subject)
    return sim_stack_paths(dataset, k, wildcards.subject, wildcards.seed)


def simulate_gt(wildcards):
    return gt_path(wildcards.dataset, wildcards.subject)


def simulate_args(wildcards):
    sim = config["simulation"]
    args = ["--profile", sim["profile"]]
    if sim["snr"] is not None:
        args += ["--snr", str(sim["snr"])]
    return shlex.join(args)


def scan_sim(wildcards):
    return SCANS[wildcards.dataset]["subjects"][wildcards.subject]["simulate"]


def scan_sim_gt(wildcards):
    sim = scan_sim(wildcards)
    return gt_path(sim["dataset"], sim["subject"])


def scan_sim_args(wildcards):
    sim = scan_sim(wildcards)
    args = ["--k", str(sim["k"]), "--seed", str(sim["seed"]), "--profile",
            config["simulation"]["profile"],
            "--motion", str(sim["rotation_deg"]), str(sim["translation_mm"])]
    if config["simulation"]["snr"] is not None:
        args += ["--snr", str(config["simulation"]["snr"])]
    if sim["reorient"]:
        args.append("--reorient")
    return shlex.join(args)


# --------------------------------------------------------------------------------------------------
# Reconstructions


def reference_input(wildcards):
    """The grid reference of a reconstruction, if any (simulated: the ground truth)."""
    dataset, k = parse_run(wildcards.run)
    if has_reference(dataset, wildcards.subject):
        return gt_path(dataset, wildcards.subject)
    return []


def geometry_args(wildcards):
    """Registration and output grid: simulated stacks are aligned by construction; real scans are
    registered to the fixed stack and put on the reference grid, or an isotropic one."""
    dataset, k = parse_run(wildcards.run)
    args = ["--fixed-index", "0"]
    if k is not None:
        args.append("--no-register")
    if has_reference(dataset, wildcards.subject):
        args += ["--reference", gt_path(dataset, wildcards.subject)]
    elif SCANS[dataset]["spacing"] is not None:
        args += ["--spacing", str(SCANS[dataset]["spacing"])]
    return shlex.join(args)


def srr_args(wildcards):
    c = config["srr"]
    args = ["--regulariser", c["regulariser"], "--device", c["device"]]
    for key in ("alpha", "iterations", "psf"):
        if c[key] is not None:
            args += [f"--{key}", str(c[key])]
    return shlex.join(args)


def _irem_section(variant):
    """The config section of a variant: `iremfast` has its own, `irem` and `irem2L<n>` share `irem`."""
    return config["iremfast"] if variant == "iremfast" else config["irem"]


def _irem_overrides(section=None):
    return dict(item.split("=", 1) for item in (section or config["irem"])["set"])


def irem_main_fourier_dim():
    """2L of the main IREM runs (after the config file and --set overrides)."""
    return load_config(config["irem"]["config"], _irem_overrides()).model.fourier_dim


def irem_args(wildcards):
    """Options of `irem reconstruct` for the main runs (`irem`), the 2L ablation (`irem2L<n>`) and
    the fast CPU configuration (`iremfast`)."""
    c = _irem_section(wildcards.variant)
    args = ["--device", config["irem"]["device"], "--seed", wildcards.seed]
    if c["time_budget"] is not None:
        args += ["--time-budget", str(c["time_budget"])]
    if c["epochs"] is not None:
        args += ["--epochs", str(c["epochs"])]
    if c["config"]:
        args += ["--config", c["config"]]
    overrides = _irem_overrides(c)
    if wildcards.variant.startswith("irem2L"):
        overrides["model.fourier_dim"] = wildcards.variant[len("irem2L"):]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    return shlex.join(args)


def irem_config_input(wildcards):
    """The IREM config file as an input; packaged configuration names (`fast`) are not files."""
    name = _irem_section(wildcards.variant)["config"]
    return [name] if name and name not in packaged_configs() else []


def uses_gpu(device):
    """One `gpu` resource token for jobs that may run on a GPU (`--resources gpu=1` serialises)."""
    return 0 if device == "cpu" else 1


# --------------------------------------------------------------------------------------------------
# Targets


def rec_path(run, subject, method, seed, suffix, ext=".nii.gz"):
    return f"{RESULTS}/{run}/sub-{subject}_rec-{method}_seed-{seed}_{suffix}{ext}"


def metrics_path(run, subject, method, seed, suffix):
    return rec_path(run, subject, method, seed, suffix, "_metrics.json")


def sim_runs(datasets=None, ks=None, methods=None, seeds=None):
    """(run, subject, method, seed, suffix) of the simulated experiments."""
    out = []
    for d in datasets or DATASETS:
        for k in ks or KS:
            for s in DATASETS[d]["subjects"]:
                for m in methods or METHODS:
                    for seed in seeds or SEEDS:
                        out.append((f"{d}/k{k}", s, m, seed, suffix_of(d)))
    return out


def scan_runs():
    out = []
    for scan, entry in SCANS.items():
        for s in entry["subjects"]:
            for m in METHODS:
                for seed in SEEDS:
                    out.append((scan, s, m, seed, entry["suffix"]))
    return out


def ablation_runs():
    """(fourier_dim, run tuple) of Fig. 3; the main IREM run stands in where 2L is the same."""
    a = config["ablation"]
    if not a["fourier_dims"]:
        return []
    if a["dataset"] not in DATASETS:
        raise ValueError(f"config: ablation.dataset {a['dataset']!r} is not among the datasets")
    seeds = a["seeds"] if a["seeds"] is not None else SEEDS
    main_dim = irem_main_fourier_dim()
    main_has = "irem" in METHODS and a["k"] in KS
    out = []
    for dim in a["fourier_dims"]:
        for seed in seeds:
            method = "irem" if (dim == main_dim and main_has and seed in SEEDS) else f"irem2L{dim}"
            for s in DATASETS[a["dataset"]]["subjects"]:
                out.append((dim, (f"{a['dataset']}/k{a['k']}", s, method, seed, suffix_of(a["dataset"]))))
    return out


def all_metrics():
    """Every metrics JSON: simulated runs, ablation runs, real scans that have a reference."""
    runs = sim_runs() + [r for _, r in ablation_runs()]
    runs += [r for r in scan_runs() if has_reference(r[0], r[1])]
    return sorted({metrics_path(*r) for r in runs})


def all_reconstructions():
    runs = sim_runs() + [r for _, r in ablation_runs()] + scan_runs()
    return sorted({rec_path(*r) for r in runs})


def benchmark_path(run, subject, method, seed, suffix):
    return f"{RESULTS}/runtime/{run}/sub-{subject}_rec-{method}_seed-{seed}_{suffix}.tsv"


def all_benchmarks():
    runs = sim_runs() + [r for _, r in ablation_runs()] + scan_runs()
    return sorted({benchmark_path(*r) for r in runs})


def sidecars(paths):
    return [p.replace("_metrics.json", ".json") for p in paths]


def all_sidecars():
    return sorted(p.replace(".nii.gz", ".json") for p in all_reconstructions())


def fig3_metrics(wildcards=None):
    return [metrics_path(*r) for _, r in ablation_runs()]


def fig3_baselines(wildcards=None):
    """B-spline and SRR at the ablation's dataset and k, drawn as reference lines in Fig. 3."""
    a = config["ablation"]
    if a["k"] not in KS:
        return []
    base = [m for m in METHODS if m in ("bspline", "srr")]
    return [metrics_path(*r) for r in sim_runs(datasets=[a["dataset"]], ks=[a["k"]], methods=base)]


def fig4_metrics(wildcards):
    return [metrics_path(*r) for r in sim_runs(datasets=[wildcards.dataset])]


def fig_k():
    k = config["figures"]["k"]
    return k if k in KS else KS[0]


def first_subject(dataset):
    entry = DATASETS.get(dataset) or SCANS[dataset]
    return next(iter(entry["subjects"]))


def fig5_inputs(wildcards):
    """GT, mask, the LR stack shown and each method's reconstruction for the Fig. 5 panel."""
    d = wildcards.dataset
    s = first_subject(d)
    seed = SEEDS[0]
    if d in DATASETS:
        run = f"{d}/k{fig_k()}"
        stacks = sim_stack_paths(d, fig_k(), s, seed)
    else:
        run = d
        stacks = scan_stack_paths(d, s)
    lr = stacks[ORIENTATIONS.index(config["figures"]["lr_stack"])]
    recs = [rec_path(run, s, m, seed, suffix_of(d)) for m in METHODS]
    mets = [metrics_path(run, s, m, seed, suffix_of(d)) for m in METHODS]
    return {"gt": gt_path(d, s), "mask": mask_path(d, s), "lr": lr, "recs": recs, "metrics": mets}


def fig5_rec_args(wildcards):
    """`METHOD=PATH` pairs for `python -m irem.report fig5 --rec`."""
    ins = fig5_inputs(wildcards)
    return shlex.join(f"{m}={p}" for m, p in zip(METHODS, ins["recs"]))


def fig5_slice(wildcards):
    """Slice position of a Fig. 5/6 panel: the dataset's own choice, else figures.slice."""
    own = DATASETS.get(wildcards.dataset, {}).get("figure_slice")
    return own if own is not None else config["figures"]["slice"]


def fig5_title(wildcards):
    d = wildcards.dataset
    if d in DATASETS:
        return f"{d}, k={fig_k()}, sub-{first_subject(d)}, seed {SEEDS[0]}"
    return f"{d} (real-scan protocol), sub-{first_subject(d)}, seed {SEEDS[0]}"


def scans_with_figure():
    """Real scans whose first subject has a reference: their panel plays the paper's Fig. 6."""
    return [d for d in SCANS if has_reference(d, first_subject(d))]


def name_pattern(names):
    """A wildcard regex matching exactly these names (and nothing when there are none)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


def all_figures():
    out = []
    if ablation_runs():
        out += [f"{RESULTS}/figures/fig3_fourier_dim.{ext}" for ext in ("png", "pdf")]
    for d in DATASETS:
        out += [f"{RESULTS}/figures/fig4_{d}.{ext}" for ext in ("png", "pdf")]
        out += [f"{RESULTS}/figures/fig5_{d}.{ext}" for ext in ("png", "pdf")]
    for d in scans_with_figure():
        out += [f"{RESULTS}/figures/fig6_{d}.{ext}" for ext in ("png", "pdf")]
    return out


TABLES = [
    f"{RESULTS}/tables/{name}"
    for name in ("metrics.csv", "metrics.md", "runs.csv", "runtime.csv", "runtime.md")
]


def metrics_gt(wildcards):
    dataset, _ = parse_run(wildcards.run)
    return gt_path(dataset, wildcards.subject)


def metrics_mask(wildcards):
    dataset, _ = parse_run(wildcards.run)
    return mask_path(dataset, wildcards.subject)


