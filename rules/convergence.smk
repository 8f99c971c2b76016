# The paper network's convergence study (`snakemake convergence`; config `convergence`): each
# variant on the tuning subjects, its snapshots scored along training, the baselines as lines.
# Not part of `all`: it takes hours on a CPU.


rule convergence_report:
    """Curves, runs, paired differences and the figure of the study."""
    input:
        metrics=metrics_of(convergence_runs()),
        lines=metrics_of(convergence_runs(config["convergence"]["lines"])),
    output:
        csv=L.tuning_path("convergence.csv"),
        runs=L.tuning_path("convergence_runs.csv"),
        md=L.tuning_path("convergence.md"),
        png=L.tuning_path("convergence.png"),
    params:
        methods=method_args([*CONVERGENCE, *config["convergence"]["lines"]]),
    log:
        L.job_log("tuning/convergence"),
    conda:
        CONDA_ENV
    shell:
        "irem report convergence --metrics {input.metrics:q} --lines {input.lines:q} "
        "{params.methods} --csv {output.csv:q} --runs {output.runs:q} --md {output.md:q} "
        "--title 'The paper network until its held-out LR loss stops improving' "
        "-o {output.png:q} > {log:q} 2>&1"


rule convergence:
    """Regenerate the convergence study (results/tuning/convergence.*)."""
    input:
        rules.convergence_report.output,
