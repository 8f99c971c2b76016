# Ground truths, brain masks and LR stacks (`irem dataset`, `irem simulate`).


rule ground_truth:
    """An embedded HR volume (or a checked copy of a user's HR file or real-scan reference)."""
    input:
        gt_input,
    output:
        gt="results/{dataset}/sub-{subject}_{suffix}.nii.gz",
        sidecar="results/{dataset}/sub-{subject}_{suffix}.json",
    wildcard_constraints:
        dataset=name_pattern([d for d in [*DATASETS, *SCANS] if not is_cohort(d)]),
    params:
        source=gt_source,
        args=gt_args,
    log:
        "results/logs/{dataset}/sub-{subject}_{suffix}.log",
    conda:
        CONDA_ENV
    shell:
        "irem dataset {params.source:q} -o {output.gt:q} {params.args} > {log:q} 2>&1"


rule cohort_subject:
    """One subject of a synthetic cohort (irem/cohort.py) and its white-matter mask."""
    output:
        gt="results/{dataset}/sub-{subject}_{suffix}.nii.gz",
        sidecar="results/{dataset}/sub-{subject}_{suffix}.json",
        wm="results/{dataset}/sub-{subject}_label-WM_desc-{suffix}_mask.nii.gz",
    wildcard_constraints:
        dataset=name_pattern(cohort_datasets()),
    params:
        args=cohort_args,
    log:
        "results/logs/{dataset}/sub-{subject}_{suffix}.log",
    conda:
        CONDA_ENV
    shell:
        "irem dataset mni152_cohort -o {output.gt:q} --wm-mask-out {output.wm:q} {params.args} "
        "> {log:q} 2>&1"


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
        CONDA_ENV
    shell:
        "irem dataset {input:q} --mask-out {output:q} --mask-threshold {params.threshold} "
        "> {log:q} 2>&1"


rule simulate:
    """Three orthogonal thick-slice LR stacks (box profile, Rician noise) for one k and seed."""
    input:
        unpack(simulate_input),
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
        CONDA_ENV
    shell:
        "irem simulate {input.gt:q} --k {wildcards.k} --seed {wildcards.seed} {params.args} "
        "--out-dir {params.outdir:q} > {log:q} 2>&1"


rule simulate_scantime:
    """The scan-time-matched experiment: LR stacks of T/3 each and one noisy HR scan of time T."""
    input:
        unpack(simulate_input),
    output:
        stacks=expand(
            "results/{{dataset}}/snr{{snr}}/k{{k}}/lr/sub-{{subject}}_seed-{{seed}}/acq-{orient}.nii.gz",
            orient=ORIENTATIONS,
        ),
        hr="results/{dataset}/snr{snr}/k{k}/lr/sub-{subject}_seed-{seed}/hr.nii.gz",
        summary="results/{dataset}/snr{snr}/k{k}/lr/sub-{subject}_seed-{seed}/simulation.json",
    params:
        outdir=subpath(output.summary, parent=True),
        args=scantime_args,
    log:
        "results/logs/{dataset}/snr{snr}/k{k}/lr/sub-{subject}_seed-{seed}.log",
    conda:
        CONDA_ENV
    shell:
        "irem simulate {input.gt:q} --k {wildcards.k} --seed {wildcards.seed} {params.args} "
        "--out-dir {params.outdir:q} > {log:q} 2>&1"


rule hr_scan:
    """The scan-time experiment's noisy HR scan, scored like a reconstruction."""
    input:
        "results/{dataset}/snr{snr}/k{k}/lr/sub-{subject}_seed-{seed}/hr.nii.gz",
    output:
        "results/{dataset}/snr{snr}/k{k}/sub-{subject}_rec-hrscan_seed-{seed}_{suffix}.nii.gz",
    log:
        "results/logs/{dataset}/snr{snr}/k{k}/sub-{subject}_rec-hrscan_seed-{seed}_{suffix}.log",
    conda:
        CONDA_ENV
    shell:
        "cp -v {input:q} {output:q} > {log:q} 2>&1"


rule simulate_scan:
    """The real-scan demo: stacks with a known random rigid motion, stored in other orientations."""
    input:
        unpack(scan_sim_input),
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
        CONDA_ENV
    shell:
        "irem simulate {input.gt:q} {params.args} --out-dir {params.outdir:q} > {log:q} 2>&1"
