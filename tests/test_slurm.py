"""The workflow on a real (single-node, local) Slurm cluster: scripts/local-slurm.sh brings one up,
`snakemake --executor slurm --profile profiles/slurm-local` runs the whole test config on it.

What is checked, from Slurm's own records (`scontrol show job`, no accounting daemon needed), the
plugin's per-job Slurm logs and Snakemake's log:
- every job of the DAG but the `all` target was submitted with sbatch and COMPLETED as its own
  Slurm job, and its Slurm log shows the rule run inside that job;
- each `reconstruct` job asked Slurm for its method's threads, run time and memory (the method
  entries of the config, docs/methods.md);
- the `reconstruct` jobs of methods with a non-cpu `device` asked for the node's one GPU
  (`gpu=1` -> --gpus=1) and no other job did, so Slurm ran them one at a time, while CPU jobs ran
  beside them; inside a job that holds a GPU slot but has no CUDA, `--device auto` trains on the
  CPU after one warning;
- the tables equal those of the session's local run of the test config (tests/conftest.py; there
  `irem` runs on the CPU, a device that changes no number: see `test_tables_equal_local_run`);
- a rerun submits nothing; a failing job and an unreachable controller end Snakemake with an
  error that names the job's log, instead of hanging.

The test config bounds every method by counts (steps, epochs, iterations), so both runs give the
same voxels; the Slurm run puts the `irem` method on `device: auto` (so that its jobs declare a
GPU), which falls back to the CPU here. The cluster is stopped at
the end, also when a test fails. Skipped only where the host cannot run a local Slurm (not root, or
Slurm missing and no apt-get). About 9.5 minutes on a 2-core machine under a load of 5-10.
"""

from __future__ import annotations

import copy
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

from .workflow_run import WORKFLOW_FILES

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "local-slurm.sh"
PROFILE = "profiles/slurm-local"
CONFIG = "config/test-slurm.yaml"
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


# A time-bounded training option of `irem reconstruct` and its value.
TIME_BUDGET = re.compile(r"\s--time-(?:budget|per-mvoxel)[= ]\S+")
# The method `irem` of the test config asks for a GPU, with its own run time and memory (neither
# the schema's defaults nor the profile's), so that the test sees the entry's values reach Slurm.
GPU_METHOD = {"device": "auto", "runtime": 12, "mem_mb": 1500}


def slurm_test_config(config: dict) -> dict:
    """The test config with the `irem` method on a GPU device (`GPU_METHOD`)."""
    out = copy.deepcopy(config)
    for entry in out["methods"]:
        if entry["name"] == "irem":
            entry.update(GPU_METHOD)
    return out


def test_slurm_test_config_is_count_bounded() -> None:
    """Runs without a cluster: no method of the test config stops on seconds, and the Slurm
    config differs from it only in the `irem` method's device and resources."""
    config = yaml.safe_load((ROOT / "config" / "test.yaml").read_text(encoding="utf-8"))
    out = slurm_test_config(config)
    commands = [m["command"] for m in out["methods"]]
    assert not any(TIME_BUDGET.search(c) for c in commands), commands
    assert {m["name"] for m in out["methods"] if m.get("device", "cpu") != "cpu"} == {"irem"}
    for entry, before in zip(out["methods"], config["methods"], strict=True):
        assert entry["command"] == before["command"]
    assert {k: v for k, v in out.items() if k != "methods"} == {
        k: v for k, v in config.items() if k != "methods"
    }


def _workflow_copy(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / name)
    config = yaml.safe_load((dest / "config" / "test.yaml").read_text(encoding="utf-8"))
    (dest / CONFIG).write_text(
        yaml.safe_dump(slurm_test_config(config), sort_keys=False), encoding="utf-8"
    )
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
        with log.open("w", encoding="utf-8") as out:
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
            f"snakemake did not end within {timeout} s:\n{self.log.read_text(encoding='utf-8')[-3000:]}"
        )
        code, end = self.ended[0]
        return code, self.log.read_text(encoding="utf-8"), end - self.t0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.waiter.join()


def _failure(res: subprocess.CompletedProcess, cwd: Path) -> str:
    logs = "\n".join(
        f"--- {p}\n{p.read_text(encoding='utf-8')[-1500:]}" for p in sorted(cwd.rglob("slurm_logs/**/*.log"))
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
            text = Path(cluster.env["SLURM_CONF"]).read_text(encoding="utf-8")
            port = _free_port_pair()
            conf.write_text(
                re.sub(r"(?m)^SlurmctldPort=\d+$", f"SlurmctldPort={port}", text), encoding="utf-8"
            )
            env = {**cluster.env, "SLURM_CONF": str(conf)}
            snakefile = FAILING.replace("exit 3", "true")
        (tmp / "Snakefile").write_text(snakefile, encoding="utf-8")
        out[name] = Background(
            tmp, ["--executor", "slurm", "--profile", PROFILE], env, tmp / "snakemake.log"
        )
    yield out
    for run in out.values():
        run.kill()


@pytest.fixture(scope="module")
def runs(
    cluster: Cluster,
    failures: dict[str, Background],
    test_run: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Runs:
    """The Slurm run of the test config (irem on a GPU device); ``local`` is the session's local
    run of the same config with irem on the CPU (tests/conftest.py), whose tables it must equal."""
    tmp = tmp_path_factory.mktemp("workflows")
    slurm = _workflow_copy(tmp / "slurm")
    seconds = {}
    res, seconds["slurm"] = _snakemake(
        slurm,
        ["--executor", "slurm", "--profile", PROFILE, "--configfile", CONFIG],
        cluster.env,
        1800,
    )
    assert res.returncode == 0, _failure(res, slurm)
    (tmp / "timings.json").write_text(json.dumps(seconds), encoding="utf-8")
    print(f"\nSlurm run {seconds['slurm']:.0f} s")
    return Runs(test_run, slurm, res.stdout + res.stderr, seconds)


@dataclass
class Job:
    rule: str
    jobid: int
    gpu: bool = False
    wildcards: dict[str, str] = field(default_factory=dict)
    resources: dict[str, str] = field(default_factory=dict)
    threads: int = 1
    log: str = ""
    slurm_id: str = ""
    slurm_log: Path | None = None

    @property
    def method(self) -> str:
        return self.wildcards.get("method", "") if self.rule == "reconstruct" else ""


def _fields(text: str) -> dict[str, str]:
    """``a=1, b=x`` -> {"a": "1", "b": "x"}."""
    return dict(item.split("=", 1) for item in text.split(", ") if "=" in item)


def _jobs(log: str) -> tuple[list[Job], list[str]]:
    """Snakemake's jobs of a run (rule, job id, wildcards, threads, resources, whether it declared
    a GPU, its log, its Slurm job id and Slurm log) and the local rules, from its log."""
    jobs, local, current = [], [], None
    for line in log.splitlines():
        m = re.match(r"^(localrule|rule) (\w+):$", line)
        if m:
            current, job_log = m.groups(), ""
            continue
        if current is None:
            continue
        m = re.match(r"^\s+(log|jobid|wildcards|threads|resources): (.*)$", line)
        if not m:
            continue
        key, value = m.groups()
        if key == "log":
            job_log = value
        elif key == "jobid" and current[0] == "localrule":
            local.append(current[1])
            current = None
        elif key == "jobid":
            jobs.append(Job(current[1], int(value), log=job_log))
        elif key == "wildcards":
            jobs[-1].wildcards = _fields(value)
        elif key == "threads":
            jobs[-1].threads = int(value)
        else:  # resources: the last line of a job's block
            jobs[-1].resources = _fields(value)
            jobs[-1].gpu = int(jobs[-1].resources.get("gpu", 0)) > 0
            current = None
    by_id = {j.jobid: j for j in jobs}
    for m in re.finditer(
        r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.\n", log
    ):
        job = by_id[int(m.group(1))]
        assert not job.slurm_id, f"job {job.jobid} submitted twice"
        job.slurm_id, job.slurm_log = m.group(2), Path(m.group(3))
    return jobs, local


def _config(folder: Path) -> dict:
    return yaml.safe_load((folder / CONFIG).read_text(encoding="utf-8"))


def _method_entry(config: dict, method: str) -> dict:
    """A method's entry."""
    return next(m for m in config["methods"] if m["name"] == method)


def _gpu_methods(config: dict, jobs: list[Job]) -> set[str]:
    """The methods run in this DAG whose entry names a device other than cpu."""
    return {
        j.method
        for j in jobs
        if j.method and _method_entry(config, j.method).get("device", "cpu") != "cpu"
    }


def _mb(value: str) -> float:
    """Slurm's ``4000M``/``1.50G`` -> MB."""
    number, unit = re.fullmatch(r"([\d.]+)([KMGT]?)", value).groups()
    return float(number) * {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2}[unit]


def _minutes(value: str) -> float:
    """Slurm's ``[days-]hh:mm:ss`` -> minutes."""
    days, _, clock = value.rpartition("-")
    h, m, sec = (int(x) for x in clock.split(":"))
    return (int(days or 0) * 24 + h) * 60 + m + sec / 60


def _job_stats_total(log: str) -> int:
    m = re.search(r"^total\s+(\d+)$", log, re.MULTILINE)
    assert m, "no job stats in the log"
    return int(m.group(1))


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
        assert f"Finished jobid: 0 (Rule: {j.rule})" in j.slurm_log.read_text(encoding="utf-8"), j.slurm_log


def test_reconstruct_jobs_ask_for_their_methods_resources(runs: Runs, cluster: Cluster) -> None:
    """Threads, run time and memory of each `reconstruct` job come from its method's entry (the
    schema's defaults where the entry has none) and reach Slurm as the job's limits."""
    jobs, _ = _jobs(runs.log)
    config, records = _config(runs.slurm), cluster.jobs()
    schema = yaml.safe_load((runs.slurm / "schemas" / "config.schema.yaml").read_text(encoding="utf-8"))
    defaults = {
        k: v["default"]
        for k, v in schema["definitions"]["method"]["properties"].items()
        if "default" in v
    }
    rec_jobs = [j for j in jobs if j.rule == "reconstruct"]
    assert {j.method for j in rec_jobs} >= {m["name"] for m in config["methods"]}
    for j in rec_jobs:
        rec = records[j.slurm_id]
        if j.method in {m["name"] for m in config["methods"]}:
            entry = {**defaults, **_method_entry(config, j.method)}
            want = (entry["threads"], entry["runtime"], entry["mem_mb"])
            assert (j.threads, int(j.resources["runtime"]), int(j.resources["mem_mb"])) == want, j
        assert int(rec["CPUs/Task"]) == j.threads, (j.method, rec)
        assert _minutes(rec["TimeLimit"]) == int(j.resources["runtime"]), (j.method, rec)
        assert _mb(rec["MinMemoryNode"]) == int(j.resources["mem_mb"]), (j.method, rec)
    # The GPU method's own values (GPU_METHOD), neither the schema's nor the profile's defaults.
    irem = [records[j.slurm_id] for j in rec_jobs if j.method == "irem"]
    assert irem and all(_minutes(r["TimeLimit"]) == GPU_METHOD["runtime"] for r in irem)
    assert all(_mb(r["MinMemoryNode"]) == GPU_METHOD["mem_mb"] for r in irem)


def test_gpu_jobs_ran_one_at_a_time(runs: Runs, cluster: Cluster) -> None:
    jobs, _ = _jobs(runs.log)
    records = cluster.jobs()
    gpu = [j for j in jobs if j.gpu]
    # Exactly the reconstructions of the methods on a non-cpu device declared a GPU.
    gpu_methods = _gpu_methods(_config(runs.slurm), jobs)
    assert gpu_methods == {"irem"}, gpu_methods
    assert gpu == [j for j in jobs if j.method in gpu_methods]
    assert len(gpu) >= 4
    for j in jobs:
        tres = records[j.slurm_id].get("TresPerJob", "")
        assert ("gpu:1" in tres) == j.gpu, (j.rule, j.method, tres)
    # One GPU on the node: Slurm started each GPU job only after the previous one had ended
    # (scontrol times have a resolution of one second).
    spans = sorted(
        (_time(records[j.slurm_id]["StartTime"]), _time(records[j.slurm_id]["EndTime"]), j.method)
        for j in gpu
    )
    for (s0, e0, _), (s1, e1, _) in zip(spans, spans[1:], strict=False):
        assert s1 >= e0, f"GPU jobs overlap: {s0}-{e0} and {s1}-{e1}"
    # ... while the node's second core kept running CPU jobs beside them: the GPU, not the cores,
    # is what kept the GPU jobs apart.
    cpu = [
        (_time(records[j.slurm_id]["StartTime"]), _time(records[j.slurm_id]["EndTime"]))
        for j in jobs
        if not j.gpu
    ]
    assert any(s < e1 and e > s1 for s, e in cpu for s1, e1, _ in spans)


def test_device_auto_falls_back_to_cpu_with_one_warning(runs: Runs) -> None:
    jobs, _ = _jobs(runs.log)
    rec_jobs = [j for j in jobs if j.rule == "reconstruct"]
    assert all(j.log for j in rec_jobs)
    irem = [
        j
        for j in rec_jobs
        if "irem reconstruct" in _method_entry(_config(runs.slurm), j.method)["command"]
    ]
    assert any(j.gpu for j in irem) and not all(j.gpu for j in irem)
    for j in irem:
        # A GPU job: Slurm gave it the GPU (CUDA_VISIBLE_DEVICES=0: the warning is printed only
        # when it is set), torch found no CUDA, the run went on, on the CPU. A CPU job (device
        # cpu) has no GPU slot and says nothing.
        text = (runs.slurm / j.log).read_text(encoding="utf-8")
        assert text.count(GPU_WARNING) == (1 if j.gpu else 0), j.log
        sidecar = runs.slurm / "results" / Path(j.log).relative_to("results/logs")
        assert json.loads(sidecar.with_suffix(".json").read_text(encoding="utf-8"))["device"] == "cpu", sidecar
    # The local run has no GPU slot (CUDA_VISIBLE_DEVICES unset): no warning there.
    for j in rec_jobs:
        assert GPU_WARNING not in (runs.local / j.log).read_text(encoding="utf-8"), j.log


# Columns of runs.csv that differ from run to run: wall-clock timings.
TIMINGS = ("training_seconds", "evaluation_seconds", "total_seconds", "start_seconds")


def test_tables_equal_local_run(runs: Runs) -> None:
    # Same code snapshot, config, seeds and thread counts, and IREM trained for fixed numbers of
    # epochs: every step is deterministic on a CPU, and the two runs were measured to agree bit
    # for bit. The tolerance (1e-9 relative) only forgives a different summation order in the
    # last bits; anything the Slurm run changed for real (inputs, seeds, epochs, options) moves
    # PSNR/SSIM by orders of magnitude more. metrics.csv and scantime.csv (statistics across
    # subjects: means, spreads, intervals, paired tests) are functions of the runs' scores only,
    # so they are compared whole; runs.csv on every column but the timings.
    tables = "results/tables"
    for name in ("metrics.csv", "scantime.csv", "runs.csv"):
        a = pd.read_csv(runs.local / tables / name)
        b = pd.read_csv(runs.slurm / tables / name)
        assert len(a) > 0 and list(a.columns) == list(b.columns), name
        cols = [c for c in a.columns if c not in TIMINGS]
        pd.testing.assert_frame_equal(
            a[cols], b[cols], check_exact=False, rtol=1e-9, atol=1e-12, obj=name
        )
    assert (a[["psnr", "ssim", "psnr_mask", "ssim_mask"]].notna()).all().all()
    # Every IREM run trained for exactly its command's steps (or epochs, without --steps).
    config = _config(runs.slurm)
    trained = a[a["epochs_completed"].notna()]
    assert trained["stopped_by"].isin(["steps", "epochs"]).all(), trained["stopped_by"]
    for method, rows in trained.groupby("method"):
        command = _method_entry(config, method)["command"]
        steps = re.search(r"--steps (\d+)", command)
        if steps:
            assert (rows["steps"] == int(steps.group(1))).all(), method
        else:
            epochs = int(re.search(r"--epochs (\d+)", command).group(1))
            assert (rows["epochs_completed"] == epochs).all(), method
    assert set(trained["method"]) >= {"irem", "iremfast"}


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
    assert "boom-in-slurm-log" in Path(m.group(1)).read_text(encoding="utf-8")
    assert seconds < 300


def test_unreachable_controller_is_an_error(failures: dict[str, Background]) -> None:
    code, out, seconds = failures["unreachable"].result(timeout=600)
    assert code != 0
    assert "SLURM sbatch failed" in out and "Unable to contact slurm controller" in out, out[-3000:]
    assert seconds < 300
