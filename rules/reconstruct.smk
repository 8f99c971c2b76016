# HR reconstructions: every method is a config entry with a command template (docs/methods.md).


rule reconstruct:
    """One method on one set of stacks. A training checkpoint, if the method writes one, is
    removed once the job succeeds (an interrupted job keeps it for `irem reconstruct --resume`)."""
    input:
        stacks=lambda w: stacks_of(L.parse_run(w.run), w.subject, w.seed),
        reference=reference_input,
        extra=method_inputs,
    output:
        image=L.rec_path("{run}", "{subject}", "{method}", "{seed}", "{suffix}"),
    wildcard_constraints:
        method=name_pattern(ALL_METHODS),
    params:
        command=method_command,
        checkpoint=L.checkpoint_path("{run}", "{subject}", "{method}", "{seed}", "{suffix}"),
    log:
        L.log_path(L.rec_path("{run}", "{subject}", "{method}", "{seed}", "{suffix}")),
    benchmark:
        L.benchmark_path("{run}", "{subject}", "{method}", "{seed}", "{suffix}")
    threads: lambda w: ALL_METHODS[w.method]["threads"]
    resources:
        # One `gpu` token for a job that may run on a GPU: `--resources gpu=1` serialises them.
        gpu=lambda w: 0 if ALL_METHODS[w.method]["device"] == "cpu" else 1,
        runtime=lambda w: ALL_METHODS[w.method]["runtime"],
        mem_mb=lambda w: ALL_METHODS[w.method]["mem_mb"],
    conda:
        CONDA_ENV
    shell:
        "OMP_NUM_THREADS={threads} {params.command} > {log:q} 2>&1; rm -f {params.checkpoint:q}"
