# Scores of every reconstruction against its ground truth (or a real scan's HR reference).


rule metrics:
    """PSNR and SSIM over the volume and inside the brain mask (`irem metrics`)."""
    input:
        image="results/{run}/sub-{subject}_rec-{method}_seed-{seed}_{suffix}.nii.gz",
        gt=metrics_gt,
        mask=metrics_mask,
    output:
        "results/{run}/sub-{subject}_rec-{method}_seed-{seed}_{suffix}_metrics.json",
    log:
        "results/logs/{run}/sub-{subject}_rec-{method}_seed-{seed}_{suffix}_metrics.log",
    conda:
        "../environment.yml"
    shell:
        "python -m irem.cli metrics {input.image:q} {input.gt:q} --mask {input.mask:q} -o {output:q} "
        "> {log:q} 2>&1"
