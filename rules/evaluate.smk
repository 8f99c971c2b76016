# Scores of every reconstruction against its ground truth (or a real scan's HR reference).


rule metrics:
    """PSNR and SSIM over the volume and inside the brain mask (`irem metrics`), with the run's
    identity (dataset, k, subject, seed, method, split) as data for the report."""
    input:
        image="results/{run}/sub-{subject}_rec-{method}_seed-{seed}_{suffix}.nii.gz",
        gt=metrics_gt,
        mask=metrics_mask,
    output:
        "results/{run}/sub-{subject}_rec-{method}_seed-{seed}_{suffix}_metrics.json",
    params:
        meta=metrics_meta,
    log:
        "results/logs/{run}/sub-{subject}_rec-{method}_seed-{seed}_{suffix}_metrics.log",
    conda:
        CONDA_ENV
    shell:
        "irem metrics {input.image:q} {input.gt:q} --mask {input.mask:q} -o {output:q} "
        "{params.meta} > {log:q} 2>&1"
