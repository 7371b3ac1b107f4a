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

    data_dir: Path = Field(default=Path("./data"),
                           description="Where the embedded store and the local blob folder live.")
    redis_url: str = Field(default="redis://127.0.0.1:6379/0",
                           description="Redis URL of the Celery broker (also read for the queue-depth metric).")
    redis_namespace: str = Field(
        default="",
        description="Namespace of all Redis state (queue names and service keys), so several deployments (or "
                    "test runs) can share one Redis.")
    queue_prefix: str | None = Field(
        default=None,
        description="Deprecated alias of REDIS_NAMESPACE (it always named more than the queues); read for one "
                    "release.")

    store: Literal["embedded", "opensearch"] = Field(
        default="embedded",
        description="Record and vector store: `embedded` (SQLite + NumPy, one machine) or `opensearch`.")
    store_busy_timeout_seconds: float = Field(
        default=30.0, gt=0,
        description="How long the embedded store waits for another process's write lock before giving up "
                    "(a transient error: the task is retried).")
    opensearch_url: str = Field(default="http://127.0.0.1:9200",
                                description="OpenSearch endpoint (`STORE=opensearch`).")
    opensearch_username: str | None = Field(default=None, description="OpenSearch basic-auth user.")
    opensearch_password: str | None = Field(default=None, description="OpenSearch basic-auth password.")
    opensearch_aws_region: str | None = Field(
        default=None,
        description="Sign requests with SigV4 (Amazon OpenSearch Service); credentials come from boto3's chain.")
    opensearch_aws_service: Literal["es", "aoss"] = Field(
        default="es",
        description="SigV4 service name: `es` (OpenSearch Service domains) or `aoss` (Serverless).")
    opensearch_index_prefix: str = Field(default="imagesearch",
                                         description="Prefix of the OpenSearch index and alias names.")
    opensearch_engine: Literal["faiss", "lucene"] = Field(
        default="faiss", description="k-NN engine of the HNSW `knn_vector` fields.")
    opensearch_verify_certs: bool = Field(default=True, description="Verify the OpenSearch server's TLS certificate.")
    opensearch_dim: int | None = Field(
        default=None,
        description="Vector dimension for a new index; unset: taken from the first vector written.")
    blob_backend: Literal["local", "s3"] = Field(
        default="local",
        description="Where originals and thumbnails are kept: `local` (under `DATA_DIR/blobs`) or `s3`.")
    s3_bucket: str = Field(default="", description="Bucket for originals and thumbnails (`BLOB_BACKEND=s3`).")
    s3_prefix: str = Field(default="imagesearch/", description="Key prefix inside `S3_BUCKET`.")
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint of an S3-compatible store (MinIO, R2, moto) for every S3 call: blob storage and s3:// "
                    "originals alike (imagesearch/s3/client.py). Unset: boto3's own chain decides "
                    "(AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL), else AWS.")

    # Models. A *_dir setting wins over the hub name; with neither reachable, loading fails naming the missing files.
    clip_model: str = Field(
        default="ViT-B-32",
        description="open_clip architecture name, loaded from the hub when `CLIP_MODEL_DIR` is unset.")
    clip_pretrained: str = Field(default="openai", description="open_clip pretrained weights tag for `CLIP_MODEL`.")
    clip_model_dir: Path | None = Field(
        default=None,
        description="Folder with a CLIP model in open_clip's `local-dir:` format; wins over the hub name.")
    captioner_model: str = Field(
        default="nlpconnect/vit-gpt2-image-captioning",
        description="Hugging Face id of the captioning model, used when `CAPTIONER_DIR` is unset.")
    captioner_dir: Path | None = Field(
        default=None,
        description="Folder with a transformers `save_pretrained` captioner; wins over the hub id.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where models run: `auto` (CUDA when present), `cpu` or `cuda`.")
    caption_max_length: int = Field(default=24, ge=4, le=128, description="Longest generated caption, in tokens.")
    caption_num_beams: int = Field(default=1, ge=1, le=8,
                                   description="Beam search width of the captioner (1: greedy).")

    # Ingestion limits: refuse what cannot be a reasonable image before it costs memory.
    max_upload_bytes: int = Field(default=25 * 1024 * 1024,
                                  description="Largest upload accepted, in bytes (413 past it).")
    max_image_pixels: int = Field(
        default=64_000_000,
        description="Largest image accepted, in pixels (width x height); larger ones are refused unread.")
    # JPEG DCT scaling; CLIP needs 224, so 256 leaves headroom.
    decode_min_side: int = Field(
        default=256,
        description="Images are decoded at reduced size, keeping the shorter side at least this many pixels.")
    thumbnail_size: int = Field(default=256, description="Longest side of stored thumbnails, in pixels.")

    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto",
        description="Model precision: auto = fp16 on GPU, fp32 on CPU; bf16 holds bf16 weights (2x faster than "
                    "fp32 on CPUs with AVX512-BF16/AMX, vectors within cosine 0.9999 of fp32).")
    clip_prepack_text: bool = Field(
        default=True,
        description="On CPU in fp32, hold the CLIP text layers' weights pre-packed for oneDNN: query encoding "
                    "~1.8x faster, vectors equal to 1e-6 (checked at load; the stock layers stay if they differ).")

    # Workers.
    embed_batch_size: int = Field(default=16, ge=1, le=1024,
                                  description="Images per CLIP forward pass in the embed worker.")
    embed_flush_every: int = Field(
        default=64, ge=1, le=4096,
        description="Messages an embed task takes at most (or what arrived within `BATCH_FLUSH_SECONDS`).")
    decode_threads: int = Field(default=2, ge=1, le=64,
                                description="Threads per worker process fetching and decoding images.")
    caption_batch_size: int = Field(default=8, ge=1, le=1024,
                                    description="Images per captioner batch (and messages per caption task).")
    batch_flush_seconds: float = Field(
        default=0.5, gt=0, description="A worker runs a partial batch after waiting this long for more messages.")
    max_retries: int = Field(
        default=5, ge=0,
        description="Retries of a transient failure (store or blob storage unreachable) before the image is failed.")
    max_deliveries: int = Field(
        default=3, ge=1,
        description="A message whose processing killed the worker this many times becomes a dead letter.")
    requeue_stale_after_seconds: int = Field(
        default=900, ge=0,
        description="A record still `queued` this long while the embed queue is empty lost its message (a broker "
                    "that dies mid-delivery can drop one); embed workers send it again. 0: never.")
    max_batch_seconds: int = Field(
        default=600, ge=1,
        description="The longest a batch may take; with the retry backoff it bounds the visibility timeout.")
    retry_backoff_seconds: float = Field(default=2.0, gt=0,
                                         description="First retry delay; doubles per attempt, with full jitter.")
    retry_backoff_max_seconds: float = Field(default=300.0, gt=0, description="Longest retry delay.")
    visibility_timeout_seconds: int = Field(
        default=3600, ge=1,
        description="Redis redelivers an unacknowledged task after this many seconds; it must exceed the longest "
                    "batch plus its retry backoff or a slow batch would run twice.")

    auth: Literal["auto", "open", "keys"] = Field(
        default="auto",
        description="API access. auto: API keys are required unless the API is bound to a loopback address "
                    "(bind_host, set by `imagesearch serve`); open: no keys (one tenant, \"default\"); keys: always.")
    bind_host: str | None = Field(
        default=None,
        description="The address the API is bound to (`imagesearch serve` sets it); unset counts as non-loopback.")
    rate_limit_per_minute: int = Field(
        default=1200, ge=1,
        description="Requests per minute per API key, shared across processes (open mode has no keys and no "
                    "limit).")

    # Search.
    rrf_k: int = Field(
        default=60, ge=1,
        description="Constant `k` of reciprocal rank fusion in hybrid mode (higher: flatter fusion).")

    # S3 events (issue 4)
    sqs_queue_url: str = Field(
        default="",
        description="The SQS queue the listener polls (S3 notifications sent directly, through SNS, or "
                    "EventBridge).")
    sqs_batch_size: int = Field(default=10, ge=1, le=10, description="Messages per SQS receive call.")
    sqs_wait_seconds: int = Field(default=20, ge=0, le=20, description="SQS long-polling wait per receive call.")
    sqs_visibility_timeout_seconds: int = Field(
        default=60, ge=10, le=43200,
        description="A received message stays invisible this long and is extended while its work runs.")
    sns_topic_allowlist: str = Field(
        default="",
        description="SNS topics whose messages POST /v1/events/sns accepts (comma-separated ARNs); empty: none.")
    s3_webhook_token: str | None = Field(
        default=None,
        description="Shared secret for POST /v1/events/s3 (MinIO / Lambda webhooks); unset: that endpoint is off.")
    s3_bucket_allowlist: str = Field(
        default="",
        description="Buckets events may name (comma-separated); empty: any bucket the credentials can read.")
    s3_collection: str = Field(
        default="default",
        description="Collection for S3 objects whose bucket and notification id `S3_COLLECTION_MAP` does not name.")
    s3_collection_map: dict[str, str] = Field(
        default={},
        description="Collection per bucket or notification configuration id, as JSON `{\"name\": \"collection\"}`.")
    s3_image_extensions: str = Field(
        default=".jpg,.jpeg,.jpe,.png,.webp,.gif,.bmp,.tif,.tiff,.mpo",
        description="Extensions of the S3 keys to ingest, comma-separated; a key with another extension is recorded "
                    "as failed without being fetched, a key without one is fetched and the decoder decides.")
    s3_event_log_ttl_seconds: int = Field(
        default=15 * 24 * 3600, ge=60,
        description="How long the last sequencer per object is kept: longer than any event can stay in flight "
                    "(SQS keeps messages at most 14 days).")
    s3_addressing_style: Literal["auto", "path", "virtual"] = Field(
        default="auto",
        description="S3 addressing style (botocore) when reading `s3://` originals: `auto`, `path` or `virtual`.")

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
    def _adopt_deprecated_queue_prefix(self) -> Settings:
        if self.queue_prefix is not None:
            warnings.warn("IMAGESEARCH_QUEUE_PREFIX is deprecated: set IMAGESEARCH_REDIS_NAMESPACE",
                          DeprecationWarning, stacklevel=2)
            if not self.redis_namespace:
                self.redis_namespace = self.queue_prefix
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
