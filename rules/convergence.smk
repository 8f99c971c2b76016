# The paper network's convergence study (`snakemake convergence`; config `convergence`): each
# variant on the tuning subjects, its snapshots scored along training, the baselines as lines;
# `snakemake converged`: the chosen variants on evaluation subjects. Not part of `all`: hours on
# a CPU.


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
        title="The paper network until its held-out LR loss stops improving",
    log:
        L.job_log("tuning/convergence"),
    conda:
        CONDA_ENV
    shell:
        "irem report convergence --metrics {input.metrics:q} --lines {input.lines:q} "
        "{params.methods} --csv {output.csv:q} --runs {output.runs:q} --md {output.md:q} "
        "--title {params.title:q} -o {output.png:q} > {log:q} 2>&1"


rule convergence_sweep:
    """Fig. 3: one parameter of the paper's network at a time (config `convergence.sweep`), at its ks
    on the tuning subjects, each value paired with the reference's, the baselines as lines."""
    input:
        metrics=metrics_of(sweep_runs()),
    output:
        csv=L.tuning_path("convergence_sweep.csv"),
        md=L.tuning_path("convergence_sweep.md"),
        png=figure_report("fig3_ablation", "Fig. 3", str(config["convergence"]["dataset"]), "fig3"),
        pdf=L.figure_paths("fig3_ablation")[1],
    params:
        methods=method_args([*CONV_SWEEP, *config["convergence"]["lines"]]),
        lines=shlex.join(["--baselines", *config["convergence"]["lines"]]),
        reference=shlex.join(
            ["--reference", *(f"{k.split('.')[-1]}={v:g}"
                              for k, v in config["convergence"]["sweep"]["reference"].items())]
        ),
        title=f"Fig. 3: the paper's network, one parameter at a time "
        f"(k = {', '.join(map(str, config['convergence']['sweep']['ks']))}, tuning subjects)",
        caption=sweep_caption(),
        dpi=config["figures"]["dpi"],
    log:
        L.job_log("tuning/convergence_sweep"),
    conda:
        CONDA_ENV
    shell:
        "irem report fig3 --metrics {input.metrics:q} {params.methods} {params.lines} "
        "{params.reference} --csv {output.csv:q} --md {output.md:q} --title {params.title:q} "
        "--caption {params.caption:q} --dpi {params.dpi} -o {output.png:q} {output.pdf:q} "
        "> {log:q} 2>&1"


use rule convergence_report as converged with:
    """The study's variants scored on evaluation subjects against its lines (config
    `convergence.evaluation`): results/tables/converged*.{csv,md}, results/figures/converged.png."""
    input:
        metrics=metrics_of(converged_runs()),
        lines=metrics_of(converged_runs(config["convergence"]["lines"])),
    output:
        csv=L.table_path("converged_curves.csv"),
        runs=L.table_path("converged_runs.csv"),
        md=L.table_path("converged.md"),
        png=L.figure_paths("converged")[0],
    params:
        title="The paper network until its held-out LR loss stops improving: evaluation subjects",
    log:
        L.job_log("converged"),


rule convergence:
    """Regenerate the convergence study and its sweep (results/tuning/convergence*)."""
    input:
        rules.convergence_report.output,
        rules.convergence_sweep.output if CONV_SWEEP else [],
