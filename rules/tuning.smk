# Tuning sweeps (`snakemake tune`): each candidate of a sweep is a variant of its method (the
# method's command with the candidate's options appended), run and scored like any method on the
# tuning subjects only; irem/evaluation/tuning.py chooses. Not part of `all`: the configs carry the chosen
# options, and tests/test_tuning.py checks that they match results/tuning/chosen.csv.


rule tuning_sweep:
    """One sweep's runs (results/tuning/<sweep>.csv) and its choice per group."""
    input:
        metrics=tuning_metrics,
    output:
        runs=L.tuning_path("{sweep}.csv"),
        chosen=L.tuning_path("{sweep}_chosen.csv"),
    wildcard_constraints:
        sweep=name_pattern(list(sweeps())),
    params:
        options=tuning_options,
        method=tuning_method,
        cases=tuning_cases,
        prefer=tuning_prefer,
    log:
        L.job_log("tuning/{sweep}"),
    conda:
        CONDA_ENV
    shell:
        "irem report tuning --sweep {wildcards.sweep} --method {params.method} "
        "--options {params.options:q} "
        "--cases {params.cases:q} --prefer {params.prefer:q} --metrics {input.metrics:q} "
        "--csv {output.runs:q} --chosen {output.chosen:q} > {log:q} 2>&1"


rule tuning_summary:
    """Every sweep's choice: results/tuning/chosen.csv and chosen.md."""
    input:
        [L.tuning_path(f"{s}_chosen.csv") for s in sweeps()],
    output:
        csv=L.tuning_path("chosen.csv"),
        md=L.tuning_path("chosen.md"),
    log:
        L.job_log("tuning/chosen"),
    conda:
        CONDA_ENV
    shell:
        "irem report tuning-summary --chosen {input:q} --csv {output.csv:q} --md {output.md:q} "
        "> {log:q} 2>&1"


rule tune:
    """Regenerate results/tuning/ (every sweep of the config's `tuning` section)."""
    input:
        rules.tuning_summary.output,
