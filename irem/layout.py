"""Where the workflow writes everything: one module builds and parses every result path.

BIDS-derivative-like layout under the results root ``results``::

    <dataset>/sub-<id>_<suffix>.nii.gz                        HR ground truth (or a scan's reference)
    <dataset>/sub-<id>_desc-brain_mask.nii.gz                 its brain mask
    <dataset>/sub-<id>_label-WM_desc-<suffix>_mask.nii.gz    white-matter mask (cohort: SNR)
    <run>/lr/sub-<id>_seed-<s>/acq-<orient>.nii.gz            simulated LR stacks (+ simulation.json)
    <run>/sub-<id>_rec-<method>_seed-<s>_<suffix>.nii.gz      a reconstruction (+ .json sidecar)
    <run>/sub-<id>_rec-<method>_seed-<s>_<suffix>_metrics.json    its scores (with a ``meta`` dict)
    <run>/sub-<id>_rec-<method>_seed-<s>_<suffix>_automask_metrics.json   ... also in the auto mask
    <run>/sub-<id>_seed-<s>_desc-auto_mask.nii.gz             the automatic mask of a run's stacks
    <run>/sub-<id>_rec-<method>_seed-<s>_<suffix>_snapshots/      its images along training, if any
    <scan>/lr/sub-<id>/acq-<orient>.nii.gz                    the real-scan demo's stacks
    tables/, figures/, runtime/<run>/..., logs/<run>/...      the workflow's own outputs

A *run* is the folder of a set of reconstructions: ``<dataset>/k<k>`` for a simulated experiment,
``<dataset>/snr<snr>/k<k>`` for the scan-time-matched experiment at one HR SNR (``7.5`` is written
``7p5``), and ``<scan>`` for a real scan. The Snakemake rules build their paths with these functions
(a run given as a folder string, wildcards included: ``"{dataset}/k{k}"``) and pass a run's
identity to ``irem metrics --meta``, so the report reads it as data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RESULTS = "results"
ORIENTATIONS = ("sagittal", "coronal", "axial")  # the fixed (sagittal) stack first
SNAPSHOTS = "_snapshots"  # a run's snapshot folder: its image's name with this ending
RESERVED = ("tables", "figures", "runtime", "logs", "benchmarks", "tuning")

_RUN = re.compile(
    r"^(?P<dataset>[A-Za-z0-9_]+)(?:/snr(?P<snr>[0-9]+(?:p[0-9]+)?))?(?:/k(?P<k>[0-9]+))?$"
)


@dataclass(frozen=True)
class Run:
    """A set of reconstructions sharing inputs: dataset (or scan), k and scan-time HR SNR."""

    dataset: str
    k: int | None = None
    hr_snr: float | None = None

    @property
    def folder(self) -> str:
        """The run's folder below the results root."""
        parts = [self.dataset]
        if self.hr_snr is not None:
            parts.append(f"snr{snr_tag(self.hr_snr)}")
        if self.k is not None:
            parts.append(f"k{self.k}")
        elif self.hr_snr is not None:
            raise ValueError("a scan-time run needs a k")
        return "/".join(parts)

    def meta(self) -> dict[str, str]:
        """The run's identity as ``irem metrics --meta`` strings."""
        out = {"dataset": self.dataset, "k": "" if self.k is None else str(self.k)}
        if self.hr_snr is not None:
            out["hr_snr"] = f"{self.hr_snr:g}"
        return out


def run_folder(run: Run | str) -> str:
    """A run's folder below the results root (a string is a folder already, e.g. ``"{run}"``)."""
    return run if isinstance(run, str) else run.folder


def log_path(path: str) -> str:
    """The log of the job writing ``path``: the same name in ``results/logs``, ending ``.log``."""
    rel = path.removeprefix(f"{RESULTS}/")
    for ext in (".nii.gz", ".json", ".csv", ".tsv"):
        rel = rel.removesuffix(ext)
    return job_log(rel)


def job_log(name: str) -> str:
    """The log of a job named ``name`` (a report or tuning job: ``tables``, ``tuning/chosen``)."""
    return f"{RESULTS}/logs/{name}.log"


def snr_tag(snr: float) -> str:
    """``10`` -> ``"10"``, ``7.5`` -> ``"7p5"`` (file-name safe)."""
    if snr <= 0:
        raise ValueError(f"SNR must be positive, got {snr}")
    return f"{snr:g}".replace(".", "p")


def parse_run(folder: str) -> Run:
    """The inverse of :attr:`Run.folder`."""
    m = _RUN.match(folder)
    if m is None:
        raise ValueError(f"not a run folder: {folder!r}")
    dataset, snr, k = m.group("dataset", "snr", "k")
    if snr and not k:
        raise ValueError(f"not a run folder: {folder!r} (a scan-time run needs a k)")
    return Run(dataset, int(k) if k else None, float(snr.replace("p", ".")) if snr else None)


def run_pattern() -> str:
    """A regex for the ``{run}`` wildcard of the rules."""
    return r"[A-Za-z0-9_]+(/snr[0-9]+(p[0-9]+)?)?(/k[0-9]+)?"


def gt_path(dataset: str, subject: str, suffix: str) -> str:
    """The HR ground truth of a simulated subject, or a real scan's reference."""
    return f"{RESULTS}/{dataset}/sub-{subject}_{suffix}.nii.gz"


def sidecar_path(image: str) -> str:
    """The JSON sidecar written beside a NIfTI image."""
    return image.removesuffix(".nii.gz") + ".json"


def mask_path(dataset: str, subject: str) -> str:
    """The brain mask of a subject's ground truth."""
    return f"{RESULTS}/{dataset}/sub-{subject}_desc-brain_mask.nii.gz"


def wm_mask_path(dataset: str, subject: str, suffix: str) -> str:
    """The white-matter mask of a cohort subject (the reference region of the SNR)."""
    return f"{RESULTS}/{dataset}/sub-{subject}_label-WM_desc-{suffix}_mask.nii.gz"


def stack_folder(run: Run | str, subject: str, seed: int | str) -> str:
    """Folder of a simulated run's LR stacks (and ``simulation.json``, ``hr.nii.gz``)."""
    return f"{RESULTS}/{run_folder(run)}/lr/sub-{subject}_seed-{seed}"


def simulation_path(stack_folder: str) -> str:
    """The summary ``irem simulate`` writes beside its stacks."""
    return f"{stack_folder}/simulation.json"


def stack_paths(run: Run | str, subject: str, seed: int | str) -> list[str]:
    """The three simulated LR stacks of a run, the fixed (sagittal) stack first."""
    folder = stack_folder(run, subject, seed)
    return [f"{folder}/acq-{o}.nii.gz" for o in ORIENTATIONS]


def hr_scan_path(run: Run | str, subject: str, seed: int | str) -> str:
    """The scan-time experiment's noisy HR scan of a subject (beside its LR stacks)."""
    return f"{stack_folder(run, subject, seed)}/hr.nii.gz"


def tuning_path(name: str) -> str:
    """A file of the tuning results (``results/tuning/<name>``)."""
    return f"{RESULTS}/tuning/{name}"


def scan_stack_folder(scan: str, subject: str) -> str:
    """Folder of the real-scan demo's simulated stacks (and ``simulation.json``)."""
    return f"{RESULTS}/{scan}/lr/sub-{subject}"


def scan_stack_paths(scan: str, subject: str) -> list[str]:
    """The real-scan demo's simulated stacks (moved and re-oriented)."""
    return [f"{scan_stack_folder(scan, subject)}/acq-{o}.nii.gz" for o in ORIENTATIONS]


def _stem(subject: str, method: str, seed: int | str, suffix: str) -> str:
    return f"sub-{subject}_rec-{method}_seed-{seed}_{suffix}"


def run_file(
    run: Run | str, subject: str, method: str, seed: int | str, suffix: str, ext: str
) -> str:
    """A file of one reconstruction: ``ext`` ``.nii.gz``, ``.json`` (sidecar), ``_metrics.json``,
    :data:`SNAPSHOTS` (the folder of its ``irem reconstruct --snapshots`` images)."""
    return f"{RESULTS}/{run_folder(run)}/{_stem(subject, method, seed, suffix)}{ext}"


def rec_path(run: Run | str, subject: str, method: str, seed: int | str, suffix: str) -> str:
    """A reconstruction (NIfTI)."""
    return run_file(run, subject, method, seed, suffix, ".nii.gz")


def metrics_path(run: Run | str, subject: str, method: str, seed: int | str, suffix: str) -> str:
    """The scores of a reconstruction."""
    return run_file(run, subject, method, seed, suffix, "_metrics.json")


def auto_mask_path(run: Run | str, subject: str, seed: int | str) -> str:
    """The automatic mask (``--mask auto``) of a run's stacks, on the reconstructions' grid."""
    return f"{RESULTS}/{run_folder(run)}/sub-{subject}_seed-{seed}_desc-auto_mask.nii.gz"


def auto_metrics_path(
    run: Run | str, subject: str, method: str, seed: int | str, suffix: str
) -> str:
    """A reconstruction's scores in its ground truth's brain mask and in the automatic mask."""
    return run_file(run, subject, method, seed, suffix, "_automask_metrics.json")


def benchmark_path(run: Run | str, subject: str, method: str, seed: int | str, suffix: str) -> str:
    """Snakemake's ``benchmark:`` file of a reconstruction."""
    return f"{RESULTS}/runtime/{run_folder(run)}/{_stem(subject, method, seed, suffix)}.tsv"


def checkpoint_path(run: Run | str, subject: str, method: str, seed: int | str, suffix: str) -> str:
    """A training checkpoint (kept only while a job runs or after it was interrupted)."""
    return f"{RESULTS}/{run_folder(run)}/.{_stem(subject, method, seed, suffix)}.ckpt.pt"


def table_path(name: str) -> str:
    """A table of the workflow (``metrics.csv``, ...)."""
    return f"{RESULTS}/tables/{name}"


def figure_paths(name: str) -> list[str]:
    """A figure as PNG and PDF."""
    return [f"{RESULTS}/figures/{name}.{ext}" for ext in ("png", "pdf")]
