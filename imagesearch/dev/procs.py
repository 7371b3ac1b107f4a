"""Starting and stopping the service's own processes (API, workers) from Python.

Used by ``imagesearch demo`` and by the tests, so both run the processes with the same command
lines as the Procfile (``imagesearch serve``, ``imagesearch worker <stages>``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import requests

T = TypeVar("T")


def imagesearch_command(*args: str) -> list[str]:
    """``imagesearch ARGS`` with this interpreter, so a child runs the same installation."""
    return [sys.executable, "-m", "cli", *args]


class ManagedProcess:
    """A child in its own process group with output in a log file; ``close`` stops and reaps it."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> None:
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._out = log.open("wb")
        self.popen = subprocess.Popen(args, cwd=cwd, env=env, stdout=self._out, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, needle: str, timeout: float) -> None:
        def seen() -> bool:
            if self.popen.poll() is not None:
                raise RuntimeError(f"process exited ({self.popen.returncode}):\n{self.output()[-3000:]}")
            return needle in self.output()

        wait_until(seen, timeout, 0.2, f"{needle!r} in {self.log.name}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)

    def close(self, timeout: float = 30) -> None:
        """Graceful stop: SIGTERM to the leader only (Celery and gunicorn then finish their current
        work and stop their children), SIGKILL to the whole group only if that takes too long."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)  # whatever is left of the group
        except ProcessLookupError:
            pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._out.close()


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.25, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {timeout:.0f}s")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_worker(env: dict[str, str], log_dir: Path, name: str, queues: tuple[str, ...] = ("embed", "caption"),
                 timeout: float = 120, extra_args: tuple[str, ...] = ()) -> ManagedProcess:
    args = imagesearch_command("worker", ",".join(queues), "--concurrency", "1",
                               "--name", f"{name}-{uuid.uuid4().hex[:6]}@%h",
                               "--without-gossip", "--without-mingle", *extra_args)
    proc = ManagedProcess(args, env, log_dir / f"{name}.log")
    try:
        proc.wait_for_output("ready.", timeout)
    except BaseException:
        proc.close()
        raise
    return proc


def start_api(env: dict[str, str], log_dir: Path, name: str = "api", port: int = 0,
              timeout: float = 120) -> tuple[ManagedProcess, str]:
    port = port or free_port()
    args = imagesearch_command("serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                               "--threads", "4")
    proc = ManagedProcess(args, env, log_dir / f"{name}.log")
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"the API exited:\n{proc.output()[-3000:]}")
        try:
            return requests.get(base + "/readyz", timeout=30).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_until(ready, timeout, 0.3, "API ready")
    except BaseException:
        proc.close()
        raise
    return proc, base


@contextmanager
def local_stack(env: dict[str, str], log_dir: Path, port: int = 0) -> Iterator[str]:
    """The API, an embed worker and a caption worker, as the Procfile runs them; yields the API URL."""
    started: list[ManagedProcess] = []
    try:
        api, base = start_api(env, log_dir, port=port)
        started.append(api)
        started.append(start_worker(env, log_dir, "worker-embed", ("embed",)))
        started.append(start_worker(env, log_dir, "worker-caption", ("caption",)))
        yield base
    finally:
        for proc in reversed(started):
            proc.close()
