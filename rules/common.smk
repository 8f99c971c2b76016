# Helpers shared by all rules: the experiments of the config as lists of runs. Every path comes
# from irem/layout.py (the layout is documented there); method commands and labels from the
# config's `methods` entries (irem/report/labels.py); nothing here names a method.

import os
import shlex
import sys
import zlib

# The workflow's own source tree first (as the rules' PYTHONPATH), then an installed irem-bench.
sys.path.insert(0, workflow.basedir)
from irem import layout as L  # noqa: E402
from irem.report.labels import fill, method_label  # noqa: E402
from irem.evaluation.tuning import candidates, options  # noqa: E402

ORIENTATIONS = L.ORIENTATIONS
# The jobs' conda environment (--use-conda), relative to the workflow (rules/ would be the default).
CONDA_ENV = os.path.join(workflow.basedir, config["conda_env"])
EMBEDDED = ("mni152_t1", "mni152_flair", "phantom")
CONTRASTS = ("T1w", "T2w", "FLAIR")  # cohort subject i has CONTRASTS[i % 3]


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


# --------------------------------------------------------------------------------------------------
# Subjects


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


def subjects(dataset, split="evaluation"):
    """Subject labels of a dataset or real scan; `split` selects a cohort's tuning/evaluation split."""
    if is_cohort(dataset):
        return [s for s, (_, _, sp) in cohort_subjects(dataset).items() if split in (None, sp)]
    entry = DATASETS.get(dataset) or SCANS[dataset]
    return list(entry["subjects"]) if split in (None, "evaluation") else []


def split_of(dataset, subject):
    return cohort_subjects(dataset)[subject][2] if is_cohort(dataset) else "evaluation"


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


# --------------------------------------------------------------------------------------------------
# Ground truths and masks


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
    src = gt_source(wildcards)
    return [] if src in EMBEDDED else [src]


def _crop_args(entry):
    if not entry.get("crop"):
        return []
    return ["--crop", *map(str, entry["crop"]), "--crop-position", *map(str, entry["crop_position"])]


def gt_args(wildcards):
    """Options of `irem dataset` for a ground truth."""
    d = wildcards.dataset
    if d not in DATASETS:
        return ""  # a real scan's reference: copied and checked as it is
    entry = DATASETS[d]
    args = ["--seed", str(entry["seed"]), "--phantom-size", str(entry["phantom_size"])]
    return shlex.join(args + _crop_args(entry))


def cohort_args(wildcards):
    """Options of `irem dataset mni152_cohort` for one subject."""
    entry = DATASETS[wildcards.dataset]
    index, contrast, _ = cohort_subjects(wildcards.dataset)[wildcards.subject]
    args = ["--index", str(index), "--seed", str(entry["cohort"]["seed"]), "--contrast", contrast]
    return shlex.join(args + _crop_args(entry))


def _mask_threshold(dataset, subject):
    if dataset in DATASETS:
        thr = DATASETS[dataset]["mask_threshold"]
        if thr is None:
            embedded = is_cohort(dataset) or DATASETS[dataset]["subjects"][subject] in EMBEDDED
            thr = 0.0 if embedded else 0.1
        return thr
    entry = SCANS[dataset]["subjects"][subject]
    if "simulate" in entry:  # the reference is a copy of a dataset's ground truth
        return _mask_threshold(entry["simulate"]["dataset"], entry["simulate"]["subject"])
    return SCANS[dataset]["mask_threshold"]


def mask_threshold(wildcards):
    """Brain-mask threshold: exact (> 0) for the zero-background embedded volumes."""
    return _mask_threshold(wildcards.dataset, wildcards.subject)


def mask_input(wildcards):
    return gt_of(wildcards.dataset, wildcards.subject)


# --------------------------------------------------------------------------------------------------
# LR stacks


def stacks_of(run, subject, seed):
    """The LR stacks of a reconstruction, fixed stack first."""
    if run.k is None:
        entry = SCANS[run.dataset]["subjects"][subject]
        return L.scan_stack_paths(run.dataset, subject) if "simulate" in entry else list(entry["stacks"])
    return L.stack_paths(run, subject, seed)


def stacks_input(wildcards):
    return stacks_of(L.parse_run(wildcards.run), wildcards.subject, wildcards.seed)


def _truth_inputs(d, s):
    """Ground truth (and white-matter mask, the SNR's reference region, of a cohort subject)."""
    out = {"gt": gt_of(d, s)}
    if is_cohort(d):
        out["wm"] = L.wm_mask_path(d, s, suffix_of(d, s))
    return out


def _snr_args(d, s, snr_option, snr):
    if snr is None:
        return []
    wm = ["--wm-mask", L.wm_mask_path(d, s, suffix_of(d, s))] if is_cohort(d) else []
    return [snr_option, str(snr), *wm]


def simulate_input(wildcards):
    return _truth_inputs(wildcards.dataset, wildcards.subject)


def subject_seed(dataset, subject):
    """A stable per-subject seed of the noise (combined with the run's seed)."""
    return zlib.crc32(f"{dataset}/{subject}".encode())


def _noise_args(wildcards, snr_option, snr):
    d, s = wildcards.dataset, wildcards.subject
    args = ["--profile", config["simulation"]["profile"], *_snr_args(d, s, snr_option, snr)]
    return shlex.join(args + ["--subject-seed", str(subject_seed(d, s))])


def simulate_args(wildcards):
    return _noise_args(wildcards, "--snr", config["simulation"]["snr"])


def scantime_args(wildcards):
    """The scan-time experiment: LR SNR from the HR SNR by the scan-time rule, plus the HR scan."""
    snr = L.parse_run(f"{wildcards.dataset}/snr{wildcards.snr}/k{wildcards.k}").hr_snr
    return _noise_args(wildcards, "--hr-snr", snr)


def scan_sim(wildcards):
    return SCANS[wildcards.dataset]["subjects"][wildcards.subject]["simulate"]


def scan_sim_input(wildcards):
    sim = scan_sim(wildcards)
    return _truth_inputs(sim["dataset"], sim["subject"])


def scan_sim_args(wildcards):
    sim = scan_sim(wildcards)
    args = ["--k", str(sim["k"]), "--seed", str(sim["seed"]), "--profile",
            config["simulation"]["profile"],
            "--motion", str(sim["rotation_deg"]), str(sim["translation_mm"]),
            *_snr_args(sim["dataset"], sim["subject"], "--snr", config["simulation"]["snr"])]
    if sim["reorient"]:
        args.append("--reorient")
    return shlex.join(args)


# --------------------------------------------------------------------------------------------------
# Methods: configured ones, tuning and convergence variants, each a command template


def _swept(prefix, command, parameters, section, label=None):
    """{name: (entry, parameter key, value)}: ``command`` with one value of one parameter each
    (named ``<prefix><tag><value>``); threads, device, runtime and memory from ``section``."""
    out = {}
    for p in parameters if command else []:
        for v in p["values"]:
            name = f"{prefix}{p['tag']}{L.snr_tag(v)}"
            entry = {
                "name": name,
                "label": None if label is None else f"{label}, {p['tag']} {v:g}",
                "command": f"{command} --set {p['key']}={v:g}",
                "threads": section["threads"],
                "device": section["device"],
                "runtime": section["runtime"],
                "mem_mb": section["mem_mb"],
                "inputs": [],
                "baseline": False,
                "hr_scan": False,
            }
            out[name] = (entry, p["key"], v)
    return out


def _tuning_variants():
    """{name: (entry, sweep, candidate values)} of the tuning runs: the sweep's method with one
    candidate's options appended (irem/evaluation/tuning.py)."""
    out = {}
    for sweep in config["tuning"]["sweeps"]:
        if sweep["method"] not in METHODS:
            _fail(f"tuning sweep {sweep['name']}: unknown method {sweep['method']!r}")
        base = METHODS[sweep["method"]]
        for i, row in candidates(sweep["values"]).iterrows():
            values = row.to_dict()
            name = f"tune{sweep['name']}{i}"
            command = f"{base['command']} {options(sweep['options'], values)}"
            entry = {**base, "name": name, "label": None, "command": command, "baseline": False}
            out[name] = (entry, sweep, values)
    return out


TUNING = _tuning_variants()
for _name in set(TUNING) & set(METHODS):
    _fail(f"method {_name!r} clashes with a tuning variant's name")


def _convergence_variants():
    """{name: entry} of the convergence study's runs: its command with each variant's options."""
    c = config["convergence"]
    out = {}
    for v in c["variants"] if c["command"] else []:
        out[v["name"]] = {
            "name": v["name"], "label": v["label"], "command": f"{c['command']} {v['options']}",
            "threads": c["threads"], "device": c["device"], "runtime": c["runtime"],
            "mem_mb": c["mem_mb"], "inputs": [], "baseline": False, "hr_scan": False,
        }
    for line in c["lines"]:
        if line not in METHODS:
            _fail(f"convergence.lines: unknown method {line!r}")
    return out


CONVERGENCE = _convergence_variants()
_c = config["convergence"]
CONV_SWEEP = _swept("conv", _c["command"] and f"{_c['command']} {_c['sweep']['options']}",
                    _c["sweep"]["parameters"], _c, _c["sweep"]["label"])
for _name in (set(CONVERGENCE) | set(CONV_SWEEP)) & (set(METHODS) | set(TUNING)):
    _fail(f"convergence variant {_name!r} clashes with another method's name")
for _name in set(CONVERGENCE) & set(CONV_SWEEP):
    _fail(f"convergence variant {_name!r} clashes with a sweep variant's name")
ALL_METHODS = {**METHODS, **{n: e for n, (e, _, _) in TUNING.items()}, **CONVERGENCE,
               **{n: e for n, (e, _, _) in CONV_SWEEP.items()}}
HR_SCAN = "hrscan"  # the scan-time experiment's noisy HR scan, scored like a method


def method_names():
    return list(ALL_METHODS)


def label_of(method):
    if method == HR_SCAN:
        return "HR scan (direct, same scan time)"
    return method_label(ALL_METHODS[method])


def method_command(wildcards, input, output, threads):
    """The method's command with its placeholders filled in for one run."""
    entry = ALL_METHODS[wildcards.method]
    run = L.parse_run(wildcards.run)
    reference = ""
    if has_reference(run.dataset, wildcards.subject):
        reference = gt_of(run.dataset, wildcards.subject)
    elif "{reference}" in entry["command"]:
        raise ValueError(f"method {wildcards.method} needs {{reference}}, but {run.folder}/"
                         f"{wildcards.subject} has no reference image")
    hr = ""
    if run.hr_snr is not None:
        hr = L.hr_scan_path(run, wildcards.subject, wildcards.seed)
    elif entry["hr_scan"]:
        raise ValueError(f"method {wildcards.method} takes the scan-time experiment's HR scan")
    values = {
        "stacks": shlex.join(input.stacks),
        "hr": shlex.quote(hr),
        "output": shlex.quote(output.image),
        "reference": shlex.quote(reference),
        "geometry": geometry_args(run, wildcards.subject),
        "threads": threads,
        "device": entry["device"],
        "seed": wildcards.seed,
        "checkpoint": shlex.quote(
            L.checkpoint_path(run, wildcards.subject, wildcards.method, wildcards.seed,
                              wildcards.suffix)
        ),
        "snapshots": shlex.quote(
            L.snapshot_path(run, wildcards.subject, wildcards.method, wildcards.seed,
                            wildcards.suffix)
        ),
    }
    return fill(entry["command"] + scantime_options(wildcards.method, run), **values)


def scantime_options(method, run):
    """Options appended to a method's command in the scan-time experiment at its HR SNR."""
    per_snr = config["scan_time"]["options"].get(method, {})
    if run.hr_snr is None:
        return ""
    opts = [o for snr, o in per_snr.items() if float(snr) == run.hr_snr]
    return f" {opts[0]}" if opts else ""


def method_inputs(wildcards):
    extra = list(ALL_METHODS[wildcards.method]["inputs"])
    run = L.parse_run(wildcards.run)
    if ALL_METHODS[wildcards.method]["hr_scan"] and run.hr_snr is not None:
        extra.append(L.hr_scan_path(run, wildcards.subject, wildcards.seed))
    return extra


def method_threads(wildcards):
    return ALL_METHODS[wildcards.method]["threads"]


def method_gpu(wildcards):
    """One `gpu` resource token for jobs that may run on a GPU (`--resources gpu=1` serialises)."""
    return 0 if ALL_METHODS[wildcards.method]["device"] == "cpu" else 1


def method_runtime(wildcards):
    return ALL_METHODS[wildcards.method]["runtime"]


def method_mem(wildcards):
    return ALL_METHODS[wildcards.method]["mem_mb"]


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


# --------------------------------------------------------------------------------------------------
# Runs: (Run, subject, method, seed, suffix)


def sim_runs(datasets=None, ks=None, methods=None, split="evaluation"):
    out = []
    for d in datasets or DATASETS:
        for k in ks or KS:
            for s in subjects(d, split):
                for m in methods or LR_METHODS:
                    for seed in SEEDS:
                        out.append((L.Run(d, k), s, m, seed, suffix_of(d, s)))
    return out


def scan_runs():
    out = []
    for scan in SCANS:
        for s in subjects(scan):
            for m in LR_METHODS:
                for seed in SEEDS:
                    out.append((L.Run(scan), s, m, seed, suffix_of(scan, s)))
    return out


def scantime_subjects():
    st = config["scan_time"]
    return subjects(st["dataset"])[: st["subjects"]] if st["dataset"] else []


def scantime_runs():
    st = config["scan_time"]
    if not st["hr_snr"]:
        return []
    if st["dataset"] not in DATASETS:
        _fail(f"scan_time.dataset {st['dataset']!r} is not among the datasets")
    for m in st["methods"]:
        if m not in METHODS:
            _fail(f"scan_time.methods: unknown method {m!r}")
    out = []
    for snr in st["hr_snr"]:
        run = L.Run(st["dataset"], st["k"], float(snr))
        for s in scantime_subjects():
            for m in [*st["methods"], HR_SCAN]:
                for seed in SEEDS:
                    out.append((run, s, m, seed, suffix_of(st["dataset"], s)))
    return out


def tuning_dataset():
    d = config["tuning"]["dataset"]
    if TUNING and not is_cohort(d):
        _fail(f"tuning.dataset {d!r} is not a cohort dataset (it needs a tuning split)")
    return d


def sweeps():
    return {s["name"]: s for s in config["tuning"]["sweeps"]}


def tuning_runs(sweep):
    """Every run of a sweep: each candidate on every tuning subject, k, seed (and HR SNR)."""
    sw = sweeps()[sweep]
    d = tuning_dataset()
    seeds = sw["seeds"] if sw["seeds"] is not None else SEEDS
    snrs = sw["snr"] or [None]
    ks = [config["scan_time"]["k"]] if sw["snr"] else (sw["ks"] or KS)
    out = []
    for name, (_, s, _) in TUNING.items():
        if s["name"] != sweep:
            continue
        for subject in subjects(d, "tuning"):
            for k in ks:
                for snr in snrs:
                    run = L.Run(d, k, None if snr is None else float(snr))
                    for seed in seeds:
                        out.append((run, subject, name, seed, suffix_of(d, subject)))
    return out


def tuning_cases(wildcards):
    """JSON: each variant of the sweep -> its candidate values."""
    import json

    return json.dumps({n: v for n, (_, s, v) in TUNING.items() if s["name"] == wildcards.sweep})


def tuning_method(wildcards):
    return sweeps()[wildcards.sweep]["method"]


def tuning_options(wildcards):
    return sweeps()[wildcards.sweep]["options"]


def tuning_prefer(wildcards):
    import json

    return json.dumps(sweeps()[wildcards.sweep]["prefer"])  # "null": no preferred candidate


def tuning_metrics(wildcards):
    return metrics_of(tuning_runs(wildcards.sweep))


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
    """The sweep's runs and its lines' at its k."""
    if not CONV_SWEEP:
        return []
    ks = [config["convergence"]["sweep"]["k"]]
    return convergence_runs(list(CONV_SWEEP), ks) + convergence_runs(
        config["convergence"]["lines"], ks
    )


def every_run():
    return sim_runs() + scan_runs() + scantime_runs()


def scored_runs():
    return [r for r in every_run() if has_reference(r[0].dataset, r[1])]


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
    run = L.parse_run(wildcards.run)
    meta = {**run.meta(), "subject": wildcards.subject, "seed": wildcards.seed,
            "method": wildcards.method}
    if run.dataset in DATASETS:
        meta["split"] = split_of(run.dataset, wildcards.subject)
    if wildcards.method in CONV_SWEEP:  # one parameter's value: meta ablation=<key> value=<v>
        _, key, value = CONV_SWEEP[wildcards.method]
        meta["ablation"] = key.split(".")[-1]
        meta["value"] = f"{value:g}"
    return shlex.join(arg for k, v in meta.items() for arg in ("--meta", f"{k}={v}"))


def metrics_gt(wildcards):
    return gt_of(L.parse_run(wildcards.run).dataset, wildcards.subject)


def metrics_mask(wildcards):
    return L.mask_path(L.parse_run(wildcards.run).dataset, wildcards.subject)


# --------------------------------------------------------------------------------------------------
# Tables and figures


def method_args(names=None):
    """`--method NAME=LABEL ...` (the order of tables and figures) and `--baselines ...`."""
    names = names or [*METHODS, *([HR_SCAN] if scantime_runs() else [])]
    args = [a for n in names for a in ("--method", f"{n}={label_of(n)}")]
    base = [m for m, e in METHODS.items() if e["baseline"]]
    if base:
        args += ["--baselines", *base]
    return shlex.join(args)


TABLES = [L.table_path(n) for n in ("metrics.csv", "metrics.md", "runs.csv", "runtime.csv",
                                     "runtime.md")]
SCANTIME_TABLES = [L.table_path(n) for n in ("scantime.csv", "scantime.md")]


def fig_k():
    k = config["figures"]["k"]
    return k if k in KS else KS[0]


def first_subject(dataset):
    return subjects(dataset)[0]


def fig5_inputs(wildcards):
    """GT, mask, the LR stack shown and each method's reconstruction for the Fig. 5/6 panel."""
    d = wildcards.dataset
    s, seed = first_subject(d), SEEDS[0]
    run = L.Run(d, fig_k()) if d in DATASETS else L.Run(d)
    lr = stacks_of(run, s, seed)[ORIENTATIONS.index(config["figures"]["lr_stack"])]
    suffix = suffix_of(d, s)
    recs = [L.rec_path(run, s, m, seed, suffix) for m in LR_METHODS]
    mets = [L.metrics_path(run, s, m, seed, suffix) for m in LR_METHODS]
    return {"gt": gt_of(d, s), "mask": L.mask_path(d, s), "lr": lr, "recs": recs, "metrics": mets}


def fig5_rec_args(wildcards):
    """`METHOD=PATH` pairs for `irem report fig5 --rec`."""
    ins = fig5_inputs(wildcards)
    return shlex.join(f"{m}={p}" for m, p in zip(LR_METHODS, ins["recs"]))


def fig5_slice(wildcards):
    """Slice position of a Fig. 5/6 panel: the dataset's own choice, else figures.slice."""
    own = DATASETS.get(wildcards.dataset, {}).get("figure_slice")
    return own if own is not None else config["figures"]["slice"]


def fig5_title(wildcards):
    d = wildcards.dataset
    s = first_subject(d)
    if d in DATASETS:
        return f"{d}, k={fig_k()}, sub-{s} ({suffix_of(d, s)}), seed {SEEDS[0]}"
    return f"{d} (real-scan protocol), sub-{s}, seed {SEEDS[0]}"


def scans_with_figure():
    """Real scans whose first subject has a reference: their panel plays the paper's Fig. 6."""
    return [d for d in SCANS if has_reference(d, first_subject(d))]


def name_pattern(names):
    """A wildcard regex matching exactly these names (and nothing when there are none)."""
    import re

    return "|".join(re.escape(n) for n in names) if names else "(?!)"


def cohort_datasets():
    return [d for d in DATASETS if is_cohort(d)]


def cohort_figure_inputs(wildcards):
    d = wildcards.dataset
    return [gt_of(d, s) for s in subjects(d, None)]


def all_figures():
    out = []
    for d in DATASETS:
        out += L.figure_paths(f"fig4_{d}") + L.figure_paths(f"fig5_{d}")
    for d in scans_with_figure():
        out += L.figure_paths(f"fig6_{d}")
    for d in cohort_datasets():
        out += L.figure_paths(d)  # mid-slices of every subject
    if scantime_runs():
        out += L.figure_paths("scantime")
    return out


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


def fig4_metrics(wildcards):
    return metrics_of(sim_runs(datasets=[wildcards.dataset]))
