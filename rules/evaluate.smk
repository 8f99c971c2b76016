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


rule auto_mask:
    """The automatic mask of a run's stacks on its grid (`irem mask`: what `--mask auto` uses)."""
    input:
        stacks=lambda w: stacks_of(L.parse_run(w.run), w.subject, w.seed),
        reference=reference_input,
    output:
        L.auto_mask_path("{run}", "{subject}", "{seed}"),
    params:
        geometry=lambda w: geometry_args(L.parse_run(w.run), w.subject),
    log:
        L.log_path(L.auto_mask_path("{run}", "{subject}", "{seed}")),
    conda:
        CONDA_ENV
    shell:
        "irem mask {input.stacks:q} -o {output:q} {params.geometry} > {log:q} 2>&1"


use rule metrics as metrics_auto_mask with:
    """Scores of a reconstruction in its brain mask and in the automatic mask of its stacks."""
    input:
        image=L.rec_path("{run}", "{subject}", "{method}", "{seed}", "{suffix}"),
        gt=lambda w: gt_of(L.parse_run(w.run).dataset, w.subject),
        mask=lambda w: L.mask_path(L.parse_run(w.run).dataset, w.subject),
        auto=L.auto_mask_path("{run}", "{subject}", "{seed}"),
    output:
        L.auto_metrics_path("{run}", "{subject}", "{method}", "{seed}", "{suffix}"),
    params:
        meta=lambda w, input: f"{metrics_meta(w)} --meta contrast={w.suffix} "
        f"--compare-mask {shlex.quote(input.auto)}",
    log:
        L.log_path(L.auto_metrics_path("{run}", "{subject}", "{method}", "{seed}", "{suffix}")),
