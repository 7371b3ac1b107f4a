"""Shared test setup: real Redis (an isolated db + queue prefix), tiny models saved to disk,
and helpers that start real API and Celery worker processes."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from imagesearch.dev import procs
from imagesearch.dev.procs import ManagedProcess, wait_until

ROOT = Path(__file__).resolve().parents[1]
REDIS_DB = int(os.environ.get("IMAGESEARCH_TEST_REDIS_DB", "12"))
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="imagesearch-tests-"))


def pytest_configure(config: pytest.Config) -> None:
    # Set before any project module reads its settings (and before huggingface_hub reads
    # HF_HUB_OFFLINE at import), so in-process code and child processes agree.
    os.environ.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    from imagesearch.config import Settings
    from imagesearch.dev.tiny_models import build_tiny_models

    # Settings in tests come from the environment set here and from arguments, never from a
    # developer's .env in the working directory.
    Settings.model_config["env_file"] = None

    clip_dir, captioner_dir = build_tiny_models(_SESSION_DIR / "models")
    os.environ.update({
        "IMAGESEARCH_DATA_DIR": str(_SESSION_DIR / "data"),
        "IMAGESEARCH_REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
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
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_client():
    import redis

    client = redis.Redis.from_url(os.environ["IMAGESEARCH_REDIS_URL"])
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"the tests need Redis at 127.0.0.1:6379 ({exc})")
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def jpeg(color=(200, 30, 30), size=(96, 64), shape: str | None = None) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, color)
    if shape:
        draw = ImageDraw.Draw(image)
        draw.ellipse((10, 10, 40, 40), fill=(255, 255, 255)) if shape == "circle" else \
            draw.rectangle((10, 10, 40, 40), fill=(0, 0, 0))
    out = io.BytesIO()
    image.save(out, format="JPEG")
    return out.getvalue()


def child_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["IMAGESEARCH_DATA_DIR"] = str(data_dir)
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def start_worker(data_dir: Path, name: str, queues=("embed", "caption"), extra_args: tuple[str, ...] = (),
                 **extra: str) -> ManagedProcess:
    return procs.start_worker(child_env(data_dir, **extra), data_dir.parent, name, queues, extra_args=extra_args)


def start_api(data_dir: Path, name: str = "api", **extra: str) -> tuple[ManagedProcess, str]:
    return procs.start_api(child_env(data_dir, **extra), data_dir.parent, name)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """moto in server mode: real HTTP, real boto3, on a loopback port."""
    import sys

    import requests

    port = procs.free_port()
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
