# Tables and figures (`irem report`): pure functions of the per-run metrics files, which carry
# each run's identity; labels and the order of methods come from the config.


rule tables:
    """metrics.csv/.md (per dataset, k and method over the evaluation subjects, with a paired
    comparison against the best baseline), runs.csv (one row per run) and runtime.csv/.md."""
    input:
        metrics=metrics_of(scored_runs()),
        benchmarks=[b for b, _ in benchmark_pairs()],
    output:
        metrics_csv=report(
            L.table_path("metrics.csv"), category="Tables", labels={"table": "quality (CSV)"}
        ),
        metrics_md=report(
            L.table_path("metrics.md"),
            caption="../report/tables.rst",
            category="Tables",
            labels={"table": "quality"},
        ),
        runs=report(
            L.table_path("runs.csv"), category="Tables", labels={"table": "every run (CSV)"}
        ),
        runtime_csv=report(
            L.table_path("runtime.csv"), category="Tables", labels={"table": "run time (CSV)"}
        ),
        runtime_md=report(
            L.table_path("runtime.md"), category="Tables", labels={"table": "run time"}
        ),
    params:
        outdir=subpath(output.metrics_csv, parent=True),
        methods=method_args(),
        pairs=shlex.join(f"{b}={m}" for b, m in benchmark_pairs()),
    log:
        L.job_log("tables"),
    conda:
        CONDA_ENV
    shell:
        "irem report tables --metrics {input.metrics:q} --benchmark {params.pairs} "
        "{params.methods} --out-dir {params.outdir:q} > {log:q} 2>&1"


rule scantime:
    """The scan-time-matched experiment: table and "PSNR vs HR SNR at equal scan time"."""
    input:
        metrics=metrics_of(scantime_runs()),
    output:
        csv=L.table_path("scantime.csv"),
        md=report(
            L.table_path("scantime.md"), category="Tables", labels={"table": "scan time"}
        ),
        png=report(
            L.figure_paths("scantime")[0],
            caption="../report/scantime.rst",
            category="Figures",
            labels={"figure": "scan time", "dataset": str(config["scan_time"]["dataset"])},
        ),
        pdf=L.figure_paths("scantime")[1],
    params:
        methods=method_args([*config["scan_time"]["methods"], HR_SCAN]),
        title=f"PSNR vs HR SNR at equal scan time ({config['scan_time']['dataset']}, "
        f"k={config['scan_time']['k']})",
        dpi=config["figures"]["dpi"],
    log:
        L.job_log("scantime"),
    conda:
        CONDA_ENV
    shell:
        "irem report scantime --metrics {input.metrics:q} {params.methods} "
        "--title {params.title:q} --dpi {params.dpi} --csv {output.csv:q} --md {output.md:q} "
        "-o {output.png:q} {output.pdf:q} > {log:q} 2>&1"


rule fig4:
    """Fig. 4: PSNR/SSIM bars by method and k for one dataset, with per-subject points and CIs."""
    input:
        metrics=fig4_metrics,
    output:
        png=report(
            L.figure_paths("fig4_{dataset}")[0],
            caption="../report/fig4.rst",
            category="Figures",
            labels={"figure": "Fig. 4", "dataset": "{dataset}"},
        ),
        pdf=L.figure_paths("fig4_{dataset}")[1],
    params:
        methods=method_args(LR_METHODS),
        dpi=config["figures"]["dpi"],
    log:
        L.job_log("fig4_{dataset}"),
    conda:
        CONDA_ENV
    shell:
        "irem report fig4 --metrics {input.metrics:q} {params.methods} "
        "--title 'Fig. 4: {wildcards.dataset}' --dpi {params.dpi} "
        "-o {output.png:q} {output.pdf:q} > {log:q} 2>&1"


rule cohort_figure:
    """The mid-slices of every subject of a cohort, so a reader sees the variety."""
    input:
        cohort_figure_inputs,
    output:
        png=report(
            L.figure_paths("{dataset}")[0],
            category="Figures",
            labels={"figure": "cohort", "dataset": "{dataset}"},
        ),
        pdf=L.figure_paths("{dataset}")[1],
    wildcard_constraints:
        dataset=name_pattern(cohort_datasets()),
    params:
        dpi=config["figures"]["dpi"],
    log:
        L.job_log("cohort_{dataset}"),
    conda:
        CONDA_ENV
    shell:
        "irem report cohort {input:q} --dpi {params.dpi} -o {output.png:q} {output.pdf:q} "
        "> {log:q} 2>&1"


rule fig5:
    """Fig. 5: the same slice through the ground truth, an LR stack and every method, zoomed, with
    error maps."""
    input:
        unpack(fig5_inputs),
    output:
        png=report(
            L.figure_paths("fig5_{dataset}")[0],
            caption="../report/fig5.rst",
            category="Figures",
            labels={"figure": "Fig. 5", "dataset": "{dataset}"},
        ),
        pdf=L.figure_paths("fig5_{dataset}")[1],
    wildcard_constraints:
        dataset=name_pattern(DATASETS),
    params:
        recs=fig5_rec_args,
        methods=method_args(LR_METHODS),
        title=fig5_title,
        axis=config["figures"]["axis"],
        fraction=fig5_slice,
        dpi=config["figures"]["dpi"],
    log:
        L.job_log("fig5_{dataset}"),
    conda:
        CONDA_ENV
    shell:
        "irem report fig5 --gt {input.gt:q} --mask {input.mask:q} --lr {input.lr:q} "
        "--rec {params.recs} --metrics {input.metrics:q} {params.methods} --axis {params.axis} "
        "--slice {params.fraction} --title {params.title:q} --dpi {params.dpi} "
        "-o {output.png:q} {output.pdf:q} > {log:q} 2>&1"


rule fig6:
    """Fig. 6: the real-scan protocol, against the HR reference after registration."""
    input:
        unpack(fig5_inputs),
    output:
        png=report(
            L.figure_paths("fig6_{dataset}")[0],
            caption="../report/fig6.rst",
            category="Figures",
            labels={"figure": "Fig. 6", "dataset": "{dataset}"},
        ),
        pdf=L.figure_paths("fig6_{dataset}")[1],
    wildcard_constraints:
        dataset=name_pattern(scans_with_figure()),
    params:
        recs=fig5_rec_args,
        methods=method_args(LR_METHODS),
        title=fig5_title,
        axis=config["figures"]["axis"],
        fraction=fig5_slice,
        dpi=config["figures"]["dpi"],
    log:
        L.job_log("fig6_{dataset}"),
    conda:
        CONDA_ENV
    shell:
        "irem report fig5 --gt {input.gt:q} --mask {input.mask:q} --lr {input.lr:q} "
        "--rec {params.recs} --metrics {input.metrics:q} {params.methods} --axis {params.axis} "
        "--slice {params.fraction} --gt-label 'HR reference' --title {params.title:q} "
        "--dpi {params.dpi} -o {output.png:q} {output.pdf:q} > {log:q} 2>&1"
