"""Prometheus metrics shared by the API and the workers (prometheus-client, multiprocess mode).

Every process (each gunicorn worker, each Celery worker process) writes its samples to its own
memory-mapped file in one folder; ``/metrics`` in the API merges the files of all processes, so a
counter incremented by a Celery worker shows in the API's exposition. The folder is
``PROMETHEUS_MULTIPROC_DIR`` when set (recommended: a fresh, empty folder per deployment, e.g. on a
tmpfs, shared by the API and the workers of one machine), else ``<IMAGESEARCH_DATA_DIR>/metrics``,
created on first use. prometheus-client never deletes these files: counters therefore keep
counting across restarts while the folder is kept, which Prometheus handles like any counter.

Time to searchable: ``imagesearch_upload_to_indexed_seconds`` and
``imagesearch_upload_to_captioned_seconds`` are histograms of the seconds from a record's
``created_at`` (the API accepting the upload) to the return of the store write that made it
searchable in the image scheme, and in the caption scheme; the worker observes them for the ids a
batch wrote for the first time (``BatchOutcome.since_upload``). ``histogram_quantile(0.99,
rate(imagesearch_upload_to_indexed_seconds_bucket[5m]))`` is the p99 a dashboard shows; the buckets
include 1, 2 and 3 s so the issue's targets read as exact fractions. The spans are measured across
hosts (API clock to worker clock), so they are only as good as the hosts' clock sync.

The queue depth is not stored anywhere: it is read from Redis (``LLEN`` of the embed and caption
queues) each time ``/metrics`` is scraped.

Usage, from any process::

    from imagesearch import metrics
    metrics.image_accepted()
    metrics.observe_batch("embed", size=16, seconds=1.8, done=15, failed=1)
    metrics.observe_search("hybrid", seconds=0.012)
    metrics.observe_since_upload("embed", [0.4, 0.7])  # observe_outcome does it from since_upload
    body, content_type = metrics.exposition(settings)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from imagesearch.redis_state import Keyspace, queue_depths

if TYPE_CHECKING:  # pragma: no cover
    from imagesearch.config import Settings
    from imagesearch.pipeline import BatchOutcome  # the pipeline imports torch: only for the type

ENV = "PROMETHEUS_MULTIPROC_DIR"
# Marks a PROMETHEUS_MULTIPROC_DIR that this module derived from the data dir (rather than one an
# operator set): a child process started with a different IMAGESEARCH_DATA_DIR derives its own.
_DERIVED_ENV = "IMAGESEARCH_METRICS_DIR_DERIVED"

OUTCOMES = ("done", "failed", "retried", "skipped", "gave_up", "dead_letter")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
SEARCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# Upload to searchable: fine around the targets (indexed p50 1 s, p99 3 s; captioned p50 2 s), then
# coarse up to an hour for a backlog.
SEARCHABLE_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


@dataclass
class _Metrics:
    directory: Path
    accepted: object
    images: object
    stage_seconds: object
    batch_size: object
    search_seconds: object
    since_upload: dict[str, object]  # by stage: the upload->indexed and upload->captioned histograms


_lock = threading.Lock()
_state: _Metrics | None = None


def metrics_dir(settings: Settings | None = None) -> Path:
    """The multiprocess folder this process writes to (``configure`` must have run, or runs now)."""
    return configure(settings).directory


def _choose_dir(settings: Settings | None) -> Path:
    configured = os.environ.get(ENV) or os.environ.get(ENV.lower())
    if configured and os.environ.get(_DERIVED_ENV) != configured:
        return Path(configured)
    if settings is None:
        from imagesearch.config import get_settings

        settings = get_settings()
    return Path(settings.data_dir).resolve() / "metrics"


def configure(settings: Settings | None = None) -> _Metrics:
    """Choose the folder and create the metric objects, once per process (later calls return them).

    Must run before anything else in the process creates prometheus-client metrics; the API calls
    it from its app factory, the workers on their first observation.
    """
    global _state
    with _lock:
        if _state is not None:
            return _state
        directory = _choose_dir(settings)
        directory.mkdir(parents=True, exist_ok=True)
        if os.environ.get(ENV) != str(directory):
            # prometheus-client's per-process value files read the folder from the environment.
            os.environ[ENV] = str(directory)
            os.environ[_DERIVED_ENV] = str(directory)
        from prometheus_client import Counter, Histogram, values

        if not getattr(values.ValueClass, "_multiprocess", False):
            # prometheus-client was imported before the folder was known: switch it to files now.
            values.ValueClass = values.MultiProcessValue()
        # registry=None: the samples live in the files; exposition merges them (see exposition()).
        _state = _Metrics(
            directory=directory,
            accepted=Counter("imagesearch_images_accepted", "Images accepted for indexing by the API (uploads).",
                             registry=None),
            images=Counter("imagesearch_images", "Images through a worker stage, by outcome: done, failed "
                           "(for good), retried (one per retry), skipped (already done or deleted), gave_up (failed "
                           "after the last retry), dead_letter (killed the worker too often).",
                           ["stage", "outcome"], registry=None),
            stage_seconds=Histogram("imagesearch_stage_seconds", "Wall time of one worker batch, by stage.",
                                    ["stage"], buckets=LATENCY_BUCKETS, registry=None),
            batch_size=Histogram("imagesearch_batch_size", "Images per worker batch, by stage.", ["stage"],
                                 buckets=BATCH_BUCKETS, registry=None),
            search_seconds=Histogram("imagesearch_search_seconds", "Search latency in the API (query encoding, "
                                     "kNN and fusion), by mode.", ["mode"], buckets=SEARCH_BUCKETS, registry=None),
            since_upload={
                "embed": Histogram("imagesearch_upload_to_indexed_seconds", "Seconds from an upload being accepted "
                                   "(the record's created_at) to its vector being written: searchable in the image "
                                   "scheme. First indexing only.", buckets=SEARCHABLE_BUCKETS, registry=None),
                "caption": Histogram("imagesearch_upload_to_captioned_seconds", "Seconds from an upload being "
                                     "accepted (the record's created_at) to its caption being written: searchable "
                                     "in the caption scheme. First caption only.", buckets=SEARCHABLE_BUCKETS,
                                     registry=None),
            },
        )
        return _state


def _m() -> _Metrics:
    return _state or configure()


# --- observations ---------------------------------------------------------------------------

def image_accepted(count: int = 1) -> None:
    _m().accepted.inc(count)


def count_images(stage: str, outcome: str, count: int = 1) -> None:
    if count:
        _m().images.labels(stage=stage, outcome=outcome).inc(count)


def observe_batch(stage: str, *, size: int, seconds: float, done: int = 0, failed: int = 0, retried: int = 0,
                  skipped: int = 0) -> None:
    """One worker batch: its size, its wall time and what became of its images."""
    m = _m()
    m.batch_size.labels(stage=stage).observe(size)
    m.stage_seconds.labels(stage=stage).observe(seconds)
    for outcome, count in (("done", done), ("failed", failed), ("retried", retried), ("skipped", skipped)):
        count_images(stage, outcome, count)


def observe_since_upload(stage: str, seconds: Iterable[float]) -> None:
    """Upload-to-written spans of one stage ("embed": upload->indexed, "caption": upload->captioned)."""
    histogram = _m().since_upload[str(stage)]
    for value in seconds:
        histogram.observe(value)


def observe_outcome(stage: str, outcome: BatchOutcome, *, size: int, seconds: float) -> None:
    """``observe_batch`` and ``observe_since_upload`` from a :class:`imagesearch.pipeline.BatchOutcome`."""
    observe_batch(stage, size=size, seconds=seconds, done=len(outcome.done), failed=len(outcome.failed),
                  retried=len(outcome.retry), skipped=len(outcome.skipped))
    observe_since_upload(stage, outcome.since_upload.values())


def observe_search(mode: str, seconds: float) -> None:
    _m().search_seconds.labels(mode=mode).observe(seconds)


# --- exposition -----------------------------------------------------------------------------

class QueueDepthCollector:
    """``imagesearch_queue_depth{queue}``: messages waiting in Redis, read at scrape time."""

    def __init__(self, redis_url: str, keys: Keyspace, timeout: float = 2.0) -> None:
        self.redis_url, self.keys, self.timeout = redis_url, keys, timeout

    def collect(self) -> Iterable:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("imagesearch_broker_up", "1 when the broker answered the queue-depth query.")
        depth = GaugeMetricFamily("imagesearch_queue_depth", "Messages waiting in each queue (Redis LLEN), "
                                  "read at scrape time.", labels=["queue"])
        try:
            depths = queue_depths(self.redis_url, self.keys, timeout=self.timeout)
        except Exception:  # noqa: BLE001 - a broker outage is reported as a metric, never a failed scrape
            up.add_metric([], 0)
            yield up
            return
        for stage, length in depths.items():
            depth.add_metric([str(stage)], length)
        up.add_metric([], 1)
        yield up
        yield depth


def registry(settings: Settings) -> object:
    """A fresh registry merging every process's files, plus the queue depths."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    directory = metrics_dir(settings)
    reg = CollectorRegistry()
    MultiProcessCollector(reg, path=str(directory))
    reg.register(QueueDepthCollector(settings.redis.url, settings.keys))
    return reg


def exposition(settings: Settings) -> tuple[bytes, str]:
    """The body and content type of a ``/metrics`` response (Prometheus text format)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry(settings)), CONTENT_TYPE_LATEST
