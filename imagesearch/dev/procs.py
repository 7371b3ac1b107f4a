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

from imagesearch.redis_state import connect

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
        _started.append(self)

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


# Every process started from here, closed or not (strong references: a dropped one is still running).
_started: list[ManagedProcess] = []


def process_mark() -> int:
    """A mark for :func:`started_since`: how many processes this process has started so far."""
    return len(_started)


def started_since(mark: int) -> list[ManagedProcess]:
    """The processes started after ``mark``, in order (their logs, for a failed test's report)."""
    return _started[mark:]


def unclosed_since(mark: int) -> list[ManagedProcess]:
    """The processes started after ``mark`` that were not closed.

    A test takes a mark before it starts anything and closes what is left afterwards, so a test
    that failed half-way leaves no worker behind to consume the next test's messages.
    """
    return [p for p in started_since(mark) if not p._out.closed]


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


def _ephemeral_ports() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def stable_port() -> int:
    """A free loopback port below the ephemeral range, for a server that is restarted on the same port.

    While such a server is down, any outgoing connection may be handed a port of the ephemeral range
    as its source port (the reconnecting client itself: a TCP self-connect), and another process's
    ``free_port()`` may be handed it too; then the restarted server cannot bind, and whatever holds
    the port answers in its place. Ports below the range are only ever taken by an explicit bind.
    """
    import random

    low = _ephemeral_ports()[0]
    for _ in range(100):
        port = random.randrange(max(1025, low - 12000), low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


class RedisServer:
    """A private ``redis-server`` on a loopback port, for tests that must own their broker.

    ``durable`` keeps an AOF with ``fsync always`` in ``directory``, so ``kill`` then ``start``
    (a crash and a restart) gets back every acknowledged write. ``start`` waits until this very
    process answers (its ``process_id``) and has finished loading its data.
    """

    def __init__(self, directory: Path, durable: bool = False) -> None:
        self.directory = directory
        self.durable = durable
        self.port = stable_port()
        self.process: ManagedProcess | None = None
        self._starts = 0
        directory.mkdir(parents=True, exist_ok=True)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 30) -> RedisServer:
        import redis

        self._starts += 1
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                "--save", "", "--appendonly", "yes" if self.durable else "no", "--appendfsync", "always"]
        self.process = proc = ManagedProcess(args, dict(os.environ), self.directory / f"redis-{self._starts}.log")

        def ours_and_loaded() -> bool:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited ({proc.popen.returncode}):\n"
                                   f"{proc.output()[-2000:]}")
            client = connect(self.url(), timeout=2)
            try:
                info = client.info()
            except redis.RedisError:  # not listening yet, or LOADING
                return False
            finally:
                client.close()
            if int(info["process_id"]) != proc.popen.pid:
                raise RuntimeError(f"port {self.port} is answered by another Redis (pid {info['process_id']})")
            return not int(info.get("loading", 0))

        try:
            wait_until(ours_and_loaded, timeout, 0.05, f"redis-server on port {self.port}")
        except BaseException:
            proc.close()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last save (what an OOM kill or a crashed host does)."""
        if self.process is not None:
            self.process.kill()
            self.process.close()

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.close()
            self.process = None


def start_worker(env: dict[str, str], log_dir: Path, name: str, queues: tuple[str, ...] = ("embed", "caption"),
                 timeout: float = 120, extra_args: tuple[str, ...] = (), cwd: Path | None = None) -> ManagedProcess:
    """``imagesearch worker`` for ``queues``; ``cwd`` (default: this process's) is where it reads .env."""
    args = imagesearch_command("worker", ",".join(queues), "--concurrency", "1",
                               "--name", f"{name}-{uuid.uuid4().hex[:6]}@%h",
                               "--without-gossip", "--without-mingle", *extra_args)
    proc = ManagedProcess(args, env, log_dir / f"{name}.log", cwd=cwd)
    try:
        proc.wait_for_output("ready.", timeout)
    except BaseException:
        proc.close()
        raise
    return proc


def start_api(env: dict[str, str], log_dir: Path, name: str = "api", port: int = 0,
              timeout: float = 120, cwd: Path | None = None) -> tuple[ManagedProcess, str]:
    """``imagesearch serve`` on loopback and its base URL once ready; ``cwd`` as for :func:`start_worker`."""
    port = port or free_port()
    args = imagesearch_command("serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                               "--threads", "4")
    proc = ManagedProcess(args, env, log_dir / f"{name}.log", cwd=cwd)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_api_ready(proc, base, timeout)
    except BaseException:
        proc.close()
        raise
    return proc, base


def wait_api_ready(proc: ManagedProcess, base: str, timeout: float, interval: float = 0.3,
                   request_timeout: float = 30) -> None:
    """Poll ``base``'s /readyz until it answers 200; raises at once, with its log's tail, if the API
    exits. ``request_timeout`` bounds one probe: an API without the warm hook (a plain gunicorn)
    loads its models while answering the first."""
    def ready() -> bool:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"the API exited:\n{proc.output()[-3000:]}")
        try:
            return requests.get(base + "/readyz", timeout=request_timeout).status_code == 200
        except requests.ConnectionError:
            return False

    wait_until(ready, timeout, interval, "API ready")


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
