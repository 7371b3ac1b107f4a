"""Real API and Celery worker processes for a test, with the environment the conftest set up.

Each child gets this run's environment (its Redis db and namespace, the tiny models), its own data
folder and the repository on ``PYTHONPATH``; it runs in the test's folder, where its log goes, so it
never reads a developer's .env.
"""

from __future__ import annotations

import os
from pathlib import Path

from imagesearch.dev import procs
from imagesearch.dev.procs import ManagedProcess
from tests.support.paths import ROOT


def child_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """This process's environment for a child working on ``data_dir``, with ``extra`` on top."""
    env = dict(os.environ)
    env["IMAGESEARCH_DATA_DIR"] = str(data_dir)
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def start_worker(data_dir: Path, name: str, queues=("embed", "caption"), extra_args: tuple[str, ...] = (),
                 **extra: str) -> ManagedProcess:
    return procs.start_worker(child_env(data_dir, **extra), data_dir.parent, name, queues, extra_args=extra_args,
                              cwd=data_dir.parent)


def start_api(data_dir: Path, name: str = "api", **extra: str) -> tuple[ManagedProcess, str]:
    """The API process and its base URL."""
    return procs.start_api(child_env(data_dir, **extra), data_dir.parent, name, cwd=data_dir.parent)
