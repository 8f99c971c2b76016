# Ground truths, brain masks and LR stacks.


rule ground_truth:
    """An embedded HR volume (or a checked copy of a user's HR file or real-scan reference)."""
    input:
        gt_input,
    output:
        gt="results/{dataset}/sub-{subject}_{suffix}.nii.gz",
        sidecar="results/{dataset}/sub-{subject}_{suffix}.json",
    params:
        source=gt_source,
        args=gt_args,
    log:
        "results/logs/{dataset}/sub-{subject}_{suffix}.log",
    conda:
        "../environment.yml"
    shell:
        "python -m irem.datasets {params.source:q} -o {output.gt:q} {params.args} > {log:q} 2>&1"


rule brain_mask:
    """Brain mask of a ground truth: metrics are reported in it as well as over the volume."""
    input:
        mask_input,
    output:
        "results/{dataset}/sub-{subject}_desc-brain_mask.nii.gz",
    params:
        threshold=mask_threshold,
    log:
        "results/logs/{dataset}/sub-{subject}_desc-brain_mask.log",
    conda:
        "../environment.yml"
    shell:
        "python -m irem.datasets {input:q} --mask-out {output:q} "
        "--mask-threshold {params.threshold} > {log:q} 2>&1"


rule simulate:
    """Three orthogonal thick-slice LR stacks (box profile by default) for one k and seed."""
    input:
        simulate_gt,
    output:
        stacks=expand(
            "results/{{dataset}}/k{{k}}/lr/sub-{{subject}}_seed-{{seed}}/acq-{orient}.nii.gz",
            orient=ORIENTATIONS,
        ),
        summary="results/{dataset}/k{k}/lr/sub-{subject}_seed-{seed}/simulation.json",
    params:
        outdir=subpath(output.summary, parent=True),
        args=simulate_args,
    log:
        "results/logs/{dataset}/k{k}/lr/sub-{subject}_seed-{seed}.log",
    conda:
        "../environment.yml"
    shell:
        "python -m irem.cli simulate {input:q} --k {wildcards.k} --seed {wildcards.seed} {params.args} "
        "--out-dir {params.outdir:q} > {log:q} 2>&1"


rule simulate_scan:
    """The real-scan demo: stacks with a known random rigid motion, stored in other orientations."""
    input:
        scan_sim_gt,
    output:
        stacks=expand(
            "results/{{dataset}}/lr/sub-{{subject}}/acq-{orient}.nii.gz", orient=ORIENTATIONS
        ),
        summary="results/{dataset}/lr/sub-{subject}/simulation.json",
    params:
        outdir=subpath(output.summary, parent=True),
        args=scan_sim_args,
    log:
        "results/logs/{dataset}/lr/sub-{subject}.log",
    conda:
        "../environment.yml"
    shell:
        "python -m irem.cli simulate {input:q} {params.args} --out-dir {params.outdir:q} > {log:q} 2>&1"
