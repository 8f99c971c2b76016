"""The workflow on a real (single-node, local) Slurm cluster: scripts/local-slurm.sh brings one up,
`snakemake --executor slurm --profile profiles/slurm-local` runs the whole test config on it.

What is checked, from Slurm's own records (`scontrol show job`, no accounting daemon needed), the
plugin's per-job Slurm logs and Snakemake's log:
- every job of the DAG but the `all` target was submitted with sbatch and COMPLETED as its own
  Slurm job, and its Slurm log shows the rule run inside that job;
- the IREM jobs asked for the node's one GPU (`resources: gpu=1` -> --gpus=1) and no other job did,
  so Slurm ran them one at a time, while CPU jobs ran beside them; inside a job that holds a GPU
  slot but has no CUDA, `--device auto` trains on the CPU after one warning;
- the tables equal those of a local run of the same config (see `test_metrics_equal_local_run`);
- a rerun submits nothing; a failing job and an unreachable controller end Snakemake with an
  error that names the job's log, instead of hanging.

The test config trains IREM for a time budget, which is not reproducible from run to run; here both
runs use the same config with the budget replaced by a fixed number of epochs (`EPOCHS`) and
`irem.device: auto` (so that IREM jobs declare a GPU). The cluster is stopped at the end, also when
a test fails. Skipped only where the host cannot run a local Slurm (not root, or Slurm missing
and no apt-get). About 4.5 minutes on a 2-core machine (7.7 under a load of 4-5).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from importlib.util import find_spec
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .test_workflow import WORKFLOW_FILES

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "local-slurm.sh"
PROFILE = "profiles/slurm-local"
CONFIG = "config/test-slurm.yaml"
EPOCHS = 5
# The workflow copy carries its own snapshot of the code, so that the local and the Slurm run
# execute the same code even if the checkout changes meanwhile.
COPY = tuple(dict.fromkeys((*WORKFLOW_FILES, "irem", "baselines", "profiles")))
GPU_WARNING = "warning: a GPU slot was given but CUDA is not usable; running on CPU"

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


# --------------------------------------------------------------------------------------------------
# The cluster


@dataclass
class Cluster:
    state: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def jobs(self) -> dict[str, dict[str, str]]:
        """Every job slurmctld remembers (MinJobAge is an hour): id -> scontrol fields."""
        res = self.run("scontrol", "--oneliner", "show", "job")
        assert res.returncode == 0 or "No jobs" in res.stdout + res.stderr, res.stderr
        out = {}
        for line in res.stdout.splitlines():
            fields = dict(re.findall(r"(?:^|\s)([A-Za-z/:]+)=(\S*)", line))
            if "JobId" in fields:
                out[fields["JobId"]] = fields
        return out


def _free_port_pair() -> int:
    """A port p with p and p + 1 free (slurmctld and slurmd)."""
    for port in range(6817, 7017, 2):
        try:
            for p in (port, port + 1):
                with socket.socket() as s:
                    s.bind(("0.0.0.0", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair in 6817-7017")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    if shutil.which("snakemake") is None:
        pytest.skip("snakemake not installed")
    if os.geteuid() != 0:
        pytest.skip("a local Slurm needs root (munged, slurmd)")
    if not (shutil.which("slurmctld") or shutil.which("apt-get")):
        pytest.skip("Slurm is not installed and there is no apt-get to install it")
    if find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.fail("snakemake-executor-plugin-slurm is missing: pip install -e '.[slurm]'")
    state = tmp_path_factory.mktemp("slurm")
    env = {
        **os.environ,
        "LOCAL_SLURM_DIR": str(state),
        "LOCAL_SLURM_PORT": str(_free_port_pair()),
        "MPLBACKEND": "Agg",
    }
    try:
        res = subprocess.run(
            ["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=900
        )
        if res.returncode == 3:
            pytest.skip(f"this host cannot run a local Slurm: {res.stderr.strip()}")
        assert res.returncode == 0, f"local Slurm did not start:\n{res.stdout}\n{res.stderr}"
        env["SLURM_CONF"] = str(state / "etc" / "slurm.conf")
        env["PATH"] = f"{state / 'bin'}{os.pathsep}{env['PATH']}"
        yield Cluster(state, env)
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=180)


# --------------------------------------------------------------------------------------------------
# The two runs of the test config


def _workflow_copy(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / name)
    # The test config with epoch-bounded IREM training (reproducible) and IREM on `auto` (a GPU
    # job). Every section with a time budget (irem, and any IREM variant's) gets epochs instead.
    config = yaml.safe_load((dest / "config" / "test.yaml").read_text())
    for section in config.values():
        if isinstance(section, dict) and {"time_budget", "epochs"} <= set(section):
            section.update(time_budget=None, epochs=EPOCHS)
    config["irem"]["device"] = "auto"
    (dest / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


def _snakemake(cwd: Path, args: list[str], env: dict[str, str], timeout: float):
    t0 = time.monotonic()
    res = subprocess.run(
        ["snakemake", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    return res, time.monotonic() - t0


class Background:
    """A Snakemake run in the background, its output in a file."""

    def __init__(self, cwd: Path, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.t0 = time.monotonic()
        self.ended: list[tuple[int, float]] = []
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                ["snakemake", *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self.waiter = threading.Thread(
            target=lambda: self.ended.append((self.proc.wait(), time.monotonic())), daemon=True
        )
        self.waiter.start()

    def result(self, timeout: float) -> tuple[int, str, float]:
        """Exit status, output and wall seconds; the run is killed if it has not ended in time."""
        self.waiter.join(timeout=max(1.0, self.t0 + timeout - time.monotonic()))
        self.kill()
        assert self.ended, (
            f"snakemake did not end within {timeout} s:\n{self.log.read_text()[-3000:]}"
        )
        code, end = self.ended[0]
        return code, self.log.read_text(), end - self.t0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.waiter.join()


def _failure(res: subprocess.CompletedProcess, cwd: Path) -> str:
    logs = "\n".join(
        f"--- {p}\n{p.read_text()[-1500:]}" for p in sorted(cwd.rglob("slurm_logs/**/*.log"))
    )
    return f"snakemake failed:\n{res.stderr[-6000:]}\n{logs[-6000:]}"


@dataclass
class Runs:
    local: Path
    slurm: Path
    log: str  # Snakemake's output of the Slurm run
    seconds: dict[str, float] = field(default_factory=dict)


FAILING = """
rule all:
    input: "done.txt"

rule fails:
    output: "done.txt"
    log: "fails.log"
    shell: "echo 'this job fails on purpose' > {log}; echo boom-in-slurm-log >&2; exit 3"
"""


@pytest.fixture(scope="module")
def failures(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Background]:
    """Two small workflows started in the background (they mostly wait), read by the last tests:
    a job that fails, and a submission to a controller that does not answer."""
    out = {}
    for name in ("failing_job", "unreachable"):
        tmp = tmp_path_factory.mktemp(name)
        shutil.copytree(ROOT / PROFILE, tmp / PROFILE)
        env = cluster.env
        snakefile = FAILING
        if name == "unreachable":
            # The cluster's configuration with slurmctld on a port where nobody listens.
            conf = tmp / "unreachable.conf"
            text = Path(cluster.env["SLURM_CONF"]).read_text()
            port = _free_port_pair()
            conf.write_text(re.sub(r"(?m)^SlurmctldPort=\d+$", f"SlurmctldPort={port}", text))
            env = {**cluster.env, "SLURM_CONF": str(conf)}
            snakefile = FAILING.replace("exit 3", "true")
        (tmp / "Snakefile").write_text(snakefile)
        out[name] = Background(
            tmp, ["--executor", "slurm", "--profile", PROFILE], env, tmp / "snakemake.log"
        )
    yield out
    for run in out.values():
        run.kill()


@pytest.fixture(scope="module")
def runs(
    cluster: Cluster, failures: dict[str, Background], tmp_path_factory: pytest.TempPathFactory
) -> Runs:
    tmp = tmp_path_factory.mktemp("workflows")
    local = _workflow_copy(tmp / "local")
    slurm = _workflow_copy(tmp / "slurm")
    seconds = {}
    # The local run goes on beside the Slurm run: while Slurm runs the GPU jobs one after the
    # other, a core is often idle. No `gpu` limit: IREM runs on the CPU here.
    env = {k: v for k, v in cluster.env.items() if not k.startswith("SLURM_")}
    local_run = Background(local, ["--cores", "2", "--configfile", CONFIG], env, tmp / "local.log")
    try:
        res, seconds["slurm"] = _snakemake(
            slurm,
            ["--executor", "slurm", "--profile", PROFILE, "--configfile", CONFIG],
            cluster.env,
            1800,
        )
        assert res.returncode == 0, _failure(res, slurm)
        code, log, seconds["local"] = local_run.result(timeout=1800)
        assert code == 0, f"local run failed:\n{log[-6000:]}"
    finally:
        local_run.kill()
    (tmp / "timings.json").write_text(json.dumps(seconds))
    print(f"\nSlurm run {seconds['slurm']:.0f} s, local run beside it {seconds['local']:.0f} s")
    return Runs(local, slurm, res.stdout + res.stderr, seconds)


@dataclass
class Job:
    rule: str
    jobid: int
    gpu: bool
    slurm_id: str = ""
    slurm_log: Path | None = None


def _jobs(log: str) -> tuple[list[Job], list[str]]:
    """Snakemake's jobs of a run (rule, job id, whether it declared a GPU, its Slurm job id and
    log) and the local rules, from its log."""
    jobs, local, current = [], [], None
    for line in log.splitlines():
        m = re.match(r"^(localrule|rule) (\w+):$", line)
        if m:
            current = m.groups()
            continue
        m = re.match(r"^\s+jobid: (\d+)$", line)
        if m and current:
            if current[0] == "localrule":
                local.append(current[1])
            else:
                jobs.append(Job(current[1], int(m.group(1)), False))
            continue
        m = re.match(r"^\s+resources: (.*)$", line)
        if m and current and current[0] == "rule" and jobs:
            jobs[-1].gpu = bool(re.search(r"(?:^|, )gpu=[1-9]", m.group(1)))
            current = None
    by_id = {j.jobid: j for j in jobs}
    for m in re.finditer(
        r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.\n", log
    ):
        job = by_id[int(m.group(1))]
        assert not job.slurm_id, f"job {job.jobid} submitted twice"
        job.slurm_id, job.slurm_log = m.group(2), Path(m.group(3))
    return jobs, local


def _job_stats_total(log: str) -> int:
    m = re.search(r"^total\s+(\d+)$", log, re.MULTILINE)
    assert m, "no job stats in the log"
    return int(m.group(1))


def _irem_logs(folder: Path) -> list[Path]:
    """The logs of the IREM reconstructions (not of their metrics)."""
    return sorted(p for p in folder.rglob("*_rec-irem*.log") if not p.name.endswith("_metrics.log"))


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


# --------------------------------------------------------------------------------------------------
# Tests


def test_every_job_ran_as_a_slurm_job(runs: Runs, cluster: Cluster) -> None:
    jobs, local = _jobs(runs.log)
    # Everything but the `all` target is a Slurm job, each its own.
    assert local == ["all"], local
    assert len(jobs) == _job_stats_total(runs.log) - 1 > 30
    missing = [f"{j.rule} (job {j.jobid})" for j in jobs if not j.slurm_id]
    assert not missing, f"not submitted to Slurm: {missing}"
    assert len({j.slurm_id for j in jobs}) == len(jobs)
    run_id = re.search(r"SLURM run ID: (\S+)", runs.log).group(1)
    records = cluster.jobs()
    for j in jobs:
        rec = records[j.slurm_id]
        assert rec["JobName"] == run_id, rec
        assert rec["JobState"] == "COMPLETED" and rec["ExitCode"] == "0:0", rec
        assert rec["Comment"].startswith(f"rule_{j.rule}"), rec
        # The plugin's Slurm log of the job (kept by the profile): the rule ran inside it.
        assert j.slurm_log.is_file(), j.slurm_log
        assert f"Finished jobid: 0 (Rule: {j.rule})" in j.slurm_log.read_text(), j.slurm_log


def test_gpu_jobs_ran_one_at_a_time(runs: Runs, cluster: Cluster) -> None:
    jobs, _ = _jobs(runs.log)
    records = cluster.jobs()
    gpu = [j for j in jobs if j.gpu]
    assert {j.rule for j in gpu} == {"irem"}, "only IREM jobs declare a GPU in this config"
    assert len(gpu) >= 4
    for j in jobs:
        tres = records[j.slurm_id].get("TresPerJob", "")
        assert ("gpu:1" in tres) == j.gpu, (j.rule, tres)
    # One GPU on the node: Slurm started each GPU job only after the previous one had ended
    # (scontrol times have a resolution of one second).
    spans = sorted(
        (_time(records[j.slurm_id]["StartTime"]), _time(records[j.slurm_id]["EndTime"]), j.rule)
        for j in gpu
    )
    for (s0, e0, _), (s1, e1, _) in zip(spans, spans[1:], strict=False):
        assert s1 >= e0, f"GPU jobs overlap: {s0}-{e0} and {s1}-{e1}"
    # ... while the node's second core kept running CPU jobs beside them: the GPU, not the cores,
    # is what kept the IREM jobs apart.
    cpu = [
        (_time(records[j.slurm_id]["StartTime"]), _time(records[j.slurm_id]["EndTime"]))
        for j in jobs
        if not j.gpu
    ]
    assert any(s < e1 and e > s1 for s, e in cpu for s1, e1, _ in spans)


def test_device_auto_falls_back_to_cpu_with_one_warning(runs: Runs) -> None:
    jobs, _ = _jobs(runs.log)
    logs = runs.slurm / "results" / "logs"
    irem_logs = _irem_logs(logs)
    assert len(irem_logs) == sum(j.rule == "irem" for j in jobs)
    for log in irem_logs:
        # Slurm gave the job the GPU (CUDA_VISIBLE_DEVICES=0: the warning is printed only when it
        # is set); torch found no CUDA; the run went on, on the CPU.
        assert log.read_text().count(GPU_WARNING) == 1, log
        sidecar = runs.slurm / "results" / log.relative_to(logs).with_suffix(".json")
        assert json.loads(sidecar.read_text())["device"] == "cpu", sidecar
    # A local run has no GPU slot (CUDA_VISIBLE_DEVICES unset): no warning there.
    for log in _irem_logs(runs.local / "results" / "logs"):
        assert GPU_WARNING not in log.read_text(), log


def test_metrics_equal_local_run(runs: Runs) -> None:
    # Same code snapshot, config, seeds and thread counts (one per job), and IREM trained for a
    # fixed number of epochs: every step is deterministic on a CPU, and the two runs were measured
    # to agree bit for bit. The tolerance (1e-9 relative) only forgives a different summation
    # order in the last bits; anything the Slurm run changed for real (inputs, seeds, epochs,
    # options) moves PSNR/SSIM by orders of magnitude more.
    tables = "results/tables"
    a = pd.read_csv(runs.local / tables / "metrics.csv")
    b = pd.read_csv(runs.slurm / tables / "metrics.csv")
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9, atol=1e-12)
    cols = [
        "dataset",
        "k",
        "subject",
        "method",
        "seed",
        "psnr",
        "ssim",
        "psnr_mask",
        "ssim_mask",
        "final_loss",
        "epochs_completed",
    ]
    a = pd.read_csv(runs.local / tables / "runs.csv")
    b = pd.read_csv(runs.slurm / tables / "runs.csv")
    cols = [c for c in cols if c in a.columns]
    pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=False, rtol=1e-9, atol=1e-12)
    irem = a[a["method"].str.startswith("irem")]
    assert len(irem) and (irem["epochs_completed"] == EPOCHS).all()


def test_rerun_submits_nothing(runs: Runs, cluster: Cluster) -> None:
    before = set(cluster.jobs())
    res, _ = _snakemake(
        runs.slurm,
        ["--executor", "slurm", "--profile", PROFILE, "--configfile", CONFIG],
        cluster.env,
        300,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "Nothing to be done" in out
    assert "has been submitted" not in out
    assert set(cluster.jobs()) == before


def test_failed_job_is_an_error_with_its_logs(failures: dict[str, Background]) -> None:
    code, out, seconds = failures["failing_job"].result(timeout=600)
    assert code != 0
    assert "Error in rule fails" in out and "failed, SLURM status is: 'FAILED'" in out, out[-3000:]
    # Both logs are named: the rule's and the job's Slurm log, which holds the job's stderr.
    m = re.search(r"log: fails\.log, (\S+\.log) \(check log file", out)
    assert m, out[-3000:]
    assert "boom-in-slurm-log" in Path(m.group(1)).read_text()
    assert seconds < 300


def test_unreachable_controller_is_an_error(failures: dict[str, Background]) -> None:
    code, out, seconds = failures["unreachable"].result(timeout=600)
    assert code != 0
    assert "SLURM sbatch failed" in out and "Unable to contact slurm controller" in out, out[-3000:]
    assert seconds < 300
