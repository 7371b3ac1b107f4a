"""Settings from the environment (prefix ``IMAGESEARCH_``), one line each.

Every process (API, embed worker, caption worker, CLI) reads the same class, so a setting means
the same thing everywhere. ``.env.example`` documents the values the offline Procfile stack uses.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from imagesearch.redis_state import Keyspace


class Settings(BaseSettings):
    # An empty variable means unset (compose renders `${VAR:-}` as ""; a Path would parse it as ".").
    model_config = SettingsConfigDict(env_prefix="IMAGESEARCH_", env_file=".env", extra="ignore",
                                      env_ignore_empty=True)

    # Where the embedded store and the local blob folder live.
    data_dir: Path = Path("./data")
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Namespace of all Redis state (queue names and service keys), so several deployments (or test
    # runs) can share one Redis.
    redis_namespace: str = ""
    # Deprecated alias of REDIS_NAMESPACE (it always named more than the queues); read for one release.
    queue_prefix: str | None = None

    store: Literal["embedded", "opensearch"] = "embedded"
    # How long the embedded store waits for another process's write lock before giving up
    # (a transient error: the task is retried).
    store_busy_timeout_seconds: float = Field(default=30.0, gt=0)
    opensearch_url: str = "http://127.0.0.1:9200"
    opensearch_username: str | None = None
    opensearch_password: str | None = None
    # Sign requests with SigV4 (Amazon OpenSearch Service); credentials come from boto3's chain.
    opensearch_aws_region: str | None = None
    opensearch_aws_service: Literal["es", "aoss"] = "es"
    opensearch_index_prefix: str = "imagesearch"
    opensearch_engine: Literal["faiss", "lucene"] = "faiss"
    opensearch_verify_certs: bool = True
    opensearch_dim: int | None = None
    blob_backend: Literal["local", "s3"] = "local"
    s3_bucket: str = ""
    s3_prefix: str = "imagesearch/"
    s3_endpoint_url: str | None = None

    # Models. A *_dir setting wins over the hub name; with neither reachable, loading fails with
    # a message naming the missing files.
    clip_model: str = "ViT-B-32"
    clip_pretrained: str = "openai"
    clip_model_dir: Path | None = None
    captioner_model: str = "nlpconnect/vit-gpt2-image-captioning"
    captioner_dir: Path | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    caption_max_length: int = Field(default=24, ge=4, le=128)
    caption_num_beams: int = Field(default=1, ge=1, le=8)

    # Ingestion limits: refuse what cannot be a reasonable image before it costs memory.
    max_upload_bytes: int = 25 * 1024 * 1024
    max_image_pixels: int = 64_000_000
    # Decode at least this many pixels on the short side (JPEG DCT scaling); CLIP needs 224.
    decode_min_side: int = 256
    thumbnail_size: int = 256

    # Model precision: auto = fp16 on GPU, fp32 on CPU; bf16 holds bf16 weights (2x faster than fp32
    # on CPUs with AVX512-BF16/AMX, vectors within cosine 0.9999 of fp32).
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # On CPU in fp32, hold the CLIP text layers' weights pre-packed for oneDNN: query encoding ~1.8x
    # faster, vectors equal to 1e-6 (checked at load; the stock layers stay if they differ).
    clip_prepack_text: bool = True

    # Workers. A task takes up to *_flush_every messages (or what arrived within the flush
    # interval) and runs the model on *_batch_size images at a time.
    embed_batch_size: int = Field(default=16, ge=1, le=1024)
    embed_flush_every: int = Field(default=64, ge=1, le=4096)
    decode_threads: int = Field(default=2, ge=1, le=64)
    caption_batch_size: int = Field(default=8, ge=1, le=1024)
    batch_flush_seconds: float = Field(default=0.5, gt=0)
    max_retries: int = Field(default=5, ge=0)
    # A message whose processing killed the worker this many times becomes a dead letter.
    max_deliveries: int = Field(default=3, ge=1)
    # A record still `queued` this long while the embed queue is empty lost its message (a broker
    # that dies mid-delivery can drop one); embed workers send it again. 0: never.
    requeue_stale_after_seconds: int = Field(default=900, ge=0)
    # The longest a batch may take; with the retry backoff it bounds the visibility timeout.
    max_batch_seconds: int = Field(default=600, ge=1)
    retry_backoff_seconds: float = Field(default=2.0, gt=0)
    retry_backoff_max_seconds: float = Field(default=300.0, gt=0)
    # Redis redelivers an unacknowledged task after this many seconds; it must exceed the
    # longest batch plus its retry backoff or a slow batch would run twice.
    visibility_timeout_seconds: int = Field(default=3600, ge=1)

    # API access. auto: API keys are required unless the API is bound to a loopback address
    # (bind_host, set by `imagesearch serve`); open: no keys (one tenant, "default"); keys: always.
    auth: Literal["auto", "open", "keys"] = "auto"
    # The address the API is bound to (`imagesearch serve` sets it); unset counts as non-loopback.
    bind_host: str | None = None
    # Requests per minute per API key, shared across processes (open mode has no keys and no limit).
    rate_limit_per_minute: int = Field(default=1200, ge=1)

    # Search.
    rrf_k: int = Field(default=60, ge=1)

    # S3 events (issue 4)
    # The SQS queue the listener polls (S3 notifications sent directly, through SNS, or EventBridge).
    sqs_queue_url: str = ""
    sqs_batch_size: int = Field(default=10, ge=1, le=10)
    sqs_wait_seconds: int = Field(default=20, ge=0, le=20)  # long polling
    # A received message stays invisible this long and is extended while its work runs.
    sqs_visibility_timeout_seconds: int = Field(default=60, ge=10, le=43200)
    # SNS topics whose messages POST /v1/events/sns accepts (comma-separated ARNs); empty: none.
    sns_topic_allowlist: str = ""
    # Shared secret for POST /v1/events/s3 (MinIO / Lambda webhooks); unset: that endpoint is off.
    s3_webhook_token: str | None = None
    # Buckets events may name (comma-separated); empty: any bucket the credentials can read.
    s3_bucket_allowlist: str = ""
    # Collection for S3 objects; per bucket or notification configuration id as JSON {"name": "coll"}.
    s3_collection: str = "default"
    s3_collection_map: dict[str, str] = {}
    # Comma-separated; a key with another extension is recorded as failed without being fetched,
    # a key without one is fetched and the decoder decides.
    s3_image_extensions: str = ".jpg,.jpeg,.jpe,.png,.webp,.gif,.bmp,.tif,.tiff,.mpo"
    # How long the last sequencer per object is kept: longer than any event can stay in flight
    # (SQS keeps messages at most 14 days).
    s3_event_log_ttl_seconds: int = Field(default=15 * 24 * 3600, ge=60)
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def store_path(self) -> Path:
        return self.data_dir / "store.sqlite3"

    @property
    def keys(self) -> Keyspace:
        """Every Redis key and queue name, under ``redis_namespace``."""
        return Keyspace(self.redis_namespace)

    @model_validator(mode="after")
    def _adopt_deprecated_queue_prefix(self) -> "Settings":
        if self.queue_prefix is not None:
            warnings.warn("IMAGESEARCH_QUEUE_PREFIX is deprecated: set IMAGESEARCH_REDIS_NAMESPACE",
                          DeprecationWarning, stacklevel=2)
            if not self.redis_namespace:
                self.redis_namespace = self.queue_prefix
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
