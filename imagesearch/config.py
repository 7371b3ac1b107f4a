"""Settings from the environment (prefix ``IMAGESEARCH_``), grouped by concern.

Every process (API, embed worker, caption worker, CLI) reads the same classes, so a setting means
the same thing everywhere. Each group is its own pydantic-settings class reading its own variables
(``settings.s3.bucket`` is ``IMAGESEARCH_S3_BUCKET``), so the variable names stay flat and every
description lives in its ``Field``; ``scripts/settings_table.py`` renders the README table from them.
``.env.example`` documents the values the offline Procfile stack uses. (Over 350 lines: it is the
settings reference, one described field after another; split, it would be harder to read.)
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings.sources import ENV_FILE_SENTINEL

from imagesearch.attributes import AttributeSchema
from imagesearch.fusion import FusionConfig
from imagesearch.redis_state import Keyspace
from imagesearch.vocab import FusionMethod, RankedList, Stage

# An empty variable means unset (compose renders `${VAR:-}` as ""; a Path would parse it as ".").
_COMMON = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True, populate_by_name=True)


class RedisSettings(BaseSettings):
    """Redis: the Celery broker and all service state."""

    model_config = SettingsConfigDict(**_COMMON, env_prefix="IMAGESEARCH_REDIS_")

    url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis URL of the Celery broker (also read for the queue-depth metric).",
    )
    namespace: str = Field(
        default="",
        description="Namespace of all Redis state (queue names and service keys), so several deployments (or "
        "test runs) can share one Redis.",
    )
    queue_prefix: str | None = Field(
        validation_alias="IMAGESEARCH_QUEUE_PREFIX",
        default=None,
        description="Deprecated alias of REDIS_NAMESPACE (it always named more than the queues); read for one release.",
    )

    @model_validator(mode="after")
    def _adopt_deprecated_queue_prefix(self) -> RedisSettings:
        if self.queue_prefix is not None:
            # FutureWarning, not DeprecationWarning: Python shows it by default, so operators see it.
            warnings.warn("IMAGESEARCH_QUEUE_PREFIX is deprecated: set IMAGESEARCH_REDIS_NAMESPACE", FutureWarning,
                          stacklevel=2)
            if not self.namespace:
                self.namespace = self.queue_prefix
        return self


class StoreSettings(BaseSettings):
    """The record and vector store."""

    model_config = SettingsConfigDict(**_COMMON, env_prefix="IMAGESEARCH_STORE_")

    backend: Literal["embedded", "opensearch"] = Field(
        validation_alias="IMAGESEARCH_STORE",
        default="embedded",
        description="Record and vector store: `embedded` (SQLite + NumPy, one machine) or `opensearch`.",
    )
    busy_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long the embedded store waits for another process's write lock before giving up "
        "(a transient error: the task is retried).",
    )


class OpenSearchSettings(BaseSettings):
    """The OpenSearch store (`STORE=opensearch`)."""

    model_config = SettingsConfigDict(**_COMMON, env_prefix="IMAGESEARCH_OPENSEARCH_")

    url: str = Field(default="http://127.0.0.1:9200", description="OpenSearch endpoint (`STORE=opensearch`).")
    username: str | None = Field(default=None, description="OpenSearch basic-auth user.")
    password: str | None = Field(default=None, description="OpenSearch basic-auth password.")
    aws_region: str | None = Field(
        default=None,
        description="Sign requests with SigV4 (Amazon OpenSearch Service); credentials come from boto3's chain.",
    )
    aws_service: Literal["es", "aoss"] = Field(
        default="es", description="SigV4 service name: `es` (OpenSearch Service domains) or `aoss` (Serverless)."
    )
    index_prefix: str = Field(default="imagesearch", description="Prefix of the OpenSearch index and alias names.")
    engine: Literal["faiss", "lucene"] = Field(
        default="faiss", description="k-NN engine of the HNSW `knn_vector` fields."
    )
    verify_certs: bool = Field(default=True, description="Verify the OpenSearch server's TLS certificate.")
    dim: int | None = Field(
        default=None, gt=0,
        description="Vector dimension for a new index; unset: taken from the first vector written.",
    )
    vector_encoding: Literal["fp32", "sq_fp16", "on_disk"] = Field(
        default="fp32",
        description="How new indices hold the two vector fields (docs/opensearch-sizing.md): `fp32` (exact; "
        "about 2.4 KB of native memory per 512-d vector), `sq_fp16` (Faiss 16-bit scalar quantization, OpenSearch "
        ">= 2.13, faiss only: half the memory, the values of unit-length CLIP vectors are far inside fp16's range) "
        "or `on_disk` (OpenSearch >= 2.17: quantized in memory by `COMPRESSION_LEVEL`, searches rescored from the "
        "full vectors on disk). Default `fp32`: it runs on every version and engine the store supports and loses "
        "nothing; choose another past a few million images. Applies to indices created from then on (`imagesearch "
        "reindex` builds one).",
    )
    compression_level: Literal["2x", "4x", "8x", "16x", "32x"] = Field(
        default="32x",
        description="Memory compression of `VECTOR_ENCODING=on_disk`: `32x`, `16x`, `8x` (1-, 2-, 4-bit binary "
        "quantization) and `2x` (fp16) need faiss; `4x` (int8) needs lucene. Default `32x`, OpenSearch's own default "
        "for `on_disk`. Setting it with another encoding is an error.",
    )
    shards: int | None = Field(
        default=None, gt=0,
        description="`number_of_shards` of each index the store creates (fixed at creation: a reindex applies a "
        "change); aim at 10-50 GB per shard (docs/opensearch-sizing.md). Unset: the cluster's default.",
    )
    replicas: int = Field(
        default=1, ge=0,
        description="`number_of_replicas` of the live index (each replica holds another copy of every vector in "
        "native memory). A reindex builds its new index with 0 and sets this before the alias swap.",
    )
    refresh_interval: str = Field(
        default="1s", pattern=r"^[0-9]+(\.[0-9]+)?(ms|s|m|h|d)$",
        description="`refresh_interval` of the live index: how soon writes become searchable. A reindex builds its "
        "new index with refresh off (`-1`) and sets this before the alias swap.",
    )

    # Which engine each `on_disk` compression level runs on (OpenSearch's "Memory-optimized vectors"
    # page: 4x is Lucene's int8 quantizer, the others Faiss encoders); mapping.py applies the same table.
    COMPRESSION_ENGINES: ClassVar[dict[str, str]] = {
        "2x": "faiss", "4x": "lucene", "8x": "faiss", "16x": "faiss", "32x": "faiss"}

    @model_validator(mode="after")
    def _encoding_fits_engine(self) -> OpenSearchSettings:
        # At start-up rather than at the first index creation, which may be days later in a reindex.
        prefix = "IMAGESEARCH_OPENSEARCH_"
        if self.vector_encoding == "sq_fp16" and self.engine != "faiss":
            raise ValueError(f"{prefix}VECTOR_ENCODING=sq_fp16 is Faiss's scalar quantizer and needs {prefix}ENGINE="
                             f"faiss (it is {self.engine}); with lucene use fp32, or on_disk with "
                             f"{prefix}COMPRESSION_LEVEL=4x")
        if self.vector_encoding == "on_disk":
            needed = self.COMPRESSION_ENGINES[self.compression_level]
            if needed != self.engine:
                levels = [k for k, v in self.COMPRESSION_ENGINES.items() if v == self.engine]
                raise ValueError(f"{prefix}COMPRESSION_LEVEL={self.compression_level} of VECTOR_ENCODING=on_disk "
                                 f"runs on {needed}, not on {prefix}ENGINE={self.engine}, which supports "
                                 f"{', '.join(levels)}")
        elif "compression_level" in self.model_fields_set:
            raise ValueError(f"{prefix}COMPRESSION_LEVEL applies to VECTOR_ENCODING=on_disk only (it is "
                             f"{self.vector_encoding}): unset it, or choose on_disk")
        return self


class BlobSettings(BaseSettings):
    """Where originals and thumbnails are kept."""

    model_config = SettingsConfigDict(**_COMMON, env_prefix="IMAGESEARCH_BLOB_")

    backend: Literal["local", "s3"] = Field(
        default="local",
        description="Where originals and thumbnails are kept: `local` (under `DATA_DIR/blobs`) or `s3`.",
    )


class S3Settings(BaseSettings):
    """S3: blob storage, `s3://` originals, and S3 events."""

    # Here an empty variable is a value: S3_PREFIX= keeps blobs at the bucket root and
    # S3_IMAGE_EXTENSIONS= turns the extension filter off. The optional fields read "" as unset.
    model_config = SettingsConfigDict(**{**_COMMON, "env_ignore_empty": False}, env_prefix="IMAGESEARCH_S3_")

    bucket: str = Field(default="", description="Bucket for originals and thumbnails (`BLOB_BACKEND=s3`).")
    prefix: str = Field(default="imagesearch/", description="Key prefix inside `S3_BUCKET` (empty: the bucket root).")
    endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint of the blob storage bucket (MinIO, R2, moto); unset: AWS. Originals in other buckets "
        "(`s3://` sources, backfill, reconcile) use boto3's own chain (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`).",
    )
    webhook_token: str | None = Field(
        default=None,
        description="Shared secret for POST /v1/events/s3 (MinIO / Lambda webhooks); unset: that endpoint is off.",
    )
    bucket_allowlist: str = Field(
        default="", description="Buckets events may name (comma-separated); empty: any bucket the credentials can read."
    )
    collection: str = Field(
        default="default",
        description="Collection for S3 objects whose bucket and notification id `S3_COLLECTION_MAP` does not name.",
    )
    collection_map: dict[str, str] = Field(
        default={},
        description='Collection per bucket or notification configuration id, as JSON `{"name": "collection"}`.',
    )
    image_extensions: str = Field(
        default=".jpg,.jpeg,.jpe,.png,.webp,.gif,.bmp,.tif,.tiff,.mpo",
        description="Extensions of the S3 keys to ingest, comma-separated (empty: any); a key with another "
        "extension is recorded as failed without being fetched, a key without one is fetched and the decoder decides.",
    )
    event_log_ttl_seconds: int = Field(
        default=15 * 24 * 3600,
        ge=60,
        description="How long the last sequencer per object is kept: longer than any event can stay in flight "
        "(SQS keeps messages at most 14 days).",
    )
    metadata_map: dict[str, str] = Field(
        default={},
        description='S3 object metadata (`x-amz-meta-*`, without the prefix) to record fields, as JSON '
        '`{"product-title": "title"}`; a key named `title`, `description`, `tags` or a declared attribute is taken '
        "as is.",
    )
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        default="auto",
        description="S3 addressing style (botocore) when reading `s3://` originals: `auto`, `path` or `virtual`.",
    )

    @field_validator("endpoint_url", "webhook_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value



class ModelSettings(BaseSettings):
    """The CLIP model and the captioner.

    A *_dir setting wins over the hub name; with neither reachable, loading fails naming the missing files.
    """

    model_config = SettingsConfigDict(**_COMMON, env_prefix="IMAGESEARCH_")

    clip_model: str = Field(
        default="ViT-B-32",
        description="The CLIP model, from one of three sources: an open_clip registry name (`ViT-B-32`, with "
        "`CLIP_PRETRAINED`), `hf-hub:org/name` (an open_clip repo on the Hugging Face hub) or "
        "`transformers:org/name` (CLIP, Chinese-CLIP, SigLIP, SigLIP 2). `imagesearch models list` shows the "
        "catalogue. Unused when `CLIP_MODEL_DIR` is set.",
    )
    clip_pretrained: str = Field(
        default="laion2b_s34b_b79k",
        description="open_clip pretrained tag for a registry `CLIP_MODEL`. The default is LAION-2B's ViT-B-32: "
        "the same size and speed as `openai`, and 68.8 % against 59.4 % average recall in Immich's English "
        "table (docs/models.md). The activation (GELU or QuickGELU) follows the tag.",
    )
    clip_language: str | None = Field(
        default=None,
        description="Language code put before every text by tokenizers that need one (NLLB-based towers: "
        "`eng_Latn`, `zho_Hans`); a model whose tokenizer has no languages refuses it at load.",
    )
    clip_model_dir: Path | None = Field(
        default=None,
        description="Folder with a CLIP model, as `imagesearch models download` writes it: open_clip's "
        "`local-dir:` format (`open_clip_config.json`) or a transformers `save_pretrained` folder "
        "(`config.json`); wins over `CLIP_MODEL`.",
    )
    clip_prepack_text: bool = Field(
        default=True,
        description="On CPU in fp32, hold the CLIP text layers' weights pre-packed for oneDNN: query encoding "
        "~1.8x faster, vectors equal to 1e-4 (checked at load; the stock layers stay if they differ).",
    )
    captioner_model: str = Field(
        default="nlpconnect/vit-gpt2-image-captioning",
        description="Hugging Face id of the captioning model: a VisionEncoderDecoder (vit-gpt2), BLIP, or any model "
        "`AutoModelForImageTextToText` loads. Unused when `CAPTIONER_DIR` is set.",
    )
    captioner_dir: Path | None = Field(
        default=None, description="Folder with a transformers `save_pretrained` captioner; wins over the hub id."
    )
    caption_max_length: int = Field(default=24, ge=4, le=128, description="Longest generated caption, in tokens.")
    caption_num_beams: int = Field(default=1, ge=1, le=8, description="Beam search width of the captioner (1: greedy).")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where models run: `auto` (CUDA when present), `cpu` or `cuda`."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto",
        description="Model precision: auto = fp16 on GPU, fp32 on CPU; bf16 holds bf16 weights (2x faster than "
        "fp32 on CPUs with AVX512-BF16/AMX, vectors within cosine 0.9999 of fp32).",
    )


class IngestSettings(BaseSettings):
    """Ingestion limits: refuse what cannot be a reasonable image before it costs memory."""

    model_config = SettingsConfigDict(**_COMMON, env_prefix="IMAGESEARCH_")

    max_upload_bytes: int = Field(
        default=25 * 1024 * 1024, description="Largest upload accepted, in bytes (413 past it)."
    )
    max_image_pixels: int = Field(
        default=64_000_000,
        description="Largest image accepted, in pixels (width x height); larger ones are refused unread.",
    )
    decode_min_side: int = Field(
        default=256,
        description="Images are decoded at reduced size, keeping the shorter side at least this many pixels.",
    )
    thumbnail_size: int = Field(default=256, description="Longest side of stored thumbnails, in pixels.")
    attributes: str = Field(
        default="",
        description="Typed record attributes, `name:type` comma-separated, types keyword, number, boolean, date "
        "(e.g. `brand:keyword,price:number,in_stock:boolean`); filterable in search and listing.")

    @field_validator("attributes")
    @classmethod
    def _attributes_parse(cls, value: str) -> str:
        _attribute_schema(value)  # a typo fails at start-up, not on the first upload
        return value

    def attribute_schema(self) -> AttributeSchema:
        """The declared attributes (every upload, listing and filtered search asks for them)."""
        return _attribute_schema(self.attributes)


# Keyed on the declaration itself, not cached on the settings object: a settings copy with other
# attributes (``model_copy(update=...)``) or an assigned ``attributes`` can never see a stale schema.
# The schema is shared by every caller, which only read it.
@lru_cache(maxsize=16)
def _attribute_schema(spec: str) -> AttributeSchema:
    return AttributeSchema.parse(spec)


class WorkerSettings(BaseSettings):
    """The embed and caption workers: batching, retries, redelivery."""

    model_config = SettingsConfigDict(**_COMMON, env_prefix="IMAGESEARCH_")

    embed_batch_size: int = Field(
        default=16, ge=1, le=1024, description="Images per CLIP forward pass in the embed worker."
    )
    embed_flush_every: int = Field(
        default=64,
        ge=1,
        le=4096,
        description="Messages an embed task takes at most (or what arrived within `BATCH_FLUSH_SECONDS`).",
    )
    decode_threads: int = Field(
        default=2, ge=1, le=64, description="Threads per worker process fetching and decoding images."
    )
    tensor_decode: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="The embed stage's tensor path: JPEGs decoded in batches on the model's device (nvJPEG on "
        "CUDA), resized, normalised and thumbnailed there; other formats and any image it fails on take the "
        "Pillow path. `auto`: on when CLIP runs on CUDA; `on` also on CPU (full-size decodes: slower than "
        "Pillow's reduced-size ones, for tests); `off`: Pillow only.",
    )
    gpu_batch_size: int = Field(
        default=256, ge=1, le=4096,
        description="Images per CLIP forward pass when CLIP runs on CUDA (`EMBED_BATCH_SIZE` on CPU). A task "
        "holds at most `EMBED_FLUSH_EVERY` images: raise that to a few times this on GPU workers.",
    )
    caption_batch_size: int = Field(
        default=8, ge=1, le=1024, description="Images per captioner batch (and messages per caption task)."
    )
    caption_gpu_batch_size: int = Field(
        default=256, ge=1, le=4096,
        description="Images per captioner generate call when the captioner runs on CUDA: a caption task "
        "(`CAPTION_BATCH_SIZE` messages: raise it on GPU workers) is captioned in calls of this many, the next "
        "call's thumbnails loading while one generates.",
    )
    batch_flush_seconds: float = Field(
        default=0.5, gt=0, description="A worker with a free process runs a partial batch after waiting this long "
        "for more messages (while every process is busy, the batch keeps filling).",
    )
    max_retries: int = Field(
        default=5,
        ge=0,
        description="Retries of a transient failure (store or blob storage unreachable) before the image is failed.",
    )
    max_deliveries: int = Field(
        default=3,
        ge=1,
        description="A message whose processing killed the worker this many times becomes a dead letter.",
    )
    requeue_stale_after_seconds: int = Field(
        default=900,
        ge=0,
        description="A record still `queued` this long while the embed queue is empty lost its message (a broker "
        "that dies mid-delivery can drop one); embed workers send it again. 0: never.",
    )
    max_batch_seconds: int = Field(
        default=600,
        ge=1,
        description="The longest a batch may take; with the retry backoff it bounds the visibility timeout.",
    )
    retry_backoff_seconds: float = Field(
        default=2.0, gt=0, description="First retry delay; doubles per attempt, with equal jitter."
    )
    retry_backoff_max_seconds: float = Field(default=300.0, gt=0, description="Longest retry delay.")
    visibility_timeout_seconds: int = Field(
        default=3600,
        ge=1,
        description="Redis redelivers an unacknowledged task after this many seconds; it must exceed the longest "
        "batch plus its retry backoff or a slow batch would run twice.",
    )

    def batch_messages(self, stage: Stage) -> int:
        """Messages one task of ``stage`` takes at most."""
        return self.embed_flush_every if stage == Stage.EMBED else self.caption_batch_size

    def prefetch_multiplier(self, stages: Iterable[Stage]) -> int:
        """Celery's prefetch for a worker consuming ``stages``: a batch's messages stay unacknowledged
        until it returns (late acks), so room for one running batch per process and one more filling
        is twice the largest batch. Sized per worker: a caption worker sized by the embed batch would
        hoard 16 caption batches per process, and a message queued behind them would outwait the
        redelivery timing."""
        return 2 * max(self.batch_messages(stage) for stage in stages)


class ApiSettings(BaseSettings):
    """API access and limits."""

    model_config = SettingsConfigDict(**_COMMON, env_prefix="IMAGESEARCH_")

    auth: Literal["auto", "open", "keys"] = Field(
        default="auto",
        description="API access. auto: API keys are required unless the API is bound to a loopback address "
        '(bind_host, set by `imagesearch serve`); open: no keys (one tenant, "default"); keys: always.',
    )
    bind_host: str | None = Field(
        default=None,
        description="The address the API is bound to (`imagesearch serve` sets it); unset counts as non-loopback.",
    )
    rate_limit_per_minute: int = Field(
        default=1200,
        ge=1,
        description="Requests per minute per API key, shared across processes (open mode has no keys and no limit).",
    )


class SearchSettings(BaseSettings):
    """Search."""

    model_config = SettingsConfigDict(**_COMMON, env_prefix="IMAGESEARCH_")

    rrf_k: int = Field(
        default=60, ge=1, description="Constant `k` of reciprocal rank fusion in hybrid mode (higher: flatter fusion)."
    )
    fusion_method: FusionMethod = Field(
        default=FusionMethod.LINEAR,
        description="Hybrid fusion without a tuned profile: `linear` (weighted sum of normalised scores) or `rrf` "
        "(weighted reciprocal rank fusion).")
    # The defaults: on the procedural eval a keyword weight costs a little R@1 (captions there repeat
    # the same few words), but titles and descriptions only reach hybrid through the keyword list,
    # and a catalogue's exact title match should count (README, "Tuning hybrid search").
    fusion_weight_image: float = Field(default=0.45, ge=0, le=1,
                                       description="Weight of the image kNN list in hybrid.")
    fusion_weight_caption: float = Field(default=0.45, ge=0, le=1,
                                         description="Weight of the caption kNN list in hybrid.")
    fusion_weight_keyword: float = Field(default=0.1, ge=0, le=1,
                                         description="Weight of the keyword (BM25 on captions, titles, descriptions) "
                                         "list in hybrid.")
    fusion_depth: int = Field(default=100, ge=1, le=1000,
                              description="How deep each list is searched before fusion (at least `k`).")
    duplicate_threshold: float = Field(
        default=0.95, ge=0, le=1,
        description="Image-to-image cosine at or above which `dedup` collapses hits and `/similar` calls them "
        "near-duplicates.")
    use_profiles: bool = Field(
        default=True, description="Apply the search profile `imagesearch eval --tune` saved for the current models "
        "(fusion and relevance calibration); false: the fusion settings above, no relevance.")
    profile_refresh_s: float = Field(default=1.0, ge=0, le=3600,
                                     description="How often each API process re-reads the search profile from Redis.")

    def fusion(self) -> FusionConfig:
        weights = {RankedList.IMAGE: self.fusion_weight_image, RankedList.CAPTION: self.fusion_weight_caption,
                   RankedList.KEYWORD: self.fusion_weight_keyword}
        return FusionConfig(self.fusion_method, weights, self.fusion_depth, self.rrf_k)


class EventSettings(BaseSettings):
    """S3 event intake: the SQS listener and the SNS endpoint."""

    model_config = SettingsConfigDict(**_COMMON, env_prefix="IMAGESEARCH_")

    sqs_queue_url: str = Field(
        default="",
        description="The SQS queue the listener polls (S3 notifications sent directly, through SNS, or EventBridge).",
    )
    sqs_batch_size: int = Field(default=10, ge=1, le=10, description="Messages per SQS receive call.")
    sqs_wait_seconds: int = Field(default=20, ge=0, le=20, description="SQS long-polling wait per receive call.")
    sqs_visibility_timeout_seconds: int = Field(
        default=60,
        ge=10,
        le=43200,
        description="A received message stays invisible this long and is extended while its work runs.",
    )
    sns_topic_allowlist: str = Field(
        default="",
        description="SNS topics whose messages POST /v1/events/sns accepts (comma-separated ARNs); empty: none.",
    )


class Settings(BaseSettings):
    """All settings: the data folder, and one group per concern."""

    model_config = SettingsConfigDict(**_COMMON, env_prefix="IMAGESEARCH_")
    GROUPS: ClassVar[dict[str, type[BaseSettings]]] = {
        "redis": RedisSettings,
        "storage": StoreSettings,
        "opensearch": OpenSearchSettings,
        "blobs": BlobSettings,
        "s3": S3Settings,
        "models": ModelSettings,
        "ingest": IngestSettings,
        "workers": WorkerSettings,
        "api": ApiSettings,
        "search": SearchSettings,
        "events": EventSettings,
    }

    data_dir: Path = Field(
        default=Path("./data"), description="Where the embedded store and the local blob folder live."
    )
    redis: RedisSettings
    storage: StoreSettings
    opensearch: OpenSearchSettings
    blobs: BlobSettings
    s3: S3Settings
    models: ModelSettings
    ingest: IngestSettings
    workers: WorkerSettings
    api: ApiSettings
    search: SearchSettings
    events: EventSettings

    def __init__(self, _env_file: Any = ENV_FILE_SENTINEL, **values: Any) -> None:
        # Each group reads its own variables, from the same .env file as the whole.
        for name, group in self.GROUPS.items():
            if name not in values:
                values[name] = group() if _env_file is ENV_FILE_SENTINEL else group(_env_file=_env_file)
        super().__init__(_env_file=_env_file, **values)

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def store_path(self) -> Path:
        return self.data_dir / "store.sqlite3"

    @property
    def keys(self) -> Keyspace:
        """Every Redis key and queue name, under ``redis.namespace``."""
        return Keyspace(self.redis.namespace)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
