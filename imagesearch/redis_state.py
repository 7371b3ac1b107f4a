"""Redis: the one client factory and the one keyspace that names every key the service keeps.

Two kinds of names live in one Redis. The stage queues are Celery's lists, named
``<namespace><stage>`` (operators see these names in ``celery inspect`` and dashboards, and a
rename would strand messages already queued). Everything else is service state under
``imagesearch:<namespace>``: API keys, rate windows, delivery counters, dead letters, the S3 event
log, the stale-record sweeper's locks. ``IMAGESEARCH_REDIS_NAMESPACE`` lets several deployments (or
test runs) share one Redis.
"""

from __future__ import annotations

import redis

from imagesearch.vocab import Stage

STATE_ROOT = "imagesearch:"


def queue_depths(url: str, keys: Keyspace, *, timeout: float) -> dict[Stage, int]:
    """Messages waiting per stage: the lengths of the stages' Celery lists, in one round trip on a
    connection of its own (a scrape or a status query must not wait behind other commands)."""
    client = connect(url, timeout=timeout)
    try:
        with client.pipeline(transaction=False) as pipe:
            for stage in Stage:
                pipe.llen(keys.queue(stage))
            return {stage: int(length) for stage, length in zip(Stage, pipe.execute())}
    finally:
        client.close()


def connect(url: str, *, timeout: float | None = None) -> redis.Redis:
    """A client for ``url``; ``timeout`` bounds both connecting and each command (None: wait)."""
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


class Keyspace:
    def __init__(self, namespace: str = "") -> None:
        self.namespace = namespace
        self._state = f"{STATE_ROOT}{namespace}"

    @property
    def patterns(self) -> tuple[str, str]:
        """SCAN patterns matching every key of this namespace (its queues, then its state)."""
        return f"{self.namespace}*", f"{self._state}*"

    def queue(self, stage: Stage | str) -> str:
        """The Celery queue (a Redis list) of a stage, or of ``default``."""
        return f"{self.namespace}{stage}"

    # API access
    @property
    def api_keys(self) -> str:
        return f"{self._state}api-keys"

    def rate_window(self, caller: str, window: int) -> str:
        return f"{self._state}rate:{caller}:{window}"

    # Deliveries and dead letters
    def deliveries(self, stage: Stage | str, image_id: str) -> str:
        return f"{self._state}deliveries:{stage}:{image_id}"

    @property
    def dead_letters(self) -> str:
        return f"{self._state}dead-letters"

    # The S3 event log
    def s3_event_lock(self, object_id: str) -> str:
        return f"{self._state}s3events:lock:{object_id}"

    def s3_event_sequencer(self, object_id: str) -> str:
        return f"{self._state}s3events:seq:{object_id}"

    # The stale-record sweeper
    @property
    def requeue_sweep_lock(self) -> str:
        return f"{self._state}requeue-sweep-lock"

    def requeued(self, image_id: str) -> str:
        return f"{self._state}requeued:{image_id}"

    # Search profiles (fusion weights and relevance calibration, per model identities)
    def search_profile(self, digest: str) -> str:
        return f"{self._state}search-profile:{digest}"
