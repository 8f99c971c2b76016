# Tables and figures: pure functions of the per-run files (irem/report.py).


rule tables:
    """metrics.csv/.md (mean and std over seeds: the table behind Fig. 4), runs.csv (one row per
    run) and runtime.csv/.md (from the benchmark files)."""
    input:
        metrics=all_metrics(),
        sidecars=all_sidecars(),
        benchmarks=all_benchmarks(),
    output:
        metrics_csv=report(
            "results/tables/metrics.csv",
            category="Tables",
            labels={"table": "quality (CSV)"},
        ),
        metrics_md=report(
            "results/tables/metrics.md",
            caption="../report/tables.rst",
            category="Tables",
            labels={"table": "quality"},
        ),
        runs=report(
            "results/tables/runs.csv", category="Tables", labels={"table": "every run (CSV)"}
        ),
        runtime_csv=report(
            "results/tables/runtime.csv", category="Tables", labels={"table": "run time (CSV)"}
        ),
        runtime_md=report(
            "results/tables/runtime.md", category="Tables", labels={"table": "run time"}
        ),
    params:
        outdir=subpath(output.metrics_csv, parent=True),
    log:
        "results/logs/tables.log",
    conda:
        "../environment.yml"
    shell:
        "python -m irem.report tables --metrics {input.metrics:q} "
        "--benchmarks {input.benchmarks:q} --out-dir {params.outdir:q} > {log:q} 2>&1"


rule fig3:
    """Fig. 3: IREM against the size 2L of its Fourier feature mapping."""
    input:
        metrics=fig3_metrics(),
        baselines=fig3_baselines(),
        sidecars=sidecars(fig3_metrics()),
    output:
        png=report(
            "results/figures/fig3_fourier_dim.png",
            caption="../report/fig3.rst",
            category="Figures",
            labels={"figure": "Fig. 3", "dataset": config["ablation"]["dataset"]},
        ),
        pdf="results/figures/fig3_fourier_dim.pdf",
    params:
        title=f"Fig. 3: IREM against 2L ({config['ablation']['dataset']}, "
        f"k={config['ablation']['k']})",
        dpi=config["figures"]["dpi"],
    log:
        "results/logs/fig3.log",
    conda:
        "../environment.yml"
    shell:
        "python -m irem.report fig3 --metrics {input.metrics:q} --baselines {input.baselines:q} "
        "--title {params.title:q} --dpi {params.dpi} -o {output.png:q} {output.pdf:q} "
        "> {log:q} 2>&1"


rule fig4:
    """Fig. 4: PSNR/SSIM bars by method and k for one dataset."""
    input:
        metrics=fig4_metrics,
    output:
        png=report(
            "results/figures/fig4_{dataset}.png",
            caption="../report/fig4.rst",
            category="Figures",
            labels={"figure": "Fig. 4", "dataset": "{dataset}"},
        ),
        pdf="results/figures/fig4_{dataset}.pdf",
    params:
        dpi=config["figures"]["dpi"],
    log:
        "results/logs/fig4_{dataset}.log",
    conda:
        "../environment.yml"
    shell:
        "python -m irem.report fig4 --metrics {input.metrics:q} "
        "--title 'Fig. 4: {wildcards.dataset}' --dpi {params.dpi} "
        "-o {output.png:q} {output.pdf:q} > {log:q} 2>&1"


rule fig5:
    """Fig. 5: the same slice through the ground truth, an LR stack and every method, zoomed, with
    error maps."""
    input:
        unpack(fig5_inputs),
    output:
        png=report(
            "results/figures/fig5_{dataset}.png",
            caption="../report/fig5.rst",
            category="Figures",
            labels={"figure": "Fig. 5", "dataset": "{dataset}"},
        ),
        pdf="results/figures/fig5_{dataset}.pdf",
    wildcard_constraints:
        dataset=name_pattern(DATASETS),
    params:
        recs=fig5_rec_args,
        title=fig5_title,
        axis=config["figures"]["axis"],
        fraction=fig5_slice,
        dpi=config["figures"]["dpi"],
    log:
        "results/logs/fig5_{dataset}.log",
    conda:
        "../environment.yml"
    shell:
        "python -m irem.report fig5 --gt {input.gt:q} --mask {input.mask:q} --lr {input.lr:q} "
        "--rec {params.recs} --metrics {input.metrics:q} --axis {params.axis} "
        "--slice {params.fraction} --title {params.title:q} --dpi {params.dpi} "
        "-o {output.png:q} {output.pdf:q} > {log:q} 2>&1"


rule fig6:
    """Fig. 6: the real-scan protocol, against the HR reference after registration."""
    input:
        unpack(fig5_inputs),
    output:
        png=report(
            "results/figures/fig6_{dataset}.png",
            caption="../report/fig6.rst",
            category="Figures",
            labels={"figure": "Fig. 6", "dataset": "{dataset}"},
        ),
        pdf="results/figures/fig6_{dataset}.pdf",
    wildcard_constraints:
        dataset=name_pattern(scans_with_figure()),
    params:
        recs=fig5_rec_args,
        title=fig5_title,
        axis=config["figures"]["axis"],
        fraction=fig5_slice,
        dpi=config["figures"]["dpi"],
    log:
        "results/logs/fig6_{dataset}.log",
    conda:
        "../environment.yml"
    shell:
        "python -m irem.report fig5 --gt {input.gt:q} --mask {input.mask:q} --lr {input.lr:q} "
        "--rec {params.recs} --metrics {input.metrics:q} --axis {params.axis} "
        "--slice {params.fraction} --gt-label 'HR reference' --title {params.title:q} "
        "--dpi {params.dpi} -o {output.png:q} {output.pdf:q} > {log:q} 2>&1"
