"""A test's own broker: a private Redis and namespace, and sending real Celery messages to it
through the same composition root the API uses.

Fault tests kill workers and Redis itself, so they do not use the run's shared Redis db: there a
killed worker's unacknowledged messages sit in kombu's `unacked` hash (one per db, whatever the
namespace) for whichever worker restores them next, and another test session on the same machine
may be using that db at the same time.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from imagesearch.vocab import Stage
from wiring import build_services

if TYPE_CHECKING:
    from imagesearch.dev.procs import RedisServer
    from imagesearch.taskqueue import TaskQueue


def enqueue_embed(image_id: str) -> None:
    """Queue ``image_id`` for the embed stage on the broker and namespace of this test run."""
    build_services().queue.enqueue(Stage.EMBED, image_id)


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



def private_broker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, durable: bool,
                   failed: Callable[[], bool]) -> Iterator[Broker]:
    """A private Redis and namespace for one test (set in the environment), then its processes
    closed and, when the test failed, their logs printed."""
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
        if failed():  # the logs of a failed test, in its report
            for proc in started_since(mark):
                print(f"----- {proc.log} (last 200 lines)\n" + "\n".join(proc.output().splitlines()[-200:]))
