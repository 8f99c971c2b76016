"""Environment files agree with pyproject.toml, the lock pins them, licence and citation parse."""

from __future__ import annotations

import ast
import copy
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")

ROOT = Path(__file__).resolve().parents[1]
GPU_ENV = "envs/gpu.yml"

# conda-forge names that differ from the PyPI ones (after normalisation).
CONDA_TO_PYPI = {
    "pytorch-cpu": "torch",
    "pytorch-gpu": "torch",
    "pytorch": "torch",
    "matplotlib-base": "matplotlib",
}
# Conda-only entries that are tools of the environment, not dependencies of the package.
CONDA_ONLY = {"python", "pip"}
TORCH_BUILDS = {"pytorch-cpu", "pytorch-gpu"}
_SPLIT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$")


def normalise(name: str) -> str:
    """PEP 503 name: lower case, runs of `-`, `_` and `.` as one `-`.

    Args:
        name: A package name as written in pyproject.toml or a conda file.

    Returns:
        The normalised name.
    """
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_spec(spec: str) -> tuple[str, str]:
    """Split a pip or conda requirement into its normalised name and version bounds.

    Args:
        spec: e.g. ``"SimpleITK>=2.3"``, ``"snakemake-executor-plugin-slurm>=2.8,<3"``.

    Returns:
        ``(name, bounds)`` with the bounds' parts sorted and spaces removed (``""`` for none).
    """
    match = _SPLIT.match(spec.split(";")[0])
    if match is None:
        raise ValueError(f"cannot parse requirement {spec!r}")
    bounds = ",".join(sorted(p.strip() for p in match[2].replace(" ", "").split(",") if p))
    return normalise(match[1]), bounds


def pyproject_requirements(pyproject: dict[str, Any]) -> dict[str, str]:
    """Every requirement of pyproject's runtime dependencies and extras, name -> bounds.

    Args:
        pyproject: The parsed pyproject.toml.

    Returns:
        One entry per package; a package listed in several extras must have the same bounds in
        each.
    """
    project = pyproject["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs.extend(extra)
    out: dict[str, str] = {}
    for name, bounds in map(parse_spec, specs):
        if out.setdefault(name, bounds) != bounds:
            raise ValueError(
                f"{name}: different bounds in pyproject.toml: {out[name]!r}, {bounds!r}"
            )
    return out


def conda_requirements(env: dict[str, Any]) -> dict[str, str]:
    """The packages of a conda environment file (its `pip:` entries included), name -> bounds.

    Args:
        env: The parsed environment file.

    Returns:
        PyPI-normalised names (``pytorch-cpu`` -> ``torch``), conda-only tools left out.
    """
    specs: list[str] = []
    for entry in env["dependencies"]:
        specs.extend(entry["pip"] if isinstance(entry, dict) else [entry])
    out: dict[str, str] = {}
    for name, bounds in map(parse_spec, specs):
        if name in CONDA_ONLY:
            continue
        name = CONDA_TO_PYPI.get(name, name)
        if name in out:
            raise ValueError(f"{name} listed twice in the environment file")
        out[name] = bounds
    return out


def lock_pins(text: str) -> dict[str, str]:
    """The `name==version` lines of a constraints file, name -> version.

    Args:
        text: The file's text.

    Returns:
        Normalised name -> pinned version.
    """
    pins = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"not an exact pin: {line!r}"
            pins[normalise(name)] = version
    return pins


def installed_closure(names: list[str]) -> set[str]:
    """The installed distributions that the given packages need, transitively, themselves included.

    Args:
        names: Top-level package names; each must be installed.

    Returns:
        Normalised names, following each distribution's requirements whose markers hold here
        (extras are not followed: pyproject's extras are listed among `names` already).
    """
    seen: set[str] = set()
    todo = [normalise(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(normalise(req.name))
    return seen


def load_yaml(path: str) -> Any:
    """Parse a YAML file of the repository."""
    return yaml.safe_load((ROOT / path).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    """The parsed pyproject.toml."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_environment_yml_matches_pyproject(pyproject: dict[str, Any]) -> None:
    """environment.yml names the packages of pyproject.toml, with the same version bounds."""
    pip_side = pyproject_requirements(pyproject)
    conda_side = conda_requirements(load_yaml("environment.yml"))
    assert sorted(set(pip_side) - set(conda_side)) == [], "in pyproject.toml only"
    assert sorted(set(conda_side) - set(pip_side)) == [], "in environment.yml only"
    assert {n: b for n, b in conda_side.items() if pip_side[n] != b} == {}, "other bounds"


def test_the_comparison_sees_a_package_missing_on_either_side(pyproject: dict[str, Any]) -> None:
    """Adding a package to one file and not the other breaks the equality checked above."""
    env = load_yaml("environment.yml")
    env["dependencies"].insert(2, "einops>=0.8")
    assert set(conda_requirements(env)) - set(pyproject_requirements(pyproject)) == {"einops"}
    more = copy.deepcopy(pyproject)
    more["project"]["dependencies"].append("Hypothesis_Testing>=6")
    assert set(pyproject_requirements(more)) - set(conda_requirements(env)) == {
        "hypothesis-testing"
    }


def test_names_are_normalised() -> None:
    """Case, `_`/`-`/`.` and conda-forge's names are mapped to one PyPI name."""
    env = {
        "dependencies": [
            "python=3.11",
            "pytorch-cpu>=2.2",
            "matplotlib-base",
            "simpleitk",
            {"pip": ["Snakemake_Executor.Plugin-slurm >= 2.8, <3"]},
        ]
    }
    assert conda_requirements(env) == {
        "torch": ">=2.2",
        "matplotlib": "",
        "simpleitk": "",
        "snakemake-executor-plugin-slurm": "<3,>=2.8",
    }
    assert parse_spec("SimpleITK>=2.3") == parse_spec("simpleitk >= 2.3")


def test_gpu_environment_differs_only_in_torch() -> None:
    """envs/gpu.yml is environment.yml with pytorch-gpu for pytorch-cpu (and its own name)."""
    cpu, gpu = load_yaml("environment.yml"), load_yaml(GPU_ENV)
    assert (cpu["name"], gpu["name"]) == ("irem-bench", "irem-bench-gpu")
    cpu_torch = [d for d in cpu["dependencies"] if isinstance(d, str) and d.startswith("pytorch")]
    gpu_torch = [d for d in gpu["dependencies"] if isinstance(d, str) and d.startswith("pytorch")]
    assert [parse_spec(d)[0] for d in cpu_torch + gpu_torch] == ["pytorch-cpu", "pytorch-gpu"]
    assert parse_spec(cpu_torch[0])[1] == parse_spec(gpu_torch[0])[1]
    for env, torch in ((cpu, cpu_torch[0]), (gpu, gpu_torch[0])):
        env["dependencies"][env["dependencies"].index(torch)] = "TORCH"
        del env["name"]
    assert cpu == gpu


def test_configs_name_their_conda_environment() -> None:
    """config/paper.yaml runs in the CUDA environment; the other configs and the default, CPU."""
    envs = {p.name: load_yaml(f"config/{p.name}")["conda_env"] for p in ROOT.glob("config/*.yaml")}
    assert envs.pop("paper.yaml") == GPU_ENV
    assert envs["config.yaml"] == envs["test.yaml"] == "environment.yml"
    assert set(envs.values()) == {"environment.yml"}, envs
    schema = load_yaml("schemas/config.schema.yaml")
    assert schema["properties"]["conda_env"]["default"] == "environment.yml"
    for env in ("environment.yml", GPU_ENV):
        assert (ROOT / env).is_file()


def test_lock_pins_every_dependency(pyproject: dict[str, Any]) -> None:
    """requirements/lock.txt pins each package pyproject.toml names, within pyproject's bounds."""
    pins = lock_pins((ROOT / "requirements" / "lock.txt").read_text(encoding="utf-8"))
    required = pyproject_requirements(pyproject)
    assert sorted(set(required) - set(pins)) == [], "not pinned in requirements/lock.txt"
    outside = {n: pins[n] for n, b in required.items() if pins[n] not in SpecifierSet(b)}
    assert outside == {}, "pinned outside pyproject's bounds"


def test_lock_holds_the_whole_installed_closure(pyproject: dict[str, Any]) -> None:
    """Every package that the dependencies pull in here is pinned too (the lock is not stale).

    Runs where the environment was installed with the lock (as CI does): elsewhere other versions
    may pull in other packages.
    """
    pins = lock_pins((ROOT / "requirements" / "lock.txt").read_text(encoding="utf-8"))
    closure = installed_closure(sorted(pyproject_requirements(pyproject)))
    assert len(closure) > len(pyproject_requirements(pyproject))
    other = sorted(
        f"{n} {metadata.version(n)}"
        for n in closure & set(pins)
        if Version(metadata.version(n)).public != Version(pins[n]).public
    )
    if other:
        pytest.skip(f"not installed with requirements/lock.txt: {', '.join(other[:3])} ...")
    assert sorted(closure - set(pins)) == [], "regenerate requirements/lock.txt"


def test_lock_parser_rejects_a_loose_line() -> None:
    """A `>=` line in the lock is not an exact pin and is reported."""
    assert lock_pins("# c\nNumPy==2.0  # why\n") == {"numpy": "2.0"}
    with pytest.raises(AssertionError, match="not an exact pin"):
        lock_pins("numpy>=2.0\n")


def test_citation_cff() -> None:
    """CITATION.cff parses, has CFF's required keys, and carries pyproject's version."""
    cff = load_yaml("CITATION.cff")
    assert {"cff-version", "message", "title", "authors"} <= set(cff)
    assert cff["cff-version"] == "1.2.0"
    assert all(isinstance(a, dict) and a for a in cff["authors"])
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert str(cff["version"]) == version["project"]["version"]
    paper = next(r for r in cff["references"] if "2106.15097" in str(r.get("identifiers")))
    assert paper["authors"][0] == {"family-names": "Wu", "given-names": "Qing"}


def test_license_is_mit() -> None:
    """LICENSE is the MIT licence that pyproject.toml declares."""
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License")
    assert "the irem-bench authors" in text
    assert tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["license"] == {
        "text": "MIT"
    }


def test_benchmark_readme_lists_every_result_file() -> None:
    """results/benchmarks/README.md names each committed result file and a command writing it."""
    folder = ROOT / "results" / "benchmarks"
    readme = (folder / "README.md").read_text(encoding="utf-8")
    files = [p for p in folder.iterdir() if p.suffix in {".csv", ".md", ".png"}]
    names = {p.name for p in files if p.name != "README.md"}
    assert len(names) >= 6
    stems = {n.rsplit(".", 1)[0] for n in names}
    listed = {s for s in stems if f"`{s}." in readme or f"`{s}{{" in readme}
    assert sorted(stems - listed) == [], "not in results/benchmarks/README.md"
    for script in re.findall(r"python (benchmarks/\w+\.py)", readme):
        assert (ROOT / script).is_file(), script


def _calls_without_encoding(source: str) -> list[tuple[int, str]]:
    """Text-mode file calls of ``source`` that leave the encoding to the locale."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        keywords = {k.arg for k in node.keywords}
        if "encoding" in keywords:
            continue
        path_method = isinstance(func, ast.Attribute) and name in ("read_text", "write_text")
        # irem.report.tables.write_text(path, text) is a function that writes UTF-8 itself.
        if (path_method and getattr(func.value, "id", "") != "tables") or name == "FileHandler":
            found.append((node.lineno, name))
        elif name == "open":
            mode = node.args[1] if len(node.args) > 1 else None
            mode = next((k.value for k in node.keywords if k.arg == "mode"), mode)
            if not (isinstance(mode, ast.Constant) and "b" in str(mode.value)):
                found.append((node.lineno, name))
    return found


def test_text_files_are_read_and_written_as_utf8() -> None:
    # CI's locale is ASCII: a text file opened without an encoding fails on the first "±".
    assert _calls_without_encoding('p.read_text()\nopen(p, "w")\nopen(p, "rb")\n') == [
        (1, "read_text"), (2, "open"),
    ]
    files = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    bad = {
        f: calls
        for f in files
        if (calls := _calls_without_encoding((ROOT / f).read_text(encoding="utf-8")))
    }
    assert not bad, bad
