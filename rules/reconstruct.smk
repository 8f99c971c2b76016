# HR reconstructions: the two baselines of the paper and IREM. A "run" is "<dataset>/k<k>" for a
# simulated experiment (stacks aligned by construction: --no-register, the ground truth's grid) or
# "<scan>" for a real scan (registered to the fixed stack; reference grid or --spacing).


rule bspline:
    input:
        stacks=stacks_input,
        reference=reference_input,
    output:
        image="results/{run}/sub-{subject}_rec-bspline_seed-{seed}_{suffix}.nii.gz",
        sidecar="results/{run}/sub-{subject}_rec-bspline_seed-{seed}_{suffix}.json",
    params:
        geometry=geometry_args,
    log:
        "results/logs/{run}/sub-{subject}_rec-bspline_seed-{seed}_{suffix}.log",
    benchmark:
        "results/runtime/{run}/sub-{subject}_rec-bspline_seed-{seed}_{suffix}.tsv"
    threads: 1
    conda:
        "../environment.yml"
    shell:
        "OMP_NUM_THREADS={threads} python -m irem.cli baseline bspline {input.stacks:q} -o {output.image:q} "
        "{params.geometry} > {log:q} 2>&1"


rule srr:
    input:
        stacks=stacks_input,
        reference=reference_input,
    output:
        image="results/{run}/sub-{subject}_rec-srr_seed-{seed}_{suffix}.nii.gz",
        sidecar="results/{run}/sub-{subject}_rec-srr_seed-{seed}_{suffix}.json",
    params:
        geometry=geometry_args,
        args=srr_args,
    log:
        "results/logs/{run}/sub-{subject}_rec-srr_seed-{seed}_{suffix}.log",
    benchmark:
        "results/runtime/{run}/sub-{subject}_rec-srr_seed-{seed}_{suffix}.tsv"
    threads: config["srr"]["threads"]
    resources:
        gpu=uses_gpu(config["srr"]["device"]),
    conda:
        "../environment.yml"
    shell:
        "OMP_NUM_THREADS={threads} python -m irem.cli baseline srr {input.stacks:q} -o {output.image:q} "
        "{params.geometry} {params.args} --threads {threads} --quiet > {log:q} 2>&1"


rule irem:
    """IREM (`irem`), or IREM with another size 2L of the Fourier features (`irem2L<n>`, Fig. 3).
    The training checkpoint is an intermediate: Snakemake deletes it once the job is done."""
    input:
        stacks=stacks_input,
        reference=reference_input,
        config=irem_config_input,
    output:
        image="results/{run}/sub-{subject}_rec-{variant}_seed-{seed}_{suffix}.nii.gz",
        sidecar="results/{run}/sub-{subject}_rec-{variant}_seed-{seed}_{suffix}.json",
        checkpoint=temp("results/{run}/.sub-{subject}_rec-{variant}_seed-{seed}_{suffix}.ckpt.pt"),
    params:
        geometry=geometry_args,
        args=irem_args,
    log:
        "results/logs/{run}/sub-{subject}_rec-{variant}_seed-{seed}_{suffix}.log",
    benchmark:
        "results/runtime/{run}/sub-{subject}_rec-{variant}_seed-{seed}_{suffix}.tsv"
    threads: config["irem"]["threads"]
    resources:
        gpu=uses_gpu(config["irem"]["device"]),
    conda:
        "../environment.yml"
    shell:
        "OMP_NUM_THREADS={threads} python -m irem.cli reconstruct {input.stacks:q} -o {output.image:q} "
        "{params.geometry} {params.args} --threads {threads} --checkpoint {output.checkpoint:q} "
        "--quiet > {log:q} 2>&1"
