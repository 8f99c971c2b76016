# irem-bench: multi-stack MRI super-resolution with implicit neural representations (IREM,
# Wu et al. 2021) against B-spline interpolation and SRR, on embedded or user data.
#
#   snakemake --cores all --resources gpu=1                          # config/config.yaml (CPU)
#   snakemake --cores all --resources gpu=1 --configfile config/paper.yaml   # on a GPU
#   snakemake --profile profiles/slurm --configfile config/paper.yaml        # on a Slurm cluster
#
# Experiments and methods are config entries (schemas/config.schema.yaml, docs/methods.md).

import shlex

from snakemake.utils import min_version, validate

min_version("8.0")


configfile: "config/config.yaml"


validate(config, schema="schemas/config.schema.yaml", set_default=True)


report: "report/workflow.rst"


# Rules call `irem` with this source tree first on the path: a checkout runs installed or not.
# (Snakemake formats the prefix like a shell command: literal braces are doubled.)
shell.prefix(
    "set -euo pipefail; "
    f"export PYTHONPATH={shlex.quote(workflow.basedir)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
    f"irem() {{{{ python -m irem.cli \"$@\"; }}}}; "
)


include: "rules/common.smk"


wildcard_constraints:
    dataset=r"[A-Za-z0-9_]+",
    run=L.run_pattern(),
    subject=r"[A-Za-z0-9]+",
    suffix=r"[A-Za-z0-9]+",
    seed=r"[0-9]+",
    k=r"[0-9]+",
    snr=r"[0-9]+(p[0-9]+)?",
    method=name_pattern([*ALL_METHODS, HR_SCAN]),
    orient=r"sagittal|coronal|axial",


include: "rules/data.smk"
include: "rules/reconstruct.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/tuning.smk"
include: "rules/convergence.smk"


rule all:
    input:
        TABLES,
        SCANTIME_TABLES if scantime_runs() else [],
        AUTO_MASK_TABLES if config["auto_mask"]["methods"] else [],
        all_figures(),
        all_reconstructions(),
    default_target: True
