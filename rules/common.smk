# Helpers shared by the rules: the config's experiments as lists of runs. Paths come from
# irem/layout.py, commands and labels from the config's `methods`: nothing here names a method.

import json
import os
import re
import shlex
import sys
import zlib

# The workflow's own source tree first (as the rules' PYTHONPATH), then an installed irem-bench.
sys.path.insert(0, workflow.basedir)
from irem import layout as L  # noqa: E402
from irem.report.labels import fill, method_label  # noqa: E402
from irem.evaluation.tuning import candidates, options  # noqa: E402

# The jobs' conda environment (--use-conda), relative to the workflow (rules/ would be the default).
CONDA_ENV = os.path.join(workflow.basedir, config["conda_env"])
EMBEDDED = ("mni152_t1", "mni152_flair", "phantom")
CONTRASTS = ("T1w", "T2w", "FLAIR")  # cohort subject i has CONTRASTS[i % 3]
HR_SCAN = "hrscan"  # the scan-time experiment's noisy HR scan, scored like a method


def _fail(message):
    sys.stderr.write(f"config error: {message}\n")
    raise SystemExit(1)


def _by_name(entries, what):
    out = {}
    for entry in entries:
        if entry["name"] in out:
            _fail(f"{what} {entry['name']!r} is defined twice")
        out[entry["name"]] = entry
    return out


DATASETS = _by_name(config["datasets"], "dataset")
SCANS = _by_name(config["real_scans"], "real scan")
METHODS = _by_name(config["methods"], "method")
# Methods of the LR stacks (every experiment); the others reconstruct from the scan-time HR scan.
LR_METHODS = [m for m, e in METHODS.items() if not e["hr_scan"]]
KS = [int(k) for k in config["ks"]]
SEEDS = [int(s) for s in config["seeds"]]
SWEEPS = {s["name"]: s for s in config["tuning"]["sweeps"]}

for _name in set(DATASETS) & set(SCANS):
    _fail(f"{_name!r} is used both as a dataset and as a real scan")
for _name in list(DATASETS) + list(SCANS):
    if _name in L.RESERVED:
        _fail(f"{_name!r} is reserved for the workflow's own outputs")
for _name, _entry in DATASETS.items():
    _c = _entry.get("cohort")
    if _c and _c["tuning"] >= _c["subjects"]:
        _fail(f"dataset {_name}: a tuning split of {_c['tuning']} leaves no evaluation subject "
              f"of {_c['subjects']}")


# --- Subjects, ground truths and masks


def cohort_subjects(dataset):
    """{label: (index, contrast, split)} of a cohort dataset: 01..N, the first `tuning` for tuning."""
    c = DATASETS[dataset]["cohort"]
    width = max(2, len(str(c["subjects"])))
    return {
        f"{i + 1:0{width}d}": (i, CONTRASTS[i % len(CONTRASTS)], "tuning" if i < c["tuning"] else "evaluation")
        for i in range(c["subjects"])
    }


def is_cohort(dataset):
    return dataset in DATASETS and bool(DATASETS[dataset].get("cohort"))


COHORTS = [d for d in DATASETS if is_cohort(d)]


def subjects(dataset, split="evaluation"):
    """Subject labels of a dataset or real scan; `split` selects a cohort's tuning/evaluation split."""
    if is_cohort(dataset):
        return [s for s, (_, _, sp) in cohort_subjects(dataset).items() if split in (None, sp)]
    entry = DATASETS.get(dataset) or SCANS[dataset]
    return list(entry["subjects"]) if split in (None, "evaluation") else []


def suffix_of(dataset, subject):
    """The modality suffix of a subject's files (a cohort subject's contrast family)."""
    if is_cohort(dataset):
        return cohort_subjects(dataset)[subject][1]
    entry = DATASETS.get(dataset) or SCANS.get(dataset)
    if entry is None:
        raise ValueError(f"unknown dataset or real scan {dataset!r}")
    return entry["suffix"]


def gt_of(dataset, subject):
    return L.gt_path(dataset, subject, suffix_of(dataset, subject))


def has_reference(dataset, subject):
    """Whether a subject has a ground truth to score against (always, for simulated datasets)."""
    if dataset in DATASETS:
        return True
    entry = SCANS[dataset]["subjects"][subject]
    return "simulate" in entry or bool(entry.get("reference"))


for _scan, _entry in SCANS.items():
    for _s, _sub in _entry["subjects"].items():
        _sim = _sub.get("simulate")
        if _sim and (_sim["dataset"] not in DATASETS or _sim["subject"] not in subjects(_sim["dataset"], None)):
            _fail(f"real scan {_scan}/{_s}: no subject {_sim['subject']!r} in dataset {_sim['dataset']!r}")


def gt_source(wildcards):
    """What `irem dataset` reads for a ground truth: an embedded name or a file."""
    d, s = wildcards.dataset, wildcards.subject
    if d in DATASETS:
        return DATASETS[d]["subjects"][s]
    entry = SCANS[d]["subjects"][s]
    if "simulate" in entry:
        sim = entry["simulate"]
        return gt_of(sim["dataset"], sim["subject"])
    if not entry.get("reference"):
        raise ValueError(f"real scan {d}/{s} has no reference image")
    return entry["reference"]


def gt_input(wildcards):
    """The ground truth's source as a file input (nothing for an embedded dataset)."""
    return [src for src in [gt_source(wildcards)] if src not in EMBEDDED]


def _crop_args(entry):
    if not entry.get("crop"):
        return []
    return ["--crop", *map(str, entry["crop"]), "--crop-position", *map(str, entry["crop_position"])]


def gt_args(wildcards):
    """Options of `irem dataset` for a ground truth (none for a real scan's reference: a copy)."""
    entry = DATASETS.get(wildcards.dataset)
    if entry is None:
        return ""
    args = ["--seed", str(entry["seed"]), "--phantom-size", str(entry["phantom_size"])]
    return shlex.join(args + _crop_args(entry))


def cohort_args(wildcards):
    """Options of `irem dataset mni152_cohort` for one subject."""
    entry = DATASETS[wildcards.dataset]
    index, contrast, _ = cohort_subjects(wildcards.dataset)[wildcards.subject]
    args = ["--index", str(index), "--seed", str(entry["cohort"]["seed"]), "--contrast", contrast]
    return shlex.join(args + _crop_args(entry))


def mask_threshold(dataset, subject):
    """Brain-mask threshold: exact (> 0) for the zero-background embedded volumes."""
    if dataset in DATASETS:
        thr = DATASETS[dataset]["mask_threshold"]
        if thr is None:
            embedded = is_cohort(dataset) or DATASETS[dataset]["subjects"][subject] in EMBEDDED
            thr = 0.0 if embedded else 0.1
        return thr
    entry = SCANS[dataset]["subjects"][subject]
    if "simulate" in entry:  # the reference is a copy of a dataset's ground truth
        return mask_threshold(entry["simulate"]["dataset"], entry["simulate"]["subject"])
    return SCANS[dataset]["mask_threshold"]


# --- LR stacks


def stacks_of(run, subject, seed):
    """The LR stacks of a reconstruction, fixed stack first."""
    if run.k is None:
        entry = SCANS[run.dataset]["subjects"][subject]
        return L.scan_stack_paths(run.dataset, subject) if "simulate" in entry else list(entry["stacks"])
    return L.stack_paths(run, subject, seed)


def truth_inputs(d, s):
    """Ground truth (and white-matter mask, the SNR's reference region, of a cohort subject)."""
    wm = {"wm": L.wm_mask_path(d, s, suffix_of(d, s))} if is_cohort(d) else {}
    return {"gt": gt_of(d, s), **wm}


def _snr_args(d, s, snr_option, snr):
    if snr is None:
        return []
    wm = ["--wm-mask", L.wm_mask_path(d, s, suffix_of(d, s))] if is_cohort(d) else []
    return [snr_option, str(snr), *wm]


def noise_args(wildcards, snr_option, snr):
    """Noise options of `irem simulate`, with a stable per-subject seed (combined with the run's)."""
    d, s = wildcards.dataset, wildcards.subject
    args = ["--profile", config["simulation"]["profile"], *_snr_args(d, s, snr_option, snr)]
    return shlex.join(args + ["--subject-seed", str(zlib.crc32(f"{d}/{s}".encode()))])


def scan_sim(wildcards):
    return SCANS[wildcards.dataset]["subjects"][wildcards.subject]["simulate"]


def scan_sim_args(wildcards):
    sim = scan_sim(wildcards)
    args = ["--k", str(sim["k"]), "--seed", str(sim["seed"]), "--profile",
            config["simulation"]["profile"],
            "--motion", str(sim["rotation_deg"]), str(sim["translation_mm"]),
            *_snr_args(sim["dataset"], sim["subject"], "--snr", config["simulation"]["snr"])]
    return shlex.join(args + (["--reorient"] if sim["reorient"] else []))


# --- Methods: configured ones, tuning and convergence variants, each a command template


def _variant(name, label, command, section):
    """A method entry for ``command``; threads, device, runtime and memory from ``section``."""
    return {"name": name, "label": label, "command": command,
            **{k: section[k] for k in ("threads", "device", "runtime", "mem_mb")},
            "inputs": [], "baseline": False, "hr_scan": False}  # fmt: skip


def _tuning_variants():
    """{name: (entry, sweep, candidate values)} of the tuning runs: the sweep's method with its
    context and one candidate's options appended (irem/evaluation/tuning.py)."""
    out = {}
    for sweep in config["tuning"]["sweeps"]:
        if sweep["method"] not in METHODS:
            _fail(f"tuning sweep {sweep['name']}: unknown method {sweep['method']!r}")
        base = METHODS[sweep["method"]]
        try:
            cands = candidates(sweep["values"])
        except ValueError as exc:
            _fail(f"tuning sweep {sweep['name']}: {exc}")
        for i, row in cands.iterrows():
            values = row.to_dict()
            name = f"tune{sweep['name']}{i}"
            command = f"{base['command']} {sweep['context']} {options(sweep['options'], values)}"
            entry = {**base, "name": name, "label": None, "command": command, "baseline": False}
            out[name] = (entry, sweep, values)
    return out


def _convergence_variants():
    """{name: entry} of the convergence study's runs: its command with each variant's options."""
    c = config["convergence"]
    for line in c["lines"]:
        if line not in METHODS:
            _fail(f"convergence.lines: unknown method {line!r}")
    return {v["name"]: _variant(v["name"], v["label"], f"{c['command']} {v['options']}", c)
            for v in (c["variants"] if c["command"] else [])}  # fmt: skip


def _convergence_sweep():
    """{name: (entry, parameter key, value)} of Fig. 3: the study's command with one value of one
    parameter each, named ``conv<tag><value>``."""
    c = config["convergence"]
    sw = c["sweep"]
    out = {}
    for p in sw["parameters"] if c["command"] else []:
        for v in p["values"]:
            name = f"conv{p['tag']}{L.snr_tag(v)}"
            label = None if sw["label"] is None else f"{sw['label']}, {p['tag']} {v:g}"
            command = f"{c['command']} {sw['options']} --set {p['key']}={v:g}"
            out[name] = (_variant(name, label, command, c), p["key"], v)
    return out


TUNING = _tuning_variants()
for _name in set(TUNING) & set(METHODS):
    _fail(f"method {_name!r} clashes with a tuning variant's name")
CONVERGENCE = _convergence_variants()
CONV_SWEEP = _convergence_sweep()
for _name in (set(CONVERGENCE) | set(CONV_SWEEP)) & (set(METHODS) | set(TUNING)):
    _fail(f"convergence variant {_name!r} clashes with another method's name")
for _name in set(CONVERGENCE) & set(CONV_SWEEP):
    _fail(f"convergence variant {_name!r} clashes with a sweep variant's name")
ALL_METHODS = {**METHODS, **{n: e for n, (e, _, _) in TUNING.items()}, **CONVERGENCE,
               **{n: e for n, (e, _, _) in CONV_SWEEP.items()}}


def label_of(method):
    return "HR scan (direct, same scan time)" if method == HR_SCAN else method_label(ALL_METHODS[method])


def method_command(wildcards, input, output, threads):
    """The method's command with its placeholders filled in for one run."""
    w, entry = wildcards, ALL_METHODS[wildcards.method]
    run = L.parse_run(w.run)
    job = (run, w.subject, w.method, w.seed, w.suffix)
    reference = hr = ""
    if has_reference(run.dataset, w.subject):
        reference = gt_of(run.dataset, w.subject)
    elif "{reference}" in entry["command"]:
        raise ValueError(f"method {w.method} needs {{reference}}, but {run.folder}/{w.subject} "
                         "has no reference image")
    if run.hr_snr is not None:
        hr = L.hr_scan_path(run, w.subject, w.seed)
    elif entry["hr_scan"]:
        raise ValueError(f"method {w.method} takes the scan-time experiment's HR scan")
    return fill(
        entry["command"] + scantime_options(w.method, run), stacks=shlex.join(input.stacks),
        hr=shlex.quote(hr), output=shlex.quote(output.image), reference=shlex.quote(reference),
        geometry=geometry_args(run, w.subject), threads=threads, device=entry["device"],
        seed=w.seed, checkpoint=shlex.quote(L.checkpoint_path(*job)),
        snapshots=shlex.quote(L.run_file(*job, L.SNAPSHOTS)),
    )


def scantime_options(method, run):
    """Options appended to a method's command in the scan-time experiment at its HR SNR."""
    opts = [o for snr, o in config["scan_time"]["options"].get(method, {}).items()
            if run.hr_snr is not None and float(snr) == run.hr_snr]  # fmt: skip
    return f" {opts[0]}" if opts else ""


def method_inputs(wildcards):
    """A method's own inputs (and the scan-time HR scan, for a method that takes it)."""
    entry, run = ALL_METHODS[wildcards.method], L.parse_run(wildcards.run)
    if entry["hr_scan"] and run.hr_snr is not None:
        return [*entry["inputs"], L.hr_scan_path(run, wildcards.subject, wildcards.seed)]
    return list(entry["inputs"])


def reference_input(wildcards):
    """The grid reference of a reconstruction, if any (simulated: the ground truth)."""
    run = L.parse_run(wildcards.run)
    return [gt_of(run.dataset, wildcards.subject)] if has_reference(run.dataset, wildcards.subject) else []


def geometry_args(run, subject):
    """Registration and output grid: simulated stacks are aligned by construction; real scans are
    registered to the fixed stack and put on the reference grid, or an isotropic one."""
    args = ["--fixed-index", "0"]
    if run.k is not None:
        args.append("--no-register")
    if has_reference(run.dataset, subject):
        args += ["--reference", gt_of(run.dataset, subject)]
    elif SCANS[run.dataset]["spacing"] is not None:
        args += ["--spacing", str(SCANS[run.dataset]["spacing"])]
    return shlex.join(args)


# --- Runs: (Run, subject, method, seed, suffix)


def sim_runs(datasets=None):
    return [(L.Run(d, k), s, m, seed, suffix_of(d, s))
            for d in datasets or DATASETS for k in KS for s in subjects(d)
            for m in LR_METHODS for seed in SEEDS]  # fmt: skip


def scan_runs():
    return [(L.Run(scan), s, m, seed, suffix_of(scan, s))
            for scan in SCANS for s in subjects(scan) for m in LR_METHODS for seed in SEEDS]


def scantime_runs():
    st = config["scan_time"]
    if not st["hr_snr"]:
        return []
    if st["dataset"] not in DATASETS:
        _fail(f"scan_time.dataset {st['dataset']!r} is not among the datasets")
    for m in st["methods"]:
        if m not in METHODS:
            _fail(f"scan_time.methods: unknown method {m!r}")
    d = st["dataset"]
    return [(L.Run(d, st["k"], float(snr)), s, m, seed, suffix_of(d, s))
            for snr in st["hr_snr"] for s in subjects(d)[: st["subjects"]]
            for m in [*st["methods"], HR_SCAN] for seed in SEEDS]  # fmt: skip


def tuning_runs(sweep):
    """Every run of a sweep: each candidate on every tuning subject, k, seed (and HR SNR)."""
    sw, d = SWEEPS[sweep], config["tuning"]["dataset"]
    if TUNING and not is_cohort(d):
        _fail(f"tuning.dataset {d!r} is not a cohort dataset (it needs a tuning split)")
    ks = [config["scan_time"]["k"]] if sw["snr"] else (sw["ks"] or KS)
    return [(L.Run(d, k, None if snr is None else float(snr)), subject, name, seed,
             suffix_of(d, subject))
            for name, (_, s, _) in TUNING.items() if s["name"] == sweep
            for subject in subjects(d, "tuning") for k in ks for snr in sw["snr"] or [None]
            for seed in (sw["seeds"] if sw["seeds"] is not None else SEEDS)]  # fmt: skip


def convergence_dataset():
    d = config["convergence"]["dataset"]
    if (CONVERGENCE or CONV_SWEEP) and not is_cohort(d):
        _fail(f"convergence.dataset {d!r} is not a cohort dataset (it needs a tuning split)")
    return d


def convergence_runs(methods=None, ks=None):
    """The study's runs (or those of ``methods``, e.g. its lines): the tuning subjects at each k
    (of the study, or ``ks``), with the workflow's seeds."""
    if not (CONVERGENCE or CONV_SWEEP):
        return []
    c, d = config["convergence"], convergence_dataset()
    return [(L.Run(d, int(k)), s, m, seed, suffix_of(d, s))
            for s in subjects(d, "tuning") for k in (ks or c["ks"])
            for m in (methods or CONVERGENCE) for seed in SEEDS]  # fmt: skip


def converged_runs(methods=None):
    """The evaluation of the study: its `evaluation.variants` (or ``methods``) on the first
    `evaluation.subjects` evaluation subjects at each k of the study."""
    e, d = config["convergence"]["evaluation"], convergence_dataset()
    if not CONVERGENCE or not e["subjects"]:
        return []
    for name in e["variants"]:
        if name not in CONVERGENCE:
            _fail(f"convergence.evaluation: {name!r} is not a variant of the study")
    subs = subjects(d, "evaluation")[: e["subjects"]]
    return [(L.Run(d, int(k)), s, m, seed, suffix_of(d, s))
            for s in subs for k in config["convergence"]["ks"]
            for m in (methods or e["variants"]) for seed in SEEDS]  # fmt: skip


def sweep_runs():
    """The sweep's runs and its lines' at its ks."""
    if not CONV_SWEEP:
        return []
    ks = config["convergence"]["sweep"]["ks"]
    return convergence_runs(list(CONV_SWEEP), ks) + convergence_runs(config["convergence"]["lines"], ks)


def every_run():
    return sim_runs() + scan_runs() + scantime_runs()


def scored_runs():
    return [r for r in every_run() if has_reference(r[0].dataset, r[1])]


def auto_mask_runs():
    """`auto_mask.methods` on every subject (both splits) of every dataset at `auto_mask.k`, and on
    every real scan with a reference: the runs scored with the automatic mask too."""
    a = config["auto_mask"]
    for m in set(a["methods"]) - set(LR_METHODS):
        _fail(f"auto_mask.methods: unknown method {m!r} (or one of the HR scan)")
    runs = [(L.Run(d, a["k"]), s) for d in DATASETS for s in subjects(d, None)]
    runs += [(L.Run(d), s) for d in SCANS for s in subjects(d) if has_reference(d, s)]
    return [(r, s, m, seed, suffix_of(r.dataset, s)) for r, s in runs for m in a["methods"]
            for seed in SEEDS]  # fmt: skip


def metrics_of(runs):
    return sorted({L.metrics_path(*r) for r in runs})


def all_reconstructions():
    return sorted({L.rec_path(*r) for r in every_run()})


def benchmark_pairs():
    """(benchmark TSV, metrics JSON) of every scored reconstruction: the TSV's run identity."""
    runs = {r for r in scored_runs() if r[2] != HR_SCAN}
    return sorted((L.benchmark_path(*r), L.metrics_path(*r)) for r in runs)


def metrics_meta(wildcards):
    """`--meta` options of `irem metrics`: the run's identity, as data for the report."""
    run, s = L.parse_run(wildcards.run), wildcards.subject
    meta = {**run.meta(), "subject": s, "seed": wildcards.seed, "method": wildcards.method}
    if run.dataset in DATASETS:
        meta["split"] = cohort_subjects(run.dataset)[s][2] if is_cohort(run.dataset) else "evaluation"
    if wildcards.method in CONV_SWEEP:  # one parameter's value: meta ablation=<key> value=<v>
        _, key, value = CONV_SWEEP[wildcards.method]
        meta["ablation"] = key.split(".")[-1]
        meta["value"] = f"{value:g}"
    return shlex.join(arg for k, v in meta.items() for arg in ("--meta", f"{k}={v}"))


# --- Tables and figures


def method_args(names=None):
    """`--method NAME=LABEL ...` (the order of tables and figures) and `--baselines ...`."""
    names = names or [*METHODS, *([HR_SCAN] if scantime_runs() else [])]
    args = [a for n in names for a in ("--method", f"{n}={label_of(n)}")]
    base = [m for m, e in METHODS.items() if e["baseline"]]
    return shlex.join(args + (["--baselines", *base] if base else []))


def table_report(name, label, caption=None):
    """A table of the workflow, flagged for `snakemake --report`."""
    return report(L.table_path(name), caption=caption, category="Tables", labels={"table": label})


def figure_report(name, figure, dataset, caption=None):
    """A figure's PNG, flagged for `snakemake --report` (``caption``: a file of report/)."""
    return report(L.figure_paths(name)[0], caption=caption and f"../report/{caption}.rst",
                  category="Figures", labels={"figure": figure, "dataset": dataset})  # fmt: skip


TABLES = [L.table_path(n) for n in ("metrics.csv", "metrics.md", "runs.csv", "runtime.csv",
                                     "runtime.md")]
AUTO_MASK_TABLES = [L.table_path(n) for n in ("auto_mask.csv", "auto_mask.md")]
SCANTIME_TABLES = [L.table_path(n) for n in ("scantime.csv", "scantime.md")]
FIG_K = config["figures"]["k"] if config["figures"]["k"] in KS else KS[0]  # Fig. 5's k


def fig5_inputs(wildcards):
    """GT, mask, the LR stack shown and each method's reconstruction for the Fig. 5/6 panel."""
    d = wildcards.dataset
    s, seed = subjects(d)[0], SEEDS[0]
    run = L.Run(d, FIG_K) if d in DATASETS else L.Run(d)
    lr = stacks_of(run, s, seed)[L.ORIENTATIONS.index(config["figures"]["lr_stack"])]
    suffix = suffix_of(d, s)
    recs = [L.rec_path(run, s, m, seed, suffix) for m in LR_METHODS]
    mets = [L.metrics_path(run, s, m, seed, suffix) for m in LR_METHODS]
    return {"gt": gt_of(d, s), "mask": L.mask_path(d, s), "lr": lr, "recs": recs, "metrics": mets}


def fig5_rec_args(wildcards):
    """`METHOD=PATH` pairs for `irem report fig5 --rec`."""
    return shlex.join(f"{m}={p}" for m, p in zip(LR_METHODS, fig5_inputs(wildcards)["recs"]))


def fig5_slice(wildcards):
    """Slice position of a Fig. 5/6 panel: the dataset's own choice, else figures.slice."""
    own = DATASETS.get(wildcards.dataset, {}).get("figure_slice")
    return own if own is not None else config["figures"]["slice"]


def fig5_title(wildcards):
    d = wildcards.dataset
    s = subjects(d)[0]
    if d in DATASETS:
        return f"{d}, k={FIG_K}, sub-{s} ({suffix_of(d, s)}), seed {SEEDS[0]}"
    return f"{d} (real-scan protocol), sub-{s}, seed {SEEDS[0]}"


def scans_with_figure():
    """Real scans whose first subject has a reference: their panel plays the paper's Fig. 6."""
    return [d for d in SCANS if has_reference(d, subjects(d)[0])]


def name_pattern(names):
    """A wildcard regex matching exactly these names (and nothing when there are none)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


def all_figures():
    out = []
    for d in DATASETS:
        out += L.figure_paths(f"fig4_{d}") + L.figure_paths(f"fig5_{d}")
    for d in scans_with_figure():
        out += L.figure_paths(f"fig6_{d}")
    for d in COHORTS:
        out += L.figure_paths(d)  # mid-slices of every subject
    return out + (L.figure_paths("scantime") if scantime_runs() else [])


def sweep_caption():
    """What Fig. 3 compares: the sweep's runs and subjects, from its config."""
    c = config["convergence"]
    if not CONV_SWEEP:
        return ""
    d = convergence_dataset()
    return (f"{c['sweep']['label'] or c['sweep']['options']}: one parameter varied at a time, all "
            f"else the paper's. Points: mean paired difference to the reference value over the "
            f"{len(subjects(d, 'tuning'))} tuning subjects of {d}, with 95% t intervals; dotted: "
            "baselines on the same stacks.")
