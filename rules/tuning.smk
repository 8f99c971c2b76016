# Tuning sweeps (`snakemake tune`): each candidate is a variant of its sweep's method, run and
# scored on the tuning subjects only; irem/evaluation/tuning.py chooses. Not part of `all`: the
# configs carry the chosen options (tests/test_tuning.py checks them against results/tuning/).


rule tuning_sweep:
    """One sweep's runs (results/tuning/<sweep>.csv) and its choice per group."""
    input:
        metrics=lambda w: metrics_of(tuning_runs(w.sweep)),
    output:
        runs=L.tuning_path("{sweep}.csv"),
        chosen=L.tuning_path("{sweep}_chosen.csv"),
    wildcard_constraints:
        sweep=name_pattern(SWEEPS),
    params:
        options=lambda w: SWEEPS[w.sweep]["options"],
        method=lambda w: SWEEPS[w.sweep]["method"],
        cases=lambda w: json.dumps(
            {n: v for n, (_, s, v) in TUNING.items() if s["name"] == w.sweep}
        ),
        prefer=lambda w: json.dumps(SWEEPS[w.sweep]["prefer"]),  # "null": no preferred one
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
        [L.tuning_path(f"{s}_chosen.csv") for s in SWEEPS],
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
