"""Procfile, compose, the Dockerfiles, the README and the test harness spell each process the same
way, and compose's environment means what it says when read through the settings."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from imagesearch.config import IngestSettings, Settings
from imagesearch.dev.procs import imagesearch_command
from tests.support.paths import ROOT

PROCESS_COMMANDS = {"serve", "worker", "s3-listener"}


def _procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def test_every_process_line_is_an_imagesearch_command():
    for name, command in _procfile().items():
        program, subcommand, *_ = command.split()
        assert program == "imagesearch" and subcommand in PROCESS_COMMANDS, (name, command)


def test_the_readme_shows_the_procfile_verbatim():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- procfile:start -->\n```\n(.*?)```\n<!-- procfile:end -->", readme, re.S)
    assert block is not None
    assert block.group(1) == (ROOT / "Procfile").read_text()


def test_dockerfiles_run_procfile_lines():
    procfile = set(_procfile().values())
    for dockerfile in ("Dockerfile.cpu", "Dockerfile.gpu"):
        cmd = next(line for line in (ROOT / "docker" / dockerfile).read_text().splitlines() if line.startswith("CMD"))
        argv = json.loads(cmd[len("CMD"):])
        assert argv[0] == "imagesearch" and argv[1] in PROCESS_COMMANDS, dockerfile
        # The API's CMD is the web line with its defaults filled in; a worker's is a worker line.
        assert any(_same_process(argv, line) for line in procfile), (dockerfile, argv)


def test_the_harness_runs_the_same_cli():
    assert imagesearch_command("worker", "embed")[1:] == ["-m", "cli", "worker", "embed"]


def _same_process(argv: list[str], procfile_line: str) -> bool:
    words = procfile_line.split()
    return words[:2] == argv[:2] and [w for w in words if not w.startswith("${")] == \
        [w for w, p in zip(argv, words) if not p.startswith("${")]


@pytest.fixture(scope="module")
def compose() -> dict:
    """The compose file as `docker-compose config` renders it with no variables set."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (scripts/install.sh installs it)")
    result = subprocess.run(["docker-compose", "-f", str(ROOT / "docker" / "compose.yaml"), "config"],
                            capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"}, cwd="/")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_services_run_procfile_lines(compose):
    procfile = set(_procfile().values())
    for name in ("api", "worker-embed", "worker-caption", "s3-listener"):
        argv = [str(a) for a in compose["services"][name]["command"]]
        assert any(_same_process(argv, line) for line in procfile), (name, argv)


def test_compose_environment_reads_as_unset_where_it_is_empty(compose, monkeypatch):
    assert compose["services"]["api"]["environment"]["IMAGESEARCH_CLIP_MODEL_DIR"] == ""  # what compose renders
    for name, service in compose["services"].items():
        env = {k: str(v) for k, v in (service.get("environment") or {}).items() if k.startswith("IMAGESEARCH_")}
        if not env:
            continue
        for key in [k for k in os.environ if k.startswith("IMAGESEARCH_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings(_env_file=None)
        assert settings.models.clip_model_dir is None and settings.models.captioner_dir is None, name
        assert settings.redis.url == "redis://redis:6379/0" and settings.storage.backend == "opensearch", name


def test_an_empty_variable_means_unset(monkeypatch):
    monkeypatch.setenv("IMAGESEARCH_CLIP_MODEL_DIR", "")
    monkeypatch.setenv("IMAGESEARCH_DECODE_MIN_SIDE", "")
    settings = Settings(_env_file=None)
    assert settings.models.clip_model_dir is None and settings.ingest.decode_min_side == IngestSettings.model_fields[
        "decode_min_side"].default


# The Python each base distribution ships as its `python3` (its archive has no other release).
DISTRIBUTION_PYTHON = {"ubuntu24.04": "3.12", "ubuntu22.04": "3.10", "debian12": "3.11"}


def _gpu_dockerfile() -> str:
    return (ROOT / "docker" / "Dockerfile.gpu").read_text()


def _base(dockerfile: str) -> str:
    return next(line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM "))


def test_the_gpu_image_installs_the_python_its_base_ships():
    dockerfile = _gpu_dockerfile()
    base = _base(dockerfile)
    distribution = re.search(r"-(ubuntu\d+\.\d+|debian\d+)$", base)
    assert distribution is not None, f"name the distribution's Python for {base} in DISTRIBUTION_PYTHON"
    version = DISTRIBUTION_PYTHON[distribution.group(1)]
    install = next(line for line in dockerfile.splitlines() if "apt-get install" in line)
    packages = [word for word in install.split("apt-get install", 1)[1].split("&&")[0].split()
                if not word.startswith("-")]
    # Either the distribution's default (`python3`) or its own versioned name, never another release.
    versioned = {re.match(r"python(3\.\d+)", p).group(1) for p in packages if re.match(r"python3\.\d+", p)}
    assert versioned <= {version}, (base, packages)
    assert {"python3", f"python{version}"} & set(packages), packages
    venv = re.search(r"(python3(?:\.\d+)?) -m venv", dockerfile)
    assert venv is not None and venv.group(1) in {"python3", f"python{version}"}
    # ...and that Python is one the project supports.
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains(f"{version}.0"), (requires, version)


def test_the_gpu_base_has_the_cuda_of_the_pinned_torch_build():
    """PyPI's torch wheel carries its own CUDA libraries, built for one CUDA release; the base
    image's CUDA (and so the driver the container runtime asks for) must be that release."""
    import torch

    pinned = re.search(r"^torch==(\S+)", (ROOT / "requirements" / "torch.txt").read_text(), re.M).group(1)
    if torch.__version__.split("+")[0] != pinned or torch.version.cuda is None:
        pytest.skip(f"the installed torch ({torch.__version__}) is not PyPI's CUDA build of the pin")
    base = _base(_gpu_dockerfile())
    cuda = re.match(r"nvidia/cuda:(\d+\.\d+)\.\d+-", base)
    assert cuda is not None and cuda.group(1) == torch.version.cuda, (base, torch.version.cuda)
    assert f"CUDA {torch.version.cuda} build" in (ROOT / "docker" / "README.md").read_text()
