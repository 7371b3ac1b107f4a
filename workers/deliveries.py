"""Counting deliveries per image, so a message that kills its worker every time ends as a dead letter.

Before a batch runs, each image's counter is incremented; after the batch returns (whatever the
outcome) it is cleared. A counter that is still raised when the image comes back means the last
attempt never returned: the process died. Such images are processed alone (so they cannot take a
batch of good images down with them), and past ``max_deliveries`` they are recorded as dead
letters that operators list and re-drive from the CLI.
"""

from __future__ import annotations

import json
import time

import redis

from imagesearch.config import Settings

_TTL_S = 7 * 24 * 3600


class DeliveryLedger:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = f"imagesearch:{prefix}"

    @classmethod
    def from_settings(cls, settings: Settings) -> "DeliveryLedger":
        return cls(redis.Redis.from_url(settings.redis_url), settings.queue_prefix)

    def _key(self, stage: str, image_id: str) -> str:
        return f"{self.prefix}deliveries:{stage}:{image_id}"

    @property
    def _dead(self) -> str:
        return f"{self.prefix}dead-letters"

    def begin(self, stage: str, ids: list[str]) -> dict[str, int]:
        """Count this delivery; returns how many times each image has now started without finishing."""
        pipe = self.client.pipeline()
        for image_id in ids:
            pipe.incr(self._key(stage, image_id))
            pipe.expire(self._key(stage, image_id), _TTL_S)
        results = pipe.execute()
        return {image_id: int(results[2 * i]) for i, image_id in enumerate(ids)}

    def settle(self, stage: str, ids: list[str]) -> None:
        if ids:
            self.client.delete(*(self._key(stage, i) for i in ids))

    def bury(self, stage: str, image_id: str, reason: str) -> None:
        entry = json.dumps({"id": image_id, "stage": stage, "reason": reason, "at": time.time()})
        pipe = self.client.pipeline()
        pipe.hset(self._dead, f"{stage}:{image_id}", entry)
        pipe.delete(self._key(stage, image_id))
        pipe.execute()

    def dead_letters(self) -> list[dict]:
        entries = [json.loads(v) for v in self.client.hvals(self._dead)]
        return sorted(entries, key=lambda e: e["at"])

    def exhume(self, stage: str, image_id: str) -> bool:
        """Remove a dead letter (before re-driving it); False if there was none."""
        return bool(self.client.hdel(self._dead, f"{stage}:{image_id}"))
