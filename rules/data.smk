# Ground truths, brain masks and LR stacks (`irem dataset`, `irem simulate`).


rule ground_truth:
    """An embedded HR volume (or a checked copy of a user's HR file or real-scan reference)."""
    input:
        gt_input,
    output:
        gt=L.gt_path("{dataset}", "{subject}", "{suffix}"),
        sidecar=L.sidecar_path(L.gt_path("{dataset}", "{subject}", "{suffix}")),
    wildcard_constraints:
        dataset=name_pattern([d for d in [*DATASETS, *SCANS] if not is_cohort(d)]),
    params:
        source=gt_source,
        args=gt_args,
    log:
        L.log_path(L.gt_path("{dataset}", "{subject}", "{suffix}")),
    conda:
        CONDA_ENV
    shell:
        "irem dataset {params.source:q} -o {output.gt:q} {params.args} > {log:q} 2>&1"


rule cohort_subject:
    """One subject of a synthetic cohort (irem/data/cohort.py) and its white-matter mask."""
    output:
        gt=L.gt_path("{dataset}", "{subject}", "{suffix}"),
        sidecar=L.sidecar_path(L.gt_path("{dataset}", "{subject}", "{suffix}")),
        wm=L.wm_mask_path("{dataset}", "{subject}", "{suffix}"),
    wildcard_constraints:
        dataset=name_pattern(COHORTS),
    params:
        args=cohort_args,
    log:
        L.log_path(L.gt_path("{dataset}", "{subject}", "{suffix}")),
    conda:
        CONDA_ENV
    shell:
        "irem dataset mni152_cohort -o {output.gt:q} --wm-mask-out {output.wm:q} {params.args} "
        "> {log:q} 2>&1"


rule brain_mask:
    """Brain mask of a ground truth: metrics are reported in it as well as over the volume."""
    input:
        lambda w: gt_of(w.dataset, w.subject),
    output:
        L.mask_path("{dataset}", "{subject}"),
    params:
        threshold=lambda w: mask_threshold(w.dataset, w.subject),
    log:
        L.log_path(L.mask_path("{dataset}", "{subject}")),
    conda:
        CONDA_ENV
    shell:
        "irem dataset {input:q} --mask-out {output:q} --mask-threshold {params.threshold} "
        "> {log:q} 2>&1"


rule simulate:
    """Three orthogonal thick-slice LR stacks (box profile, Rician noise) for one k and seed."""
    input:
        unpack(lambda w: truth_inputs(w.dataset, w.subject)),
    output:
        stacks=L.stack_paths("{dataset}/k{k}", "{subject}", "{seed}"),
        summary=L.simulation_path(L.stack_folder("{dataset}/k{k}", "{subject}", "{seed}")),
    params:
        outdir=subpath(output.summary, parent=True),
        args=lambda w: noise_args(w, "--snr", config["simulation"]["snr"]),
    log:
        L.log_path(L.stack_folder("{dataset}/k{k}", "{subject}", "{seed}")),
    conda:
        CONDA_ENV
    shell:
        "irem simulate {input.gt:q} --k {wildcards.k} --seed {wildcards.seed} {params.args} "
        "--out-dir {params.outdir:q} > {log:q} 2>&1"


use rule simulate as simulate_scantime with:
    """The scan-time-matched experiment: LR stacks of T/3 each and one noisy HR scan of time T."""
    output:
        stacks=L.stack_paths("{dataset}/snr{snr}/k{k}", "{subject}", "{seed}"),
        hr=L.hr_scan_path("{dataset}/snr{snr}/k{k}", "{subject}", "{seed}"),
        summary=L.simulation_path(L.stack_folder("{dataset}/snr{snr}/k{k}", "{subject}", "{seed}")),
    params:
        args=lambda w: noise_args(
            w, "--hr-snr", L.parse_run(f"{w.dataset}/snr{w.snr}/k{w.k}").hr_snr
        ),
    log:
        L.log_path(L.stack_folder("{dataset}/snr{snr}/k{k}", "{subject}", "{seed}")),


rule hr_scan:
    """The scan-time experiment's noisy HR scan, scored like a reconstruction."""
    input:
        L.hr_scan_path("{dataset}/snr{snr}/k{k}", "{subject}", "{seed}"),
    output:
        L.rec_path("{dataset}/snr{snr}/k{k}", "{subject}", HR_SCAN, "{seed}", "{suffix}"),
    log:
        L.log_path(L.rec_path("{dataset}/snr{snr}/k{k}", "{subject}", HR_SCAN, "{seed}", "{suffix}")),
    conda:
        CONDA_ENV
    shell:
        "cp -v {input:q} {output:q} > {log:q} 2>&1"


rule simulate_scan:
    """The real-scan demo: stacks with a known random rigid motion, stored in other orientations."""
    input:
        unpack(lambda w: truth_inputs(scan_sim(w)["dataset"], scan_sim(w)["subject"])),
    output:
        stacks=L.scan_stack_paths("{dataset}", "{subject}"),
        summary=L.simulation_path(L.scan_stack_folder("{dataset}", "{subject}")),
    params:
        outdir=subpath(output.summary, parent=True),
        args=scan_sim_args,
    log:
        L.log_path(L.scan_stack_folder("{dataset}", "{subject}")),
    conda:
        CONDA_ENV
    shell:
        "irem simulate {input.gt:q} {params.args} --out-dir {params.outdir:q} > {log:q} 2>&1"
