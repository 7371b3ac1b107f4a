"""Observability. Prometheus metrics: multiprocess files merged at scrape time, queue depth read
from Redis, the folder chosen per data dir unless PROMETHEUS_MULTIPROC_DIR says otherwise.
JSON logs: one object per line, carrying request, image and task ids."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from imagesearch.redis_state import Keyspace
from tests.support.images import jpeg
from tests.support.paths import ROOT

OBSERVE = """
from imagesearch import metrics
metrics.image_accepted()
metrics.observe_batch("embed", size=4, seconds=0.5, done=3, failed=1)
metrics.observe_batch("caption", size=2, seconds=2.0, done=2)
metrics.observe_search("hybrid", 0.02)
print(metrics.metrics_dir())
"""

SCRAPE = """
import sys
from imagesearch import metrics
from imagesearch.config import get_settings
body, content_type = metrics.exposition(get_settings())
sys.stdout.write(body.decode())
"""


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir",
                                                           "IMAGESEARCH_METRICS_DIR_DERIVED")}
    env.update({"IMAGESEARCH_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}, **extra)
    return env


def _run(code: str, env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _samples(text: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_samples_from_several_processes_are_merged(tmp_path):
    env = _env(tmp_path / "data")
    dirs = {_run(OBSERVE, env).strip() for _ in range(2)}
    assert dirs == {str((tmp_path / "data" / "metrics").resolve())}  # the per-data-dir fallback
    assert len(list(Path(dirs.pop()).glob("*.db"))) >= 2  # one file per process and metric type
    s = _samples(_run(SCRAPE, env))
    assert s[("imagesearch_images_accepted_total", ())] == 2
    assert s[("imagesearch_images_total", (("outcome", "done"), ("stage", "embed")))] == 6
    assert s[("imagesearch_images_total", (("outcome", "failed"), ("stage", "embed")))] == 2
    assert s[("imagesearch_images_total", (("outcome", "done"), ("stage", "caption")))] == 4
    assert s[("imagesearch_stage_seconds_count", (("stage", "embed"),))] == 2
    assert s[("imagesearch_stage_seconds_sum", (("stage", "caption"),))] == pytest.approx(4.0)
    assert s[("imagesearch_stage_seconds_bucket", (("le", "1.0"), ("stage", "embed")))] == 2
    assert s[("imagesearch_batch_size_sum", (("stage", "embed"),))] == 8
    assert s[("imagesearch_search_seconds_count", (("mode", "hybrid"),))] == 2


SINCE_UPLOAD = """
from imagesearch import metrics
from imagesearch.pipeline import BatchOutcome
metrics.observe_outcome("embed", BatchOutcome(done=["a", "b", "c"], since_upload={"a": 0.3, "b": 0.9, "c": 2.5}),
                        size=3, seconds=0.2)
metrics.observe_outcome("caption", BatchOutcome(done=["a"], skipped=["b"], since_upload={"a": 1.7}), size=2,
                        seconds=0.4)
"""


def test_upload_to_indexed_and_captioned_histograms_merge_across_processes(tmp_path):
    env = _env(tmp_path / "data")
    for _ in range(2):
        _run(SINCE_UPLOAD, env)
    s = _samples(_run(SCRAPE, env))
    indexed, captioned = "imagesearch_upload_to_indexed_seconds", "imagesearch_upload_to_captioned_seconds"
    assert s[(indexed + "_count", ())] == 6 and s[(indexed + "_sum", ())] == pytest.approx(7.4)
    # The targets (indexed p50 1 s, p99 3 s; captioned p50 2 s) are bucket bounds, so they read exactly.
    assert [s[(indexed + "_bucket", (("le", le),))] for le in ("0.5", "1.0", "3.0")] == [2, 4, 6]
    assert s[(captioned + "_count", ())] == 2 and s[(captioned + "_bucket", (("le", "2.0"),))] == 2
    assert s[(captioned + "_bucket", (("le", "1.5"),))] == 0
    assert s[("imagesearch_images_total", (("outcome", "done"), ("stage", "embed")))] == 6


def test_the_stages_time_first_indexing_and_first_caption_only(tmp_path):
    """``since_upload`` spans created_at to the store write: within the wall time around the calls, the
    caption's after the vector's, and absent for a redelivery or a re-embed by another model."""
    import time

    from imagesearch import ingest
    from imagesearch.blobs import LocalBlobStore
    from imagesearch.config import Settings
    from imagesearch.dev.tiny_models import build_tiny_clip
    from imagesearch.models import get_captioner, get_clip
    from imagesearch.models.clip import ClipSpec, load_clip
    from imagesearch.pipeline import caption_batch, embed_batch
    from imagesearch.stores.embedded import EmbeddedStore

    settings = Settings(data_dir=tmp_path)
    store, blobs, clip = EmbeddedStore(tmp_path / "s.sqlite3"), LocalBlobStore(settings.blob_dir), get_clip(settings)
    before = time.time()
    ids = [ingest.accept(ingest.Upload(jpeg((40 * i, 90, 30))), settings=settings, store=store, blobs=blobs,
                         enqueue=lambda _: None).id for i in range(3)]
    time.sleep(0.2)  # so the spans are measurably above zero
    embedded = embed_batch(ids, settings=settings, store=store, blobs=blobs, clip=clip)
    after_embed = time.time()
    assert set(embedded.since_upload) == set(ids)
    assert all(0.2 <= v <= after_embed - before for v in embedded.since_upload.values())
    captioned = caption_batch(ids, settings=settings, store=store, blobs=blobs, captioner=get_captioner(settings),
                              clip=clip)
    assert set(captioned.since_upload) == set(ids)
    assert all(embedded.since_upload[i] < captioned.since_upload[i] <= time.time() - before for i in ids)

    again = embed_batch(ids, settings=settings, store=store, blobs=blobs, clip=clip)
    assert again.skipped == ids and again.since_upload == {}  # a redelivery
    other = load_clip(ClipSpec("x", "y", build_tiny_clip(tmp_path / "other-clip", seed=5), "cpu"))
    reembedded = embed_batch(ids, settings=settings, store=store, blobs=blobs, clip=other)
    assert reembedded.done == ids and reembedded.since_upload == {}  # a model change, not an upload
    recaptioned = caption_batch(ids, settings=settings, store=store, blobs=blobs, captioner=get_captioner(settings),
                                clip=other)
    assert recaptioned.done == ids and recaptioned.since_upload == {}


def test_explicit_folder_wins_and_derived_folders_are_per_data_dir(tmp_path):
    explicit = tmp_path / "prom"
    out = _run(OBSERVE, _env(tmp_path / "a", PROMETHEUS_MULTIPROC_DIR=str(explicit))).strip()
    assert out == str(explicit) and any(explicit.glob("counter_*.db"))
    # A child that inherited a folder *derived* from its parent's data dir derives its own.
    parent_dir = str((tmp_path / "a" / "metrics").resolve())
    env = _env(tmp_path / "b", PROMETHEUS_MULTIPROC_DIR=parent_dir, IMAGESEARCH_METRICS_DIR_DERIVED=parent_dir)
    assert _run(OBSERVE, env).strip() == str((tmp_path / "b" / "metrics").resolve())


def test_queue_depth_is_read_from_redis_at_scrape_time(tmp_path, redis_client):
    prefix = f"metrics-{uuid.uuid4().hex[:8]}-"
    env = _env(tmp_path / "data", IMAGESEARCH_REDIS_NAMESPACE=prefix)
    redis_client.rpush(prefix + "embed", *[b"m"] * 3)
    redis_client.rpush(prefix + "caption", b"m")
    try:
        s = _samples(_run(SCRAPE, env))
        assert s[("imagesearch_queue_depth", (("queue", "embed"),))] == 3
        assert s[("imagesearch_queue_depth", (("queue", "caption"),))] == 1
        assert s[("imagesearch_broker_up", ())] == 1
        redis_client.lpop(prefix + "embed")
        assert _samples(_run(SCRAPE, env))[("imagesearch_queue_depth", (("queue", "embed"),))] == 2
    finally:
        redis_client.delete(prefix + "embed", prefix + "caption")


def test_broker_down_is_a_metric_not_a_failed_scrape(tmp_path):
    from imagesearch import metrics

    collected = {f.name: f for f in metrics.QueueDepthCollector("redis://127.0.0.1:1/0", Keyspace("x"),
                                                                timeout=0.5).collect()}
    assert collected["imagesearch_broker_up"].samples[0].value == 0
    assert "imagesearch_queue_depth" not in collected


def test_api_serves_metrics_and_counts_uploads_and_searches(make_app, data_dir, redis_client):
    client = make_app(data_dir=data_dir).test_client()

    def scrape() -> dict:
        response = client.get("/metrics")
        assert response.status_code == 200 and response.mimetype == "text/plain"
        return _samples(response.get_data(as_text=True))

    before = scrape()
    accepted = before.get(("imagesearch_images_accepted_total", ()), 0)
    searches = before.get(("imagesearch_search_seconds_count", (("mode", "caption"),)), 0)
    upload = client.post("/v1/images", data={"file": (io.BytesIO(jpeg()), "a.jpg")}, content_type="multipart/form-data")
    assert upload.status_code == 202
    assert client.post("/v1/search", json={"text": "a red square", "mode": "caption"}).status_code == 200
    after = scrape()
    assert after[("imagesearch_images_accepted_total", ())] == accepted + 1
    assert after[("imagesearch_search_seconds_count", (("mode", "caption"),))] == searches + 1
    assert ("imagesearch_queue_depth", (("queue", "embed"),)) in after


def test_json_log_lines_carry_bound_ids_and_extras():
    from imagesearch import logging_setup

    stream = io.StringIO()
    handler = logging_setup.configure(stream=stream)
    try:
        log = logging.getLogger("imagesearch.test")
        with logging_setup.log_context(task_ids=["t1", "t2"], image_ids=["a", "b"]):
            log.info("embed batch: %d done", 2, extra={"stage": "embed"})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        logging.getLogger().removeHandler(handler)
    first, second = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert first["message"] == "embed batch: 2 done" and first["level"] == "INFO"
    assert first["task_ids"] == ["t1", "t2"] and first["image_ids"] == ["a", "b"] and first["stage"] == "embed"
    assert first["logger"] == "imagesearch.test" and first["pid"] == os.getpid() and first["ts"].endswith("Z")
    assert "task_ids" not in second and "ValueError: boom" in second["exc_info"]


def test_api_logs_carry_the_request_and_image_ids(make_app, data_dir, redis_client):
    from imagesearch import logging_setup

    client = make_app(data_dir=data_dir).test_client()
    stream = io.StringIO()
    handler = logging_setup.configure(stream=stream)  # replaces the app's handler for this test
    try:
        response = client.post("/v1/images", data={"file": (io.BytesIO(jpeg()), "a.jpg")},
                               content_type="multipart/form-data", headers={"X-Request-ID": "req-42"})
    finally:
        logging.getLogger().removeHandler(handler)
    assert response.status_code == 202 and response.headers["X-Request-ID"] == "req-42"
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    accepted = [line for line in lines if line["message"] == "image accepted"]
    assert accepted and accepted[0]["request_id"] == "req-42"
    assert accepted[0]["image_id"] == response.get_json()["id"] and accepted[0]["logger"] == "api.images"
