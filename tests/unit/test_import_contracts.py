"""The layer contracts in pyproject.toml hold, and they catch what the old runtime check missed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("imagesearch", "api", "workers", "cli", "wiring", "schemas")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH first: the copies in `tree` shadow the editable install.
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)})


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_the_contracts_hold(tree: Path):
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("where", "line"), [
    ("imagesearch/pipeline.py", "    import workers.tasks"),
    ("imagesearch/search.py", "    from flask import current_app"),
    ("imagesearch/stores/base.py", "    from kombu.exceptions import OperationalError"),
    ("api/images.py", "    from workers.queue import CeleryTaskQueue"),
])
def test_a_function_local_import_across_a_layer_breaks_a_contract(tree: Path, where: str, line: str):
    with (tree / where).open("a") as f:
        f.write(f"\n\ndef _probe() -> None:\n{line}\n")
    result = _lint(tree)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and line.split()[1].split(".")[0] in result.stdout
