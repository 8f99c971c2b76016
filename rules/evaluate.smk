# Scores of every reconstruction against its ground truth (or a real scan's HR reference).


rule metrics:
    """PSNR and SSIM over the volume and inside the brain mask (`irem metrics`), with the run's
    identity (dataset, k, subject, seed, method, split) as data for the report."""
    input:
        image=L.rec_path("{run}", "{subject}", "{method}", "{seed}", "{suffix}"),
        gt=lambda w: gt_of(L.parse_run(w.run).dataset, w.subject),
        mask=lambda w: L.mask_path(L.parse_run(w.run).dataset, w.subject),
    output:
        L.metrics_path("{run}", "{subject}", "{method}", "{seed}", "{suffix}"),
    params:
        meta=metrics_meta,
    log:
        L.log_path(L.metrics_path("{run}", "{subject}", "{method}", "{seed}", "{suffix}")),
    conda:
        CONDA_ENV
    shell:
        "irem metrics {input.image:q} {input.gt:q} --mask {input.mask:q} -o {output:q} "
        "{params.meta} > {log:q} 2>&1"
