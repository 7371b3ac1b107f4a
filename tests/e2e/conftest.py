"""The end-to-end tier: every test below this folder is marked `e2e` (`pytest -m e2e`, or `-m "not e2e"`
for the fast suite)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from imagesearch.dev.procs import RedisServer
    from imagesearch.taskqueue import TaskQueue

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.e2e)


# Fault tests own their broker and their processes. They kill workers and Redis itself, so they do
# not use the run's shared Redis db: there a killed worker's unacknowledged messages sit in kombu's
# `unacked` hash (one per db, whatever the namespace) for whichever worker restores them next, and
# any other test run on the same Redis flushes that db when it starts and ends, wiping messages
# another run is waiting for.


class Broker:
    """A test's own Redis server and namespace, set in this process's environment for the test (so
    ``Settings()`` and the children started with ``child_env`` use them)."""

    def __init__(self, server: RedisServer, namespace: str) -> None:
        self.server = server
        self.namespace = namespace
        self._queue: TaskQueue | None = None

    @property
    def url(self) -> str:
        return self.server.url()

    @property
    def env(self) -> dict[str, str]:
        return {"IMAGESEARCH_REDIS_URL": self.url, "IMAGESEARCH_REDIS_NAMESPACE": self.namespace}

    def enqueue_embed(self, image_id: str) -> None:
        """Queue ``image_id`` for the embed stage on this broker, through the composition root."""
        from imagesearch.config import Settings
        from imagesearch.vocab import Stage
        from wiring import build_services

        if self._queue is None:
            self._queue = build_services(Settings()).queue  # read while the test's environment is set
        self._queue.enqueue(Stage.EMBED, image_id)


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    if outcome.get_result().failed:
        item.stash[_FAILED] = True


def _broker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, durable: bool):
    from imagesearch.config import get_settings
    from imagesearch.dev.procs import RedisServer, process_mark, started_since, unclosed_since

    # The run's own settings (and the Celery app built from them) are cached before the
    # environment changes, so nothing caches this test's broker for the tests after it.
    get_settings()
    import workers.celery_app  # noqa: F401

    mark = process_mark()
    server = RedisServer(tmp_path / "redis", durable=durable).start()
    broker = Broker(server, f"fault-{uuid.uuid4().hex[:8]}-")
    for key, value in broker.env.items():
        monkeypatch.setenv(key, value)
    try:
        yield broker
    finally:
        for proc in reversed(unclosed_since(mark)):  # what a failed test left running, Redis last
            if proc is not server.process:
                proc.close()
        server.close()
        if request.node.stash.get(_FAILED, False):  # the logs of a failed test, in its report
            for proc in started_since(mark):
                print(f"----- {proc.log} (last 200 lines)\n" + "\n".join(proc.output().splitlines()[-200:]))


@pytest.fixture
def broker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A private Redis (no persistence) and namespace for one test; its processes are closed after it."""
    yield from _broker(request, monkeypatch, tmp_path, durable=False)


@pytest.fixture
def durable_broker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A private Redis with an AOF (fsync always), for a test that kills and restarts it."""
    yield from _broker(request, monkeypatch, tmp_path, durable=True)
