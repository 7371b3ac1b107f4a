"""Counting deliveries per image, so a message that kills its worker every time ends as a dead letter.

Before a batch runs, each image's counter is incremented; after the batch returns (whatever the
outcome) it is cleared. A counter that is still raised when the image comes back means the last
attempt never returned: the process died. Such images are processed alone (so they cannot take a
batch of good images down with them), and past ``max_deliveries`` they are recorded as dead
letters that operators list and re-drive (``imagesearch dead-letters``, ``/v1/admin/dead-letters``:
both call :meth:`DeliveryLedger.redrive`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import TypedDict

import redis

from imagesearch.redis_state import Keyspace
from imagesearch.taskqueue import TaskQueue
from imagesearch.vocab import Stage

_TTL_S = 7 * 24 * 3600


class DeadLetter(TypedDict):
    id: str
    stage: str
    reason: str
    at: float


class DeliveryLedger:
    def __init__(self, client: redis.Redis, keys: Keyspace) -> None:
        self.client = client
        self.keys = keys

    def begin(self, stage: Stage, ids: list[str]) -> dict[str, int]:
        """Count this delivery; returns how many times each image has now started without finishing."""
        pipe = self.client.pipeline()
        for image_id in ids:
            pipe.incr(self.keys.deliveries(stage, image_id))
            pipe.expire(self.keys.deliveries(stage, image_id), _TTL_S)
        results = pipe.execute()
        return {image_id: int(results[2 * i]) for i, image_id in enumerate(ids)}

    def settle(self, stage: Stage, ids: list[str]) -> None:
        if ids:
            self.client.delete(*(self.keys.deliveries(stage, i) for i in ids))

    def bury(self, stage: Stage, image_id: str, reason: str) -> None:
        entry = json.dumps({"id": image_id, "stage": str(stage), "reason": reason, "at": time.time()})
        pipe = self.client.pipeline()
        pipe.hset(self.keys.dead_letters, f"{stage}:{image_id}", entry)
        pipe.delete(self.keys.deliveries(stage, image_id))
        pipe.execute()

    def dead_letters(self) -> list[DeadLetter]:
        entries = [json.loads(v) for v in self.client.hvals(self.keys.dead_letters)]
        return sorted(entries, key=lambda e: e["at"])

    def exhume(self, stage: Stage, image_id: str) -> bool:
        """Remove a dead letter (before re-driving it); False if there was none."""
        return bool(self.client.hdel(self.keys.dead_letters, f"{stage}:{image_id}"))

    def redrive(self, queue: TaskQueue, ids: Iterable[str] | None = None) -> list[str]:
        """Queue dead letters again (all, or those with the given ids); returns the ids re-queued."""
        wanted = set(ids or ())
        requeued: list[str] = []
        for entry in self.dead_letters():
            if (not wanted or entry["id"] in wanted) and self.exhume(Stage(entry["stage"]), entry["id"]):
                queue.enqueue(Stage(entry["stage"]), entry["id"])
                requeued.append(entry["id"])
        return requeued
