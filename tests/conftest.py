"""Shared test setup: real Redis (an isolated db + queue prefix), tiny models saved to disk,
and helpers that start real API and Celery worker processes."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
REDIS_DB = int(os.environ.get("IMAGESEARCH_TEST_REDIS_DB", "12"))
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="imagesearch-tests-"))


def pytest_configure(config: pytest.Config) -> None:
    # Set before any project module reads its settings, so in-process code and child processes agree.
    from imagesearch.models.tiny import build_tiny_models

    clip_dir, captioner_dir = build_tiny_models(_SESSION_DIR / "models")
    os.environ.update({
        "IMAGESEARCH_DATA_DIR": str(_SESSION_DIR / "data"),
        "IMAGESEARCH_REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
        "IMAGESEARCH_QUEUE_PREFIX": f"test-{uuid.uuid4().hex[:8]}-",
        "IMAGESEARCH_CLIP_MODEL_DIR": str(clip_dir),
        "IMAGESEARCH_CAPTIONER_DIR": str(captioner_dir),
        "IMAGESEARCH_DEVICE": "cpu",
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Proc:
    """A child process with its output in a file, stopped (and reaped) on close."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self._out, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.output():
                return
            if self.popen.poll() is not None:
                raise RuntimeError(f"process exited ({self.popen.returncode}):\n{self.output()[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"{needle!r} not seen in {timeout}s:\n{self.output()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)

    def close(self, timeout: float = 20) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        self._out.close()


def child_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["IMAGESEARCH_DATA_DIR"] = str(data_dir)
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def start_worker(data_dir: Path, name: str, queues=("embed", "caption"), **extra: str) -> Proc:
    env = child_env(data_dir, **extra)
    prefix = env["IMAGESEARCH_QUEUE_PREFIX"]
    args = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--loglevel", "INFO",
            "-Q", ",".join(prefix + q for q in queues), "-c", "1", "-n", f"{name}-{uuid.uuid4().hex[:6]}@%h",
            "--without-gossip", "--without-mingle"]
    proc = Proc(args, env, data_dir.parent / f"{name}.log")
    proc.wait_for_output("ready.", timeout=90)
    return proc


def start_api(data_dir: Path, name: str = "api", **extra: str) -> tuple[Proc, str]:
    port = free_port()
    env = child_env(data_dir, **extra)
    args = [sys.executable, "-m", "gunicorn", "api.wsgi:app", "-b", f"127.0.0.1:{port}", "-w", "1",
            "--threads", "4", "--timeout", "120"]
    proc = Proc(args, env, data_dir.parent / f"{name}.log")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(base + "/readyz", timeout=30).status_code == 200:
                return proc, base
        except requests.ConnectionError:
            pass
        if proc.popen.poll() is not None:
            raise RuntimeError(proc.output()[-3000:])
        time.sleep(0.3)
    proc.close()
    raise TimeoutError(proc.output()[-3000:])


def wait_until(predicate, timeout: float, interval: float = 0.25, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{message} not reached within {timeout}s")
