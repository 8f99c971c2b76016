# HR reconstructions: every method is a config entry with a command template (docs/methods.md).
# A "run" is "<dataset>/k<k>" for a simulated experiment (stacks aligned by construction: the
# ground truth's grid), "<dataset>/snr<snr>/k<k>" for the scan-time experiment, or "<scan>" for a
# real scan (registered to the fixed stack; reference grid or --spacing).


rule reconstruct:
    """One method on one set of stacks. A training checkpoint, if the method writes one, is
    removed once the job succeeds (an interrupted job keeps it for `irem reconstruct --resume`)."""
    input:
        stacks=stacks_input,
        reference=reference_input,
        extra=method_inputs,
    output:
        image=L.rec_path("{run}", "{subject}", "{method}", "{seed}", "{suffix}"),
    wildcard_constraints:
        method=name_pattern(method_names()),
    params:
        command=method_command,
        checkpoint=L.checkpoint_path("{run}", "{subject}", "{method}", "{seed}", "{suffix}"),
    log:
        L.log_path(L.rec_path("{run}", "{subject}", "{method}", "{seed}", "{suffix}")),
    benchmark:
        L.benchmark_path("{run}", "{subject}", "{method}", "{seed}", "{suffix}")
    threads: method_threads
    resources:
        gpu=method_gpu,
        runtime=method_runtime,
        mem_mb=method_mem,
    conda:
        CONDA_ENV
    shell:
        "OMP_NUM_THREADS={threads} {params.command} > {log:q} 2>&1; rm -f {params.checkpoint:q}"
