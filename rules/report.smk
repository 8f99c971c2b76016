# Tables and figures (`irem report`): pure functions of the per-run metrics files, which carry
# each run's identity; labels and the order of methods come from the config.


rule tables:
    """metrics.csv/.md (per dataset, k and method over the evaluation subjects, with a paired
    comparison against the best baseline), runs.csv (one row per run) and runtime.csv/.md."""
    input:
        metrics=metrics_of(scored_runs()),
        benchmarks=[b for b, _ in benchmark_pairs()],
    output:
        metrics_csv=table_report("metrics.csv", "quality (CSV)"),
        metrics_md=table_report("metrics.md", "quality", caption="../report/tables.rst"),
        runs=table_report("runs.csv", "every run (CSV)"),
        runtime_csv=table_report("runtime.csv", "run time (CSV)"),
        runtime_md=table_report("runtime.md", "run time"),
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


rule auto_mask_table:
    """auto_mask.csv/.md: brain PSNR in the automatic mask against the true one (`auto_mask`)."""
    input:
        metrics=sorted({L.auto_metrics_path(*r) for r in auto_mask_runs()}),
    output:
        csv=L.table_path("auto_mask.csv"),
        md=table_report("auto_mask.md", "automatic mask"),
    params:
        methods=method_args(config["auto_mask"]["methods"]),
    log:
        L.job_log("auto_mask"),
    conda:
        CONDA_ENV
    shell:
        "irem report automask --metrics {input.metrics:q} {params.methods} --csv {output.csv:q} "
        "--md {output.md:q} > {log:q} 2>&1"


rule automask:
    """`snakemake automask`: only the automatic-mask table."""
    input:
        AUTO_MASK_TABLES,


rule scantime:
    """The scan-time-matched experiment: table and "PSNR vs HR SNR at equal scan time"."""
    input:
        metrics=metrics_of(scantime_runs()),
    output:
        csv=L.table_path("scantime.csv"),
        md=table_report("scantime.md", "scan time"),
        png=figure_report("scantime", "scan time", str(config["scan_time"]["dataset"]), "scantime"),
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
        metrics=lambda w: metrics_of(sim_runs([w.dataset])),
    output:
        png=figure_report("fig4_{dataset}", "Fig. 4", "{dataset}", "fig4"),
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
        lambda w: [gt_of(w.dataset, s) for s in subjects(w.dataset, None)],
    output:
        png=figure_report("{dataset}", "cohort", "{dataset}"),
        pdf=L.figure_paths("{dataset}")[1],
    wildcard_constraints:
        dataset=name_pattern(COHORTS),
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
        png=figure_report("fig5_{dataset}", "Fig. 5", "{dataset}", "fig5"),
        pdf=L.figure_paths("fig5_{dataset}")[1],
    wildcard_constraints:
        dataset=name_pattern(DATASETS),
    params:
        recs=fig5_rec_args,
        methods=method_args(LR_METHODS),
        title=fig5_title,
        axis=config["figures"]["axis"],
        fraction=fig5_slice,
        gt_label="",  # Fig. 6: its ground truth is a real scan's HR reference
        dpi=config["figures"]["dpi"],
    log:
        L.job_log("fig5_{dataset}"),
    conda:
        CONDA_ENV
    shell:
        "irem report fig5 --gt {input.gt:q} --mask {input.mask:q} --lr {input.lr:q} "
        "--rec {params.recs} --metrics {input.metrics:q} {params.methods} --axis {params.axis} "
        "--slice {params.fraction}{params.gt_label} --title {params.title:q} --dpi {params.dpi} "
        "-o {output.png:q} {output.pdf:q} > {log:q} 2>&1"


use rule fig5 as fig6 with:
    """Fig. 6: the real-scan protocol, against the HR reference after registration."""
    output:
        png=figure_report("fig6_{dataset}", "Fig. 6", "{dataset}", "fig6"),
        pdf=L.figure_paths("fig6_{dataset}")[1],
    wildcard_constraints:
        dataset=name_pattern(scans_with_figure()),
    params:
        gt_label=" --gt-label 'HR reference'",
    log:
        L.job_log("fig6_{dataset}"),
