"""Shared test setup: real Redis (an isolated db + queue prefix), tiny models saved to disk, and
fixtures for the app, Redis, moto and AWS credentials.

Fixtures and hooks only: importable helpers live in ``tests/support/`` (images, processes, paths,
factories) and test doubles in ``tests/fakes/``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from flask import Flask

_SESSION_DIR = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    # Set before any project module reads its settings (and before huggingface_hub reads
    # HF_HUB_OFFLINE at import), so in-process code and child processes agree.
    # HF_HOME is a private, empty hub cache: a test can only load a hub name whose replica it
    # installed there (imagesearch/dev/replicas), never a developer's downloads nor the network.
    session_dir = config.stash[_SESSION_DIR] = Path(tempfile.mkdtemp(prefix="imagesearch-tests-"))
    os.environ.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                       "HF_HOME": str(session_dir / "hf-home")})
    os.environ.pop("HF_HUB_CACHE", None)
    from imagesearch.config import Settings
    from imagesearch.dev.tiny_models import build_tiny_models

    # Settings in tests come from the environment set here and from arguments, never from a
    # developer's .env in the working directory.
    for settings_class in (Settings, *Settings.GROUPS.values()):
        settings_class.model_config["env_file"] = None

    redis_db = int(os.environ.get("IMAGESEARCH_TEST_REDIS_DB", "12"))
    clip_dir, captioner_dir = build_tiny_models(session_dir / "models")
    os.environ.update({
        "IMAGESEARCH_DATA_DIR": str(session_dir / "data"),
        "IMAGESEARCH_REDIS_URL": f"redis://127.0.0.1:6379/{redis_db}",
        "IMAGESEARCH_REDIS_NAMESPACE": f"test-{uuid.uuid4().hex[:8]}-",
        "IMAGESEARCH_CLIP_MODEL_DIR": str(clip_dir),
        "IMAGESEARCH_CAPTIONER_DIR": str(captioner_dir),
        "IMAGESEARCH_DEVICE": "cpu",
        # In-process apps behave as an API bound to loopback (open mode); auth tests override it.
        "IMAGESEARCH_BIND_HOST": "127.0.0.1",
        "IMAGESEARCH_BATCH_FLUSH_SECONDS": "0.2",
        "IMAGESEARCH_RETRY_BACKOFF_SECONDS": "0.5",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    })


def pytest_unconfigure(config: pytest.Config) -> None:
    session_dir = config.stash.get(_SESSION_DIR, None)
    if session_dir is not None:
        shutil.rmtree(session_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_client():
    """The shared test Redis. Only this session's namespace is cleared (never FLUSHDB): another
    session on the same machine may be using the same database at the same time."""
    import redis

    from imagesearch.redis_state import Keyspace, connect

    client = connect(os.environ["IMAGESEARCH_REDIS_URL"])
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"the tests need Redis at 127.0.0.1:6379 ({exc})")
    keys = Keyspace(os.environ["IMAGESEARCH_REDIS_NAMESPACE"])

    def clear() -> None:
        found = [key for pattern in keys.patterns for key in client.scan_iter(match=pattern)]
        if found:
            client.delete(*found)

    clear()
    yield client
    clear()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def make_app(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Flask]:
    """``make_app(queue=None, **settings_overrides)``: the real Flask app, in process.

    The settings are ``Settings(**settings_overrides)`` over this run's environment, with a fresh
    temporary ``data_dir`` unless one is given. ``queue`` is the task queue: a fresh
    ``MemoryTaskQueue`` by default, any ``TaskQueue`` given, or ``"celery"`` for the real Celery
    queue on this run's Redis. The app's services, settings and queue included, are
    ``app.extensions["imagesearch"]`` (``.settings``, ``.queue``, ``.store``).

    Session-scoped so module-scoped fixtures can use it too; every call builds a new app.
    """
    from api import create_app
    from imagesearch.config import Settings
    from imagesearch.taskqueue import MemoryTaskQueue

    def make(*, queue: Any = None, **settings_overrides: Any) -> Flask:
        settings_overrides.setdefault("data_dir", tmp_path_factory.mktemp("app"))
        if queue is None:
            queue = MemoryTaskQueue()
        elif queue == "celery":
            queue = None  # the composition root's default
        return create_app(Settings(**settings_overrides), queue=queue)

    return make


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """moto in server mode: real HTTP, real boto3, on a loopback port."""
    import sys

    import requests

    from imagesearch.dev.procs import ManagedProcess, free_port, wait_until

    port = free_port()
    log_dir = tmp_path_factory.mktemp("moto")
    server = ManagedProcess([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            dict(os.environ), log_dir / "moto.log")
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(url + "/moto-api/", timeout=2).status_code < 500
        except requests.ConnectionError:
            return False

    wait_until(up, 60, 0.2, "moto server")
    yield url
    server.close()


@pytest.fixture
def aws_env(monkeypatch, moto_server) -> dict[str, str]:
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": moto_server}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
