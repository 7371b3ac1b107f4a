"""The services one process shares: store, blob storage, task queue, models, Redis state.

Built by the composition root (``wiring.build_services``), which picks the task queue
implementation; everything here is domain code. Each service is opened on first use, so a
process opens only what it needs, and after any fork (Celery's prefork pool, gunicorn).
"""

from __future__ import annotations

import time
from functools import cached_property
from typing import TYPE_CHECKING

import redis

from imagesearch.apikeys import KeyRing, RateLimiter
from imagesearch.blobs import BlobStore, open_blobs
from imagesearch.config import Settings
from imagesearch.deliveries import DeliveryLedger
from imagesearch.profiles import ProfileStore, SearchProfile
from imagesearch.redis_state import connect
from imagesearch.s3.event_log import RedisEventLog
from imagesearch.s3.ingest import S3Ingestor
from imagesearch.s3.sources import head_s3_object
from imagesearch.stores import Store, open_store
from imagesearch.taskqueue import TaskQueue
from imagesearch.vocab import SearchMode, Stage

if TYPE_CHECKING:  # the models import torch: a CLI command or the S3 listener need not pay for it
    from imagesearch.models import Captioner, ClipEncoder
    from imagesearch.search import SearchService

# A request or an event handler fails fast on an unreachable Redis instead of hanging a thread.
_REDIS_TIMEOUT_S = 10.0
# Token positions warmed per query length: CLIP's context (77) in the open_clip and OpenAI models.
_WARM_TEXT_POSITIONS = 77


class Services:
    def __init__(self, settings: Settings, queue: TaskQueue) -> None:
        self.settings = settings
        self.queue = queue

    def enqueue_embed(self, image_id: str) -> None:
        """The embed stage's enqueue, as the one-argument callable ingestion functions take."""
        self.queue.enqueue(Stage.EMBED, image_id)

    @cached_property
    def store(self) -> Store:
        return open_store(self.settings)

    @cached_property
    def blobs(self) -> BlobStore:
        return open_blobs(self.settings)

    @property
    def clip(self) -> ClipEncoder:
        from imagesearch.models import get_clip

        return get_clip(self.settings)  # loaded once per process, on first use

    @property
    def captioner(self) -> Captioner:
        from imagesearch.models import get_captioner

        return get_captioner(self.settings)

    @cached_property
    def searcher(self) -> SearchService:
        from imagesearch.search import SearchService

        return SearchService(self.settings, self.store, self.clip, self.current_profile)

    def warm(self) -> dict[str, float]:
        """Pay now for what a process's first searches would, so none of them is slow.

        - Load the query encoder.
        - Encode one text of each length up to CLIP's usual context: a query runs only as many
          positions as it has tokens, and the first text of each length costs several times a
          repeated one (kernels chosen and laid out per shape). Longer texts are truncated to the
          model's context, so a model with a shorter one only repeats lengths.
        - Run one hybrid search with ``explain`` (every ranked list searched): it brings the store's
          vectors into memory (the embedded store loads every row on its first kNN), queries the
          text index, reads the records and the search profile (hashing the captioner's weights).

        Returns the seconds each part took; raises whatever loading raises."""
        from imagesearch.search import Query

        started = time.perf_counter()
        clip = self.clip
        loaded = time.perf_counter()
        for words in range(1, _WARM_TEXT_POSITIONS - 1):  # minus start- and end-of-text
            clip.encode_texts([" ".join(["a"] * words)])
        encoded = time.perf_counter()
        self.searcher.search(Query(text="warm up", mode=SearchMode.HYBRID, explain=True))
        searched = time.perf_counter()
        return {"model_s": loaded - started, "encode_s": encoded - loaded, "search_s": searched - encoded}

    @cached_property
    def profiles(self) -> ProfileStore:
        return ProfileStore(self.redis, self.settings.keys, self.settings.search.profile_refresh_s)

    def current_profile(self) -> SearchProfile | None:
        """The search profile fitted for the models this process serves, if any."""
        from imagesearch.models.captioner import configured_captioner

        return self.profiles.current(self.clip.identity, configured_captioner(self.settings))

    @cached_property
    def redis(self) -> redis.Redis:
        return connect(self.settings.redis.url, timeout=_REDIS_TIMEOUT_S)

    @cached_property
    def ledger(self) -> DeliveryLedger:
        return DeliveryLedger(self.redis, self.settings.keys)

    @cached_property
    def keyring(self) -> KeyRing:
        return KeyRing(self.redis, self.settings.keys)

    @cached_property
    def rate_limiter(self) -> RateLimiter:
        return RateLimiter(self.redis, self.settings.keys, self.settings.api.rate_limit_per_minute)

    @cached_property
    def event_log(self) -> RedisEventLog:
        return RedisEventLog(self.redis, self.settings.keys, self.settings.s3.event_log_ttl_seconds)

    @cached_property
    def s3_ingestor(self) -> S3Ingestor:
        return S3Ingestor(settings=self.settings, store=self.store, blobs=self.blobs, enqueue=self.enqueue_embed,
                          event_log=self.event_log, head=head_s3_object)
